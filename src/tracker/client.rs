//! The announcer: tells trackers that we seed our torrents.
//!
//! One thread (`tracker-announce`, never a shard) owns every announce job.
//! A job is one swarm at one list of BEP 12 tiers: a v1 torrent is one job,
//! a v2 torrent one job on the truncated v2 hash, a hybrid torrent two jobs
//! (v1 and truncated v2 are separate swarms on a tracker, as libtorrent
//! announces them). Per job:
//!
//! 1. Trackers are tried tier by tier, in order within a tier; the first
//!    that answers moves to the front of its tier (BEP 12).
//! 2. The first announce to each tracker carries `event=started`; later ones
//!    none. The next announce is due after the tracker's `interval`, never
//!    sooner than its `min interval` or our [`AnnounceConfig::min_interval`].
//! 3. When every tracker of every tier failed, the job backs off
//!    exponentially from [`AnnounceConfig::min_backoff`] to
//!    [`AnnounceConfig::max_backoff`]. Failures are logged at `warn` (the
//!    tracker's `failure reason` verbatim, sanitised) and counted.
//! 4. [`Announcer::shutdown`] aborts the request in flight and sends
//!    `stopped` to every tracker that got `started`, within the deadline.
//!
//! We announce as a seed: `left=0`, `downloaded=0`, `uploaded` from the
//! target's counter, and by default `numwant=0` (a seed connects to no one).
//! Requests are blocking and sequential: a slow tracker delays the other
//! jobs by at most [`AnnounceConfig::request_timeout`], which at one
//! announce per ~30 minutes per torrent is harmless.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::proto::udp::ConnectionCache;
use super::proto::{AnnounceRequest, AnnounceResponse, Event, InfoHash, ScrapeStats, TrackerUrl};
pub use super::transport::AnnounceError;
use super::transport::{self, Deadline, Rng, Session};
use crate::metainfo::Torrent;

/// Announcer settings. Durations are wall time.
#[derive(Debug, Clone)]
pub struct AnnounceConfig {
    /// Our peer id (use the engine's, so trackers and peers see one id).
    pub peer_id: [u8; 20],
    /// The port peers should connect to: `--announce-port`, else the listen port.
    pub port: u16,
    /// `--announce-ip`: the address to announce instead of the one the
    /// tracker sees (NAT, containers). IPv4 is sent as `ip=`, IPv6 as
    /// `ipv6=` (BEP 7). Default none.
    pub announce_ip: Option<IpAddr>,
    /// Peers we ask for. Default `Some(0)`: a seed connects to no one.
    pub numwant: Option<u32>,
    /// Longest one request to one tracker may take. Default 10 s.
    pub request_timeout: Duration,
    /// First retry delay after every tracker failed. Default 15 s.
    pub min_backoff: Duration,
    /// Longest retry delay. Default 30 min.
    pub max_backoff: Duration,
    /// Never re-announce sooner than this, whatever the tracker says.
    /// Default 60 s.
    pub min_interval: Duration,
    /// Re-announce interval when the tracker gives 0. Default 30 min.
    pub default_interval: Duration,
}

impl Default for AnnounceConfig {
    fn default() -> Self {
        Self {
            peer_id: crate::wire::PeerConfig::default().peer_id,
            port: 6881,
            announce_ip: None,
            numwant: Some(0),
            request_timeout: Duration::from_secs(10),
            min_backoff: Duration::from_secs(15),
            max_backoff: Duration::from_secs(30 * 60),
            min_interval: Duration::from_secs(60),
            default_interval: Duration::from_secs(30 * 60),
        }
    }
}

/// One torrent to announce.
#[derive(Debug, Clone)]
pub struct AnnounceTarget {
    /// Swarms: v1 info-hash and/or truncated v2 info-hash.
    pub info_hashes: Vec<InfoHash>,
    /// BEP 12 tiers of tracker URLs (`http://` and `udp://`).
    pub tiers: Vec<Vec<String>>,
    /// Payload bytes uploaded for this torrent, reported as `uploaded`.
    pub uploaded: Arc<AtomicU64>,
}

impl AnnounceTarget {
    /// The torrent's swarms and its own tiers, followed by `extra` tiers
    /// (`--tracker`), skipping URLs already present.
    pub fn for_torrent(torrent: &Torrent, extra: &[Vec<String>]) -> AnnounceTarget {
        let info_hashes = torrent
            .info_hash_v1
            .map(|h| h.0)
            .into_iter()
            .chain(torrent.info_hash_v2.map(|h| h.truncated()))
            .collect();
        let mut tiers = torrent.trackers.clone();
        for tier in extra {
            let fresh: Vec<String> = tier
                .iter()
                .filter(|u| !tiers.iter().flatten().any(|t| t == *u))
                .cloned()
                .collect();
            if !fresh.is_empty() {
                tiers.push(fresh);
            }
        }
        AnnounceTarget {
            info_hashes,
            tiers,
            uploaded: Arc::default(),
        }
    }
}

/// Announce outcomes, for metrics (`ringseed_tracker_announces_total` etc.).
#[derive(Debug, Default)]
pub struct AnnounceCounters {
    /// Announces a tracker accepted (any event).
    pub ok: AtomicU64,
    /// Announces that failed (network, protocol or tracker refusal).
    pub failed: AtomicU64,
    /// The subset of `failed` where the tracker sent a failure reason.
    pub refused: AtomicU64,
    /// `stopped` announces a tracker accepted during shutdown.
    pub stopped: AtomicU64,
}

/// Delay after the `failures`-th consecutive failure of a whole job:
/// `min` doubling, capped at `max`.
pub fn backoff(failures: u32, min: Duration, max: Duration) -> Duration {
    let shift = failures.saturating_sub(1).min(20);
    min.saturating_mul(1 << shift).min(max)
}

/// One tracker of one job.
#[derive(Debug)]
struct TrackerEntry {
    text: String,
    url: Option<TrackerUrl>,
    started_sent: bool,
    tracker_id: Option<Vec<u8>>,
}

/// BEP 12 tiers with per-tracker state. Order within a tier changes as
/// trackers answer.
#[derive(Debug)]
pub(crate) struct Tiers(Vec<Vec<TrackerEntry>>);

impl Tiers {
    fn new(tiers: &[Vec<String>]) -> Self {
        Tiers(
            tiers
                .iter()
                .map(|tier| {
                    tier.iter()
                        .map(|text| TrackerEntry {
                            url: match TrackerUrl::parse(text) {
                                Ok(u) => Some(u),
                                Err(e) => {
                                    tracing::warn!("not announcing to {text:?}: {e}");
                                    None
                                }
                            },
                            text: text.clone(),
                            started_sent: false,
                            tracker_id: None,
                        })
                        .collect()
                })
                .filter(|t: &Vec<TrackerEntry>| !t.is_empty())
                .collect(),
        )
    }

    /// Positions in try order.
    fn order(&self) -> Vec<(usize, usize)> {
        self.0
            .iter()
            .enumerate()
            .flat_map(|(t, tier)| (0..tier.len()).map(move |i| (t, i)))
            .collect()
    }

    /// The tracker at `(t, i)` answered: it goes to the front of its tier.
    fn promote(&mut self, t: usize, i: usize) {
        let entry = self.0[t].remove(i);
        self.0[t].insert(0, entry);
    }
}

struct Job {
    info_hash: InfoHash,
    uploaded: Arc<AtomicU64>,
    tiers: Tiers,
    next_at: Instant,
    failures: u32,
}

enum Command {
    Add(AnnounceTarget),
    /// Stop announcing these swarms; `stopped` to trackers that got `started`.
    Remove(Vec<InfoHash>),
    Shutdown {
        deadline: Instant,
    },
}

/// Handle to the announcer thread.
pub struct Announcer {
    commands: mpsc::Sender<Command>,
    abort: Arc<AtomicBool>,
    counters: Arc<AnnounceCounters>,
    done: mpsc::Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

impl Announcer {
    /// Start the thread; every target is announced (`started`) at once.
    pub fn start(cfg: AnnounceConfig, targets: Vec<AnnounceTarget>) -> std::io::Result<Announcer> {
        let (commands, rx) = mpsc::channel();
        let (done_tx, done) = mpsc::channel();
        let abort = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(AnnounceCounters::default());
        for t in targets {
            let _ = commands.send(Command::Add(t));
        }
        let mut worker = Worker {
            cfg,
            jobs: Vec::new(),
            session: Session {
                udp_ids: ConnectionCache::default(),
                rng: Rng::new(),
            },
            key: 0,
            abort: abort.clone(),
            counters: counters.clone(),
        };
        worker.key = worker.session.rng.next_u32();
        let thread = std::thread::Builder::new()
            .name("tracker-announce".into())
            .spawn(move || {
                worker.run(&rx);
                let _ = done_tx.send(());
            })?;
        Ok(Announcer {
            commands,
            abort,
            counters,
            done,
            thread: Some(thread),
        })
    }

    /// Announce one more torrent (e.g. one added while running).
    pub fn add(&self, target: AnnounceTarget) {
        let _ = self.commands.send(Command::Add(target));
    }

    /// Stop announcing a torrent taken out while running: `stopped` goes to
    /// every tracker that got `started` for these swarms.
    pub fn remove(&self, info_hashes: Vec<InfoHash>) {
        let _ = self.commands.send(Command::Remove(info_hashes));
    }

    pub fn counters(&self) -> Arc<AnnounceCounters> {
        self.counters.clone()
    }

    /// Abort what is in flight, send `stopped` to the trackers that got
    /// `started`, and return by `deadline` at the latest (a thread still
    /// blocked then is left to finish on its own; it holds no resources
    /// anyone waits for).
    pub fn shutdown(mut self, deadline: Duration) {
        let deadline = Instant::now() + deadline;
        self.abort.store(true, Ordering::Relaxed);
        let _ = self.commands.send(Command::Shutdown { deadline });
        let wait = deadline.saturating_duration_since(Instant::now()) + Duration::from_millis(50);
        if self.done.recv_timeout(wait).is_ok() {
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        } else {
            tracing::warn!("tracker announcer did not finish `stopped` announces in time");
        }
    }
}

struct Worker {
    cfg: AnnounceConfig,
    jobs: Vec<Job>,
    session: Session,
    key: u32,
    abort: Arc<AtomicBool>,
    counters: Arc<AnnounceCounters>,
}

impl Worker {
    fn run(&mut self, rx: &mpsc::Receiver<Command>) {
        loop {
            // Take every pending command first.
            loop {
                match rx.try_recv() {
                    Ok(Command::Add(t)) => self.add(t),
                    Ok(Command::Remove(h)) => self.remove(&h),
                    Ok(Command::Shutdown { deadline }) => return self.stop_all(deadline),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => return,
                }
            }
            let now = Instant::now();
            let due = self
                .jobs
                .iter()
                .enumerate()
                .min_by_key(|(_, j)| j.next_at)
                .map(|(i, j)| (i, j.next_at));
            match due {
                Some((i, at)) if at <= now => self.announce_job(i),
                other => {
                    let wait = other.map_or(Duration::from_secs(3600), |(_, at)| at - now);
                    match rx.recv_timeout(wait) {
                        Ok(Command::Add(t)) => self.add(t),
                        Ok(Command::Remove(h)) => self.remove(&h),
                        Ok(Command::Shutdown { deadline }) => return self.stop_all(deadline),
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                }
            }
        }
    }

    fn add(&mut self, t: AnnounceTarget) {
        for hash in &t.info_hashes {
            let tiers = Tiers::new(&t.tiers);
            if tiers.0.is_empty() {
                continue;
            }
            self.jobs.push(Job {
                info_hash: *hash,
                uploaded: t.uploaded.clone(),
                tiers,
                next_at: Instant::now(),
                failures: 0,
            });
        }
    }

    fn request(&self, job: &Job, event: Event) -> AnnounceRequest {
        AnnounceRequest {
            info_hash: job.info_hash,
            peer_id: self.cfg.peer_id,
            port: self.cfg.port,
            uploaded: job.uploaded.load(Ordering::Relaxed),
            downloaded: 0,
            left: 0,
            event,
            numwant: self.cfg.numwant,
            key: self.key,
            ip: self.cfg.announce_ip,
        }
    }

    fn next_interval(&self, resp: &AnnounceResponse) -> Duration {
        let interval = if resp.interval.is_zero() {
            self.cfg.default_interval
        } else {
            resp.interval
        };
        interval
            .max(resp.min_interval.unwrap_or_default())
            .max(self.cfg.min_interval)
    }

    fn announce_job(&mut self, index: usize) {
        let mut job = self.jobs.swap_remove(index);
        let max_peers = self.cfg.numwant.map_or(200, |n| n as usize);
        for (t, i) in job.tiers.order() {
            let entry = &job.tiers.0[t][i];
            let Some(url) = entry.url.clone() else {
                continue;
            };
            let event = if entry.started_sent {
                Event::None
            } else {
                Event::Started
            };
            let req = self.request(&job, event);
            let dl = Deadline {
                at: Instant::now() + self.cfg.request_timeout,
                abort: Some(&self.abort),
            };
            let result = transport::announce(
                &url,
                &req,
                entry.tracker_id.as_deref(),
                max_peers,
                &mut self.session,
                dl,
            );
            match result {
                Ok(resp) => {
                    self.counters.ok.fetch_add(1, Ordering::Relaxed);
                    let entry = &mut job.tiers.0[t][i];
                    entry.started_sent = true;
                    if resp.tracker_id.is_some() {
                        entry.tracker_id = resp.tracker_id.clone();
                    }
                    if let Some(w) = &resp.warning {
                        tracing::warn!(tracker = %entry.text, "tracker warning: {w}");
                    }
                    tracing::debug!(
                        tracker = %entry.text,
                        info_hash = %hex(&job.info_hash),
                        ?event,
                        interval_s = resp.interval.as_secs(),
                        seeders = resp.complete,
                        leechers = resp.incomplete,
                        "announced"
                    );
                    job.tiers.promote(t, i);
                    job.failures = 0;
                    job.next_at = Instant::now() + self.next_interval(&resp);
                    self.jobs.push(job);
                    return;
                }
                Err(AnnounceError::Aborted) => {
                    self.jobs.push(job);
                    return;
                }
                Err(e) => {
                    self.counters.failed.fetch_add(1, Ordering::Relaxed);
                    if let Some(reason) = e.tracker_failure() {
                        self.counters.refused.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(tracker = %entry.text, info_hash = %hex(&job.info_hash), "tracker refused announce: {reason}");
                    } else {
                        tracing::warn!(tracker = %entry.text, info_hash = %hex(&job.info_hash), "announce failed: {}", error_chain(&e));
                    }
                }
            }
        }
        job.failures = job.failures.saturating_add(1);
        let delay = backoff(job.failures, self.cfg.min_backoff, self.cfg.max_backoff);
        tracing::info!(info_hash = %hex(&job.info_hash), retry_in_s = delay.as_secs_f32(), "every tracker failed; backing off");
        job.next_at = Instant::now() + delay;
        self.jobs.push(job);
    }

    fn remove(&mut self, hashes: &[InfoHash]) {
        let (gone, keep): (Vec<Job>, Vec<Job>) = std::mem::take(&mut self.jobs)
            .into_iter()
            .partition(|j| hashes.contains(&j.info_hash));
        self.jobs = keep;
        let deadline = Instant::now() + self.cfg.request_timeout;
        self.stop_jobs(&gone, deadline);
    }

    /// `stopped` to every tracker that got `started`, until `deadline`.
    fn stop_all(&mut self, deadline: Instant) {
        let jobs = std::mem::take(&mut self.jobs);
        self.stop_jobs(&jobs, deadline);
    }

    fn stop_jobs(&mut self, jobs: &[Job], deadline: Instant) {
        for job in jobs {
            for tier in &job.tiers.0 {
                for entry in tier.iter().filter(|e| e.started_sent) {
                    let (Some(url), true) = (&entry.url, Instant::now() < deadline) else {
                        continue;
                    };
                    let req = self.request(job, Event::Stopped);
                    let dl = Deadline {
                        at: deadline.min(Instant::now() + self.cfg.request_timeout),
                        abort: None,
                    };
                    match transport::announce(
                        url,
                        &req,
                        entry.tracker_id.as_deref(),
                        0,
                        &mut self.session,
                        dl,
                    ) {
                        Ok(_) => {
                            self.counters.stopped.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            tracing::debug!(tracker = %entry.text, "stopped announce failed: {}", error_chain(&e))
                        }
                    }
                }
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

/// One announce to one tracker URL, outside the announcer (tests, tools).
pub fn announce_once(
    url: &str,
    req: &AnnounceRequest,
    timeout: Duration,
) -> Result<AnnounceResponse, OnceError> {
    let url = TrackerUrl::parse(url)?;
    let mut session = Session {
        udp_ids: ConnectionCache::default(),
        rng: Rng::new(),
    };
    let max_peers = req.numwant.map_or(200, |n| n as usize);
    let dl = Deadline {
        at: Instant::now() + timeout,
        abort: None,
    };
    Ok(transport::announce(
        &url,
        req,
        None,
        max_peers,
        &mut session,
        dl,
    )?)
}

/// One scrape of one tracker URL (BEP 48 / BEP 15), outside the announcer.
pub fn scrape_once(
    url: &str,
    hashes: &[InfoHash],
    timeout: Duration,
) -> Result<Vec<(InfoHash, ScrapeStats)>, OnceError> {
    let url = TrackerUrl::parse(url)?;
    let mut session = Session {
        udp_ids: ConnectionCache::default(),
        rng: Rng::new(),
    };
    let dl = Deadline {
        at: Instant::now() + timeout,
        abort: None,
    };
    Ok(transport::scrape(&url, hashes, &mut session, dl)?)
}

/// Why [`announce_once`] / [`scrape_once`] failed.
#[derive(Debug, thiserror::Error)]
pub enum OnceError {
    #[error(transparent)]
    Url(#[from] super::proto::UrlError),
    #[error(transparent)]
    Announce(#[from] AnnounceError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let min = Duration::from_secs(15);
        let max = Duration::from_secs(1800);
        let got: Vec<u64> = (1..=10).map(|f| backoff(f, min, max).as_secs()).collect();
        assert_eq!(got, [15, 30, 60, 120, 240, 480, 960, 1800, 1800, 1800]);
        assert_eq!(backoff(u32::MAX, min, max), max);
    }

    #[test]
    fn tiers_promote_within_tier_and_keep_tier_order() {
        let mut t = Tiers::new(&[
            vec!["http://a/announce".into(), "http://b/announce".into()],
            vec![],
            vec!["udp://c:1".into(), "bogus".into()],
        ]);
        assert_eq!(t.order(), vec![(0, 0), (0, 1), (1, 0), (1, 1)]);
        assert!(t.0[1][1].url.is_none(), "bad URL kept but skipped");
        t.promote(0, 1);
        let names: Vec<&str> = t.0[0].iter().map(|e| e.text.as_str()).collect();
        assert_eq!(names, ["http://b/announce", "http://a/announce"]);
    }

    #[test]
    fn interval_honours_tracker_and_floor() {
        let w = Worker {
            cfg: AnnounceConfig {
                min_interval: Duration::from_secs(60),
                ..AnnounceConfig::default()
            },
            jobs: Vec::new(),
            session: Session {
                udp_ids: ConnectionCache::default(),
                rng: Rng::new(),
            },
            key: 0,
            abort: Arc::default(),
            counters: Arc::default(),
        };
        let r = |i, m: Option<u64>| AnnounceResponse {
            interval: Duration::from_secs(i),
            min_interval: m.map(Duration::from_secs),
            ..AnnounceResponse::default()
        };
        assert_eq!(w.next_interval(&r(1800, Some(60))).as_secs(), 1800);
        assert_eq!(w.next_interval(&r(100, Some(300))).as_secs(), 300);
        assert_eq!(w.next_interval(&r(5, None)).as_secs(), 60);
        assert_eq!(w.next_interval(&r(0, None)).as_secs(), 1800);
    }

    #[test]
    fn rng_varies() {
        let mut r = Rng::new();
        let a: Vec<u32> = (0..8).map(|_| r.next_u32()).collect();
        assert!(a.windows(2).any(|w| w[0] != w[1]));
    }
}
