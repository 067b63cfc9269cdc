//! The embedded tracker's peer table, sans-IO: announces and scrapes in,
//! peer lists and counts out; `now` is passed in.
//!
//! Bounded: at most [`SwarmConfig::max_peers_per_swarm`] peers per swarm
//! (later newcomers are answered but not recorded) and at most
//! [`SwarmConfig::max_unknown_swarms`] swarms for torrents we do not serve
//! (only when `allow_unknown`). A peer expires [`SwarmConfig::peer_timeout`]
//! after its last announce. The seed itself is not in the table: the I/O
//! layer passes its address per request (it depends on which local address
//! the client reached) and it is counted as one seeder of every known swarm.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::proto::{Event, InfoHash, ScrapeStats};

/// Limits and timings of the embedded tracker.
#[derive(Debug, Clone)]
pub struct SwarmConfig {
    /// `interval` told to clients. Default 1800 s.
    pub interval: Duration,
    /// `min interval` told to clients. Default 60 s.
    pub min_interval: Duration,
    /// A peer silent this long is dropped. Default 2 x `interval`.
    pub peer_timeout: Duration,
    /// Peers returned when the client does not say. Default 50.
    pub default_numwant: u32,
    /// Most peers returned. Default 200.
    pub max_numwant: u32,
    /// Peers recorded per swarm. Default 10,000 (~60 bytes each).
    pub max_peers_per_swarm: usize,
    /// Track torrents we do not serve (an open tracker). Default false:
    /// clients with our `.torrent` or magnet only ask for our hashes.
    pub allow_unknown: bool,
    /// Swarms of unknown torrents, when `allow_unknown`. Default 1,000.
    pub max_unknown_swarms: usize,
    /// Count the seed as a seeder of every known swarm. Default true.
    pub count_seed: bool,
}

impl Default for SwarmConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1800),
            min_interval: Duration::from_secs(60),
            peer_timeout: Duration::from_secs(3600),
            default_numwant: 50,
            max_numwant: 200,
            max_peers_per_swarm: 10_000,
            allow_unknown: false,
            max_unknown_swarms: 1000,
            count_seed: true,
        }
    }
}

/// Which addresses a response can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// HTTP: `peers` and `peers6`.
    Any,
    /// UDP over IPv4.
    V4,
    /// UDP over IPv6.
    V6,
}

impl Family {
    fn admits(self, addr: &SocketAddr) -> bool {
        match self {
            Family::Any => true,
            Family::V4 => addr.is_ipv4(),
            Family::V6 => addr.is_ipv6(),
        }
    }
}

/// One announce, as the table needs it.
#[derive(Debug, Clone, Copy)]
pub struct Announce {
    pub info_hash: InfoHash,
    /// Where the peer listens: its source IP and announced port.
    pub peer: SocketAddr,
    pub left: u64,
    pub event: Event,
    pub numwant: Option<u32>,
    pub family: Family,
    /// The seed's address as this client should see it, listed first.
    pub seed: Option<SocketAddr>,
}

/// The answer to an announce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub peers: Vec<SocketAddr>,
    pub complete: u32,
    pub incomplete: u32,
}

/// Why an announce is refused (sent as failure reason / UDP error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("unknown torrent: this tracker only tracks what this ringseed serves")]
    UnknownTorrent,
    #[error("tracker full: too many torrents")]
    Full,
}

#[derive(Debug, Clone, Copy)]
struct Peer {
    addr: SocketAddr,
    seeder: bool,
    expires: Instant,
}

#[derive(Debug, Default)]
struct Swarm {
    known: bool,
    /// List the seed in this swarm's peer lists (see [`Swarms::add_known_unlisted`]).
    list_seed: bool,
    peers: Vec<Peer>,
    index: HashMap<SocketAddr, usize>,
    seeders: u32,
    completed: u32,
}

impl Swarm {
    fn remove(&mut self, addr: &SocketAddr) -> Option<Peer> {
        let i = self.index.remove(addr)?;
        let peer = self.peers.swap_remove(i);
        if let Some(moved) = self.peers.get(i) {
            self.index.insert(moved.addr, i);
        }
        if peer.seeder {
            self.seeders -= 1;
        }
        Some(peer)
    }
}

/// All swarms of the embedded tracker.
#[derive(Debug)]
pub struct Swarms {
    cfg: SwarmConfig,
    swarms: HashMap<InfoHash, Swarm>,
    unknown: usize,
    rng: u64,
}

impl Swarms {
    pub fn new(cfg: SwarmConfig) -> Self {
        Self {
            cfg,
            swarms: HashMap::new(),
            unknown: 0,
            rng: 0x9E37_79B9_7F4A_7C15,
        }
    }

    pub fn config(&self) -> &SwarmConfig {
        &self.cfg
    }

    /// Track a torrent we serve (v1 hash or truncated v2 hash).
    pub fn add_known(&mut self, hash: InfoHash) {
        self.add(hash, true);
    }

    /// A torrent we no longer serve: its swarm and peers are forgotten.
    pub fn remove_known(&mut self, hash: &InfoHash) {
        if self.swarms.get(hash).is_some_and(|s| s.known) {
            self.swarms.remove(hash);
        }
    }

    /// A swarm we serve whose peer lists do not name the seed: the truncated
    /// v2 swarm of a hybrid torrent. libtorrent 2.1 expects a peer it learnt
    /// from the v2 swarm to answer with the v2 info-hash, and rejects our
    /// v1 answer ("invalid info-hash") when the v2 reply races a connection
    /// it opened for the v1 swarm; listing the seed in the v1 swarm only
    /// avoids that, and v1 and v2 clients of a hybrid both announce v1.
    pub fn add_known_unlisted(&mut self, hash: InfoHash) {
        self.add(hash, false);
    }

    fn add(&mut self, hash: InfoHash, list_seed: bool) {
        match self.swarms.get_mut(&hash) {
            Some(s) => {
                if !s.known {
                    s.known = true;
                    self.unknown = self.unknown.saturating_sub(1);
                }
                s.list_seed = list_seed;
            }
            None => {
                let swarm = Swarm {
                    known: true,
                    list_seed,
                    ..Swarm::default()
                };
                self.swarms.insert(hash, swarm);
            }
        }
    }

    fn next_rand(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    pub fn announce(&mut self, now: Instant, a: &Announce) -> Result<Reply, Refusal> {
        if !self.swarms.contains_key(&a.info_hash) {
            if !self.cfg.allow_unknown {
                return Err(Refusal::UnknownTorrent);
            }
            if self.unknown >= self.cfg.max_unknown_swarms {
                return Err(Refusal::Full);
            }
            self.unknown += 1;
            self.swarms.insert(a.info_hash, Swarm::default());
        }
        let numwant = a
            .numwant
            .unwrap_or(self.cfg.default_numwant)
            .min(self.cfg.max_numwant) as usize;
        let start = self.next_rand() as usize;
        let expires = now + self.cfg.peer_timeout;
        let max_peers = self.cfg.max_peers_per_swarm;
        let count_seed = self.cfg.count_seed;
        let swarm = self.swarms.get_mut(&a.info_hash).expect("inserted above");
        let seeder = a.left == 0;
        let previous = swarm.remove(&a.peer);
        if a.event == Event::Completed && previous.is_some_and(|p| !p.seeder) {
            swarm.completed = swarm.completed.saturating_add(1);
        }
        let stopping = a.event == Event::Stopped;
        if !stopping && swarm.peers.len() < max_peers {
            swarm.index.insert(a.peer, swarm.peers.len());
            swarm.peers.push(Peer {
                addr: a.peer,
                seeder,
                expires,
            });
            if seeder {
                swarm.seeders += 1;
            }
        }
        let seed_count = u32::from(swarm.known && count_seed);
        let complete = swarm.seeders + seed_count;
        let incomplete = swarm.peers.len() as u32 - swarm.seeders;
        let mut peers = Vec::new();
        if stopping || numwant == 0 {
            return Ok(Reply {
                peers,
                complete,
                incomplete,
            });
        }
        if let Some(seed) = a
            .seed
            .filter(|s| *s != a.peer && a.family.admits(s) && swarm.known && swarm.list_seed)
        {
            peers.push(seed);
        }
        let n = swarm.peers.len();
        for k in 0..n {
            if peers.len() >= numwant {
                break;
            }
            let p = &swarm.peers[(start.wrapping_add(k)) % n];
            // A seed gets leechers only: other seeds are no use to it.
            if p.addr != a.peer && a.family.admits(&p.addr) && !(seeder && p.seeder) {
                peers.push(p.addr);
            }
        }
        Ok(Reply {
            peers,
            complete,
            incomplete,
        })
    }

    /// Counts for one hash; `None` for a swarm we do not know.
    pub fn scrape(&self, hash: &InfoHash) -> Option<ScrapeStats> {
        let s = self.swarms.get(hash)?;
        Some(ScrapeStats {
            complete: s.seeders + u32::from(s.known && self.cfg.count_seed),
            downloaded: s.completed,
            incomplete: s.peers.len() as u32 - s.seeders,
        })
    }

    /// The recorded peers of a swarm (not the seed itself).
    pub fn peers(&self, hash: &InfoHash) -> Vec<SocketAddr> {
        self.swarms
            .get(hash)
            .map(|s| s.peers.iter().map(|p| p.addr).collect())
            .unwrap_or_default()
    }

    /// Drop peers whose time is up, and unknown swarms left empty.
    pub fn expire(&mut self, now: Instant) {
        let mut emptied = 0;
        self.swarms.retain(|_, s| {
            let gone: Vec<SocketAddr> = s
                .peers
                .iter()
                .filter(|p| p.expires <= now)
                .map(|p| p.addr)
                .collect();
            for addr in &gone {
                s.remove(addr);
            }
            let keep = s.known || !s.peers.is_empty();
            if !keep {
                emptied += 1;
            }
            keep
        });
        self.unknown = self.unknown.saturating_sub(emptied);
    }

    /// Peers recorded over all swarms.
    pub fn total_peers(&self) -> usize {
        self.swarms.values().map(|s| s.peers.len()).sum()
    }
}

#[cfg(test)]
#[path = "swarms_tests.rs"]
mod tests;
