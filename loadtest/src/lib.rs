//! ringseed-loadtest: synthetic BitTorrent leechers that flood a seeder
//! (ringseed, libtorrent, anything speaking BEP 3) and measure it, plus
//! `compare`, which measures ringseed against libtorrent and a protocol-less
//! io_uring ceiling on the same machine.
//!
//! - [`leecher`]: the sans-IO per-connection state machine.
//! - [`net`]: one pinned epoll thread per `--threads`, driving leechers
//!   over TCP; [`utpnet`] the same over uTP (`--transport utp`).
//! - [`run`], [`report`], [`stats`]: a run, its measurements and report.
//! - [`compare`]: the comparison harness, with its baselines [`ceiling`]
//!   (io_uring, protocol-less) and [`epollseed`] (epoll + writev), both on
//!   [`minimal`].
//! - [`swarm`]: swarm mode, leechers that also upload to each other.
//!
//! The default mode does not upload, seed, or talk to trackers; [`swarm`]
//! does all three.

pub mod ceiling;
pub mod cli;
pub mod compare;
pub mod config;
pub mod epollseed;
pub mod leecher;
pub mod minimal;
pub mod net;
pub mod report;
pub mod rng;
pub mod run;
pub mod stats;
pub mod swarm;
pub mod testkit;
pub mod testseed;
pub mod torrents;
pub mod utpnet;
