//! Run settings: command-line flags over a TOML file (`--config`) over
//! defaults. Every flag has a config key of the same name (dashes become
//! underscores).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::leecher::Pattern;

/// How connections are spread over torrents.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Popularity {
    Uniform,
    /// Torrent `i` (0-based, in the order given) has weight `1/(i+1)^s`.
    Zipf(f64),
}

impl std::str::FromStr for Popularity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "uniform" {
            return Ok(Popularity::Uniform);
        }
        if let Some(v) = s.strip_prefix("zipf:") {
            let e: f64 = v
                .parse()
                .map_err(|_| format!("zipf exponent {v:?} is not a number (e.g. zipf:1.1)"))?;
            if !(e.is_finite() && e >= 0.0) {
                return Err(format!("zipf exponent {e} must be >= 0"));
            }
            return Ok(Popularity::Zipf(e));
        }
        Err(format!("unknown popularity {s:?}: use uniform or zipf:S"))
    }
}

impl Popularity {
    /// Cumulative weights for `n` torrents, ending in 1.0.
    pub fn cumulative(self, n: usize) -> Vec<f64> {
        let w: Vec<f64> = (0..n)
            .map(|i| match self {
                Popularity::Uniform => 1.0,
                Popularity::Zipf(s) => 1.0 / ((i + 1) as f64).powf(s),
            })
            .collect();
        let total: f64 = w.iter().sum();
        let mut acc = 0.0;
        w.iter()
            .map(|x| {
                acc += x / total;
                acc
            })
            .collect()
    }
}

/// Parses "30s", "500ms", "2m", "1h" or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("duration {s:?}: expected e.g. 30s, 500ms, 2m"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(format!("duration {s:?}: unit must be ms, s, m or h")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("duration {s:?} must be positive"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses "127.0.0.1-127.0.0.64", a single address, or a comma list of both.
pub fn parse_source_ips(s: &str) -> Result<Vec<IpAddr>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((a, b)) = part.split_once('-') {
            let a: Ipv4Addr = a
                .trim()
                .parse()
                .map_err(|_| format!("source ip range {part:?}: bad start address"))?;
            let b: Ipv4Addr = b
                .trim()
                .parse()
                .map_err(|_| format!("source ip range {part:?}: bad end address"))?;
            let (a, b) = (u32::from(a), u32::from(b));
            if b < a || b - a > 65_535 {
                return Err(format!(
                    "source ip range {part:?}: end before start or more than 65536 addresses"
                ));
            }
            out.extend((a..=b).map(|x| IpAddr::V4(Ipv4Addr::from(x))));
        } else {
            out.push(
                part.parse()
                    .map_err(|_| format!("source ip {part:?} is not an address"))?,
            );
        }
    }
    if out.is_empty() {
        return Err("no source addresses given".into());
    }
    Ok(out)
}

/// The `--config` TOML file: every key optional, unknown keys rejected.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub target: Option<String>,
    pub torrent: Option<Vec<PathBuf>>,
    pub connections: Option<usize>,
    /// e.g. "30s".
    pub duration: Option<String>,
    pub ramp: Option<f64>,
    pub pipeline: Option<usize>,
    pub pattern: Option<String>,
    pub churn: Option<f64>,
    pub popularity: Option<String>,
    pub source_ips: Option<String>,
    pub threads: Option<usize>,
    pub first_cpu: Option<usize>,
    pub verify: Option<bool>,
    pub discard: Option<bool>,
    /// "tcp" or "utp".
    pub transport: Option<String>,
    pub report: Option<PathBuf>,
    pub stall_timeout: Option<String>,
    pub connect_timeout: Option<String>,
    pub quiet: Option<bool>,
}

impl FileConfig {
    pub fn load(path: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read config {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("config {}", path.display()))
    }
}

/// What carries the peer protocol (`--transport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    #[default]
    Tcp,
    /// BEP 29 over UDP, with ringseed's own uTP ([`ringseed::utp`]).
    Utp,
}

impl std::str::FromStr for Transport {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tcp" => Ok(Transport::Tcp),
            "utp" => Ok(Transport::Utp),
            _ => Err(format!("unknown transport {s:?}: use tcp or utp")),
        }
    }
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Utp => "utp",
        }
    }
}

/// Resolved settings of one load run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub target: SocketAddr,
    pub torrents: Vec<PathBuf>,
    /// Connections kept open at once. Default 64.
    pub connections: usize,
    /// Default 30 s.
    pub duration: Duration,
    /// New connections per second while ramping up; 0 = all at once.
    pub ramp: f64,
    /// Outstanding requests per connection. Default 64.
    pub pipeline: usize,
    pub pattern: Pattern,
    /// Connections closed and replaced per second. Default 0.
    pub churn: f64,
    pub popularity: Popularity,
    /// Local addresses connections bind to, round robin. Default 127.0.0.1
    /// for a loopback target, otherwise the kernel's choice.
    pub source_ips: Vec<IpAddr>,
    /// Generator threads, each pinned to a CPU. Default 1.
    pub threads: usize,
    /// Thread i is pinned to CPU `(first_cpu + i) % cores`. Default 0.
    pub first_cpu: usize,
    pub verify: bool,
    /// Throw piece payload away in the kernel (`recv` with `MSG_TRUNC`)
    /// instead of reading it: the generator costs less than the seeder it
    /// measures. Not with `verify`.
    pub discard: bool,
    /// What carries the peer protocol. Default TCP.
    pub transport: Transport,
    pub report: Option<PathBuf>,
    /// Default 30 s.
    pub stall_timeout: Duration,
    /// Default 10 s.
    pub connect_timeout: Duration,
    /// No live line (used by `compare`).
    pub quiet: bool,
}

impl RunConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.torrents.is_empty() {
            bail!("no torrent given: pass --torrent FILE (repeatable) or `torrent = [...]` in the config");
        }
        if self.connections == 0 {
            bail!("--connections must be at least 1");
        }
        if self.pipeline == 0 {
            bail!("--pipeline must be at least 1");
        }
        if self.threads == 0 {
            bail!("--threads must be at least 1");
        }
        if self.discard && self.transport == Transport::Utp {
            bail!("--discard is for TCP: uTP payload arrives in datagrams our own uTP reassembles");
        }
        if self.discard && self.verify {
            bail!("--discard and --verify exclude each other: verifying needs the payload");
        }
        Ok(())
    }
}
