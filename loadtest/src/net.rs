//! One generator thread: nonblocking sockets on an epoll instance, driving
//! [`Leecher`]s. Opens connections (ramped), replaces finished or dropped
//! ones, churns, and stops at the deadline.
//!
//! The receive path reads up to [`READ_BUF`] bytes per readiness event into
//! one per-thread buffer behind the connection's leftover bytes (at most one
//! partial control message), hands them to the leecher and keeps what it did
//! not consume. Piece payload is never copied unless `verify` is on.
//!
//! With `discard`, payload does not even reach user space: once a piece
//! header is parsed, the rest of the block is thrown away in the kernel by
//! `recv(MSG_TRUNC)`, and the next read asks only for one header's worth.
//! Two syscalls per 16 KiB block, no copy: one generator core then outruns
//! the seeders it measures (`compare` uses it).

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringseed::wire::codec::PIECE_HEADER_LEN;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::config::RunConfig;
use crate::leecher::{Leecher, LeecherConfig, Pattern};
use crate::rng::Rng;
use crate::stats::{record, DropReason, Live, Stats};
use crate::torrents::LoadTorrent;

pub const READ_BUF: usize = 256 * 1024;

/// What a thread needs; the caller splits connections and rates by thread.
pub struct ThreadPlan {
    pub index: usize,
    pub cpu: Option<usize>,
    pub connections: usize,
    /// Connections per second (0 = no ramp).
    pub ramp: f64,
    pub churn: f64,
    pub source_ips: Vec<IpAddr>,
    pub seed: u64,
}

struct Conn {
    sock: Socket,
    leecher: Leecher,
    connecting: bool,
    opened: Instant,
    leftover: Vec<u8>,
    want_write: bool,
    torrent_index: usize,
}

/// A minimal epoll instance (also used by the swarm driver).
pub(crate) struct Epoll(i32);

impl Epoll {
    pub(crate) fn new() -> std::io::Result<Self> {
        // SAFETY: plain syscall without pointers.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Epoll(fd))
    }

    pub(crate) fn ctl(&self, op: i32, fd: i32, events: u32, token: u64) -> std::io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call.
        let r = unsafe { libc::epoll_ctl(self.0, op, fd, &mut ev) };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    pub(crate) fn wait(&self, events: &mut [libc::epoll_event], timeout_ms: i32) -> usize {
        // SAFETY: the pointer and length describe `events`, which outlives the call.
        let n = unsafe {
            libc::epoll_wait(
                self.0,
                events.as_mut_ptr(),
                events.len().min(i32::MAX as usize) as i32,
                timeout_ms,
            )
        };
        n.max(0) as usize
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: we own this descriptor.
        unsafe { libc::close(self.0) };
    }
}

impl ThreadPlan {
    /// Connections this thread may have open `now` (the ramp).
    pub fn allowed(&self, now: Instant, start: Instant) -> usize {
        if self.ramp > 0.0 {
            let ramped = (self.ramp * now.duration_since(start).as_secs_f64()) as usize + 1;
            ramped.min(self.connections)
        } else {
            self.connections
        }
    }
}

/// CPUs this process may run on.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Pins the calling thread to `cpu`.
pub fn pin_to_cpu(cpu: usize) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data; zeroed is an empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET writes inside `set`; cpu is bounded by the set size below.
    unsafe { libc::CPU_SET(cpu % libc::CPU_SETSIZE as usize, &mut set) };
    // SAFETY: `set` is valid and its size is passed.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the new soft limit.
pub fn raise_nofile_limit() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid rlimit to fill in.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return 0;
    }
    r.rlim_cur = r.rlim_max;
    // SAFETY: `r` is a valid rlimit.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) };
    r.rlim_cur
}

fn set_bind_no_port(sock: &Socket) {
    let one: libc::c_int = 1;
    // SAFETY: valid fd, pointer to a c_int of the given size. Failure only
    // means ports are reserved at bind time (fewer usable ports).
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

pub struct Shared {
    pub target: SocketAddr,
    pub torrents: Vec<Arc<LoadTorrent>>,
    pub popularity_cdf: Vec<f64>,
    pub leecher: LeecherConfig,
    pub connect_timeout: Duration,
    /// Piece payload is discarded in the kernel (`MSG_TRUNC`), see [`Thread::read`].
    pub discard: bool,
    pub live: Arc<Live>,
    pub stop: Arc<AtomicBool>,
}

const IN: u32 = libc::EPOLLIN as u32 | libc::EPOLLRDHUP as u32;
const OUT: u32 = libc::EPOLLOUT as u32;

/// What the TCP and uTP generator threads share: opening up to the plan's
/// connections (ramped, backing off when the target refuses), churn and
/// timeouts. The transport supplies opening, closing and a look at a slot.
pub(crate) trait Driver<'a> {
    fn base(&self) -> &Base<'a>;
    fn base_mut(&mut self) -> &mut Base<'a>;
    /// Slots, open or free.
    fn slots(&self) -> usize;
    /// `(connecting, opened at, leecher)` of an open slot.
    fn slot(&self, i: usize) -> Option<(bool, Instant, &Leecher)>;
    fn open(&mut self, now: Instant) -> std::io::Result<()>;
    fn close(&mut self, slot: usize, now: Instant, reason: DropReason);

    fn open_more(&mut self, now: Instant, start: Instant) {
        if now < self.base().no_open_before {
            return;
        }
        let allowed = self.base().plan.allowed(now, start);
        // Bounded per loop so a burst of 10,000 does not starve the reads.
        let mut budget = 256;
        while self.base().active < allowed && budget > 0 {
            budget -= 1;
            if let Err(e) = self.open(now) {
                self.base_mut().stats.connections_failed += 1;
                Live::add(&self.base().sh.live.failed, 1);
                if e.raw_os_error() == Some(libc::EMFILE) {
                    eprintln!("loadtest: out of file descriptors (raise `ulimit -n`): {e}");
                }
                // Back off so a refusing target is not hammered in a loop.
                self.base_mut().no_open_before = now + Duration::from_millis(50);
                return;
            }
        }
    }

    /// Closes one established connection, chosen at random.
    fn churn_one(&mut self, now: Instant) {
        let n = self.slots();
        if self.base().active == 0 || n == 0 {
            return;
        }
        let start = self.base_mut().rng.below(n as u64) as usize;
        for k in 0..n {
            let i = (start + k) % n;
            if matches!(self.slot(i), Some((false, _, _))) {
                self.close(i, now, DropReason::Churn);
                return;
            }
        }
    }

    fn check_timeouts(&mut self, now: Instant) {
        let connect_timeout = self.base().sh.connect_timeout;
        for i in 0..self.slots() {
            let reason = match self.slot(i) {
                Some((true, opened, _)) => {
                    (now.duration_since(opened) > connect_timeout).then_some(DropReason::Stalled)
                }
                Some((false, _, leecher)) => leecher.check_timeout(now),
                None => None,
            };
            if let Some(r) = reason {
                self.close(i, now, r);
            }
        }
    }

    /// Closes every open connection (the run is over).
    fn close_all(&mut self, now: Instant) {
        for i in 0..self.slots() {
            if self.slot(i).is_some() {
                self.close(i, now, DropReason::RunEnded);
            }
        }
    }
}

/// What every generator thread keeps, whatever the transport.
pub(crate) struct Base<'a> {
    pub sh: &'a Shared,
    pub plan: &'a ThreadPlan,
    /// Connections open now (connecting included).
    pub active: usize,
    /// Free connection slots.
    pub free: Vec<usize>,
    /// Round robin over `plan.source_ips`.
    pub next_ip: usize,
    pub rng: Rng,
    pub stats: Stats,
    /// Per torrent, how often this thread's leechers completed each piece
    /// (rarest first only).
    pub rarity: Vec<Vec<u32>>,
    pub scratch: Vec<u32>,
    /// No connection attempt before this (back-off).
    pub no_open_before: Instant,
}

impl<'a> Base<'a> {
    pub fn new(sh: &'a Shared, plan: &'a ThreadPlan, start: Instant) -> Self {
        Base {
            sh,
            plan,
            active: 0,
            free: Vec::new(),
            next_ip: plan.index,
            rng: Rng::new(plan.seed),
            stats: Stats::default(),
            rarity: rarity_tables(sh),
            scratch: Vec::new(),
            no_open_before: start,
        }
    }

    /// A slot for a new connection in `conns`.
    pub fn take_slot<C>(&mut self, conns: &mut Vec<Option<C>>) -> usize {
        self.free.pop().unwrap_or_else(|| {
            conns.push(None);
            conns.len() - 1
        })
    }
}

/// Pins a generator thread and makes its epoll instance; on failure the
/// thread's whole result is one I/O error.
pub(crate) fn thread_setup(plan: &ThreadPlan) -> Result<Epoll, Box<Stats>> {
    if let Some(cpu) = plan.cpu {
        if let Err(e) = pin_to_cpu(cpu) {
            eprintln!("loadtest thread {}: pin to CPU {cpu}: {e}", plan.index);
        }
    }
    Epoll::new().map_err(|e| {
        eprintln!("loadtest thread {}: epoll_create1: {e}", plan.index);
        let mut s = Box::<Stats>::default();
        s.count_drop(DropReason::IoError);
        s
    })
}

/// The once-per-loop-turn chores of a [`Driver`]: open, churn, timeouts.
pub(crate) struct Pacer {
    start: Instant,
    last_tick: Instant,
    churn_credit: f64,
    last_churn: Instant,
}

impl Pacer {
    pub(crate) fn new(start: Instant) -> Self {
        Pacer {
            start,
            last_tick: start,
            churn_credit: 0.0,
            last_churn: start,
        }
    }

    pub(crate) fn turn<'a, D: Driver<'a>>(&mut self, d: &mut D, now: Instant) {
        d.open_more(now, self.start);
        let churn = d.base().plan.churn;
        if churn > 0.0 {
            self.churn_credit += churn * now.duration_since(self.last_churn).as_secs_f64();
            self.last_churn = now;
            while self.churn_credit >= 1.0 {
                self.churn_credit -= 1.0;
                d.churn_one(now);
            }
        }
        if now.duration_since(self.last_tick) >= Duration::from_millis(250) {
            self.last_tick = now;
            d.check_timeouts(now);
        }
    }
}

struct Thread<'a> {
    b: Base<'a>,
    ep: Epoll,
    conns: Vec<Option<Conn>>,
}

/// Runs one generator thread until `deadline` or `stop`.
pub fn run_thread(sh: &Shared, plan: &ThreadPlan, deadline: Instant) -> Stats {
    let ep = match thread_setup(plan) {
        Ok(ep) => ep,
        Err(failed) => return *failed,
    };
    let start = Instant::now();
    let mut t = Thread {
        b: Base::new(sh, plan, start),
        ep,
        conns: Vec::new(),
    };
    let mut buf = vec![0u8; READ_BUF + crate::leecher::MAX_MESSAGE_LEN as usize + 64];
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut pacer = Pacer::new(start);
    while !sh.stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        pacer.turn(&mut t, now);
        let n = t.ep.wait(&mut events, 10);
        let now = Instant::now();
        for ev in events.iter().take(n) {
            let (flags, token) = (ev.events, ev.u64);
            t.on_event(now, token as usize, flags, &mut buf);
        }
    }
    t.close_all(Instant::now());
    t.b.stats
}

impl<'a> Driver<'a> for Thread<'a> {
    fn base(&self) -> &Base<'a> {
        &self.b
    }
    fn base_mut(&mut self) -> &mut Base<'a> {
        &mut self.b
    }
    fn slots(&self) -> usize {
        self.conns.len()
    }
    fn slot(&self, i: usize) -> Option<(bool, Instant, &Leecher)> {
        let c = self.conns.get(i)?.as_ref()?;
        Some((c.connecting, c.opened, &c.leecher))
    }
    fn open(&mut self, now: Instant) -> std::io::Result<()> {
        self.open_tcp(now)
    }
    fn close(&mut self, slot: usize, now: Instant, reason: DropReason) {
        self.close_tcp(slot, now, reason)
    }
}

impl Thread<'_> {
    fn pick_torrent(&mut self) -> usize {
        pick_torrent(&self.b.sh.popularity_cdf, &mut self.b.rng)
    }

    fn open_tcp(&mut self, now: Instant) -> std::io::Result<()> {
        self.b.stats.connect_attempts += 1;
        let target = self.b.sh.target;
        let sock = Socket::new(
            Domain::for_address(target),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        sock.set_nonblocking(true)?;
        sock.set_tcp_nodelay(true)?;
        if !self.b.plan.source_ips.is_empty() {
            let ip = self.b.plan.source_ips[self.b.next_ip % self.b.plan.source_ips.len()];
            self.b.next_ip = self.b.next_ip.wrapping_add(1);
            set_bind_no_port(&sock);
            sock.bind(&SockAddr::from(SocketAddr::new(ip, 0)))?;
        }
        match sock.connect(&SockAddr::from(target)) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        let ti = self.pick_torrent();
        let torrent = self.b.sh.torrents[ti].clone();
        let leecher = Leecher::new(
            torrent,
            self.b.sh.leecher.clone(),
            &mut self.b.rng,
            &self.b.rarity[ti],
        );
        let slot = self.b.take_slot(&mut self.conns);
        if let Err(e) = self
            .ep
            .ctl(libc::EPOLL_CTL_ADD, sock.as_raw_fd(), IN | OUT, slot as u64)
        {
            self.b.free.push(slot);
            return Err(e);
        }
        self.conns[slot] = Some(Conn {
            sock,
            leecher,
            connecting: true,
            opened: now,
            leftover: Vec::new(),
            want_write: true,
            torrent_index: ti,
        });
        self.b.active += 1;
        Live::add(&self.b.sh.live.active, 1);
        Ok(())
    }

    fn close_tcp(&mut self, slot: usize, now: Instant, reason: DropReason) {
        let Some(c) = self.conns.get_mut(slot).and_then(Option::take) else {
            return;
        };
        self.b.free.push(slot);
        self.b.active -= 1;
        self.b.sh.live.active.fetch_sub(1, Ordering::Relaxed);
        let _ = self.ep.ctl(libc::EPOLL_CTL_DEL, c.sock.as_raw_fd(), 0, 0);
        if c.connecting {
            self.b.stats.connections_failed += 1;
            Live::add(&self.b.sh.live.failed, 1);
            return;
        }
        record_close(&mut self.b.stats, &self.b.sh.live, &c.leecher, now, reason);
    }

    fn on_event(&mut self, now: Instant, slot: usize, flags: u32, buf: &mut [u8]) {
        let Some(Some(c)) = self.conns.get_mut(slot) else {
            return;
        };
        if c.connecting {
            if flags & (OUT | libc::EPOLLERR as u32 | libc::EPOLLHUP as u32) == 0 {
                return;
            }
            match c.sock.take_error() {
                Ok(None) => {}
                _ => {
                    self.close(slot, now, DropReason::IoError);
                    return;
                }
            }
            c.connecting = false;
            c.leecher.on_connected(now);
            self.b.stats.connections_established += 1;
            Live::add(&self.b.sh.live.established, 1);
        }
        if flags & (libc::EPOLLIN as u32 | libc::EPOLLRDHUP as u32 | libc::EPOLLERR as u32) != 0 {
            if let Err(r) = self.read(slot, now, buf) {
                self.close(slot, now, r);
                return;
            }
        }
        if let Err(r) = self.flush(slot) {
            self.close(slot, now, r);
            return;
        }
        let done = matches!(&self.conns[slot], Some(c) if c.leecher.is_done());
        if done {
            self.close(slot, now, DropReason::Completed);
        }
    }

    /// One readiness event's worth of input: up to [`READ_BUF`] bytes.
    fn read(&mut self, slot: usize, now: Instant, buf: &mut [u8]) -> Result<(), DropReason> {
        let mut budget = READ_BUF;
        while budget > 0 {
            let Some(Some(c)) = self.conns.get_mut(slot) else {
                return Ok(());
            };
            let before = self.b.stats.payload_bytes;
            let blocks_before = self.b.stats.blocks;
            let skip = if self.b.sh.discard {
                c.leecher.discardable().min(budget)
            } else {
                0
            };
            let more = if skip > 0 {
                // The leftover is empty while a block streams (the leecher
                // took every payload byte it was given).
                let n = match discard(&c.sock, skip) {
                    Ok(0) => return Err(DropReason::PeerClosed),
                    Ok(n) => n,
                    Err(e) => return io_outcome(&e),
                };
                budget = budget.saturating_sub(n);
                c.leecher.discarded(now, n, &mut self.b.stats)?;
                n == skip
            } else {
                let keep = c.leftover.len();
                buf[..keep].copy_from_slice(&c.leftover);
                // Discarding and unchoked: the next bytes are most likely a
                // piece header, so ask for that much and no payload.
                let want = if self.b.sh.discard && c.leecher.is_unchoked() {
                    if keep < PIECE_HEADER_LEN {
                        PIECE_HEADER_LEN - keep
                    } else {
                        64
                    }
                } else {
                    budget
                };
                let end = (keep + want.min(budget)).min(buf.len());
                let n = match (&c.sock).read(&mut buf[keep..end]) {
                    Ok(0) => return Err(DropReason::PeerClosed),
                    Ok(n) => n,
                    Err(e) => return io_outcome(&e),
                };
                budget = budget.saturating_sub(n);
                let consumed = c
                    .leecher
                    .handle_data(now, &buf[..keep + n], &mut self.b.stats)?;
                c.leftover.clear();
                c.leftover.extend_from_slice(&buf[consumed..keep + n]);
                self.b.sh.discard && n == end - keep
            };
            Live::add(
                &self.b.sh.live.payload_bytes,
                self.b.stats.payload_bytes - before,
            );
            Live::add(&self.b.sh.live.blocks, self.b.stats.blocks - blocks_before);
            note_completed(
                &mut self.b.rarity[c.torrent_index],
                &mut c.leecher,
                &mut self.b.scratch,
            );
            if !more {
                // The socket had no more (or this was one plain read: level-
                // triggered epoll reports the rest).
                return Ok(());
            }
        }
        Ok(())
    }

    fn flush(&mut self, slot: usize) -> Result<(), DropReason> {
        let Some(Some(c)) = self.conns.get_mut(slot) else {
            return Ok(());
        };
        while !c.leecher.pending_output().is_empty() {
            match (&c.sock).write(c.leecher.pending_output()) {
                Ok(0) => return Err(DropReason::PeerClosed),
                Ok(n) => c.leecher.consume_output(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset) =>
                {
                    return Err(DropReason::PeerClosed)
                }
                Err(_) => return Err(DropReason::IoError),
            }
        }
        let want = !c.leecher.pending_output().is_empty();
        if want != c.want_write {
            c.want_write = want;
            let ev = if want { IN | OUT } else { IN };
            self.ep
                .ctl(libc::EPOLL_CTL_MOD, c.sock.as_raw_fd(), ev, slot as u64)
                .map_err(|_| DropReason::IoError)?;
        }
        Ok(())
    }
}

/// A torrent index drawn by popularity.
pub(crate) fn pick_torrent(cdf: &[f64], rng: &mut Rng) -> usize {
    let u = rng.unit();
    cdf.iter()
        .position(|&c| u < c)
        .unwrap_or(cdf.len().saturating_sub(1))
}

/// Feeds the pieces a leecher completed into its thread's rarity counts
/// (kept only for rarest-first).
pub(crate) fn note_completed(rarity: &mut [u32], leecher: &mut Leecher, scratch: &mut Vec<u32>) {
    if rarity.is_empty() {
        return;
    }
    leecher.take_completed(scratch);
    for p in scratch.drain(..) {
        if let Some(x) = rarity.get_mut(p as usize) {
            *x += 1;
        }
    }
}

/// The rarity table of each torrent for one thread (empty unless rarest-first).
pub(crate) fn rarity_tables(sh: &Shared) -> Vec<Vec<u32>> {
    sh.torrents
        .iter()
        .map(|t| {
            if sh.leecher.pattern == Pattern::RarestFirst {
                vec![0; t.num_pieces as usize]
            } else {
                Vec::new()
            }
        })
        .collect()
}

/// Counts one established connection's end (TCP and uTP alike).
pub(crate) fn record_close(
    stats: &mut Stats,
    live: &Live,
    leecher: &Leecher,
    now: Instant,
    reason: DropReason,
) {
    stats.count_drop(reason);
    if reason == DropReason::Completed {
        stats.downloads_completed += 1;
        Live::add(&live.completed, 1);
    }
    if reason.is_error() {
        Live::add(&live.errors, 1);
    }
    if let Some(t0) = leecher.connected_at() {
        let secs = now.saturating_duration_since(t0).as_secs_f64();
        if secs > 0.0 {
            record(
                &mut stats.conn_throughput_kib_s,
                (leecher.payload_bytes() as f64 / 1024.0 / secs) as u64,
            );
        }
    }
}

/// A read that found nothing or was interrupted is no error.
fn io_outcome(e: &std::io::Error) -> Result<(), DropReason> {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::Interrupted => Ok(()),
        ErrorKind::ConnectionReset => Err(DropReason::PeerClosed),
        _ => Err(DropReason::IoError),
    }
}

/// Throws away up to `n` received bytes in the kernel, never copying them
/// (Linux: `MSG_TRUNC` on a TCP socket discards); returns how many.
fn discard(sock: &Socket, n: usize) -> std::io::Result<usize> {
    // SAFETY: a null buffer is allowed with MSG_TRUNC on TCP: the kernel
    // writes nothing to user memory.
    let r = unsafe {
        libc::recv(
            sock.as_raw_fd(),
            std::ptr::null_mut(),
            n,
            libc::MSG_TRUNC | libc::MSG_DONTWAIT,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(r as usize)
}

/// Splits a run over its threads.
pub fn plans(cfg: &RunConfig, cores: usize) -> Vec<ThreadPlan> {
    let t = cfg.threads;
    (0..t)
        .map(|i| {
            let conns = cfg.connections / t + usize::from(i < cfg.connections % t);
            let share = conns as f64 / cfg.connections as f64;
            ThreadPlan {
                index: i,
                cpu: Some((cfg.first_cpu + i) % cores.max(1)),
                connections: conns,
                ramp: cfg.ramp * share,
                churn: cfg.churn * share,
                source_ips: cfg.source_ips.clone(),
                seed: 0x5EED_0000 + i as u64 * 7919,
            }
        })
        .collect()
}
