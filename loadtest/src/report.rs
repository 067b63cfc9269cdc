//! The final table and the JSON report, with the environment a number needs
//! to be comparable: git commit, kernel, rustc, CPU model, cores, command.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::config::RunConfig;
use crate::stats::Stats;

#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p99_9: u64,
    pub max: u64,
    pub mean: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        Percentiles {
            count: h.len(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p99_9: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub ok: bool,
    pub elapsed_s: f64,
    pub payload_bytes: u64,
    pub protocol_bytes_received: u64,
    pub throughput_mb_s: f64,
    pub throughput_gbit_s: f64,
    pub blocks: u64,
    pub requests_sent: u64,
    pub rejects: u64,
    pub chokes: u64,
    pub unchokes: u64,
    pub pieces_completed: u64,
    pub pieces_verified: u64,
    pub bytes_verified: u64,
    pub hash_failures: u64,
    pub downloads_completed: u64,
    pub connections_target: usize,
    pub connect_attempts: u64,
    pub connections_established: u64,
    pub connections_failed: u64,
    pub connections_closed: BTreeMap<String, u64>,
    pub protocol_errors: BTreeMap<String, u64>,
    pub protocol_errors_total: u64,
    pub block_latency_us: Percentiles,
    pub unchoke_latency_us: Percentiles,
    /// Per closed connection, KiB/s.
    pub per_connection_kib_s: Percentiles,
}

impl Summary {
    pub fn from_stats(s: &Stats, elapsed: Duration, target: usize) -> Self {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let protocol_errors_total = s.protocol_errors.values().sum();
        Summary {
            ok: protocol_errors_total == 0 && s.hash_failures == 0 && s.error_drops() == 0,
            elapsed_s: secs,
            payload_bytes: s.payload_bytes,
            protocol_bytes_received: s.protocol_bytes_received,
            throughput_mb_s: s.payload_bytes as f64 / secs / 1e6,
            throughput_gbit_s: s.payload_bytes as f64 * 8.0 / secs / 1e9,
            blocks: s.blocks,
            requests_sent: s.requests_sent,
            rejects: s.rejects,
            chokes: s.chokes,
            unchokes: s.unchokes,
            pieces_completed: s.pieces_completed,
            pieces_verified: s.pieces_verified,
            bytes_verified: s.bytes_verified,
            hash_failures: s.hash_failures,
            downloads_completed: s.downloads_completed,
            connections_target: target,
            connect_attempts: s.connect_attempts,
            connections_established: s.connections_established,
            connections_failed: s.connections_failed,
            connections_closed: s.dropped.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            protocol_errors: s
                .protocol_errors
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            protocol_errors_total,
            block_latency_us: Percentiles::of(&s.block_latency_us),
            unchoke_latency_us: Percentiles::of(&s.unchoke_latency_us),
            per_connection_kib_s: Percentiles::of(&s.conn_throughput_kib_s),
        }
    }

    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let p = |o: &mut String, name: &str, q: &Percentiles| {
            let _ = writeln!(
                o,
                "{name:<28} p50 {:>8}  p90 {:>8}  p99 {:>8}  p99.9 {:>8}  max {:>8}  (n={})",
                q.p50, q.p90, q.p99, q.p99_9, q.max, q.count
            );
        };
        let _ = writeln!(o, "result: {}", if self.ok { "OK" } else { "ERRORS" });
        let _ = writeln!(
            o,
            "payload {:.1} MB in {:.2} s = {:.1} MB/s ({:.2} Gbit/s), {} blocks, {} downloads completed",
            self.payload_bytes as f64 / 1e6,
            self.elapsed_s,
            self.throughput_mb_s,
            self.throughput_gbit_s,
            self.blocks,
            self.downloads_completed
        );
        let _ = writeln!(
            o,
            "connections: target {} attempts {} established {} failed {}; closed {:?}",
            self.connections_target,
            self.connect_attempts,
            self.connections_established,
            self.connections_failed,
            self.connections_closed
        );
        let _ = writeln!(
            o,
            "requests {} rejects {} chokes {} unchokes {}; pieces {} verified {} ({} bytes), hash failures {}; protocol errors {} {:?}",
            self.requests_sent,
            self.rejects,
            self.chokes,
            self.unchokes,
            self.pieces_completed,
            self.pieces_verified,
            self.bytes_verified,
            self.hash_failures,
            self.protocol_errors_total,
            self.protocol_errors
        );
        p(&mut o, "request->block (us)", &self.block_latency_us);
        p(&mut o, "handshake->unchoke (us)", &self.unchoke_latency_us);
        p(&mut o, "per connection (KiB/s)", &self.per_connection_kib_s);
        o
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Environment {
    pub git_commit: Option<String>,
    pub kernel: Option<String>,
    pub rustc: Option<String>,
    pub cpu_model: Option<String>,
    pub cores: usize,
    pub command: Vec<String>,
    pub unix_time: u64,
}

fn cmd_out(cmd: &str, args: &[&str]) -> Option<String> {
    let o = std::process::Command::new(cmd).args(args).output().ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

impl Environment {
    pub fn capture() -> Self {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        });
        Environment {
            // The commit of the source this binary was built from, wherever
            // it runs (the working directory is usually the data's).
            git_commit: cmd_out(
                "git",
                &[
                    "-C",
                    env!("CARGO_MANIFEST_DIR"),
                    "rev-parse",
                    "--short=12",
                    "HEAD",
                ],
            ),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .ok()
                .map(|s| s.trim().to_string()),
            rustc: cmd_out("rustc", &["--version"]),
            cpu_model,
            cores: crate::net::cores(),
            command: std::env::args().collect(),
            unix_time: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ReportConfig {
    pub target: String,
    pub torrents: Vec<String>,
    pub connections: usize,
    pub duration_s: f64,
    pub ramp: f64,
    pub pipeline: usize,
    pub pattern: crate::leecher::Pattern,
    pub churn: f64,
    pub popularity: String,
    pub source_ips: usize,
    pub threads: usize,
    pub verify: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub environment: Environment,
    pub config: ReportConfig,
    pub summary: Summary,
}

impl Report {
    pub fn new(cfg: &RunConfig, summary: Summary) -> Self {
        Report {
            environment: Environment::capture(),
            config: ReportConfig {
                target: cfg.target.to_string(),
                torrents: cfg
                    .torrents
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect(),
                connections: cfg.connections,
                duration_s: cfg.duration.as_secs_f64(),
                ramp: cfg.ramp,
                pipeline: cfg.pipeline,
                pattern: cfg.pattern,
                churn: cfg.churn,
                popularity: format!("{:?}", cfg.popularity),
                source_ips: cfg.source_ips.len(),
                threads: cfg.threads,
                verify: cfg.verify,
            },
            summary,
        }
    }
}
