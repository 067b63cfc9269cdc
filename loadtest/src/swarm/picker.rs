//! Which block to ask a peer for next: the piece picker of one swarm
//! leecher, sans-IO (no sockets, no clock).
//!
//! Policy, in order, for a peer that has unchoked us:
//!
//! 1. **Finish what is started.** Blocks nobody has been asked for yet in
//!    pieces already in progress (strict priority: a partial piece cannot be
//!    verified, announced or uploaded until it is whole).
//! 2. **Suggestions.** Pieces that peer suggested (BEP 6 `suggest_piece`,
//!    which a super-seeding seed sends for the piece it just offered).
//! 3. **Rarest first.** Among the pieces the peer has and we have not
//!    started, the one the fewest of our connected peers have (the
//!    availability counts kept from have / bitfield / have_all). Ties are
//!    broken by scanning a per-leecher random permutation of the pieces from
//!    a random offset ([`crate::rng::Rng`], seeded), so leechers that see the
//!    same counts still fan out over different pieces.
//! 4. **Endgame.** Once every missing block has been requested from someone
//!    ([`PiecePicker::in_endgame`]), blocks already requested elsewhere are
//!    requested again from this peer too (never twice from the same peer, at
//!    most [`ENDGAME_MAX_REQUESTS`] requests per block); the caller cancels
//!    the other copies when one arrives.
//!
//! The picker also assembles pieces: it owns one buffer per piece in
//! progress, takes block bytes as they stream in and hands a whole piece to
//! a verify function ([`PiecePicker::finish_piece`]). A piece that fails is
//! reset and downloaded again.
//!
//! Deliberately not here: which peer to ask (the caller calls [`PiecePicker::pick`]
//! for each peer with room in its pipeline), request timeouts, snubbing,
//! allowed-fast pieces, piece priorities, v2 merkle verification.

use ringseed::wire::codec::BlockRequest;
use ringseed::wire::Bitfield;

use crate::rng::Rng;

/// Block size we request (the de-facto standard; the most ringseed serves).
pub const BLOCK_LEN: u32 = 16 * 1024;
/// Most outstanding requests for one block in endgame.
pub const ENDGAME_MAX_REQUESTS: u8 = 2;

/// Block state: this many outstanding requests (0 = missing, nobody asked).
const RECEIVED: u8 = u8::MAX;
const NO_SLOT: u32 = u32::MAX;

/// What a completed block did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockOutcome {
    /// New data; `piece_done` when it was the piece's last missing block.
    New { piece_done: bool },
    /// We had it already (endgame duplicate, late block after a cancel), or
    /// it is not a block of a piece in progress.
    Unwanted,
}

/// The result of checking a whole piece.
#[derive(Debug, PartialEq, Eq)]
pub enum PieceOutcome {
    /// Hash matched: the piece is ours; here are its bytes.
    Verified(Vec<u8>),
    /// Hash mismatch: the piece was reset and will be downloaded again.
    Failed,
    /// Not a piece in progress with every block received.
    NotReady,
}

#[derive(Debug)]
struct InProgress {
    piece: u32,
    /// Per block: outstanding request count, or [`RECEIVED`].
    blocks: Vec<u8>,
    received: u32,
    data: Vec<u8>,
}

/// See the module docs.
#[derive(Debug)]
pub struct PiecePicker {
    num_pieces: u32,
    piece_length: u32,
    total_len: u64,
    have: Bitfield,
    availability: Vec<u32>,
    /// A random permutation of the pieces: the tie-break order.
    order: Vec<u32>,
    in_progress: Vec<InProgress>,
    /// Piece -> index in `in_progress`, or [`NO_SLOT`].
    slot: Vec<u32>,
    /// Blocks nobody has been asked for, pieces not started included.
    unrequested: u64,
    rng: Rng,
}

impl PiecePicker {
    /// A picker for `num_pieces` pieces of `piece_length` bytes (the last
    /// one `total_len` minus the rest), having nothing yet.
    pub fn new(num_pieces: u32, piece_length: u32, total_len: u64, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let mut order: Vec<u32> = (0..num_pieces).collect();
        rng.shuffle(&mut order);
        let mut p = PiecePicker {
            num_pieces,
            piece_length,
            total_len,
            have: Bitfield::new(num_pieces),
            availability: vec![0; num_pieces as usize],
            order,
            in_progress: Vec::new(),
            slot: vec![NO_SLOT; num_pieces as usize],
            unrequested: 0,
            rng,
        };
        p.unrequested = (0..num_pieces).map(|i| u64::from(p.blocks_in(i))).sum();
        p
    }

    pub fn num_pieces(&self) -> u32 {
        self.num_pieces
    }

    /// Length of piece `p` (0 out of range).
    pub fn piece_len(&self, p: u32) -> u32 {
        if p >= self.num_pieces {
            return 0;
        }
        let start = u64::from(p) * u64::from(self.piece_length);
        (self.total_len - start).min(u64::from(self.piece_length)) as u32
    }

    pub fn blocks_in(&self, p: u32) -> u32 {
        self.piece_len(p).div_ceil(BLOCK_LEN)
    }

    fn block(&self, p: u32, b: u32) -> BlockRequest {
        let begin = b * BLOCK_LEN;
        BlockRequest {
            piece: p,
            begin,
            len: (self.piece_len(p) - begin).min(BLOCK_LEN),
        }
    }

    /// Whether `r` is exactly one of the blocks we request.
    pub fn is_block(&self, r: &BlockRequest) -> bool {
        r.begin & (BLOCK_LEN - 1) == 0
            && r.begin < self.piece_len(r.piece)
            && self.block(r.piece, r.begin / BLOCK_LEN).len == r.len
    }

    pub fn have(&self, p: u32) -> bool {
        self.have.get(p)
    }

    pub fn have_bitfield(&self) -> &Bitfield {
        &self.have
    }

    pub fn have_count(&self) -> u32 {
        self.have.count()
    }

    pub fn is_complete(&self) -> bool {
        self.have.is_full()
    }

    /// Start as a seed: every piece ours (the caller vouches for the data).
    pub fn set_have_all(&mut self) {
        self.have = Bitfield::full(self.num_pieces);
        for ip in self.in_progress.drain(..) {
            self.slot[ip.piece as usize] = NO_SLOT;
        }
        self.unrequested = 0;
    }

    /// Every missing block has been requested from somebody.
    pub fn in_endgame(&self) -> bool {
        self.unrequested == 0 && !self.is_complete()
    }

    /// Pieces being downloaded (allocated buffers).
    pub fn pieces_in_progress(&self) -> usize {
        self.in_progress.len()
    }

    pub fn availability(&self, p: u32) -> u32 {
        self.availability.get(p as usize).copied().unwrap_or(0)
    }

    /// A connected peer has piece `p` (a have, or a bit of its bitfield).
    pub fn add_have(&mut self, p: u32) {
        if let Some(a) = self.availability.get_mut(p as usize) {
            *a += 1;
        }
    }

    /// A peer that had `p` went away (or refused it to us).
    pub fn remove_have(&mut self, p: u32) {
        if let Some(a) = self.availability.get_mut(p as usize) {
            *a = a.saturating_sub(1);
        }
    }

    pub fn add_bitfield(&mut self, b: &Bitfield) {
        self.for_each_set(b, |a| *a += 1);
    }

    pub fn remove_bitfield(&mut self, b: &Bitfield) {
        self.for_each_set(b, |a| *a = a.saturating_sub(1));
    }

    fn for_each_set(&mut self, b: &Bitfield, mut f: impl FnMut(&mut u32)) {
        if b.count() == 0 {
            return;
        }
        for (byte_i, &byte) in b.as_bytes().iter().enumerate() {
            if byte == 0 {
                continue;
            }
            for bit in 0..8 {
                if byte & (0x80 >> bit) != 0 {
                    if let Some(a) = self.availability.get_mut(byte_i * 8 + bit) {
                        f(a);
                    }
                }
            }
        }
    }

    fn startable(&self, p: u32) -> bool {
        p < self.num_pieces && !self.have.get(p) && self.slot[p as usize] == NO_SLOT
    }

    fn start(&mut self, p: u32) -> usize {
        let len = self.piece_len(p);
        let i = self.in_progress.len();
        self.in_progress.push(InProgress {
            piece: p,
            blocks: vec![0; self.blocks_in(p) as usize],
            received: 0,
            data: vec![0; len as usize],
        });
        self.slot[p as usize] = i as u32;
        i
    }

    /// Requests blocks nobody was asked for from in-progress piece `i`.
    fn request_missing(&mut self, i: usize, max: usize, out: &mut Vec<BlockRequest>) -> usize {
        let mut n = 0;
        let piece = self.in_progress[i].piece;
        for b in 0..self.in_progress[i].blocks.len() {
            if n >= max {
                break;
            }
            if self.in_progress[i].blocks[b] == 0 {
                self.in_progress[i].blocks[b] = 1;
                self.unrequested -= 1;
                out.push(self.block(piece, b as u32));
                n += 1;
            }
        }
        n
    }

    /// Up to `k` of the rarest pieces `peer_has` that we have not started,
    /// rarest first, into `out` (one scan, whatever `k`: with small pieces a
    /// pipeline refill wants many).
    fn rarest(&mut self, peer_has: &Bitfield, k: usize, out: &mut Vec<u32>) {
        let n = self.order.len();
        if n == 0 || k == 0 {
            return;
        }
        let start = self.rng.below(n as u64) as usize;
        // (availability, piece), sorted; ties keep scan order.
        let mut best: Vec<(u32, u32)> = Vec::with_capacity(k + 1);
        for j in 0..n {
            let p = self.order[(start + j) % n];
            if !peer_has.get(p) || !self.startable(p) {
                continue;
            }
            let a = self.availability[p as usize];
            if best.len() == k && best[k - 1].0 <= a {
                continue;
            }
            let at = best.partition_point(|&(ba, _)| ba <= a);
            best.insert(at, (a, p));
            best.truncate(k);
            if best.len() == k && best[k - 1].0 <= 1 {
                break;
            }
        }
        out.extend(best.iter().map(|&(_, p)| p));
    }

    /// Appends up to `max` blocks to ask a peer that has `peer_has` for.
    /// `suggested`: pieces that peer suggested, most wanted first.
    /// `asked`: whether this peer already has an outstanding request for a
    /// block (only consulted in endgame).
    pub fn pick(
        &mut self,
        peer_has: &Bitfield,
        suggested: &[u32],
        asked: impl Fn(&BlockRequest) -> bool,
        max: usize,
        out: &mut Vec<BlockRequest>,
    ) -> usize {
        let base = out.len();
        let mut n = 0;
        if self.unrequested > 0 {
            for i in 0..self.in_progress.len() {
                if n >= max {
                    return n;
                }
                if peer_has.get(self.in_progress[i].piece) {
                    n += self.request_missing(i, max - n, out);
                }
            }
            for &p in suggested {
                if n >= max {
                    return n;
                }
                if peer_has.get(p) && self.startable(p) {
                    let i = self.start(p);
                    n += self.request_missing(i, max - n, out);
                }
            }
            if n < max {
                let per_piece = self.blocks_in(0).max(1) as usize;
                let mut pieces = Vec::new();
                self.rarest(peer_has, (max - n).div_ceil(per_piece), &mut pieces);
                for p in pieces {
                    if n >= max {
                        break;
                    }
                    let i = self.start(p);
                    n += self.request_missing(i, max - n, out);
                }
            }
        }
        if n < max && self.unrequested == 0 {
            n += self.pick_endgame(peer_has, &asked, base, max - n, out);
        }
        n
    }

    fn pick_endgame(
        &mut self,
        peer_has: &Bitfield,
        asked: &impl Fn(&BlockRequest) -> bool,
        base: usize,
        max: usize,
        out: &mut Vec<BlockRequest>,
    ) -> usize {
        let mut n = 0;
        for i in 0..self.in_progress.len() {
            let piece = self.in_progress[i].piece;
            if !peer_has.get(piece) {
                continue;
            }
            for b in 0..self.in_progress[i].blocks.len() {
                if n >= max {
                    return n;
                }
                let st = self.in_progress[i].blocks[b];
                if st == RECEIVED || st >= ENDGAME_MAX_REQUESTS {
                    continue;
                }
                let r = self.block(piece, b as u32);
                if asked(&r) || out[base..].contains(&r) {
                    continue;
                }
                if st == 0 {
                    self.unrequested -= 1;
                }
                self.in_progress[i].blocks[b] = st + 1;
                out.push(r);
                n += 1;
            }
        }
        n
    }

    fn state_mut(&mut self, r: &BlockRequest) -> Option<(usize, usize)> {
        if !self.is_block(r) {
            return None;
        }
        let i = *self.slot.get(r.piece as usize)?;
        if i == NO_SLOT {
            return None;
        }
        Some((i as usize, (r.begin / BLOCK_LEN) as usize))
    }

    /// A request for `r` will not be answered (cancelled, rejected, choked,
    /// timed out, peer gone): one fewer outstanding request for it.
    pub fn request_cancelled(&mut self, r: &BlockRequest) {
        let Some((i, b)) = self.state_mut(r) else {
            return;
        };
        let st = &mut self.in_progress[i].blocks[b];
        if *st != RECEIVED && *st > 0 {
            *st -= 1;
            if *st == 0 {
                self.unrequested += 1;
            }
        }
    }

    /// Where bytes `offset..offset + len` of block `r` go, if we still want
    /// that block (in progress, not received yet).
    pub fn block_buf(&mut self, r: &BlockRequest, offset: u32, len: usize) -> Option<&mut [u8]> {
        let (i, b) = self.state_mut(r)?;
        let ip = &mut self.in_progress[i];
        if ip.blocks[b] == RECEIVED {
            return None;
        }
        let at = (r.begin + offset) as usize;
        ip.data.get_mut(at..at + len)
    }

    /// All bytes of block `r` were written through [`Self::block_buf`].
    /// The caller drops `r` from the sender's outstanding requests first.
    pub fn block_received(&mut self, r: &BlockRequest) -> BlockOutcome {
        let Some((i, b)) = self.state_mut(r) else {
            return BlockOutcome::Unwanted;
        };
        let ip = &mut self.in_progress[i];
        match ip.blocks[b] {
            RECEIVED => BlockOutcome::Unwanted,
            st => {
                if st == 0 {
                    self.unrequested -= 1;
                }
                ip.blocks[b] = RECEIVED;
                ip.received += 1;
                BlockOutcome::New {
                    piece_done: ip.received as usize == ip.blocks.len(),
                }
            }
        }
    }

    /// Checks whole piece `p` with `verify`. Verified: it is ours and its
    /// buffer is returned; failed: every block is missing again.
    pub fn finish_piece(&mut self, p: u32, verify: impl FnOnce(&[u8]) -> bool) -> PieceOutcome {
        let Some(&i) = self.slot.get(p as usize) else {
            return PieceOutcome::NotReady;
        };
        if i == NO_SLOT {
            return PieceOutcome::NotReady;
        }
        let i = i as usize;
        let ip = &mut self.in_progress[i];
        if ip.received as usize != ip.blocks.len() {
            return PieceOutcome::NotReady;
        }
        if !verify(&ip.data) {
            ip.blocks.iter_mut().for_each(|s| *s = 0);
            ip.received = 0;
            self.unrequested += ip.blocks.len() as u64;
            return PieceOutcome::Failed;
        }
        let ip = self.in_progress.swap_remove(i);
        self.slot[p as usize] = NO_SLOT;
        if let Some(moved) = self.in_progress.get(i) {
            self.slot[moved.piece as usize] = i as u32;
        }
        self.have.set(p);
        PieceOutcome::Verified(ip.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PL: u32 = 4 * BLOCK_LEN;

    fn picker(pieces: u32, seed: u64) -> PiecePicker {
        PiecePicker::new(pieces, PL, u64::from(pieces) * u64::from(PL), seed)
    }

    fn full(n: u32) -> Bitfield {
        Bitfield::full(n)
    }

    fn only(n: u32, set: &[u32]) -> Bitfield {
        let mut b = Bitfield::new(n);
        for &p in set {
            b.set(p);
        }
        b
    }

    fn never(_: &BlockRequest) -> bool {
        false
    }

    fn pieces_of(reqs: &[BlockRequest]) -> Vec<u32> {
        let mut v: Vec<u32> = reqs.iter().map(|r| r.piece).collect();
        v.dedup();
        v
    }

    /// Receives every block of `p` and verifies it as good.
    fn complete(pk: &mut PiecePicker, p: u32) {
        for b in 0..pk.blocks_in(p) {
            let r = pk.block(p, b);
            assert!(matches!(pk.block_received(&r), BlockOutcome::New { .. }));
        }
        assert!(matches!(
            pk.finish_piece(p, |_| true),
            PieceOutcome::Verified(_)
        ));
    }

    #[test]
    fn rarest_piece_first() {
        let mut pk = picker(8, 1);
        pk.add_bitfield(&full(8));
        pk.add_bitfield(&full(8));
        pk.add_bitfield(&only(8, &[0, 1, 2, 3, 4, 6, 7]));
        // Piece 5 is held by 2 peers, all others by 3.
        let mut out = vec![];
        pk.pick(&full(8), &[], never, 4, &mut out);
        assert_eq!(pieces_of(&out), vec![5]);
        assert_eq!(out.len(), 4, "whole piece requested");
        assert_eq!(
            out[0],
            BlockRequest {
                piece: 5,
                begin: 0,
                len: BLOCK_LEN
            }
        );
    }

    #[test]
    fn only_pieces_the_peer_has() {
        let mut pk = picker(8, 2);
        pk.add_bitfield(&only(8, &[3]));
        let mut out = vec![];
        assert_eq!(pk.pick(&only(8, &[3]), &[], never, 100, &mut out), 4);
        assert_eq!(pieces_of(&out), vec![3]);
        out.clear();
        assert_eq!(pk.pick(&only(8, &[3]), &[], never, 100, &mut out), 0);
    }

    #[test]
    fn ties_are_broken_randomly_but_reproducibly() {
        let first = |seed| {
            let mut pk = picker(64, seed);
            pk.add_bitfield(&full(64));
            let mut out = vec![];
            pk.pick(&full(64), &[], never, 1, &mut out);
            out[0].piece
        };
        assert_eq!(first(7), first(7), "same seed, same choice");
        let distinct: std::collections::HashSet<u32> = (0..32).map(first).collect();
        assert!(distinct.len() > 16, "leechers fan out: {distinct:?}");
    }

    #[test]
    fn partial_pieces_have_strict_priority() {
        let mut pk = picker(8, 3);
        pk.add_bitfield(&full(8));
        let mut out = vec![];
        pk.pick(&full(8), &[], never, 2, &mut out);
        let p = out[0].piece;
        // A rarer piece appears, but the started one is finished first.
        pk.add_bitfield(&only(8, &[(p + 1) % 8]));
        pk.remove_bitfield(&full(8));
        pk.add_bitfield(&only(8, &[p]));
        let mut out2 = vec![];
        pk.pick(&full(8), &[], never, 2, &mut out2);
        assert_eq!(pieces_of(&out2), vec![p]);
        assert_eq!(out2[0].begin, 2 * BLOCK_LEN);
    }

    #[test]
    fn suggestions_win_over_rarest() {
        let mut pk = picker(8, 4);
        pk.add_bitfield(&full(8));
        pk.add_bitfield(&only(8, &[0, 1, 2, 3, 4, 5, 7]));
        let mut out = vec![];
        pk.pick(&full(8), &[2], never, 5, &mut out);
        assert_eq!(pieces_of(&out), vec![2, 6], "suggested 2, then rarest 6");
    }

    #[test]
    fn cancelled_blocks_are_requested_again() {
        let mut pk = picker(2, 5);
        pk.add_bitfield(&full(2));
        let mut out = vec![];
        pk.pick(&full(2), &[], never, 8, &mut out);
        assert_eq!(out.len(), 8);
        assert!(pk.in_endgame());
        pk.request_cancelled(&out[3]);
        assert!(!pk.in_endgame());
        let mut again = vec![];
        assert_eq!(pk.pick(&full(2), &[], never, 8, &mut again), 1 + 7);
        assert_eq!(again[0], out[3], "the cancelled block first");
    }

    #[test]
    fn endgame_duplicates_to_other_peers_only_and_capped() {
        let mut pk = picker(2, 6);
        pk.add_bitfield(&full(2));
        let mut a = vec![];
        pk.pick(&full(2), &[], never, 100, &mut a);
        assert_eq!(a.len(), 8);
        assert!(pk.in_endgame());
        // The same peer gets nothing it already asked for.
        let mut same = vec![];
        assert_eq!(pk.pick(&full(2), &[], |r| a.contains(r), 100, &mut same), 0);
        // A second peer gets every block once more.
        let mut b = vec![];
        assert_eq!(pk.pick(&full(2), &[], never, 100, &mut b), 8);
        // A third gets nothing: two requests per block at most.
        let mut c = vec![];
        assert_eq!(pk.pick(&full(2), &[], never, 100, &mut c), 0);
        // The first copy arrives; the second is unwanted.
        assert_eq!(
            pk.block_received(&a[0]),
            BlockOutcome::New { piece_done: false }
        );
        assert_eq!(pk.block_received(&b[0]), BlockOutcome::Unwanted);
    }

    #[test]
    fn not_endgame_while_unstarted_pieces_remain() {
        let mut pk = picker(4, 7);
        pk.add_bitfield(&only(4, &[0]));
        let mut out = vec![];
        pk.pick(&only(4, &[0]), &[], never, 100, &mut out);
        assert!(!pk.in_endgame(), "pieces 1-3 are not requested from anyone");
        let mut dup = vec![];
        assert_eq!(pk.pick(&only(4, &[0]), &[], never, 100, &mut dup), 0);
    }

    #[test]
    fn failed_piece_is_downloaded_again_and_verified_piece_is_ours() {
        let mut pk = picker(2, 8);
        pk.add_bitfield(&full(2));
        let mut out = vec![];
        pk.pick(&only(2, &[1]), &[], never, 100, &mut out);
        for r in &out {
            pk.block_buf(r, 0, r.len as usize).unwrap().fill(7);
        }
        let mut done = false;
        for r in &out {
            if let BlockOutcome::New { piece_done } = pk.block_received(r) {
                done = piece_done;
            }
        }
        assert!(done);
        assert_eq!(pk.finish_piece(1, |d| d[0] == 8), PieceOutcome::Failed);
        assert!(!pk.have(1));
        let mut again = vec![];
        assert_eq!(pk.pick(&only(2, &[1]), &[], never, 100, &mut again), 4);
        assert_eq!(again, out);
        for r in &again {
            pk.block_buf(r, 0, r.len as usize).unwrap().fill(8);
            pk.block_received(r);
        }
        match pk.finish_piece(1, |d| d.iter().all(|&x| x == 8)) {
            PieceOutcome::Verified(d) => assert_eq!(d.len(), PL as usize),
            other => panic!("{other:?}"),
        }
        assert!(pk.have(1));
        assert!(pk.block_buf(&again[0], 0, 1).is_none(), "no longer wanted");
        assert_eq!(pk.block_received(&again[0]), BlockOutcome::Unwanted);
    }

    #[test]
    fn short_last_piece_and_misaligned_blocks() {
        let pk = PiecePicker::new(3, PL, u64::from(PL) * 2 + 100, 9);
        assert_eq!(pk.piece_len(2), 100);
        assert_eq!(pk.blocks_in(2), 1);
        assert!(pk.is_block(&BlockRequest {
            piece: 2,
            begin: 0,
            len: 100
        }));
        assert!(!pk.is_block(&BlockRequest {
            piece: 2,
            begin: 0,
            len: 99
        }));
        assert!(!pk.is_block(&BlockRequest {
            piece: 0,
            begin: 1,
            len: BLOCK_LEN
        }));
        assert!(!pk.is_block(&BlockRequest {
            piece: 3,
            begin: 0,
            len: 100
        }));
    }

    #[test]
    fn downloads_everything_from_one_peer_in_the_end() {
        let mut pk = picker(16, 10);
        pk.add_bitfield(&full(16));
        let mut seen = std::collections::HashSet::new();
        while !pk.is_complete() {
            let mut out = vec![];
            pk.pick(&full(16), &[], never, 3, &mut out);
            assert!(!out.is_empty());
            for r in out {
                assert!(seen.insert(r), "no block asked twice outside endgame");
                if let BlockOutcome::New { piece_done: true } = pk.block_received(&r) {
                    complete_check(&mut pk, r.piece);
                }
            }
        }
        assert_eq!(seen.len(), 64);
        assert_eq!(pk.pieces_in_progress(), 0);
    }

    fn complete_check(pk: &mut PiecePicker, p: u32) {
        assert!(matches!(
            pk.finish_piece(p, |_| true),
            PieceOutcome::Verified(_)
        ));
    }

    #[test]
    fn availability_follows_bitfields() {
        let mut pk = picker(10, 11);
        let b = only(10, &[0, 9]);
        pk.add_bitfield(&b);
        pk.add_have(9);
        assert_eq!(pk.availability(0), 1);
        assert_eq!(pk.availability(9), 2);
        pk.remove_bitfield(&b);
        assert_eq!(pk.availability(9), 1);
        assert_eq!(pk.availability(0), 0);
    }

    #[test]
    fn complete_after_every_piece() {
        let mut pk = picker(3, 12);
        let mut out = vec![];
        pk.pick(&full(3), &[], never, 100, &mut out);
        for p in 0..3 {
            assert!(!pk.is_complete());
            complete(&mut pk, p);
        }
        assert!(pk.is_complete() && !pk.in_endgame());
        assert_eq!(pk.have_count(), 3);
    }
}
