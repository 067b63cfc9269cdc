//! The swarm report: completion times, origin amplification, the lower
//! bound for the setup, a human table and JSON (plotted by
//! `loadtest/plot_swarm.py`).
//!
//! The bound: a swarm of N leechers downloading F bytes, the seed
//! uploading at u_s, each leecher uploading at u and downloading at d,
//! cannot finish before
//!
//! ```text
//! max(F / u_s, F / d, N * F / (u_s + N * u))
//! ```
//!
//! (the seed must send every byte at least once; a leecher must receive
//! all of them; the N*F bytes received all have to be uploaded by someone).
//! An unlimited rate makes its terms 0: with `--seed-rate` unlimited both
//! `F / u_s` and the last term drop out; with `--leecher-up` unlimited the
//! last term does (the seed's share alone is not a bound then). With every
//! rate unlimited there is no bound and no ratio.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::Context;
use ringseed::swarm::ratelimit::Rate;
use serde::Serialize;

use super::config::{PeersFrom, StoreKind, SwarmArgs, SwarmConfig};
use super::driver::{run_swarm, SwarmOutcome};
use crate::report::Environment;

/// The lower bound and its three terms (seconds; `None` when a rate is
/// unlimited).
#[derive(Debug, Clone, Serialize)]
pub struct Bound {
    pub seconds: Option<f64>,
    /// F / u_s.
    pub seed_upload_s: Option<f64>,
    /// F / d.
    pub leecher_download_s: Option<f64>,
    /// N * F / (u_s + N * u).
    pub swarm_upload_s: Option<f64>,
}

/// See the module docs.
pub fn lower_bound(f: u64, n: usize, seed: Rate, up: Rate, down: Rate) -> Bound {
    let f = f as f64;
    let us = seed.bytes_per_sec().map(|r| r as f64);
    let u = up.bytes_per_sec().map(|r| r as f64);
    let d = down.bytes_per_sec().map(|r| r as f64);
    let seed_upload_s = us.map(|us| f / us);
    let leecher_download_s = d.map(|d| f / d);
    let swarm_upload_s = match (us, u) {
        (Some(us), Some(u)) => Some(n as f64 * f / (us + n as f64 * u)),
        _ => None,
    };
    let seconds = [seed_upload_s, leecher_download_s, swarm_upload_s]
        .into_iter()
        .flatten()
        .reduce(f64::max);
    Bound {
        seconds,
        seed_upload_s,
        leecher_download_s,
        swarm_upload_s,
    }
}

/// Completion time percentiles in seconds (nearest rank), over leechers
/// that completed.
#[derive(Debug, Clone, Serialize)]
pub struct Completion {
    pub count: usize,
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Completion {
    pub fn of(mut secs: Vec<f64>) -> Option<Completion> {
        if secs.is_empty() {
            return None;
        }
        secs.sort_by(f64::total_cmp);
        let n = secs.len();
        let q = |p: f64| secs[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
        Some(Completion {
            count: n,
            min: secs[0],
            p50: q(0.50),
            p90: q(0.90),
            p99: q(0.99),
            max: secs[n - 1],
            mean: secs.iter().sum::<f64>() / n as f64,
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LeecherRow {
    pub index: usize,
    pub completed_s: Option<f64>,
    pub pieces_verified: u32,
    pub bytes_from_seed: u64,
    pub bytes_from_peers: u64,
    pub bytes_uploaded: u64,
    pub hash_failures: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct SwarmSummary {
    /// Every leecher completed in time and verified every piece.
    pub ok: bool,
    pub leechers: usize,
    pub completed: usize,
    pub all_pieces_verified: bool,
    pub timed_out: bool,
    /// F: bytes each leecher downloads (the torrent's piece space).
    pub content_bytes: u64,
    pub pieces: u32,
    pub piece_length: u32,
    pub elapsed_s: f64,
    pub completion_s: Option<Completion>,
    /// `[seconds since start, leechers completed]`, one point per completion.
    pub completions_over_time: Vec<[f64; 2]>,
    /// Payload the leechers received from the `--target` seed.
    pub seed_bytes: u64,
    /// seed_bytes / F.
    pub origin_amplification: f64,
    /// The seed's own count (`ringseed_payload_bytes_total` delta), with
    /// `--seed-metrics`.
    pub seed_bytes_metrics: Option<u64>,
    /// Payload the leechers received from each other.
    pub peer_bytes: u64,
    pub uploaded_by_leechers: u64,
    pub wasted_bytes: u64,
    pub hash_failures: u64,
    pub protocol_errors: u64,
    pub requests_timed_out: u64,
    pub bound: Bound,
    /// Last leecher's completion time / bound.
    pub actual_over_bound: Option<f64>,
    pub max_connect: usize,
    pub connect_failures: u64,
    pub accept_refused: u64,
    pub announce_errors: u64,
    /// Verified content held in memory for uploads (`--content-store shared`).
    pub store_bytes: u64,
    pub closes: BTreeMap<String, u64>,
    pub per_leecher: Vec<LeecherRow>,
}

impl SwarmSummary {
    pub fn new(cfg: &SwarmConfig, out: &SwarmOutcome, seed_bytes_metrics: Option<u64>) -> Self {
        let t = &out.torrent;
        let f = t.piece_space_len;
        let secs: Vec<f64> = out
            .leechers
            .iter()
            .filter_map(|l| l.completed_after.map(|d| d.as_secs_f64()))
            .collect();
        let completed = secs.len();
        let all_pieces_verified = out
            .leechers
            .iter()
            .all(|l| l.pieces == t.num_pieces && l.stats.pieces_verified == t.num_pieces);
        let sum = |g: &dyn Fn(&super::node::NodeStats) -> u64| -> u64 {
            out.leechers.iter().map(|l| g(&l.stats)).sum()
        };
        let seed_bytes = sum(&|s| s.bytes_from_target);
        let mut closes = BTreeMap::new();
        for l in &out.leechers {
            for (k, v) in &l.stats.closes {
                *closes.entry(k.to_string()).or_default() += v;
            }
        }
        let bound = lower_bound(f, cfg.leechers, cfg.seed_rate, cfg.node.up, cfg.node.down);
        let completion = Completion::of(secs);
        let actual_over_bound = match (&completion, bound.seconds) {
            (Some(c), Some(b)) if completed == cfg.leechers && b > 0.0 => Some(c.max / b),
            _ => None,
        };
        SwarmSummary {
            ok: completed == cfg.leechers && all_pieces_verified && !out.timed_out,
            leechers: cfg.leechers,
            completed,
            all_pieces_verified,
            timed_out: out.timed_out,
            content_bytes: f,
            pieces: t.num_pieces,
            piece_length: t.piece_length,
            elapsed_s: out.elapsed.as_secs_f64(),
            completion_s: completion,
            completions_over_time: out
                .completions
                .iter()
                .map(|&(s, n)| [s, n as f64])
                .collect(),
            seed_bytes,
            origin_amplification: seed_bytes as f64 / f as f64,
            seed_bytes_metrics,
            peer_bytes: sum(&|s| s.bytes_from_peers),
            uploaded_by_leechers: sum(&|s| s.bytes_uploaded),
            wasted_bytes: sum(&|s| s.wasted_bytes),
            hash_failures: sum(&|s| u64::from(s.hash_failures)),
            protocol_errors: sum(&|s| s.protocol_errors),
            requests_timed_out: sum(&|s| s.requests_timed_out),
            bound,
            actual_over_bound,
            max_connect: out.max_connect,
            connect_failures: sum(&|s| s.connect_failures)
                + closes.get("connect_failed").copied().unwrap_or(0),
            accept_refused: out.accept_refused,
            store_bytes: out.store_bytes,
            announce_errors: out.announce_errors,
            closes,
            per_leecher: out
                .leechers
                .iter()
                .map(|l| LeecherRow {
                    index: l.index,
                    completed_s: l.completed_after.map(|d| d.as_secs_f64()),
                    pieces_verified: l.stats.pieces_verified,
                    bytes_from_seed: l.stats.bytes_from_target,
                    bytes_from_peers: l.stats.bytes_from_peers,
                    bytes_uploaded: l.stats.bytes_uploaded,
                    hash_failures: l.stats.hash_failures,
                })
                .collect(),
        }
    }

    pub fn table(&self, cfg: &SwarmConfig, name: &str) -> String {
        use std::fmt::Write as _;
        let mut o = String::new();
        let mb = |b: u64| b as f64 / 1e6;
        let opt = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.2}"));
        let _ = writeln!(
            o,
            "swarm [{}]: {} leechers, {name} ({:.1} MB, {} pieces of {} KiB), peers from {:?}, leecher up {} down {}, seed rate {}",
            cfg.label,
            self.leechers,
            mb(self.content_bytes),
            self.pieces,
            self.piece_length / 1024,
            cfg.peers_from,
            cfg.node.up,
            cfg.node.down,
            cfg.seed_rate,
        );
        let verified = if self.all_pieces_verified {
            format!("every leecher verified all {} pieces", self.pieces)
        } else {
            "NOT every leecher verified every piece".to_string()
        };
        let _ = writeln!(
            o,
            "result: {}: {}/{} leechers completed in {:.2} s{}; {verified}",
            if self.ok { "OK" } else { "FAILED" },
            self.completed,
            self.leechers,
            self.elapsed_s,
            if self.timed_out { " (timed out)" } else { "" },
        );
        if let Some(c) = &self.completion_s {
            let _ = writeln!(
                o,
                "completion (s)     p50 {:>7.2}  p90 {:>7.2}  p99 {:>7.2}  max {:>7.2}  (min {:.2}, n={})",
                c.p50, c.p90, c.p99, c.max, c.min, c.count
            );
        }
        let _ = writeln!(
            o,
            "seed upload        {:.1} MB = {:.2} x content (origin amplification){}",
            mb(self.seed_bytes),
            self.origin_amplification,
            self.seed_bytes_metrics.map_or(String::new(), |b| format!(
                "; seed /metrics says {:.1} MB",
                mb(b)
            )),
        );
        let total = self.seed_bytes + self.peer_bytes;
        let _ = writeln!(
            o,
            "peer exchange      {:.1} MB ({:.0}% of all received); wasted {:.1} MB; hash failures {}; request timeouts {}; protocol errors {}",
            mb(self.peer_bytes),
            100.0 * self.peer_bytes as f64 / total.max(1) as f64,
            mb(self.wasted_bytes),
            self.hash_failures,
            self.requests_timed_out,
            self.protocol_errors,
        );
        let b = &self.bound;
        let _ = writeln!(
            o,
            "lower bound (s)    {} = max(F/u_s {}, F/d {}, N*F/(u_s+N*u) {}); actual/bound {}",
            opt(b.seconds),
            opt(b.seed_upload_s),
            opt(b.leecher_download_s),
            opt(b.swarm_upload_s),
            opt(self.actual_over_bound),
        );
        let _ = writeln!(
            o,
            "connections        max-connect {}; connect failures {}; refused {}; announce errors {}; closed {:?}",
            self.max_connect,
            self.connect_failures,
            self.accept_refused,
            self.announce_errors,
            self.closes,
        );
        o
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SwarmReportConfig {
    pub torrent: String,
    pub target: String,
    pub leechers: usize,
    pub peers_from: PeersFrom,
    pub tracker: Option<String>,
    pub leecher_up: Rate,
    pub leecher_down: Rate,
    pub seed_rate: Rate,
    pub content_store: StoreKind,
    pub pipeline: usize,
    pub max_accept: usize,
    pub upload_slots: usize,
    pub rechoke_s: f64,
    pub optimistic_s: f64,
    pub timeout_s: f64,
    pub rng_seed: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SwarmReport {
    pub label: String,
    pub environment: Environment,
    pub config: SwarmReportConfig,
    pub summary: SwarmSummary,
}

impl SwarmReport {
    pub fn new(cfg: &SwarmConfig, out: &SwarmOutcome, seed_bytes_metrics: Option<u64>) -> Self {
        SwarmReport {
            label: cfg.label.clone(),
            environment: Environment::capture(),
            config: SwarmReportConfig {
                torrent: cfg.torrent.display().to_string(),
                target: cfg.target.to_string(),
                leechers: cfg.leechers,
                peers_from: cfg.peers_from,
                tracker: out.tracker.clone(),
                leecher_up: cfg.node.up,
                leecher_down: cfg.node.down,
                seed_rate: cfg.seed_rate,
                content_store: cfg.content_store,
                pipeline: cfg.node.pipeline,
                max_accept: cfg.node.max_accept,
                upload_slots: cfg.node.choker.slots,
                rechoke_s: cfg.node.choker.rechoke_interval.as_secs_f64(),
                optimistic_s: cfg.node.choker.optimistic_interval.as_secs_f64(),
                timeout_s: cfg.timeout.as_secs_f64(),
                rng_seed: cfg.rng_seed,
            },
            summary: SwarmSummary::new(cfg, out, seed_bytes_metrics),
        }
    }
}

/// Sum of every `ringseed_payload_bytes_total` sample at a Prometheus
/// endpoint (`http://HOST:PORT/PATH`, or `HOST:PORT` for `/metrics`).
pub fn scrape_payload_bytes(url: &str) -> anyhow::Result<u64> {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/metrics"),
    };
    let mut s = TcpStream::connect(hostport).with_context(|| format!("connect to {hostport}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n"
    )?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    let mut total = 0f64;
    let mut seen = false;
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("ringseed_payload_bytes_total") {
            if let Some(v) = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
                total += v;
                seen = true;
            }
        }
    }
    if !seen {
        anyhow::bail!(
            "{url} exports no ringseed_payload_bytes_total: not a ringseed /metrics endpoint?"
        );
    }
    Ok(total as u64)
}

/// `ringseed-loadtest swarm ...`: run, print, write. Returns whether every
/// leecher completed and verified every piece.
pub fn main_swarm(args: SwarmArgs) -> anyhow::Result<bool> {
    let cfg = args.resolve()?;
    let before = match &cfg.seed_metrics {
        Some(u) => Some(scrape_payload_bytes(u).context("--seed-metrics before the run")?),
        None => None,
    };
    let out = run_swarm(&cfg)?;
    let after = match (&cfg.seed_metrics, before) {
        (Some(u), Some(b)) => match scrape_payload_bytes(u) {
            Ok(a) => Some(a.saturating_sub(b)),
            Err(e) => {
                eprintln!("warning: --seed-metrics after the run: {e:#}");
                None
            }
        },
        _ => None,
    };
    let report = SwarmReport::new(&cfg, &out, after);
    let table = report.summary.table(&cfg, &out.torrent.name);
    if cfg.json {
        eprint!("{table}");
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{table}");
    }
    if let Some(path) = &cfg.report {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("write report {}", path.display()))?;
    }
    Ok(report.summary.ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Rate {
        s.parse().unwrap()
    }

    #[test]
    fn bound_terms_and_unlimited_rates() {
        // F = 100 MB, N = 10, u_s = 10 MB/s, u = 5 MB/s, d = 50 MB/s.
        let b = lower_bound(100_000_000, 10, r("10MB/s"), r("5MB/s"), r("50MB/s"));
        assert_eq!(b.seed_upload_s, Some(10.0));
        assert_eq!(b.leecher_download_s, Some(2.0));
        assert!((b.swarm_upload_s.unwrap() - 1000.0 / 60.0).abs() < 1e-9);
        assert!((b.seconds.unwrap() - 1000.0 / 60.0).abs() < 1e-9);
        let no_seed = lower_bound(100_000_000, 10, Rate::UNLIMITED, r("5MB/s"), r("50MB/s"));
        assert_eq!(no_seed.seconds, Some(2.0));
        assert_eq!(no_seed.swarm_upload_s, None);
        let none = lower_bound(1, 1, Rate::UNLIMITED, Rate::UNLIMITED, Rate::UNLIMITED);
        assert_eq!(none.seconds, None);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let c = Completion::of((1..=100).map(f64::from).collect()).unwrap();
        assert_eq!(
            (c.p50, c.p90, c.p99, c.max, c.min),
            (50.0, 90.0, 99.0, 100.0, 1.0)
        );
        let one = Completion::of(vec![3.0]).unwrap();
        assert_eq!((one.p50, one.p99), (3.0, 3.0));
        assert!(Completion::of(vec![]).is_none());
    }
}
