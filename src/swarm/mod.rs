//! Sans-IO seeding policies: who gets an upload slot, and when.
//!
//! What this module does:
//! - [`choker`]: the seed-mode choker, one instance per shard. It is a pure
//!   state machine: the engine feeds it connection, interest and upload
//!   events with `now` passed in, and applies the [`choker::ChokeDecision`]s
//!   it hands back by sending `choke` / `unchoke` messages.
//!
//! What it deliberately does not do:
//! - No I/O, no clock, no threads, no global state: everything is driven by
//!   the caller, so it is tested deterministically with a virtual clock.
//! - No leecher-side tit-for-tat: ringseed is a seed and never downloads, so
//!   choking is decided by what *we* upload, not by what peers send us.
//! - No cross-shard coordination: each shard chokes its own connections with
//!   its own share of the upload slots (`upload_slots / shards`, see
//!   [`crate::config::ServeConfig::choker_config`]).
//! - No super-seeding (BEP 16) or piece offers: those come with their own
//!   issue and will live beside the choker here.
//! - No rate limiting: an egress cap is a separate policy (own issue).

pub mod choker;
