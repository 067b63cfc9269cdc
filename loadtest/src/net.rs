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

struct Thread<'a> {
    sh: &'a Shared,
    plan: &'a ThreadPlan,
    ep: Epoll,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    active: usize,
    next_ip: usize,
    rng: Rng,
    stats: Stats,
    rarity: Vec<Vec<u32>>,
    completed_scratch: Vec<u32>,
    no_open_before: Instant,
}

/// Runs one generator thread until `deadline` or `stop`.
pub fn run_thread(sh: &Shared, plan: &ThreadPlan, deadline: Instant) -> Stats {
    if let Some(cpu) = plan.cpu {
        if let Err(e) = pin_to_cpu(cpu) {
            eprintln!("loadtest thread {}: pin to CPU {cpu}: {e}", plan.index);
        }
    }
    let ep = match Epoll::new() {
        Ok(ep) => ep,
        Err(e) => {
            eprintln!("loadtest thread {}: epoll_create1: {e}", plan.index);
            let mut s = Stats::default();
            s.count_drop(DropReason::IoError);
            return s;
        }
    };
    let start = Instant::now();
    let mut t = Thread {
        sh,
        plan,
        ep,
        conns: Vec::new(),
        free: Vec::new(),
        active: 0,
        next_ip: plan.index,
        rng: Rng::new(plan.seed),
        stats: Stats::default(),
        rarity: rarity_tables(sh),
        completed_scratch: Vec::new(),
        no_open_before: start,
    };
    let mut buf = vec![0u8; READ_BUF + crate::leecher::MAX_MESSAGE_LEN as usize + 64];
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut last_tick = start;
    let mut churn_credit = 0.0f64;
    let mut last_churn = start;
    while !sh.stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        t.open_more(now, start);
        if plan.churn > 0.0 {
            churn_credit += plan.churn * now.duration_since(last_churn).as_secs_f64();
            last_churn = now;
            while churn_credit >= 1.0 {
                churn_credit -= 1.0;
                t.churn_one();
            }
        }
        if now.duration_since(last_tick) >= Duration::from_millis(250) {
            last_tick = now;
            t.check_timeouts(now);
        }
        let n = t.ep.wait(&mut events, 10);
        let now = Instant::now();
        for ev in events.iter().take(n) {
            let (flags, token) = (ev.events, ev.u64);
            t.on_event(now, token as usize, flags, &mut buf);
        }
    }
    let now = Instant::now();
    for i in 0..t.conns.len() {
        if t.conns[i].is_some() {
            t.close(i, now, DropReason::RunEnded);
        }
    }
    t.stats
}

impl Thread<'_> {
    fn pick_torrent(&mut self) -> usize {
        pick_torrent(&self.sh.popularity_cdf, &mut self.rng)
    }

    fn open_more(&mut self, now: Instant, start: Instant) {
        if now < self.no_open_before {
            return;
        }
        let allowed = self.plan.allowed(now, start);
        // Bounded per loop so a burst of 10,000 does not starve the reads.
        let mut budget = 256;
        while self.active < allowed && budget > 0 {
            budget -= 1;
            if let Err(e) = self.open(now) {
                self.stats.connections_failed += 1;
                Live::add(&self.sh.live.failed, 1);
                if e.raw_os_error() == Some(libc::EMFILE) {
                    eprintln!("loadtest: out of file descriptors (raise `ulimit -n`): {e}");
                }
                // Back off so a refusing target is not hammered in a loop.
                self.no_open_before = now + Duration::from_millis(50);
                return;
            }
        }
    }

    fn open(&mut self, now: Instant) -> std::io::Result<()> {
        self.stats.connect_attempts += 1;
        let target = self.sh.target;
        let sock = Socket::new(
            Domain::for_address(target),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        sock.set_nonblocking(true)?;
        sock.set_tcp_nodelay(true)?;
        if !self.plan.source_ips.is_empty() {
            let ip = self.plan.source_ips[self.next_ip % self.plan.source_ips.len()];
            self.next_ip = self.next_ip.wrapping_add(1);
            set_bind_no_port(&sock);
            sock.bind(&SockAddr::from(SocketAddr::new(ip, 0)))?;
        }
        match sock.connect(&SockAddr::from(target)) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        let ti = self.pick_torrent();
        let torrent = self.sh.torrents[ti].clone();
        let leecher = Leecher::new(
            torrent,
            self.sh.leecher.clone(),
            &mut self.rng,
            &self.rarity[ti],
        );
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.conns.push(None);
                self.conns.len() - 1
            }
        };
        self.ep
            .ctl(libc::EPOLL_CTL_ADD, sock.as_raw_fd(), IN | OUT, slot as u64)?;
        self.conns[slot] = Some(Conn {
            sock,
            leecher,
            connecting: true,
            opened: now,
            leftover: Vec::new(),
            want_write: true,
            torrent_index: ti,
        });
        self.active += 1;
        Live::add(&self.sh.live.active, 1);
        Ok(())
    }

    fn close(&mut self, slot: usize, now: Instant, reason: DropReason) {
        let Some(c) = self.conns.get_mut(slot).and_then(Option::take) else {
            return;
        };
        self.free.push(slot);
        self.active -= 1;
        self.sh.live.active.fetch_sub(1, Ordering::Relaxed);
        let _ = self.ep.ctl(libc::EPOLL_CTL_DEL, c.sock.as_raw_fd(), 0, 0);
        if c.connecting {
            self.stats.connections_failed += 1;
            Live::add(&self.sh.live.failed, 1);
            return;
        }
        record_close(&mut self.stats, &self.sh.live, &c.leecher, now, reason);
    }

    fn churn_one(&mut self) {
        if self.active == 0 {
            return;
        }
        let start = self.rng.below(self.conns.len() as u64) as usize;
        for k in 0..self.conns.len() {
            let i = (start + k) % self.conns.len();
            if matches!(&self.conns[i], Some(c) if !c.connecting) {
                self.close(i, Instant::now(), DropReason::Churn);
                return;
            }
        }
    }

    fn check_timeouts(&mut self, now: Instant) {
        for i in 0..self.conns.len() {
            let reason = match &self.conns[i] {
                Some(c) if c.connecting => (now.duration_since(c.opened) > self.sh.connect_timeout)
                    .then_some(DropReason::Stalled),
                Some(c) => c.leecher.check_timeout(now),
                None => None,
            };
            if let Some(r) = reason {
                self.close(i, now, r);
            }
        }
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
            self.stats.connections_established += 1;
            Live::add(&self.sh.live.established, 1);
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
            let before = self.stats.payload_bytes;
            let blocks_before = self.stats.blocks;
            let skip = if self.sh.discard {
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
                c.leecher.discarded(now, n, &mut self.stats)?;
                n == skip
            } else {
                let keep = c.leftover.len();
                buf[..keep].copy_from_slice(&c.leftover);
                // Discarding and unchoked: the next bytes are most likely a
                // piece header, so ask for that much and no payload.
                let want = if self.sh.discard && c.leecher.is_unchoked() {
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
                    .handle_data(now, &buf[..keep + n], &mut self.stats)?;
                c.leftover.clear();
                c.leftover.extend_from_slice(&buf[consumed..keep + n]);
                self.sh.discard && n == end - keep
            };
            Live::add(
                &self.sh.live.payload_bytes,
                self.stats.payload_bytes - before,
            );
            Live::add(&self.sh.live.blocks, self.stats.blocks - blocks_before);
            note_completed(
                &mut self.rarity[c.torrent_index],
                &mut c.leecher,
                &mut self.completed_scratch,
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
