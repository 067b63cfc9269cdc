//! Fuzz regressions: every input a fuzz target (`fuzz/`) crashed on, replayed
//! through the same invariant checks (`fuzz/src/checks/`, included below), plus
//! the trickiest seed-shaped inputs, so `cargo test` guards what fuzzing found
//! without a nightly toolchain. Add a crash as inline bytes with a comment
//! saying what was wrong.

#[allow(dead_code, unused_imports)]
#[path = "../fuzz/src/checks/mod.rs"]
mod checks;

use std::time::Duration;

use checks::{PeerOp, PeerSetup, UNKNOWN_HASH, V1_HASH, V2_HASH};
use ringseed::metainfo::Magnet;
use ringseed::wire::codec::{BlockRequest, HashRequest, Message};
use ringseed::wire::CloseReason;

// --- crashes found by fuzzing -------------------------------------------------

/// magnet_parse, found in 10 s: `percent_decode` used `u8::from_str_radix`,
/// which accepts a leading sign, so `%+2` decoded as 0x02 instead of being
/// rejected as bad percent-encoding. Fixed in `src/metainfo/magnet.rs`.
#[test]
fn magnet_percent_sign_is_not_a_hex_digit() {
    let uri = "magnet:?xt=urn:btih:F235BA6083159E077B5264CE5A9A4298CE5DF7C8&dn=%+2";
    checks::check_magnet(uri.as_bytes());
    assert!(Magnet::parse(uri).is_err());
    // The fuzzer's original input.
    checks::check_magnet(
        b"magnet:?xt=urn:btih:F235BA6083159E077B5264CE5A9A4298CE5DF7C8&xtMAGNET:?N&?N<\x00=%+2\
          &W\x87=%+2&W\x87=%+2&W=MA%+14961519bcd3e8bf58159aee1239d56dfb1a51d&dn=a+b\
          &x.pe=127.0.0.1:6881&tr\x01\x00dp://t.\xa8example:6969",
    );
}

/// Same root cause in `parse_hex`: `%2B` decodes to `+`, and "+f" parsed as
/// the hex byte 0x0f, so a btih with signs in it named some torrent.
#[test]
fn magnet_hash_with_sign_is_rejected() {
    let btih = format!("magnet:?xt=urn:btih:%2Bf{}", "0".repeat(38));
    checks::check_magnet(btih.as_bytes());
    assert!(Magnet::parse(&btih).is_err());
    let btmh = format!("magnet:?xt=urn:btmh:1220%2B1{}", "a".repeat(62));
    checks::check_magnet(btmh.as_bytes());
    assert!(Magnet::parse(&btmh).is_err());
}

// --- tricky inputs through the same checks -----------------------------------

#[test]
fn fixture_torrents_pass_every_format_check() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "torrent") {
            let data = std::fs::read(&path).unwrap();
            checks::check_bencode(&data);
            checks::check_metainfo(&data);
            n += 1;
        }
    }
    assert!(n >= 6, "fixtures missing");
}

#[test]
fn bencode_edge_cases() {
    for input in [
        &b"i-9223372036854775808e"[..],
        b"i9223372036854775808e",
        b"d1:ai1e1:ai2ee",
        b"d1:bi1e1:ai2ee",
        b"0:",
        b"00:",
        b"i1ei2e",
        b"18446744073709551616:x",
        b"d3:keyle1:x",
    ] {
        checks::check_bencode(input);
    }
    let deep = [vec![b'l'; 70], vec![b'e'; 70]].concat();
    checks::check_bencode(&deep);
    checks::check_bencode(&deep[..130]);
}

#[test]
fn wire_stream_splits_and_limits() {
    let mut stream = Vec::new();
    Message::Extended {
        id: 0,
        payload: b"d1:md11:ut_metadatai1eee",
    }
    .encode(&mut stream);
    Message::Interested.encode(&mut stream);
    Message::Request(BlockRequest {
        piece: 1,
        begin: 16384,
        len: 16384,
    })
    .encode(&mut stream);
    Message::Port(6881).encode(&mut stream);
    Message::Hashes {
        request: HashRequest {
            pieces_root: [7; 32],
            base_layer: 0,
            index: 0,
            length: 2,
            proof_layers: 0,
        },
        hashes: &[9; 64],
    }
    .encode(&mut stream);
    Message::Unknown {
        id: 99,
        payload: b"?",
    }
    .encode(&mut stream);
    stream.extend_from_slice(&[0, 0, 0, 0]);
    for selector in 0..8u8 {
        // Split every 1, 3 and 7 bytes, and not at all.
        for splits in [&[][..], &[1; 15][..], &[3; 15][..], &[7, 0, 7, 0, 7][..]] {
            let mut data = vec![selector, splits.len() as u8];
            data.extend_from_slice(splits);
            data.extend_from_slice(&stream);
            checks::check_wire_stream(&data);
        }
    }
    // Length prefix 2^32-1, and a wrong fixed length (a 14-byte request).
    checks::check_wire_stream(b"\x05\x00\xff\xff\xff\xff\x07");
    checks::check_wire_stream(b"\x00\x01\x02\x00\x00\x00\x0e\x06\x00\x00\x00\x00\x00");
}

#[test]
fn handshakes_and_ext_handshakes() {
    let mut hs = vec![19];
    hs.extend_from_slice(b"BitTorrent protocol");
    hs.extend_from_slice(&[0, 0, 0, 0, 0, 0x10, 0, 0x15]);
    hs.extend_from_slice(&[0x11; 40]);
    for k in 0..=hs.len() {
        checks::check_handshake(&hs[..k]);
    }
    checks::check_handshake(b"\x13BitTorrent protocoX");
    for ext in [
        &b"d1:md11:ut_metadatai2e6:ut_pexi1ee13:metadata_sizei1015e1:pi6881e4:reqqi500e1:v18:libtorrent 2.1.1.0e"[..],
        b"d4:reqqi250e1:md6:ut_pexi1eee",
        b"d1:md11:ut_metadatai256eee",
        b"d1:pi65536ee",
        b"d1:v40:0123456789012345678901234567890\xe2\x82\xac123456e",
        b"d1:xlllllllllllllllllllllllllllleeeeeeeeeeeeeeeeeeeeeeeeeeeee",
        b"d1:md1:al1:xee1:bi3eee",
        b"d1:md1:ai3e1:ai4eee",
    ] {
        checks::check_ext_handshake(ext);
    }
}

fn setup(reqq: u32, start_unchoked: bool) -> PeerSetup {
    PeerSetup {
        piece_length: 32 * 1024,
        num_pieces: 5,
        last_piece_len: 1000,
        have_pattern: [0b1101_1000, 0, 0, 0],
        has_v2: true,
        metadata_size: Some(1015),
        reqq,
        max_message_len: 4096,
        start_unchoked,
    }
}

fn req(piece: u32, block: u32, len: u32) -> PeerOp {
    PeerOp::msg(Message::Request(BlockRequest {
        piece,
        begin: block * 16384,
        len,
    }))
}

/// A fast peer: requests beyond reqq, for a piece we lack, past the last
/// piece's end, cancels, a choke mid-pipeline, a hash request, keep-alive
/// timing; every request must get exactly one answer.
#[test]
fn peer_session_fast_extension_accounting() {
    let mut ops = vec![
        PeerOp::handshake(V1_HASH, true, true),
        PeerOp::Drain(usize::MAX),
        PeerOp::msg(Message::Interested),
    ];
    for block in 0..2 {
        ops.push(req(0, block, 16384));
        ops.push(req(1, block, 16384));
    }
    ops.extend([
        req(2, 0, 16384), // not verified: reject
        req(4, 0, 1000),  // the whole last piece
        req(4, 0, 1001),  // past the end: reject
        req(0, 0, 0),     // zero length: reject
        PeerOp::msg(Message::Cancel(BlockRequest {
            piece: 1,
            begin: 0,
            len: 16384,
        })),
        PeerOp::Pop(2),
        PeerOp::Drain(7),
        PeerOp::SetChoked(true),
        req(0, 0, 16384), // while choked: reject
        PeerOp::msg(Message::HashRequest(HashRequest {
            pieces_root: [1; 32],
            base_layer: 0,
            index: 0,
            length: 2,
            proof_layers: 0,
        })),
        PeerOp::SetChoked(false),
        req(3, 1, 16384),
        PeerOp::Tick(Duration::from_secs(91)), // keep-alive due
        PeerOp::Drain(usize::MAX),
        PeerOp::Tick(Duration::from_secs(20)), // not idle yet (111 s)
    ]);
    // Unchoked before the handshake; reqq 3 so the queue fills.
    assert_eq!(checks::run_peer(&setup(3, true), &ops), None);
}

/// A peer without the fast extension gets no rejects and is closed for an
/// out-of-range request; one asking for an unknown hash is closed at once.
#[test]
fn peer_session_without_fast_extension() {
    let ops = [
        PeerOp::handshake(V2_HASH, false, false),
        req(0, 0, 16384), // choked: silently dropped
        PeerOp::SetChoked(false),
        req(0, 0, 16384),
        req(2, 0, 16384), // not verified: silently dropped
        PeerOp::Pop(9),
        req(4, 1, 16384), // out of range: close
    ];
    assert_eq!(
        checks::run_peer(&setup(8, false), &ops),
        Some(CloseReason::BadRequest)
    );
    let ops = [PeerOp::handshake(UNKNOWN_HASH, true, true)];
    assert_eq!(
        checks::run_peer(&setup(8, false), &ops),
        Some(CloseReason::UnknownInfoHash)
    );
}

/// The handshake and every message split byte by byte, then idle timeout.
#[test]
fn peer_session_byte_at_a_time() {
    let PeerOp::Bytes(hs) = PeerOp::handshake(V1_HASH, true, true) else {
        unreachable!()
    };
    let mut stream = hs;
    for op in [req(0, 0, 16384), req(3, 1, 16384)] {
        if let PeerOp::Bytes(b) = op {
            stream.extend(b);
        }
    }
    let mut ops: Vec<PeerOp> = stream.iter().map(|b| PeerOp::Bytes(vec![*b])).collect();
    ops.push(PeerOp::Drain(1));
    ops.push(PeerOp::Pop(1));
    ops.push(PeerOp::Tick(Duration::from_secs(121)));
    assert_eq!(
        checks::run_peer(&setup(4, true), &ops),
        Some(CloseReason::IdleTimeout)
    );
}

/// The checked-in peer_state seeds, in their byte format.
#[test]
fn peer_state_seeds_replay() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds/peer_state");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        let (_, ops) = checks::decode_peer_input(&data).expect("seed too short");
        assert!(!ops.is_empty());
        checks::check_peer_input(&data);
        n += 1;
    }
    assert!(n >= 4);
}

#[test]
fn tracker_parser_seeds() {
    // Every checked-in seed of the tracker_parse target, whole and cut at
    // every length (a truncated datagram or body must be rejected cleanly).
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/tracker_parse");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("tracker_parse seeds") {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        for cut in 0..=data.len() {
            checks::check_tracker(&data[..cut]);
        }
        n += 1;
    }
    assert!(n >= 10, "tracker_parse seeds missing");
}

#[test]
fn ledger_parser_seeds() {
    // Every checked-in seed of the ledger_parse target (real notes, blocks,
    // checkpoints, proofs, equivocations), whole and cut at every length.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/ledger_parse");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("ledger_parse seeds") {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        for cut in 0..=data.len() {
            checks::check_ledger(&data[..cut]);
        }
        n += 1;
    }
    assert!(n >= 6, "ledger_parse seeds missing");
}

/// The checked-in utp_packet and utp_conn seeds, whole and cut at every
/// length, and every one-byte mutation of each packet seed.
#[test]
fn utp_seeds_replay() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let mut n = 0;
    for entry in std::fs::read_dir(root.join("utp_packet")).expect("utp_packet seeds") {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        for cut in 0..=data.len() {
            checks::check_utp_packet(&data[..cut]);
        }
        for i in 0..data.len() {
            for bit in 0..8 {
                let mut m = data.clone();
                m[i] ^= 1 << bit;
                checks::check_utp_packet(&m);
            }
        }
        n += 1;
    }
    for entry in std::fs::read_dir(root.join("utp_conn")).expect("utp_conn seeds") {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        for cut in 0..=data.len() {
            checks::check_utp_conn(&data[..cut]);
        }
        n += 1;
    }
    assert!(n >= 10, "utp seeds missing");
}
