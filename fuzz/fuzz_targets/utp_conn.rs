//! `cargo fuzz run utp_conn`: see `ringseed_fuzz::checks::check_utp_conn` for the
//! input format and the invariants checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringseed_fuzz::checks::check_utp_conn(data);
});
