//! Which block to ask a peer for next: the piece picker of one downloading
//! torrent, sans-IO (no sockets, no clock).
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
//! 5. **Allowed fast** (BEP 6): a peer that chokes us may still be asked
//!    for the pieces it declared allowed-fast ([`PiecePicker::pick_allowed_fast`]:
//!    the same order as above, restricted to those pieces).
//!
//! The picker also assembles pieces: it owns one buffer per piece in
//! progress, takes block bytes as they stream in (remembering which peer
//! sent each block) and hands a whole piece to a verify function
//! ([`PiecePicker::finish_piece`]). A piece that fails is reset and
//! downloaded again; the failure names the peers that sent its blocks and
//! keeps a copy of the bad bytes, so [`super::smart_ban`] can find the
//! liar once the piece passes.
//!
//! Deliberately not here: which peer to ask (the caller calls [`PiecePicker::pick`]
//! for each peer with room in its pipeline, sized by
//! [`super::peer::PeerDownload::queue_depth`]), request timeouts, snubbing,
//! piece priorities, the hash itself (the caller's verify function does v1
//! SHA-1 or v2 merkle, see `storage::writer`).

use crate::wire::codec::BlockRequest;
use crate::wire::Bitfield;

use super::rng::Rng;
use super::PeerKey;

/// Block size we request (the de-facto standard; the most ringseed serves).
pub const BLOCK_LEN: u32 = 16 * 1024;
/// Most outstanding requests for one block in endgame.
pub const ENDGAME_MAX_REQUESTS: u8 = 2;

/// Block state: this many outstanding requests (0 = missing, nobody asked).
const RECEIVED: u8 = u8::MAX;
const NO_SLOT: u32 = u32::MAX;
/// No peer has sent this block yet.
pub const NO_PEER: PeerKey = PeerKey::MAX;

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
    /// Hash matched: the piece is ours; here are its bytes and who sent
    /// each block (index = block).
    Verified {
        data: Vec<u8>,
        senders: Vec<PeerKey>,
    },
    /// Hash mismatch: the piece was reset and will be downloaded again.
    Failed(FailedPiece),
    /// Not a piece in progress with every block received.
    NotReady,
}

/// A piece that failed its hash check: the evidence for
/// [`super::smart_ban::SmartBan::piece_failed`].
#[derive(Debug, PartialEq, Eq)]
pub struct FailedPiece {
    pub piece: u32,
    /// The bytes that failed.
    pub data: Vec<u8>,
    /// Who sent each block (index = block).
    pub senders: Vec<PeerKey>,
}

#[derive(Debug)]
struct InProgress {
    piece: u32,
    /// Per block: outstanding request count, or [`RECEIVED`].
    blocks: Vec<u8>,
    /// Per block: the peer whose copy was kept, or [`NO_PEER`].
    senders: Vec<PeerKey>,
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

    /// Block `b` of piece `p`.
    pub fn block(&self, p: u32, b: u32) -> BlockRequest {
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

    /// Piece `p` is ours already (verified on disk before the download
    /// started, e.g. a resumed fetch). Ignored for a piece in progress.
    pub fn set_have(&mut self, p: u32) {
        if p >= self.num_pieces || self.have.get(p) || self.slot[p as usize] != NO_SLOT {
            return;
        }
        self.have.set(p);
        self.unrequested -= u64::from(self.blocks_in(p));
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
            senders: vec![NO_PEER; self.blocks_in(p) as usize],
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

    /// All bytes of block `r` were written through [`Self::block_buf`] by
    /// peer `from`. The caller drops `r` from the sender's outstanding
    /// requests first.
    pub fn block_received(&mut self, r: &BlockRequest, from: PeerKey) -> BlockOutcome {
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
                ip.senders[b] = from;
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
            let senders = std::mem::replace(&mut ip.senders, vec![NO_PEER; ip.blocks.len()]);
            self.unrequested += ip.blocks.len() as u64;
            return PieceOutcome::Failed(FailedPiece {
                piece: p,
                data: ip.data.clone(),
                senders,
            });
        }
        let ip = self.in_progress.swap_remove(i);
        self.slot[p as usize] = NO_SLOT;
        if let Some(moved) = self.in_progress.get(i) {
            self.slot[moved.piece as usize] = i as u32;
        }
        self.have.set(p);
        PieceOutcome::Verified {
            data: ip.data,
            senders: ip.senders,
        }
    }

    /// A piece we had was found bad after all (data changed on disk, write
    /// failed): it is missing again and will be downloaded.
    pub fn unset_have(&mut self, p: u32) {
        if p < self.num_pieces && self.have.get(p) {
            self.have.unset(p);
            self.unrequested += u64::from(self.blocks_in(p));
        }
    }

    /// Like [`Self::pick`] for a peer that chokes us: only blocks of the
    /// pieces it allowed us to request anyway (BEP 6 `allowed_fast`).
    pub fn pick_allowed_fast(
        &mut self,
        peer_has: &Bitfield,
        allowed: &[u32],
        asked: impl Fn(&BlockRequest) -> bool,
        max: usize,
        out: &mut Vec<BlockRequest>,
    ) -> usize {
        let mut only = Bitfield::new(self.num_pieces);
        for &p in allowed {
            if p < self.num_pieces && peer_has.get(p) {
                only.set(p);
            }
        }
        if only.count() == 0 {
            return 0;
        }
        self.pick(&only, &[], asked, max, out)
    }
}
