//! Bad input to the sans-IO uTP endpoint and connections: SYN floods from
//! many source ports, unknown connection ids, acks for data never sent,
//! resets mid-transfer, a zero window forever, and arbitrary bytes. Each is
//! dropped or closes the connection, counted by reason, never a panic, with
//! bounded state.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use ringseed::utp::conn::Ignored;
use ringseed::utp::packet::{self, Header, PacketType, HEADER_LEN};
use ringseed::utp::{CloseReason, ConnKey, Endpoint, EndpointConfig, EndpointDrop};

const SERVER: &str = "10.0.0.1:6881";
const CLIENT: &str = "10.0.0.2:40000";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn syn(conn: u16, seq: u16) -> Vec<u8> {
    packet_bytes(PacketType::Syn, conn, seq, 0, 1 << 20, b"")
}

fn packet_bytes(
    ty: PacketType,
    conn: u16,
    seq: u16,
    ack: u16,
    wnd: u32,
    payload: &[u8],
) -> Vec<u8> {
    let h = Header {
        ty,
        connection_id: conn,
        timestamp_us: 1,
        timestamp_diff_us: 0,
        wnd_size: wnd,
        seq_nr: seq,
        ack_nr: ack,
    };
    let mut b = vec![0u8; HEADER_LEN + payload.len()];
    packet::encode(&h, None, &mut b).unwrap();
    b[HEADER_LEN..].copy_from_slice(payload);
    b
}

/// A client and a server endpoint, datagrams delivered at once.
struct Pair {
    now: Instant,
    client: Endpoint,
    server: Endpoint,
    ck: ConnKey,
    sk: Option<ConnKey>,
}

impl Pair {
    fn new() -> Self {
        let now = Instant::now();
        let mut client = Endpoint::new(EndpointConfig::default(), 1);
        let server = Endpoint::new(EndpointConfig::default(), 2);
        let ck = client.connect(now, addr(SERVER));
        let mut p = Self {
            now,
            client,
            server,
            ck,
            sk: None,
        };
        p.pump();
        assert!(p.sk.is_some(), "connected");
        p
    }

    fn pump(&mut self) {
        let mut buf = vec![0u8; 2048];
        for _ in 0..10_000 {
            let mut moved = false;
            while let Some((to, n)) = self.client.poll_transmit(self.now, &mut buf) {
                assert_eq!(to, addr(SERVER));
                self.server.handle(self.now, addr(CLIENT), &buf[..n]);
                moved = true;
            }
            if let Some(k) = self.server.poll_accept() {
                self.sk = Some(k);
            }
            while let Some((to, n)) = self.server.poll_transmit(self.now, &mut buf) {
                assert_eq!(to, addr(CLIENT));
                self.client.handle(self.now, addr(SERVER), &buf[..n]);
                moved = true;
            }
            if !moved {
                return;
            }
        }
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.client.handle_timeout(self.now);
        self.server.handle_timeout(self.now);
    }
}

#[test]
fn a_syn_flood_from_many_ports_is_bounded_and_expires() {
    let cfg = EndpointConfig::default();
    let mut ep = Endpoint::new(cfg, 7);
    let t0 = Instant::now();
    let mut out = vec![0u8; 2048];
    let mut answers = 0;
    for port in 0..20_000u16 {
        let from: SocketAddr = format!("10.9.{}.{}:{}", port / 250, port % 250, 1024 + port)
            .parse()
            .unwrap();
        ep.handle(t0, from, &syn(port, 1));
        while ep.poll_transmit(t0, &mut out).is_some() {
            answers += 1;
        }
    }
    assert_eq!(ep.half_open(), cfg.max_half_open);
    assert_eq!(ep.len(), cfg.max_half_open);
    assert_eq!(
        answers, cfg.max_half_open,
        "one STATE per accepted SYN, none for the rest"
    );
    assert_eq!(
        ep.dropped[EndpointDrop::HalfOpenFull.index()],
        20_000 - cfg.max_half_open as u64
    );
    eprintln!(
        "half-open: {} connections x {} bytes = {} KiB at most",
        cfg.max_half_open,
        Endpoint::HALF_OPEN_BYTES,
        cfg.max_half_open * Endpoint::HALF_OPEN_BYTES / 1024
    );
    const { assert!(Endpoint::HALF_OPEN_BYTES < 1024) };
    // Before the half-open timeout the flood holds its slots; after it, a
    // new peer takes the slot of the oldest, and the cap still holds.
    let later = t0 + cfg.half_open_timeout;
    let fresh: SocketAddr = "10.200.0.1:4000".parse().unwrap();
    ep.handle(later - Duration::from_millis(1), fresh, &syn(1, 1));
    assert_eq!(
        ep.dropped[EndpointDrop::HalfOpenFull.index()],
        20_000 - cfg.max_half_open as u64 + 1
    );
    ep.handle_timeout(later);
    assert_eq!(ep.half_open(), cfg.max_half_open, "age alone drops nobody");
    ep.handle(later, fresh, &syn(1, 1));
    assert!(
        ep.poll_transmit(later, &mut out).is_some(),
        "the new peer is answered"
    );
    assert_eq!(ep.half_open(), cfg.max_half_open);
    assert_eq!(ep.len(), cfg.max_half_open);
    // Nothing heard from the flood: it closes after the idle timeout.
    let idle = later + cfg.conn.idle_timeout;
    ep.handle_timeout(idle);
    ep.handle_timeout(idle + cfg.conn.idle_timeout);
    assert!(ep.is_empty(), "{} left", ep.len());
    assert_eq!(ep.half_open(), 0);
}

#[test]
fn unknown_ids_and_junk_are_dropped_by_reason() {
    let mut ep = Endpoint::new(EndpointConfig::default(), 7);
    let now = Instant::now();
    let from = addr(CLIENT);
    assert!(ep
        .handle(
            now,
            from,
            &packet_bytes(PacketType::Data, 99, 5, 5, 1000, b"x")
        )
        .is_none());
    assert!(ep.handle(now, from, &[0x41; 5]).is_none());
    let mut v0 = syn(1, 1);
    v0[0] = 0x40;
    assert!(ep.handle(now, from, &v0).is_none());
    assert_eq!(ep.dropped[EndpointDrop::UnknownConnection.index()], 1);
    assert_eq!(ep.dropped[0], 2, "malformed");
    assert!(ep.is_empty());
}

#[test]
fn an_ack_for_data_never_sent_is_ignored_and_counted() {
    let mut p = Pair::new();
    let sk = p.sk.unwrap();
    let c = p.client.conn_mut(p.ck).unwrap();
    c.write(b"hello");
    p.pump();
    // Forge a STATE from the client acking far beyond what the server sent.
    let recv_id = sk.recv_id;
    let beyond = p.server.conn(sk).unwrap().next_seq().wrapping_add(100);
    p.server.handle(
        p.now,
        addr(CLIENT),
        &packet_bytes(PacketType::State, recv_id, 1, beyond, 1 << 20, b""),
    );
    let s = p.server.conn(sk).unwrap();
    assert_eq!(s.counters().dropped(Ignored::AckUnsent), 1);
    assert!(!s.is_closed());
    let mut buf = [0u8; 16];
    let s = p.server.conn_mut(sk).unwrap();
    assert_eq!(s.read(&mut buf), 5);
    assert_eq!(&buf[..5], b"hello");
}

#[test]
fn a_reset_mid_transfer_closes_the_connection() {
    let mut p = Pair::new();
    let sk = p.sk.unwrap();
    p.server.conn_mut(sk).unwrap().write(&vec![7u8; 100_000]);
    p.pump();
    // Packets to the client carry its recv id, the server's send id.
    assert_eq!(p.server.conn(sk).unwrap().send_id(), p.ck.recv_id);
    // A RESET from the server's address, acking the client's SYN (1).
    p.client.handle(
        p.now,
        addr(SERVER),
        &packet_bytes(PacketType::Reset, p.ck.recv_id, 0, 1, 0, b""),
    );
    assert_eq!(
        p.client.conn(p.ck).unwrap().close_reason(),
        Some(CloseReason::Reset)
    );
}

#[test]
fn a_zero_window_forever_closes_after_the_timeouts() {
    let mut p = Pair::new();
    let sk = p.sk.unwrap();
    // The client never reads: the server fills its window and then probes.
    let chunk = vec![1u8; 64 * 1024];
    let mut reason = None;
    for _ in 0..10_000 {
        if let Some(s) = p.server.conn_mut(sk) {
            s.write(&chunk);
        }
        p.pump();
        p.advance(Duration::from_millis(250));
        if let Some(s) = p.server.conn(sk) {
            if s.is_closed() {
                reason = s.close_reason();
                break;
            }
        }
    }
    assert_eq!(reason, Some(CloseReason::ZeroWindow));
    let c = p.client.conn(p.ck).unwrap();
    assert!(c.counters().dropped(Ignored::NoRoom) > 0);
    assert!(
        c.buffered_bytes() <= 1 << 20,
        "bounded by the receive window"
    );
}

#[test]
fn duplicates_and_reordering_are_counted_not_delivered_twice() {
    let mut p = Pair::new();
    let sk = p.sk.unwrap();
    let recv_id = sk.recv_id;
    // The client's first data seq is 2 (after its SYN, 1).
    // Acks of nothing new: the server's last sent sequence number.
    let ack = p.server.conn(sk).unwrap().next_seq().wrapping_sub(1);
    let d2 = packet_bytes(PacketType::Data, recv_id, 3, ack, 1 << 20, b"b");
    let d1 = packet_bytes(PacketType::Data, recv_id, 2, ack, 1 << 20, b"a");
    for d in [&d2, &d2, &d1, &d1] {
        p.server.handle(p.now, addr(CLIENT), d);
    }
    let s = p.server.conn_mut(sk).unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(s.read(&mut buf), 2);
    assert_eq!(&buf[..2], b"ab");
    assert_eq!(s.counters().dropped(Ignored::Duplicate), 2);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    /// Arbitrary datagrams, some with the live connection's id, into an
    /// endpoint with an established connection: no panic, bounded state.
    #[test]
    fn arbitrary_datagrams_never_panic(
        datagrams in proptest::collection::vec(
            (any::<u8>(), any::<bool>(), any::<u16>(), any::<u16>(), any::<u32>(),
             proptest::collection::vec(any::<u8>(), 0..64)),
            1..64),
    ) {
        let mut p = Pair::new();
        let sk = p.sk.unwrap();
        for (ty, ours, seq, ack, wnd, tail) in datagrams {
            let mut b = packet_bytes(PacketType::Data, if ours { sk.recv_id } else { seq }, seq, ack, wnd, &tail);
            b[0] = (ty & 0xf0) | 1;
            if ty & 1 == 1 && !tail.is_empty() {
                b[1] = tail[0]; // an arbitrary extension chain
            }
            p.server.handle(p.now, addr(CLIENT), &b);
            p.pump();
            p.advance(Duration::from_millis(u64::from(ty) * 10));
        }
        if let Some(s) = p.server.conn(sk) {
            prop_assert!(s.buffered_bytes() <= 2 << 20);
        }
        prop_assert!(p.server.len() <= 1 + p.server.half_open());
    }
}
