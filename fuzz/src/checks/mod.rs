//! Invariant checks shared by the fuzz targets (`fuzz/fuzz_targets/*.rs`)
//! and by the regression tests (`tests/fuzz_regressions.rs`, which includes
//! this file with `#[path]`), so a crash input replays through exactly the
//! checks that found it.
//!
//! Depends on `ringseed`, `sha1`, `sha2` and `std` only: the root package's
//! tests can include it without new dev-dependencies. Every function panics
//! (with a message naming the broken invariant) when the code under test
//! misbehaves, and returns normally for any input the code handles correctly,
//! including inputs it rightly rejects.

mod formats;
mod ledger;
mod peer;
mod tracker;
mod utp;
mod wire;

pub use formats::{check_bencode, check_magnet, check_metainfo};
pub use ledger::check_ledger;
pub use peer::{
    check_peer_input, decode_peer_input, run_peer, PeerOp, PeerSetup, UNKNOWN_HASH, V1_HASH,
    V2_HASH,
};
pub use tracker::check_tracker;
pub use utp::{check_utp_conn, check_utp_packet};
pub use wire::{check_ext_handshake, check_handshake, check_wire_stream};
