//! Tracker codecs never panic on arbitrary bytes (proptest).

use proptest::prelude::*;
use ringseed::tracker::proto::{http, udp};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn tracker_decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400), tid in any::<u32>(), action in 0u32..4, v6 in any::<bool>()) {
        let _ = udp::decode_response(&bytes, tid, action, v6, 50);
        let _ = udp::decode_request(&bytes);
        let _ = http::split_response(&bytes);
        let _ = http::parse_announce_body(&bytes, 50);
        let _ = http::parse_scrape_body(&bytes, &[[0; 20]]);
        let _ = http::parse_query(&bytes);
        let _ = http::parse_announce_query(&bytes);
        let _ = http::parse_scrape_query(&bytes, 74);
    }

    #[test]
    fn tracker_udp_responses_with_our_header_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..200), action in 0u32..5) {
        let mut d = action.to_be_bytes().to_vec();
        d.extend_from_slice(&7u32.to_be_bytes());
        d.extend_from_slice(&tail);
        let _ = udp::decode_response(&d, 7, action.min(3), false, 50);
        let _ = udp::decode_response(&d, 7, action.min(3), true, 50);
    }
}
