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
//! The send path (batching, completions, cold reads) is in [`transmit`].

mod transmit;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::{cqueue, types};

use crate::metrics::ShardHistograms;
use crate::storage::fence::FenceTracker;
use crate::swarm::choker::{ChokeDecision, Choker, ChokerConfig, PeerId};
use crate::wire::{BlockRequest, CloseReason, PeerConfig, PeerState, TorrentCatalog};

use super::catalog::Catalog;
use super::conn::Conn;
use super::stats::{CloseKind, HandshakeFailure, RejectReason, ShardStats};
use super::stream::{self, FeedError, MseOutcome};
use super::uring::user_data::next_generation;
use super::uring::{sys, OpKind, ProvidedBufRing, ReadPool, Ring, RingConfig, SendTable, UserData};

/// Settings of one shard.
#[derive(Clone, Debug)]
pub struct ShardConfig {
    pub index: usize,
    /// CPU to pin to (None: do not pin).
    pub cpu: Option<usize>,
    pub peer: PeerConfig,
    pub choker: ChokerConfig,
    /// Connections this shard accepts at most.
    pub max_connections: usize,
    /// Connections from one IP this shard accepts at most.
    pub max_per_ip: u32,
    pub send_zc: bool,
    /// What to accept after an MSE handshake (`--encryption`).
    pub encryption: crate::wire::mse::EncryptionPolicy,
    pub ring: RingConfig,
    /// Receive buffers (provided buffer ring): count and size in bytes.
    pub recv_buffers: u16,
    pub recv_buffer_size: u32,
    /// Read-pool buffers (16 KiB each) for page-cache misses.
    pub read_buffers: u32,
}

impl Default for ShardConfig {
    fn default() -> Self {
        Self {
            index: 0,
            cpu: None,
            peer: PeerConfig::default(),
            choker: ChokerConfig::default(),
            max_connections: 10_000,
            max_per_ip: 1000,
            send_zc: false,
            encryption: crate::wire::mse::EncryptionPolicy::default(),
            ring: RingConfig::default(),
            recv_buffers: 1024,
            recv_buffer_size: 4096,
            read_buffers: 256,
        }
    }
}

const LISTENER_INDEX: u32 = 0;
const TICK: Duration = Duration::from_secs(1);
const WAIT: Duration = Duration::from_millis(50);
/// After shutdown is requested, how long to wait for in-flight operations.
const DRAIN_TIMEOUT: Duration = Duration::from_millis(1500);

/// A cold block's read, keyed by its read-pool buffer.
struct ColdRead {
    conn: u32,
    generation: u32,
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
    reads: ReadPool,
    cold: Vec<Option<ColdRead>>,
    listener: socket2::Socket,
    accepting: bool,
    /// Accept stopped on resource exhaustion; re-armed by the next tick.
    accept_backoff: bool,
    last_accept_warning: Option<Instant>,
    conns: Vec<Option<Conn>>,
    generations: Vec<u32>,
    free_conns: Vec<u32>,
    live_conns: usize,
    sends: SendTable,
    dirty: Vec<u32>,
    rearm: Vec<u32>,
    per_ip: HashMap<IpAddr, u32>,
    catalog: Arc<Catalog>,
    choker: Choker,
    decisions: Vec<ChokeDecision>,
    stats: Arc<ShardStats>,
    hist: ShardHistograms,
    shutdown: Arc<AtomicBool>,
    last_tick: Instant,
    /// Tags sends and disk reads so a lease break knows when the pages of
    /// a withdrawn file are no longer in flight (`storage::fence`).
    fence: FenceTracker,
}

impl Shard {
    /// Set up the ring and buffers. Runs on the shard thread.
    pub fn new(
        cfg: ShardConfig,
        listener: socket2::Socket,
        catalog: Arc<Catalog>,
        stats: Arc<ShardStats>,
        hist: ShardHistograms,
        shutdown: Arc<AtomicBool>,
    ) -> io::Result<Self> {
        let ring = Ring::new(cfg.ring)?;
        let bufs = ProvidedBufRing::new(
            &ring.uring.submitter(),
            1,
            cfg.recv_buffers,
            cfg.recv_buffer_size,
        )?;
        let reads = ReadPool::new(cfg.read_buffers);
        let now = Instant::now();
        let choker = Choker::new(cfg.choker.clone(), now);
        let fence = catalog.fence().register();
        Ok(Self {
            fence,
            cold: (0..cfg.read_buffers).map(|_| None).collect(),
            ring,
            bufs,
            reads,
            listener,
            accepting: false,
            accept_backoff: false,
            last_accept_warning: None,
            conns: Vec::new(),
            generations: Vec::new(),
            free_conns: Vec::new(),
            live_conns: 0,
            sends: SendTable::default(),
            dirty: Vec::new(),
            rearm: Vec::new(),
            per_ip: HashMap::new(),
            catalog,
            choker,
            decisions: Vec::new(),
            stats,
            hist,
            shutdown,
            last_tick: now,
            cfg,
        })
    }

    /// The event loop; returns on shutdown after closing every connection.
    pub fn run(mut self) -> io::Result<()> {
        self.arm_accept()?;
        let mut draining_since: Option<Instant> = None;
        loop {
            let ts = types::Timespec::from(WAIT);
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
            // Before building any send: see pieces withdrawn since.
            self.fence.observe(self.catalog.fence());
            self.reap()?;
            self.flush_dirty()?;
            self.rearm_recvs()?;
            self.fence_turn();

            let now = Instant::now();
            self.hist.publish_if_due(now);
            if now.duration_since(self.last_tick) >= TICK {
                self.last_tick = now;
                self.tick(now)?;
            }
            if now >= self.choker.next_tick() {
                self.decisions.clear();
                let mut out = std::mem::take(&mut self.decisions);
                self.choker.tick(now, &mut out);
                self.apply_decisions(now, &out);
                self.decisions = out;
            }

            if self.shutdown.load(Ordering::Relaxed) {
                let since = *draining_since.get_or_insert_with(|| {
                    self.begin_shutdown();
                    now
                });
                let idle = self.live_conns == 0 && !self.accepting;
                if idle || now.duration_since(since) > DRAIN_TIMEOUT {
                    break;
                }
            }
        }
        self.finish();
        Ok(())
    }

    fn finish(&mut self) {
        // Stop everything still open, then reap until the kernel holds no
        // more of our memory (reads write into the read pool; sends read
        // send slots), bounded in time.
        for c in self.conns.iter_mut().flatten() {
            let _ = socket2::SockRef::from(&c.fd).shutdown(std::net::Shutdown::Both);
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        while (self.cold.iter().any(Option::is_some) || self.sends.in_flight() > 0)
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
        if self.cold.iter().any(Option::is_some) {
            // A disk read is still in flight: never free memory the kernel
            // may write into.
            tracing::warn!(
                shard = self.cfg.index,
                "disk reads still in flight at exit; leaking the read pool"
            );
            std::mem::forget(std::mem::replace(&mut self.reads, ReadPool::new(0)));
        }
    }

    fn begin_shutdown(&mut self) {
        // Stop accepting: shutting the listener down ends the multishot accept.
        let _ = self.listener.shutdown(std::net::Shutdown::Both);
        for idx in 0..self.conns.len() as u32 {
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

    fn dispatch(&mut self, cqe: &cqueue::Entry) -> io::Result<()> {
        let Some(ud) = UserData::decode(cqe.user_data()) else {
            return Ok(());
        };
        match ud.kind {
            OpKind::Accept => self.on_accept(cqe),
            OpKind::Recv => self.on_recv(ud, cqe),
            OpKind::Send => self.on_send(ud, cqe),
            OpKind::Read => self.on_read(ud, cqe),
            OpKind::Cancel | OpKind::Wake => Ok(()),
        }
    }

    // ---- accept -------------------------------------------------------

    fn on_accept(&mut self, cqe: &cqueue::Entry) -> io::Result<()> {
        let res = cqe.result();
        let exhausted = [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM].contains(&-res);
        let stopping = self.shutdown.load(Ordering::Relaxed);
        if res < 0 && res != -libc::ECANCELED && !stopping {
            ShardStats::add(&self.stats.accept_errors, 1);
            // Logged once per interval, not per failure.
            let now = Instant::now();
            if self
                .last_accept_warning
                .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10))
            {
                self.last_accept_warning = Some(now);
                tracing::warn!(
                    shard = self.cfg.index,
                    error = %io::Error::from_raw_os_error(-res),
                    "accept failed{}",
                    if exhausted {
                        "; out of descriptors or memory: backing off for a second (raise LimitNOFILE / ulimit -n, or lower --max-connections)"
                    } else {
                        "; re-arming"
                    }
                );
            }
        }
        if !cqueue::more(cqe.flags()) {
            self.accepting = false;
            if !self.shutdown.load(Ordering::Relaxed) {
                if exhausted {
                    // Re-arming at once would spin on the same error: the
                    // tick re-arms after a pause; peers wait in the backlog.
                    self.accept_backoff = true;
                } else {
                    self.arm_accept()?;
                }
            }
        }
        if res < 0 {
            return Ok(());
        }
        let Some(fd) = sys::fd_from_accept(res) else {
            return Ok(());
        };
        if self.shutdown.load(Ordering::Relaxed) {
            return Ok(());
        }
        let remote = socket2::SockRef::from(&fd)
            .peer_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        if self.live_conns >= self.cfg.max_connections {
            ShardStats::add(self.stats.closed(CloseKind::Limit), 1);
            return Ok(());
        }
        let ip = remote.ip();
        let n = self.per_ip.entry(ip).or_insert(0);
        if *n >= self.cfg.max_per_ip {
            ShardStats::add(self.stats.closed(CloseKind::Limit), 1);
            return Ok(());
        }
        *n += 1;
        ShardStats::add(&self.stats.accepted, 1);
        self.stats.connections.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let peer = PeerState::new(now, &self.cfg.peer, remote);
        let idx = match self.free_conns.pop() {
            Some(i) => i,
            None => {
                self.conns.push(None);
                self.generations.push(0);
                (self.conns.len() - 1) as u32
            }
        };
        let generation = self.generations[idx as usize];
        self.conns[idx as usize] = Some(Conn::new(fd, generation, remote, peer, now));
        self.live_conns += 1;
        self.arm_recv(idx)
    }

    // ---- receive ------------------------------------------------------

    fn arm_recv(&mut self, idx: u32) -> io::Result<()> {
        let Some(c) = self.conns[idx as usize].as_mut() else {
            return Ok(());
        };
        if c.recv_armed || c.closing.is_some() {
            return Ok(());
        }
        let ud = UserData::new(OpKind::Recv, c.generation, idx).encode();
        c.recv_armed = true;
        let fd = c.raw_fd();
        self.ring.push_recv_multi(fd, self.bufs.bgid(), ud)
    }

    fn rearm_recvs(&mut self) -> io::Result<()> {
        if self.rearm.is_empty() {
            return Ok(());
        }
        let list = std::mem::take(&mut self.rearm);
        for idx in &list {
            self.arm_recv(*idx)?;
        }
        self.rearm = list;
        self.rearm.clear();
        Ok(())
    }

    fn conn_mut(&mut self, idx: u32, generation: u32) -> Option<&mut Conn> {
        self.conns
            .get_mut(idx as usize)?
            .as_mut()
            .filter(|c| c.generation == generation)
    }

    fn on_recv(&mut self, ud: UserData, cqe: &cqueue::Entry) -> io::Result<()> {
        let res = cqe.result();
        let flags = cqe.flags();
        let more = cqueue::more(flags);
        let bid = cqueue::buffer_select(flags);
        let now = Instant::now();
        let catalog = Arc::clone(&self.catalog);
        let Some(conn) = self
            .conns
            .get_mut(ud.index as usize)
            .and_then(|c| c.as_mut())
            .filter(|c| c.generation == ud.generation)
        else {
            if let Some(bid) = bid {
                self.bufs.recycle(bid);
            }
            return Ok(());
        };
        if !more {
            conn.recv_armed = false;
        }
        let mut outcome: Result<(), CloseKind> = Ok(());
        if res > 0 {
            if let Some(bid) = bid {
                if conn.closing.is_none() {
                    let data = self.bufs.data(bid, res as usize);
                    match stream::feed(
                        &mut conn.stream,
                        &mut conn.peer,
                        &mut conn.pre_tx,
                        now,
                        data,
                        catalog.as_ref(),
                        self.cfg.encryption,
                    ) {
                        Ok(MseOutcome::None) => {}
                        Ok(MseOutcome::Plaintext) => ShardStats::add(&self.stats.mse_plaintext, 1),
                        Ok(MseOutcome::Rc4) => ShardStats::add(&self.stats.mse_rc4, 1),
                        Err(FeedError::Peer(reason)) => {
                            conn.last_reason = Some(reason);
                            tracing::debug!(peer = %conn.remote, reason = reason.as_str(), "closing peer");
                            outcome = Err(close_kind(reason));
                        }
                        Err(FeedError::Mse(e)) => {
                            ShardStats::add(&self.stats.mse_failed, 1);
                            conn.last_reason = Some(CloseReason::BadHandshake);
                            tracing::debug!(peer = %conn.remote, error = %e, "MSE handshake failed");
                            outcome = Err(CloseKind::ProtocolError);
                        }
                    }
                }
                self.bufs.recycle(bid);
            }
        } else if res == 0 {
            outcome = Err(CloseKind::PeerClosed);
        } else if res == -libc::ENOBUFS {
            // Out of receive buffers: re-arm once some are recycled.
            if !more {
                self.rearm.push(ud.index);
            }
        } else if res != -libc::ECANCELED {
            outcome = Err(CloseKind::PeerClosed);
        }
        let closing = conn.closing.is_some();
        if closing {
            self.try_release(ud.index);
            return Ok(());
        }
        if let Err(kind) = outcome {
            self.close(ud.index, kind);
            return Ok(());
        }
        self.after_input(ud.index, now);
        if !more && res != -libc::ENOBUFS {
            self.arm_recv(ud.index)?;
        }
        Ok(())
    }

    /// Bookkeeping after the peer state changed: attach the torrent,
    /// register with the choker, pass interest changes, mark dirty.
    fn after_input(&mut self, idx: u32, now: Instant) {
        let Some(conn) = self.conns[idx as usize].as_mut() else {
            return;
        };
        if conn.torrent.is_none() {
            if let Some(id) = conn.peer.torrent() {
                conn.torrent = self.catalog.get(id).cloned();
            }
        }
        let mut decisions = std::mem::take(&mut self.decisions);
        decisions.clear();
        if conn.torrent.is_some() && !conn.in_choker {
            conn.in_choker = self.choker.peer_connected(now, PeerId(idx)).is_ok();
        }
        let interested = conn.peer.is_interested();
        if conn.in_choker && interested != conn.interested {
            conn.interested = interested;
            self.choker
                .peer_interested(now, PeerId(idx), interested, &mut decisions);
        }
        self.mark_dirty(idx);
        self.apply_decisions(now, &decisions);
        self.decisions = decisions;
    }

    fn apply_decisions(&mut self, now: Instant, decisions: &[ChokeDecision]) {
        for d in decisions {
            let idx = d.peer.0;
            if let Some(c) = self.conns.get_mut(idx as usize).and_then(|c| c.as_mut()) {
                if c.closing.is_some() {
                    continue;
                }
                c.peer.set_choked(now, !d.unchoke);
                if d.unchoke && !c.unchoke_recorded {
                    if let Some(hs) = c.peer.handshake_completed_at() {
                        c.unchoke_recorded = true;
                        self.hist
                            .record_handshake_to_unchoke(now.saturating_duration_since(hs));
                    }
                }
                if d.unchoke {
                    self.stats.unchoked.fetch_add(1, Ordering::Relaxed);
                    if d.optimistic {
                        ShardStats::add(&self.stats.optimistic_unchokes, 1);
                    }
                } else {
                    self.stats.unchoked.fetch_sub(1, Ordering::Relaxed);
                }
                self.mark_dirty(idx);
            }
        }
    }

    fn mark_dirty(&mut self, idx: u32) {
        if let Some(c) = self.conns[idx as usize].as_mut() {
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(idx);
            }
        }
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
                .enumerate()
                .filter_map(|(i, c)| {
                    let slot = c.as_ref()?.send_slot?;
                    let epoch = self.sends.get_mut(slot)?.epoch;
                    (epoch < forced).then_some(i as u32)
                })
                .collect();
            for idx in stale {
                self.close(idx, CloseKind::IoError);
            }
        }
        self.fence.publish();
    }

    fn tick(&mut self, now: Instant) -> io::Result<()> {
        if self.accept_backoff && !self.shutdown.load(Ordering::Relaxed) {
            self.accept_backoff = false;
            self.arm_accept()?;
        }
        let mut to_close = Vec::new();
        for (idx, c) in self.conns.iter_mut().enumerate() {
            let Some(c) = c.as_mut() else { continue };
            if c.closing.is_some() {
                continue;
            }
            fold_counters(&self.stats, &mut c.peer);
            if let Some(t) = &c.torrent {
                c.peer.announce_restored(&t.view());
            }
            if let Err(reason) = c.peer.handle_tick(now) {
                c.last_reason = Some(reason);
                to_close.push((idx as u32, close_kind(reason)));
            } else if !c.peer.poll_transmit().is_empty() && !c.dirty {
                c.dirty = true;
                self.dirty.push(idx as u32);
            }
        }
        for (idx, kind) in to_close {
            self.close(idx, kind);
        }
        Ok(())
    }

    /// Start closing a connection: stop its I/O; the slot is freed once
    /// every in-flight operation has completed.
    fn close(&mut self, idx: u32, kind: CloseKind) {
        let Some(c) = self.conns.get_mut(idx as usize).and_then(|c| c.as_mut()) else {
            return;
        };
        if c.closing.is_some() {
            return;
        }
        c.closing = Some(kind);
        ShardStats::add(self.stats.closed(kind), 1);
        fold_counters(&self.stats, &mut c.peer);
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
        // fails pending sends quickly.
        let _ = socket2::SockRef::from(&c.fd).shutdown(std::net::Shutdown::Both);
        if c.recv_armed {
            let ud = UserData::new(OpKind::Recv, c.generation, idx).encode();
            let cancel = UserData::new(OpKind::Cancel, c.generation, idx).encode();
            let _ = self.ring.push_cancel(ud, cancel);
        }
        if c.in_choker {
            c.in_choker = false;
            let mut out = std::mem::take(&mut self.decisions);
            out.clear();
            self.choker
                .peer_disconnected(Instant::now(), PeerId(idx), &mut out);
            self.apply_decisions(Instant::now(), &out);
            self.decisions = out;
        }
        self.try_release(idx);
    }

    /// Free a closing connection's slot once nothing is in flight.
    fn try_release(&mut self, idx: u32) {
        let Some(c) = self.conns.get(idx as usize).and_then(|c| c.as_ref()) else {
            return;
        };
        if c.closing.is_none() || !c.quiescent() {
            return;
        }
        let c = self.conns[idx as usize].take().expect("present");
        for rb in &c.ready {
            self.reads.release(rb.buf);
        }
        if !c.peer.is_choked() {
            self.stats.unchoked.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(n) = self.per_ip.get_mut(&c.remote.ip()) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&c.remote.ip());
            }
        }
        self.generations[idx as usize] = next_generation(self.generations[idx as usize]);
        self.free_conns.push(idx);
        self.live_conns -= 1;
        self.stats.connections.fetch_sub(1, Ordering::Relaxed);
        drop(c); // closes the fd
    }
}

/// Move a peer's protocol counters into the shard's stats.
fn fold_counters(stats: &ShardStats, peer: &mut PeerState) {
    use crate::wire::RejectReason as Wire;
    let pc = peer.take_counters();
    ShardStats::add(&stats.requests, pc.requests_received);
    ShardStats::add(&stats.cancelled, pc.cancels_matched);
    for r in Wire::ALL {
        let n = pc.rejected(r);
        if n == 0 {
            continue;
        }
        let reason = match r {
            Wire::Choked | Wire::ChokeFlushed => RejectReason::Choked,
            Wire::QueueFull => RejectReason::QueueFull,
            Wire::ZeroLength | Wire::OutOfRange => RejectReason::OutOfRange,
            Wire::NotHave => RejectReason::Unavailable,
        };
        for _ in 0..n {
            stats.reject(reason);
        }
    }
}

/// Map a protocol close reason to its metrics group.
pub fn close_kind(reason: CloseReason) -> CloseKind {
    if matches!(
        reason,
        CloseReason::HandshakeTimeout | CloseReason::IdleTimeout
    ) {
        CloseKind::Timeout
    } else {
        CloseKind::ProtocolError
    }
}

impl Drop for Shard {
    fn drop(&mut self) {
        self.bufs.unregister(&self.ring.uring.submitter());
    }
}

/// Whether a catalog lookup is by hash (used by tests).
pub fn catalog_has(c: &Catalog, hash: &[u8; 20]) -> bool {
    c.lookup(crate::wire::TorrentKey::InfoHash(hash)).is_some()
}
