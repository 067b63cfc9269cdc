//! Seed-mode choker (sans-IO, injected clock), one instance per shard.
//!
//! # What it decides
//!
//! A seed has a fixed number of upload slots ([`ChokerConfig::upload_slots`],
//! 0 = unlimited). Only *interested* peers hold slots. Every
//! [`ChokerConfig::rechoke_interval`] the choker ranks the interested peers
//! and gives the regular slots to the best ones:
//!
//! - [`ChokerMode::RoundRobin`] (libtorrent's `round_robin` seed choker):
//!   peers keep their slot (status quo) until they have used up their turn,
//!   that is, received [`ChokerConfig::round_robin_quota_bytes`] or held the
//!   slot for [`ChokerConfig::round_robin_quota_time`]. A peer whose turn is
//!   over is ranked below every waiting peer, so it is rotated out only when
//!   someone is waiting, and waiting peers are served longest-waiting first.
//! - [`ChokerMode::FastestUpload`] (libtorrent's `fastest_upload`): peers we
//!   uploaded the most to in the last round keep their slots; a peer that
//!   took nothing last round ranks below the waiting peers.
//!
//! On top of that, every [`ChokerConfig::optimistic_interval`] up to
//! [`ChokerConfig::optimistic_slots`] extra slots go to the interested choked
//! peers that have waited longest (optimistic unchoke), so a newcomer is never
//! starved; when its term ends, the optimistic peer competes for a regular slot
//! with what it achieved.
//!
//! Between ticks the choker is work-conserving: a newly interested peer gets a
//! free slot at once, and a slot freed by a disconnect or by a peer losing
//! interest is refilled at once with the longest-waiting peer. A peer that
//! loses interest is choked at once (its slot is worth more to someone else).
//!
//! # Call order
//!
//! 1. [`Choker::new`] with the shard's start time.
//! 2. For every connection: [`Choker::peer_connected`] once the handshake is
//!    done, then [`Choker::peer_interested`] on `interested` /
//!    `not interested`, [`Choker::record_upload`] for every payload byte sent,
//!    and [`Choker::peer_disconnected`] when it closes.
//! 3. Call [`Choker::tick`] at (or after) [`Choker::next_tick`].
//!
//! Every call that can change who is unchoked appends [`ChokeDecision`]s to a
//! caller-owned `Vec` (chokes before unchokes, so a shard never exceeds its
//! slots even transiently). Decisions are transitions only: an `unchoke` is
//! only ever emitted for a choked peer, a `choke` only for an unchoked one,
//! and nothing is emitted for a disconnected peer.
//!
//! # Cost
//!
//! Memory is one small record per connected peer plus reusable buffers. A
//! tick sorts the interested peers once: O(n log n), no allocation once the
//! buffers have grown. Events are O(1), except freeing a slot with peers
//! waiting, which scans once for the longest waiter: O(n).

use std::cmp::Reverse;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Opaque peer handle chosen by the engine (its connection slot index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u32);

impl std::fmt::Display for PeerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "peer #{}", self.0)
    }
}

/// How regular upload slots are handed out when seeding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChokerMode {
    /// Rotate slots so every interested peer gets a turn (the default: fair,
    /// and best for spreading a torrent through a fleet).
    #[default]
    RoundRobin,
    /// Keep the peers that drain data fastest.
    FastestUpload,
}

impl std::str::FromStr for ChokerMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "round_robin" | "round-robin" => Ok(Self::RoundRobin),
            "fastest_upload" | "fastest-upload" => Ok(Self::FastestUpload),
            other => Err(format!(
                "unknown choker mode {other:?}: use \"round_robin\" or \"fastest_upload\""
            )),
        }
    }
}

/// Choker settings for one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChokerConfig {
    /// Regular upload slots of this shard; 0 = unchoke every interested peer.
    pub upload_slots: u32,
    /// Extra optimistic slots on top of `upload_slots` (default 1; 0 turns
    /// optimistic unchoking off). Unused when `upload_slots` is 0.
    pub optimistic_slots: u32,
    /// Slot ranking policy (default round robin).
    pub mode: ChokerMode,
    /// How often regular slots are re-decided (default 10 s).
    pub rechoke_interval: Duration,
    /// How often the optimistic slots move on (default 30 s).
    pub optimistic_interval: Duration,
    /// Round robin: bytes a peer may receive in one turn (default 16 MiB).
    pub round_robin_quota_bytes: u64,
    /// Round robin: longest a turn lasts, whatever was sent (default 60 s).
    pub round_robin_quota_time: Duration,
}

impl Default for ChokerConfig {
    fn default() -> Self {
        Self {
            upload_slots: 256,
            optimistic_slots: 1,
            mode: ChokerMode::RoundRobin,
            rechoke_interval: Duration::from_secs(10),
            optimistic_interval: Duration::from_secs(30),
            round_robin_quota_bytes: 16 << 20,
            round_robin_quota_time: Duration::from_secs(60),
        }
    }
}

/// One change the engine must apply by sending `choke` or `unchoke`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChokeDecision {
    pub peer: PeerId,
    /// `true`: send `unchoke`; `false`: send `choke`.
    pub unchoke: bool,
    /// The unchoke is an optimistic one (always `false` for chokes).
    pub optimistic: bool,
}

/// Misuse of the choker by its caller (an engine bug, never peer input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChokerError {
    #[error(
        "choker: {0} connected twice; call peer_disconnected before reusing a connection slot"
    )]
    AlreadyConnected(PeerId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Choked,
    Regular,
    Optimistic,
}

#[derive(Debug, Clone)]
struct Peer {
    id: PeerId,
    interested: bool,
    slot: Slot,
    /// Scratch: the slot decided by the running rechoke.
    next: Slot,
    /// Order of the last choke/unchoke/interest change: for a waiting peer,
    /// smaller = waited longer; for an unchoked one, when its turn began.
    seq: u64,
    unchoked_at: Instant,
    uploaded_in_turn: u64,
    uploaded_this_round: u64,
    uploaded_last_round: u64,
}

impl Peer {
    fn is_unchoked(&self) -> bool {
        self.slot != Slot::Choked
    }

    fn is_waiting(&self) -> bool {
        self.interested && self.slot == Slot::Choked
    }
}

/// Sort key: smaller is better (gets a regular slot first).
type RankKey = (u8, u8, Reverse<u64>, u64, PeerId);

/// The per-shard seed choker. See the module docs for policy and call order.
#[derive(Debug)]
pub struct Choker {
    config: ChokerConfig,
    peers: Vec<Peer>,
    index: HashMap<PeerId, usize>,
    /// Reusable ranking buffer: (key, index into `peers`).
    rank: Vec<(RankKey, usize)>,
    next_seq: u64,
    next_rechoke: Instant,
    next_optimistic: Instant,
    regular: usize,
    optimistic: usize,
    waiting: usize,
    optimistic_unchokes_total: u64,
    rechokes_total: u64,
}

impl Choker {
    /// A choker whose first rechoke is one interval after `now`.
    pub fn new(config: ChokerConfig, now: Instant) -> Self {
        let next_rechoke = now + config.rechoke_interval;
        let next_optimistic = now + config.optimistic_interval;
        Self {
            config,
            peers: Vec::new(),
            index: HashMap::new(),
            rank: Vec::new(),
            next_seq: 0,
            next_rechoke,
            next_optimistic,
            regular: 0,
            optimistic: 0,
            waiting: 0,
            optimistic_unchokes_total: 0,
            rechokes_total: 0,
        }
    }

    pub fn config(&self) -> &ChokerConfig {
        &self.config
    }

    /// A peer finished its handshake. It starts choked and not interested.
    pub fn peer_connected(&mut self, now: Instant, id: PeerId) -> Result<(), ChokerError> {
        if self.index.contains_key(&id) {
            return Err(ChokerError::AlreadyConnected(id));
        }
        let seq = self.bump_seq();
        self.index.insert(id, self.peers.len());
        self.peers.push(Peer {
            id,
            interested: false,
            slot: Slot::Choked,
            next: Slot::Choked,
            seq,
            unchoked_at: now,
            uploaded_in_turn: 0,
            uploaded_this_round: 0,
            uploaded_last_round: 0,
        });
        Ok(())
    }

    /// A peer's connection closed. Its slot, if any, is refilled at once; no
    /// decision is emitted for the departed peer itself. Unknown ids are
    /// ignored (the connection may have closed before `peer_connected`).
    pub fn peer_disconnected(&mut self, now: Instant, id: PeerId, out: &mut Vec<ChokeDecision>) {
        let Some(idx) = self.index.remove(&id) else {
            return;
        };
        let peer = self.peers.swap_remove(idx);
        if let Some(moved) = self.peers.get(idx) {
            self.index.insert(moved.id, idx);
        }
        match peer.slot {
            Slot::Regular => self.regular -= 1,
            Slot::Optimistic => self.optimistic -= 1,
            Slot::Choked if peer.interested => self.waiting -= 1,
            Slot::Choked => {}
        }
        self.fill_free_slots(now, out);
    }

    /// The peer sent `interested` (`true`) or `not interested` (`false`).
    /// Unknown ids and repeats are ignored.
    pub fn peer_interested(
        &mut self,
        now: Instant,
        id: PeerId,
        interested: bool,
        out: &mut Vec<ChokeDecision>,
    ) {
        let Some(&idx) = self.index.get(&id) else {
            return;
        };
        let seq = self.bump_seq();
        let Some(peer) = self.peers.get_mut(idx) else {
            return;
        };
        if peer.interested == interested {
            return;
        }
        peer.interested = interested;
        if interested {
            // Waiting starts now: everyone already waiting goes first.
            peer.seq = seq;
            self.waiting += 1;
        } else {
            match peer.slot {
                Slot::Choked => self.waiting -= 1,
                Slot::Regular | Slot::Optimistic => {
                    if peer.slot == Slot::Regular {
                        self.regular -= 1;
                    } else {
                        self.optimistic -= 1;
                    }
                    peer.slot = Slot::Choked;
                    peer.seq = seq;
                    out.push(ChokeDecision {
                        peer: id,
                        unchoke: false,
                        optimistic: false,
                    });
                }
            }
        }
        self.fill_free_slots(now, out);
    }

    /// `bytes` of payload were sent to the peer. Unknown ids are ignored.
    pub fn record_upload(&mut self, id: PeerId, bytes: u64) {
        if let Some(peer) = self.index.get(&id).and_then(|&i| self.peers.get_mut(i)) {
            peer.uploaded_this_round = peer.uploaded_this_round.saturating_add(bytes);
            peer.uploaded_in_turn = peer.uploaded_in_turn.saturating_add(bytes);
        }
    }

    /// When [`Choker::tick`] next has work to do.
    pub fn next_tick(&self) -> Instant {
        self.next_rechoke.min(self.next_optimistic)
    }

    /// Run the rechoke and/or optimistic round if due at `now`; a call before
    /// [`Choker::next_tick`] does nothing. A late call runs each round once
    /// (no catch-up bursts) and schedules the next one interval later.
    pub fn tick(&mut self, now: Instant, out: &mut Vec<ChokeDecision>) {
        let rechoke_due = now >= self.next_rechoke;
        let optimistic_due = now >= self.next_optimistic;
        if !rechoke_due && !optimistic_due {
            return;
        }
        if rechoke_due {
            self.next_rechoke = next_deadline(self.next_rechoke, self.config.rechoke_interval, now);
            for peer in &mut self.peers {
                peer.uploaded_last_round = peer.uploaded_this_round;
                peer.uploaded_this_round = 0;
            }
        }
        if optimistic_due {
            self.next_optimistic =
                next_deadline(self.next_optimistic, self.config.optimistic_interval, now);
        }
        self.rechokes_total += 1;
        self.rechoke(now, optimistic_due, out);
    }

    /// Is this peer unchoked (regular or optimistic)?
    pub fn is_unchoked(&self, id: PeerId) -> bool {
        self.peer(id).is_some_and(Peer::is_unchoked)
    }

    /// Is this peer unchoked through an optimistic slot?
    pub fn is_optimistic(&self, id: PeerId) -> bool {
        self.peer(id).is_some_and(|p| p.slot == Slot::Optimistic)
    }

    pub fn is_connected(&self, id: PeerId) -> bool {
        self.index.contains_key(&id)
    }

    /// Peers currently unchoked (regular + optimistic).
    pub fn unchoked(&self) -> usize {
        self.regular + self.optimistic
    }

    /// Peers currently holding a regular slot.
    pub fn regular_unchoked(&self) -> usize {
        self.regular
    }

    /// Peers currently holding an optimistic slot.
    pub fn optimistic_unchoked(&self) -> usize {
        self.optimistic
    }

    /// Interested peers that are choked, waiting for a slot.
    pub fn waiting(&self) -> usize {
        self.waiting
    }

    pub fn connected(&self) -> usize {
        self.peers.len()
    }

    /// Optimistic unchokes sent since start (a counter).
    pub fn optimistic_unchokes_total(&self) -> u64 {
        self.optimistic_unchokes_total
    }

    /// Rounds run by [`Choker::tick`] since start (a counter).
    pub fn rechokes_total(&self) -> u64 {
        self.rechokes_total
    }

    fn peer(&self, id: PeerId) -> Option<&Peer> {
        self.index.get(&id).and_then(|&i| self.peers.get(i))
    }

    fn bump_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    fn regular_limit(&self) -> usize {
        match self.config.upload_slots {
            0 => usize::MAX,
            n => n as usize,
        }
    }

    fn optimistic_limit(&self) -> usize {
        match self.config.upload_slots {
            0 => 0,
            _ => self.config.optimistic_slots as usize,
        }
    }

    /// Hand free slots to the longest-waiting peers (regular slots first).
    fn fill_free_slots(&mut self, now: Instant, out: &mut Vec<ChokeDecision>) {
        while self.waiting > 0 {
            let slot = if self.regular < self.regular_limit() {
                Slot::Regular
            } else if self.optimistic < self.optimistic_limit() {
                Slot::Optimistic
            } else {
                return;
            };
            let longest = self
                .peers
                .iter()
                .enumerate()
                .filter(|(_, p)| p.is_waiting())
                .min_by_key(|(_, p)| (p.seq, p.id))
                .map(|(i, _)| i);
            let Some(idx) = longest else {
                return;
            };
            self.unchoke(now, idx, slot, out);
        }
    }

    fn unchoke(&mut self, now: Instant, idx: usize, slot: Slot, out: &mut Vec<ChokeDecision>) {
        let seq = self.bump_seq();
        let Some(peer) = self.peers.get_mut(idx) else {
            return;
        };
        debug_assert!(peer.is_waiting(), "only waiting peers are unchoked");
        peer.slot = slot;
        peer.seq = seq;
        peer.unchoked_at = now;
        peer.uploaded_in_turn = 0;
        self.waiting -= 1;
        let optimistic = slot == Slot::Optimistic;
        if optimistic {
            self.optimistic += 1;
            self.optimistic_unchokes_total += 1;
        } else {
            self.regular += 1;
        }
        out.push(ChokeDecision {
            peer: peer.id,
            unchoke: true,
            optimistic,
        });
    }

    fn rank_key(&self, peer: &Peer, now: Instant) -> RankKey {
        let choked = peer.slot == Slot::Choked;
        let rate = if choked { 0 } else { peer.uploaded_last_round };
        let seq = if choked {
            peer.seq
        } else {
            // Among unchoked peers, the most recently unchoked goes first:
            // it has had the least of its turn.
            u64::MAX - peer.seq
        };
        match self.config.mode {
            ChokerMode::RoundRobin => {
                let turn_over = !choked
                    && (peer.uploaded_in_turn >= self.config.round_robin_quota_bytes
                        || now.saturating_duration_since(peer.unchoked_at)
                            >= self.config.round_robin_quota_time);
                (
                    u8::from(turn_over),
                    u8::from(choked),
                    Reverse(rate),
                    seq,
                    peer.id,
                )
            }
            ChokerMode::FastestUpload => {
                // An unchoked peer that took nothing last round ranks below
                // the waiting peers: its slot is wasted on it.
                let idle = !choked && rate == 0;
                (0, u8::from(idle), Reverse(rate), seq, peer.id)
            }
        }
    }

    fn rechoke(&mut self, now: Instant, optimistic_round: bool, out: &mut Vec<ChokeDecision>) {
        let mut rank = std::mem::take(&mut self.rank);
        rank.clear();
        for (idx, peer) in self.peers.iter().enumerate() {
            // An optimistic peer keeps its slot until its term ends.
            let keeps_optimistic = peer.slot == Slot::Optimistic && !optimistic_round;
            if peer.interested && !keeps_optimistic {
                rank.push((self.rank_key(peer, now), idx));
            }
        }
        for peer in &mut self.peers {
            peer.next = if peer.slot == Slot::Optimistic && !optimistic_round {
                Slot::Optimistic
            } else {
                Slot::Choked
            };
        }
        rank.sort_unstable();

        let regular = self.regular_limit().min(rank.len());
        let (winners, losers) = rank.split_at(regular);
        for &(_, idx) in winners {
            if let Some(peer) = self.peers.get_mut(idx) {
                peer.next = Slot::Regular;
            }
        }
        let kept_optimistic = self
            .peers
            .iter()
            .filter(|p| p.next == Slot::Optimistic)
            .count();
        let mut free = self.optimistic_limit().saturating_sub(kept_optimistic);
        // Optimistic slots go to those who were waiting, longest first, then
        // (rather than leave a slot idle) to peers losing their slot now.
        // Among `losers`, waiting peers are already in longest-waiting order:
        // choked peers rank by `seq` alone.
        for pass_waiting in [true, false] {
            for &(_, idx) in losers {
                if free == 0 {
                    break;
                }
                let Some(peer) = self.peers.get_mut(idx) else {
                    continue;
                };
                if peer.next == Slot::Choked && (peer.slot == Slot::Choked) == pass_waiting {
                    peer.next = Slot::Optimistic;
                    free -= 1;
                }
            }
        }
        self.rank = rank;
        self.apply(now, out);
    }

    /// Move every peer from `slot` to `next`, emitting chokes then unchokes.
    fn apply(&mut self, now: Instant, out: &mut Vec<ChokeDecision>) {
        for peer in &mut self.peers {
            if peer.slot != Slot::Choked && peer.next == Slot::Choked {
                self.next_seq += 1;
                peer.seq = self.next_seq;
                out.push(ChokeDecision {
                    peer: peer.id,
                    unchoke: false,
                    optimistic: false,
                });
            }
        }
        for peer in &mut self.peers {
            if peer.slot == Slot::Choked && peer.next != Slot::Choked {
                self.next_seq += 1;
                peer.seq = self.next_seq;
                peer.unchoked_at = now;
                peer.uploaded_in_turn = 0;
                let optimistic = peer.next == Slot::Optimistic;
                if optimistic {
                    self.optimistic_unchokes_total += 1;
                }
                out.push(ChokeDecision {
                    peer: peer.id,
                    unchoke: true,
                    optimistic,
                });
            }
            peer.slot = peer.next;
        }
        self.regular = 0;
        self.optimistic = 0;
        self.waiting = 0;
        for peer in &self.peers {
            match peer.slot {
                Slot::Regular => self.regular += 1,
                Slot::Optimistic => self.optimistic += 1,
                Slot::Choked if peer.interested => self.waiting += 1,
                Slot::Choked => {}
            }
        }
    }
}

/// The next deadline on the `prev + k * interval` grid after `now`, so rounds
/// do not drift when ticks are slightly late, without bursts when very late.
fn next_deadline(prev: Instant, interval: Duration, now: Instant) -> Instant {
    let next = prev + interval;
    if next > now {
        next
    } else {
        now + interval
    }
}
