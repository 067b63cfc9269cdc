//! A shard's policies wired to its connections, sans-IO: the choker (who
//! is unchoked), the super-seed selectors (which piece each peer is
//! offered) and the upload cap (who may send how much now).
//!
//! The driver (`engine::shard`) tells [`Policies`] what happened, with the
//! time, through `handle_*` calls: a connection's input was handled
//! ([`Policies::handle_input`]), it closes ([`Policies::handle_close`]),
//! its torrent is being taken out ([`Policies::handle_drain`]), a send
//! completed ([`Policies::handle_sent`]), or the time of
//! [`Policies::poll_timeout`] came ([`Policies::handle_timers`]). Each call
//! updates the connections' [`crate::wire::PeerState`]s (choke, unchoke,
//! `have` offers) and puts the connections that now have something to
//! send on [`Conns::dirty`]; the driver flushes those. Nothing here owns a
//! socket, a buffer or a clock, so every rule is tested on a virtual clock
//! (`tests/engine_policies.rs`).
//!
//! What is box-wide is so by construction: the super-seed selectors of
//! every shard share their torrent's spread counts, and the upload cap's
//! credit comes from token pools every shard draws from (see
//! [`super::egress`]); the choker's upload slots are the box's split over
//! shards (`ServeConfig::choker_config`).

use std::sync::Arc;
use std::time::Instant;

use crate::metrics::ShardHistograms;
use crate::swarm::choker::{ChokeDecision, Choker, ChokerConfig, PeerId};
use crate::swarm::ratelimit::{TokenPool, MAX_BLOCK_MESSAGE};
use crate::swarm::superseed::SuperSeedConfig;

use super::super::catalog::Catalog;
use super::super::stats::ShardStats;
use super::conn::{Conn, Drain};
use super::egress::Egress;
use super::superseed::SuperSeeding;
use super::table::ConnTable;

/// The settings of one shard's policies.
#[derive(Clone, Debug)]
pub struct PolicyConfig {
    /// This shard's choker: its share of the box's upload slots.
    pub choker: ChokerConfig,
    pub super_seed: SuperSeedConfig,
    /// The box-wide upload cap (`None`: uncapped); per-torrent caps come
    /// from the catalogue.
    pub box_pool: Option<Arc<TokenPool>>,
    /// This shard's index and the shard count (the super-seed selectors
    /// salt their scans with the first and poll other shards' spread when
    /// the second is above one).
    pub shard: usize,
    pub shards: usize,
}

/// What a policy call works on: the shard's connection table, its list of
/// connections with something to send, and its latency histograms.
pub struct Conns<'a> {
    pub table: &'a mut ConnTable<Conn>,
    /// Connections to flush, each at most once (see [`Conn::dirty`]).
    pub dirty: &'a mut Vec<u32>,
    pub hist: &'a mut ShardHistograms,
}

impl Conns<'_> {
    /// Connection `idx` has something to send: put it on the dirty list
    /// unless it is there.
    pub fn mark_dirty(&mut self, idx: u32) {
        if let Some(c) = self.table.at_mut(idx) {
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(idx);
            }
        }
    }
}

/// A shard's choker, super-seed selectors and upload-cap limiters.
pub struct Policies {
    choker: Choker,
    superseed: SuperSeeding,
    /// `None` while nothing in the catalogue is capped.
    egress: Option<Egress>,
    box_pool: Option<Arc<TokenPool>>,
    stats: Arc<ShardStats>,
    /// Scratch, reused.
    decisions: Vec<ChokeDecision>,
    woken: Vec<u32>,
}

impl Policies {
    pub fn new(cfg: PolicyConfig, now: Instant, catalog: &Catalog, stats: Arc<ShardStats>) -> Self {
        Self {
            choker: Choker::new(cfg.choker, now),
            superseed: SuperSeeding::new(
                cfg.super_seed,
                catalog.id_bound() as usize,
                cfg.shard,
                cfg.shards,
            ),
            egress: Egress::new(now, cfg.box_pool.clone(), catalog),
            box_pool: cfg.box_pool,
            stats,
            decisions: Vec::new(),
            woken: Vec::new(),
        }
    }

    /// The shard took a new catalogue: torrents added (room for their
    /// selectors, their caps) and removed (their selectors dropped).
    pub fn follow(&mut self, now: Instant, catalog: &Catalog) {
        self.superseed.follow(catalog);
        match self.egress.as_mut() {
            Some(e) => e.follow(now, catalog),
            None => self.egress = Egress::new(now, self.box_pool.clone(), catalog),
        }
    }

    /// The earliest time [`Self::handle_timers`] has something to do: a
    /// rechoke, a super-seed forward timeout, tokens for a connection
    /// waiting on the upload cap.
    pub fn poll_timeout(&self, now: Instant) -> Instant {
        let mut at = self.choker.next_tick();
        if let Some(d) = self.superseed.next_deadline() {
            at = at.min(d);
        }
        if let Some(d) = self.egress.as_ref().and_then(|e| e.next_ready(now)) {
            at = at.min(d);
        }
        at
    }

    /// Whatever is due at `now`: tokens to connections waiting on the
    /// upload cap, super-seed forward timeouts, the rechoke.
    pub fn handle_timers(&mut self, now: Instant, cx: &mut Conns<'_>) {
        if let Some(e) = self.egress.as_mut() {
            let mut woken = std::mem::take(&mut self.woken);
            woken.clear();
            e.poll(now, cx.table, &self.stats, &mut woken);
            for &idx in &woken {
                cx.mark_dirty(idx);
            }
            self.woken = woken;
        }
        self.superseed.timers(now, cx, &self.stats);
        if now >= self.choker.next_tick() {
            let mut out = std::mem::take(&mut self.decisions);
            out.clear();
            self.choker.tick(now, &mut out);
            self.apply_decisions(now, cx, &out);
            self.decisions = out;
        }
    }

    /// After connection `idx`'s input was handled by its `PeerState`:
    /// attach the torrent its handshake named (and its upload-cap credit),
    /// register it with the choker and its super-seed selector once, pass
    /// on interest changes and have events, and mark it dirty (its input
    /// may have queued replies).
    pub fn handle_input(&mut self, now: Instant, catalog: &Catalog, cx: &mut Conns<'_>, idx: u32) {
        let Some(conn) = cx.table.at_mut(idx) else {
            return;
        };
        if conn.torrent.is_none() {
            if let Some(id) = conn.peer.torrent() {
                conn.torrent = catalog.get(id).cloned();
                if let Some(t) = &conn.torrent {
                    t.count_peer(true);
                }
                conn.egress = self.egress.as_ref().and_then(|e| e.attach(now, id));
            }
        }
        if conn.closing.is_some() {
            return;
        }
        if conn.drain.is_some() {
            // Being drained: no choker, no offers; its replies (served in
            // the grace, rejected after) still go out.
            cx.mark_dirty(idx);
            return;
        }
        if conn.torrent.is_some() && conn.peer.is_super_seeding() {
            // Offers go out with the handshake reply, in this loop turn.
            self.superseed.input(now, cx, &self.stats, idx);
        }
        let Some(conn) = cx.table.at_mut(idx) else {
            return;
        };
        let mut out = std::mem::take(&mut self.decisions);
        out.clear();
        if conn.torrent.is_some() && !conn.in_choker {
            conn.in_choker = self.choker.peer_connected(now, PeerId(idx)).is_ok();
        }
        let interested = conn.peer.is_interested();
        if conn.in_choker && interested != conn.interested {
            conn.interested = interested;
            self.choker
                .peer_interested(now, PeerId(idx), interested, &mut out);
        }
        cx.mark_dirty(idx);
        self.apply_decisions(now, cx, &out);
        self.decisions = out;
    }

    /// Connection `idx` is closing: it leaves its super-seed selector (its
    /// offers go to others), the upload-cap queues (its credit goes back)
    /// and the choker (its slot goes to a waiting peer).
    pub fn handle_close(&mut self, now: Instant, cx: &mut Conns<'_>, idx: u32) {
        self.leave(now, cx, idx);
    }

    /// Connection `idx`'s torrent is being taken out and its grace is
    /// over: choke it and take it out of every policy, like a close, but
    /// keep the connection until what it was sent is out.
    pub fn handle_drain(&mut self, now: Instant, cx: &mut Conns<'_>, idx: u32) {
        let Some(c) = cx.table.at_mut(idx) else {
            return;
        };
        c.drain = Some(Drain::Choked);
        if !c.peer.is_choked() {
            c.peer.set_choked(now, true);
            self.stats
                .unchoked
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.leave(now, cx, idx);
        cx.mark_dirty(idx);
    }

    /// A send of connection `idx` carried `payload` bytes of blocks (the
    /// choker ranks peers by what they took).
    pub fn handle_sent(&mut self, idx: u32, payload: u64) {
        if payload > 0 {
            self.choker.record_upload(PeerId(idx), payload);
        }
    }

    /// Connection `idx` has nothing left to pay for (choked, closing, its
    /// queue empty): its unused credit goes back to the pools and it leaves
    /// the limiters' queues.
    pub fn release_credit(&mut self, now: Instant, table: &mut ConnTable<Conn>, idx: u32) {
        if let Some(c) = table.at_mut(idx) {
            self.release_credit_of(now, idx, c);
        }
    }

    fn release_credit_of(&mut self, now: Instant, idx: u32, c: &mut Conn) {
        let (Some(e), Some(ce), Some(t)) =
            (self.egress.as_mut(), c.egress.as_mut(), c.torrent.as_ref())
        else {
            return;
        };
        e.release(now, idx, t.id, ce, &self.stats);
    }

    /// Before a send of `c` (slot `idx`) is filled: when it has blocks
    /// waiting and cannot pay for one, it asks for credit for a batch (at
    /// most `batch` blocks, what one send carries), granted at once, or it
    /// waits for the limiter and sends control bytes only. Uncapped
    /// connections skip all of it.
    pub fn credit_for_send(&mut self, now: Instant, idx: u32, c: &mut Conn, batch: usize) {
        let (Some(e), Some(ce), Some(t)) =
            (self.egress.as_mut(), c.egress.as_mut(), c.torrent.as_ref())
        else {
            return;
        };
        let blocks = c.pipe.blocks_waiting(&c.peer);
        if blocks > 0 && ce.wants_credit() {
            let want = blocks.min(batch) as u64 * MAX_BLOCK_MESSAGE;
            e.acquire(now, idx, t.id, ce, want, &self.stats);
        }
    }

    /// After a send of `c` was filled: with nothing left to pay for, its
    /// unused credit goes back to the pools.
    pub fn credit_after_send(&mut self, now: Instant, idx: u32, c: &mut Conn) {
        let has_credit = c.egress.as_ref().is_some_and(|ce| ce.has_credit());
        if has_credit && c.pipe.blocks_waiting(&c.peer) == 0 {
            self.release_credit_of(now, idx, c);
        }
    }

    /// The choker, to look at (tests, metrics).
    pub fn choker(&self) -> &Choker {
        &self.choker
    }

    fn leave(&mut self, now: Instant, cx: &mut Conns<'_>, idx: u32) {
        let Some(c) = cx.table.at_mut(idx) else {
            return;
        };
        let superseed = std::mem::take(&mut c.in_superseed);
        let in_choker = std::mem::take(&mut c.in_choker);
        let t = c.torrent.as_ref().map(|t| t.id);
        if let (true, Some(t)) = (superseed, t) {
            self.superseed.closed(now, cx, &self.stats, idx, t);
        }
        self.release_credit(now, cx.table, idx);
        if in_choker {
            let mut out = std::mem::take(&mut self.decisions);
            out.clear();
            self.choker.peer_disconnected(now, PeerId(idx), &mut out);
            self.apply_decisions(now, cx, &out);
            self.decisions = out;
        }
    }

    fn apply_decisions(&mut self, now: Instant, cx: &mut Conns<'_>, decisions: &[ChokeDecision]) {
        for d in decisions {
            let idx = d.peer.0;
            let Some(c) = cx.table.at_mut(idx) else {
                continue;
            };
            if c.closing.is_some() {
                continue;
            }
            c.peer.set_choked(now, !d.unchoke);
            if d.unchoke && !c.unchoke_recorded {
                if let Some(hs) = c.peer.handshake_completed_at() {
                    c.unchoke_recorded = true;
                    cx.hist
                        .record_handshake_to_unchoke(now.saturating_duration_since(hs));
                }
            }
            if d.unchoke {
                self.stats
                    .unchoked
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if d.optimistic {
                    ShardStats::add(&self.stats.optimistic_unchokes, 1);
                }
            } else {
                self.stats
                    .unchoked
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                // Its queue is gone: it needs no tokens now.
                self.release_credit(now, cx.table, idx);
            }
            cx.mark_dirty(idx);
        }
    }
}
