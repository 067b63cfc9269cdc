//! The swarm event loop: every leecher of the run on one thread, one epoll
//! instance, nonblocking loopback sockets (each leecher listens on
//! 127.0.0.1, port 0).
//!
//! Edge-triggered: a connection remembers whether it is readable /
//! writable. Reads stop when the leecher's download bucket is empty (the
//! connection waits on a timer for [`Node::down_ready_at`], so the sender
//! backs up in TCP as behind a slow NIC) and after a few reads in a row (the
//! connection goes to the back of a ready queue, so one fast peer cannot
//! starve the others). Writes are `writev` of the node's iovecs (control
//! bytes, piece headers and slices of the content store; no copy), paced by
//! the upload bucket the same way.
//!
//! Memory: one receive buffer for the whole loop, per connection only the
//! bytes of one partial message, the node's pieces in progress and its send
//! queues (bounded by `--max-accept` x the requests it queues per peer).
//! File descriptors: about `N x (2 + 2 x max-connect)`; `--max-connect` is
//! lowered to fit RLIMIT_NOFILE (raised to its hard limit first).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io::{ErrorKind, IoSlice, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ringseed::tracker::proto::Event;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::config::{PeersFrom, StoreKind, SwarmConfig};
use super::discovery::{
    announce_request, ring_peers, tracker_url, AnnounceJob, Announcer, REANNOUNCE,
};
use super::node::{ConnectRequest, Node, NodeConfig, NodeStats};
use super::store::ContentStore;
use super::PeerKey;
use crate::leecher::MAX_MESSAGE_LEN;
use crate::net::{raise_nofile_limit, Epoll};
use crate::rng::Rng;
use crate::torrents::LoadTorrent;

const READ_BUF: usize = 256 * 1024;
/// Reads of one connection in a row before it yields to the others.
const READS_PER_TURN: usize = 4;
/// Smallest read a throttled connection gets when the bucket refills.
const FAIR_SHARE_MIN: usize = 4096;
const WRITES_PER_TURN: usize = 16;
const ACCEPTS_PER_EVENT: usize = 64;
const LISTENER: u64 = 1 << 62;
const TICK: Duration = Duration::from_millis(20);
/// How long haves (and other output that can wait) are held back to go out
/// together: with 16 KiB pieces a leecher verifies ~100 pieces a second,
/// and one send per have per peer would cost more than the payload.
const LAZY_FLUSH: Duration = Duration::from_millis(500);
const IN: u32 = libc::EPOLLIN as u32;
const OUT: u32 = libc::EPOLLOUT as u32;
const HUP: u32 = (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32;
const ET: u32 = libc::EPOLLET as u32;

/// What one leecher did.
#[derive(Debug, Clone)]
pub struct LeecherResult {
    pub index: usize,
    /// Time from the start of the run to its last verified piece.
    pub completed_after: Option<Duration>,
    pub pieces: u32,
    pub stats: NodeStats,
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct SwarmOutcome {
    pub torrent: Arc<LoadTorrent>,
    pub leechers: Vec<LeecherResult>,
    /// (seconds since start, leechers completed by then), one per completion.
    pub completions: Vec<(f64, usize)>,
    pub elapsed: Duration,
    pub timed_out: bool,
    /// `--max-connect` after fitting RLIMIT_NOFILE.
    pub max_connect: usize,
    pub tracker: Option<String>,
    pub announce_errors: u64,
    pub accept_refused: u64,
    /// Content bytes the shared store held at the end (0 for `file`).
    pub store_bytes: u64,
}

struct Conn {
    sock: Socket,
    node: usize,
    key: PeerKey,
    connecting: bool,
    readable: bool,
    writable: bool,
    eof: bool,
    leftover: Vec<u8>,
}

struct Slot {
    node: Node,
    listener: Socket,
    throttled_reads: Vec<usize>,
    throttled_writes: Vec<usize>,
    timer_at: Option<Instant>,
    /// Next (re-)announce, in tracker mode.
    next_announce: Option<Instant>,
    started_sent: bool,
    completed_sent: bool,
    /// Its completion is in the time series.
    recorded: bool,
    /// When its held-back output goes out next (staggered across leechers
    /// so that one tick does not flush everybody's).
    next_lazy: Instant,
}

struct Driver {
    ep: Epoll,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    freed: Vec<usize>,
    slots: Vec<Slot>,
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    ready_reads: VecDeque<usize>,
    buf: Vec<u8>,
    accept_refused: u64,
    rotate: usize,
    scratch: Scratch,
}

/// Reused lists of [`Driver::service`].
#[derive(Default)]
struct Scratch {
    closes: Vec<(PeerKey, u64, &'static str)>,
    dirty: Vec<(PeerKey, u64)>,
    connects: Vec<ConnectRequest>,
}

fn listen_socket() -> anyhow::Result<Socket> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.bind(&SockAddr::from(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))))?;
    s.listen(1024)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// Lowers `max_connect` so that N leechers fit in `limit` descriptors.
pub fn fit_max_connect(leechers: usize, max_connect: usize, limit: u64) -> usize {
    let per_leecher = (limit.saturating_sub(64) as usize) / leechers.max(1);
    max_connect.min(per_leecher.saturating_sub(2) / 2)
}

/// Runs the swarm `cfg` describes and returns what it measured.
pub fn run_swarm(cfg: &SwarmConfig) -> anyhow::Result<SwarmOutcome> {
    let torrent = Arc::new(LoadTorrent::load(&cfg.torrent)?);
    if torrent.torrent.v1_pieces.is_none() {
        bail!(
            "{} is a v2-only torrent: swarm mode checks pieces with their v1 SHA-1 hashes; \
             use a v1 or hybrid torrent (`ringseed create --hybrid`, the default)",
            cfg.torrent.display()
        );
    }
    let store = Arc::new(match cfg.content_store {
        StoreKind::Shared => ContentStore::shared(&torrent),
        StoreKind::File => {
            let data = cfg
                .data
                .as_deref()
                .context("--content-store file needs --data")?;
            ContentStore::open_file(&torrent, data)?
        }
    });
    let limit = raise_nofile_limit();
    let mut node_cfg: NodeConfig = cfg.node.clone();
    let fitted = fit_max_connect(cfg.leechers, node_cfg.max_connect, limit);
    if fitted == 0 {
        bail!(
            "RLIMIT_NOFILE is {limit}: too few descriptors for {} leechers; raise the hard limit (`ulimit -Hn`)",
            cfg.leechers
        );
    }
    if fitted < node_cfg.max_connect {
        eprintln!(
            "note: --max-connect lowered from {} to {fitted} so {} leechers fit RLIMIT_NOFILE {limit}",
            node_cfg.max_connect, cfg.leechers
        );
        node_cfg.max_connect = fitted;
    }
    let tracker = match cfg.peers_from {
        PeersFrom::Tracker => Some(
            tracker_url(cfg.tracker.as_deref(), &torrent.torrent.trackers)
                .map_err(anyhow::Error::msg)?,
        ),
        PeersFrom::Tool => None,
    };
    let node_cfg = Arc::new(node_cfg);
    let start = Instant::now();
    let mut d = Driver {
        ep: Epoll::new().context("epoll_create1")?,
        conns: Vec::new(),
        free: Vec::new(),
        freed: Vec::new(),
        slots: Vec::new(),
        timers: BinaryHeap::new(),
        ready_reads: VecDeque::new(),
        buf: vec![0; READ_BUF + MAX_MESSAGE_LEN as usize + 64],
        accept_refused: 0,
        rotate: 0,
        scratch: Scratch::default(),
    };
    let mut seeds = Rng::new(cfg.rng_seed);
    for i in 0..cfg.leechers {
        let listener = listen_socket().context("leecher listen socket on 127.0.0.1")?;
        let addr = listener
            .local_addr()?
            .as_socket()
            .context("listen address")?;
        let mut node = Node::new(
            i,
            torrent.clone(),
            store.clone(),
            node_cfg.clone(),
            seeds.next_u64(),
            start,
            false,
        );
        node.set_listen(addr);
        d.ep.ctl(
            libc::EPOLL_CTL_ADD,
            listener.as_raw_fd(),
            IN,
            LISTENER | i as u64,
        )?;
        d.slots.push(Slot {
            node,
            listener,
            throttled_reads: Vec::new(),
            throttled_writes: Vec::new(),
            timer_at: None,
            next_announce: Some(start),
            started_sent: false,
            completed_sent: false,
            recorded: false,
            next_lazy: start + LAZY_FLUSH.mul_f64(i as f64 / cfg.leechers as f64),
        });
    }
    let mut announcer = match &tracker {
        Some(url) => Some(Announcer::start(url.clone()).context("start announce threads")?),
        None => {
            let addrs: Vec<SocketAddr> = d.slots.iter().filter_map(|s| s.node.listen()).collect();
            for (s, peers) in
                d.slots
                    .iter_mut()
                    .zip(ring_peers(&addrs, node_cfg.max_connect, cfg.rng_seed))
            {
                s.node.add_candidates(&peers);
                s.next_announce = None;
            }
            None
        }
    };
    let deadline = start + cfg.timeout;
    let mut completions = Vec::new();
    let mut announce_errors = 0u64;
    let mut answers = Vec::new();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut next_tick = start;
    let mut next_live = start + Duration::from_secs(1);
    let mut done = 0usize;
    let timed_out = loop {
        let now = Instant::now();
        if now >= deadline {
            break true;
        }
        if now >= next_tick {
            next_tick = now + TICK;
            let mut lazy = Vec::new();
            for i in 0..d.slots.len() {
                if now >= d.slots[i].node.next_timeout() {
                    d.slots[i].node.tick(now);
                }
                if now >= d.slots[i].next_lazy {
                    d.slots[i].next_lazy = now + LAZY_FLUSH;
                    d.slots[i].node.take_lazy(&mut lazy);
                    for (_, conn) in lazy.drain(..) {
                        d.write(conn as usize, now);
                    }
                }
                d.service(i, now);
            }
            if let Some(a) = announcer.as_mut() {
                let want = node_cfg.max_connect.min(cfg.leechers - 1);
                d.announces(a, now, &torrent, want);
                answers.clear();
                a.poll(&mut answers);
                for ans in answers.drain(..) {
                    match ans.result {
                        Ok(peers) => d.slots[ans.node].node.add_candidates(&peers),
                        Err(e) => {
                            announce_errors += 1;
                            if announce_errors <= 3 {
                                eprintln!("leecher {}: announce failed: {e}", ans.node);
                            }
                        }
                    }
                    d.service(ans.node, now);
                }
            }
        }
        d.fire_timers(now);
        for _ in 0..d.ready_reads.len() {
            let Some(c) = d.ready_reads.pop_front() else {
                break;
            };
            if let Some(n) = d.conn_node(c) {
                d.read(c, now);
                d.service(n, now);
            }
        }
        let mut newly: Vec<f64> = d
            .slots
            .iter_mut()
            .filter(|s| !s.recorded && s.node.is_complete())
            .map(|s| {
                s.recorded = true;
                s.node
                    .completed_at()
                    .map_or(0.0, |t| t.saturating_duration_since(start).as_secs_f64())
            })
            .collect();
        newly.sort_by(f64::total_cmp);
        for t in newly {
            done += 1;
            completions.push((t, done));
        }
        if done == d.slots.len() {
            break false;
        }
        if !cfg.quiet && now >= next_live {
            next_live = now + Duration::from_secs(1);
            eprintln!("{}", d.live_line(start, now));
        }
        let wait = d.wait_ms(now, next_tick, deadline);
        let n = d.ep.wait(&mut events, wait);
        let now = Instant::now();
        for ev in events.iter().take(n) {
            let (flags, token) = (ev.events, ev.u64);
            if token & LISTENER != 0 {
                let i = (token & !LISTENER) as usize;
                d.accept(i, now);
                d.service(i, now);
            } else if let Some(node) = d.conn_node(token as usize) {
                d.on_event(token as usize, flags, now);
                d.service(node, now);
            }
        }
        d.free.append(&mut d.freed);
    };
    let elapsed = start.elapsed();
    if let Some(mut a) = announcer.take() {
        for s in &d.slots {
            a.announce(AnnounceJob {
                node: s.node.id(),
                req: announce_request(&s.node, &torrent, Event::Stopped),
            });
        }
        a.finish(Instant::now() + Duration::from_secs(3));
    }
    let leechers = d
        .slots
        .iter()
        .map(|s| LeecherResult {
            index: s.node.id(),
            completed_after: s
                .node
                .completed_at()
                .map(|t| t.saturating_duration_since(start)),
            pieces: s.node.pieces_have(),
            stats: s.node.stats().clone(),
        })
        .collect();
    Ok(SwarmOutcome {
        torrent,
        leechers,
        completions,
        elapsed,
        timed_out,
        max_connect: node_cfg.max_connect,
        tracker,
        announce_errors,
        accept_refused: d.accept_refused,
        store_bytes: store.resident_bytes(),
    })
}

impl Driver {
    fn conn_node(&self, c: usize) -> Option<usize> {
        self.conns.get(c)?.as_ref().map(|x| x.node)
    }

    fn wait_ms(&self, now: Instant, next_tick: Instant, deadline: Instant) -> i32 {
        if !self.ready_reads.is_empty() {
            return 0;
        }
        let mut until = next_tick.min(deadline);
        if let Some(Reverse((t, _))) = self.timers.peek() {
            until = until.min(*t);
        }
        let d = until.saturating_duration_since(now);
        // Round up: waking early would spin until the instant is reached.
        d.as_micros().div_ceil(1000).min(1000) as i32
    }

    /// `started` for every leecher, `completed` when it finishes, and
    /// re-announces every [`REANNOUNCE`] while it has fewer peers than it
    /// could have.
    fn announces(&mut self, a: &mut Announcer, now: Instant, t: &LoadTorrent, want: usize) {
        for s in &mut self.slots {
            let node = &s.node;
            if node.is_complete() && !s.completed_sent {
                s.completed_sent = true;
                s.next_announce = None;
                a.announce(AnnounceJob {
                    node: node.id(),
                    req: announce_request(node, t, Event::Completed),
                });
                continue;
            }
            if s.next_announce.is_none_or(|at| now < at) {
                continue;
            }
            s.next_announce = Some(now + REANNOUNCE);
            // Connections besides the seed's.
            let peers = node.peer_count().saturating_sub(1);
            if s.started_sent && peers >= want {
                continue;
            }
            let event = if s.started_sent {
                Event::None
            } else {
                Event::Started
            };
            s.started_sent = true;
            a.announce(AnnounceJob {
                node: node.id(),
                req: announce_request(node, t, event),
            });
        }
    }

    fn arm_timer(&mut self, i: usize, at: Instant) {
        let s = &mut self.slots[i];
        if s.timer_at.is_none_or(|t| at < t) {
            s.timer_at = Some(at);
            self.timers.push(Reverse((at, i)));
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(&Reverse((t, i))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            if self.slots[i].timer_at != Some(t) {
                continue;
            }
            self.slots[i].timer_at = None;
            let mut reads = std::mem::take(&mut self.slots[i].throttled_reads);
            let writes = std::mem::take(&mut self.slots[i].throttled_writes);
            for c in writes {
                self.write(c, now);
            }
            // Share the refilled bucket: each waiting connection gets one
            // read of an equal part, starting at a rotating one, so a busy
            // connection at the front cannot starve the rest (handshakes
            // of new connections included).
            if !reads.is_empty() {
                let budget = self.slots[i].node.read_budget(now);
                let share = (budget / reads.len()).max(FAIR_SHARE_MIN);
                self.rotate = self.rotate.wrapping_add(1);
                let k = self.rotate % reads.len();
                reads.rotate_left(k);
                for c in reads {
                    self.read_some(c, now, share, 1);
                }
            }
            self.service(i, now);
        }
    }

    fn register(&mut self, conn: Conn) -> std::io::Result<usize> {
        let c = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        if let Err(e) = self.ep.ctl(
            libc::EPOLL_CTL_ADD,
            conn.sock.as_raw_fd(),
            IN | OUT | HUP | ET,
            c as u64,
        ) {
            self.free.push(c);
            return Err(e);
        }
        self.conns[c] = Some(conn);
        Ok(c)
    }

    fn accept(&mut self, i: usize, now: Instant) {
        for _ in 0..ACCEPTS_PER_EVENT {
            let (sock, from) = match self.slots[i].listener.accept() {
                Ok((s, from)) => (s, from),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    if e.raw_os_error() == Some(libc::EMFILE) {
                        eprintln!("leecher {i}: out of file descriptors accepting: {e}");
                    }
                    return;
                }
            };
            if sock.set_nonblocking(true).is_err() {
                continue;
            }
            let _ = sock.set_tcp_nodelay(true);
            let slot = self.free.last().copied().unwrap_or(self.conns.len());
            let Some(from) = from.as_socket() else {
                continue;
            };
            let Some(key) = self.slots[i].node.add_incoming(now, slot as u64, from) else {
                self.accept_refused += 1;
                continue;
            };
            let conn = Conn {
                sock,
                node: i,
                key,
                connecting: false,
                readable: false,
                writable: true,
                eof: false,
                leftover: Vec::new(),
            };
            match self.register(conn) {
                Ok(c) => debug_assert_eq!(c, slot),
                Err(_) => self.slots[i].node.remove_peer(now, key, "io_error"),
            }
        }
    }

    fn connect(&mut self, i: usize, now: Instant, req: ConnectRequest) {
        let open = || -> std::io::Result<Socket> {
            let s = Socket::new(
                Domain::for_address(req.addr),
                Type::STREAM,
                Some(Protocol::TCP),
            )?;
            s.set_nonblocking(true)?;
            s.set_tcp_nodelay(true)?;
            match s.connect(&SockAddr::from(req.addr)) {
                Ok(()) => Ok(s),
                Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(s),
                Err(e) => Err(e),
            }
        };
        let sock = match open() {
            Ok(s) => s,
            Err(e) => {
                if e.raw_os_error() == Some(libc::EMFILE) {
                    eprintln!("leecher {i}: out of file descriptors connecting: {e}");
                }
                self.slots[i].node.connect_failed(now, req);
                return;
            }
        };
        let slot = self.free.last().copied().unwrap_or(self.conns.len());
        let key = self.slots[i].node.add_outgoing(now, slot as u64, req);
        let conn = Conn {
            sock,
            node: i,
            key,
            connecting: true,
            readable: false,
            writable: false,
            eof: false,
            leftover: Vec::new(),
        };
        if self.register(conn).is_err() {
            self.slots[i].node.remove_peer(now, key, "io_error");
        }
    }

    fn close(&mut self, c: usize, now: Instant, reason: &'static str) {
        let Some(conn) = self.conns.get_mut(c).and_then(Option::take) else {
            return;
        };
        let _ = self
            .ep
            .ctl(libc::EPOLL_CTL_DEL, conn.sock.as_raw_fd(), 0, 0);
        self.freed.push(c);
        let reason = if conn.connecting {
            "connect_failed"
        } else {
            reason
        };
        self.slots[conn.node]
            .node
            .remove_peer(now, conn.key, reason);
    }

    fn on_event(&mut self, c: usize, flags: u32, now: Instant) {
        let Some(conn) = self.conns[c].as_mut() else {
            return;
        };
        if conn.connecting {
            if flags & (OUT | HUP) == 0 {
                return;
            }
            match conn.sock.take_error() {
                Ok(None) => {}
                _ => {
                    self.close(c, now, "connect_failed");
                    return;
                }
            }
            conn.connecting = false;
            let (node, key) = (conn.node, conn.key);
            self.slots[node].node.on_connected(now, key);
        }
        let Some(conn) = self.conns[c].as_mut() else {
            return;
        };
        if flags & (IN | HUP) != 0 {
            conn.readable = true;
        }
        if flags & HUP != 0 {
            conn.eof = true;
        }
        if flags & OUT != 0 {
            conn.writable = true;
        }
        self.read(c, now);
        self.write(c, now);
    }

    fn read(&mut self, c: usize, now: Instant) {
        self.read_some(c, now, READ_BUF, READS_PER_TURN);
    }

    /// Up to `turns` reads of at most `cap` bytes each (and within the
    /// download cap); a connection still readable after them goes to the
    /// back of the ready queue.
    fn read_some(&mut self, c: usize, now: Instant, cap: usize, turns: usize) {
        for _ in 0..turns {
            let Some(conn) = self.conns.get_mut(c).and_then(Option::as_mut) else {
                return;
            };
            if !conn.readable || conn.connecting {
                return;
            }
            let slot = &mut self.slots[conn.node];
            let budget = slot.node.read_budget(now);
            if budget == 0 {
                if !slot.throttled_reads.contains(&c) {
                    slot.throttled_reads.push(c);
                }
                let (i, at) = (conn.node, slot.node.down_ready_at(now));
                self.arm_timer(i, at);
                return;
            }
            let keep = conn.leftover.len();
            self.buf[..keep].copy_from_slice(&conn.leftover);
            let want = READ_BUF.min(budget).min(cap);
            let n = match (&conn.sock).read(&mut self.buf[keep..keep + want]) {
                Ok(0) => return self.close(c, now, "peer_closed"),
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    conn.readable = false;
                    return;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                    return self.close(c, now, "peer_closed")
                }
                Err(_) => return self.close(c, now, "io_error"),
            };
            let node = &mut slot.node;
            match node.handle_data(now, conn.key, &self.buf[..keep + n]) {
                Ok(used) => {
                    conn.leftover.clear();
                    conn.leftover.extend_from_slice(&self.buf[used..keep + n]);
                }
                Err(reason) => return self.close(c, now, reason),
            }
            if n < want && !conn.eof {
                // A short read drained the socket (edge-triggered: the next
                // bytes raise a new event).
                conn.readable = false;
                return;
            }
        }
        self.ready_reads.push_back(c);
    }

    fn write(&mut self, c: usize, now: Instant) {
        for _ in 0..WRITES_PER_TURN {
            let Some(conn) = self.conns.get_mut(c).and_then(Option::as_mut) else {
                return;
            };
            if !conn.writable || conn.connecting {
                return;
            }
            let slot = &mut self.slots[conn.node];
            let mut iov: Vec<IoSlice<'_>> = Vec::with_capacity(super::wire::MAX_IOV);
            let out = slot.node.output(now, conn.key, &mut iov);
            if out.bytes == 0 {
                drop(iov);
                if out.blocked {
                    if !slot.throttled_writes.contains(&c) {
                        slot.throttled_writes.push(c);
                    }
                    let (i, at) = (conn.node, slot.node.up_ready_at(now));
                    self.arm_timer(i, at);
                }
                return;
            }
            let r = (&conn.sock).write_vectored(&iov);
            drop(iov);
            match r {
                Ok(n) => {
                    slot.node.consume_output(now, conn.key, n);
                    if n < out.bytes {
                        conn.writable = false;
                        return;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    conn.writable = false;
                    return;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset) =>
                {
                    return self.close(c, now, "peer_closed")
                }
                Err(_) => return self.close(c, now, "io_error"),
            }
        }
    }

    /// Carries out what node `i` asked for: closes, sends, connects.
    fn service(&mut self, i: usize, now: Instant) {
        let mut s = std::mem::take(&mut self.scratch);
        for _ in 0..8 {
            let node = &mut self.slots[i].node;
            node.take_closes(&mut s.closes);
            node.take_dirty(&mut s.dirty);
            node.poll_connects(now, &mut s.connects);
            if s.closes.is_empty() && s.dirty.is_empty() && s.connects.is_empty() {
                break;
            }
            for (_, conn, reason) in s.closes.drain(..) {
                self.close(conn as usize, now, reason);
            }
            for (_, conn) in s.dirty.drain(..) {
                self.write(conn as usize, now);
            }
            for req in s.connects.drain(..) {
                self.connect(i, now, req);
            }
        }
        s.closes.clear();
        s.dirty.clear();
        s.connects.clear();
        self.scratch = s;
    }

    fn live_line(&self, start: Instant, now: Instant) -> String {
        let n = self.slots.len();
        let done = self.slots.iter().filter(|s| s.node.is_complete()).count();
        let (mut seed, mut peers, mut pieces) = (0u64, 0u64, 0u64);
        for s in &self.slots {
            seed += s.node.stats().bytes_from_target;
            peers += s.node.stats().bytes_from_peers;
            pieces += u64::from(s.node.pieces_have());
        }
        let conns = self.conns.iter().flatten().count();
        format!(
            "[{:>6.1}s] completed {done}/{n}  pieces {pieces}  from seed {:.1} MB  from peers {:.1} MB  connections {conns}",
            now.duration_since(start).as_secs_f64(),
            seed as f64 / 1e6,
            peers as f64 / 1e6,
        )
    }
}
