//! `ringseed-loadtest swarm` flags and the resolved settings of a run.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use ringseed::swarm::download::tit_for_tat::ChokerConfig;
use ringseed::swarm::ratelimit::Rate;
use serde::Serialize;

use super::node::NodeConfig;
use crate::config::parse_duration;

/// How leechers learn each other's addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PeersFrom {
    /// Announce to the torrent's tracker (or `--tracker`) with the real
    /// listen port and connect to the peers it returns.
    Tracker,
    /// The tool hands every leecher the addresses of the others; no tracker.
    Tool,
}

/// Where leechers upload verified pieces from (see [`super::store`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StoreKind {
    /// One in-memory copy of each verified piece, shared by all leechers.
    Shared,
    /// The original file (`--data`), mapped read-only and checked at start.
    File,
}

#[derive(Debug, Args)]
pub struct SwarmArgs {
    /// Number of synthetic leechers.
    #[arg(long)]
    pub leechers: usize,
    /// The .torrent the seed serves (v1 or hybrid).
    #[arg(long)]
    pub torrent: PathBuf,
    /// The seed, e.g. 127.0.0.1:6881; every leecher connects to it.
    #[arg(long)]
    pub target: String,
    /// How leechers find each other: tracker (announce to the torrent's
    /// tracker, e.g. the one `ringseed serve DIR` embeds) or tool.
    #[arg(long, value_enum, default_value = "tracker")]
    pub peers_from: PeersFrom,
    /// Announce here instead of the torrent's own tracker.
    #[arg(long)]
    pub tracker: Option<String>,
    /// Upload cap of each leecher, e.g. 100MB/s [default: unlimited].
    #[arg(long, default_value = "unlimited")]
    pub leecher_up: Rate,
    /// Download cap of each leecher, e.g. 100MB/s [default: unlimited].
    #[arg(long, default_value = "unlimited")]
    pub leecher_down: Rate,
    /// The seed's upload cap (its --upload-rate-limit), for the lower bound
    /// only [default: unlimited].
    #[arg(long, default_value = "unlimited")]
    pub seed_rate: Rate,
    /// shared (one in-memory copy of verified pieces) or file (--data).
    #[arg(long, value_enum, default_value = "shared")]
    pub content_store: StoreKind,
    /// The torrent's content, for --content-store file.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Outstanding requests per peer connection.
    #[arg(long, default_value_t = 16)]
    pub pipeline: usize,
    /// Peer connections each leecher opens (the seed not counted); lowered
    /// to fit RLIMIT_NOFILE.
    #[arg(long, default_value_t = 50)]
    pub max_connect: usize,
    /// Peer connections each leecher accepts.
    #[arg(long, default_value_t = 80)]
    pub max_accept: usize,
    /// Regular (tit-for-tat) upload slots per leecher, plus 1 optimistic.
    #[arg(long, default_value_t = 4)]
    pub upload_slots: usize,
    /// How often upload slots are re-decided.
    #[arg(long, default_value = "10s")]
    pub rechoke: String,
    /// How often the optimistic unchoke moves on.
    #[arg(long, default_value = "30s")]
    pub optimistic: String,
    /// Fail if any leecher has not completed by then.
    #[arg(long, default_value = "300s")]
    pub timeout: String,
    /// Seed of peer ids, piece orders and choking tie-breaks.
    #[arg(long, default_value_t = 1)]
    pub rng_seed: u64,
    /// ringseed's /metrics URL (e.g. http://127.0.0.1:9100/metrics): also
    /// report the seed's own count of payload bytes sent during the run.
    #[arg(long)]
    pub seed_metrics: Option<String>,
    /// Write the JSON report here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Print the JSON report on stdout (the table goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// A name for this run in reports and plots, e.g. plain, super-seed.
    #[arg(long)]
    pub label: Option<String>,
    /// No live progress line.
    #[arg(long)]
    pub quiet: bool,
}

/// Resolved settings of a swarm run.
#[derive(Debug, Clone)]
pub struct SwarmConfig {
    pub leechers: usize,
    pub torrent: PathBuf,
    pub target: SocketAddr,
    pub peers_from: PeersFrom,
    pub tracker: Option<String>,
    pub seed_rate: Rate,
    pub content_store: StoreKind,
    pub data: Option<PathBuf>,
    pub node: NodeConfig,
    pub timeout: Duration,
    pub rng_seed: u64,
    pub seed_metrics: Option<String>,
    pub report: Option<PathBuf>,
    pub json: bool,
    pub label: String,
    pub quiet: bool,
}

fn dur(flag: &str, s: &str) -> anyhow::Result<Duration> {
    parse_duration(s).map_err(|e| anyhow::anyhow!("--{flag}: {e}"))
}

impl SwarmArgs {
    pub fn resolve(self) -> anyhow::Result<SwarmConfig> {
        let target: SocketAddr = self
            .target
            .parse()
            .with_context(|| format!("--target {:?} is not an ADDR:PORT", self.target))?;
        if self.leechers == 0 {
            bail!("--leechers must be at least 1");
        }
        if self.pipeline == 0 {
            bail!("--pipeline must be at least 1");
        }
        if self.content_store == StoreKind::File && self.data.is_none() {
            bail!("--content-store file needs --data PATH (the torrent's content)");
        }
        let rechoke = dur("rechoke", &self.rechoke)?;
        let optimistic = dur("optimistic", &self.optimistic)?;
        if rechoke.is_zero() || optimistic.is_zero() {
            bail!("--rechoke and --optimistic must be above 0");
        }
        let label = self.label.unwrap_or_else(|| {
            format!("{} leechers, {:?}", self.leechers, self.peers_from).to_lowercase()
        });
        Ok(SwarmConfig {
            leechers: self.leechers,
            torrent: self.torrent,
            target,
            peers_from: self.peers_from,
            tracker: self.tracker,
            seed_rate: self.seed_rate,
            content_store: self.content_store,
            data: self.data,
            node: NodeConfig {
                pipeline: self.pipeline,
                max_connect: self.max_connect,
                max_accept: self.max_accept,
                choker: ChokerConfig {
                    slots: self.upload_slots,
                    optimistic: true,
                    rechoke_interval: rechoke,
                    optimistic_interval: optimistic,
                },
                up: self.leecher_up,
                down: self.leecher_down,
                target: Some(target),
                ..NodeConfig::default()
            },
            timeout: dur("timeout", &self.timeout)?,
            rng_seed: self.rng_seed,
            seed_metrics: self.seed_metrics,
            report: self.report,
            json: self.json,
            label,
            quiet: self.quiet,
        })
    }
}
