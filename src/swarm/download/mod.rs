//! The download side of a box: sans-IO policies for fetching a torrent from
//! the swarm. One engine, used by the server (`ringseed fetch`, and fetch
//! then seed once the engine core drives it) and by the load generator's
//! swarm leechers (`ringseed-loadtest swarm`), which is where it was born.
//!
//! - [`picker`]: which block to ask which peer for: rarest first with a
//!   random tie-break, partial pieces first, BEP 6 suggestions and
//!   allowed-fast pieces, endgame (duplicate requests, the caller cancels
//!   the copies); it assembles pieces and hands them to a verify function.
//! - [`peer`]: the per-peer download state: what it has, whether it
//!   chokes us, outstanding requests, its measured rate and the request
//!   pipeline sized from it.
//! - [`tit_for_tat`]: who we upload to while downloading (the peers that
//!   give us most, plus a rotating optimistic unchoke; round robin once
//!   complete).
//! - [`smart_ban`]: which peer sent the bad blocks of a failed piece, and
//!   bans after repeated offences.
//! - [`rng`]: the seedable PRNG for tie-breaks.
//!
//! What it deliberately does not do: no I/O, no clock (`now: Instant` is
//! passed in, so tests run on a virtual clock), no threads; no hashing of
//! its own (the caller's verify function checks v1 SHA-1 or v2 merkle, see
//! `storage::writer`); no peer discovery, DHT or PEX; no piece priorities.

pub mod peer;
pub mod picker;
pub mod rng;
pub mod smart_ban;
pub mod tit_for_tat;

/// A downloader's handle for one of its connections (an index it reuses).
pub type PeerKey = u32;
