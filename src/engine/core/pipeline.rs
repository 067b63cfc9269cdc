//! One connection's block pipeline: where every block a peer asked for
//! waits, and the one place that decides what goes into its next send.
//!
//! ```text
//! queued (PeerState) --> parked (one block that could not go on yet)
//!        |                   |
//!        +---- resident? ----+--> from the mmap into the send being built
//!        |                                   |
//!        +---- not resident: read into a --> ready --> into a send
//!              pool buffer first                       |
//!                                       in flight (the driver's send slot)
//!                                                      --> done (its CQE)
//! ```
//!
//! The pipeline never does I/O. The driver (`engine::shard`) asks it for
//! the next [`Step`] while it builds one send, carries the step out (an
//! iovec into the mmap, a READ into the read pool, a buffer given back)
//! and reports what the kernel did ([`BlockPipeline::read_submitted`],
//! [`BlockPipeline::read_completed`], [`BlockPipeline::buffers_returned`],
//! ...). What it needs to know of the world comes through two small
//! traits, [`Requests`] (the peer's queue) and [`Blocks`] (the torrent:
//! liveness, residency, layout), so every rule here is tested without a
//! ring, a socket or a file (see the tests below).
//!
//! The rules, in order:
//! - Blocks already read from disk go first, in the order their reads
//!   completed; a block of a piece withdrawn since (its data changed on
//!   disk) is rejected instead and its credit refunded.
//! - Then the parked block, then the peer's queue, in request order: a
//!   withdrawn piece is rejected; a block the upload cap cannot pay for
//!   waits for credit; a resident block goes from the mmap; a block whose
//!   pages are not resident is read first.
//! - A connection reads one block at a time and holds at most `read_share`
//!   pool buffers (reading, ready or in its sends): a peer that stops
//!   reading cannot hold the shard's pool, and the others' cold reads go
//!   on. A block that finds no free buffer parks, and the connection joins
//!   the shard's waiters, woken when a buffer frees.
//! - Whatever cannot go on now waits in `parked`, first in line next time.
//!   Blocks go out in request order except that resident blocks do not
//!   wait behind one being read from disk (BitTorrent lets a seed answer
//!   requests in any order; libtorrent does the same). A second cold
//!   block does wait (one read at a time per connection), and the blocks
//!   behind it wait with it until the first read completes.

use std::collections::VecDeque;
use std::time::Instant;

use crate::wire::{BlockRequest, PeerState};

use super::egress::ConnEgress;

/// A block whose data sits in a read-pool buffer (it was not in the page
/// cache), waiting to be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadyBlock {
    pub req: BlockRequest,
    pub buf: u32,
    /// When the request arrived (for the latency histogram).
    pub at: Instant,
}

/// The peer's queue of requests, as the pipeline pops it.
pub trait Requests {
    /// The next request in order, with when it arrived.
    fn pop(&mut self) -> Option<(BlockRequest, Instant)>;
    /// A popped request will not be served (its piece was withdrawn):
    /// reject it to the peer.
    fn reject(&mut self, req: BlockRequest);
    /// Requests still queued.
    fn queued(&self) -> usize;
}

impl Requests for PeerState {
    fn pop(&mut self) -> Option<(BlockRequest, Instant)> {
        self.pop_block_timed()
    }

    fn reject(&mut self, req: BlockRequest) {
        self.reject_popped(req);
    }

    fn queued(&self) -> usize {
        self.queued_requests()
    }
}

/// The torrent a connection is attached to, as the pipeline sees it.
pub trait Blocks {
    /// The piece is verified and not withdrawn.
    fn is_live(&self, piece: u32) -> bool;
    /// Every page of the whole piece is in the page cache.
    fn piece_resident(&self, piece: u32) -> bool;
    /// Every page of this block is in the page cache.
    fn block_resident(&self, req: &BlockRequest) -> bool;
    /// The iovecs the block takes from the mmap (one per file it spans).
    fn segments(&self, req: &BlockRequest) -> usize;
}

/// What goes into the send being built next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// A block read earlier: send it from its buffer (paid when its read
    /// began).
    Ready(ReadyBlock),
    /// A block read earlier whose piece was withdrawn since: rejected and
    /// refunded; the driver frees its buffer (and wakes a waiter).
    Dropped(ReadyBlock),
    /// A resident block: send it from the mmap, in `segments` iovecs (paid).
    Mmap {
        req: BlockRequest,
        at: Instant,
        segments: usize,
    },
    /// Not resident: the driver starts a read of it into a pool buffer and
    /// reports [`BlockPipeline::read_submitted`] (with
    /// [`BlockPipeline::paid_read`]), or [`BlockPipeline::no_read_buffer`].
    Read { req: BlockRequest, at: Instant },
    /// A queued request of a withdrawn piece was rejected: its reject is
    /// queued control bytes (the connection has something to send).
    Rejected,
    /// Nothing more goes into this send now.
    Stop(Stop),
}

/// Why a send is complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Nothing is queued.
    Idle,
    /// The send has no room for the next block.
    Full,
    /// The upload cap: the next block waits for credit.
    Credit,
    /// The next block must be read from disk and this connection already
    /// reads one, or holds its share of the pool.
    ColdBusy,
}

/// Room a block needs in the send besides its data's iovecs: its header.
pub const ROOM_QUEUED: usize = 4;

/// Credit a block costs under an upload cap: its piece message.
pub fn block_cost(len: u32) -> u64 {
    13 + u64::from(len)
}

/// See the module doc.
#[derive(Debug, Default)]
pub struct BlockPipeline {
    ready: VecDeque<ReadyBlock>,
    parked: Option<(BlockRequest, Instant)>,
    reads_inflight: u32,
    /// Pool buffers held: reading, ready, or in a send not yet complete.
    cold_bufs: u32,
    /// In the shard's list of connections waiting for a free buffer.
    waiting_read_buf: bool,
    /// The last piece found entirely resident: peers request a piece's
    /// blocks one after another, so one `mincore` per piece, not per block
    /// (eviction within that window costs a minor fault, never wrong data).
    resident_piece: Option<u32>,
}

impl BlockPipeline {
    /// The next step of the send being built; `has_room(iovecs)` says
    /// whether the send can take a block of that many data iovecs.
    pub fn next(
        &mut self,
        queue: &mut impl Requests,
        blocks: &impl Blocks,
        has_room: impl Fn(usize) -> bool,
        egress: Option<&mut ConnEgress>,
        read_share: u32,
    ) -> Step {
        if let Some(&rb) = self.ready.front() {
            if !has_room(1) {
                return Step::Stop(Stop::Full);
            }
            self.ready.pop_front();
            if !blocks.is_live(rb.req.piece) {
                queue.reject(rb.req);
                self.cold_bufs = self.cold_bufs.saturating_sub(1);
                if let Some(ce) = egress {
                    ce.refund(block_cost(rb.req.len)); // paid, not sent
                }
                return Step::Dropped(rb);
            }
            return Step::Ready(rb);
        }
        if !has_room(ROOM_QUEUED) {
            return Step::Stop(Stop::Full);
        }
        let Some((req, at)) = self.parked.take().or_else(|| queue.pop()) else {
            return Step::Stop(Stop::Idle);
        };
        if !blocks.is_live(req.piece) {
            queue.reject(req);
            return Step::Rejected;
        }
        let cost = block_cost(req.len);
        if egress.as_ref().is_some_and(|ce| !ce.can_pay(cost)) {
            self.parked = Some((req, at));
            return Step::Stop(Stop::Credit);
        }
        let resident = self.resident_piece == Some(req.piece)
            || if blocks.piece_resident(req.piece) {
                self.resident_piece = Some(req.piece);
                true
            } else {
                blocks.block_resident(&req)
            };
        if !resident {
            if self.reads_inflight > 0 || self.cold_bufs >= read_share {
                self.parked = Some((req, at));
                return Step::Stop(Stop::ColdBusy);
            }
            return Step::Read { req, at };
        }
        let segments = blocks.segments(&req);
        if !has_room(segments) {
            self.parked = Some((req, at));
            return Step::Stop(Stop::Full);
        }
        if let Some(ce) = egress {
            ce.pay(cost);
        }
        Step::Mmap { req, at, segments }
    }

    /// A [`Step::Read`] went to the kernel: it holds a buffer and a read.
    pub fn read_submitted(&mut self) {
        self.cold_bufs += 1;
        self.reads_inflight += 1;
    }

    /// A [`Step::Read`] needed no I/O (the block is all padding): its
    /// buffer is ready at once.
    pub fn read_done_at_once(&mut self, rb: ReadyBlock) {
        self.cold_bufs += 1;
        self.ready.push_back(rb);
    }

    /// Pays for the block a [`Step::Read`] started (it is sent later, from
    /// its buffer).
    pub fn paid_read(egress: Option<&mut ConnEgress>, req: &BlockRequest) {
        if let Some(ce) = egress {
            ce.pay(block_cost(req.len));
        }
    }

    /// A [`Step::Read`] found no free buffer: the block parks. True when
    /// the connection must join the shard's waiters (it was not one).
    pub fn no_read_buffer(&mut self, req: BlockRequest, at: Instant) -> bool {
        self.parked = Some((req, at));
        !std::mem::replace(&mut self.waiting_read_buf, true)
    }

    /// The shard woke this connection for a freed buffer. True when it has
    /// a parked block to retry (a flush is worth it).
    pub fn woken_for_buffer(&mut self) -> bool {
        self.waiting_read_buf = false;
        self.parked.is_some()
    }

    /// A read's last completion. `Some(block)`: it succeeded, the block is
    /// ready; `None`: it failed or came up short, and its buffer is the
    /// driver's to free.
    pub fn read_completed(&mut self, ready: Option<ReadyBlock>) {
        self.reads_inflight = self.reads_inflight.saturating_sub(1);
        match ready {
            Some(rb) => self.ready.push_back(rb),
            None => self.cold_bufs = self.cold_bufs.saturating_sub(1),
        }
    }

    /// `n` buffers of this connection's sends came back (the sends' last
    /// CQEs). True when a block is parked (worth a flush now).
    pub fn buffers_returned(&mut self, n: u32) -> bool {
        self.cold_bufs = self.cold_bufs.saturating_sub(n);
        self.parked.is_some()
    }

    /// Takes the ready blocks out (the connection is going: their buffers
    /// are the driver's to free).
    pub fn take_ready(&mut self) -> VecDeque<ReadyBlock> {
        let ready = std::mem::take(&mut self.ready);
        self.cold_bufs = self.cold_bufs.saturating_sub(ready.len() as u32);
        ready
    }

    /// Blocks that need credit before they go: queued plus the parked one.
    pub fn blocks_waiting(&self, queue: &impl Requests) -> usize {
        queue.queued() + usize::from(self.parked.is_some())
    }

    pub fn has_parked(&self) -> bool {
        self.parked.is_some()
    }

    pub fn reads_inflight(&self) -> u32 {
        self.reads_inflight
    }

    /// Nothing read, being read or parked.
    pub fn is_empty(&self) -> bool {
        self.ready.is_empty() && self.parked.is_none() && self.reads_inflight == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[derive(Default)]
    struct Queue {
        q: VecDeque<(BlockRequest, Instant)>,
        rejected: Vec<BlockRequest>,
    }

    impl Requests for Queue {
        fn pop(&mut self) -> Option<(BlockRequest, Instant)> {
            self.q.pop_front()
        }
        fn reject(&mut self, req: BlockRequest) {
            self.rejected.push(req);
        }
        fn queued(&self) -> usize {
            self.q.len()
        }
    }

    /// Pieces 0..100; `cold` pieces are not resident; `dead` withdrawn;
    /// blocks of `split` pieces span two files.
    #[derive(Default)]
    struct Torrent {
        cold: HashSet<u32>,
        dead: HashSet<u32>,
        split: HashSet<u32>,
        piece_checks: std::cell::Cell<u32>,
    }

    impl Blocks for Torrent {
        fn is_live(&self, piece: u32) -> bool {
            !self.dead.contains(&piece)
        }
        fn piece_resident(&self, piece: u32) -> bool {
            self.piece_checks.set(self.piece_checks.get() + 1);
            !self.cold.contains(&piece)
        }
        fn block_resident(&self, req: &BlockRequest) -> bool {
            !self.cold.contains(&req.piece)
        }
        fn segments(&self, req: &BlockRequest) -> usize {
            if self.split.contains(&req.piece) {
                2
            } else {
                1
            }
        }
    }

    fn req(piece: u32, begin: u32) -> BlockRequest {
        BlockRequest {
            piece,
            begin,
            len: 16384,
        }
    }

    fn queue(reqs: &[BlockRequest]) -> Queue {
        let now = Instant::now();
        Queue {
            q: reqs.iter().map(|&r| (r, now)).collect(),
            rejected: Vec::new(),
        }
    }

    /// Runs one send's worth of steps with room for `room` iovecs (each
    /// block takes one for its header and one per data iovec), carrying
    /// out reads with buffers numbered from `next_buf` while `bufs_free`.
    fn build_send(
        p: &mut BlockPipeline,
        q: &mut Queue,
        t: &Torrent,
        room: usize,
        bufs_free: &mut u32,
    ) -> (Vec<Step>, Stop) {
        let used = std::cell::Cell::new(0usize);
        let mut steps = Vec::new();
        loop {
            let step = p.next(q, t, |n| used.get() + 1 + n <= room, None, 8);
            match &step {
                Step::Ready(_) => used.set(used.get() + 2),
                Step::Mmap { segments, .. } => used.set(used.get() + 1 + segments),
                Step::Read { req, at } => {
                    if *bufs_free == 0 {
                        p.no_read_buffer(*req, *at);
                        return (steps, Stop::ColdBusy);
                    }
                    *bufs_free -= 1;
                    p.read_submitted();
                }
                Step::Stop(s) => return (steps, *s),
                _ => {}
            }
            steps.push(step);
        }
    }

    fn sent(steps: &[Step]) -> Vec<BlockRequest> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Ready(rb) => Some(rb.req),
                Step::Mmap { req, .. } => Some(*req),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn resident_blocks_go_in_request_order_until_the_send_is_full() {
        let reqs: Vec<_> = (0..10).map(|i| req(1, i * 16384)).collect();
        let mut q = queue(&reqs);
        let t = Torrent::default();
        let mut p = BlockPipeline::default();
        let mut bufs = 8;
        // A block is let in while the send has room for a header and 4
        // data iovecs: 3 blocks of 2 iovecs in 9.
        let (steps, stop) = build_send(&mut p, &mut q, &t, 9, &mut bufs);
        assert_eq!(stop, Stop::Full);
        assert_eq!(sent(&steps), reqs[..3]);
        let (steps, _) = build_send(&mut p, &mut q, &t, 64, &mut bufs);
        assert_eq!(sent(&steps), reqs[3..], "the rest, in order");
        assert_eq!(t.piece_checks.get(), 1, "one residency check per piece");
    }

    #[test]
    fn a_block_spanning_two_files_needs_room_for_both_slices() {
        let mut t = Torrent::default();
        t.split.insert(2);
        let mut q = queue(&[req(1, 0), req(2, 0)]);
        let mut p = BlockPipeline::default();
        let mut bufs = 8;
        // 2 iovecs for the first block, 3 would be needed for the second.
        let (steps, stop) = build_send(&mut p, &mut q, &t, 5, &mut bufs);
        assert_eq!((sent(&steps), stop), (vec![req(1, 0)], Stop::Full));
        let (steps, _) = build_send(&mut p, &mut q, &t, 5, &mut bufs);
        assert_eq!(
            steps[0],
            Step::Mmap {
                req: req(2, 0),
                at: steps_at(&steps[0]),
                segments: 2
            }
        );
    }

    fn steps_at(s: &Step) -> Instant {
        match s {
            Step::Mmap { at, .. } | Step::Read { at, .. } => *at,
            Step::Ready(rb) | Step::Dropped(rb) => rb.at,
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_cold_block_is_read_first_and_sent_before_later_blocks() {
        let mut t = Torrent::default();
        t.cold.insert(5);
        let mut q = queue(&[req(5, 0), req(6, 0), req(6, 16384)]);
        let mut p = BlockPipeline::default();
        let mut bufs = 8;
        let (steps, stop) = build_send(&mut p, &mut q, &t, 64, &mut bufs);
        // The read starts; the resident blocks behind it do not wait.
        assert!(matches!(steps[0], Step::Read { .. }), "{steps:?}");
        assert_eq!(sent(&steps), vec![req(6, 0), req(6, 16384)]);
        assert_eq!(stop, Stop::Idle);
        assert_eq!(p.reads_inflight(), 1);
        let at = steps_at(&steps[0]);
        p.read_completed(Some(ReadyBlock {
            req: req(5, 0),
            buf: 7,
            at,
        }));
        let (steps, stop) = build_send(&mut p, &mut q, &t, 64, &mut bufs);
        assert_eq!(sent(&steps), vec![req(5, 0)]);
        assert_eq!(stop, Stop::Idle);
        assert!(matches!(steps[0], Step::Ready(ReadyBlock { buf: 7, .. })));
        // The buffer comes back with the send's completion.
        assert!(!p.buffers_returned(1));
        assert!(p.is_empty());
    }

    #[test]
    fn one_read_at_a_time_and_what_follows_a_waiting_cold_block_waits_too() {
        let mut t = Torrent::default();
        t.cold.extend([5, 7]);
        let mut q = queue(&[req(5, 0), req(7, 0), req(8, 0)]);
        let mut p = BlockPipeline::default();
        let mut bufs = 8;
        let (steps, stop) = build_send(&mut p, &mut q, &t, 64, &mut bufs);
        assert_eq!(steps.len(), 1, "{steps:?}");
        assert_eq!(stop, Stop::ColdBusy, "the second cold block parks");
        assert!(
            p.has_parked() && q.queued() == 1,
            "and piece 8 stays queued"
        );
        let at = steps_at(&steps[0]);
        p.read_completed(Some(ReadyBlock {
            req: req(5, 0),
            buf: 0,
            at,
        }));
        let (steps, stop) = build_send(&mut p, &mut q, &t, 64, &mut bufs);
        assert!(
            matches!(steps[..], [Step::Ready(_), Step::Read { req, .. }, Step::Mmap { .. }] if req == super::tests::req(7, 0)),
            "{steps:?}"
        );
        assert_eq!(stop, Stop::Idle);
    }

    #[test]
    fn a_connection_holds_at_most_its_share_of_the_pool() {
        let mut t = Torrent::default();
        let reqs: Vec<_> = (0..20).map(|i| req(10 + i, 0)).collect();
        t.cold.extend(10..30);
        let mut q = queue(&reqs);
        let mut p = BlockPipeline::default();
        let at = Instant::now();
        // Eight reads complete into ready buffers the peer never takes
        // (say its sends are stuck): the ninth is not started.
        for buf in 0..8 {
            let step = p.next(&mut q, &t, |_| false, None, 8);
            assert_eq!(step, Step::Stop(Stop::Full), "no room: nothing moves");
            let step = p.next(&mut q, &t, |_| true, None, 8);
            let Step::Read { req, .. } = step else {
                panic!("{step:?}")
            };
            p.read_submitted();
            p.read_completed(Some(ReadyBlock { req, buf, at }));
            // Sent, but the send's completion never comes back.
            assert!(matches!(
                p.next(&mut q, &t, |_| true, None, 8),
                Step::Ready(_)
            ));
        }
        assert_eq!(
            p.next(&mut q, &t, |_| true, None, 8),
            Step::Stop(Stop::ColdBusy)
        );
        // Its sends complete: the buffers come back, the parked block goes.
        assert!(p.buffers_returned(8));
        assert!(matches!(
            p.next(&mut q, &t, |_| true, None, 8),
            Step::Read { req, .. } if req == reqs[8]
        ));
    }

    #[test]
    fn no_free_buffer_parks_and_joins_the_waiters_once() {
        let mut t = Torrent::default();
        t.cold.insert(3);
        let mut q = queue(&[req(3, 0)]);
        let mut p = BlockPipeline::default();
        let Step::Read { req: r, at } = p.next(&mut q, &t, |_| true, None, 8) else {
            panic!()
        };
        assert!(p.no_read_buffer(r, at), "joins the waiters");
        let Step::Read { req: r, at } = p.next(&mut q, &t, |_| true, None, 8) else {
            panic!()
        };
        assert!(!p.no_read_buffer(r, at), "already a waiter");
        assert!(p.woken_for_buffer(), "a parked block to retry");
        assert!(p.no_read_buffer(r, at), "a waiter again after being woken");
    }

    #[test]
    fn withdrawn_pieces_are_rejected_and_ready_ones_refunded() {
        let mut t = Torrent::default();
        t.dead.insert(4);
        let mut q = queue(&[req(4, 0), req(1, 0)]);
        let mut p = BlockPipeline::default();
        let at = Instant::now();
        // A block of piece 4 was read before the piece was withdrawn.
        p.read_submitted();
        p.read_completed(Some(ReadyBlock {
            req: req(4, 16384),
            buf: 2,
            at,
        }));
        let mut ce = ConnEgress::for_test(block_cost(16384));
        let step = p.next(&mut q, &t, |_| true, Some(&mut ce), 8);
        assert!(matches!(step, Step::Dropped(ReadyBlock { buf: 2, .. })));
        assert!(ce.can_pay(2 * block_cost(16384)), "refunded");
        assert_eq!(
            p.next(&mut q, &t, |_| true, Some(&mut ce), 8),
            Step::Rejected
        );
        assert!(matches!(
            p.next(&mut q, &t, |_| true, Some(&mut ce), 8),
            Step::Mmap { .. }
        ));
        assert_eq!(q.rejected, vec![req(4, 16384), req(4, 0)]);
        assert!(ce.can_pay(block_cost(16384)) && !ce.can_pay(2 * block_cost(16384)));
    }

    #[test]
    fn without_credit_the_next_block_waits_in_order() {
        let t = Torrent::default();
        let mut q = queue(&[req(1, 0), req(1, 16384)]);
        let mut p = BlockPipeline::default();
        let mut ce = ConnEgress::for_test(block_cost(16384));
        assert!(matches!(
            p.next(&mut q, &t, |_| true, Some(&mut ce), 8),
            Step::Mmap { .. }
        ));
        assert_eq!(
            p.next(&mut q, &t, |_| true, Some(&mut ce), 8),
            Step::Stop(Stop::Credit)
        );
        assert_eq!(p.blocks_waiting(&q), 1, "parked, not lost");
        ce.refund(block_cost(16384));
        assert!(matches!(
            p.next(&mut q, &t, |_| true, Some(&mut ce), 8),
            Step::Mmap { req, .. } if req == BlockRequest { piece: 1, begin: 16384, len: 16384 }
        ));
        assert_eq!(
            p.next(&mut q, &t, |_| true, Some(&mut ce), 8),
            Step::Stop(Stop::Idle)
        );
    }

    #[test]
    fn take_ready_hands_back_every_buffer() {
        let mut p = BlockPipeline::default();
        let at = Instant::now();
        for buf in 0..3 {
            p.read_submitted();
            p.read_completed(Some(ReadyBlock {
                req: req(1, buf * 16384),
                buf,
                at,
            }));
        }
        let bufs: Vec<u32> = p.take_ready().iter().map(|rb| rb.buf).collect();
        assert_eq!(bufs, vec![0, 1, 2]);
        assert!(p.is_empty());
        assert!(!p.buffers_returned(0));
    }
}
