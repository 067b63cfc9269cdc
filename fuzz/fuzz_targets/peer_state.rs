//! `cargo fuzz run peer_state`: see `ringseed_fuzz::checks::check_peer_input` for the
//! input format and the invariants checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringseed_fuzz::checks::check_peer_input(data);
});
