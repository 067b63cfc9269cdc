//! `ringseed serve` configuration: defaults, then the `--config` TOML file,
//! then command-line flags, then validation.
//!
//! Every flag of [`crate::cli::ServeArgs`] has a key here. Durations are
//! written as strings with a unit (`"500ms"`, `"10s"`, `"2m"`, `"1h"`) or as
//! an integer number of seconds. Unknown keys are rejected, with the key named.
//!
//! ```toml
//! dir = "/srv/seed"
//! listen = "[::]:6881"
//! upload_slots = 512
//! choker = "round_robin"
//! rechoke_interval = "10s"
//!
//! upload_rate_limit = "100MB/s"
//!
//! [[torrents]]
//! torrent = "/srv/ubuntu.iso.torrent"
//! data = "/srv/ubuntu.iso"
//!
//! [per_torrent."ubuntu.iso"]
//! super_seed = true
//! ```
//!
//! Per-torrent settings (`[per_torrent."KEY"]`) are in [`per_torrent`].
//!
//! What this module does not do: open sockets, read torrents or check that
//! paths exist. That happens at start-up, where the error can name the file.

pub mod control;
pub mod per_torrent;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::cli::ServeArgs;
use crate::swarm::choker::{ChokerConfig, ChokerMode};
use crate::swarm::ratelimit::Rate;

pub use per_torrent::TorrentOverrides;

/// One existing torrent to seed and where its content is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TorrentEntry {
    /// The `.torrent` file.
    pub torrent: PathBuf,
    /// The content: the file of a single-file torrent, the top directory of a
    /// multi-file one, or a directory containing an entry with its name.
    pub data: PathBuf,
}

/// Where the Prometheus endpoint listens, if anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum MetricsEndpoint {
    /// `"off"`: no endpoint.
    Off,
    Listen(SocketAddr),
}

impl std::str::FromStr for MetricsEndpoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(Self::Off);
        }
        s.parse().map(Self::Listen).map_err(|_| {
            format!(
                "metrics endpoint {s:?} is neither `off` nor an address:port like 127.0.0.1:9100"
            )
        })
    }
}

impl TryFrom<String> for MetricsEndpoint {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<MetricsEndpoint> for String {
    fn from(m: MetricsEndpoint) -> Self {
        match m {
            MetricsEndpoint::Off => "off".to_owned(),
            MetricsEndpoint::Listen(addr) => addr.to_string(),
        }
    }
}

/// Where the embedded tracker listens (`--tracker-listen`): `"off"` or an
/// address; HTTP and UDP share the port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum TrackerListen {
    Off,
    Listen(SocketAddr),
}

impl std::str::FromStr for TrackerListen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(Self::Off);
        }
        s.parse().map(Self::Listen).map_err(|_| {
            format!("tracker address {s:?} is neither `off` nor an address:port like 0.0.0.0:6969")
        })
    }
}

impl TryFrom<String> for TrackerListen {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<TrackerListen> for String {
    fn from(t: TrackerListen) -> Self {
        match t {
            TrackerListen::Off => "off".to_owned(),
            TrackerListen::Listen(addr) => addr.to_string(),
        }
    }
}

/// Default embedded tracker address in DIR mode.
pub const DEFAULT_TRACKER_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 6969);

/// Default upload slots per shard when an upload cap is set and
/// `upload_slots` is not (see [`ServeConfig::effective_upload_slots`]).
pub const CAPPED_UPLOAD_SLOTS: u32 = 4;

/// The least upload slots a capped super-seeding box defaults to, whatever
/// its shard count (see [`ServeConfig::effective_upload_slots`]).
pub const CAPPED_SUPER_SEED_UPLOAD_SLOTS: u32 = 16;

/// Every `ringseed serve` setting. Field docs give unit and default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Seed every file and top-level directory in this directory. Default: none.
    pub dir: Option<PathBuf>,
    /// Existing torrents to seed (`[[torrents]]` tables). `--torrent`/`--data`
    /// flags replace this list. Default: empty.
    pub torrents: Vec<TorrentEntry>,
    /// Where created torrents and resume records go. Default `DIR/.ringseed`
    /// (see [`ServeConfig::effective_state_dir`]).
    pub state_dir: Option<PathBuf>,
    /// Peer listen address, IPv4 or IPv6 (`"[::]:6881"`). Default `0.0.0.0:6881`.
    pub listen: SocketAddr,
    /// Shards, one pinned thread and io_uring each. Default: number of cores.
    pub shards: usize,
    /// Regular upload slots for the whole box, split evenly over shards;
    /// 0 = unchoke every interested peer. Default 256, or
    /// [`CAPPED_UPLOAD_SLOTS`] per shard when an upload cap is set (see
    /// [`ServeConfig::effective_upload_slots`]).
    pub upload_slots: Option<u32>,
    /// Optimistic unchoke slots per shard on top of `upload_slots`; 0 = off.
    /// Default 1.
    pub optimistic_slots: u32,
    /// Seed choker: `"round_robin"` (default) or `"fastest_upload"`.
    pub choker: ChokerMode,
    /// How often upload slots are re-decided. Default `"10s"`.
    #[serde(with = "duration_serde")]
    pub rechoke_interval: Duration,
    /// How often the optimistic unchoke moves on. Default `"30s"`.
    #[serde(with = "duration_serde")]
    pub optimistic_interval: Duration,
    /// Peer connections in total, box-wide (all shards together). Default
    /// 20000. Each takes a file descriptor: raise `LimitNOFILE` (systemd)
    /// or `ulimit -n` to match.
    pub max_connections: u32,
    /// Peer connections one shard takes at most, on top of the box-wide
    /// limit. Default: none (only `max_connections`; see
    /// [`ServeConfig::connections_per_shard`]).
    pub max_connections_per_shard: Option<u32>,
    /// Peer connections from one source, box-wide: an IPv4 address or an
    /// IPv6 prefix of `ipv6_prefix_len` bits. Default 1000 (high:
    /// datacenter NAT and loopback tests put many peers behind one address).
    pub max_per_ip: u32,
    /// Leading bits of an IPv6 address that count as one source for
    /// `max_per_ip`: 64 (default) counts a /64 as one host, 128 counts
    /// every address.
    pub ipv6_prefix_len: u8,
    /// Outstanding block requests per peer, advertised as `reqq`. Default 500.
    pub max_requests: u32,
    /// Time a new connection has to complete the handshake. Default `"10s"`.
    #[serde(with = "duration_serde")]
    pub handshake_timeout: Duration,
    /// A peer silent for this long is closed. Default `"120s"`.
    #[serde(with = "duration_serde")]
    pub idle_timeout: Duration,
    /// A send that makes no progress for this long closes the peer (it
    /// stopped reading); also closes a peer that sends only keep-alives for
    /// `idle_timeout` while our bytes sit unread. Default `"30s"`.
    #[serde(with = "duration_serde")]
    pub send_timeout: Duration,
    /// Zero-copy sends (SEND_ZC); for real NICs, not loopback. Default false.
    pub send_zc: bool,
    /// What to accept after an MSE handshake: `"prefer-plaintext"`
    /// (default: stock clients offer plaintext, so the zero-copy path is
    /// kept; RC4 only for peers that insist), `"require-plaintext"`,
    /// `"allow-rc4"`.
    #[serde(
        deserialize_with = "deserialize_encryption",
        serialize_with = "serialize_encryption"
    )]
    pub encryption: EncryptionPolicy,
    /// uTP on UDP at the `listen` port: `"refuse"` (default: every uTP
    /// `SYN` is answered with an `ST_RESET`, so clients that try uTP
    /// first fall back to TCP at once) or `"off"` (no UDP socket).
    #[serde(deserialize_with = "deserialize_utp", serialize_with = "serialize_utp")]
    pub utp: UtpMode,
    /// Skip start-up verification and trust the data. Default false.
    pub skip_verify: bool,
    /// Prometheus endpoint address or `"off"`. Default `"127.0.0.1:9100"`.
    pub metrics: MetricsEndpoint,
    /// Log filter: a level or tracing directives. Default `"info"`.
    pub log_level: String,
    /// Embedded tracker (HTTP and UDP on one port) address or `"off"`.
    /// Default: `"0.0.0.0:6969"` when seeding a `dir`, off otherwise (see
    /// [`ServeConfig::effective_tracker_listen`]).
    pub tracker_listen: Option<TrackerListen>,
    /// Announce URL written into torrents `serve DIR` creates. Default
    /// `http://<announce_ip, else tracker listen IP, else 127.0.0.1>:<port>/announce`
    /// (see [`ServeConfig::effective_public_url`]); set it to the box's
    /// public name for clients on other machines.
    pub public_url: Option<String>,
    /// Address announced to trackers (and listed by the embedded tracker)
    /// instead of the one they see: for NAT and containers. Default none.
    pub announce_ip: Option<IpAddr>,
    /// Port announced to trackers. Default: the `listen` port.
    pub announce_port: Option<u16>,
    /// Extra trackers to announce every torrent to, besides the torrent's
    /// own. Each entry is a BEP 12 tier; commas separate URLs within a tier
    /// (`"udp://a:6969,http://b/announce"`). Default empty.
    pub trackers: Vec<String>,
    /// Peers to fetch missing pieces from (`--peer`), `IP:PORT` or
    /// `HOST:PORT` (resolved again until the fetch is done), besides those
    /// the trackers return: a torrent whose data is missing or incomplete is
    /// fetched, then seeded. Default empty.
    pub peers: Vec<String>,
    /// Super-seed every torrent (BEP 16): advertise no pieces and offer each
    /// peer one piece at a time, a new one once the last has spread (or
    /// after 5 s). For an origin box with few, large torrents and many
    /// leechers that trade among themselves. `[per_torrent]` can override
    /// it per torrent. Default false.
    pub super_seed: bool,
    /// Upload cap for the whole box, in bytes per second (`"100MB/s"`,
    /// `"40MiB/s"`, `"1Gbit"`, or `"off"`): piece messages (13-byte header +
    /// payload) are counted, control messages are not. Split evenly across
    /// shards, each shard shared fairly among its peers. Default `"off"`.
    pub upload_rate_limit: Rate,
    /// Per-torrent settings keyed by torrent name or info-hash hex (see
    /// [`per_torrent`]); they apply to torrents added later too. Default empty.
    pub per_torrent: BTreeMap<String, TorrentOverrides>,
    /// The release ledger (`[ledger]` table; off unless `dir` is set).
    pub ledger: LedgerSettings,
    /// Control API address (`/torrents`, see `control::api`), or `"off"`.
    /// Default `127.0.0.1:9101`, best effort: if that is taken the server
    /// runs without the API and says so (an address given here must bind).
    pub control: Option<MetricsEndpoint>,
    /// File with the bearer token the control API requires (whitespace
    /// trimmed). Required when `control` is not a loopback address.
    /// Default none (no token on loopback).
    pub control_token_file: Option<PathBuf>,
    /// How long the peers of a removed torrent keep being served before
    /// they are closed (after their in-flight sends). Default `"0s"`.
    #[serde(with = "duration_serde")]
    pub drain_grace: Duration,
    /// `serve DIR`: a new entry is picked up once nothing has changed under
    /// it for this long (at once when it arrives by an atomic rename).
    /// Default `"2s"`.
    #[serde(with = "duration_serde")]
    pub settle: Duration,
    /// Data paths the control API may serve: these, the served DIR and the
    /// paths given at start (see [`ServeConfig::allowed_roots`]). Default empty.
    pub allow_roots: Vec<PathBuf>,
}

/// `[ledger]`: keep, gossip and cosign a release ledger (see `ringseed::ledger`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerSettings {
    /// The ledger directory (`--ledger`). Default: no ledger.
    pub dir: Option<PathBuf>,
    /// The publisher's verifier key, vkey text or a file holding it
    /// (`--ledger-key`); needed the first time a directory is used.
    pub key: Option<String>,
    /// Other boxes' ledger HTTP base URLs, `http://host:port` (`--ledger-peer`).
    pub peers: Vec<String>,
    /// Cosigner policy file: whose cosignatures to keep and serve (`--ledger-policy`).
    pub policy: Option<PathBuf>,
    /// Serve only torrents whose release is in the ledger (`--ledger-required`).
    pub required: bool,
    /// This box's cosigning key file (`ringseed ledger init --cosigner`).
    pub cosign_key: Option<PathBuf>,
    /// Address of the ledger HTTP endpoints (`--ledger-listen`). Default `0.0.0.0:7881`.
    pub listen: SocketAddr,
    /// How often a random peer's checkpoint is pulled. Default `"1s"`.
    #[serde(with = "duration_serde")]
    pub pull_interval: Duration,
    /// Peers a new block is pushed to at once. Default 3.
    pub fanout: usize,
}

impl Default for LedgerSettings {
    fn default() -> Self {
        Self {
            dir: None,
            key: None,
            peers: Vec::new(),
            policy: None,
            required: false,
            cosign_key: None,
            listen: SocketAddr::from(([0, 0, 0, 0], 7881)),
            pull_interval: Duration::from_secs(1),
            fanout: 3,
        }
    }
}

impl Default for ServeConfig {
    fn default() -> Self {
        let choker = ChokerConfig::default();
        Self {
            dir: None,
            torrents: Vec::new(),
            state_dir: None,
            listen: SocketAddr::from(([0, 0, 0, 0], 6881)),
            shards: std::thread::available_parallelism().map_or(1, |n| n.get()),
            upload_slots: None,
            optimistic_slots: choker.optimistic_slots,
            choker: choker.mode,
            rechoke_interval: choker.rechoke_interval,
            optimistic_interval: choker.optimistic_interval,
            max_connections: 20_000,
            max_connections_per_shard: None,
            max_per_ip: 1000,
            ipv6_prefix_len: 64,
            max_requests: 500,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            send_timeout: Duration::from_secs(30),
            send_zc: false,
            encryption: EncryptionPolicy::default(),
            utp: UtpMode::default(),
            skip_verify: false,
            metrics: MetricsEndpoint::Listen(SocketAddr::from(([127, 0, 0, 1], 9100))),
            log_level: "info".to_owned(),
            tracker_listen: None,
            public_url: None,
            announce_ip: None,
            announce_port: None,
            trackers: Vec::new(),
            peers: Vec::new(),
            super_seed: false,
            upload_rate_limit: Rate::UNLIMITED,
            per_torrent: BTreeMap::new(),
            ledger: LedgerSettings::default(),
            control: None,
            control_token_file: None,
            drain_grace: Duration::ZERO,
            settle: Duration::from_secs(2),
            allow_roots: Vec::new(),
        }
    }
}

/// A configuration that cannot be used, with what to change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config is not valid ringseed TOML (keys are listed in `ringseed serve --help`)")]
    Toml {
        #[source]
        source: toml::de::Error,
    },
    #[error("{flag} {value:?}: {reason}")]
    Flag {
        flag: &'static str,
        value: String,
        reason: String,
    },
    #[error("--torrent and --data must come in pairs: got {torrents} --torrent and {data} --data")]
    UnpairedTorrents { torrents: usize, data: usize },
    #[error("{key} = {value}: {reason}")]
    Invalid {
        key: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error(
        "nothing to seed: give a DIR, --torrent FILE --data PATH pairs, or `dir` / \
         `[[torrents]]` in the config file"
    )]
    NothingToSeed,
    #[error(
        "[per_torrent.{key:?}] names no served torrent; use a torrent's name or its v1/v2 \
         info-hash in hex (served: {served})"
    )]
    UnknownTorrent { key: String, served: String },
    #[error(
        "[per_torrent.{key:?}] matches {count} served torrents with that name; key it by \
         info-hash hex instead"
    )]
    AmbiguousTorrent { key: String, count: usize },
    #[error(
        "torrent {name:?} is configured twice, by [per_torrent.{first:?}] and \
         [per_torrent.{second:?}]; merge them into one table"
    )]
    TorrentConfiguredTwice {
        first: String,
        second: String,
        name: String,
    },
}

impl ServeConfig {
    /// Defaults, then the `--config` file, then flags; validated.
    pub fn load(args: &ServeArgs) -> anyhow::Result<ServeConfig> {
        let mut config = match &args.config {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        config.apply_args(args)?;
        config.validate()?;
        Ok(config)
    }

    /// Parse a config file (not validated: flags may still fix it).
    pub fn from_file(path: &Path) -> anyhow::Result<ServeConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Self::from_toml_str(&text).with_context(|| format!("in config file {}", path.display()))
    }

    /// Parse TOML over the defaults (not validated).
    pub fn from_toml_str(text: &str) -> Result<ServeConfig, ConfigError> {
        toml::from_str(text).map_err(|source| ConfigError::Toml { source })
    }

    /// Override settings with the flags that were given.
    pub fn apply_args(&mut self, args: &ServeArgs) -> Result<(), ConfigError> {
        if let Some(dir) = &args.dir {
            self.dir = Some(dir.clone());
        }
        if args.torrents.len() != args.data.len() {
            return Err(ConfigError::UnpairedTorrents {
                torrents: args.torrents.len(),
                data: args.data.len(),
            });
        }
        if !args.torrents.is_empty() {
            self.torrents = args
                .torrents
                .iter()
                .zip(&args.data)
                .map(|(torrent, data)| TorrentEntry {
                    torrent: torrent.clone(),
                    data: data.clone(),
                })
                .collect();
        }
        if let Some(state_dir) = &args.state_dir {
            self.state_dir = Some(state_dir.clone());
        }
        if let Some(listen) = &args.listen {
            self.listen = listen.parse().map_err(|_| ConfigError::Flag {
                flag: "--listen",
                value: listen.clone(),
                reason: "not an address:port like 0.0.0.0:6881 or [::]:6881".to_owned(),
            })?;
        }
        set(&mut self.shards, args.shards);
        if args.upload_slots.is_some() {
            self.upload_slots = args.upload_slots;
        }
        set(&mut self.optimistic_slots, args.optimistic_slots);
        set(&mut self.max_connections, args.max_connections);
        if args.max_connections_per_shard.is_some() {
            self.max_connections_per_shard = args.max_connections_per_shard;
        }
        set(&mut self.max_per_ip, args.max_per_ip);
        set(&mut self.ipv6_prefix_len, args.ipv6_prefix_len);
        set(&mut self.max_requests, args.max_requests);
        if let Some(mode) = &args.choker {
            self.choker = mode.parse().map_err(|reason| ConfigError::Flag {
                flag: "--choker",
                value: mode.clone(),
                reason,
            })?;
        }
        flag_duration(
            &mut self.rechoke_interval,
            "--rechoke-interval",
            &args.rechoke_interval,
        )?;
        flag_duration(
            &mut self.optimistic_interval,
            "--optimistic-interval",
            &args.optimistic_interval,
        )?;
        flag_duration(
            &mut self.handshake_timeout,
            "--handshake-timeout",
            &args.handshake_timeout,
        )?;
        flag_duration(&mut self.idle_timeout, "--idle-timeout", &args.idle_timeout)?;
        flag_duration(&mut self.send_timeout, "--send-timeout", &args.send_timeout)?;
        // Boolean flags can only switch a feature on.
        self.send_zc |= args.send_zc;
        if let Some(e) = &args.encryption {
            self.encryption = e.parse().map_err(|reason: String| ConfigError::Flag {
                flag: "--encryption",
                value: e.clone(),
                reason,
            })?;
        }
        if let Some(m) = &args.utp {
            self.utp = m.parse().map_err(|reason: String| ConfigError::Flag {
                flag: "--utp",
                value: m.clone(),
                reason,
            })?;
        }
        self.skip_verify |= args.skip_verify;
        if let Some(metrics) = &args.metrics {
            self.metrics = metrics.parse().map_err(|reason| ConfigError::Flag {
                flag: "--metrics",
                value: metrics.clone(),
                reason,
            })?;
        }
        if let Some(level) = &args.log_level {
            self.log_level = level.clone();
        }
        if let Some(t) = &args.tracker_listen {
            self.tracker_listen = Some(t.parse().map_err(|reason| ConfigError::Flag {
                flag: "--tracker-listen",
                value: t.clone(),
                reason,
            })?);
        }
        if let Some(url) = &args.public_url {
            self.public_url = Some(url.clone());
        }
        if let Some(ip) = &args.announce_ip {
            self.announce_ip = Some(ip.parse().map_err(|_| ConfigError::Flag {
                flag: "--announce-ip",
                value: ip.clone(),
                reason: "not an IPv4 or IPv6 address".to_owned(),
            })?);
        }
        if args.announce_port.is_some() {
            self.announce_port = args.announce_port;
        }
        if !args.trackers.is_empty() {
            self.trackers = args.trackers.clone();
        }
        if !args.peers.is_empty() {
            for a in &args.peers {
                let port = a.rsplit_once(':').and_then(|(h, p)| {
                    (!h.is_empty()).then_some(())?;
                    p.parse::<u16>().ok().filter(|&p| p > 0)
                });
                if port.is_none() {
                    return Err(ConfigError::Flag {
                        flag: "--peer",
                        value: a.clone(),
                        reason: "expected IP:PORT or HOST:PORT, e.g. 10.0.0.1:6881, [::1]:6881 or origin.example:6881".to_owned(),
                    });
                }
            }
            self.peers = args.peers.clone();
        }
        self.apply_control_args(args)?;
        self.super_seed |= args.super_seed;
        self.apply_ledger_args(args)?;
        if let Some(rate) = &args.upload_rate_limit {
            self.upload_rate_limit =
                rate.parse()
                    .map_err(|e: RateParseError| ConfigError::Flag {
                        flag: "--upload-rate-limit",
                        value: rate.clone(),
                        reason: e.why.to_owned()
                            + "; write e.g. \"5MB/s\", \"40MiB/s\", \"1Gbit\" or \"unlimited\"",
                    })?;
        }
        Ok(())
    }

    /// Check the settings fit together; the error names the key and the fix.
    fn apply_ledger_args(&mut self, args: &ServeArgs) -> Result<(), ConfigError> {
        let l = &mut self.ledger;
        if let Some(d) = &args.ledger {
            l.dir = Some(d.clone());
        }
        if let Some(k) = &args.ledger_key {
            l.key = Some(k.clone());
        }
        if !args.ledger_peers.is_empty() {
            l.peers = args.ledger_peers.clone();
        }
        if let Some(p) = &args.ledger_policy {
            l.policy = Some(p.clone());
        }
        l.required |= args.ledger_required;
        if let Some(k) = &args.ledger_cosign_key {
            l.cosign_key = Some(k.clone());
        }
        if let Some(a) = &args.ledger_listen {
            l.listen = a.parse().map_err(|_| ConfigError::Flag {
                flag: "--ledger-listen",
                value: a.clone(),
                reason: "expected IP:PORT".to_owned(),
            })?;
        }
        flag_duration(
            &mut l.pull_interval,
            "--ledger-pull-interval",
            &args.ledger_pull_interval,
        )?;
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        fn at_least_one(key: &'static str, value: u64) -> Result<(), ConfigError> {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    key,
                    value: "0".to_owned(),
                    reason: "must be at least 1",
                });
            }
            Ok(())
        }
        fn positive(key: &'static str, value: Duration) -> Result<(), ConfigError> {
            if value.is_zero() {
                return Err(ConfigError::Invalid {
                    key,
                    value: "\"0s\"".to_owned(),
                    reason: "must be longer than zero",
                });
            }
            Ok(())
        }
        if self.dir.is_none() && self.torrents.is_empty() {
            return Err(ConfigError::NothingToSeed);
        }
        at_least_one("shards", self.shards as u64)?;
        if self.shards > MAX_SHARDS {
            return Err(ConfigError::Invalid {
                key: "shards",
                value: self.shards.to_string(),
                reason: "more than 1024 shards; use one per core",
            });
        }
        at_least_one("max_connections", self.max_connections.into())?;
        if let Some(per_shard) = self.max_connections_per_shard {
            at_least_one("max_connections_per_shard", per_shard.into())?;
        }
        at_least_one("max_per_ip", self.max_per_ip.into())?;
        if self.ipv6_prefix_len > 128 {
            return Err(ConfigError::Invalid {
                key: "ipv6_prefix_len",
                value: self.ipv6_prefix_len.to_string(),
                reason: "an IPv6 prefix has 0 to 128 bits (64 counts a /64 as one source)",
            });
        }
        at_least_one("max_requests", self.max_requests.into())?;
        positive("rechoke_interval", self.rechoke_interval)?;
        positive("optimistic_interval", self.optimistic_interval)?;
        positive("handshake_timeout", self.handshake_timeout)?;
        positive("idle_timeout", self.idle_timeout)?;
        positive("send_timeout", self.send_timeout)?;
        if self.announce_port == Some(0) {
            return Err(ConfigError::Invalid {
                key: "announce_port",
                value: "0".to_owned(),
                reason: "must be a real port (1-65535)",
            });
        }
        let extra = self.extra_tracker_tiers();
        for url in self.public_url.iter().chain(extra.iter().flatten()) {
            if let Err(e) = crate::tracker::proto::TrackerUrl::parse(url) {
                return Err(ConfigError::Flag {
                    flag: "--public-url/--tracker",
                    value: url.clone(),
                    reason: e.to_string(),
                });
            }
        }
        self.validate_control()?;
        if let Some(key) = self.per_torrent.keys().find(|k| k.trim().is_empty()) {
            return Err(ConfigError::Invalid {
                key: "per_torrent",
                value: format!("{key:?}"),
                reason: "an empty key names no torrent; use a torrent's name or info-hash hex",
            });
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log_level).is_err() {
            return Err(ConfigError::Invalid {
                key: "log_level",
                value: format!("{:?}", self.log_level),
                reason: "not a log filter: use error, warn, info, debug, trace or \
                         directives like `ringseed=debug`",
            });
        }
        Ok(())
    }

    /// Connection limit of one shard: the configured value, else the
    /// box-wide `max_connections` (a shard may hold them all: the kernel
    /// does not spread connections evenly).
    pub fn connections_per_shard(&self) -> u32 {
        self.max_connections_per_shard
            .unwrap_or(self.max_connections)
    }

    /// Upload slots for the whole box: as configured, else 256 uncapped and
    /// [`CAPPED_UPLOAD_SLOTS`] per shard under `--upload-rate-limit`. A
    /// capped seed that unchokes everyone splits its rate into trickles:
    /// every peer holds a half-finished piece and nobody has one to trade
    /// (measured with 100 leechers all capped at the seed's 1.5 MB/s: the
    /// last finished at 4.2x the lower bound with every peer unchoked and
    /// 2.0x with 4 slots; super-seeding 3.4x vs 1.4x).
    ///
    /// A capped super-seed gets at least [`CAPPED_SUPER_SEED_UPLOAD_SLOTS`]:
    /// it offers each unchoked peer a different piece, so its few slots are
    /// how many pieces spread at once; with 4 on one shard the origin sat
    /// waiting for the offered pieces to spread (30 libtorrent leechers,
    /// 5 MB/s each and on the seed, one shard, last/bound: 5 slots 1.74x,
    /// 9 slots 1.39x, 17 slots 1.31x, 33 slots 1.33x).
    pub fn effective_upload_slots(&self) -> u32 {
        self.upload_slots
            .unwrap_or(if self.upload_rate_limit.is_unlimited() {
                256
            } else {
                let slots = CAPPED_UPLOAD_SLOTS.saturating_mul(self.shards.max(1) as u32);
                if self.super_seed {
                    slots.max(CAPPED_SUPER_SEED_UPLOAD_SLOTS)
                } else {
                    slots
                }
            })
    }

    /// The choker settings for one shard: the box's `upload_slots` split
    /// evenly over shards (rounded up; 0 stays "unlimited").
    pub fn choker_config(&self) -> ChokerConfig {
        ChokerConfig {
            upload_slots: div_ceil(self.effective_upload_slots(), self.shards),
            optimistic_slots: self.optimistic_slots,
            mode: self.choker,
            rechoke_interval: self.rechoke_interval,
            optimistic_interval: self.optimistic_interval,
            ..ChokerConfig::default()
        }
    }

    /// The state directory: `state_dir` if set, else `DIR/.ringseed`; `None`
    /// when only `--torrent` pairs are seeded and no `state_dir` is set.
    pub fn effective_state_dir(&self) -> Option<PathBuf> {
        self.state_dir
            .clone()
            .or_else(|| self.dir.as_ref().map(|dir| dir.join(".ringseed")))
    }
}

impl ServeConfig {
    /// Where the embedded tracker listens, if it runs: the configured
    /// address, else `0.0.0.0:6969` when seeding a `dir`.
    pub fn effective_tracker_listen(&self) -> Option<SocketAddr> {
        match self.tracker_listen {
            Some(TrackerListen::Off) => None,
            Some(TrackerListen::Listen(addr)) => Some(addr),
            None => self.dir.as_ref().map(|_| DEFAULT_TRACKER_LISTEN),
        }
    }

    /// The announce URL for torrents `serve DIR` creates: `public_url`, else
    /// one built from the embedded tracker's address (`None` when it is off
    /// and no `public_url` is set).
    pub fn effective_public_url(&self) -> Option<String> {
        if let Some(url) = &self.public_url {
            return Some(url.clone());
        }
        let listen = self.effective_tracker_listen()?;
        let ip = self
            .announce_ip
            .or_else(|| Some(listen.ip()).filter(|ip| !ip.is_unspecified()))
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
        Some(format!(
            "http://{}/announce",
            SocketAddr::new(ip, listen.port())
        ))
    }

    /// The port we announce: `announce_port`, else the listen port.
    pub fn effective_announce_port(&self) -> u16 {
        self.announce_port.unwrap_or(self.listen.port())
    }

    /// `trackers` as BEP 12 tiers (commas split URLs within a tier).
    pub fn extra_tracker_tiers(&self) -> Vec<Vec<String>> {
        self.trackers
            .iter()
            .map(|tier| {
                tier.split(',')
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .filter(|tier| !tier.is_empty())
            .collect()
    }
}

const MAX_SHARDS: usize = 1024;

fn div_ceil(total: u32, parts: usize) -> u32 {
    let parts = u32::try_from(parts.max(1)).unwrap_or(u32::MAX);
    total.div_ceil(parts)
}

fn set<T>(field: &mut T, flag: Option<T>) {
    if let Some(value) = flag {
        *field = value;
    }
}

fn flag_duration(
    field: &mut Duration,
    flag: &'static str,
    value: &Option<String>,
) -> Result<(), ConfigError> {
    if let Some(text) = value {
        *field = parse_duration(text).map_err(|reason| ConfigError::Flag {
            flag,
            value: text.clone(),
            reason,
        })?;
    }
    Ok(())
}

/// Parse `"500ms"`, `"10s"`, `"2m"`, `"1h"` or a bare integer (seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let hint = "write a whole number with a unit, like \"500ms\", \"10s\", \"2m\" or \"1h\"";
    if digits.is_empty() {
        return Err(format!("{text:?} is not a duration: {hint}"));
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is too large for a duration: {hint}"))?;
    let per_unit_ms: u64 = match unit.trim() {
        "ms" => 1,
        "" | "s" => 1000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        other => return Err(format!("{text:?} has unknown unit {other:?}: {hint}")),
    };
    n.checked_mul(per_unit_ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{text:?} is too large for a duration: {hint}"))
}

/// Serde for durations: a string with a unit or integer seconds.
mod duration_serde {
    use std::time::Duration;

    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        let ms = d.as_millis();
        if ms % 1000 == 0 {
            s.serialize_str(&format!("{}s", ms / 1000))
        } else {
            s.serialize_str(&format!("{ms}ms"))
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        struct DurationVisitor;

        impl Visitor<'_> for DurationVisitor {
            type Value = Duration;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration like \"10s\" or \"500ms\", or whole seconds")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
                Ok(Duration::from_secs(v))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
                u64::try_from(v)
                    .map(Duration::from_secs)
                    .map_err(|_| E::custom(format!("duration {v} is negative")))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                super::parse_duration(v).map_err(E::custom)
            }
        }

        d.deserialize_any(DurationVisitor)
    }
}

use crate::swarm::ratelimit::RateParseError;
use crate::wire::mse::EncryptionPolicy;

fn deserialize_encryption<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<EncryptionPolicy, D::Error> {
    let s = <String as serde::Deserialize>::deserialize(d)?;
    s.parse().map_err(serde::de::Error::custom)
}

fn serialize_encryption<S: serde::Serializer>(
    p: &EncryptionPolicy,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(p.as_str())
}

use crate::utp::UtpMode;

fn deserialize_utp<'de, D: serde::Deserializer<'de>>(d: D) -> Result<UtpMode, D::Error> {
    let s = <String as serde::Deserialize>::deserialize(d)?;
    s.parse().map_err(serde::de::Error::custom)
}

fn serialize_utp<S: serde::Serializer>(m: &UtpMode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(m.as_str())
}
