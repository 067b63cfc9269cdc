//! The send path of a shard: build one SENDMSG batch per connection
//! (`[control bytes][13-byte header, mmap slice(s)] x up to 16 blocks`),
//! handle its completion (partial sends, SEND_ZC notifications), and read
//! blocks whose pages are not resident into the read pool first.
//!
//! What a batch carries is the core's decision (`Conn::fill_send` in
//! `core::send`); this file is the [`SendSink`] it fills (`SlotSink`: the
//! slot's iovecs, the read pool's buffers, the READs) and what happens
//! around it: submitting, completions, freeing what the kernel is done
//! with.
//!
//! Under an upload cap a connection pays `13 + len` credit per block when
//! the block is committed (to this send, or to a disk read whose result a
//! later send carries); without credit it sends only control bytes and
//! waits for the limiter (see `core::egress`). Uncapped connections
//! (`conn.egress` is `None`) skip all of it.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Instant;

use io_uring::{cqueue, types};

use crate::storage::fence::FenceTracker;
use crate::storage::Segment;
use crate::wire::{piece_header, BlockRequest};

use super::super::catalog::ServedTorrent;
use super::super::core::pipeline::{Blocks, ReadyBlock};
use super::super::core::{ConnId, ReadStart, SendSink};
use super::super::stats::{CloseKind, ShardStats};
use super::super::stream::seal_outgoing;
use super::super::uring::{
    sys, OpKind, ReadPool, Ring, SendSlot, SentBlock, UserData, MAX_BLOCKS_PER_SEND, READ_BUF_SIZE,
};
use super::{ColdRead, Shard};

impl Shard {
    // ---- send ---------------------------------------------------------

    pub(super) fn flush_dirty(&mut self) -> io::Result<()> {
        let list = std::mem::take(&mut self.dirty);
        for &idx in &list {
            if let Some(c) = self.conns.at_mut(idx) {
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

    /// Build and submit the next batch for connection `idx`, if it has
    /// anything to send and no send in flight.
    pub(super) fn flush(&mut self, idx: u32) -> io::Result<()> {
        let zc = self.cfg.send_zc;
        let read_share = self.read_share();
        let Some(conn) = self.conns.at_mut(idx) else {
            return Ok(());
        };
        if conn.closing.is_some() || conn.send_slot.is_some() {
            return Ok(());
        }
        let now = Instant::now();
        let (slot_id, mut slot) = self.sends.take((idx, conn.id.generation()));
        self.policies
            .credit_for_send(now, idx, conn, MAX_BLOCKS_PER_SEND);
        // The core decides what this send carries (`core::send`); the sink
        // builds it over the slot and the read pool.
        let t = conn.torrent.clone();
        let id = conn.id;
        let filled = {
            let mut sink = SlotSink {
                slot: &mut slot,
                reads: &mut self.reads,
                ring: &mut self.ring,
                cold: &mut self.cold,
                fence: &mut self.fence,
                t: t.as_ref(),
                conn: id,
            };
            let blocks = t.as_deref().map(TorrentBlocks);
            conn.fill_send(blocks.as_ref(), read_share, &mut sink)?
        };
        ShardStats::add(&self.stats.cold_reads, u64::from(filled.reads));
        if filled.wait_for_buffer {
            self.read_waiters.push_back(id);
        }
        if filled.broken {
            tracing::error!(
                shard = self.cfg.index,
                "read-pool buffer index out of range; closing the peer"
            );
            for b in &slot.blocks {
                if let Some(buf) = b.read_buf {
                    // SAFETY: this slot was never submitted and the READs
                    // of its ready blocks have completed.
                    unsafe { self.reads.release(buf) };
                }
            }
            self.sends.put_back(slot_id, slot);
            self.close(idx, CloseKind::IoError);
            self.wake_read_waiters(u32::MAX);
            return Ok(());
        }
        if filled.freed_bufs > 0 {
            self.wake_read_waiters(filled.freed_bufs);
        }
        if filled.withdrawn {
            // Rejects were queued: they go with the next send.
            self.mark_dirty(idx);
        }
        let Some(conn) = self.conns.at_mut(idx) else {
            return Ok(());
        };
        self.policies.credit_after_send(now, idx, conn);
        if slot.is_empty() {
            self.sends.put_back(slot_id, slot);
            return Ok(());
        }
        if conn.stream.is_rc4() {
            // The copying path: RC4 must see every byte in order, except
            // the MSE handshake's own bytes at the head.
            let stream = &mut conn.stream;
            let pre_len = filled.pre_len;
            slot.flatten_and_transform(|bytes| seal_outgoing(stream, bytes, pre_len));
        }
        if conn.send_slot.is_none() {
            // The send-progress clock starts with the first send in flight.
            conn.send_watch.send_started(now);
        }
        conn.send_slot = Some(slot_id);
        slot.epoch = self.fence.begin();
        ShardStats::add(&self.stats.sends, 1);
        if let Some(link) = conn.utp_link() {
            // uTP: the bytes are copied into the uTP send buffer (`utp`).
            self.sends.hold(slot_id, slot);
            self.utp_send(link, slot_id);
            return Ok(());
        }
        let fd = types::Fd(conn.raw_fd());
        let ud = UserData::new(OpKind::Send, 0, slot_id).encode();
        self.sends.submit(&mut self.ring, slot_id, slot, fd, zc, ud)
    }

    /// A send's completion: a CQE's result and flags, or a uTP send's
    /// (`utp`; flags 0).
    pub(super) fn on_send(&mut self, ud: UserData, res: i32, flags: u32) -> io::Result<()> {
        let slot_id = ud.index;
        let Some(slot) = self.sends.get_mut(slot_id) else {
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
                // SAFETY: the op finished and this was its last notification.
                unsafe { self.free_slot(slot_id) };
            }
            self.try_release(cidx);
            return Ok(());
        }
        if cqueue::more(flags) {
            // A notification will follow for this op.
            slot.notifs += 1;
            if let Some(c) = self.conn_mut(cidx, cgen) {
                c.zc_pending += 1;
            }
        }
        let conn_alive = self
            .conn_mut(cidx, cgen)
            .is_some_and(|c| c.closing.is_none());
        let Some(slot) = self.sends.get_mut(slot_id) else {
            return Ok(());
        };
        if res < 0 || !conn_alive {
            slot.finished = true;
            let free = slot.notifs == 0;
            if let Some(c) = self.conn_mut(cidx, cgen) {
                c.send_slot = None;
            }
            if free {
                // SAFETY: this CQE ended the op and no notification is due.
                unsafe { self.free_slot(slot_id) };
            }
            if conn_alive {
                self.close(cidx, CloseKind::PeerClosed);
            } else {
                self.try_release(cidx);
            }
            return Ok(());
        }
        if res > 0 {
            self.hist.record_send_size(res as u64);
            if let Some(c) = self.conn_mut(cidx, cgen) {
                c.send_watch.progressed(Instant::now());
            }
        }
        let Some(slot) = self.sends.get_mut(slot_id) else {
            return Ok(());
        };
        if !slot.advance(res as usize) {
            // Partial send (socket buffer full): the iovecs now describe the
            // rest; resubmit the same slot.
            ShardStats::add(&self.stats.partial_sends, 1);
            if let Some(link) = self.conn_mut(cidx, cgen).and_then(|c| c.utp_link()) {
                self.utp_send(link, slot_id);
                return Ok(());
            }
            let fd = self.conn_mut(cidx, cgen).map_or(-1, |c| c.raw_fd());
            return self.sends.resubmit(
                &mut self.ring,
                slot_id,
                types::Fd(fd),
                self.cfg.send_zc,
                ud.encode(),
            );
        }
        // The whole batch went.
        slot.finished = true;
        let free = slot.notifs == 0;
        let payload: u64 = slot.blocks.iter().map(|b| u64::from(b.len)).sum();
        let blocks = slot.blocks.len() as u64;
        let now = Instant::now();
        for b in &slot.blocks {
            self.hist
                .record_request_to_send(now.saturating_duration_since(b.at));
        }
        let protocol = slot.control_len as u64 + 13 * blocks;
        ShardStats::add(&self.stats.payload_bytes, payload);
        ShardStats::add(&self.stats.protocol_bytes, protocol);
        ShardStats::add(&self.stats.blocks_served, blocks);
        self.policies.handle_sent(cidx, payload);
        if let Some(c) = self.conn_mut(cidx, cgen) {
            c.send_slot = None;
            if let Some(t) = c.torrent.as_ref().filter(|_| payload > 0) {
                t.add_uploaded(payload);
            }
            if c.is_utp() {
                ShardStats::add(&self.stats.utp_payload_bytes, payload);
            }
        }
        if free {
            // SAFETY: the batch's last CQE, and no notification is due.
            unsafe { self.free_slot(slot_id) };
        }
        self.mark_dirty(cidx);
        Ok(())
    }

    /// After a slot's last CQE: release its read buffers and recycle it.
    ///
    /// # Safety
    ///
    /// The slot's last CQE (for SEND_ZC, its notification) has been reaped.
    pub(super) unsafe fn free_slot(&mut self, slot_id: u32) {
        // SAFETY: the caller guarantees the kernel is done with the slot.
        if let Some(slot) = unsafe { self.sends.release(slot_id) } {
            self.fence.end(slot.epoch);
            let (cidx, cgen) = slot.owner;
            let mut freed = 0;
            for b in &slot.blocks {
                if let Some(buf) = b.read_buf {
                    // SAFETY: the buffer's READ completed before it joined
                    // this slot, and the slot's last CQE has been reaped.
                    unsafe { self.reads.release(buf) };
                    freed += 1;
                }
            }
            if freed > 0 {
                if let Some(c) = self.conn_mut(cidx, cgen) {
                    if c.pipe.buffers_returned(freed) {
                        self.mark_dirty(cidx);
                    }
                }
                self.wake_read_waiters(freed);
            }
            self.sends.recycle(slot);
        }
    }

    /// A connection may hold at most this many read-pool buffers (reading,
    /// ready, or in its sends): a small share of the shard's pool.
    pub(super) fn read_share(&self) -> u32 {
        (self.reads.capacity() / READ_SHARE_DIVISOR).max(1)
    }

    /// `freed` read-pool buffers became free: wake as many connections
    /// parked for want of one (they retry in this loop turn's flush).
    pub(super) fn wake_read_waiters(&mut self, mut freed: u32) {
        while freed > 0 {
            let Some(id) = self.read_waiters.pop_front() else {
                return;
            };
            let Some(c) = self.conns.get_mut(id) else {
                continue;
            };
            let retry = c.pipe.woken_for_buffer();
            if c.closing.is_some() || !retry {
                continue;
            }
            self.mark_dirty(id.index());
            freed -= 1;
        }
    }

    // ---- cold reads ---------------------------------------------------

    pub(super) fn on_read(&mut self, ud: UserData, cqe: &cqueue::Entry) -> io::Result<()> {
        let buf = ud.index;
        let res = cqe.result();
        let Some(cold) = self.cold.get_mut(buf as usize).and_then(|c| c.as_mut()) else {
            return Ok(());
        };
        if res < 0 {
            cold.failed = true;
        } else {
            cold.bytes_read += res as u64;
        }
        cold.ops_left = cold.ops_left.saturating_sub(1);
        if cold.ops_left > 0 {
            return Ok(());
        }
        let cold = self.cold[buf as usize].take().expect("present");
        self.fence.end(cold.epoch);
        let cidx = cold.conn.index();
        // Every release below: this was the READ's last CQE, and the buffer
        // is in no send yet.
        let Some(conn) = self.conns.get_mut(cold.conn) else {
            // SAFETY: see above.
            unsafe { self.reads.release(buf) };
            self.wake_read_waiters(1);
            return Ok(());
        };
        let served =
            conn.closing.is_none() && !cold.failed && cold.bytes_read >= cold.bytes_expected;
        conn.pipe.read_completed(served.then_some(ReadyBlock {
            req: cold.req,
            buf,
            at: cold.at,
        }));
        if served {
            self.mark_dirty(cidx);
            return Ok(());
        }
        if conn.closing.is_some() {
            // SAFETY: see above.
            unsafe { self.reads.release(buf) };
            self.try_release(cidx);
            self.wake_read_waiters(1);
            return Ok(());
        }
        if cold.bytes_read < cold.bytes_expected {
            // Short read: the file shrank under us. Never serve the rest of
            // the buffer; the watcher withdraws the piece.
            conn.peer.reject_popped(cold.req);
            // SAFETY: see above.
            unsafe { self.reads.release(buf) };
            self.mark_dirty(cidx);
            self.wake_read_waiters(1);
            return Ok(());
        }
        // The read failed.
        // SAFETY: see above.
        unsafe { self.reads.release(buf) };
        self.wake_read_waiters(1);
        tracing::warn!(
            piece = cold.req.piece,
            "reading a block from disk failed; closing the peer"
        );
        self.close(cidx, CloseKind::IoError);
        Ok(())
    }
}

/// A connection holds at most `1/READ_SHARE_DIVISOR` of its shard's
/// read-pool buffers (at least one): 8 of the default 256.
const READ_SHARE_DIVISOR: u32 = 32;

/// The torrent as the block pipeline sees it: liveness, and residency by
/// `mincore` over the file mmaps.
struct TorrentBlocks<'a>(&'a ServedTorrent);

impl Blocks for TorrentBlocks<'_> {
    fn is_live(&self, piece: u32) -> bool {
        self.0.is_live(piece)
    }

    fn piece_resident(&self, piece: u32) -> bool {
        resident(self.0, self.0.layout.piece_segments(piece))
    }

    fn block_resident(&self, req: &BlockRequest) -> bool {
        let segs = self
            .0
            .layout
            .segments(req.piece, u64::from(req.begin), u64::from(req.len));
        resident(self.0, segs)
    }

    fn segments(&self, req: &BlockRequest) -> usize {
        self.0
            .layout
            .segments(req.piece, u64::from(req.begin), u64::from(req.len))
            .count()
    }
}

/// Whether every file byte of `segs` is in the page cache.
fn resident(t: &ServedTorrent, mut segs: crate::storage::Segments<'_>) -> bool {
    segs.all(|seg| match seg {
        Segment::Zero { .. } => true,
        Segment::File {
            file_index,
            file_offset,
            len,
        } => t
            .content
            .file_bytes(file_index, file_offset, len)
            .is_some_and(sys::is_resident),
    })
}

/// The send being built for one connection, as the core fills it
/// ([`SendSink`]): iovecs into the mmap and the read pool, READs into the
/// pool. The only code of the send path that touches kernel-bound memory.
struct SlotSink<'a> {
    slot: &'a mut SendSlot,
    reads: &'a mut ReadPool,
    ring: &'a mut Ring,
    cold: &'a mut [Option<ColdRead>],
    fence: &'a mut FenceTracker,
    /// The connection's torrent (blocks come only once it has one).
    t: Option<&'a Arc<ServedTorrent>>,
    conn: ConnId,
}

impl SendSink for SlotSink<'_> {
    fn set_control(&mut self, bytes: &[u8]) {
        self.slot.set_control(bytes);
    }

    fn has_room(&self, iovecs: usize) -> bool {
        self.slot.has_room(iovecs)
    }

    fn push_mmap(&mut self, req: BlockRequest, at: Instant) {
        let Some(t) = self.t else {
            return;
        };
        self.slot.push_block(
            piece_header(req.piece, req.begin, req.len),
            SentBlock {
                piece: req.piece,
                begin: req.begin,
                len: req.len,
                read_buf: None,
                at,
            },
        );
        for seg in t
            .layout
            .segments(req.piece, u64::from(req.begin), u64::from(req.len))
        {
            match seg {
                Segment::Zero { len } => self.slot.push_zeros(len as usize),
                Segment::File {
                    file_index,
                    file_offset,
                    len,
                } => {
                    // Zero-copy: the iovec points into the mmap; the slot
                    // keeps `t` (and so the mmap) alive.
                    self.slot.push_owned(t, |t| {
                        t.content
                            .file_bytes(file_index, file_offset, len)
                            .unwrap_or(&[])
                    });
                }
            }
        }
    }

    fn push_ready(&mut self, rb: ReadyBlock) -> bool {
        self.slot.push_block(
            piece_header(rb.req.piece, rb.req.begin, rb.req.len),
            SentBlock {
                piece: rb.req.piece,
                begin: rb.req.begin,
                len: rb.req.len,
                read_buf: Some(rb.buf),
                at: rb.at,
            },
        );
        // The buffer stays reserved until this slot completes.
        self.slot
            .push_read_buf(self.reads, rb.buf, rb.req.len as usize)
    }

    unsafe fn free_ready(&mut self, rb: ReadyBlock) {
        // SAFETY: the caller guarantees the READ completed and the buffer
        // is in no send.
        unsafe { self.reads.release(rb.buf) };
    }

    /// READs for `req` into a free pool buffer, one per file it spans.
    fn start_read(&mut self, req: BlockRequest, at: Instant) -> io::Result<ReadStart> {
        let Some(t) = self.t else {
            return Ok(ReadStart::NoBuffer);
        };
        if req.len as usize > READ_BUF_SIZE {
            return Ok(ReadStart::NoBuffer);
        }
        let Some(buf) = self.reads.alloc() else {
            return Ok(ReadStart::NoBuffer);
        };
        // One READ per file the block spans: on the stack, unless the block
        // spans more than MAX_READ_SEGMENTS files (tiny files; rare).
        let mut segs: [ReadSeg; MAX_READ_SEGMENTS] = [(types::Fd(-1), 0, 0, 0); MAX_READ_SEGMENTS];
        let mut spill: Vec<ReadSeg> = Vec::new();
        let mut ops = 0usize;
        let mut dest = 0usize;
        let mut file_bytes = 0u64;
        for seg in t
            .layout
            .segments(req.piece, u64::from(req.begin), u64::from(req.len))
        {
            match seg {
                Segment::Zero { len } => {
                    self.reads.zero(buf, dest, len as usize);
                    dest += len as usize;
                }
                Segment::File {
                    file_index,
                    file_offset,
                    len,
                } => {
                    let Some(file) = t.content.files().get(file_index).and_then(|f| f.file())
                    else {
                        // SAFETY: no READ was submitted into `buf` yet.
                        unsafe { self.reads.release(buf) };
                        return Ok(ReadStart::NoBuffer);
                    };
                    let seg = (types::Fd(file.as_raw_fd()), file_offset, len as u32, dest);
                    match segs.get_mut(ops) {
                        Some(s) => *s = seg,
                        None => spill.push(seg),
                    }
                    ops += 1;
                    dest += len as usize;
                    file_bytes += len;
                }
            }
        }
        if ops == 0 {
            return Ok(ReadStart::Done { buf });
        }
        self.cold[buf as usize] = Some(ColdRead {
            conn: self.conn,
            req,
            at,
            ops_left: ops as u32,
            failed: false,
            bytes_read: 0,
            bytes_expected: file_bytes,
            epoch: self.fence.begin(),
        });
        let ud = UserData::new(OpKind::Read, 0, buf).encode();
        let on_stack = ops.min(MAX_READ_SEGMENTS);
        for &(fd, off, len, dest) in segs[..on_stack].iter().chain(&spill) {
            // A segment always fits: the block is at most READ_BUF_SIZE long.
            self.reads
                .submit_read(self.ring, buf, dest, fd, off, len, ud)?;
        }
        Ok(ReadStart::Submitted)
    }
}

/// One READ of a block: the file, its offset, the length, and where in
/// the pool buffer it lands.
type ReadSeg = (types::Fd, u64, u32, usize);

/// Files one block's READs are kept on the stack for; a block spanning
/// more (files of a few bytes each) spills into a `Vec`.
const MAX_READ_SEGMENTS: usize = 16;
