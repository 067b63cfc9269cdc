//! A shard: one thread, one io_uring, one listener, its own connections.
//!
//! The loop: submit and wait (bounded by a short timeout so shutdown and
//! timers are noticed) -> dispatch every completion -> flush connections
//! that have something to send -> periodic work (peer timeouts, choker).
//!
//! Path of one block: multishot recv CQE -> `PeerState::handle_bytes`
//! decodes the request in place from the provided buffer -> the connection
//! is marked dirty -> `flush` pops queued requests and builds one SENDMSG of
//! `[control][header, mmap slice]...` -> the send CQE frees the slot and
//! the next batch goes. Blocks whose pages are not resident are read with
//! io_uring READ into the read pool first, so the shard never faults.
//! Accept and receive are in [`input`], the send path (batching,
//! completions, cold reads) in [`transmit`]; the choker, super-seeding and
//! the upload cap are `core::Policies`, told what happened here.
//!
//! Timers: the loop's io_uring wait is bounded by [`WAIT`] and by
//! `Policies::poll_timeout` (a rechoke, a parked connection's upload
//! tokens, a super-seed forward timeout), and is zero while connections
//! are waiting to be flushed; so timers fire on time without a timeout SQE.

/// The core's view of this shard's connections for a `Policies` or
/// `core::timers` call: `Conns` over the table, the dirty list and the
/// histograms (field borrows, so `self.policies` and `self.catalog` stay
/// usable beside it).
macro_rules! conns {
    ($shard:expr) => {
        $crate::engine::core::Conns {
            table: &mut $shard.conns,
            dirty: &mut $shard.dirty,
            hist: &mut $shard.hist,
        }
    };
}

mod drain;
mod gso;
mod input;
mod transmit;
mod udp;
mod utp;

use std::collections::VecDeque;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::{cqueue, types};

use crate::metrics::ShardHistograms;
use crate::storage::fence::FenceTracker;
use crate::swarm::choker::ChokerConfig;
use crate::swarm::ratelimit::TokenPool;
use crate::swarm::superseed::SuperSeedConfig;
use crate::wire::{BlockRequest, CloseReason, PeerConfig, TorrentCatalog};

use super::catalog::{Catalog, LiveCatalog};
use super::core::{Conn, ConnId, ConnTable, Policies, PolicyConfig};
use super::limits::ConnLimits;
use super::stats::{CloseKind, HandshakeFailure, ShardStats};
use super::uring::{OpKind, ProvidedBufRing, ReadPool, Ring, RingConfig, SendTable, UserData};

/// Settings of one shard.
#[derive(Clone, Debug)]
pub struct ShardConfig {
    pub index: usize,
    /// CPU to pin to (None: do not pin).
    pub cpu: Option<usize>,
    pub peer: PeerConfig,
    pub choker: ChokerConfig,
    /// Connections this shard accepts at most (`--max-connections-per-shard`).
    pub max_connections: usize,
    /// The box-wide counts (`--max-connections`, `--max-per-ip`), one for
    /// every shard; set by the engine from its [`crate::engine::EngineConfig`].
    pub limits: Arc<ConnLimits>,
    pub send_zc: bool,
    /// What to accept after an MSE handshake (`--encryption`).
    pub encryption: crate::wire::mse::EncryptionPolicy,
    pub ring: RingConfig,
    /// Receive buffers (provided buffer ring): count and size in bytes.
    pub recv_buffers: u16,
    pub recv_buffer_size: u32,
    /// Read-pool buffers (16 KiB each) for page-cache misses.
    pub read_buffers: u32,
    /// The box-wide upload cap's token pool (`--upload-rate-limit`), one
    /// for every shard; `None`: unlimited (the default). Made by the engine
    /// from [`crate::engine::EngineConfig::upload_rate_limit`].
    pub box_pool: Option<Arc<TokenPool>>,
    /// Shards in the engine; set by the engine.
    pub shards: usize,
    /// A send in flight that makes no progress for this long closes the
    /// peer (`send_timeout`): it stopped reading. Default 30 s.
    pub send_timeout: Duration,
    /// Super-seed selector settings for torrents that super-seed. Default:
    /// one offer per peer at a time (BEP 16), 5 s forward timeout, suggest.
    pub super_seed: SuperSeedConfig,
    /// Where ledger adverts of peers (`ringseed_ledger` in their extension
    /// handshake: the address of their ledger and its height) go: the
    /// ledger node's bounded queue (`serve --ledger`). Default none.
    pub ledger_hints: Option<std::sync::mpsc::SyncSender<(std::net::SocketAddr, u64)>>,
    /// uTP on UDP at the TCP port (`--utp`): the engine binds the socket
    /// when the mode listens. Default `refuse`.
    pub utp: crate::utp::UtpMode,
}

impl Default for ShardConfig {
    fn default() -> Self {
        Self {
            index: 0,
            cpu: None,
            peer: PeerConfig::default(),
            choker: ChokerConfig::default(),
            max_connections: 10_000,
            limits: Arc::new(ConnLimits::new(10_000, 1000, 64)),
            send_zc: false,
            encryption: crate::wire::mse::EncryptionPolicy::default(),
            ring: RingConfig::default(),
            recv_buffers: 1024,
            recv_buffer_size: 4096,
            read_buffers: 256,
            box_pool: None,
            shards: 1,
            send_timeout: DEFAULT_SEND_TIMEOUT,
            super_seed: SuperSeedConfig {
                offers_per_peer: 1,
                ..SuperSeedConfig::default()
            },
            utp: crate::utp::UtpMode::default(),
            ledger_hints: None,
        }
    }
}

/// Default of [`ShardConfig::send_timeout`].
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(30);

const LISTENER_INDEX: u32 = 0;
const TICK: Duration = Duration::from_secs(1);
const WAIT: Duration = Duration::from_millis(50);
/// Pieces that became live again (re-verified, or fetched) are announced
/// to the peers they were withheld from on the first turn after they did
/// (one atomic load per turn when none did), at most every
/// [`RESTORED_MIN_GAP`] (a scan visits every connection; a fast fetch
/// restores thousands of pieces a second), and at least this often.
const RESTORED_EVERY: Duration = Duration::from_secs(1);
const RESTORED_MIN_GAP: Duration = Duration::from_millis(20);
/// After shutdown is requested, how long to wait for in-flight operations.
const DRAIN_TIMEOUT: Duration = Duration::from_millis(1500);

/// A cold block's read, keyed by its read-pool buffer.
struct ColdRead {
    conn: ConnId,
    req: BlockRequest,
    at: Instant,
    ops_left: u32,
    failed: bool,
    /// File bytes read so far and expected: a short read (file truncated
    /// under us) is never served.
    bytes_read: u64,
    bytes_expected: u64,
    /// Fence epoch the read was started under.
    epoch: u64,
}

pub struct Shard {
    cfg: ShardConfig,
    // Field order matters for drop: `ring` goes before the memory it
    // references (buffer ring, read pool, send slots); `run` also drains
    // and unregisters before returning.
    ring: Ring,
    bufs: ProvidedBufRing,
    /// The uTP socket at the TCP port (`None` with `--utp off`).
    udp: Option<udp::Udp>,
    reads: ReadPool,
    cold: Vec<Option<ColdRead>>,
    /// Connections parked because no read buffer was free, oldest first;
    /// woken as buffers are released.
    read_waiters: VecDeque<ConnId>,
    /// `finish` ran (it runs once, on every exit path; see `Drop`).
    finished: bool,
    listener: socket2::Socket,
    accepting: bool,
    /// Accept stopped on resource exhaustion; re-armed by the next tick.
    accept_backoff: bool,
    last_accept_warning: Option<Instant>,
    conns: ConnTable<Conn>,
    sends: SendTable,
    dirty: Vec<u32>,
    rearm: Vec<u32>,
    /// The catalogue version this shard serves, and where new ones appear.
    catalog: Arc<Catalog>,
    live: Arc<LiveCatalog>,
    catalog_version: u64,
    /// Connections of torrents being taken out (see [`drain`]).
    draining: Vec<u32>,
    /// The choker, the super-seed selectors and the upload cap.
    policies: Policies,
    stats: Arc<ShardStats>,
    hist: ShardHistograms,
    shutdown: Arc<AtomicBool>,
    last_tick: Instant,
    last_restored: Instant,
    /// [`crate::storage::availability::restored_anywhere`] at the last turn.
    restored_seen: u64,
    /// Tags sends and disk reads so a lease break knows when the pages of
    /// a withdrawn file are no longer in flight (`storage::fence`).
    fence: FenceTracker,
    /// Completions of uTP "sends" (bytes copied into a uTP send buffer),
    /// handled like CQEs by [`Shard::reap_synthetic`].
    synthetic: VecDeque<(u64, i32)>,
    /// uTP links whose engine side finished (FIN after what it sent).
    utp_fin: Vec<u32>,
}

impl Shard {
    /// Set up the ring and buffers. Runs on the shard thread.
    pub fn new(
        cfg: ShardConfig,
        listener: socket2::Socket,
        udp: Option<std::net::UdpSocket>,
        live: Arc<LiveCatalog>,
        stats: Arc<ShardStats>,
        hist: ShardHistograms,
        shutdown: Arc<AtomicBool>,
    ) -> io::Result<Self> {
        let (catalog_version, catalog) = live.load_versioned();
        let ring = Ring::new(cfg.ring)?;
        let bufs = ProvidedBufRing::new(
            &ring.uring.submitter(),
            1,
            cfg.recv_buffers,
            cfg.recv_buffer_size,
        )?;
        let udp = udp
            .map(|sock| udp::Udp::new(&ring, sock, cfg.utp, cfg.max_connections))
            .transpose()?;
        let reads = ReadPool::new(cfg.read_buffers);
        let now = Instant::now();
        let fence = catalog.fence().register();
        let policies = Policies::new(
            PolicyConfig {
                choker: cfg.choker.clone(),
                super_seed: cfg.super_seed.clone(),
                box_pool: cfg.box_pool.clone(),
                shard: cfg.index,
                shards: cfg.shards,
            },
            now,
            &catalog,
            stats.clone(),
        );
        // The gauge sums over shards to the box cap: shard 0 reports it.
        let shown = if cfg.index == 0 {
            cfg.box_pool.as_ref().map_or(0, |p| p.rate_bytes_per_sec())
        } else {
            0
        };
        stats.upload_limit.store(shown, Ordering::Relaxed);
        Ok(Self {
            fence,
            cold: (0..cfg.read_buffers).map(|_| None).collect(),
            read_waiters: VecDeque::new(),
            finished: false,
            ring,
            bufs,
            udp,
            reads,
            listener,
            accepting: false,
            accept_backoff: false,
            last_accept_warning: None,
            conns: ConnTable::default(),
            sends: SendTable::default(),
            dirty: Vec::new(),
            rearm: Vec::new(),
            catalog,
            live,
            catalog_version,
            draining: Vec::new(),
            policies,
            stats,
            hist,
            shutdown,
            last_tick: now,
            last_restored: now,
            restored_seen: 0,
            cfg,
            synthetic: VecDeque::new(),
            utp_fin: Vec::new(),
        })
    }

    /// The event loop; returns on shutdown after closing every connection.
    /// The teardown (`finish`: reap until the kernel holds none of our
    /// memory) runs on every exit path, errors included; a panic runs it
    /// from `Drop`.
    pub fn run(mut self) -> io::Result<()> {
        let result = self.run_loop();
        if let Err(e) = &result {
            tracing::error!(shard = self.cfg.index, error = %e, "shard stopping on an error");
        }
        self.finish();
        result
    }

    fn run_loop(&mut self) -> io::Result<()> {
        self.arm_accept()?;
        self.arm_udp()?;
        let mut draining_since: Option<Instant> = None;
        loop {
            let ts = types::Timespec::from(self.wait_time(Instant::now()));
            let args = types::SubmitArgs::new().timespec(&ts);
            match self.ring.uring.submitter().submit_with_args(1, &args) {
                Ok(_) => {}
                Err(e)
                    if e.raw_os_error() == Some(libc::ETIME)
                        || e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    // CQ overflow backlog: reap below, then submit again.
                }
                Err(e) => return Err(e),
            }
            // A new catalogue first, then the fence: an epoch passed means
            // the version published before it was taken.
            self.follow_catalog(Instant::now());
            // Before building any send: see pieces withdrawn since.
            self.fence.observe(self.catalog.fence());
            self.reap()?;
            let now = Instant::now();
            let mut cx = conns!(self);
            self.policies.handle_timers(now, &mut cx);
            self.flush_dirty()?;
            self.reap_synthetic()?;
            self.utp_turn(now)?;
            self.reap_synthetic()?;
            self.drain_turn(now);
            self.rearm_recvs()?;
            self.fence_turn();

            self.hist.publish_if_due(now);
            let restored = crate::storage::availability::restored_anywhere();
            let since = now.duration_since(self.last_restored);
            if (restored != self.restored_seen && since >= RESTORED_MIN_GAP)
                || since >= RESTORED_EVERY
            {
                self.restored_seen = restored;
                self.last_restored = now;
                self.restored_turn();
            }
            if now.duration_since(self.last_tick) >= TICK {
                self.last_tick = now;
                self.tick(now)?;
            }

            if self.shutdown.load(Ordering::Relaxed) {
                let since = *draining_since.get_or_insert_with(|| {
                    self.begin_shutdown();
                    now
                });
                let idle = self.conns.is_empty() && !self.accepting;
                if idle || now.duration_since(since) > DRAIN_TIMEOUT {
                    return Ok(());
                }
            }
        }
    }

    /// How long the next io_uring wait may last: [`WAIT`] at most, less
    /// if a timer (a policy's, a uTP one) is due sooner, zero while
    /// connections wait to be flushed.
    fn wait_time(&self, now: Instant) -> Duration {
        if !self.dirty.is_empty() || !self.synthetic.is_empty() {
            return Duration::ZERO;
        }
        // Drain deadlines are checked every turn; a turn every 10 ms is plenty.
        let wait = if self.draining.is_empty() {
            WAIT
        } else {
            WAIT.min(Duration::from_millis(10))
        };
        let deadline = Some(self.policies.poll_timeout(now));
        let utp = self
            .udp
            .as_ref()
            .and_then(|u| u.serving.as_ref())
            .and_then(|s| s.deadline());
        let deadline = match (deadline, utp) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        deadline.map_or(wait, |d| d.saturating_duration_since(now).min(wait))
    }

    fn finish(&mut self) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        // Stop everything still open, then reap until the kernel holds no
        // more of our memory (reads write into the read pool; sends read
        // send slots), bounded in time.
        for (_, c) in self.conns.iter_mut() {
            if let Some(fd) = c.fd() {
                let _ = socket2::SockRef::from(fd).shutdown(std::net::Shutdown::Both);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        while (self.cold.iter().any(Option::is_some)
            || self.sends.in_flight() > 0
            || self.udp.as_ref().is_some_and(udp::Udp::is_armed))
            && Instant::now() < deadline
        {
            let ts = types::Timespec::from(Duration::from_millis(10));
            let args = types::SubmitArgs::new().timespec(&ts);
            let _ = self.ring.uring.submitter().submit_with_args(1, &args);
            if self.reap().is_err() {
                break;
            }
        }
        self.hist.publish();
        self.bufs.unregister(&self.ring.uring.submitter());
        if let Some(u) = self.udp.as_mut() {
            u.unregister(&self.ring);
        }
        if self.cold.iter().any(Option::is_some) {
            // A disk read is still in flight: never free memory the kernel
            // may write into.
            tracing::warn!(
                shard = self.cfg.index,
                "disk reads still in flight at exit; leaking the read pool"
            );
            std::mem::forget(std::mem::replace(&mut self.reads, ReadPool::new(0)));
        }
        if self.sends.in_flight() > 0 {
            // Likewise for send slots the kernel may still read.
            tracing::warn!(
                shard = self.cfg.index,
                "sends still in flight at exit; leaking their slots"
            );
            std::mem::forget(std::mem::take(&mut self.sends));
        }
    }

    fn begin_shutdown(&mut self) {
        // Stop accepting: shutting the listener down ends the multishot accept.
        let _ = self.listener.shutdown(std::net::Shutdown::Both);
        self.cancel_udp();
        for idx in 0..self.conns.index_bound() {
            self.close(idx, CloseKind::Shutdown);
        }
    }

    fn arm_accept(&mut self) -> io::Result<()> {
        let ud = UserData::new(OpKind::Accept, 0, LISTENER_INDEX).encode();
        self.ring.push_accept_multi(self.listener.as_raw_fd(), ud)?;
        self.accepting = true;
        Ok(())
    }

    fn reap(&mut self) -> io::Result<()> {
        // Copy CQEs out in batches so handlers may push new SQEs.
        let mut batch: Vec<cqueue::Entry> = Vec::with_capacity(256);
        loop {
            batch.clear();
            batch.extend(self.ring.uring.completion().take(256));
            if batch.is_empty() {
                return Ok(());
            }
            for cqe in &batch {
                self.dispatch(cqe)?;
            }
        }
    }

    /// The completions of uTP sends queued since the last call (and those
    /// their handling queues), in order.
    fn reap_synthetic(&mut self) -> io::Result<()> {
        // Bounded: a handler may queue more (a partial send resumed).
        for _ in 0..4096 {
            let Some((ud, res)) = self.synthetic.pop_front() else {
                return Ok(());
            };
            if let Some(ud) = UserData::decode(ud) {
                self.on_send(ud, res, 0)?;
            }
        }
        Ok(())
    }

    fn dispatch(&mut self, cqe: &cqueue::Entry) -> io::Result<()> {
        let Some(ud) = UserData::decode(cqe.user_data()) else {
            return Ok(());
        };
        match ud.kind {
            OpKind::Accept => self.on_accept(cqe),
            OpKind::Recv => self.on_recv(ud, cqe),
            OpKind::Send => self.on_send(ud, cqe.result(), cqe.flags()),
            OpKind::Read => self.on_read(ud, cqe),
            OpKind::Udp => self.on_udp(ud, cqe),
            OpKind::Cancel | OpKind::Wake => Ok(()),
        }
    }

    /// After a connection's input was handled: the policies (torrent
    /// attached, choker, super-seed, interest; marks it dirty), then a
    /// look at its extension handshake for a ledger advert or a fetch hint.
    fn after_input(&mut self, idx: u32, now: Instant) {
        let mut cx = conns!(self);
        self.policies.handle_input(now, &self.catalog, &mut cx, idx);
        let Some(conn) = self.conns.at_mut(idx) else {
            return;
        };
        if !conn.ledger_seen {
            if let Some(ext) = conn.peer.peer_ext() {
                conn.ledger_seen = true;
                if let (Some(advert), Some(tx)) = (ext.ledger, &self.cfg.ledger_hints) {
                    // Another box with a ledger: its height and where to
                    // fetch it. The ledger node decides (never blocks us).
                    let at = std::net::SocketAddr::new(conn.remote.ip(), advert.port);
                    let _ = tx.try_send((at, advert.height));
                }
                if let (Some(port), Some(t)) = (ext.listen_port, &conn.torrent) {
                    // A torrent we fetch: the peer may have pieces we lack.
                    if port != 0 {
                        t.hint_fetch_peer(std::net::SocketAddr::new(conn.remote.ip(), port));
                    }
                }
            }
        }
    }

    fn mark_dirty(&mut self, idx: u32) {
        conns!(self).mark_dirty(idx);
    }

    /// The connection an operation's (index, generation) names, if it is
    /// still open.
    fn conn_mut(&mut self, idx: u32, generation: u32) -> Option<&mut Conn> {
        self.conns.get_mut(ConnId::new(idx, generation))
    }

    // ---- timers and teardown -------------------------------------------

    /// End of a loop turn: tell a waiting lease break how far we are; if it
    /// has waited too long, close the connections whose sends (started
    /// before the withdrawal) are stuck behind a peer that stopped reading.
    fn fence_turn(&mut self) {
        let forced = self.catalog.fence().forced();
        if self.fence.oldest().is_some_and(|o| o < forced) {
            let stale: Vec<u32> = self
                .conns
                .iter()
                .filter_map(|(id, c)| {
                    let slot = c.send_slot?;
                    let epoch = self.sends.get_mut(slot)?.epoch;
                    (epoch < forced).then_some(id.index())
                })
                .collect();
            for idx in stale {
                self.close(idx, CloseKind::IoError);
            }
            self.utp_abort_stale(forced);
        }
        self.fence.publish();
    }

    /// `have` for withheld pieces that are live again (O(1) per connection
    /// when nothing came back).
    fn restored_turn(&mut self) {
        for (id, c) in self.conns.iter_mut() {
            if c.closing.is_some() {
                continue;
            }
            let Some(t) = &c.torrent else { continue };
            c.peer.announce_restored(&t.view());
            if !c.dirty && !c.peer.poll_transmit().is_empty() {
                c.dirty = true;
                self.dirty.push(id.index());
            }
        }
    }

    fn tick(&mut self, now: Instant) -> io::Result<()> {
        if self.accept_backoff && !self.shutdown.load(Ordering::Relaxed) {
            self.accept_backoff = false;
            self.arm_accept()?;
        }
        if !self.shutdown.load(Ordering::Relaxed) {
            self.arm_udp()?;
        }
        self.utp_mark_all();
        let mut to_close = Vec::new();
        let mut cx = conns!(self);
        super::core::timers::tick(
            now,
            self.cfg.send_timeout,
            &mut cx,
            &self.stats,
            |fd| super::uring::sys::unsent_bytes(fd).unwrap_or(0),
            &mut to_close,
        );
        for (idx, kind) in to_close {
            self.close(idx, kind);
        }
        Ok(())
    }

    /// Start closing a connection: stop its I/O; the slot is freed once
    /// every in-flight operation has completed.
    fn close(&mut self, idx: u32, kind: CloseKind) {
        let Some(c) = self.conns.at_mut(idx) else {
            return;
        };
        if c.closing.is_some() {
            return;
        }
        c.closing = Some(kind);
        ShardStats::add(self.stats.closed(kind), 1);
        super::core::timers::fold_counters(&self.stats, &mut c.peer);
        if !c.peer.is_handshake_complete() {
            let failure = match c.last_reason {
                Some(CloseReason::UnknownInfoHash) => Some(HandshakeFailure::UnknownInfoHash),
                Some(CloseReason::HandshakeTimeout) => Some(HandshakeFailure::Timeout),
                Some(_) => Some(HandshakeFailure::Malformed),
                None if kind == CloseKind::Shutdown => None,
                None => Some(HandshakeFailure::Closed),
            };
            if let Some(f) = failure {
                self.stats.handshake_failed(f);
            }
        }
        // Shutting the socket down completes pending receives (res 0) and
        // fails pending sends quickly; a uTP stream gets its FIN and a send
        // waiting for room fails.
        let utp = c.utp_link();
        if let Some(fd) = c.fd() {
            let _ = socket2::SockRef::from(fd).shutdown(std::net::Shutdown::Both);
        }
        if c.recv_armed {
            let ud = UserData::new(OpKind::Recv, c.id.generation(), idx).encode();
            let cancel = UserData::new(OpKind::Cancel, c.id.generation(), idx).encode();
            let _ = self.ring.push_cancel(ud, cancel);
        }
        if let Some(l) = utp {
            self.utp_fin.push(l);
            self.utp_fail_waiting(l);
        }
        let mut cx = conns!(self);
        self.policies.handle_close(Instant::now(), &mut cx, idx);
        self.try_release(idx);
    }

    /// Free a closing connection's slot once nothing is in flight.
    fn try_release(&mut self, idx: u32) {
        let Some(c) = self.conns.at(idx) else {
            return;
        };
        if c.closing.is_none() || !c.quiescent() {
            return;
        }
        let mut c = self.conns.remove(idx).expect("present");
        if let Some(t) = &c.torrent {
            // Nothing of this connection is in flight: it lets go of the files.
            t.count_peer(false);
        }
        let ready = c.pipe.take_ready();
        for rb in &ready {
            // SAFETY: a ready block's READ has completed and it joined no
            // send (the connection is quiescent).
            unsafe { self.reads.release(rb.buf) };
        }
        if !ready.is_empty() {
            self.wake_read_waiters(ready.len() as u32);
        }
        if !c.peer.is_choked() {
            self.stats.unchoked.fetch_sub(1, Ordering::Relaxed);
        }
        self.cfg.limits.release(c.admission);
        self.stats.connections.fetch_sub(1, Ordering::Relaxed);
        if let Some(l) = c.utp_link() {
            self.stats.utp_connections.fetch_sub(1, Ordering::Relaxed);
            self.utp_released(l);
        }
        drop(c); // closes a TCP socket
    }
}

impl Drop for Shard {
    fn drop(&mut self) {
        // `run` finished already unless it never ran or unwound from a
        // panic: tear down now, before the ring and the memory it points at
        // are dropped.
        if !self.finished && !std::thread::panicking() {
            self.finish();
        } else if !self.finished {
            // Unwinding: reaping could panic again; never free what the
            // kernel may still touch.
            self.finished = true;
            std::mem::forget(std::mem::replace(&mut self.reads, ReadPool::new(0)));
            std::mem::forget(std::mem::take(&mut self.sends));
        }
        self.bufs.unregister(&self.ring.uring.submitter());
        if let Some(u) = self.udp.as_mut() {
            u.unregister(&self.ring);
        }
    }
}

/// Whether a catalog lookup is by hash (used by tests).
pub fn catalog_has(c: &Catalog, hash: &[u8; 20]) -> bool {
    c.lookup(crate::wire::TorrentKey::InfoHash(hash)).is_some()
}
