//! Which peer sent the bad blocks of a piece that failed its hash check,
//! and banning it after repeated offences (the idea of libtorrent's
//! `smart_ban` plugin; this is our own code).
//!
//! A failed piece only says that *some* block is bad. Two pieces of
//! evidence name the sender:
//!
//! - **Sole sender.** Every block of the failed piece came from one peer:
//!   it is the one (one offence). Its blocks are not recorded, so the next
//!   failure of that piece from it is a second offence.
//! - **Block digests.** Otherwise the digest of each block is recorded with
//!   its sender ([`SmartBan::piece_failed`]). When the piece later passes,
//!   every recorded block whose digest differs from the good block is the
//!   work of its sender (one offence per peer per piece,
//!   [`SmartBan::piece_passed`]). A peer that sends the same block twice
//!   with different bytes is caught at the second failure already.
//!
//! A peer is banned when its offences reach [`SmartBanConfig::ban_after`];
//! the caller closes its connections and refuses it from then on. Digests
//! are SHA-1 (not a CRC: a peer cannot forge a block that collides with the
//! good one), truncated to 64 bits. Memory is bounded: at most
//! [`MAX_RECORDED_BLOCKS`] block records (the oldest pieces' records go
//! first) and [`MAX_TRACKED_PEERS`] offence counters.
//!
//! Peers are named by whatever the caller bans (an IP address in a real
//! client, a connection key in a simulation): `P`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::Hash;

use sha1::{Digest, Sha1};

use super::picker::{FailedPiece, BLOCK_LEN, NO_PEER};
use super::PeerKey;

/// Block records kept (16 bytes each plus the peer).
pub const MAX_RECORDED_BLOCKS: usize = 1 << 16;
/// Peers with offence counts kept.
pub const MAX_TRACKED_PEERS: usize = 1 << 16;

/// Settings.
#[derive(Debug, Clone, Copy)]
pub struct SmartBanConfig {
    /// Offences before a ban. Default 2.
    pub ban_after: u32,
}

impl Default for SmartBanConfig {
    fn default() -> Self {
        SmartBanConfig { ban_after: 2 }
    }
}

fn digest(block: &[u8]) -> u64 {
    let d = Sha1::digest(block);
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_le_bytes(b)
}

/// See the module docs.
#[derive(Debug)]
pub struct SmartBan<P> {
    cfg: SmartBanConfig,
    /// (piece, block) -> (sender, digest of what it sent).
    records: BTreeMap<(u32, u32), Vec<(P, u64)>>,
    /// Pieces in the order their first record was made (for eviction).
    record_order: Vec<u32>,
    recorded: usize,
    offences: HashMap<P, u32>,
    banned: HashSet<P>,
}

impl<P: Copy + Eq + Hash> SmartBan<P> {
    pub fn new(cfg: SmartBanConfig) -> Self {
        SmartBan {
            cfg,
            records: BTreeMap::new(),
            record_order: Vec::new(),
            recorded: 0,
            offences: HashMap::new(),
            banned: HashSet::new(),
        }
    }

    pub fn is_banned(&self, p: &P) -> bool {
        self.banned.contains(p)
    }

    pub fn offences(&self, p: &P) -> u32 {
        self.offences.get(p).copied().unwrap_or(0)
    }

    pub fn banned_count(&self) -> usize {
        self.banned.len()
    }

    /// Records the evidence of a failed piece; `who` names the sender of a
    /// block (`None`: gone, or not a peer we can ban). Returns the peers
    /// banned by this failure.
    pub fn piece_failed(&mut self, f: &FailedPiece, who: impl Fn(PeerKey) -> Option<P>) -> Vec<P> {
        let mut newly = Vec::new();
        let senders: Vec<Option<P>> = f
            .senders
            .iter()
            .map(|&k| if k == NO_PEER { None } else { who(k) })
            .collect();
        let first = senders.first().copied().flatten();
        if let Some(sole) = first.filter(|s| senders.iter().all(|x| *x == Some(*s))) {
            self.offence(sole, &mut newly);
            return newly;
        }
        for (b, (chunk, sender)) in f.data.chunks(BLOCK_LEN as usize).zip(&senders).enumerate() {
            let Some(p) = *sender else { continue };
            let d = digest(chunk);
            let key = (f.piece, b as u32);
            let entry = self.records.entry(key).or_default();
            match entry.iter().find(|(q, _)| *q == p) {
                Some(&(_, old)) if old != d => {
                    // Two different versions of one block from one peer:
                    // at least one of them is bad.
                    self.offence(p, &mut newly);
                }
                Some(_) => {}
                None => {
                    if entry.is_empty() && !self.record_order.contains(&f.piece) {
                        self.record_order.push(f.piece);
                    }
                    entry.push((p, d));
                    self.recorded += 1;
                }
            }
        }
        self.evict();
        newly
    }

    /// Piece `piece` passed with `data`: every peer whose recorded block
    /// differs from the good one committed an offence. Returns the peers
    /// banned by this.
    pub fn piece_passed(&mut self, piece: u32, data: &[u8]) -> Vec<P> {
        let mut newly = Vec::new();
        let keys: Vec<(u32, u32)> = self
            .records
            .range((piece, 0)..=(piece, u32::MAX))
            .map(|(k, _)| *k)
            .collect();
        if keys.is_empty() {
            return newly;
        }
        let mut guilty: Vec<P> = Vec::new();
        for key in keys {
            let Some(entries) = self.records.remove(&key) else {
                continue;
            };
            self.recorded -= entries.len();
            let at = key.1 as usize * BLOCK_LEN as usize;
            let Some(good) = data.get(at..(at + BLOCK_LEN as usize).min(data.len())) else {
                continue;
            };
            let good = digest(good);
            for (p, d) in entries {
                if d != good && !guilty.contains(&p) {
                    guilty.push(p);
                }
            }
        }
        self.record_order.retain(|&p| p != piece);
        for p in guilty {
            self.offence(p, &mut newly);
        }
        newly
    }

    fn offence(&mut self, p: P, newly: &mut Vec<P>) {
        if self.banned.contains(&p) {
            return;
        }
        if !self.offences.contains_key(&p) && self.offences.len() >= MAX_TRACKED_PEERS {
            return;
        }
        let n = self.offences.entry(p).or_default();
        *n += 1;
        if *n >= self.cfg.ban_after.max(1) {
            self.offences.remove(&p);
            self.banned.insert(p);
            newly.push(p);
        }
    }

    fn evict(&mut self) {
        while self.recorded > MAX_RECORDED_BLOCKS && !self.record_order.is_empty() {
            let piece = self.record_order.remove(0);
            let keys: Vec<(u32, u32)> = self
                .records
                .range((piece, 0)..=(piece, u32::MAX))
                .map(|(k, _)| *k)
                .collect();
            for k in keys {
                if let Some(v) = self.records.remove(&k) {
                    self.recorded -= v.len();
                }
            }
        }
    }
}
