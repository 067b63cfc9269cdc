//! What a downloading box knows about one peer it downloads from: the
//! pieces it has, whether it chokes us, our outstanding requests to it, the
//! pieces it suggested or allowed us fast, and its measured delivery rate,
//! which sizes the request pipeline. Sans-IO: `now` is passed in.
//!
//! Call order, per connection: [`PeerDownload::new`] after the handshake;
//! [`PeerDownload::set_max_depth`] when its extension handshake gives a
//! `reqq`; the `on_*` methods as its messages arrive (the caller keeps the
//! picker's availability in step with [`PeerDownload::gain`] /
//! [`PeerDownload::replace_haves`]); [`PeerDownload::fill`] whenever the
//! pipeline may have room; [`PeerDownload::take_timed_out`] from a timer.
//! Every request this type drops is handed back to the caller, which must
//! tell the picker ([`PiecePicker::request_cancelled`]).
//!
//! Not here: sending (the caller queues `request` / `cancel` messages for
//! what [`PeerDownload::fill`] appends and what it drops), choking peers
//! (see [`super::tit_for_tat`]), bans (see [`super::smart_ban`]).

use std::time::{Duration, Instant};

use crate::wire::codec::BlockRequest;
use crate::wire::Bitfield;

use super::picker::{PiecePicker, BLOCK_LEN};

/// Window over which a peer's delivery rate is measured.
pub const RATE_WINDOW: Duration = Duration::from_millis(500);
/// Requests kept at a peer: this long at its measured rate (libtorrent's
/// `request_queue_time` idea), so slow peers do not hold the requests a
/// fast one could serve.
pub const QUEUE_TIME: Duration = Duration::from_millis(500);
/// Requests at a peer whose rate is not known yet.
pub const INITIAL_DEPTH: usize = 4;
/// Suggested pieces remembered per peer (BEP 6 `suggest_piece`).
pub const MAX_SUGGESTED: usize = 8;
/// Allowed-fast pieces remembered per peer (BEP 6 recommends 10).
pub const MAX_ALLOWED_FAST: usize = 32;

/// See the module docs.
#[derive(Debug, Clone)]
pub struct PeerDownload {
    /// Pieces the peer has (the caller counts them in the picker).
    pub has: Bitfield,
    /// Pieces it has that we lack.
    pub interesting: u32,
    /// We told it `interested`.
    pub am_interested: bool,
    /// It chokes us (the initial state).
    pub peer_choking: bool,
    /// It speaks the fast extension: a choke does not drop our requests,
    /// it rejects each one it will not serve.
    pub fast: bool,
    max_depth: usize,
    window_bytes: u64,
    window_start: Instant,
    rate: u64,
    outstanding: Vec<BlockRequest>,
    suggested: Vec<u32>,
    allowed_fast: Vec<u32>,
    /// Last block received, or when requests to an idle peer started.
    last_block: Instant,
    snubbed_until: Option<Instant>,
}

impl PeerDownload {
    /// A peer with nothing yet, choking us; at most `max_depth` requests
    /// outstanding at once.
    pub fn new(now: Instant, num_pieces: u32, max_depth: usize, fast: bool) -> Self {
        PeerDownload {
            has: Bitfield::new(num_pieces),
            interesting: 0,
            am_interested: false,
            peer_choking: true,
            fast,
            max_depth: max_depth.max(1),
            window_bytes: 0,
            window_start: now,
            rate: 0,
            outstanding: Vec::new(),
            suggested: Vec::new(),
            allowed_fast: Vec::new(),
            last_block: now,
            snubbed_until: None,
        }
    }

    /// Lowers the pipeline limit to the peer's `reqq` (0 is ignored).
    pub fn set_max_depth(&mut self, ours: usize, reqq: u32) {
        if reqq > 0 {
            self.max_depth = ours.clamp(1, reqq as usize);
        }
    }

    /// Its measured delivery rate to us, bytes per second (0: not yet).
    pub fn rate(&self) -> u64 {
        self.rate
    }

    pub fn outstanding(&self) -> &[BlockRequest] {
        &self.outstanding
    }

    pub fn suggested(&self) -> &[u32] {
        &self.suggested
    }

    pub fn allowed_fast(&self) -> &[u32] {
        &self.allowed_fast
    }

    pub fn is_snubbed(&self, now: Instant) -> bool {
        self.snubbed_until.is_some_and(|t| now < t)
    }

    /// Requests to keep outstanding at this peer: [`QUEUE_TIME`] worth of
    /// blocks at its measured rate, plus one; [`INITIAL_DEPTH`] until it is
    /// measured; never more than its `reqq` and never fewer than 2.
    pub fn queue_depth(&self) -> usize {
        let want = if self.rate == 0 {
            INITIAL_DEPTH
        } else {
            (self.rate as f64 * QUEUE_TIME.as_secs_f64() / f64::from(BLOCK_LEN)).ceil() as usize + 1
        };
        want.clamp(2, self.max_depth.max(2))
    }

    /// The peer has `piece`; returns whether that is news (the caller then
    /// adds it to the picker's availability). `we_have`: we have it already.
    pub fn gain(&mut self, piece: u32, we_have: bool) -> bool {
        if piece >= self.has.len() || self.has.get(piece) {
            return false;
        }
        self.has.set(piece);
        if !we_have {
            self.interesting += 1;
        }
        true
    }

    /// A bitfield / have_all / have_none replaces what it has; the old set
    /// is returned (the caller swaps the two in the picker's availability).
    pub fn replace_haves(&mut self, b: Bitfield, picker: &PiecePicker) -> Bitfield {
        self.interesting = if picker.is_complete() {
            0
        } else {
            (0..b.len())
                .filter(|&i| b.get(i) && !picker.have(i))
                .count() as u32
        };
        std::mem::replace(&mut self.has, b)
    }

    /// We verified `piece`: it is no longer interesting in this peer.
    pub fn we_got(&mut self, piece: u32) {
        if self.has.get(piece) {
            self.interesting = self.interesting.saturating_sub(1);
        }
        self.suggested.retain(|&p| p != piece);
    }

    /// Whether we should be interested (the caller sends the message when
    /// this differs from [`Self::am_interested`]).
    pub fn wants(&self, complete: bool) -> bool {
        !complete && self.interesting > 0
    }

    /// `choke`: without the fast extension every pending request is
    /// dropped (BEP 3) and returned; with it, the peer rejects each one it
    /// will not serve, so nothing is dropped here.
    pub fn on_choke(&mut self) -> Vec<BlockRequest> {
        self.peer_choking = true;
        if self.fast {
            Vec::new()
        } else {
            std::mem::take(&mut self.outstanding)
        }
    }

    pub fn on_unchoke(&mut self, now: Instant) {
        self.peer_choking = false;
        self.last_block = now;
    }

    /// BEP 6 `suggest_piece`: remembered (newest last, bounded) unless we
    /// have the piece.
    pub fn on_suggest(&mut self, piece: u32, we_have: bool) {
        if we_have || piece >= self.has.len() || self.suggested.contains(&piece) {
            return;
        }
        if self.suggested.len() >= MAX_SUGGESTED {
            self.suggested.remove(0);
        }
        self.suggested.push(piece);
    }

    /// BEP 6 `allowed_fast`: a piece we may request while choked.
    pub fn on_allowed_fast(&mut self, piece: u32) {
        if piece < self.has.len()
            && !self.allowed_fast.contains(&piece)
            && self.allowed_fast.len() < MAX_ALLOWED_FAST
        {
            self.allowed_fast.push(piece);
        }
    }

    /// `reject_request` for `r`: whether it was ours to drop (the caller
    /// tells the picker). An unchoked peer that rejects a piece it claims
    /// will not give it to us (a super-seed refuses pieces it has not
    /// offered): `refused` is set and the piece no longer counts as its.
    pub fn on_reject(&mut self, r: &BlockRequest, we_have: bool) -> RejectOutcome {
        let Some(i) = self.outstanding.iter().position(|o| o == r) else {
            return RejectOutcome::NotOurs;
        };
        self.outstanding.swap_remove(i);
        let refused =
            !self.peer_choking && self.has.get(r.piece) && !self.allowed_fast.contains(&r.piece);
        if refused {
            self.has.unset(r.piece);
            if !we_have {
                self.interesting = self.interesting.saturating_sub(1);
            }
        }
        RejectOutcome::Dropped { refused }
    }

    /// A whole block `r` arrived: updates the rate; whether we had asked
    /// this peer for it (a block we did not ask for is the caller's to
    /// count as unsolicited).
    pub fn on_block(&mut self, now: Instant, r: &BlockRequest) -> bool {
        let Some(i) = self.outstanding.iter().position(|o| o == r) else {
            return false;
        };
        self.outstanding.swap_remove(i);
        self.last_block = now;
        self.window_bytes += u64::from(r.len);
        let dt = now.saturating_duration_since(self.window_start);
        if dt >= RATE_WINDOW {
            let inst = (self.window_bytes as f64 / dt.as_secs_f64()) as u64;
            self.rate = if self.rate == 0 {
                inst
            } else {
                (self.rate + inst) / 2
            };
            self.window_bytes = 0;
            self.window_start = now;
        }
        true
    }

    /// Endgame: `r` arrived from someone else; whether we had asked this
    /// peer too (the caller sends it a `cancel`).
    pub fn cancel(&mut self, r: &BlockRequest) -> bool {
        match self.outstanding.iter().position(|o| o == r) {
            Some(i) => {
                self.outstanding.swap_remove(i);
                true
            }
            None => false,
        }
    }

    /// Every outstanding request (the peer is going away).
    pub fn take_outstanding(&mut self) -> Vec<BlockRequest> {
        std::mem::take(&mut self.outstanding)
    }

    /// Requests outstanding while no block came for `timeout`: all of them
    /// are dropped and returned (the caller cancels them on the wire), and
    /// the peer is not asked again for as long (snubbed).
    pub fn take_timed_out(&mut self, now: Instant, timeout: Duration) -> Vec<BlockRequest> {
        if self.outstanding.is_empty() || now.saturating_duration_since(self.last_block) <= timeout
        {
            return Vec::new();
        }
        self.snubbed_until = Some(now + timeout);
        std::mem::take(&mut self.outstanding)
    }

    /// How many more requests this peer should get now (0: none).
    pub fn room(&self, now: Instant) -> usize {
        let may = !self.peer_choking || !self.allowed_fast.is_empty();
        if !may || !self.am_interested || self.is_snubbed(now) {
            return 0;
        }
        self.queue_depth().saturating_sub(self.outstanding.len())
    }

    /// Tops up the pipeline: up to `min(room, max)` new requests picked by
    /// `picker` (only allowed-fast pieces while it chokes us) are appended
    /// to `out` and recorded as outstanding. Returns how many.
    pub fn fill(
        &mut self,
        now: Instant,
        picker: &mut PiecePicker,
        max: usize,
        out: &mut Vec<BlockRequest>,
    ) -> usize {
        let room = self.room(now).min(max);
        if room == 0 {
            return 0;
        }
        let base = out.len();
        let outstanding = &self.outstanding;
        let n = if self.peer_choking {
            picker.pick_allowed_fast(
                &self.has,
                &self.allowed_fast,
                |r| outstanding.contains(r),
                room,
                out,
            )
        } else {
            picker.pick(
                &self.has,
                &self.suggested,
                |r| outstanding.contains(r),
                room,
                out,
            )
        };
        if n > 0 && self.outstanding.is_empty() {
            self.last_block = now;
        }
        self.outstanding.extend_from_slice(&out[base..]);
        n
    }
}

/// What a `reject_request` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectOutcome {
    /// Not one of our outstanding requests to this peer.
    NotOurs,
    /// Dropped; `refused`: the peer will not give us that piece.
    Dropped { refused: bool },
}
