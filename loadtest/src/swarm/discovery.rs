//! How leechers find each other.
//!
//! - `--peers-from tracker`: every leecher announces to the torrent's
//!   tracker (`ringseed serve DIR` embeds one and its torrents point at it)
//!   with its real listen port, and connects to the peers it returns. The
//!   announces run on a few helper threads ([`Announcer`]) with blocking
//!   I/O through `ringseed::tracker::client::announce_once`, never on the
//!   event loop. A leecher re-announces every [`REANNOUNCE`] while it has
//!   few peers (the first leechers to announce see an empty swarm), which
//!   ignores the tracker's `min interval`: this is a test tool pointed at
//!   one's own tracker. `completed` is sent when a leecher finishes and
//!   `stopped` for every leecher at the end of the run.
//! - `--peers-from tool`: no tracker. The leechers are placed on a random
//!   ring and each is handed the next `--max-connect` leechers on it
//!   ([`ring_peers`]): every leecher opens and accepts about the same number
//!   of connections and no pair is connected twice.

use std::net::SocketAddr;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ringseed::tracker::client::announce_once;
use ringseed::tracker::proto::{AnnounceRequest, Event};

use super::node::Node;
use crate::rng::Rng;
use crate::torrents::LoadTorrent;

/// Re-announce interval while a leecher has few peers.
pub const REANNOUNCE: Duration = Duration::from_secs(5);
const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(5);
const THREADS: usize = 4;

/// One announce to make for leecher `node`.
#[derive(Debug, Clone)]
pub struct AnnounceJob {
    pub node: usize,
    pub req: AnnounceRequest,
}

/// A tracker's answer for leecher `node`.
#[derive(Debug)]
pub struct AnnounceAnswer {
    pub node: usize,
    pub event: Event,
    pub result: Result<Vec<SocketAddr>, String>,
}

/// Announce helper threads for one tracker URL.
pub struct Announcer {
    jobs: Option<Sender<AnnounceJob>>,
    answers: Receiver<AnnounceAnswer>,
    threads: Vec<JoinHandle<()>>,
    /// Announces sent and not answered yet.
    pending: usize,
}

impl Announcer {
    pub fn start(url: String) -> std::io::Result<Announcer> {
        let (job_tx, job_rx) = mpsc::channel::<AnnounceJob>();
        let (ans_tx, answers) = mpsc::channel();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let mut threads = Vec::new();
        for i in 0..THREADS {
            let (rx, tx, url) = (job_rx.clone(), ans_tx.clone(), url.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("announce-{i}"))
                    .spawn(move || loop {
                        let job = match rx.lock().unwrap_or_else(|e| e.into_inner()).recv() {
                            Ok(j) => j,
                            Err(_) => return,
                        };
                        let result = announce_once(&url, &job.req, ANNOUNCE_TIMEOUT)
                            .map(|r| r.peers)
                            .map_err(|e| e.to_string());
                        let answer = AnnounceAnswer {
                            node: job.node,
                            event: job.req.event,
                            result,
                        };
                        if tx.send(answer).is_err() {
                            return;
                        }
                    })?,
            );
        }
        Ok(Announcer {
            jobs: Some(job_tx),
            answers,
            threads,
            pending: 0,
        })
    }

    pub fn announce(&mut self, job: AnnounceJob) {
        if let Some(tx) = &self.jobs {
            if tx.send(job).is_ok() {
                self.pending += 1;
            }
        }
    }

    /// Answers that arrived, without waiting.
    pub fn poll(&mut self, out: &mut Vec<AnnounceAnswer>) {
        while let Ok(a) = self.answers.try_recv() {
            self.pending -= 1;
            out.push(a);
        }
    }

    /// Waits (at most until `deadline`) for outstanding announces, then
    /// stops the threads (a thread stuck on a dead tracker is left to its
    /// own timeout and not joined).
    pub fn finish(mut self, deadline: Instant) -> usize {
        self.jobs = None;
        let mut answered = 0;
        while self.pending > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.answers.recv_timeout(left) {
                Ok(_) => {
                    self.pending -= 1;
                    answered += 1;
                }
                Err(_) => break,
            }
        }
        if self.pending == 0 {
            for t in self.threads.drain(..) {
                let _ = t.join();
            }
        }
        answered
    }
}

/// The tracker URL to announce to: `--tracker`, else the torrent's first
/// HTTP or UDP tracker.
pub fn tracker_url(explicit: Option<&str>, trackers: &[Vec<String>]) -> Result<String, String> {
    if let Some(u) = explicit {
        return Ok(u.to_string());
    }
    trackers
        .iter()
        .flatten()
        .find(|u| u.starts_with("http://") || u.starts_with("udp://"))
        .cloned()
        .ok_or_else(|| {
            "the torrent names no http:// or udp:// tracker: pass --tracker URL, or \
             --peers-from tool to hand leechers each other's addresses"
                .to_string()
        })
}

/// For each leecher, the addresses it connects to: leechers are put on a
/// random ring and each takes the next `per_leecher` ones. When that would
/// connect a pair from both sides (`per_leecher` at least half the ring),
/// each takes the next half instead: everyone meets everyone, once.
pub fn ring_peers(addrs: &[SocketAddr], per_leecher: usize, seed: u64) -> Vec<Vec<SocketAddr>> {
    let n = addrs.len();
    let mut ring: Vec<usize> = (0..n).collect();
    Rng::new(seed).shuffle(&mut ring);
    let mut out = vec![Vec::new(); n];
    let full_mesh = per_leecher >= n / 2;
    for (pos, &i) in ring.iter().enumerate() {
        let take = if full_mesh {
            // With an even count, the opposite leecher is taken by the
            // first half of the ring only.
            (n - 1) / 2 + usize::from(n & 1 == 0 && pos < n / 2)
        } else {
            per_leecher
        };
        out[i] = (1..=take).map(|d| addrs[ring[(pos + d) % n]]).collect();
    }
    out
}

/// What leecher `node` tells the tracker.
pub fn announce_request(node: &Node, t: &LoadTorrent, event: Event) -> AnnounceRequest {
    let port = node.listen().map_or(0, |a| a.port());
    let left = node.bytes_remaining();
    AnnounceRequest {
        info_hash: t.handshake_hash,
        peer_id: node.peer_id(),
        port,
        uploaded: node.stats().bytes_uploaded,
        downloaded: node.stats().bytes_from_peers + node.stats().bytes_from_target,
        left,
        event,
        numwant: Some(50),
        key: node.id() as u32,
        ip: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_gives_everyone_the_same_degree_and_no_pair_twice() {
        let addrs: Vec<SocketAddr> = (0..20)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], 1000 + i)))
            .collect();
        let lists = ring_peers(&addrs, 5, 3);
        let mut indegree = [0; 20];
        let mut pairs = std::collections::HashSet::new();
        for (i, l) in lists.iter().enumerate() {
            assert_eq!(l.len(), 5);
            for a in l {
                let j = addrs.iter().position(|x| x == a).unwrap();
                assert_ne!(i, j);
                indegree[j] += 1;
                assert!(pairs.insert((i.min(j), i.max(j))), "pair {i}-{j} twice");
            }
        }
        assert!(indegree.iter().all(|&d| d == 5));
        for n in [1, 2, 3, 8, 9] {
            let lists = ring_peers(&addrs[..n], 50, 1);
            let mut pairs = std::collections::HashSet::new();
            for (i, l) in lists.iter().enumerate() {
                for a in l {
                    let j = addrs.iter().position(|x| x == a).unwrap();
                    assert!(
                        pairs.insert((i.min(j), i.max(j))),
                        "n={n}: pair {i}-{j} twice"
                    );
                }
            }
            assert_eq!(pairs.len(), n * (n - 1) / 2, "n={n}: full mesh");
        }
    }

    #[test]
    fn tracker_url_prefers_the_flag_then_http_or_udp() {
        let t = vec![vec![
            "wss://x".to_string(),
            "http://t:1/announce".to_string(),
        ]];
        assert_eq!(tracker_url(None, &t).unwrap(), "http://t:1/announce");
        assert_eq!(tracker_url(Some("udp://u:2"), &t).unwrap(), "udp://u:2");
        assert!(tracker_url(None, &[])
            .unwrap_err()
            .contains("--peers-from tool"));
    }
}
