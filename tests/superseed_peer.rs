//! PeerState in super-seed mode (BEP 16), scenario style with a virtual
//! clock. The glue with the selector (offers at the handshake, the next
//! one once a piece spread) is the engine core's own, tested in
//! `tests/engine_policies.rs`.

mod support;

use std::net::SocketAddr;
use std::time::Instant;

use ringseed::wire::codec::HANDSHAKE_LEN;
use ringseed::wire::codec::{decode, BlockRequest, Decoded, Handshake, HandshakeDecoded, Message};
use ringseed::wire::types::{HaveEvent, PeerHaves};
use ringseed::wire::{
    CloseReason, PeerConfig, PeerState, RejectReason, TorrentCatalog, TorrentId, TorrentKey,
    TorrentView,
};
use support::catalog::{MemCatalog, MemTorrent};
use support::leecher::handshake_bytes;

const V1: [u8; 20] = [0x11; 20];
const PIECE: u32 = 32 * 1024;
const TOTAL: u64 = 8 * 32 * 1024; // 8 pieces

/// The test catalogue with super-seeding switched on (or off).
struct Cat {
    inner: MemCatalog,
    super_seed: bool,
}

impl TorrentCatalog for Cat {
    fn lookup(&self, key: TorrentKey<'_>) -> Option<TorrentView<'_>> {
        self.inner.lookup(key)
    }
    fn super_seed(&self, _id: TorrentId) -> bool {
        self.super_seed
    }
}

struct Harness {
    cat: Cat,
    peer: PeerState,
    now: Instant,
}

fn remote() -> SocketAddr {
    "127.0.0.1:40001".parse().unwrap()
}

impl Harness {
    fn new(super_seed: bool) -> Self {
        let mut inner = MemCatalog::default();
        inner.add(MemTorrent::v1(V1, PIECE, TOTAL));
        let now = Instant::now();
        let config = PeerConfig {
            reqq: 8,
            ..PeerConfig::default()
        };
        Harness {
            cat: Cat { inner, super_seed },
            peer: PeerState::new(now, &config, remote()),
            now,
        }
    }
    fn feed(&mut self, bytes: &[u8]) -> Result<(), CloseReason> {
        self.peer.handle_bytes(self.now, bytes, &self.cat)
    }
    fn send(&mut self, msg: Message<'_>) -> Result<(), CloseReason> {
        let mut b = Vec::new();
        msg.encode(&mut b);
        self.feed(&b)
    }
    fn drain(&mut self) -> Vec<String> {
        let bytes = self.peer.poll_transmit().to_vec();
        self.peer.advance_transmit(bytes.len());
        let mut out = Vec::new();
        let mut buf = &bytes[..];
        if let Ok(HandshakeDecoded::Complete(_)) = Handshake::decode(buf) {
            out.push("Handshake".to_string());
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
    fn events(&mut self) -> Vec<HaveEvent> {
        std::iter::from_fn(|| self.peer.poll_have_event()).collect()
    }
}

fn req(piece: u32) -> BlockRequest {
    BlockRequest {
        piece,
        begin: 0,
        len: 16 * 1024,
    }
}

#[test]
fn fast_peer_gets_have_none_and_its_first_offer_in_the_same_flush() {
    let mut h = Harness::new(true);
    h.feed(&handshake_bytes(V1, true, true)).unwrap();
    assert!(h.peer.is_super_seeding());
    // The engine applies the selector's first offers before it flushes:
    // they travel with the handshake reply, no timer involved.
    assert!(h.peer.offer_piece(5));
    assert!(h.peer.suggest_piece(5));
    assert_eq!(
        h.drain(),
        [
            "Handshake",
            "ExtHandshake",
            "HaveNone",
            "Have(5)",
            "Suggest(5)"
        ]
    );
    assert_eq!(h.peer.offered_piece_count(), 1);
    // Announced once only.
    assert!(!h.peer.offer_piece(5));
    assert!(h.drain().is_empty());
}

#[test]
fn plain_peer_gets_no_bitfield_and_no_suggest() {
    let mut h = Harness::new(true);
    h.feed(&handshake_bytes(V1, false, false)).unwrap();
    assert_eq!(h.drain(), ["Handshake"]);
    assert!(h.peer.offer_piece(2));
    assert!(!h.peer.suggest_piece(2), "suggest is BEP 6 only");
    assert!(!h.peer.offer_piece(8), "out of range");
    assert_eq!(h.drain(), ["Have(2)"]);
}

#[test]
fn offers_before_the_handshake_are_refused() {
    let mut h = Harness::new(true);
    assert!(!h.peer.offer_piece(0));
    assert!(!h.peer.suggest_piece(0));
    assert!(h.peer.poll_have_event().is_none());
}

#[test]
fn only_offered_pieces_may_be_requested() {
    let mut h = Harness::new(true);
    h.feed(&handshake_bytes(V1, true, true)).unwrap();
    h.peer.offer_piece(3);
    h.peer.set_choked(h.now, false);
    h.drain();
    h.send(Message::Request(req(4))).unwrap();
    h.send(Message::Request(req(3))).unwrap();
    assert_eq!(h.drain(), [format!("Reject({:?})", req(4))]);
    assert_eq!(h.peer.counters().rejected(RejectReason::NotHave), 1);
    assert_eq!(h.peer.pop_block(), Some(req(3)));
    assert_eq!(h.peer.pop_block(), None);
}

#[test]
fn unoffered_requests_from_a_plain_peer_are_dropped_not_fatal() {
    let mut h = Harness::new(true);
    h.feed(&handshake_bytes(V1, false, false)).unwrap();
    h.peer.set_choked(h.now, false);
    h.drain();
    h.send(Message::Request(req(1))).unwrap();
    assert!(h.drain().is_empty(), "no reject without the fast extension");
    assert_eq!(h.peer.queued_requests(), 0);
}

#[test]
fn haves_are_reported_as_events() {
    let mut h = Harness::new(true);
    h.feed(&handshake_bytes(V1, true, true)).unwrap();
    h.send(Message::Have(1)).unwrap();
    h.send(Message::Have(6)).unwrap();
    assert_eq!(h.events(), [HaveEvent::Have(1), HaveEvent::Have(6)]);
    // A bitfield replaces everything queued before it.
    h.send(Message::Have(2)).unwrap();
    h.send(Message::Bitfield(&[0b1010_0000])).unwrap();
    assert_eq!(h.events(), [HaveEvent::Replaced]);
    let PeerHaves::Some(b) = h.peer.peer_haves() else {
        panic!("bitfield expected")
    };
    assert!(b.get(0) && b.get(2) && !b.get(1));
    h.send(Message::HaveAll).unwrap();
    assert_eq!(h.events(), [HaveEvent::Replaced]);
    assert!(matches!(h.peer.peer_haves(), PeerHaves::All));
}

#[test]
fn a_have_flood_collapses_into_one_replaced_event() {
    let mut h = Harness::new(true);
    h.feed(&handshake_bytes(V1, true, true)).unwrap();
    let mut bytes = Vec::new();
    for i in 0..5000 {
        Message::Have(i % 8).encode(&mut bytes);
    }
    h.feed(&bytes).unwrap();
    let ev = h.events();
    assert!(ev.len() <= 1024, "{}", ev.len());
    assert_eq!(ev[0], HaveEvent::Replaced);
}

#[test]
fn without_super_seed_nothing_changes() {
    let mut h = Harness::new(false);
    h.feed(&handshake_bytes(V1, true, true)).unwrap();
    assert!(!h.peer.is_super_seeding());
    assert_eq!(h.drain(), ["Handshake", "ExtHandshake", "HaveAll"]);
    h.send(Message::Have(1)).unwrap();
    assert!(h.peer.poll_have_event().is_none());
    // Suggest works in plain mode too; a `have` re-announces a piece.
    assert!(h.peer.suggest_piece(7));
    assert!(h.peer.offer_piece(7));
    assert_eq!(h.drain(), ["Suggest(7)", "Have(7)"]);
}
