//! Swarm mode (`ringseed-loadtest swarm`): N synthetic leechers that
//! download from a seed *and upload to each other*, to measure how fast a
//! whole swarm completes and how much of it the origin had to send.
//!
//! The download policy (rarest-first picker, tit-for-tat choker, per-peer
//! pipelines, smart ban) is the library's [`ringseed::swarm::download`],
//! the same engine the server fetches with; this module drives it.
//!
//! - [`wire`]: one connection's framing and send queue.
//! - [`node`]: one leecher (all its connections), sans-IO.
//! - [`store`]: the one copy of verified content the process uploads from.
//! - [`sim`]: an in-memory swarm with a virtual clock, for tests.
//! - [`driver`]: the epoll event loop that runs every leecher of the run on
//!   one thread over real loopback sockets.
//! - [`discovery`]: how leechers find each other (the torrent's tracker, or
//!   the tool handing out addresses).
//! - [`config`], [`report`]: flags, the report, the lower bound.
//!
//! What it deliberately does not do: DHT, PEX, encryption, uTP, v2-only
//! torrents (pieces are checked with v1 SHA-1; hybrid torrents work),
//! magnet links, more than one torrent per run.

pub mod config;
pub mod discovery;
pub mod driver;
pub mod node;
pub mod report;
pub mod sim;
pub mod store;
pub mod wire;

/// A node's handle for one of its connections (an index it reuses).
pub use ringseed::swarm::download::PeerKey;

pub use config::SwarmArgs;
pub use driver::run_swarm;
pub use report::main_swarm;
