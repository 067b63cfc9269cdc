//! ringseed: a high-performance BitTorrent seeding server for Linux.
//!
//! Rooms (see README.md and DESIGN notes in each module):
//! - [`bencode`]: strict decoder that keeps raw spans, and an encoder.
//! - [`metainfo`]: `.torrent` v1/v2/hybrid parse, validate, magnet links.
//! - [`create`]: making a `.torrent` from files (hashing them with `storage`).
//! - [`storage`]: a torrent's files on disk, piece <-> file spans, hashing, verify.
//! - [`wire`]: sans-IO peer protocol (codec and per-peer state machine).
//! - [`swarm`]: sans-IO seeding policies (choker, limits).
//! - [`tracker`]: announcing to trackers, and the embedded tracker.
//! - [`utp`]: sans-IO uTP (BEP 29): packets, refusing with resets.
//! - [`engine`]: thread-per-core io_uring shards that serve peers.
//! - [`prepare`]: from the serve configuration to verified, servable
//!   torrents, before the shards start (and for torrents added later).
//! - [`fetch`]: fetch, then seed: downloads a torrent's missing pieces from
//!   the swarm while the shards serve the verified ones.
//! - [`metrics`]: shard-local counters and histograms, Prometheus exporter.
//! - [`control`]: the control plane's HTTP server (hyper), where the control API and
//!   the ledger's endpoints are mounted.
//! - [`config`]: `ringseed serve` settings: defaults, TOML file, flags.
//! - [`commands`]: the `ringseed` subcommands, called from `main.rs`.

pub mod bencode;
pub mod cli;
pub mod commands;
pub mod config;
pub mod control;
pub mod create;
pub mod engine;
pub mod fetch;
pub mod ledger;
pub mod metainfo;
pub mod metrics;
pub mod prepare;
pub mod storage;
pub mod swarm;
pub mod tracker;
pub mod utp;
pub mod wire;
