//! Trackers: announcing our torrents to trackers, and an embedded tracker.
//!
//! - [`proto`]: sans-IO HTTP (BEP 3/7/23/48) and UDP (BEP 15) codecs.
//! - [`client`]: the [`Announcer`], one thread that announces every torrent
//!   to its trackers (BEP 12 tiers, backoff, `stopped` on shutdown).
//! - [`swarms`]: the embedded tracker's sans-IO peer table.
//! - [`server`]: the [`EmbeddedTracker`], HTTP and UDP on one port number.
//!
//! All of it runs on its own few threads with blocking std networking,
//! never on the shards: trackers are contacted every ~30 minutes per
//! torrent, which is no load, and a slow tracker must never stall serving.

pub mod client;
pub mod proto;
pub mod server;
pub mod swarms;
mod transport;

pub use client::{AnnounceConfig, AnnounceCounters, AnnounceTarget, Announcer};
pub use proto::InfoHash;
pub use server::{EmbeddedTracker, SeedPeer, TrackerConfig};
