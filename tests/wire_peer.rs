//! PeerState scenarios with a virtual clock, and never-panic properties.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use ringseed::wire::codec::{
    decode, BlockRequest, Decoded, Handshake, HandshakeDecoded, Message, HANDSHAKE_LEN,
};
use ringseed::wire::ext::parse_ext_handshake;
use ringseed::wire::{Bitfield, CloseReason, PeerConfig, PeerState, RejectReason};
use support::catalog::{MemCatalog, MemTorrent};
use support::leecher::handshake_bytes;

const V1: [u8; 20] = [0x11; 20];
const V2_TRUNC: [u8; 20] = [0x22; 20];
const PIECE: u32 = 32 * 1024;
const TOTAL: u64 = 4 * 32 * 1024 + 1000; // 5 pieces, last one 1000 bytes

struct Harness {
    cat: MemCatalog,
    peer: PeerState,
    now: Instant,
}

fn config() -> PeerConfig {
    PeerConfig {
        reqq: 4,
        ..PeerConfig::default()
    }
}

fn remote() -> SocketAddr {
    "127.0.0.1:40000".parse().unwrap()
}

impl Harness {
    fn new(mut t: MemTorrent) -> Self {
        t.v2 = Some(V2_TRUNC);
        let mut cat = MemCatalog::default();
        cat.add(t);
        let now = Instant::now();
        Harness {
            cat,
            peer: PeerState::new(now, &config(), remote()),
            now,
        }
    }
    fn full() -> Self {
        Self::new(MemTorrent::v1(V1, PIECE, TOTAL))
    }
    fn feed(&mut self, bytes: &[u8]) -> Result<(), CloseReason> {
        self.peer.handle_bytes(self.now, bytes, &self.cat)
    }
    fn send(&mut self, msg: Message<'_>) -> Result<(), CloseReason> {
        let mut b = Vec::new();
        msg.encode(&mut b);
        self.feed(&b)
    }
    /// Drains control bytes; returns the messages as Debug strings (the
    /// handshake, if present, as "Handshake").
    fn drain(&mut self) -> Vec<String> {
        let bytes = self.peer.poll_transmit().to_vec();
        self.peer.advance_transmit(bytes.len());
        let mut out = Vec::new();
        let mut buf = &bytes[..];
        if let Ok(HandshakeDecoded::Complete(h)) = Handshake::decode(buf) {
            out.push(format!("Handshake {:?}", h.flags()));
            buf = &buf[HANDSHAKE_LEN..];
        }
        while !buf.is_empty() {
            match decode(buf, 1 << 20) {
                Ok(Decoded::Message { msg, consumed }) => {
                    out.push(match msg {
                        Message::Extended { id: 0, .. } => "ExtHandshake".to_string(),
                        m => format!("{m:?}"),
                    });
                    buf = &buf[consumed..];
                }
                other => panic!("bad output {other:?}"),
            }
        }
        out
    }
    fn handshake(&mut self, fast: bool) -> Vec<String> {
        self.feed(&handshake_bytes(V1, fast, true)).unwrap();
        self.drain()
    }
}

fn req(piece: u32, begin: u32, len: u32) -> BlockRequest {
    BlockRequest { piece, begin, len }
}

#[test]
fn handshake_replies_with_bits_ext_and_have_all() {
    let mut h = Harness::full();
    // One byte at a time.
    for b in handshake_bytes(V1, true, true) {
        h.feed(&[b]).unwrap();
    }
    let bytes = h.peer.poll_transmit().to_vec();
    let Ok(HandshakeDecoded::Complete(ours)) = Handshake::decode(&bytes) else {
        panic!()
    };
    assert_eq!(ours.info_hash, V1);
    assert!(ours.supports_fast() && ours.supports_extensions() && ours.supports_v2());
    let Ok(Decoded::Message {
        msg: Message::Extended { id: 0, payload },
        ..
    }) = decode(&bytes[HANDSHAKE_LEN..], 1 << 20)
    else {
        panic!("ext handshake expected")
    };
    let ext = parse_ext_handshake(payload).unwrap();
    assert_eq!(ext.reqq, Some(4));
    assert!(ext.client().starts_with("ringseed "));
    assert!(payload.windows(11).any(|w| w == b"6:yourip4:\x7f"));
    assert_eq!(h.drain()[2..], ["HaveAll"]);
    assert_eq!(h.peer.torrent(), Some(ringseed::wire::TorrentId(0)));
}

#[test]
fn v2_handshake_by_truncated_hash_echoes_it() {
    let mut h = Harness::full();
    h.feed(&handshake_bytes(V2_TRUNC, false, false)).unwrap();
    let bytes = h.peer.poll_transmit().to_vec();
    let Ok(HandshakeDecoded::Complete(ours)) = Handshake::decode(&bytes) else {
        panic!()
    };
    assert_eq!(ours.info_hash, V2_TRUNC);
    // Non-fast, no extensions: handshake then a full bitfield.
    assert_eq!(
        h.drain(),
        [
            "Handshake ReservedFlags { fast: true, extension: true, v2: true, dht: false }",
            "Bitfield([248])"
        ]
    );
}

#[test]
fn unknown_hash_and_garbage_close() {
    let mut h = Harness::full();
    assert_eq!(
        h.feed(&handshake_bytes([9; 20], true, true)),
        Err(CloseReason::UnknownInfoHash)
    );
    let mut h = Harness::full();
    assert_eq!(
        h.feed(b"GET / HTTP/1.1\r\n"),
        Err(CloseReason::BadHandshake)
    );
}

#[test]
fn partial_haves_bitfield_and_have_none() {
    let mut t = MemTorrent::v1(V1, PIECE, TOTAL);
    t.have = Bitfield::new(5);
    let mut h = Harness::new(t);
    assert_eq!(h.handshake(true)[2..], ["HaveNone"]);
    let mut t = MemTorrent::v1(V1, PIECE, TOTAL);
    t.have = Bitfield::new(5);
    t.have.set(1);
    let mut h = Harness::new(t);
    assert_eq!(h.handshake(true)[2..], ["Bitfield([64])"]);
    // Requests for a piece we lack are rejected (fast).
    h.send(Message::Unchoke).unwrap();
    h.peer.set_choked(h.now, false);
    h.drain();
    h.send(Message::Request(req(0, 0, 16384))).unwrap();
    assert_eq!(
        h.drain(),
        [format!("{:?}", Message::Reject(req(0, 0, 16384)))]
    );
    assert_eq!(h.peer.counters().rejected(RejectReason::NotHave), 1);
}

#[test]
fn unchoked_requests_are_queued_in_order_and_cancel_removes() {
    let mut h = Harness::full();
    h.handshake(true);
    h.send(Message::Interested).unwrap();
    assert!(h.peer.wants_unchoke());
    h.peer.set_choked(h.now, false);
    assert_eq!(h.drain(), ["Unchoke"]);
    assert!(!h.peer.wants_unchoke());
    for r in [req(0, 0, 16384), req(0, 16384, 16384), req(4, 0, 1000)] {
        h.send(Message::Request(r)).unwrap();
    }
    h.send(Message::Cancel(req(0, 16384, 16384))).unwrap();
    // Fast peers get a reject for the cancelled request.
    assert_eq!(
        h.drain(),
        [format!("{:?}", Message::Reject(req(0, 16384, 16384)))]
    );
    assert_eq!(h.peer.pop_block(), Some(req(0, 0, 16384)));
    assert_eq!(h.peer.pop_block(), Some(req(4, 0, 1000)));
    assert_eq!(h.peer.pop_block(), None);
    let c = h.peer.take_counters();
    assert_eq!(
        (c.requests_received, c.cancels, c.cancels_matched),
        (3, 1, 1)
    );
    assert_eq!(h.peer.take_counters().requests_received, 0);
}

#[test]
fn choked_requests_rejected_if_fast_ignored_otherwise() {
    let mut h = Harness::full();
    h.handshake(true);
    h.send(Message::Request(req(0, 0, 16384))).unwrap();
    assert_eq!(
        h.drain(),
        [format!("{:?}", Message::Reject(req(0, 0, 16384)))]
    );
    assert_eq!(h.peer.pop_block(), None);

    let mut h = Harness::full();
    h.handshake(false);
    h.send(Message::Request(req(0, 0, 16384))).unwrap();
    assert!(h.drain().is_empty());
    assert_eq!(h.peer.pop_block(), None);
    assert_eq!(h.peer.counters().rejected(RejectReason::Choked), 1);
}

#[test]
fn invalid_requests_reject_or_close() {
    for (r, reason) in [
        (req(0, 0, 0), RejectReason::ZeroLength),
        (req(5, 0, 16384), RejectReason::OutOfRange),
        (req(4, 0, 1001), RejectReason::OutOfRange),
        (req(0, u32::MAX, 16384), RejectReason::OutOfRange),
    ] {
        let mut h = Harness::full();
        h.handshake(true);
        h.peer.set_choked(h.now, false);
        h.drain();
        h.send(Message::Request(r)).unwrap();
        assert_eq!(h.drain(), [format!("{:?}", Message::Reject(r))]);
        assert_eq!(h.peer.counters().rejected(reason), 1, "{r:?}");

        let mut h = Harness::full();
        h.handshake(false);
        h.peer.set_choked(h.now, false);
        assert_eq!(
            h.send(Message::Request(r)),
            Err(CloseReason::BadRequest),
            "{r:?}"
        );
    }
    let mut h = Harness::full();
    h.handshake(true);
    assert_eq!(
        h.send(Message::Request(req(0, 0, 16385))),
        Err(CloseReason::RequestTooLarge)
    );
}

#[test]
fn reqq_overflow_and_choke_flush() {
    let mut h = Harness::full();
    h.handshake(true);
    h.peer.set_choked(h.now, false);
    h.drain();
    for i in 0..5 {
        h.send(Message::Request(req(i % 4, 0, 16384))).unwrap();
    }
    assert_eq!(
        h.drain(),
        [format!("{:?}", Message::Reject(req(0, 0, 16384)))]
    );
    assert_eq!(h.peer.queued_requests(), 4);
    h.peer.set_choked(h.now, true);
    let out = h.drain();
    assert_eq!(out.len(), 5);
    assert_eq!(out[0], "Choke");
    assert_eq!(h.peer.queued_requests(), 0);
    assert_eq!(h.peer.counters().rejected(RejectReason::ChokeFlushed), 4);
    assert_eq!(h.peer.counters().rejected(RejectReason::QueueFull), 1);

    // Without the fast extension: requests beyond reqq are dropped and
    // counted (libtorrent does the same); only more than 4x reqq
    // outstanding closes.
    let mut h = Harness::full();
    h.handshake(false);
    h.peer.set_choked(h.now, false);
    h.drain();
    for i in 0..4 {
        h.send(Message::Request(req(i, 0, 16384))).unwrap();
    }
    for _ in 0..12 {
        h.send(Message::Request(req(0, 0, 1))).unwrap();
    }
    assert_eq!(h.peer.queued_requests(), 4);
    assert!(h.drain().is_empty(), "no reject without the fast extension");
    assert_eq!(h.peer.counters().rejected(RejectReason::QueueFull), 12);
    // Serving one block shows the peer it was heard: what it sent beyond
    // reqq before that no longer counts as outstanding.
    assert!(h.peer.pop_block().is_some());
    for _ in 0..13 {
        h.send(Message::Request(req(1, 0, 1))).unwrap();
    }
    assert_eq!(h.peer.queued_requests(), 4);
    // 4 queued + 12 dropped = 16 = 4x reqq: still fine; one more is a flood.
    assert_eq!(
        h.send(Message::Request(req(2, 0, 1))),
        Err(CloseReason::TooManyRequests)
    );
}

#[test]
fn unrequested_piece_data_closes() {
    let mut h = Harness::full();
    h.handshake(true);
    let block = vec![7u8; 16384];
    let mut stream = Vec::new();
    for i in 0..64u32 {
        Message::Piece {
            index: i % 5,
            begin: 0,
            data: &block,
        }
        .encode(&mut stream);
    }
    assert_eq!(h.feed(&stream), Err(CloseReason::UnrequestedData));
    assert_eq!(h.peer.counters().unexpected_pieces, 5);
}

#[test]
fn every_provoked_reply_is_charged_to_one_budget() {
    use ringseed::wire::peer::{REPLY_BUDGET, REPLY_BUDGET_CLOSE};
    // Interested/not interested toggles answered by choke/unchoke, and
    // requests while choked answered by rejects: a peer that never reads
    // is held to the budget in memory and closed when grossly over it.
    let mut h = Harness::full();
    h.handshake(true);
    let mut closed = None;
    for i in 0..200_000u32 {
        let choked = i % 2 == 0;
        h.peer.set_choked(h.now, choked);
        let r = h.send(Message::Request(req(0, 0, 16384)));
        assert!(h.peer.unsent_control_bytes() <= 2 * REPLY_BUDGET + 64);
        if let Err(e) = r {
            closed = Some((i, e));
            break;
        }
    }
    let (i, e) = closed.expect("closed");
    assert_eq!(e, CloseReason::SendBacklog);
    assert!(h.peer.counters().replies_dropped > 0);
    assert!(
        (i as usize) < 2 * REPLY_BUDGET_CLOSE / 17,
        "closed after {i} rounds"
    );
    // The same peer reading everything is never limited.
    let mut h = Harness::full();
    h.handshake(true);
    for i in 0..20_000u32 {
        h.peer.set_choked(h.now, i % 2 == 0);
        h.send(Message::Request(req(0, 0, 16384))).unwrap();
        h.drain();
    }
    assert_eq!(h.peer.counters().replies_dropped, 0);
    h.peer.handle_tick(h.now).unwrap();
}

#[test]
fn peer_haves_and_bad_bitfields() {
    let mut h = Harness::full();
    h.handshake(true);
    h.send(Message::Have(2)).unwrap();
    h.send(Message::Have(2)).unwrap();
    h.send(Message::Have(4)).unwrap();
    assert_eq!(h.peer.peer_piece_count(), 2);
    assert!(h.peer.peer_has_piece(4) && !h.peer.peer_has_piece(0));
    h.send(Message::HaveAll).unwrap();
    assert_eq!(h.peer.peer_piece_count(), 5);
    h.send(Message::Bitfield(&[0b1000_0000])).unwrap();
    assert_eq!(h.peer.peer_piece_count(), 1);
    assert_eq!(h.send(Message::Have(5)), Err(CloseReason::BadHave));
    let mut h = Harness::full();
    h.handshake(true);
    assert_eq!(
        h.send(Message::Bitfield(&[0xff])),
        Err(CloseReason::BadBitfield)
    );
    let mut h = Harness::full();
    h.handshake(true);
    assert_eq!(
        h.send(Message::Bitfield(&[0xff, 0xfc])),
        Err(CloseReason::BadBitfield)
    );
}

#[test]
fn extension_messages_and_unknowns() {
    let mut h = Harness::full();
    h.handshake(true);
    h.send(Message::Extended {
        id: 0,
        payload: b"d1:md11:ut_metadatai3ee4:reqqi250e1:v5:qBit!e",
    })
    .unwrap();
    let ext = h.peer.peer_ext().unwrap();
    assert_eq!(
        (ext.ut_metadata, ext.reqq, ext.client()),
        (Some(3), Some(250), "qBit!")
    );
    h.send(Message::Extended {
        id: 3,
        payload: b"whatever",
    })
    .unwrap();
    h.send(Message::Unknown {
        id: 99,
        payload: b"x",
    })
    .unwrap();
    h.send(Message::Piece {
        index: 0,
        begin: 0,
        data: b"abc",
    })
    .unwrap();
    let c = h.peer.counters();
    assert_eq!(
        (c.extended_ignored, c.unknown_messages, c.unexpected_pieces),
        (1, 1, 1)
    );
    assert_eq!(
        h.send(Message::Extended {
            id: 0,
            payload: b"d1:v"
        }),
        Err(CloseReason::BadExtension)
    );
}

#[test]
fn oversize_and_malformed_close() {
    let mut h = Harness::full();
    h.handshake(true);
    assert_eq!(
        h.feed(&[0xff, 0xff, 0xff, 0xff]),
        Err(CloseReason::MessageTooLong)
    );
    let mut h = Harness::full();
    h.handshake(true);
    assert_eq!(h.feed(&[0, 0, 0, 2, 1]), Err(CloseReason::MalformedMessage));
}

#[test]
fn timeouts_and_keepalive_with_virtual_clock() {
    let cfg = config();
    let mut h = Harness::full();
    h.now += cfg.handshake_timeout - Duration::from_millis(1);
    h.peer.handle_tick(h.now).unwrap();
    h.now += Duration::from_millis(1);
    assert_eq!(
        h.peer.handle_tick(h.now),
        Err(CloseReason::HandshakeTimeout)
    );

    let mut h = Harness::full();
    h.handshake(true);
    h.peer.handle_tick(h.now).unwrap(); // records the send
    h.now += Duration::from_secs(60);
    h.send(Message::KeepAlive).unwrap();
    h.peer.handle_tick(h.now).unwrap();
    assert!(h.drain().is_empty());
    h.now += Duration::from_secs(30);
    h.peer.handle_tick(h.now).unwrap();
    assert_eq!(h.drain(), ["KeepAlive"]);
    assert!(h.peer.poll_timeout() > h.now);
    h.now += cfg.idle_timeout;
    assert_eq!(h.peer.handle_tick(h.now), Err(CloseReason::IdleTimeout));
}

#[test]
fn unchoke_before_handshake_is_sent_after_it() {
    let mut h = Harness::full();
    h.peer.set_choked(h.now, false);
    assert!(h.peer.poll_transmit().is_empty());
    assert_eq!(h.handshake(true)[2..], ["HaveAll", "Unchoke"]);
}

#[test]
fn reject_flood_without_reading_is_limited_then_closed() {
    use ringseed::wire::peer::{REPLY_BUDGET, REPLY_BUDGET_CLOSE};
    let mut h = Harness::full();
    h.handshake(true);
    let mut flood = Vec::new();
    for _ in 0..10_000 {
        Message::Request(req(0, 0, 16384)).encode(&mut flood);
    }
    // 10,000 rejects (170 KB) exceed the budget: the excess is dropped.
    h.feed(&flood).unwrap();
    assert!(h.peer.unsent_control_bytes() <= REPLY_BUDGET);
    assert!(h.peer.counters().replies_dropped > 5_000);
    // Far more than the close limit: closed.
    let mut more = Vec::new();
    for _ in 0..(REPLY_BUDGET_CLOSE / 17) {
        Message::Request(req(0, 0, 16384)).encode(&mut more);
    }
    assert_eq!(h.feed(&more), Err(CloseReason::SendBacklog));
    assert_eq!(h.peer.handle_tick(h.now), Err(CloseReason::SendBacklog));
}

/// A scripted session; its outputs must not depend on how the input is split.
fn session_bytes() -> Vec<u8> {
    let mut s = handshake_bytes(V1, true, true).to_vec();
    for m in [
        Message::Extended {
            id: 0,
            payload: b"d4:reqqi9ee",
        },
        Message::Interested,
        Message::Request(req(0, 0, 16384)),
        Message::Request(req(1, 0, 16384)),
        Message::Cancel(req(0, 0, 16384)),
        Message::Bitfield(&[0]),
        Message::Request(req(4, 0, 1000)),
    ] {
        m.encode(&mut s);
    }
    s
}

fn run_split(splits: &[usize]) -> (Vec<String>, Vec<BlockRequest>) {
    let mut h = Harness::full();
    h.peer.set_choked(h.now, false);
    let s = session_bytes();
    let mut at = 0;
    for &k in splits {
        let end = (at + k).min(s.len());
        h.feed(&s[at..end]).unwrap();
        at = end;
    }
    h.feed(&s[at..]).unwrap();
    let out = h.drain();
    let blocks = std::iter::from_fn(|| h.peer.pop_block()).collect();
    (out, blocks)
}

#[test]
fn one_byte_at_a_time_equals_whole() {
    let whole = run_split(&[]);
    assert_eq!(whole.1, [req(1, 0, 16384), req(4, 0, 1000)]);
    assert_eq!(run_split(&vec![1; session_bytes().len()]), whole);
}

proptest! {
    #[test]
    fn any_split_gives_same_result(splits in proptest::collection::vec(0usize..40, 0..40)) {
        prop_assert_eq!(run_split(&splits), run_split(&[]));
    }

    #[test]
    fn arbitrary_streams_never_panic(
        tail in proptest::collection::vec(any::<u8>(), 0..400),
        splits in proptest::collection::vec(1usize..50, 0..20),
        fast in any::<bool>(),
        unchoke in any::<bool>(),
    ) {
        let mut h = Harness::full();
        h.peer.set_choked(h.now, !unchoke);
        let mut s = handshake_bytes(V1, fast, true).to_vec();
        s.extend_from_slice(&tail);
        let mut at: usize = 0;
        let mut r = Ok(());
        for k in splits.iter().chain(std::iter::once(&usize::MAX)) {
            let end = at.saturating_add(*k).min(s.len());
            r = h.feed(&s[at..end]);
            at = end;
            if r.is_err() { break; }
            let _ = h.peer.pop_block();
        }
        if r.is_ok() { prop_assert!(h.peer.queued_requests() <= 4); }
        let _ = h.peer.handle_tick(h.now + Duration::from_secs(1000));
    }

    #[test]
    fn structured_messages_never_panic(ids in proptest::collection::vec((0u8..25, any::<[u32; 3]>()), 0..50)) {
        let mut h = Harness::full();
        h.handshake(true);
        h.peer.set_choked(h.now, false);
        for (id, [a, b, c]) in ids {
            let mut m = Vec::new();
            let payload: Vec<u8> = [a, b, c].iter().flat_map(|x| x.to_be_bytes()).collect();
            let len = match id { 0..=3 | 14 | 15 => 0, 4 | 13 | 17 => 4, 9 => 2, _ => 12 };
            m.extend_from_slice(&(len as u32 + 1).to_be_bytes());
            m.push(id);
            m.extend_from_slice(&payload[..len]);
            if h.feed(&m).is_err() { break; }
            if a % 3 == 0 { let _ = h.peer.pop_block(); }
            if b % 7 == 0 { h.peer.set_choked(h.now, c % 2 == 0); }
            h.drain();
        }
    }
}
