//! Command-line interface (clap). Every `serve` flag also has a config-file
//! key (see `config::ServeConfig`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "ringseed",
    version,
    about = "High-performance BitTorrent seeding server"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a .torrent file for a file or a directory.
    Create(CreateArgs),
    /// Show what a .torrent file contains.
    Inspect(InspectArgs),
    /// Check data on disk against a .torrent file, piece by piece.
    Verify(VerifyArgs),
    /// Seed torrents to BitTorrent peers.
    Serve(Box<ServeArgs>),
    /// The release ledger: a signed, append-only history of releases.
    Ledger(LedgerArgs),
    /// List, add or remove the torrents of a running server (control API).
    Torrents(TorrentsArgs),
}

#[derive(Debug, Args)]
pub struct LedgerArgs {
    #[command(subcommand)]
    pub command: LedgerCommand,
}

#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Make a new Ed25519 key (publisher, or with --cosigner a box's
    /// cosigning key); prints its verifier key (C2SP vkey).
    Init {
        /// Where to write the private key (refuses to overwrite).
        #[arg(long)]
        key: PathBuf,
        /// Key name: the ledger's origin for a publisher, the box's name for
        /// a cosigner (no spaces, no '+').
        #[arg(long, default_value = "ringseed.example/releases")]
        name: String,
        /// A cosigning key (tlog-cosignature/v1) instead of a publisher key.
        #[arg(long)]
        cosigner: bool,
    },
    /// Append one block with these torrents' releases.
    Publish {
        /// The .torrent files to publish.
        #[arg(required = true)]
        torrents: Vec<PathBuf>,
        #[arg(long)]
        ledger: PathBuf,
        /// The publisher's private key file.
        #[arg(long)]
        key: PathBuf,
        /// Version label recorded for every release of this block (default:
        /// the torrent's name).
        #[arg(long)]
        label: Option<String>,
        /// Also push the new block to this box's ledger endpoint, e.g.
        /// http://10.0.0.2:7881 (repeatable); the boxes gossip it on.
        #[arg(long = "push", value_name = "URL")]
        push: Vec<String>,
    },
    /// List the blocks and releases.
    Show {
        #[arg(long)]
        ledger: PathBuf,
    },
    /// Walk the chain: every signature, link and root (exit 1 on a fork).
    Verify {
        #[arg(long)]
        ledger: PathBuf,
    },
    /// Write an offline proof (tlog-proof) that a torrent is in the ledger.
    Prove {
        torrent: PathBuf,
        #[arg(long)]
        ledger: PathBuf,
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct TorrentsArgs {
    #[command(subcommand)]
    pub command: TorrentsCommand,
    /// The server's control API.
    #[arg(
        long,
        global = true,
        value_name = "URL",
        default_value = "http://127.0.0.1:9101"
    )]
    pub server: String,
    /// File with the control API's bearer token (its --control-token-file).
    #[arg(long, global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Print the server's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum TorrentsCommand {
    /// Every torrent: name, state, size, pieces, peers, uploaded, info-hash.
    List,
    /// Serve DATA: verified against --torrent FILE, or a hybrid torrent is
    /// created for it. Returns once it is served.
    Add {
        /// The content (a path on the server's machine).
        data: PathBuf,
        /// An existing .torrent for DATA (read here, sent to the server).
        #[arg(long, value_name = "FILE")]
        torrent: Option<PathBuf>,
    },
    /// Take a torrent out (its peers are drained, trackers told `stopped`).
    Remove {
        /// v1 or v2 info-hash in hex (or the torrent's name).
        infohash: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TorrentKind {
    V1,
    V2,
    Hybrid,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// File or directory to make a torrent of.
    pub path: PathBuf,
    /// Where to write the .torrent file.
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    /// Make a v1+v2 hybrid torrent (the default).
    #[arg(long, conflicts_with_all = ["v1", "v2"])]
    pub hybrid: bool,
    /// Make a v1-only torrent (BEP 3).
    #[arg(long, conflicts_with = "v2")]
    pub v1: bool,
    /// Make a v2-only torrent (BEP 52).
    #[arg(long)]
    pub v2: bool,
    /// Piece length in bytes (power of two, at least 16384; suffixes K/M
    /// accepted). Default: chosen from the total size.
    #[arg(long, value_name = "BYTES")]
    pub piece_length: Option<String>,
    /// Tracker URL. Each `--tracker` is its own BEP 12 tier (tried in
    /// order); a value with commas (`url1,url2`) puts those URLs in one tier.
    #[arg(long = "tracker", value_name = "URL")]
    pub trackers: Vec<String>,
    /// BEP 19 web seed URL (repeatable).
    #[arg(long = "web-seed", value_name = "URL")]
    pub web_seeds: Vec<String>,
    /// Set the private flag (BEP 27).
    #[arg(long)]
    pub private: bool,
    /// Free-text comment.
    #[arg(long)]
    pub comment: Option<String>,
    /// Leave out `creation date` (for reproducible output).
    #[arg(long)]
    pub no_date: bool,
    /// Hashing threads (default: number of cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

impl CreateArgs {
    pub fn kind(&self) -> TorrentKind {
        if self.v1 {
            TorrentKind::V1
        } else if self.v2 {
            TorrentKind::V2
        } else {
            TorrentKind::Hybrid
        }
    }
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The .torrent file.
    pub torrent: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The .torrent file.
    pub torrent: PathBuf,
    /// The content: the file of a single-file torrent or the top directory of
    /// a multi-file one (a directory containing an entry with the torrent's
    /// name is accepted too). May be left out with --proof (check the
    /// ledger proof only, before downloading).
    #[arg(required_unless_present = "proof")]
    pub data: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Hashing threads (default: number of cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// The publisher's verifier key (vkey text or a file holding it).
    #[arg(long, requires = "proof", value_name = "VKEY")]
    pub ledger_key: Option<String>,
    /// An offline ledger proof (`ringseed ledger prove`) that the torrent is
    /// in the publisher's history; checked before anything else.
    #[arg(long, requires = "ledger_key", value_name = "PROOF")]
    pub proof: Option<PathBuf>,
    /// Cosignature policy (`cosigner VKEY` lines, `quorum K`).
    #[arg(long, requires = "proof", value_name = "FILE")]
    pub ledger_policy: Option<PathBuf>,
}

/// `ringseed serve` flags. Defaults live in `config::ServeConfig`.
#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// Seed every file and top-level directory in DIR.
    pub dir: Option<PathBuf>,
    /// An existing .torrent to seed, or a magnet link (`--magnet URI`; its
    /// metadata is fetched from --peer, its x.pe hints or its trackers).
    /// Pair with --data; repeatable.
    #[arg(long = "torrent", visible_alias = "magnet", value_name = "FILE|URI")]
    pub torrents: Vec<PathBuf>,
    /// The content for the --torrent at the same position.
    #[arg(long = "data", value_name = "PATH")]
    pub data: Vec<PathBuf>,
    /// TOML config file; flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Where created torrents and resume records go (default DIR/.ringseed).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Peer listen address (default 0.0.0.0:6881).
    #[arg(long)]
    pub listen: Option<String>,
    /// Number of shards, one pinned thread each (default: number of cores).
    #[arg(long)]
    pub shards: Option<usize>,
    /// Upload slots for the whole box; 0 = unchoke everyone. Default 256, or 4 per shard
    /// with --upload-rate-limit (a capped seed spreads pieces faster to a few peers at a time),
    /// at least 16 when it also super-seeds
    #[arg(long)]
    pub upload_slots: Option<u32>,
    /// Maximum peer connections in total.
    #[arg(long)]
    pub max_connections: Option<u32>,
    /// Maximum peer connections from one source, box-wide (an IPv4
    /// address, or an IPv6 prefix of --ipv6-prefix-len bits).
    #[arg(long)]
    pub max_per_ip: Option<u32>,
    /// Leading bits of an IPv6 address that count as one source for
    /// --max-per-ip (default 64; 128 counts every address).
    #[arg(long, value_name = "BITS")]
    pub ipv6_prefix_len: Option<u8>,
    /// Maximum outstanding requests per peer (advertised as `reqq`).
    #[arg(long)]
    pub max_requests: Option<u32>,
    /// Use SEND_ZC (zero-copy sends; for real NICs, not loopback).
    #[arg(long)]
    pub send_zc: bool,
    /// After an MSE (encrypted) handshake: prefer-plaintext (default: keep
    /// the zero-copy path, RC4 only for peers that insist),
    /// require-plaintext, or allow-rc4 (RC4 whenever offered).
    #[arg(long, value_name = "POLICY")]
    pub encryption: Option<String>,
    /// uTP (BEP 29) on UDP at the listen port: refuse (default: answer
    /// every uTP connect with a reset so clients fall back to TCP at once)
    /// or off (no UDP socket; clients that try uTP first wait ~4 s).
    #[arg(long, value_name = "MODE")]
    pub utp: Option<String>,
    /// Skip the start-up verification (trust the data). Dangerous.
    #[arg(long)]
    pub skip_verify: bool,
    /// Prometheus endpoint address, or `off` (default 127.0.0.1:9100).
    #[arg(long)]
    pub metrics: Option<String>,
    /// Maximum peer connections one shard takes, on top of the box-wide
    /// --max-connections (default: no per-shard limit).
    #[arg(long)]
    pub max_connections_per_shard: Option<u32>,
    /// Seed choker: round_robin (rotate slots) or fastest_upload.
    #[arg(long, value_name = "MODE")]
    pub choker: Option<String>,
    /// How often upload slots are re-decided, e.g. `10s` (default 10s).
    #[arg(long, value_name = "DURATION")]
    pub rechoke_interval: Option<String>,
    /// How often the optimistic unchoke moves on, e.g. `30s` (default 30s).
    #[arg(long, value_name = "DURATION")]
    pub optimistic_interval: Option<String>,
    /// Optimistic unchoke slots on top of --upload-slots (default 1; 0 = off).
    #[arg(long)]
    pub optimistic_slots: Option<u32>,
    /// Close peers that have not completed the handshake in this time (default 10s).
    #[arg(long, value_name = "DURATION")]
    pub handshake_timeout: Option<String>,
    /// Close peers that sent nothing for this long (default 120s).
    #[arg(long, value_name = "DURATION")]
    pub idle_timeout: Option<String>,
    /// Close peers whose send made no progress for this long: they stopped
    /// reading (default 30s).
    #[arg(long, value_name = "DURATION")]
    pub send_timeout: Option<String>,
    /// Log filter: a level (error, warn, info, debug, trace) or tracing
    /// directives like `ringseed=debug` (default info).
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Embedded tracker address (HTTP and UDP, same port), or `off`
    /// (default 0.0.0.0:6969 when seeding a DIR, off otherwise).
    #[arg(long, value_name = "ADDR")]
    pub tracker_listen: Option<String>,
    /// Announce URL put into torrents created for DIR (default
    /// http://<announce-ip or tracker IP or 127.0.0.1>:<tracker port>/announce).
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
    /// IP address to announce to trackers instead of the one they see (NAT, containers).
    #[arg(long, value_name = "IP")]
    pub announce_ip: Option<String>,
    /// Port to announce to trackers (default: the --listen port).
    #[arg(long, value_name = "PORT")]
    pub announce_port: Option<u16>,
    /// Extra tracker to announce to, besides the torrent's own (repeatable;
    /// each is a BEP 12 tier, commas put URLs in one tier).
    #[arg(long = "tracker", value_name = "URL")]
    pub trackers: Vec<String>,
    /// A peer to fetch missing pieces from, e.g. an origin box
    /// (repeatable). A --torrent whose --data is missing or incomplete is
    /// fetched from these and from its trackers' peers, served as a partial
    /// seed meanwhile, then seeded.
    #[arg(long = "peer", value_name = "IP:PORT")]
    pub peers: Vec<String>,
    /// Super-seed (BEP 16): advertise no pieces, offer each peer one piece
    /// at a time and the next once it has spread (or after 5 s). Per
    /// torrent: `[per_torrent."NAME"] super_seed = true` in --config.
    #[arg(long)]
    pub super_seed: bool,
    /// Upload cap for the whole box, e.g. `5MB/s`, `40MiB/s`, `1Gbit`, or
    /// `unlimited` (default). Counts piece messages; one pool for the whole
    /// box, shared fairly among its peers whatever shard they are on. Per torrent: `[per_torrent."NAME"]
    /// upload_rate_limit = "..."` in --config.
    #[arg(long, value_name = "RATE")]
    pub upload_rate_limit: Option<String>,
    /// Keep and gossip the release ledger in DIR (see `ringseed ledger`).
    #[arg(long, value_name = "DIR")]
    pub ledger: Option<PathBuf>,
    /// The publisher's verifier key (vkey or a file holding it); needed the
    /// first time DIR is used.
    #[arg(long, value_name = "VKEY")]
    pub ledger_key: Option<String>,
    /// Another box's ledger HTTP base URL, e.g. http://10.0.0.2:7881 (repeatable).
    #[arg(long = "ledger-peer", value_name = "URL")]
    pub ledger_peers: Vec<String>,
    /// Cosigner policy file (`cosigner VKEY` lines): whose cosignatures to keep.
    #[arg(long, value_name = "FILE")]
    pub ledger_policy: Option<PathBuf>,
    /// Serve only torrents that are in the ledger.
    #[arg(long)]
    pub ledger_required: bool,
    /// This box's cosigning key (`ringseed ledger init --cosigner`).
    #[arg(long, value_name = "FILE")]
    pub ledger_cosign_key: Option<PathBuf>,
    /// Address of the ledger HTTP endpoints (default 0.0.0.0:7881).
    #[arg(long, value_name = "ADDR")]
    pub ledger_listen: Option<String>,
    /// How often a random peer's ledger checkpoint is pulled (default 1s).
    #[arg(long, value_name = "DURATION")]
    pub ledger_pull_interval: Option<String>,
    /// Control API address (GET/POST/DELETE /torrents), or `off`
    /// (default 127.0.0.1:9101, skipped with a warning if taken).
    #[arg(long, value_name = "ADDR")]
    pub control: Option<String>,
    /// File holding the control API's bearer token; required when --control
    /// is not a loopback address.
    #[arg(long, value_name = "FILE")]
    pub control_token_file: Option<PathBuf>,
    /// Keep serving the peers of a removed torrent this long, e.g. `30s`
    /// (default 0s: closed once their in-flight sends complete).
    #[arg(long, value_name = "DURATION")]
    pub drain_grace: Option<String>,
    /// `serve DIR`: pick up a new entry once it has been quiet this long
    /// (default 2s; at once when it arrives by an atomic rename).
    #[arg(long, value_name = "DURATION")]
    pub settle: Option<String>,
    /// A directory the control API may serve data from (repeatable; the
    /// served DIR and the paths given at start are always allowed).
    #[arg(long = "allow-root", value_name = "DIR")]
    pub allow_roots: Vec<PathBuf>,
}
