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
//! - [`ratelimit`]: the egress cap (`--upload-rate-limit`): a limiter per
//!   shard shared fairly among its connections, drawing from one
//!   [`token_pool`] for the box, and the rate parser.
//! - [`download`]: the download side (piece picker, per-peer pipelines,
//!   the leecher's tit-for-tat choker, smart ban), shared with the load
//!   generator. The seed-mode [`choker`] decides by what *we* upload; the
//!   leecher's decides by what peers give us.
//!
//! What it deliberately does not do:
//! - No I/O, no clock, no threads, no global state: everything is driven by
//!   the caller, so it is tested deterministically with a virtual clock.
//! - Choking is per shard: each shard chokes its own connections with its
//!   own share of the upload slots (`upload_slots / shards`, see
//!   [`crate::config::ServeConfig::choker_config`]). Super-seeding and the
//!   rate limits are box-wide: they share per-torrent atomics
//!   ([`superseed::SharedSpread`]) and token pools ([`token_pool`]) that
//!   shards touch per offer and per grant, never per block.

pub mod choker;
pub mod download;
pub mod ratelimit;
pub mod superseed;
pub mod token_pool;
