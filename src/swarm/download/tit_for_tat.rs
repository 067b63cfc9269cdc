//! Who a downloading box uploads to: tit-for-tat choking with an optimistic
//! unchoke (the design document's preferred peers and optimistic
//! unchoking), sans-IO with an injected clock (`now` is passed in).
//!
//! This is the *leecher* choker. A box that only seeds uses
//! [`crate::swarm::choker`], which is per-shard and decides by what we
//! upload; this one decides by what peers give us while we still need data,
//! and falls back to round robin once we are complete.
//!
//! - **Leeching**: [`ChokerConfig::slots`] regular slots go to the
//!   interested peers that sent us the most payload over a rolling window
//!   (the current and the previous rechoke interval, so 10-20 s at the
//!   default [`ChokerConfig::rechoke_interval`] of 10 s); re-evaluated every
//!   rechoke interval. Ties (e.g. at the start, when nobody has sent
//!   anything) are broken randomly.
//! - **Seeding** (the leecher has every piece): regular slots rotate round
//!   robin: interested peers that have waited longest since they were last
//!   choked first, then the ones unchoked most recently. Upload rate is not
//!   used: a seed has nothing to get back, and rotation spreads its upload
//!   over the whole swarm.
//! - **Optimistic unchoke**: one more interested peer, chosen at random
//!   among the choked ones, rotated every [`ChokerConfig::optimistic_interval`]
//!   (30 s): how newcomers with nothing to offer get their first pieces.
//! - **Free slots are filled at once**: a peer that becomes interested while
//!   a slot is free is unchoked immediately (it does not wait up to 10 s for
//!   the next rechoke), and a slot freed by a peer losing interest or
//!   leaving goes to the best waiting peer. Only interested peers hold slots.
//!
//! Call order: [`Choker::new`]; [`Choker::add`] / [`Choker::remove`] per
//! connection (after its handshake); [`Choker::set_interested`] on
//! interested / not interested; [`Choker::record_download`] for payload
//! bytes received; [`Choker::set_seeding`] when the last piece is verified; [`Choker::tick`] at (or after)
//! [`Choker::next_timeout`]. Every call that can change slots appends
//! [`ChokeChange`]s to `out`; the caller sends the choke / unchoke messages.
//!
//! Not here: anti-snubbing, upload-slot auto-sizing, per-peer rate
//! estimates beyond the window, preferring new peers for the optimistic slot.

use std::cmp::Reverse;
use std::time::{Duration, Instant};

use super::rng::Rng;
use super::PeerKey;

/// Choker settings.
#[derive(Debug, Clone)]
pub struct ChokerConfig {
    /// Regular (tit-for-tat / round robin) upload slots. Default 4.
    pub slots: usize,
    /// One optimistic unchoke on top of `slots`. Default true.
    pub optimistic: bool,
    /// How often regular slots are re-decided. Default 10 s.
    pub rechoke_interval: Duration,
    /// How often the optimistic unchoke moves on. Default 30 s.
    pub optimistic_interval: Duration,
}

impl Default for ChokerConfig {
    fn default() -> Self {
        ChokerConfig {
            slots: 4,
            optimistic: true,
            rechoke_interval: Duration::from_secs(10),
            optimistic_interval: Duration::from_secs(30),
        }
    }
}

/// A decision to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChokeChange {
    Unchoke(PeerKey),
    Choke(PeerKey),
}

#[derive(Debug, Clone)]
struct Entry {
    key: PeerKey,
    interested: bool,
    unchoked: bool,
    /// When `unchoked` last changed (or the peer was added).
    since: Instant,
    /// Payload received from the peer: previous and current interval.
    down: [u64; 2],
}

impl Entry {
    fn down_score(&self) -> u64 {
        self.down[0] + self.down[1]
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct Choker {
    cfg: ChokerConfig,
    entries: Vec<Entry>,
    optimistic: Option<PeerKey>,
    seeding: bool,
    next_rechoke: Instant,
    next_optimistic: Instant,
    rng: Rng,
}

impl Choker {
    pub fn new(now: Instant, cfg: ChokerConfig, seed: u64) -> Self {
        Choker {
            next_rechoke: now + cfg.rechoke_interval,
            next_optimistic: now + cfg.optimistic_interval,
            cfg,
            entries: Vec::new(),
            optimistic: None,
            seeding: false,
            rng: Rng::new(seed),
        }
    }

    fn find(&self, key: PeerKey) -> Option<usize> {
        self.entries.iter().position(|e| e.key == key)
    }

    /// A peer finished its handshake (choked, not interested).
    pub fn add(&mut self, now: Instant, key: PeerKey) {
        if self.find(key).is_none() {
            self.entries.push(Entry {
                key,
                interested: false,
                unchoked: false,
                since: now,
                down: [0; 2],
            });
        }
    }

    /// A peer left; its slot goes to the best waiting peer.
    pub fn remove(&mut self, now: Instant, key: PeerKey, out: &mut Vec<ChokeChange>) {
        let Some(i) = self.find(key) else { return };
        let e = self.entries.swap_remove(i);
        if self.optimistic == Some(key) {
            self.optimistic = None;
        }
        if e.unchoked {
            self.fill_free(now, out);
        }
    }

    pub fn is_unchoked(&self, key: PeerKey) -> bool {
        self.find(key).is_some_and(|i| self.entries[i].unchoked)
    }

    pub fn unchoked_count(&self) -> usize {
        self.entries.iter().filter(|e| e.unchoked).count()
    }

    pub fn optimistic(&self) -> Option<PeerKey> {
        self.optimistic
    }

    pub fn is_seeding(&self) -> bool {
        self.seeding
    }

    pub fn set_interested(
        &mut self,
        now: Instant,
        key: PeerKey,
        interested: bool,
        out: &mut Vec<ChokeChange>,
    ) {
        let Some(i) = self.find(key) else { return };
        if self.entries[i].interested == interested {
            return;
        }
        self.entries[i].interested = interested;
        if !interested && self.entries[i].unchoked {
            self.set(now, i, false, out);
            if self.optimistic == Some(key) {
                self.optimistic = None;
            }
        }
        self.fill_free(now, out);
    }

    pub fn record_download(&mut self, key: PeerKey, bytes: u64) {
        if let Some(i) = self.find(key) {
            self.entries[i].down[1] += bytes;
        }
    }

    /// Switches to seed mode (round robin) and rechokes at once.
    pub fn set_seeding(&mut self, now: Instant, seeding: bool, out: &mut Vec<ChokeChange>) {
        if self.seeding != seeding {
            self.seeding = seeding;
            self.rechoke(now, false, out);
        }
    }

    pub fn next_timeout(&self) -> Instant {
        self.next_rechoke.min(self.next_optimistic)
    }

    pub fn tick(&mut self, now: Instant, out: &mut Vec<ChokeChange>) {
        let rotate = now >= self.next_optimistic;
        if rotate {
            self.next_optimistic = now + self.cfg.optimistic_interval;
        }
        if now >= self.next_rechoke || rotate {
            self.rechoke(now, rotate, out);
            for e in &mut self.entries {
                e.down = [e.down[1], 0];
            }
            self.next_rechoke = now + self.cfg.rechoke_interval;
        }
    }

    fn set(&mut self, now: Instant, i: usize, unchoke: bool, out: &mut Vec<ChokeChange>) {
        let e = &mut self.entries[i];
        if e.unchoked != unchoke {
            e.unchoked = unchoke;
            e.since = now;
            out.push(if unchoke {
                ChokeChange::Unchoke(e.key)
            } else {
                ChokeChange::Choke(e.key)
            });
        }
    }

    /// Regular candidates in preference order (indices into `entries`).
    fn ranked(&mut self, exclude: Option<PeerKey>) -> Vec<usize> {
        let mut idx: Vec<(usize, u64)> = self
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.interested && Some(e.key) != exclude)
            .map(|(i, _)| (i, self.rng.next_u64()))
            .collect();
        let entries = &self.entries;
        if self.seeding {
            // Choked peers that waited longest first, then the unchoked ones,
            // the most recently unchoked first.
            let (mut order, mut held): (Vec<_>, Vec<_>) =
                idx.into_iter().partition(|&(i, _)| !entries[i].unchoked);
            order.sort_by_key(|&(i, r)| (entries[i].since, r));
            held.sort_by_key(|&(i, r)| (Reverse(entries[i].since), r));
            order.extend(held);
            idx = order;
        } else {
            idx.sort_by_key(|&(i, r)| (Reverse(entries[i].down_score()), r));
        }
        idx.into_iter().map(|(i, _)| i).collect()
    }

    fn rechoke(&mut self, now: Instant, rotate: bool, out: &mut Vec<ChokeChange>) {
        let keep_opt = self
            .optimistic
            .filter(|&k| !rotate && self.find(k).is_some_and(|i| self.entries[i].interested));
        let regular: Vec<usize> = self
            .ranked(keep_opt)
            .into_iter()
            .take(self.cfg.slots)
            .collect();
        let mut opt = keep_opt;
        if self.cfg.optimistic && opt.is_none() {
            let old = self.optimistic;
            let pool: Vec<PeerKey> = self
                .entries
                .iter()
                .enumerate()
                .filter(|(i, e)| e.interested && !regular.contains(i))
                .map(|(_, e)| e.key)
                .collect();
            let fresh: Vec<PeerKey> = pool.iter().copied().filter(|&k| Some(k) != old).collect();
            let from = if fresh.is_empty() { &pool } else { &fresh };
            if !from.is_empty() {
                opt = Some(from[self.rng.below(from.len() as u64) as usize]);
            }
        }
        self.optimistic = opt;
        for i in 0..self.entries.len() {
            let want = regular.contains(&i) || Some(self.entries[i].key) == opt;
            self.set(now, i, want, out);
        }
    }

    /// Gives free regular slots (and a free optimistic slot) to waiting
    /// interested peers.
    fn fill_free(&mut self, now: Instant, out: &mut Vec<ChokeChange>) {
        let opt = self.optimistic;
        let regular_used = self
            .entries
            .iter()
            .filter(|e| e.unchoked && Some(e.key) != opt)
            .count();
        let free = self.cfg.slots.saturating_sub(regular_used);
        if free > 0 {
            let waiting: Vec<usize> = self
                .ranked(opt)
                .into_iter()
                .filter(|&i| !self.entries[i].unchoked)
                .take(free)
                .collect();
            for i in waiting {
                self.set(now, i, true, out);
            }
        }
        if self.cfg.optimistic && self.optimistic.is_none() {
            let pool: Vec<usize> = (0..self.entries.len())
                .filter(|&i| self.entries[i].interested && !self.entries[i].unchoked)
                .collect();
            if !pool.is_empty() {
                let i = pool[self.rng.below(pool.len() as u64) as usize];
                self.optimistic = Some(self.entries[i].key);
                self.set(now, i, true, out);
            }
        }
    }
}
