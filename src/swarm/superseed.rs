//! Super-seeding (BEP 16, "initial seeding"): which piece to offer each peer,
//! sans-IO with an injected clock, one instance per torrent per shard.
//!
//! # What it decides
//!
//! A super-seed does not advertise its pieces. It tells each peer about one
//! (or [`SuperSeedConfig::offers_per_peer`]) piece at a time with a `have`,
//! and only tells it about a new one once the previous one has spread, so
//! that every byte the origin uploads is one the swarm did not have yet and
//! the peers trade the rest among themselves.
//!
//! **Which piece.** A peer is offered a piece it lacks, that we have, that
//! we have not announced to it before and that has **no copy** yet: no peer
//! of this shard is seen to have it (have, bitfield, have_all) and no offer
//! of it is outstanding (a piece on its way counts as a copy, as libtorrent
//! ranks pieces being super-seeded as unavailable). Among those: the least
//! offered first, ties broken by scanning from a per-peer offset so that
//! simultaneous newcomers get different pieces, deterministically.
//!
//! Once every piece has a copy the seed stops injecting: the swarm has the
//! whole file and trades it. A copy (the rarest piece the peer lacks: fewest
//! seen + in flight, then least offered) is offered only
//! - to a newcomer, at connect, so that nobody starts with nothing to trade;
//! - to a *starving* peer: it holds no offer and has announced no new piece
//!   for [`SuperSeedConfig::forward_timeout`] (its neighbours do not serve
//!   it, or it has none). A peer that keeps completing pieces from the swarm
//!   is not starving and costs the origin nothing.
//!
//! **When a peer gets its next piece** (the release rule). An outstanding
//! offer of piece `p` to peer `P` is released, freeing `P`'s offer slot, when
//! - another peer that had *not* been offered `p` itself announces `p`: it
//!   can only have got it from the swarm, so `p` has spread (BEP 16 strict
//!   rule; a `have` from a peer we offered `p` to is its own download); or
//! - `P` has announced `p` and no other peer of this shard lacks `p` (nobody
//!   to forward it to: a lone leecher, or the end game); or
//! - `P` has announced `p` and [`SuperSeedConfig::forward_timeout`] passed
//!   without it spreading: its neighbours may be choking it or be busy, and
//!   a leecher must not stall on the seed (libtorrent's non-strict mode
//!   releases on completion at once; BEP 16 strict mode never does).
//!
//! **The last piece** not yet announced to a peer goes out together with
//! the offer before it, even beyond `offers_per_peer`: announcing it makes
//! us look like a seed, and a peer that is not interested at that moment
//! (it just completed its only offer) may drop us as a redundant
//! connection; libtorrent 2.1 does, and never reconnects.
//!
//! A peer's offers go out as soon as it finished its handshake (see
//! [`SuperSeeder::peer_connected`]): no waiting for its bitfield and no
//! fallback timer, unlike libtorrent 2.1 which drops the first offers while
//! the handshake completes and recovers ~10 s later.
//!
//! **Suggest (BEP 6).** Each offer carries a `suggest` flag (config): for
//! fast peers the engine also sends `suggest_piece` for it, so a peer that
//! got several offers fetches the rarest first. [`SuperSeeder::rarest_missing`]
//! gives the rarest pieces a peer lacks, for suggestions outside
//! super-seeding (plain seeding with have_all).
//!
//! # Call order
//!
//! 1. [`SuperSeeder::new`] with the torrent's verified pieces.
//! 2. For every connection of this torrent on this shard:
//!    [`SuperSeeder::peer_connected`] right after the handshake with the
//!    haves known so far, [`SuperSeeder::peer_have`] for every `have`,
//!    [`SuperSeeder::peer_haves_replaced`] after a bitfield / have_all /
//!    have_none, and [`SuperSeeder::peer_disconnected`] when it closes.
//! 3. [`SuperSeeder::tick`] at (or after) [`SuperSeeder::next_timeout`].
//!
//! Every call that can free an offer slot appends [`Offer`]s to a
//! caller-owned `Vec`; the engine applies each with
//! [`crate::wire::PeerState::offer_piece`] (and `suggest_piece` when
//! `suggest` is set). Events for unknown peers are ignored.
//!
//! # What it does not do
//!
//! - No cross-shard view: availability counts the peers of this shard only
//!   (shards share nothing mutable). With several shards each shard's
//!   selector spreads its own peers; the origin may then send a piece once
//!   per shard rather than once in total. Run super-seeding torrents with
//!   few shards, or accept up to `shards` x 1.0 of the file.
//! - No choking and no rate limiting: the choker and the egress limiter do.
//! - Piece loss (data changing under us) is not tracked yet: build a new
//!   selector when the verified set changes.
//!
//! # Cost
//!
//! Per piece three `u32` counters; per peer two bitfields and its offers.
//! Picking a piece scans the pieces once: O(pieces) per offer, and offers
//! happen about once per piece per peer. `tick` and `next_timeout` are
//! O(peers).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::wire::types::PeerHaves;
use crate::wire::Bitfield;

pub use super::choker::PeerId;

/// Super-seeding settings for one torrent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuperSeedConfig {
    /// Offers a peer may hold at once (default 2, at least 1). Two keep a
    /// peer busy with the seed while its previous piece spreads.
    pub offers_per_peer: u32,
    /// How long a peer that completed an offered piece waits for it to
    /// spread before it is offered another one anyway (default 5 s).
    pub forward_timeout: Duration,
    /// Ask the engine to also send BEP 6 `suggest_piece` for every offer
    /// to fast peers (default true).
    pub suggest: bool,
}

impl Default for SuperSeedConfig {
    fn default() -> Self {
        Self {
            offers_per_peer: 2,
            forward_timeout: Duration::from_secs(5),
            suggest: true,
        }
    }
}

/// One piece to offer: the engine calls `offer_piece(piece)` on the peer's
/// state machine, and `suggest_piece(piece)` too when `suggest` is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offer {
    pub peer: PeerId,
    pub piece: u32,
    pub suggest: bool,
}

#[derive(Debug, Clone)]
struct Outstanding {
    piece: u32,
    /// When the peer announced the piece itself.
    completed_at: Option<Instant>,
}

#[derive(Debug, Clone)]
struct PeerRecord {
    has: Bitfield,
    /// Pieces we announced to this peer (never offered twice).
    announced: Bitfield,
    offers: Vec<Outstanding>,
    spread: u32,
    /// Since when the peer holds no offer although it lacks pieces we have
    /// (every such piece already has a copy in the swarm) and has not
    /// announced a new piece.
    starved_since: Option<Instant>,
}

/// The per-torrent, per-shard super-seed piece selector. See the module docs.
#[derive(Debug)]
pub struct SuperSeeder {
    config: SuperSeedConfig,
    we_have: Bitfield,
    /// Per piece: connected peers seen to have it.
    seen: Vec<u32>,
    /// Per piece: offers of it not yet released.
    in_flight: Vec<u32>,
    /// Per piece: offers ever made.
    offered: Vec<u32>,
    peers: BTreeMap<PeerId, PeerRecord>,
    offers_total: u64,
    /// Scratch: peers that may take a new offer now.
    touched: Vec<PeerId>,
    /// A disconnect left a piece without any copy.
    fresh_again: bool,
}

impl SuperSeeder {
    /// A selector for a torrent whose verified pieces are `we_have`.
    pub fn new(config: SuperSeedConfig, we_have: &Bitfield) -> Self {
        let n = we_have.len() as usize;
        let config = SuperSeedConfig {
            offers_per_peer: config.offers_per_peer.max(1),
            ..config
        };
        Self {
            config,
            we_have: we_have.clone(),
            seen: vec![0; n],
            in_flight: vec![0; n],
            offered: vec![0; n],
            peers: BTreeMap::new(),
            offers_total: 0,
            touched: Vec::new(),
            fresh_again: false,
        }
    }

    pub fn config(&self) -> &SuperSeedConfig {
        &self.config
    }

    fn num_pieces(&self) -> u32 {
        self.we_have.len()
    }

    /// A peer finished its handshake; `haves` is what it announced so far
    /// (usually nothing yet). Its first offers are appended to `out` at once:
    /// send them in the same flush as our handshake reply. A peer id that
    /// is already connected is treated as a reconnect (old state dropped).
    pub fn peer_connected(
        &mut self,
        now: Instant,
        peer: PeerId,
        haves: PeerHaves<'_>,
        out: &mut Vec<Offer>,
    ) {
        self.forget(peer);
        let n = self.num_pieces();
        let spread = if n == 0 {
            0
        } else {
            // Fibonacci hashing spreads consecutive ids over the pieces.
            ((u64::from(peer.0).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % u64::from(n)) as u32
        };
        let has = haves_to_bitfield(haves, n);
        for p in ones(&has) {
            self.seen[p as usize] += 1;
        }
        self.peers.insert(
            peer,
            PeerRecord {
                has,
                announced: Bitfield::new(n),
                offers: Vec::new(),
                spread,
                starved_since: None,
            },
        );
        self.fill(now, peer, out, true);
    }

    /// The peer announced `piece` with a `have`.
    pub fn peer_have(&mut self, now: Instant, peer: PeerId, piece: u32, out: &mut Vec<Offer>) {
        if piece >= self.num_pieces() {
            return;
        }
        let Some(rec) = self.peers.get_mut(&peer) else {
            return;
        };
        if rec.has.get(piece) {
            return; // redundant have
        }
        rec.has.set(piece);
        if rec.starved_since.is_some() {
            rec.starved_since = Some(now); // progressing through the swarm
        }
        self.seen[piece as usize] += 1;
        let own = mark_completed(rec, piece, now);
        if !own {
            // `piece` reached `peer` through the swarm: it has spread, so
            // everyone waiting on it may get their next piece.
            self.release_piece_everywhere(piece, peer);
        }
        self.release_unneeded(piece);
        self.refill_touched(now, out);
    }

    /// The peer replaced its whole have set (bitfield, have_all, have_none).
    pub fn peer_haves_replaced(
        &mut self,
        now: Instant,
        peer: PeerId,
        haves: PeerHaves<'_>,
        out: &mut Vec<Offer>,
    ) {
        let n = self.num_pieces();
        let Some(rec) = self.peers.get_mut(&peer) else {
            return;
        };
        let new = haves_to_bitfield(haves, n);
        let old = std::mem::replace(&mut rec.has, new);
        for p in ones(&old) {
            self.seen[p as usize] -= 1;
        }
        let mut gained = Vec::new();
        for p in ones(&rec.has) {
            self.seen[p as usize] += 1;
            if !old.get(p) {
                gained.push(p);
            }
        }
        for &p in &gained {
            let rec = self.peers.get_mut(&peer).expect("peer present");
            if !mark_completed(rec, p, now) {
                self.release_piece_everywhere(p, peer);
            }
            self.release_unneeded(p);
        }
        self.touched.push(peer);
        self.refill_touched(now, out);
    }

    /// The peer's connection closed. Others may get new offers (a piece
    /// nobody else lacks any more releases its holders).
    pub fn peer_disconnected(&mut self, now: Instant, peer: PeerId, out: &mut Vec<Offer>) {
        if !self.forget(peer) {
            return;
        }
        if self.fresh_again {
            // Pieces only the departed peer had are new again: anyone with
            // a free slot may take one.
            self.fresh_again = false;
            let limit = self.config.offers_per_peer as usize;
            let free = self.peers.iter().filter(|(_, r)| r.offers.len() < limit);
            self.touched.extend(free.map(|(id, _)| *id));
        }
        self.tick(now, out);
    }

    /// Releases offers whose forward timeout passed or that nobody else
    /// needs any more, and refills free offer slots.
    pub fn tick(&mut self, now: Instant, out: &mut Vec<Offer>) {
        let timeout = self.config.forward_timeout;
        let total = self.peers.len() as u32;
        let mut released = Vec::new();
        for (id, rec) in self.peers.iter_mut() {
            let before = rec.offers.len();
            if rec.starved_since.is_some_and(|t| now >= t + timeout) {
                self.touched.push(*id);
            }
            rec.offers.retain(|o| {
                let done = o.completed_at.is_some_and(|t| {
                    now.saturating_duration_since(t) >= timeout
                        || self.seen[o.piece as usize] >= total
                });
                if done {
                    released.push(o.piece);
                }
                !done
            });
            if rec.offers.len() < before {
                self.touched.push(*id);
            }
        }
        for p in released {
            self.in_flight[p as usize] -= 1;
        }
        self.refill_touched(now, out);
    }

    /// When [`SuperSeeder::tick`] next has work (a forward timeout), if any.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.peers
            .values()
            .flat_map(|r| {
                r.offers
                    .iter()
                    .filter_map(|o| o.completed_at)
                    .chain(r.starved_since)
            })
            .min()
            .map(|t| t + self.config.forward_timeout)
    }

    /// Up to `max` pieces `peer` lacks and we have, rarest first (fewest
    /// copies, then least offered), for BEP 6 `suggest_piece`.
    pub fn rarest_missing(&self, peer: PeerId, max: usize, out: &mut Vec<u32>) {
        let Some(rec) = self.peers.get(&peer) else {
            return;
        };
        let mut cands: Vec<(u32, u32, u32)> = (0..self.num_pieces())
            .filter(|&p| self.we_have.get(p) && !rec.has.get(p))
            .map(|p| (self.copies(p), self.offered[p as usize], p))
            .collect();
        cands.sort_unstable();
        out.extend(cands.into_iter().take(max).map(|c| c.2));
    }

    /// Pieces currently offered to `peer` and not yet released.
    pub fn outstanding(&self, peer: PeerId) -> Vec<u32> {
        self.peers
            .get(&peer)
            .map(|r| r.offers.iter().map(|o| o.piece).collect())
            .unwrap_or_default()
    }

    /// Connected peers seen to have `piece`.
    pub fn seen(&self, piece: u32) -> u32 {
        self.seen.get(piece as usize).copied().unwrap_or(0)
    }

    /// Offers of `piece` ever made.
    pub fn offered(&self, piece: u32) -> u32 {
        self.offered.get(piece as usize).copied().unwrap_or(0)
    }

    /// Offers made in total (a counter for metrics).
    pub fn offers_total(&self) -> u64 {
        self.offers_total
    }

    pub fn num_peers(&self) -> usize {
        self.peers.len()
    }

    fn copies(&self, p: u32) -> u32 {
        self.seen[p as usize] + self.in_flight[p as usize]
    }

    /// Drops a peer's state; `false` if it was unknown.
    fn forget(&mut self, peer: PeerId) -> bool {
        let Some(rec) = self.peers.remove(&peer) else {
            return false;
        };
        for p in ones(&rec.has) {
            self.seen[p as usize] -= 1;
            self.fresh_again |= self.copies(p) == 0;
        }
        for o in &rec.offers {
            self.in_flight[o.piece as usize] -= 1;
            self.fresh_again |= self.copies(o.piece) == 0;
        }
        true
    }

    /// `piece` was seen at a peer that got it from the swarm: release every
    /// offer of it (except `except`'s own, which it just completed).
    fn release_piece_everywhere(&mut self, piece: u32, except: PeerId) {
        if self.in_flight[piece as usize] == 0 {
            return;
        }
        let mut released = 0;
        for (id, rec) in self.peers.iter_mut() {
            if *id == except {
                continue;
            }
            let before = rec.offers.len();
            rec.offers.retain(|o| o.piece != piece);
            if rec.offers.len() < before {
                released += (before - rec.offers.len()) as u32;
                self.touched.push(*id);
            }
        }
        self.in_flight[piece as usize] -= released;
    }

    /// Nobody connected lacks `piece`: completed offers of it are released.
    fn release_unneeded(&mut self, piece: u32) {
        if self.seen[piece as usize] < self.peers.len() as u32 {
            return;
        }
        let mut released = 0;
        for (id, rec) in self.peers.iter_mut() {
            let before = rec.offers.len();
            rec.offers
                .retain(|o| !(o.piece == piece && o.completed_at.is_some()));
            if rec.offers.len() < before {
                released += (before - rec.offers.len()) as u32;
                self.touched.push(*id);
            }
        }
        self.in_flight[piece as usize] -= released;
    }

    /// Refills the peers whose offers were released (or whose starvation
    /// timer expired) since the last call, in id order.
    fn refill_touched(&mut self, now: Instant, out: &mut Vec<Offer>) {
        let mut ids = std::mem::take(&mut self.touched);
        ids.sort_unstable();
        ids.dedup();
        for &id in &ids {
            self.fill(now, id, out, false);
        }
        ids.clear();
        self.touched = ids;
    }

    /// Tops up `peer`'s offers to the limit with pieces nobody has yet; see
    /// the module docs for when a copy is offered instead.
    fn fill(&mut self, now: Instant, peer: PeerId, out: &mut Vec<Offer>, first: bool) {
        let limit = self.config.offers_per_peer as usize;
        let timeout = self.config.forward_timeout;
        loop {
            let Some(rec) = self.peers.get(&peer) else {
                return;
            };
            if rec.offers.len() >= limit {
                return;
            }
            let starved = rec.offers.is_empty()
                && (first || rec.starved_since.is_some_and(|t| now >= t + timeout));
            let pick =
                self.pick(rec, false)
                    .or_else(|| if starved { self.pick(rec, true) } else { None });
            let rec = self.peers.get_mut(&peer).expect("peer present");
            let Some(piece) = pick else {
                // Nothing new to offer: start (or keep) the starvation clock
                // if the peer holds no offer and still lacks pieces we have.
                rec.starved_since = if rec.offers.is_empty()
                    && (0..self.we_have.len())
                        .any(|p| self.we_have.get(p) && !rec.has.get(p) && !rec.announced.get(p))
                {
                    Some(rec.starved_since.filter(|_| !starved).unwrap_or(now))
                } else {
                    None
                };
                return;
            };
            rec.starved_since = None;
            self.push_offer(peer, piece, out);
            // The last piece not yet announced to this peer never goes out
            // on its own: announcing it makes us look like a seed, and a
            // peer that is not interested at that moment (it just finished
            // its only offer) may drop us as redundant; libtorrent 2.1 does
            // ("uninteresting upload-only peer") and does not come back.
            // Sent with this offer, it finds the peer interested.
            let rec = self.peers.get(&peer).expect("peer present");
            if self.num_pieces() - rec.announced.count() == 1 {
                let last = (0..self.num_pieces()).find(|&p| !rec.announced.get(p));
                if let Some(q) = last.filter(|&q| self.we_have.get(q) && !rec.has.get(q)) {
                    self.push_offer(peer, q, out);
                }
            }
        }
    }

    /// Records an offer of `piece` to `peer` and appends it to `out`.
    fn push_offer(&mut self, peer: PeerId, piece: u32, out: &mut Vec<Offer>) {
        let Some(rec) = self.peers.get_mut(&peer) else {
            return;
        };
        rec.announced.set(piece);
        rec.offers.push(Outstanding {
            piece,
            completed_at: None,
        });
        self.in_flight[piece as usize] += 1;
        self.offered[piece as usize] += 1;
        self.offers_total += 1;
        out.push(Offer {
            peer,
            piece,
            suggest: self.config.suggest,
        });
    }

    /// The best piece to offer: see the module docs. Without `allow_copies`
    /// only pieces with no copy (nobody has it, nobody is being sent it).
    fn pick(&self, rec: &PeerRecord, allow_copies: bool) -> Option<u32> {
        let n = self.num_pieces();
        let mut best: Option<((u32, u32), u32)> = None;
        for k in 0..n {
            let p = (rec.spread + k) % n;
            if !self.we_have.get(p) || rec.has.get(p) || rec.announced.get(p) {
                continue;
            }
            let key = (self.copies(p), self.offered[p as usize]);
            if key.0 > 0 && !allow_copies {
                continue;
            }
            if best.is_none_or(|(b, _)| key < b) {
                best = Some((key, p));
                if key == (0, 0) {
                    break;
                }
            }
        }
        best.map(|(_, p)| p)
    }
}

/// Marks `rec`'s offer of `piece` (if still outstanding) completed. `true`
/// if we ever offered `piece` to this peer: then the piece may well have
/// come from us, and its announcement says nothing about spreading.
fn mark_completed(rec: &mut PeerRecord, piece: u32, now: Instant) -> bool {
    for o in rec.offers.iter_mut().filter(|o| o.piece == piece) {
        o.completed_at.get_or_insert(now);
    }
    rec.announced.get(piece)
}

fn haves_to_bitfield(haves: PeerHaves<'_>, n: u32) -> Bitfield {
    match haves {
        PeerHaves::None => Bitfield::new(n),
        PeerHaves::All => Bitfield::full(n),
        PeerHaves::Some(b) if b.len() == n => b.clone(),
        PeerHaves::Some(b) => {
            let mut out = Bitfield::new(n);
            for p in (0..n.min(b.len())).filter(|&p| b.get(p)) {
                out.set(p);
            }
            out
        }
    }
}

fn ones(b: &Bitfield) -> impl Iterator<Item = u32> + '_ {
    (0..b.len()).filter(move |&p| b.get(p))
}
