//! The serving engine: one pinned thread per core ("shard"), each owning its
//! io_uring, its listener socket (SO_REUSEPORT), its connections and its
//! counters. Nothing is shared between shards but read-only torrent state
//! and a shutdown flag.

pub mod stats;
pub mod uring;
