//! Super-seeding over a shard's connections: one [`SuperSeeder`] per
//! super-seeding torrent, fed by the shard's connections to that torrent,
//! its offers applied to their [`crate::wire::PeerState`]s. Driven by
//! [`super::policy::Policies`]; sans-IO.
//!
//! - After every receive of a super-seeding connection
//!   ([`SuperSeeding::input`]): the first time (handshake just done) the
//!   peer is registered with [`SuperSeeder::peer_connected`], whose offers go
//!   out in the same loop turn as our handshake reply; afterwards its have
//!   events are forwarded ([`SuperSeeder::peer_have`],
//!   [`SuperSeeder::peer_haves_replaced`]).
//! - On close or drain: [`SuperSeeder::peer_disconnected`].
//! - Forward timeouts: each selector's [`SuperSeeder::next_timeout`] is kept
//!   as a deadline; the shard loop bounds its io_uring wait by the earliest
//!   one ([`SuperSeeding::next_deadline`]) and ticks the selectors that are
//!   due ([`SuperSeeding::timers`]).
//! - Every [`Offer`] becomes `offer_piece` (a `have`) and, if asked and the
//!   peer speaks BEP 6, `suggest_piece`, counted in the shard stats.
//!
//! Deadlines are cached rather than asked for on every event
//! (`next_timeout` is O(peers)): a selector call at `now` can only add
//! timers ending at `now + forward_timeout`, later than any it had, so the
//! cache is lowered to that at most; releases may leave it early, which
//! costs one tick that finds nothing due, after which it is recomputed.
//!
//! The shards' selectors of one torrent share its per-piece counts
//! ([`crate::engine::ServedTorrent::spread`]), so the box injects each
//! piece once at any shard count; with several shards each selector also
//! ticks every [`SuperSeedConfig::cross_shard_poll`] while it holds offers,
//! to release those that spread on other shards (see `swarm::superseed`).
//! Selectors are made from the verified
//! pieces when the torrent's first super-seeding peer arrives on this shard
//! and live as long as the shard (their offer counts are the history that
//! "least sent first" needs); pieces withdrawn because their data changed
//! may still be offered, and requests for them are refused as usual.

use std::time::{Duration, Instant};

use crate::swarm::superseed::{Offer, PeerId, SuperSeedConfig, SuperSeeder};
use crate::wire::types::HaveEvent;
use crate::wire::TorrentId;

use super::super::catalog::Catalog;
use super::super::stats::ShardStats;
use super::policy::Conns;

/// How often a selector holding offers looks for pieces that spread on
/// other shards.
const CROSS_SHARD_POLL: Duration = Duration::from_millis(100);

struct Selector {
    sel: SuperSeeder,
    /// At or before this selector's next forward timeout; `None`: no timer.
    deadline: Option<Instant>,
}

/// A shard's super-seed selectors, by torrent id.
pub struct SuperSeeding {
    config: SuperSeedConfig,
    /// This shard's index (salts the selectors' scan offsets).
    shard: u64,
    selectors: Vec<Option<Selector>>,
    /// The earliest selector deadline (may be early, never late).
    next: Option<Instant>,
    /// Scratch for offers, reused.
    offers: Vec<Offer>,
}

impl SuperSeeding {
    /// `shards` > 1 turns on the cross-shard poll (100 ms unless set).
    pub fn new(mut config: SuperSeedConfig, torrents: usize, shard: usize, shards: usize) -> Self {
        if shards > 1 && config.cross_shard_poll.is_none() {
            config.cross_shard_poll = Some(CROSS_SHARD_POLL);
        }
        Self {
            config,
            shard: shard as u64,
            selectors: (0..torrents).map(|_| None).collect(),
            next: None,
            offers: Vec::new(),
        }
    }

    /// Follow a new catalogue: room for ids added since, and the
    /// selectors of torrents gone dropped.
    pub fn follow(&mut self, catalog: &Catalog) {
        let bound = catalog.id_bound() as usize;
        if self.selectors.len() < bound {
            self.selectors.resize_with(bound, || None);
        }
        for (i, s) in self.selectors.iter_mut().enumerate() {
            if s.is_some() && catalog.get(TorrentId(i as u32)).is_none() {
                *s = None;
            }
        }
    }

    /// When a selector may next have a forward timeout due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.next
    }

    /// A selector was called at `now`: it may have started a timer.
    fn touched(&mut self, t: TorrentId, now: Instant) {
        let shortest = match self.config.cross_shard_poll {
            Some(p) => p.min(self.config.forward_timeout),
            None => self.config.forward_timeout,
        };
        let timer = now + shortest.max(Duration::from_millis(1));
        if let Some(Some(s)) = self.selectors.get_mut(t.0 as usize) {
            s.deadline = Some(s.deadline.map_or(timer, |d| d.min(timer)));
        }
        self.next = Some(self.next.map_or(timer, |d| d.min(timer)));
    }
}

impl SuperSeeding {
    /// After a receive on super-seeding connection `idx`: register it once
    /// its handshake is done, then forward its have events; apply offers.
    pub fn input(&mut self, now: Instant, cx: &mut Conns<'_>, stats: &ShardStats, idx: u32) {
        let Some(conn) = cx.table.at_mut(idx) else {
            return;
        };
        let Some(t) = conn.torrent.clone() else {
            return;
        };
        let ss = self;
        let Some(slot) = ss.selectors.get_mut(t.id.0 as usize) else {
            return;
        };
        let selector = slot.get_or_insert_with(|| Selector {
            sel: SuperSeeder::shared(ss.config.clone(), &t.have, t.spread(), ss.shard),
            deadline: None,
        });
        let peer = PeerId(idx);
        let mut offers = std::mem::take(&mut ss.offers);
        if !conn.in_superseed {
            conn.in_superseed = true;
            // Events so far are already in `peer_haves`.
            while conn.peer.poll_have_event().is_some() {}
            selector
                .sel
                .peer_connected(now, peer, conn.peer.peer_haves(), &mut offers);
        } else {
            while let Some(ev) = conn.peer.poll_have_event() {
                match ev {
                    HaveEvent::Have(p) => selector.sel.peer_have(now, peer, p, &mut offers),
                    HaveEvent::Replaced => selector.sel.peer_haves_replaced(
                        now,
                        peer,
                        conn.peer.peer_haves(),
                        &mut offers,
                    ),
                }
            }
        }
        ss.touched(t.id, now);
        apply_offers(cx, stats, t.id, &mut offers);
        ss.offers = offers;
    }

    /// Connection `idx` of torrent `t` closed.
    pub fn closed(
        &mut self,
        now: Instant,
        cx: &mut Conns<'_>,
        stats: &ShardStats,
        idx: u32,
        t: TorrentId,
    ) {
        let ss = self;
        let Some(Some(selector)) = ss.selectors.get_mut(t.0 as usize) else {
            return;
        };
        let mut offers = std::mem::take(&mut ss.offers);
        selector
            .sel
            .peer_disconnected(now, PeerId(idx), &mut offers);
        ss.touched(t, now);
        apply_offers(cx, stats, t, &mut offers);
        ss.offers = offers;
    }

    /// Ticks the selectors whose forward timeouts are due.
    pub fn timers(&mut self, now: Instant, cx: &mut Conns<'_>, stats: &ShardStats) {
        if self.next.is_none_or(|d| d > now) {
            return;
        }
        let mut offers = std::mem::take(&mut self.offers);
        let mut next: Option<Instant> = None;
        for i in 0..self.selectors.len() {
            let Some(s) = self.selectors[i].as_mut() else {
                continue;
            };
            if s.deadline.is_some_and(|d| d <= now) {
                s.sel.tick(now, &mut offers);
                // Never due again at once: a timer is at least 1 ms away.
                s.deadline = s
                    .sel
                    .next_timeout()
                    .map(|d| d.max(now + Duration::from_millis(1)));
                apply_offers(cx, stats, TorrentId(i as u32), &mut offers);
            }
            if let Some(Some(s)) = self.selectors.get(i) {
                next = match (next, s.deadline) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
        }
        self.next = next;
        self.offers = offers;
    }
}

/// Sends each offer (`have`, plus `suggest_piece` for fast peers) to its
/// connection and marks it dirty; drains `offers`.
fn apply_offers(cx: &mut Conns<'_>, stats: &ShardStats, t: TorrentId, offers: &mut Vec<Offer>) {
    for o in offers.drain(..) {
        let idx = o.peer.0;
        let Some(c) = cx.table.at_mut(idx) else {
            continue;
        };
        if c.closing.is_some() || c.torrent.as_ref().is_none_or(|ct| ct.id != t) {
            continue;
        }
        if c.peer.offer_piece(o.piece) {
            ShardStats::add(&stats.superseed_offers, 1);
            if o.suggest && c.peer.suggest_piece(o.piece) {
                ShardStats::add(&stats.superseed_suggests, 1);
            }
            cx.mark_dirty(idx);
        }
    }
}
