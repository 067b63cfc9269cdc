//! Command line: a load run by default, `compare`, `swarm`, and the hidden `ceiling`
//! server that `compare` starts as a child process.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::config::{
    parse_duration, parse_source_ips, FileConfig, Popularity, RunConfig, Transport,
};
use crate::leecher::Pattern;

#[derive(Debug, Parser)]
#[command(
    name = "ringseed-loadtest",
    version,
    about = "Synthetic BitTorrent leechers that flood a seeder and measure it",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Measure ringseed, a libtorrent 2.1.1 seeder and a protocol-less
    /// ceiling under the same load, alternating runs, medians.
    Compare(crate::compare::CompareArgs),
    /// N leechers that download from a seed and upload to each other
    /// (rarest first, tit-for-tat); reports completion times, origin
    /// amplification and the lower bound.
    Swarm(crate::swarm::SwarmArgs),
    /// (internal) the protocol-less sender `compare` uses as its ceiling.
    #[command(hide = true)]
    Ceiling(crate::ceiling::CeilingArgs),
    /// (internal) the minimal epoll + writev seeder `compare` uses as a baseline.
    #[command(hide = true)]
    EpollSeed(crate::epollseed::EpollSeedArgs),
}

#[derive(Debug, Args, Default)]
pub struct RunArgs {
    /// Seeder address, e.g. 127.0.0.1:6881.
    #[arg(long)]
    pub target: Option<String>,
    /// A .torrent the seeder serves (repeatable).
    #[arg(long)]
    pub torrent: Vec<PathBuf>,
    /// Connections kept open at once [default: 64].
    #[arg(long)]
    pub connections: Option<usize>,
    /// Length of the run, e.g. 30s, 2m [default: 30s].
    #[arg(long)]
    pub duration: Option<String>,
    /// New connections per second while ramping up [default: 0 = all at once].
    #[arg(long)]
    pub ramp: Option<f64>,
    /// Outstanding requests per connection [default: 64].
    #[arg(long)]
    pub pipeline: Option<usize>,
    /// random | sequential | rarest-first [default: random].
    #[arg(long)]
    pub pattern: Option<String>,
    /// Connections closed and replaced per second [default: 0].
    #[arg(long)]
    pub churn: Option<f64>,
    /// uniform | zipf:S, across torrents [default: uniform].
    #[arg(long)]
    pub popularity: Option<String>,
    /// Source addresses, e.g. 127.0.0.1-127.0.0.64 [default: 127.0.0.1 for a
    /// loopback target].
    #[arg(long)]
    pub source_ips: Option<String>,
    /// Generator threads, each pinned to a CPU [default: 1].
    #[arg(long)]
    pub threads: Option<usize>,
    /// CPU of the first thread; thread i uses (first_cpu + i) % cores [default: 0].
    #[arg(long)]
    pub first_cpu: Option<usize>,
    /// Hash every completed piece; a mismatch fails the run.
    #[arg(long)]
    pub verify: bool,
    /// Discard piece payload in the kernel (recv with MSG_TRUNC), never
    /// copying it: for measuring seeders faster than one generator core reads.
    #[arg(long)]
    pub discard: bool,
    /// tcp | utp (BEP 29 over UDP) [default: tcp].
    #[arg(long)]
    pub transport: Option<String>,
    /// TOML file with any of these settings (flags win).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Write the JSON report here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Drop a connection that received nothing for this long [default: 30s].
    #[arg(long)]
    pub stall_timeout: Option<String>,
    /// No live line.
    #[arg(long)]
    pub quiet: bool,
}

fn dur(s: &str) -> anyhow::Result<Duration> {
    parse_duration(s).map_err(anyhow::Error::msg)
}

impl RunArgs {
    /// Flags over the config file over defaults.
    pub fn resolve(self) -> anyhow::Result<RunConfig> {
        let file = match &self.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        let target_s = self.target.or(file.target).context(
            "no target: pass --target ADDR (the seeder, e.g. 127.0.0.1:6881) or `target` in the config",
        )?;
        let target: SocketAddr = target_s
            .parse()
            .with_context(|| format!("--target {target_s:?} is not an ADDR:PORT"))?;
        let torrents = if self.torrent.is_empty() {
            file.torrent.unwrap_or_default()
        } else {
            self.torrent
        };
        let source_ips = match self.source_ips.or(file.source_ips) {
            Some(s) => parse_source_ips(&s).map_err(anyhow::Error::msg)?,
            None if target.ip().is_loopback() && target.is_ipv4() => {
                vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]
            }
            None => Vec::new(),
        };
        Ok(RunConfig {
            target,
            torrents,
            connections: self.connections.or(file.connections).unwrap_or(64),
            duration: dur(&self.duration.or(file.duration).unwrap_or("30s".into()))?,
            ramp: self.ramp.or(file.ramp).unwrap_or(0.0),
            pipeline: self.pipeline.or(file.pipeline).unwrap_or(64),
            pattern: self
                .pattern
                .or(file.pattern)
                .map_or(Ok(Pattern::Random), |s| s.parse::<Pattern>())
                .map_err(anyhow::Error::msg)?,
            churn: self.churn.or(file.churn).unwrap_or(0.0),
            popularity: self
                .popularity
                .or(file.popularity)
                .map_or(Ok(Popularity::Uniform), |s| s.parse::<Popularity>())
                .map_err(anyhow::Error::msg)?,
            source_ips,
            threads: self.threads.or(file.threads).unwrap_or(1),
            first_cpu: self.first_cpu.or(file.first_cpu).unwrap_or(0),
            verify: self.verify || file.verify.unwrap_or(false),
            discard: self.discard || file.discard.unwrap_or(false),
            transport: self
                .transport
                .or(file.transport)
                .map_or(Ok(Transport::Tcp), |s| s.parse::<Transport>())
                .map_err(anyhow::Error::msg)?,
            report: self.report.or(file.report),
            stall_timeout: dur(&self
                .stall_timeout
                .or(file.stall_timeout)
                .unwrap_or("30s".into()))?,
            connect_timeout: dur(&file.connect_timeout.unwrap_or("10s".into()))?,
            quiet: self.quiet || file.quiet.unwrap_or(false),
        })
    }
}
