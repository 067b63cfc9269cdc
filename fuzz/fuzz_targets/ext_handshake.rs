//! `cargo fuzz run ext_handshake`: see `ringseed_fuzz::checks::check_ext_handshake` for the
//! input format and the invariants checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringseed_fuzz::checks::check_ext_handshake(data);
});
