//! Observability: shard-local counters and histograms, exported to
//! Prometheus by a thread of its own.
//!
//! - [`names`]: every metric name (`ringseed_<thing>_<unit>`, `_total` for counters).
//! - [`histogram`]: shard-local hdrhistograms (no locks on the hot path),
//!   published once a second with `try_lock`, merged at scrape time into
//!   real Prometheus histograms with fixed buckets.
//! - [`exporter`]: [`MetricsServer`], the `/metrics` HTTP endpoint.
//! - [`process`]: RSS, fds, threads and CPU from `/proc/self`; [`VerifyStats`].
//!
//! The counters themselves live in [`crate::engine::stats::ShardStats`]
//! (one per shard, the shard is the only writer). The exporter only reads.
//!
//! Not here yet: a per-torrent label (to come behind an opt-in flag with a
//! cap on the number of torrents; by default no series is labelled by
//! torrent or peer, since unbounded label sets hurt Prometheus).

pub mod exporter;
pub mod histogram;
pub mod names;
pub mod process;
pub mod torrents;

pub use exporter::{MetricsServer, MetricsSources, Renderer};
pub use histogram::{HistogramSet, LocalHist, ShardHistograms, SharedHistograms};
pub use process::{ProcessStats, VerifyStats};
pub use torrents::{TorrentChange, TorrentCounts, TorrentState};

/// Which build is running: exported as `ringseed_build_info{version,commit} 1`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildInfo {
    pub version: &'static str,
    /// Short git commit, or "unknown" when built outside a git checkout.
    pub commit: &'static str,
}

impl BuildInfo {
    /// This binary's version and the commit `build.rs` recorded.
    pub fn current() -> Self {
        BuildInfo {
            version: env!("CARGO_PKG_VERSION"),
            commit: env!("RINGSEED_GIT_COMMIT"),
        }
    }
}
