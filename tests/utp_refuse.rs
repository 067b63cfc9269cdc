//! uTP refusal on the engine's UDP sockets (`--utp refuse`): a SYN gets
//! one ST_RESET that libtorrent accepts (same connection id, ack_nr = the
//! SYN's seq_nr); floods are rate limited; junk is dropped and counted by
//! reason; `--utp off` binds no UDP socket.

use std::net::UdpSocket;
use std::sync::atomic::Ordering;
use std::time::Duration;

mod support;

use ringseed::engine::stats::UtpDrop;
use ringseed::engine::{Engine, ShardConfig};
use ringseed::utp::packet::{self, Header, PacketType, HEADER_LEN};
use ringseed::utp::{DropReason, UtpMode};
use support::engine::{start_engine, total, wait_until};

fn syn(conn: u16, seq: u16) -> [u8; HEADER_LEN] {
    let h = Header {
        ty: PacketType::Syn,
        connection_id: conn,
        timestamp_us: 12345,
        timestamp_diff_us: 0,
        wnd_size: 1 << 20,
        seq_nr: seq,
        ack_nr: 0,
    };
    let mut b = [0u8; HEADER_LEN];
    packet::encode(&h, None, &mut b).unwrap();
    b
}

fn engine(utp: UtpMode) -> Engine {
    let shard = ShardConfig {
        utp,
        ..ShardConfig::default()
    };
    start_engine(Vec::new(), 2, shard)
}

fn client(engine: &Engine) -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.connect(engine.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    s
}

fn dropped(engine: &Engine, reason: UtpDrop) -> u64 {
    total(engine.stats(), |s| {
        s.utp_dropped[reason.index()].load(Ordering::Relaxed)
    })
}

#[test]
fn a_syn_gets_one_reset_with_the_ids_libtorrent_checks() {
    let engine = engine(UtpMode::Refuse);
    let c = client(&engine);
    c.send(&syn(0xabcd, 1)).unwrap();
    let mut buf = [0u8; 1500];
    let n = c.recv(&mut buf).expect("a reset comes back");
    assert_eq!(n, HEADER_LEN, "never more bytes than the SYN had");
    let p = packet::decode(&buf[..n]).unwrap();
    assert_eq!(p.header.ty, PacketType::Reset);
    assert_eq!(p.header.connection_id, 0xabcd);
    assert_eq!(p.header.ack_nr, 1);
    // Exactly one answer.
    c.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    assert!(c.recv(&mut buf).is_err(), "one datagram per SYN");
    assert!(wait_until(Duration::from_secs(2), || total(
        engine.stats(),
        |s| s.utp_resets_sent.load(Ordering::Relaxed)
    ) == 1));
    engine.shutdown();
    engine.join().unwrap();
}

#[test]
fn a_syn_flood_from_one_source_is_rate_limited_and_junk_is_counted() {
    let engine = engine(UtpMode::Refuse);
    let c = client(&engine);
    for i in 0..200u16 {
        c.send(&syn(i, 1)).unwrap();
    }
    let mut answers = 0;
    let mut buf = [0u8; 1500];
    c.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    while c.recv(&mut buf).is_ok() {
        answers += 1;
    }
    // The per-source burst (8), plus what refills while the flood lasts.
    assert!(
        (1..=12).contains(&answers),
        "{answers} resets for 200 SYNs from one source"
    );
    // Junk: too short, version 0, a data packet for no connection.
    c.send(&[0x41; 7]).unwrap();
    let mut v0 = syn(1, 1);
    v0[0] = 0x40;
    c.send(&v0).unwrap();
    let mut data = syn(1, 1);
    data[0] = 0x01;
    c.send(&data).unwrap();
    assert!(c.recv(&mut buf).is_err(), "junk gets no answer");
    assert!(wait_until(Duration::from_secs(2), || {
        dropped(&engine, UtpDrop::Refused(DropReason::RateLimited)) >= 188
            && dropped(&engine, UtpDrop::Refused(DropReason::NotSyn)) == 1
            && dropped(
                &engine,
                UtpDrop::Refused(DropReason::Malformed(ringseed::utp::PacketError::TooShort)),
            ) == 2
    }));
    let received = total(engine.stats(), |s| s.utp_datagrams.load(Ordering::Relaxed));
    assert_eq!(received, 203);
    engine.shutdown();
    engine.join().unwrap();
}

#[test]
fn utp_off_binds_no_udp_socket() {
    let engine = engine(UtpMode::Off);
    // The port is free for UDP: we can bind it ourselves.
    let sock = UdpSocket::bind(engine.local_addr());
    assert!(sock.is_ok(), "UDP port stays free with --utp off");
    drop(sock);
    engine.shutdown();
    engine.join().unwrap();
}
