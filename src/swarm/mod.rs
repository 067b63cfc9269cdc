//! Sans-IO seeding policies: who gets an upload slot, and when.
//!
//! What this module does:
//! - [`choker`]: the seed-mode choker, one instance per shard. It is a pure
//!   state machine: the engine feeds it connection, interest and upload
//!   events with `now` passed in, and applies the [`choker::ChokeDecision`]s
//!   it hands back by sending `choke` / `unchoke` messages.
//! - [`superseed`]: super-seeding (BEP 16), one selector per torrent per
//!   shard: which piece to offer each peer, and when, so that the origin
//!   sends each piece about once and peers trade the rest.
//! - [`ratelimit`]: the egress cap (`--upload-rate-limit`): a token bucket
//!   per shard shared fairly among its connections, and the rate parser.
//! - [`download`]: the download side (piece picker, per-peer pipelines,
//!   the leecher's tit-for-tat choker, smart ban), shared with the load
//!   generator. The seed-mode [`choker`] decides by what *we* upload; the
//!   leecher's decides by what peers give us.
//!
//! What it deliberately does not do:
//! - No I/O, no clock, no threads, no global state: everything is driven by
//!   the caller, so it is tested deterministically with a virtual clock.
//! - No cross-shard coordination: each shard chokes its own connections with
//!   its own share of the upload slots (`upload_slots / shards`, see
//!   [`crate::config::ServeConfig::choker_config`]).
//! - No cross-shard coordination for super-seeding or rate limits either:
//!   each shard gets `1/shards` of the rate and sees only its own peers.

pub mod choker;
pub mod download;
pub mod ratelimit;
pub mod superseed;
