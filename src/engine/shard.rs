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

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::{cqueue, types};

use crate::storage::Segment;
use crate::swarm::choker::{ChokeDecision, Choker, ChokerConfig, PeerId};
use crate::wire::{piece_header, BlockRequest, CloseReason, PeerConfig, PeerState, TorrentCatalog};

use super::catalog::Catalog;
use super::conn::{Conn, ReadyBlock};
use super::stats::{CloseKind, ShardStats};
use super::uring::readpool::{ReadPool, READ_BUF_SIZE};
use super::uring::send::SentBlock;
use super::uring::user_data::next_generation;
use super::uring::{sys, OpKind, ProvidedBufRing, Ring, RingConfig, SendSlot, UserData};

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
    ops_left: u32,
    failed: bool,
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
    conns: Vec<Option<Conn>>,
    generations: Vec<u32>,
    free_conns: Vec<u32>,
    live_conns: usize,
    send_slots: Vec<Option<Box<SendSlot>>>,
    spare_slots: Vec<Box<SendSlot>>,
    free_slot_ids: Vec<u32>,
    dirty: Vec<u32>,
    rearm: Vec<u32>,
    per_ip: HashMap<IpAddr, u32>,
    catalog: Arc<Catalog>,
    choker: Choker,
    decisions: Vec<ChokeDecision>,
    stats: Arc<ShardStats>,
    shutdown: Arc<AtomicBool>,
    last_tick: Instant,
}

impl Shard {
    /// Set up the ring and buffers. Runs on the shard thread.
    pub fn new(
        cfg: ShardConfig,
        listener: socket2::Socket,
        catalog: Arc<Catalog>,
        stats: Arc<ShardStats>,
        shutdown: Arc<AtomicBool>,
    ) -> io::Result<Self> {
        let ring = Ring::new(cfg.ring)?;
        let bufs = ProvidedBufRing::new(&ring.uring.submitter(), 1, cfg.recv_buffers, cfg.recv_buffer_size)?;
        let reads = ReadPool::new(cfg.read_buffers);
        let now = Instant::now();
        let choker = Choker::new(cfg.choker.clone(), now);
        Ok(Self {
            cold: (0..cfg.read_buffers).map(|_| None).collect(),
            ring,
            bufs,
            reads,
            listener,
            accepting: false,
            conns: Vec::new(),
            generations: Vec::new(),
            free_conns: Vec::new(),
            live_conns: 0,
            send_slots: Vec::new(),
            spare_slots: Vec::new(),
            free_slot_ids: Vec::new(),
            dirty: Vec::new(),
            rearm: Vec::new(),
            per_ip: HashMap::new(),
            catalog,
            choker,
            decisions: Vec::new(),
            stats,
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
                Err(e) if e.raw_os_error() == Some(libc::ETIME) || e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    // CQ overflow backlog: reap below, then submit again.
                }
                Err(e) => return Err(e),
            }
            self.reap()?;
            self.flush_dirty()?;
            self.rearm_recvs()?;

            let now = Instant::now();
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
        // Whatever is still in flight after the drain timeout: cancel it all
        // and give the kernel a moment, then unregister and drop.
        let _ = self.ring.uring.submit();
        self.bufs.unregister(&self.ring.uring.submitter());
        for c in self.conns.iter_mut().flatten() {
            let _ = socket2::SockRef::from(&c.fd).shutdown(std::net::Shutdown::Both);
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
        if !cqueue::more(cqe.flags()) {
            self.accepting = false;
            if !self.shutdown.load(Ordering::Relaxed) {
                if res < 0 && res != -libc::ECANCELED {
                    ShardStats::add(&self.stats.accept_errors, 1);
                    tracing::warn!(shard = self.cfg.index, error = %io::Error::from_raw_os_error(-res), "accept failed; re-arming");
                }
                self.arm_accept()?;
            }
        }
        if res < 0 {
            if res != -libc::ECANCELED && res != -libc::EINVAL {
                ShardStats::add(&self.stats.accept_errors, 1);
            }
            return Ok(());
        }
        // SAFETY-free: the kernel handed us a fresh fd we now own.
        let fd = owned_fd(res);
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
                    if let Err(reason) = conn.peer.handle_bytes(now, data, catalog.as_ref()) {
                        tracing::debug!(peer = %conn.remote, reason = reason.as_str(), "closing peer");
                        outcome = Err(close_kind(reason));
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
            self.choker.peer_interested(now, PeerId(idx), interested, &mut decisions);
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

    // ---- send ---------------------------------------------------------

    fn flush_dirty(&mut self) -> io::Result<()> {
        let list = std::mem::take(&mut self.dirty);
        for &idx in &list {
            if let Some(c) = self.conns[idx as usize].as_mut() {
                c.dirty = false;
            }
            self.flush(idx)?;
        }
        let mut list = list;
        list.clear();
        if self.dirty.is_empty() {
            self.dirty = list;
        }
        Ok(())
    }

    fn alloc_slot(&mut self) -> (u32, Box<SendSlot>) {
        let slot = self.spare_slots.pop().unwrap_or_default();
        let id = match self.free_slot_ids.pop() {
            Some(id) => id,
            None => {
                self.send_slots.push(None);
                (self.send_slots.len() - 1) as u32
            }
        };
        (id, slot)
    }

    /// Build and submit the next batch for connection `idx`, if it has
    /// anything to send and no send in flight.
    fn flush(&mut self, idx: u32) -> io::Result<()> {
        let zc = self.cfg.send_zc;
        let (slot_id, mut slot) = {
            let Some(c) = self.conns[idx as usize].as_ref() else {
                return Ok(());
            };
            if c.closing.is_some() || c.send_slot.is_some() {
                return Ok(());
            }
            self.alloc_slot()
        };
        let conn = self.conns[idx as usize].as_mut().expect("checked above");
        slot.reset((idx, conn.generation));
        let ctl = conn.peer.poll_transmit();
        let ctl_len = ctl.len();
        slot.set_control(ctl);
        conn.peer.advance_transmit(ctl_len);

        if let Some(t) = conn.torrent.clone() {
            slot.keep_alive(t.clone());
            // Blocks already read from disk go first.
            while slot.has_room(1) {
                let Some(rb) = conn.ready.pop_front() else { break };
                slot.push_block(
                    piece_header(rb.req.piece, rb.req.begin, rb.req.len),
                    SentBlock { piece: rb.req.piece, begin: rb.req.begin, len: rb.req.len, read_buf: Some(rb.buf) },
                );
                // SAFETY: read-pool buffer `rb.buf` is owned by this slot
                // until its completion releases it.
                unsafe { slot.push_data(self.reads.ptr(rb.buf), rb.req.len as usize) };
            }
            // Then queued requests, served from the mmap when resident.
            loop {
                if !slot.has_room(4) {
                    break;
                }
                let req = match conn.parked.take() {
                    Some(r) => r,
                    None => match conn.peer.pop_block() {
                        Some(r) => r,
                        None => break,
                    },
                };
                let resident = t
                    .layout
                    .segments(req.piece, u64::from(req.begin), u64::from(req.len))
                    .all(|seg| match seg {
                        Segment::Zero { .. } => true,
                        Segment::File { file_index, file_offset, len } => t
                            .content
                            .file_bytes(file_index, file_offset, len)
                            .is_some_and(sys::is_resident),
                    });
                if !resident {
                    if conn.reads_inflight > 0 {
                        // One cold block per connection at a time.
                        conn.parked = Some(req);
                        break;
                    }
                    match start_cold_read(&mut self.ring, &mut self.reads, &mut self.cold, &t, idx, conn, req)? {
                        true => ShardStats::add(&self.stats.cold_reads, 1),
                        false => {
                            conn.parked = Some(req);
                            break;
                        }
                    }
                    continue;
                }
                let mut segs = 0;
                for _ in t.layout.segments(req.piece, u64::from(req.begin), u64::from(req.len)) {
                    segs += 1;
                }
                if !slot.has_room(segs) {
                    conn.parked = Some(req);
                    break;
                }
                slot.push_block(
                    piece_header(req.piece, req.begin, req.len),
                    SentBlock { piece: req.piece, begin: req.begin, len: req.len, read_buf: None },
                );
                for seg in t.layout.segments(req.piece, u64::from(req.begin), u64::from(req.len)) {
                    match seg {
                        Segment::Zero { len } => slot.push_zeros(len as usize),
                        Segment::File { file_index, file_offset, len } => {
                            let bytes = t.content.file_bytes(file_index, file_offset, len).unwrap_or(&[]);
                            // SAFETY: `bytes` is inside an mmap owned by `t`,
                            // which the slot keeps alive (`keep_alive`).
                            unsafe { slot.push_data(bytes.as_ptr(), bytes.len()) };
                        }
                    }
                }
            }
        }

        if slot.is_empty() {
            self.spare_slots.push(slot);
            self.free_slot_ids.push(slot_id);
            return Ok(());
        }
        conn.send_slot = Some(slot_id);
        let ud = UserData::new(OpKind::Send, 0, slot_id).encode();
        let entry = slot.sqe(types::Fd(conn.raw_fd()), zc, ud);
        self.send_slots[slot_id as usize] = Some(slot);
        ShardStats::add(&self.stats.sends, 1);
        // SAFETY: the slot is boxed in `send_slots` and is not reset or
        // dropped before its last CQE (see `on_send`).
        unsafe { self.ring.push(&entry) }
    }

    fn on_send(&mut self, ud: UserData, cqe: &cqueue::Entry) -> io::Result<()> {
        let slot_id = ud.index;
        let res = cqe.result();
        let flags = cqe.flags();
        let Some(slot) = self.send_slots.get_mut(slot_id as usize).and_then(|s| s.as_mut()) else {
            return Ok(());
        };
        let (cidx, cgen) = slot.owner;
        if cqueue::notif(flags) {
            // SEND_ZC notification: the kernel is done with this op's pages.
            slot.notifs = slot.notifs.saturating_sub(1);
            let free = slot.finished && slot.notifs == 0;
            if let Some(c) = self.conn_mut(cidx, cgen) {
                c.zc_pending = c.zc_pending.saturating_sub(1);
            }
            if free {
                self.free_slot(slot_id);
            }
            self.try_release(cidx);
            return Ok(());
        }
        if cqueue::more(flags) {
            // A notification will follow for this op.
            slot.notifs += 1;
            if let Some(c) = self.conns[cidx as usize].as_mut().filter(|c| c.generation == cgen) {
                c.zc_pending += 1;
            }
        }
        let conn_alive = self.conn_mut(cidx, cgen).is_some_and(|c| c.closing.is_none());
        let slot = self.send_slots[slot_id as usize].as_mut().expect("present");
        if res < 0 || !conn_alive {
            slot.finished = true;
            let free = slot.notifs == 0;
            if let Some(c) = self.conn_mut(cidx, cgen) {
                c.send_slot = None;
            }
            if free {
                self.free_slot(slot_id);
            }
            if conn_alive {
                self.close(cidx, CloseKind::PeerClosed);
            } else {
                self.try_release(cidx);
            }
            return Ok(());
        }
        if !slot.advance(res as usize) {
            // Partial send (socket buffer full): the iovecs now describe the
            // rest; resubmit the same slot.
            ShardStats::add(&self.stats.partial_sends, 1);
            let fd = self.conn_mut(cidx, cgen).map_or(-1, |c| c.raw_fd());
            let slot = self.send_slots[slot_id as usize].as_mut().expect("present");
            let entry = slot.sqe(types::Fd(fd), self.cfg.send_zc, ud.encode());
            // SAFETY: as in `flush`: the slot stays boxed in `send_slots`
            // until its last CQE.
            return unsafe { self.ring.push(&entry) };
        }
        // The whole batch went.
        slot.finished = true;
        let free = slot.notifs == 0;
        let payload: u64 = slot.blocks.iter().map(|b| u64::from(b.len)).sum();
        let blocks = slot.blocks.len() as u64;
        let protocol = slot.control_len as u64 + 13 * blocks;
        ShardStats::add(&self.stats.payload_bytes, payload);
        ShardStats::add(&self.stats.protocol_bytes, protocol);
        ShardStats::add(&self.stats.blocks_served, blocks);
        if payload > 0 {
            self.choker.record_upload(PeerId(cidx), payload);
        }
        if let Some(c) = self.conn_mut(cidx, cgen) {
            c.send_slot = None;
        }
        if free {
            self.free_slot(slot_id);
        }
        self.mark_dirty(cidx);
        Ok(())
    }

    fn free_slot(&mut self, slot_id: u32) {
        if let Some(mut slot) = self.send_slots.get_mut(slot_id as usize).and_then(|s| s.take()) {
            for b in &slot.blocks {
                if let Some(buf) = b.read_buf {
                    self.reads.release(buf);
                }
            }
            let owner = slot.owner;
            slot.reset(owner);
            self.spare_slots.push(slot);
            self.free_slot_ids.push(slot_id);
        }
    }

    // ---- cold reads ---------------------------------------------------

    fn on_read(&mut self, ud: UserData, cqe: &cqueue::Entry) -> io::Result<()> {
        let buf = ud.index;
        let res = cqe.result();
        let Some(cold) = self.cold.get_mut(buf as usize).and_then(|c| c.as_mut()) else {
            return Ok(());
        };
        if res < 0 {
            cold.failed = true;
        }
        cold.ops_left = cold.ops_left.saturating_sub(1);
        if cold.ops_left > 0 {
            return Ok(());
        }
        let cold = self.cold[buf as usize].take().expect("present");
        let (cidx, cgen) = (cold.conn, cold.generation);
        let Some(conn) = self.conn_mut(cidx, cgen) else {
            self.reads.release(buf);
            return Ok(());
        };
        conn.reads_inflight = conn.reads_inflight.saturating_sub(1);
        if conn.closing.is_some() {
            self.reads.release(buf);
            self.try_release(cidx);
            return Ok(());
        }
        if cold.failed {
            self.reads.release(buf);
            tracing::warn!(piece = cold.req.piece, "reading a block from disk failed; closing the peer");
            self.close(cidx, CloseKind::IoError);
            return Ok(());
        }
        conn.ready.push_back(ReadyBlock { req: cold.req, buf });
        self.mark_dirty(cidx);
        Ok(())
    }

    // ---- timers and teardown -------------------------------------------

    fn tick(&mut self, now: Instant) -> io::Result<()> {
        let mut to_close = Vec::new();
        for (idx, c) in self.conns.iter_mut().enumerate() {
            let Some(c) = c.as_mut() else { continue };
            if c.closing.is_some() {
                continue;
            }
            if let Err(reason) = c.peer.handle_tick(now) {
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
            self.choker.peer_disconnected(Instant::now(), PeerId(idx), &mut out);
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

/// Submit READs for `req` into a free read buffer. Ok(false): no buffer free.
fn start_cold_read(
    ring: &mut Ring,
    reads: &mut ReadPool,
    cold: &mut [Option<ColdRead>],
    t: &super::catalog::ServedTorrent,
    idx: u32,
    conn: &mut Conn,
    req: BlockRequest,
) -> io::Result<bool> {
    if req.len as usize > READ_BUF_SIZE {
        return Ok(false);
    }
    let Some(buf) = reads.alloc() else {
        return Ok(false);
    };
    let mut ops = 0u32;
    let mut dest = 0usize;
    let ud = UserData::new(OpKind::Read, 0, buf).encode();
    let mut entries = Vec::new();
    for seg in t.layout.segments(req.piece, u64::from(req.begin), u64::from(req.len)) {
        match seg {
            Segment::Zero { len } => {
                reads.zero(buf, dest, len as usize);
                dest += len as usize;
            }
            Segment::File { file_index, file_offset, len } => {
                let Some(file) = t.content.files().get(file_index).and_then(|f| f.file()) else {
                    reads.release(buf);
                    return Ok(false);
                };
                match reads.read_sqe(buf, dest, types::Fd(file.as_raw_fd()), file_offset, len as u32, ud) {
                    Some(e) => entries.push(e),
                    None => {
                        reads.release(buf);
                        return Ok(false);
                    }
                }
                ops += 1;
                dest += len as usize;
            }
        }
    }
    if ops == 0 {
        conn.ready.push_back(ReadyBlock { req, buf });
        return Ok(true);
    }
    cold[buf as usize] = Some(ColdRead {
        conn: idx,
        generation: conn.generation,
        req,
        ops_left: ops,
        failed: false,
    });
    conn.reads_inflight += 1;
    for e in &entries {
        // SAFETY: the destination is read-pool buffer `buf`, reserved for
        // this read until `on_read` sees its last CQE; the pool outlives the
        // ring's use of it.
        unsafe { ring.push(e) }?;
    }
    Ok(true)
}

fn owned_fd(fd: i32) -> OwnedFd {
    // SAFETY: `fd` is a new descriptor returned by a successful accept
    // completion; nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Map a protocol close reason to its metrics group.
pub fn close_kind(reason: CloseReason) -> CloseKind {
    if matches!(reason, CloseReason::HandshakeTimeout | CloseReason::IdleTimeout) {
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
