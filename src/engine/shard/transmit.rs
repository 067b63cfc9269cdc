//! The send path of a shard: build one SENDMSG batch per connection
//! (`[control bytes][13-byte header, mmap slice(s)] x up to 16 blocks`),
//! handle its completion (partial sends, SEND_ZC notifications), and read
//! blocks whose pages are not resident into the read pool first.
//!
//! Under an upload cap a connection pays `13 + len` credit per block when
//! the block is committed (to this send, or to a disk read whose result a
//! later send carries); without credit it sends only control bytes and
//! waits for the limiter (see [`super::egress`]). Uncapped connections
//! (`conn.egress` is `None`) skip all of it.

use std::io;
use std::os::fd::AsRawFd;

use io_uring::{cqueue, types};

use crate::storage::fence::FenceTracker;
use crate::storage::Segment;
use crate::swarm::ratelimit::MAX_BLOCK_MESSAGE;
use crate::wire::{piece_header, BlockRequest};

use super::super::catalog::ServedTorrent;
use super::super::core::pipeline::{BlockPipeline, Blocks, ReadyBlock, Step};
use super::super::core::ConnId;
use super::super::stats::{CloseKind, ShardStats};
use super::super::stream::seal_outgoing;
use super::super::uring::{
    sys, OpKind, ReadPool, Ring, SentBlock, UserData, MAX_BLOCKS_PER_SEND, READ_BUF_SIZE,
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
        let (slot_id, mut slot) = self.sends.take((idx, conn.id.generation()));
        // MSE handshake bytes at the head of this send: already in their
        // final form (the responder encrypted what needs encrypting), so
        // RC4 below must not touch them.
        let pre_len = conn.pre_tx.len();
        if conn.pre_tx.is_empty() {
            let ctl = conn.peer.poll_transmit();
            let ctl_len = ctl.len();
            slot.set_control(ctl);
            conn.peer.advance_transmit(ctl_len);
        } else {
            // The MSE handshake reply goes first.
            let mut ctl = std::mem::take(&mut conn.pre_tx);
            ctl.extend_from_slice(conn.peer.poll_transmit());
            let n = conn.peer.poll_transmit().len();
            conn.peer.advance_transmit(n);
            slot.set_control(&ctl);
        }

        // Upload cap: ask for a batch's worth of credit when it cannot pay
        // for a block. No grant: only control bytes go out now.
        if let (Some(ce), Some(e), Some(t)) = (
            conn.egress.as_mut(),
            self.policies.egress_mut(),
            conn.torrent.as_ref(),
        ) {
            let blocks = conn.pipe.blocks_waiting(&conn.peer);
            if blocks > 0 && ce.wants_credit() {
                let want = blocks.min(MAX_BLOCKS_PER_SEND) as u64 * MAX_BLOCK_MESSAGE;
                e.acquire(std::time::Instant::now(), idx, t.id, ce, want, &self.stats);
            }
        }

        // Requests whose piece was withdrawn (data changed on disk) since
        // they were queued: their rejects go out with the next send.
        let mut withdrawn = false;
        // Read-pool buffers this flush gave back (parked peers may use them).
        let mut freed_bufs = 0u32;
        let mut broken = false;
        if let Some(t) = conn.torrent.clone() {
            // The block pipeline decides what goes next (`core::pipeline`);
            // this loop carries it out.
            let blocks = TorrentBlocks(&t);
            loop {
                let step = conn.pipe.next(
                    &mut conn.peer,
                    &blocks,
                    |n| slot.has_room(n),
                    conn.egress.as_mut(),
                    read_share,
                );
                match step {
                    Step::Ready(rb) => {
                        slot.push_block(
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
                        if !slot.push_read_buf(&self.reads, rb.buf, rb.req.len as usize) {
                            // Not a buffer of the pool: a bug, never sent as
                            // some other buffer's bytes.
                            broken = true;
                            break;
                        }
                    }
                    Step::Dropped(rb) => {
                        // SAFETY: a ready block's READ has completed and the
                        // buffer is in no send: the kernel holds no reference.
                        unsafe { self.reads.release(rb.buf) };
                        freed_bufs += 1;
                        withdrawn = true;
                    }
                    Step::Rejected => withdrawn = true,
                    Step::Mmap { req, at, .. } => {
                        slot.push_block(
                            piece_header(req.piece, req.begin, req.len),
                            SentBlock {
                                piece: req.piece,
                                begin: req.begin,
                                len: req.len,
                                read_buf: None,
                                at,
                            },
                        );
                        for seg in
                            t.layout
                                .segments(req.piece, u64::from(req.begin), u64::from(req.len))
                        {
                            match seg {
                                Segment::Zero { len } => slot.push_zeros(len as usize),
                                Segment::File {
                                    file_index,
                                    file_offset,
                                    len,
                                } => {
                                    // Zero-copy: the iovec points into the
                                    // mmap; the slot keeps `t` (and so the
                                    // mmap) alive.
                                    slot.push_owned(&t, |t| {
                                        t.content
                                            .file_bytes(file_index, file_offset, len)
                                            .unwrap_or(&[])
                                    });
                                }
                            }
                        }
                    }
                    Step::Read { req, at } => {
                        let started = start_cold_read(
                            &mut self.ring,
                            &mut self.reads,
                            &mut self.cold,
                            &mut self.fence,
                            &t,
                            conn.id,
                            &mut conn.pipe,
                            (req, at),
                        )?;
                        if started {
                            ShardStats::add(&self.stats.cold_reads, 1);
                            BlockPipeline::paid_read(conn.egress.as_mut(), &req);
                        } else {
                            // No buffer free: woken when one is released.
                            if conn.pipe.no_read_buffer(req, at) {
                                self.read_waiters.push_back(conn.id);
                            }
                            break;
                        }
                    }
                    Step::Stop(_) => break,
                }
            }
        }

        if withdrawn && !conn.dirty {
            conn.dirty = true;
            self.dirty.push(idx);
        }
        if broken {
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
        if freed_bufs > 0 {
            self.wake_read_waiters(freed_bufs);
        }
        let Some(conn) = self.conns.at_mut(idx) else {
            return Ok(());
        };
        // Nothing left to pay for: unused credit goes back to the buckets.
        if let (Some(ce), Some(e), Some(t)) = (
            conn.egress.as_mut(),
            self.policies.egress_mut(),
            conn.torrent.as_ref(),
        ) {
            if ce.has_credit() && conn.pipe.blocks_waiting(&conn.peer) == 0 {
                e.release(std::time::Instant::now(), idx, t.id, ce, &self.stats);
            }
        }
        if slot.is_empty() {
            self.sends.put_back(slot_id, slot);
            return Ok(());
        }
        if conn.stream.is_rc4() {
            // The copying path: RC4 must see every byte in order, except
            // the MSE handshake's own bytes at the head.
            let stream = &mut conn.stream;
            slot.flatten_and_transform(|bytes| seal_outgoing(stream, bytes, pre_len));
        }
        if conn.send_slot.is_none() {
            // The send-progress clock starts with the first send in flight.
            conn.send_watch.send_started(std::time::Instant::now());
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
                c.send_watch.progressed(std::time::Instant::now());
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
        let now = std::time::Instant::now();
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

/// Submit READs for `req` into a free read buffer. Ok(false): no buffer free.
#[allow(clippy::too_many_arguments)]
pub(super) fn start_cold_read(
    ring: &mut Ring,
    reads: &mut ReadPool,
    cold: &mut [Option<ColdRead>],
    fence: &mut FenceTracker,
    t: &ServedTorrent,
    id: ConnId,
    pipe: &mut BlockPipeline,
    (req, at): (BlockRequest, std::time::Instant),
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
    let mut segs: Vec<(types::Fd, u64, u32, usize)> = Vec::new();
    for seg in t
        .layout
        .segments(req.piece, u64::from(req.begin), u64::from(req.len))
    {
        match seg {
            Segment::Zero { len } => {
                reads.zero(buf, dest, len as usize);
                dest += len as usize;
            }
            Segment::File {
                file_index,
                file_offset,
                len,
            } => {
                let Some(file) = t.content.files().get(file_index).and_then(|f| f.file()) else {
                    // SAFETY: no READ was submitted into `buf` yet.
                    unsafe { reads.release(buf) };
                    return Ok(false);
                };
                segs.push((types::Fd(file.as_raw_fd()), file_offset, len as u32, dest));
                ops += 1;
                dest += len as usize;
            }
        }
    }
    if ops == 0 {
        pipe.read_done_at_once(ReadyBlock { req, buf, at });
        return Ok(true);
    }
    cold[buf as usize] = Some(ColdRead {
        conn: id,
        req,
        at,
        ops_left: ops,
        failed: false,
        bytes_read: 0,
        bytes_expected: segs.iter().map(|s| u64::from(s.2)).sum(),
        epoch: fence.begin(),
    });
    pipe.read_submitted();
    for (fd, off, len, dest) in segs {
        // A segment always fits: the block is at most READ_BUF_SIZE long.
        reads.submit_read(ring, buf, dest, fd, off, len, ud)?;
    }
    Ok(true)
}
