//! Fuzz harness support for ringseed: the invariant checks every target
//! runs. They live in [`checks`] so that `tests/fuzz_regressions.rs` can
//! replay crash inputs through the very same code under `cargo test`.

pub mod checks;
