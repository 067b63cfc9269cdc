//! Codec tests: every message at every split point, byte-exact re-encoding,
//! and property tests (round trips, never panic on arbitrary input).

use proptest::prelude::*;
use ringseed::wire::codec::*;

const MAX: u32 = 1 << 20;

fn root(seed: u8) -> [u8; 32] {
    let mut r = [0u8; 32];
    for (i, b) in r.iter_mut().enumerate() {
        *b = seed.wrapping_add(i as u8);
    }
    r
}

fn samples() -> Vec<Message<'static>> {
    let hr = HashRequest {
        pieces_root: root(7),
        base_layer: 0,
        index: 4,
        length: 8,
        proof_layers: 3,
    };
    let br = BlockRequest {
        piece: 3,
        begin: 16384,
        len: 16384,
    };
    static DATA: [u8; 40] = [0xab; 40];
    static HASHES: [u8; 64] = [0x11; 64];
    vec![
        Message::KeepAlive,
        Message::Choke,
        Message::Unchoke,
        Message::Interested,
        Message::NotInterested,
        Message::Have(0xdead_beef),
        Message::Bitfield(&DATA[..3]),
        Message::Request(br),
        Message::Piece {
            index: 1,
            begin: 2,
            data: &DATA,
        },
        Message::Piece {
            index: 1,
            begin: 2,
            data: &[],
        },
        Message::Cancel(br),
        Message::Port(6881),
        Message::Suggest(9),
        Message::HaveAll,
        Message::HaveNone,
        Message::Reject(br),
        Message::AllowedFast(12),
        Message::Extended {
            id: 0,
            payload: b"d1:v3:abce",
        },
        Message::Extended {
            id: 3,
            payload: &[],
        },
        Message::HashRequest(hr),
        Message::Hashes {
            request: hr,
            hashes: &HASHES,
        },
        Message::HashReject(hr),
        Message::Unknown {
            id: 99,
            payload: &DATA[..5],
        },
    ]
}

#[test]
fn every_message_at_every_split_point() {
    for msg in samples() {
        let mut bytes = Vec::new();
        msg.encode(&mut bytes);
        assert_eq!(bytes.len(), msg.encoded_len(), "{msg:?}");
        for k in 0..bytes.len() {
            match decode(&bytes[..k], MAX) {
                Ok(Decoded::Incomplete { needed }) => {
                    assert!(
                        needed >= 1 && k + needed <= bytes.len(),
                        "{msg:?} at {k}: {needed}"
                    )
                }
                other => panic!("{msg:?} split at {k}: {other:?}"),
            }
        }
        let mut with_tail = bytes.clone();
        with_tail.extend_from_slice(&[0, 0, 0, 0, 0xff]);
        match decode(&with_tail, MAX) {
            Ok(Decoded::Message { msg: got, consumed }) => {
                assert_eq!(got, msg);
                assert_eq!(consumed, bytes.len());
                let mut again = Vec::new();
                got.encode(&mut again);
                assert_eq!(again, bytes, "{msg:?} re-encodes byte for byte");
            }
            other => panic!("{msg:?}: {other:?}"),
        }
    }
}

#[test]
fn known_wire_bytes() {
    let mut out = Vec::new();
    Message::Request(BlockRequest {
        piece: 1,
        begin: 0x4000,
        len: 0x4000,
    })
    .encode(&mut out);
    assert_eq!(
        out,
        [0, 0, 0, 13, 6, 0, 0, 0, 1, 0, 0, 0x40, 0, 0, 0, 0x40, 0]
    );
    assert_eq!(
        piece_header(1, 0x4000, 0x4000),
        [0, 0, 0x40, 9, 7, 0, 0, 0, 1, 0, 0, 0x40, 0]
    );
    let mut full = piece_header(5, 6, 3).to_vec();
    full.extend_from_slice(b"abc");
    assert_eq!(
        decode(&full, MAX),
        Ok(Decoded::Message {
            msg: Message::Piece {
                index: 5,
                begin: 6,
                data: b"abc"
            },
            consumed: 16
        })
    );
}

#[test]
fn oversize_prefix_fails_before_buffering() {
    assert_eq!(
        decode(&[0xff, 0xff, 0xff, 0xff], MAX),
        Err(WireError::MessageTooLong {
            len: u32::MAX,
            max: MAX
        })
    );
    assert_eq!(
        decode(&[0, 0, 0], MAX),
        Ok(Decoded::Incomplete { needed: 1 })
    );
    assert!(decode(&[0, 0, 0x40, 0x0e], 0x4000).is_err());
}

#[test]
fn fixed_size_messages_with_wrong_length_fail_at_the_id() {
    // have with length 6: rejected as soon as the id is seen.
    assert!(matches!(
        decode(&[0, 0, 0, 6, 4], MAX),
        Err(WireError::WrongLength { id: 4, .. })
    ));
    // choke with a payload, request one byte short, port too long
    assert!(decode(&[0, 0, 0, 2, 0, 0], MAX).is_err());
    assert!(decode(&[0, 0, 0, 12, 6], MAX).is_err());
    assert!(decode(&[0, 0, 0, 4, 9], MAX).is_err());
    assert!(
        decode(&[0, 0, 0, 1, 20], MAX).is_err(),
        "extended without ext id"
    );
    assert!(
        decode(&[0, 0, 0, 8, 7], MAX).is_err(),
        "piece shorter than its header"
    );
    let mut hashes = vec![0, 0, 0, 50, 22];
    hashes.extend_from_slice(&[0; 49]);
    assert_eq!(
        decode(&hashes, MAX),
        Err(WireError::BadHashesLength { len: 1 })
    );
}

#[test]
fn handshake_split_points_and_bits() {
    let reserved = ReservedFlags {
        fast: true,
        extension: true,
        v2: true,
        dht: true,
    }
    .to_bytes();
    assert_eq!(reserved, [0, 0, 0, 0, 0, 0x10, 0, 0x15]);
    let h = Handshake {
        reserved,
        info_hash: [1; 20],
        peer_id: [2; 20],
    };
    let bytes = h.encode();
    for k in 0..HANDSHAKE_LEN {
        assert_eq!(
            Handshake::decode(&bytes[..k]),
            Ok(HandshakeDecoded::Incomplete {
                needed: HANDSHAKE_LEN - k
            })
        );
    }
    let Ok(HandshakeDecoded::Complete(got)) = Handshake::decode(&bytes) else {
        panic!()
    };
    assert_eq!(got, h);
    assert!(
        got.supports_fast() && got.supports_extensions() && got.supports_v2() && got.supports_dht()
    );
    assert_eq!(got.encode(), bytes);
    let plain = Handshake {
        reserved: [0; 8],
        ..h
    };
    assert_eq!(plain.flags(), ReservedFlags::default());
    // Garbage is refused on the first wrong byte, not after 68 bytes.
    assert_eq!(
        Handshake::decode(&[19, b'B', b'x']),
        Err(WireError::BadProtocolString)
    );
    assert_eq!(
        Handshake::decode(&[0x80]),
        Err(WireError::BadProtocolString)
    );
}

#[derive(Debug, Clone)]
struct Owned {
    tag: u8,
    a: u32,
    b: u32,
    c: u32,
    d: u32,
    root: [u8; 32],
    data: Vec<u8>,
    small: u8,
}

fn owned() -> impl Strategy<Value = Owned> {
    (
        0u8..21,
        any::<[u32; 4]>(),
        any::<[u8; 32]>(),
        proptest::collection::vec(any::<u8>(), 0..300),
        any::<u8>(),
    )
        .prop_map(|(tag, [a, b, c, d], root, data, small)| Owned {
            tag,
            a,
            b,
            c,
            d,
            root,
            data,
            small,
        })
}

fn build(o: &Owned) -> Message<'_> {
    let br = BlockRequest {
        piece: o.a,
        begin: o.b,
        len: o.c,
    };
    let hr = HashRequest {
        pieces_root: o.root,
        base_layer: o.a,
        index: o.b,
        length: o.c,
        proof_layers: o.d,
    };
    match o.tag {
        0 => Message::KeepAlive,
        1 => Message::Choke,
        2 => Message::Unchoke,
        3 => Message::Interested,
        4 => Message::NotInterested,
        5 => Message::Have(o.a),
        6 if !o.data.is_empty() => Message::Bitfield(&o.data),
        7 => Message::Request(br),
        8 => Message::Piece {
            index: o.a,
            begin: o.b,
            data: &o.data,
        },
        9 => Message::Cancel(br),
        10 => Message::Port(o.a as u16),
        11 => Message::Suggest(o.a),
        12 => Message::HaveAll,
        13 => Message::HaveNone,
        14 => Message::Reject(br),
        15 => Message::AllowedFast(o.a),
        16 => Message::Extended {
            id: o.small,
            payload: &o.data,
        },
        17 => Message::HashRequest(hr),
        18 => Message::Hashes {
            request: hr,
            hashes: &o.data[..o.data.len() / 32 * 32],
        },
        19 => Message::HashReject(hr),
        _ => {
            let id = match o.small {
                0..=9 | 13..=17 | 20..=23 => 200,
                x => x,
            };
            Message::Unknown {
                id,
                payload: &o.data,
            }
        }
    }
}

proptest! {
    #[test]
    fn round_trip_any_message_stream(msgs in proptest::collection::vec(owned(), 1..8), split in any::<prop::sample::Index>()) {
        let msgs: Vec<Message<'_>> = msgs.iter().map(build).collect();
        let mut stream = Vec::new();
        for m in &msgs { m.encode(&mut stream); }
        // Decode the stream fed in two chunks via a small reassembly buffer.
        let cut = split.index(stream.len() + 1);
        let mut pending: Vec<u8> = stream[..cut].to_vec();
        let mut rest = &stream[cut..];
        let mut got = Vec::new();
        loop {
            match decode(&pending, MAX).unwrap() {
                Decoded::Message { msg, consumed } => {
                    let mut enc = Vec::new();
                    msg.encode(&mut enc);
                    prop_assert_eq!(&enc[..], &pending[..consumed]);
                    got.push(enc);
                    pending.drain(..consumed);
                }
                Decoded::Incomplete { needed } => {
                    if rest.is_empty() { break; }
                    let take = needed.min(rest.len());
                    pending.extend_from_slice(&rest[..take]);
                    rest = &rest[take..];
                }
            }
        }
        prop_assert!(pending.is_empty());
        prop_assert_eq!(got.len(), msgs.len());
        for (m, enc) in msgs.iter().zip(&got) {
            let mut want = Vec::new();
            m.encode(&mut want);
            prop_assert_eq!(&want, enc);
        }
    }

    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), max in 0u32..400) {
        let mut buf = &bytes[..];
        while let Ok(Decoded::Message { consumed, .. }) = decode(buf, max) {
            prop_assert!(consumed >= 4 && consumed <= buf.len());
            buf = &buf[consumed..];
        }
        let _ = Handshake::decode(&bytes);
    }
}
