//! The `fetch-announce` thread: announces a fetching torrent to its
//! trackers with `left` set, hands the peers they return to the fetch
//! loop, and keeps the torrent announced (as a seed once complete) until
//! shutdown, when it sends `stopped`.
//!
//! While fetching it re-announces after 1 s, 2 s, 4 s, then every
//! [`FETCHING_REANNOUNCE`] (or the tracker's `min interval` if longer), so
//! boxes of a fleet that start at about the same time, or later, are found; complete, it announces `completed` once and then
//! follows the tracker's `interval`. One tier after another (BEP 12), the
//! first URL of a tier that answers is used; every swarm of the torrent
//! (v1 and truncated v2 of a hybrid) is announced.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::engine::ServedTorrent;
use crate::tracker::client::{announce_once, AnnounceTarget};
use crate::tracker::proto::{AnnounceRequest, Event, InfoHash};

use super::{FetchConfig, FetchStats};

/// Re-announce period while pieces are missing.
pub const FETCHING_REANNOUNCE: Duration = Duration::from_secs(5);
/// Retry period when every tracker failed.
const RETRY: Duration = Duration::from_secs(15);
const TIMEOUT: Duration = Duration::from_secs(10);
/// Peers asked for per announce.
const NUMWANT: u32 = 50;

pub(super) struct FetchAnnouncer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

struct Job {
    hashes: Vec<InfoHash>,
    tiers: Vec<Vec<String>>,
    peer_id: [u8; 20],
    port: u16,
    ip: Option<std::net::IpAddr>,
    key: u32,
    piece_length: u64,
    total: u64,
    num_pieces: u32,
}

impl FetchAnnouncer {
    /// `None` when there is no tracker to announce to.
    pub fn start(
        torrent: &ServedTorrent,
        cfg: &FetchConfig,
        stats: Arc<FetchStats>,
        peers: mpsc::Sender<Vec<SocketAddr>>,
    ) -> std::io::Result<Option<FetchAnnouncer>> {
        let tiers: Vec<Vec<String>> = cfg
            .trackers
            .iter()
            .filter(|t| !t.is_empty())
            .cloned()
            .collect();
        if tiers.is_empty() {
            return Ok(None);
        }
        let job = Job {
            hashes: AnnounceTarget::for_torrent(&torrent.torrent, &[]).info_hashes,
            tiers,
            peer_id: cfg.peer_id,
            port: cfg.announce_port,
            ip: cfg.announce_ip,
            key: u32::from_le_bytes(cfg.peer_id[16..20].try_into().unwrap_or_default()),
            piece_length: torrent.torrent.piece_length,
            total: torrent.torrent.total_size,
            num_pieces: torrent.torrent.num_pieces,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("fetch-announce".into())
            .spawn(move || job.run(&stop2, &stats, &peers))?;
        Ok(Some(FetchAnnouncer {
            stop,
            thread: Some(thread),
        }))
    }

    /// Stops the thread; it sends `stopped` to every tracker that answered
    /// (one second at most each).
    pub fn shutdown(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for FetchAnnouncer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Job {
    fn left(&self, stats: &FetchStats) -> u64 {
        let have = u64::from(stats.pieces_have.load(Ordering::Relaxed));
        let missing = u64::from(self.num_pieces).saturating_sub(have);
        (missing * self.piece_length).min(self.total)
    }

    fn run(&self, stop: &AtomicBool, stats: &FetchStats, peers: &mpsc::Sender<Vec<SocketAddr>>) {
        // Per swarm: the URL that answered (for `stopped`), whether
        // `started` and `completed` went out.
        let mut answered: Vec<Option<String>> = vec![None; self.hashes.len()];
        let mut completed_sent = vec![false; self.hashes.len()];
        let mut next = Instant::now();
        let mut rounds = 0u32;
        while !stop.load(Ordering::Acquire) {
            if Instant::now() < next {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            let complete = stats.complete.load(Ordering::Acquire);
            let mut wait = if complete {
                Duration::MAX
            } else {
                // 1 s, 2 s, 4 s, then the steady period.
                Duration::from_secs(1 << rounds.min(3)).min(FETCHING_REANNOUNCE)
            };
            rounds += 1;
            let mut any = false;
            for (i, h) in self.hashes.iter().enumerate() {
                let event = if answered[i].is_none() {
                    Event::Started
                } else if complete && !completed_sent[i] {
                    Event::Completed
                } else {
                    Event::None
                };
                let req = self.request(*h, event, self.left(stats), !complete);
                if let Some((url, resp)) = self.first_answer(&req, stop) {
                    any = true;
                    answered[i] = Some(url);
                    if complete {
                        completed_sent[i] = true;
                        wait = wait.min(resp.interval.max(Duration::from_secs(60)));
                    } else if let Some(min) = resp.min_interval {
                        wait = wait.max(min);
                    }
                    if !resp.peers.is_empty() {
                        let _ = peers.send(resp.peers);
                    }
                }
            }
            if !any {
                wait = RETRY;
            }
            next = Instant::now() + wait.min(Duration::from_secs(3600));
        }
        // `stopped` to the trackers that know us.
        for (i, url) in answered.iter().enumerate() {
            if let Some(url) = url {
                let req = self.request(self.hashes[i], Event::Stopped, self.left(stats), false);
                let _ = announce_once(url, &req, Duration::from_secs(1));
            }
        }
    }

    fn request(&self, h: InfoHash, event: Event, left: u64, want_peers: bool) -> AnnounceRequest {
        AnnounceRequest {
            info_hash: h,
            peer_id: self.peer_id,
            port: self.port,
            uploaded: 0,
            downloaded: 0,
            left,
            event,
            numwant: Some(if want_peers { NUMWANT } else { 0 }),
            key: self.key,
            ip: self.ip,
        }
    }

    fn first_answer(
        &self,
        req: &AnnounceRequest,
        stop: &AtomicBool,
    ) -> Option<(String, crate::tracker::proto::AnnounceResponse)> {
        for tier in &self.tiers {
            for url in tier {
                if stop.load(Ordering::Acquire) {
                    return None;
                }
                match announce_once(url, req, TIMEOUT) {
                    Ok(r) => return Some((url.clone(), r)),
                    Err(e) => tracing::debug!(url = %url, error = %e, "fetch announce failed"),
                }
            }
        }
        None
    }
}
