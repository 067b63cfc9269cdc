//! bencode property tests: round trips and never panicking on any input.

use std::collections::BTreeMap;

use proptest::prelude::*;
use ringseed::bencode::{decode, decode_prefix, encode, OwnedValue};

fn value() -> impl Strategy<Value = OwnedValue> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(OwnedValue::Int),
        proptest::collection::vec(any::<u8>(), 0..24).prop_map(OwnedValue::Bytes),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(OwnedValue::List),
            proptest::collection::btree_map(
                proptest::collection::vec(any::<u8>(), 0..8),
                inner,
                0..6
            )
            .prop_map(|m: BTreeMap<Vec<u8>, OwnedValue>| OwnedValue::Dict(m)),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decode_of_encode_is_identity(v in value()) {
        let bytes = v.to_bytes();
        let decoded = decode(&bytes).expect("canonical encoding must decode");
        prop_assert_eq!(OwnedValue::from(&decoded.value), v);
        prop_assert_eq!(decoded.raw, &bytes[..]);
        // ...and re-encoding a decoded value gives the input back.
        let mut again = Vec::new();
        encode(&decoded, &mut again);
        prop_assert_eq!(again, bytes);
    }

    #[test]
    fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(v) = decode(&bytes) {
            // Anything accepted is canonical: it re-encodes byte for byte.
            let mut again = Vec::new();
            encode(&v, &mut again);
            prop_assert_eq!(again, bytes.clone());
        }
        let _ = decode_prefix(&bytes);
    }

    #[test]
    fn never_panics_on_mutated_valid_input(v in value(), pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut bytes = v.to_bytes();
        let i = pos.index(bytes.len());
        bytes[i] = byte;
        if let Ok(d) = decode(&bytes) {
            let mut again = Vec::new();
            encode(&d, &mut again);
            prop_assert_eq!(again, bytes);
        }
    }

    #[test]
    fn prefix_reports_consumed_length(v in value(), tail in proptest::collection::vec(any::<u8>(), 0..16)) {
        let bytes = v.to_bytes();
        let mut input = bytes.clone();
        input.extend_from_slice(&tail);
        let (decoded, used) = decode_prefix(&input).unwrap();
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(OwnedValue::from(&decoded.value), v);
    }
}
