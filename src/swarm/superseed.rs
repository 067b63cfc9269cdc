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
//! # One seed at any shard count
//!
//! Each shard has its own selector for its own peers, but the per-piece
//! counts (peers seen to have it, offers outstanding, offers ever made) live
//! in one [`SharedSpread`] per torrent that every shard's selector reads and
//! writes with relaxed atomics, once per offer and per `have`, never per
//! block. A piece with no copy is *claimed* by a compare-and-swap of its
//! outstanding-offer count from 0 to 1, so two shards never inject the same
//! fresh piece. When a piece is seen to spread (the release rule below) its
//! spread generation is bumped; a shard's outstanding offers of it are
//! released at that shard's next tick (every
//! [`SuperSeedConfig::cross_shard_poll`] while it holds offers), so a
//! `have` on one shard frees the offer slot of a peer on another.
//!
//! # What it does not do
//!
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
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;
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
    /// With several shards: how often a selector holding offers looks for
    /// pieces that spread on other shards (default `None`: one shard, the
    /// selector sees every `have` itself). The engine sets 100 ms.
    pub cross_shard_poll: Option<Duration>,
}

impl Default for SuperSeedConfig {
    fn default() -> Self {
        Self {
            offers_per_peer: 2,
            forward_timeout: Duration::from_secs(5),
            suggest: true,
            cross_shard_poll: None,
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
    /// The piece's spread generation when offered.
    generation: u32,
}

/// One torrent's per-piece counts over the peers of every shard (see the
/// module docs): shared by the selectors of all shards.
#[derive(Debug)]
pub struct SharedSpread {
    /// Per piece: connected peers seen to have it.
    seen: Box<[AtomicU32]>,
    /// Per piece: offers of it not yet released.
    in_flight: Box<[AtomicU32]>,
    /// Per piece: offers ever made.
    offered: Box<[AtomicU32]>,
    /// Per piece: bumped each time it is seen to spread through the swarm.
    generation: Box<[AtomicU32]>,
    /// Connected super-seeding peers of the torrent.
    peers: AtomicU32,
}

fn counters(n: u32) -> Box<[AtomicU32]> {
    (0..n).map(|_| AtomicU32::new(0)).collect()
}

impl SharedSpread {
    pub fn new(pieces: u32) -> Self {
        Self {
            seen: counters(pieces),
            in_flight: counters(pieces),
            offered: counters(pieces),
            generation: counters(pieces),
            peers: AtomicU32::new(0),
        }
    }

    /// Connected peers (all shards) seen to have `piece`.
    pub fn seen(&self, piece: u32) -> u32 {
        self.seen.get(piece as usize).map_or(0, |c| c.load(Relaxed))
    }

    /// Offers of `piece` ever made (all shards).
    pub fn offered(&self, piece: u32) -> u32 {
        self.offered
            .get(piece as usize)
            .map_or(0, |c| c.load(Relaxed))
    }

    /// Offers of `piece` not yet released (all shards).
    pub fn in_flight(&self, piece: u32) -> u32 {
        self.in_flight
            .get(piece as usize)
            .map_or(0, |c| c.load(Relaxed))
    }

    /// Connected peers, all shards.
    pub fn peers(&self) -> u32 {
        self.peers.load(Relaxed)
    }
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
    /// The per-piece counts, shared with the other shards' selectors.
    spread: Arc<SharedSpread>,
    /// Mixed into the peers' scan offsets (the shard's index), so that
    /// peers with the same id on two shards start at different pieces.
    salt: u64,
    /// When this selector last ticked (or first saw a peer).
    last_tick: Option<Instant>,
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
        let spread = Arc::new(SharedSpread::new(we_have.len()));
        Self::shared(config, we_have, spread, 0)
    }

    /// A selector of one shard whose counts are `spread`, shared with the
    /// selectors of the same torrent on the other shards (`salt`: the
    /// shard's index).
    pub fn shared(
        config: SuperSeedConfig,
        we_have: &Bitfield,
        spread: Arc<SharedSpread>,
        salt: u64,
    ) -> Self {
        assert_eq!(
            spread.seen.len(),
            we_have.len() as usize,
            "one spread per torrent"
        );
        let config = SuperSeedConfig {
            offers_per_peer: config.offers_per_peer.max(1),
            ..config
        };
        Self {
            config,
            we_have: we_have.clone(),
            spread,
            salt: salt << 32,
            last_tick: None,
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
        self.last_tick.get_or_insert(now);
        self.spread.peers.fetch_add(1, Relaxed);
        let n = self.num_pieces();
        let spread = if n == 0 {
            0
        } else {
            // Fibonacci hashing spreads consecutive ids over the pieces.
            let id = u64::from(peer.0) ^ self.salt;
            ((id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % u64::from(n)) as u32
        };
        let has = haves_to_bitfield(haves, n);
        for p in ones(&has) {
            self.spread.seen[p as usize].fetch_add(1, Relaxed);
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
        self.spread.seen[piece as usize].fetch_add(1, Relaxed);
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
            self.spread.seen[p as usize].fetch_sub(1, Relaxed);
        }
        let mut gained = Vec::new();
        for p in ones(&rec.has) {
            self.spread.seen[p as usize].fetch_add(1, Relaxed);
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
        self.last_tick = Some(now);
        let sp = &self.spread;
        let total = sp.peers.load(Relaxed);
        let mut released = Vec::new();
        for (id, rec) in self.peers.iter_mut() {
            let before = rec.offers.len();
            if rec.starved_since.is_some_and(|t| now >= t + timeout) {
                self.touched.push(*id);
            }
            rec.offers.retain(|o| {
                let p = o.piece as usize;
                // Spread through the swarm, seen on another shard.
                let spread = sp.generation[p].load(Relaxed) != o.generation;
                let done = spread
                    || o.completed_at.is_some_and(|t| {
                        now.saturating_duration_since(t) >= timeout
                            || sp.seen[p].load(Relaxed) >= total
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
            self.spread.in_flight[p as usize].fetch_sub(1, Relaxed);
        }
        self.refill_touched(now, out);
    }

    /// When [`SuperSeeder::tick`] next has work (a forward timeout), if any.
    pub fn next_timeout(&self) -> Option<Instant> {
        let forward = self
            .peers
            .values()
            .flat_map(|r| {
                r.offers
                    .iter()
                    .filter_map(|o| o.completed_at)
                    .chain(r.starved_since)
            })
            .min()
            .map(|t| t + self.config.forward_timeout);
        let holds_offers = self.peers.values().any(|r| !r.offers.is_empty());
        let poll = match (self.config.cross_shard_poll, self.last_tick) {
            (Some(every), Some(last)) if holds_offers => Some(last + every),
            _ => None,
        };
        match (forward, poll) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Up to `max` pieces `peer` lacks and we have, rarest first (fewest
    /// copies, then least offered), for BEP 6 `suggest_piece`.
    pub fn rarest_missing(&self, peer: PeerId, max: usize, out: &mut Vec<u32>) {
        let Some(rec) = self.peers.get(&peer) else {
            return;
        };
        let mut cands: Vec<(u32, u32, u32)> = (0..self.num_pieces())
            .filter(|&p| self.we_have.get(p) && !rec.has.get(p))
            .map(|p| (self.copies(p), self.spread.offered(p), p))
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

    /// Connected peers (every shard's) seen to have `piece`.
    pub fn seen(&self, piece: u32) -> u32 {
        self.spread.seen(piece)
    }

    /// Offers of `piece` ever made (by every shard).
    pub fn offered(&self, piece: u32) -> u32 {
        self.spread.offered(piece)
    }

    /// The counts this selector shares with the other shards'.
    pub fn spread(&self) -> &Arc<SharedSpread> {
        &self.spread
    }

    /// Offers made in total (a counter for metrics).
    pub fn offers_total(&self) -> u64 {
        self.offers_total
    }

    pub fn num_peers(&self) -> usize {
        self.peers.len()
    }

    fn copies(&self, p: u32) -> u32 {
        let i = p as usize;
        self.spread.seen[i].load(Relaxed) + self.spread.in_flight[i].load(Relaxed)
    }

    /// Drops a peer's state; `false` if it was unknown.
    fn forget(&mut self, peer: PeerId) -> bool {
        let Some(rec) = self.peers.remove(&peer) else {
            return false;
        };
        self.spread.peers.fetch_sub(1, Relaxed);
        for p in ones(&rec.has) {
            self.spread.seen[p as usize].fetch_sub(1, Relaxed);
            self.fresh_again |= self.copies(p) == 0;
        }
        for o in &rec.offers {
            self.spread.in_flight[o.piece as usize].fetch_sub(1, Relaxed);
            self.fresh_again |= self.copies(o.piece) == 0;
        }
        true
    }

    /// `piece` was seen at a peer that got it from the swarm: release every
    /// offer of it (except `except`'s own, which it just completed).
    fn release_piece_everywhere(&mut self, piece: u32, except: PeerId) {
        if self.spread.in_flight[piece as usize].load(Relaxed) == 0 {
            return;
        }
        // Other shards release their offers of it at their next tick.
        self.spread.generation[piece as usize].fetch_add(1, Relaxed);
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
        self.spread.in_flight[piece as usize].fetch_sub(released, Relaxed);
    }

    /// Nobody connected (on any shard) lacks `piece`: completed offers of it
    /// are released.
    fn release_unneeded(&mut self, piece: u32) {
        let sp = &self.spread;
        if sp.seen[piece as usize].load(Relaxed) < sp.peers.load(Relaxed) {
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
        self.spread.in_flight[piece as usize].fetch_sub(released, Relaxed);
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
            let (pick, claimed) = match self.claim_fresh(rec) {
                Some(p) => (Some(p), true),
                None if starved => (self.pick(rec, true, &[]), false),
                None => (None, false),
            };
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
            self.push_offer(peer, piece, out, claimed);
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
                    self.push_offer(peer, q, out, false);
                }
            }
        }
    }

    /// Claims a piece nobody has and nobody is being sent, on any shard
    /// (its outstanding count goes 0 -> 1 by compare-and-swap, so two
    /// shards never inject the same piece); `None` if there is none.
    fn claim_fresh(&self, rec: &PeerRecord) -> Option<u32> {
        let mut lost = Vec::new();
        loop {
            let p = self.pick(rec, false, &lost)?;
            let sp = &self.spread;
            let won = sp.in_flight[p as usize]
                .compare_exchange(0, 1, Relaxed, Relaxed)
                .is_ok();
            if won && sp.seen[p as usize].load(Relaxed) == 0 {
                return Some(p);
            }
            if won {
                sp.in_flight[p as usize].fetch_sub(1, Relaxed);
            }
            lost.push(p);
        }
    }

    /// Records an offer of `piece` to `peer` and appends it to `out`
    /// (`claimed`: its outstanding count was already raised).
    fn push_offer(&mut self, peer: PeerId, piece: u32, out: &mut Vec<Offer>, claimed: bool) {
        let Some(rec) = self.peers.get_mut(&peer) else {
            if claimed {
                self.spread.in_flight[piece as usize].fetch_sub(1, Relaxed);
            }
            return;
        };
        let sp = &self.spread;
        rec.announced.set(piece);
        rec.offers.push(Outstanding {
            piece,
            completed_at: None,
            generation: sp.generation[piece as usize].load(Relaxed),
        });
        if !claimed {
            sp.in_flight[piece as usize].fetch_add(1, Relaxed);
        }
        sp.offered[piece as usize].fetch_add(1, Relaxed);
        self.offers_total += 1;
        out.push(Offer {
            peer,
            piece,
            suggest: self.config.suggest,
        });
    }

    /// The best piece to offer: see the module docs. Without `allow_copies`
    /// only pieces with no copy (nobody has it, nobody is being sent it).
    /// `skip`: pieces another shard claimed meanwhile.
    fn pick(&self, rec: &PeerRecord, allow_copies: bool, skip: &[u32]) -> Option<u32> {
        let n = self.num_pieces();
        let mut best: Option<((u32, u32), u32)> = None;
        for k in 0..n {
            let p = (rec.spread + k) % n;
            if !self.we_have.get(p) || rec.has.get(p) || rec.announced.get(p) || skip.contains(&p) {
                continue;
            }
            let key = (
                self.copies(p),
                self.spread.offered[p as usize].load(Relaxed),
            );
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
