//! Sans-IO gossip of blocks, checkpoints and equivocation proofs between
//! boxes.
//!
//! Two mechanisms, both driven from here, neither needing a central step:
//! - **rumour push**: a box that appends a block (or learns an equivocation)
//!   sends it to `fanout` random peers at once; a receiver that appends it
//!   pushes it on;
//! - **anti-entropy pull**: every tick a box asks one random peer for its
//!   checkpoint; if the peer is ahead it asks for the missing blocks; if a
//!   block does not link to its head it asks for the block below, so a fork
//!   always surfaces as two signed blocks of one height (an equivocation).
//!
//! Call order: [`Gossip::new`] -> per input [`Gossip::handle`]`(now, peer,
//! msg, ledger)` and per period [`Gossip::tick`]`(now, ledger)` -> drain
//! [`Gossip::poll`] for `(peer, msg)` to send. Peers are indices into the
//! list the driver owns. A peer sending more than `flood_limit` messages in
//! one `flood_window` is refused (`RejectReason::Flood`).

use std::collections::{HashMap, VecDeque};
use std::hash::Hash as StdHash;

use super::state::{Ledger, Outcome, Reject, RejectReason};

/// One gossip message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    GetCheckpoint,
    Checkpoint(Vec<u8>),
    GetBlocks { from: u64, to: u64 },
    Block(Vec<u8>),
    Equivocation(Vec<u8>),
}

/// Gossip settings.
#[derive(Debug, Clone, Copy)]
pub struct GossipConfig {
    /// Peers a new block or equivocation is pushed to.
    pub fanout: usize,
    /// Most blocks sent for one `GetBlocks`.
    pub max_blocks_per_request: u64,
    /// Most messages accepted from one peer per window.
    pub flood_limit: u32,
    /// Length of the flood window, in the clock's unit (seconds).
    pub flood_window: u64,
}

impl Default for GossipConfig {
    fn default() -> Self {
        Self {
            fanout: 3,
            max_blocks_per_request: 64,
            flood_limit: 512,
            flood_window: 10,
        }
    }
}

/// A fixed-window message counter per key.
#[derive(Debug)]
pub struct FloodLimit<K> {
    seen: HashMap<K, (u64, u32)>,
}

impl<K> Default for FloodLimit<K> {
    fn default() -> Self {
        Self {
            seen: HashMap::new(),
        }
    }
}

impl<K: Eq + StdHash + Clone> FloodLimit<K> {
    /// True when `key` may send one more message at `now`.
    pub fn allow(&mut self, key: &K, now: u64, limit: u32, window: u64) -> bool {
        if self.seen.len() > 65_536 {
            self.seen
                .retain(|_, (start, _)| now < start.saturating_add(window));
        }
        let e = self.seen.entry(key.clone()).or_insert((now, 0));
        if now >= e.0.saturating_add(window) {
            *e = (now, 0);
        }
        e.1 += 1;
        e.1 <= limit
    }
}

/// Small deterministic generator (xorshift64*), so simulations replay.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }
    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as usize % n.max(1)
    }
}

/// The gossip state of one box.
#[derive(Debug)]
pub struct Gossip {
    config: GossipConfig,
    peers: usize,
    rng: Rng,
    out: VecDeque<(usize, Msg)>,
    flood: FloodLimit<usize>,
    /// Messages handled / sent, for the figures.
    pub received: u64,
    pub sent: u64,
}

impl Gossip {
    pub fn new(config: GossipConfig, peers: usize, seed: u64) -> Self {
        Self {
            config,
            peers,
            rng: Rng::new(seed),
            out: VecDeque::new(),
            flood: FloodLimit::default(),
            received: 0,
            sent: 0,
        }
    }

    pub fn set_peers(&mut self, peers: usize) {
        self.peers = peers;
    }

    /// The next message to send.
    pub fn poll(&mut self) -> Option<(usize, Msg)> {
        let m = self.out.pop_front();
        if m.is_some() {
            self.sent += 1;
        }
        m
    }

    fn send(&mut self, peer: usize, msg: Msg) {
        self.out.push_back((peer, msg));
    }

    /// Push `msg` to `fanout` distinct random peers other than `except`.
    fn push(&mut self, msg: Msg, except: Option<usize>) {
        let candidates = self.peers - usize::from(except.is_some_and(|e| e < self.peers));
        let want = self.config.fanout.min(candidates);
        let mut chosen: Vec<usize> = Vec::with_capacity(want);
        while chosen.len() < want {
            let p = self.rng.below(self.peers);
            if Some(p) != except && !chosen.contains(&p) {
                chosen.push(p);
            }
        }
        for p in chosen {
            self.send(p, msg.clone());
        }
    }

    /// Announce a block appended locally (published here, or read from disk).
    pub fn announce_block(&mut self, ledger: &Ledger, height: u64) {
        if let Some(b) = ledger.block(height) {
            self.push(Msg::Block(b.encode().into_bytes()), None);
        }
    }

    /// Ask `peer` for its checkpoint now (it told us it is ahead).
    pub fn pull(&mut self, peer: usize) {
        if peer < self.peers {
            self.send(peer, Msg::GetCheckpoint);
        }
    }

    /// Anti-entropy: ask one random peer for its checkpoint.
    pub fn tick(&mut self, _now: u64) {
        if self.peers > 0 {
            let p = self.rng.below(self.peers);
            self.send(p, Msg::GetCheckpoint);
        }
    }

    /// One message from `peer`. Returns the ledger outcome, if any.
    pub fn handle(
        &mut self,
        now: u64,
        peer: usize,
        msg: Msg,
        ledger: &mut Ledger,
    ) -> Result<Option<Outcome>, Reject> {
        self.received += 1;
        let (limit, window) = (self.config.flood_limit, self.config.flood_window);
        // Peers outside the list (HTTP pushes) are limited by the driver.
        if peer < self.peers && !self.flood.allow(&peer, now, limit, window) {
            return Err(ledger.count(Reject::new(
                RejectReason::Flood,
                format!("peer {peer} sent more than {limit} messages in {window} s"),
            )));
        }
        match msg {
            Msg::GetCheckpoint => {
                if let Some(n) = ledger.checkpoint_note() {
                    self.send(peer, Msg::Checkpoint(n.encode().into_bytes()));
                }
                if let Some(e) = ledger.equivocations().first() {
                    self.send(peer, Msg::Equivocation(e.encode().into_bytes()));
                }
                Ok(None)
            }
            Msg::GetBlocks { from, to } => {
                let to = to.min(from.saturating_add(self.config.max_blocks_per_request - 1));
                for h in from.max(1)..=to.min(ledger.height()) {
                    if let Some(b) = ledger.block(h) {
                        self.send(peer, Msg::Block(b.encode().into_bytes()));
                    }
                }
                Ok(None)
            }
            Msg::Checkpoint(bytes) => {
                let o = ledger.offer_checkpoint(&bytes)?;
                self.after(peer, &o, ledger);
                Ok(Some(o))
            }
            Msg::Block(bytes) => match ledger.offer_block(&bytes) {
                Ok(o) => {
                    self.after(peer, &o, ledger);
                    Ok(Some(o))
                }
                Err(r) => {
                    match r.reason {
                        RejectReason::Gap => {
                            let to = super::Block::parse(&bytes).map_or(0, |b| b.header.height);
                            self.send(
                                peer,
                                Msg::GetBlocks {
                                    from: ledger.height() + 1,
                                    to,
                                },
                            );
                        }
                        RejectReason::NotExtendingHead => {
                            // The peer's chain differs below this block:
                            // fetch its block at our head's height.
                            let h = ledger.height();
                            self.send(peer, Msg::GetBlocks { from: h, to: h });
                        }
                        _ => {}
                    }
                    Err(r)
                }
            },
            Msg::Equivocation(bytes) => {
                let o = ledger.offer_equivocation(&bytes)?;
                self.after(peer, &o, ledger);
                Ok(Some(o))
            }
        }
    }

    fn after(&mut self, peer: usize, o: &Outcome, ledger: &Ledger) {
        match o {
            Outcome::Appended { height } => {
                if let Some(b) = ledger.block(*height) {
                    self.push(Msg::Block(b.encode().into_bytes()), Some(peer));
                }
            }
            Outcome::Behind { from, to } => self.send(
                peer,
                Msg::GetBlocks {
                    from: *from,
                    to: *to,
                },
            ),
            Outcome::Equivocation(e) => {
                self.push(Msg::Equivocation(e.encode().into_bytes()), Some(peer))
            }
            Outcome::Known { .. } => {}
        }
    }
}
