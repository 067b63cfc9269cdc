//! Hostile-peer suite: each kind of broken or malicious peer runs beside an
//! honest leecher on a 2-shard server. The bad peer must be disconnected or
//! limited, with the reason counted, and the honest leecher must complete
//! with every byte right. The honest leecher's time with the hostile peer
//! is printed next to a baseline measured in the same run (a report, not an
//! assertion: speed is claimed from loadtest runs, not unit tests).

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringseed::engine::{
    Catalog, CloseKind, Engine, EngineConfig, ServedTorrent, ShardConfig, ShardStats,
};
use ringseed::metainfo::create::{create, CreateOptions};
use ringseed::metainfo::{MetaVersion, Torrent};
use ringseed::storage::Content;
use ringseed::wire::{Bitfield, PeerConfig};
use support::leecher;

fn setup(dir: &Path, max_per_ip: u32) -> (Engine, Torrent, Vec<u8>) {
    let path = dir.join("data.bin");
    let data: Vec<u8> = (0..(32u32 << 20))
        .map(|i| (i.wrapping_mul(2246822519) >> 7) as u8)
        .collect();
    std::fs::write(&path, &data).unwrap();
    let opts = CreateOptions {
        version: MetaVersion::V1,
        piece_length: Some(65536),
        threads: 2,
        ..CreateOptions::default()
    };
    let t = create(&path, &opts, &|_| {}).unwrap().torrent;
    let content = Content::open(&t, &path).unwrap();
    let served = ServedTorrent::new(0, t.clone(), content, Bitfield::full(t.num_pieces)).unwrap();
    let cfg = EngineConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        shards: 2,
        pin: false,
        max_connections: 20_000,
        max_per_ip,
        shard: ShardConfig {
            peer: PeerConfig {
                reqq: 64,
                handshake_timeout: Duration::from_millis(700),
                ..PeerConfig::default()
            },
            ..ShardConfig::default()
        },
    };
    let engine = Engine::start(cfg, Arc::new(Catalog::new(vec![served]))).unwrap();
    (engine, t, data)
}

fn honest(addr: SocketAddr, t: &Torrent, data: &[u8]) -> Duration {
    let start = Instant::now();
    let got = leecher::download(
        addr,
        t.info_hash_v1.unwrap().0,
        t.num_pieces,
        t.piece_length as u32,
        t.piece_space_len,
        32,
    )
    .expect("the honest leecher completes");
    assert!(got == data, "honest leecher got wrong bytes");
    start.elapsed()
}

fn msg(id: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = ((payload.len() + 1) as u32).to_be_bytes().to_vec();
    v.push(id);
    v.extend_from_slice(payload);
    v
}

fn request(piece: u32, begin: u32, len: u32) -> Vec<u8> {
    let mut p = piece.to_be_bytes().to_vec();
    p.extend_from_slice(&begin.to_be_bytes());
    p.extend_from_slice(&len.to_be_bytes());
    p
}

/// Reads until the server closes (true) or `timeout` passes (false).
fn closed_within(s: &mut TcpStream, timeout: Duration) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 65536];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

fn total(stats: &[Arc<ShardStats>], f: impl Fn(&ShardStats) -> u64) -> u64 {
    stats.iter().map(|s| f(s)).sum()
}

/// How a hostile case must end.
enum Expect {
    Closed,
    /// Still connected (limited: rejected, ignored), reasons counted.
    Limited,
}

#[test]
fn hostile_peers_beside_an_honest_leecher() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, t, data) = setup(dir.path(), 20_000);
    let addr = engine.local_addr();
    let hash = t.info_hash_v1.unwrap().0;
    // Baseline: median of three undisturbed downloads, same server, same run.
    let mut runs: Vec<Duration> = (0..3).map(|_| honest(addr, &t, &data)).collect();
    runs.sort();
    let baseline = runs[1];
    let hs = move |fast: bool| leecher::handshake_bytes(hash, fast, true);
    const INTERESTED: [u8; 5] = [0, 0, 0, 1, 2];

    type Case = (&'static str, Expect, Box<dyn Fn(&mut TcpStream) + Send>);
    let big = t.num_pieces + 5;
    let cases: Vec<Case> = vec![
        (
            "slowloris (1 byte / 100 ms)",
            Expect::Closed,
            Box::new(move |s| {
                for b in hs(true).iter().take(12) {
                    let _ = s.write_all(&[*b]);
                    std::thread::sleep(Duration::from_millis(100));
                }
            }),
        ),
        (
            "handshake then silence",
            Expect::Limited,
            Box::new(move |s| {
                let _ = s.write_all(&hs(true));
            }),
        ),
        (
            "request flood 20x reqq (fast)",
            Expect::Limited,
            Box::new(move |s| {
                let mut b = hs(true).to_vec();
                b.extend(INTERESTED);
                for i in 0..1280u32 {
                    b.extend(msg(6, &request(i % 100, 0, 16384)));
                }
                let _ = s.write_all(&b);
            }),
        ),
        (
            "request flood beyond reqq (no fast)",
            Expect::Closed,
            Box::new(move |s| {
                let mut b = hs(false).to_vec();
                b.extend(INTERESTED);
                for i in 0..1280u32 {
                    b.extend(msg(6, &request(i % 100, 0, 16384)));
                }
                let _ = s.write_all(&b);
            }),
        ),
        (
            "requests out of range, 0 and 1 MiB",
            Expect::Closed,
            Box::new(move |s| {
                let mut b = hs(true).to_vec();
                b.extend(INTERESTED);
                b.extend(msg(6, &request(big, 0, 16384)));
                b.extend(msg(6, &request(0, 65536, 16384)));
                b.extend(msg(6, &request(0, 0, 0)));
                b.extend(msg(6, &request(0, 0, 1 << 20)));
                let _ = s.write_all(&b);
            }),
        ),
        (
            "cancel storm",
            Expect::Limited,
            Box::new(move |s| {
                let mut b = hs(true).to_vec();
                b.extend(INTERESTED);
                for i in 0..5000u32 {
                    b.extend(msg(8, &request(i % 128, 0, 16384)));
                }
                let _ = s.write_all(&b);
            }),
        ),
        (
            "length prefix 2^32-1",
            Expect::Closed,
            Box::new(move |s| {
                let mut b = hs(true).to_vec();
                b.extend([0xff, 0xff, 0xff, 0xff, 7]);
                let _ = s.write_all(&b);
            }),
        ),
        (
            "unknown message ids",
            Expect::Limited,
            Box::new(move |s| {
                let mut b = hs(true).to_vec();
                for id in [10u8, 11, 12, 18, 19, 99, 200, 255] {
                    b.extend(msg(id, b"junk"));
                }
                let _ = s.write_all(&b);
            }),
        ),
        (
            "bitfield of the wrong length",
            Expect::Closed,
            Box::new(move |s| {
                let mut b = hs(true).to_vec();
                b.extend(msg(5, &[0xff; 3]));
                let _ = s.write_all(&b);
            }),
        ),
        (
            "extension handshake with malformed bencode",
            Expect::Closed,
            Box::new(move |s| {
                let mut b = hs(true).to_vec();
                b.extend(msg(20, b"\x00d1:md11:ut_metadatai1eee9999:"));
                let _ = s.write_all(&b);
            }),
        ),
    ];

    let mut table = Vec::new();
    for (name, expect, act) in cases {
        let stats = engine.stats().to_vec();
        let closed_before: u64 = CloseKind::ALL
            .iter()
            .filter(|k| **k != CloseKind::PeerClosed)
            .map(|k| total(&stats, |s| ShardStats::get(s.closed(*k))))
            .sum();
        let rejected_before = total(&stats, |s| ShardStats::get(&s.rejected));
        let stop = Arc::new(AtomicBool::new(false));
        let hostile = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let mut s = TcpStream::connect(addr).unwrap();
                act(&mut s);
                let closed = closed_within(&mut s, Duration::from_secs(3));
                while !stop.load(Ordering::Relaxed) && !closed {
                    std::thread::sleep(Duration::from_millis(10));
                }
                closed
            }
        });
        // Median of three downloads beside the hostile peer, like the baseline.
        let mut beside: Vec<Duration> = (0..3).map(|_| honest(addr, &t, &data)).collect();
        beside.sort();
        let took = beside[1];
        stop.store(true, Ordering::Relaxed);
        let closed = hostile.join().unwrap();
        let closed_after: u64 = CloseKind::ALL
            .iter()
            .filter(|k| **k != CloseKind::PeerClosed)
            .map(|k| total(&stats, |s| ShardStats::get(s.closed(*k))))
            .sum();
        let rejected = total(&stats, |s| ShardStats::get(&s.rejected)) - rejected_before;
        match expect {
            Expect::Closed => {
                assert!(closed, "{name}: the server must disconnect the peer");
                assert!(
                    closed_after > closed_before,
                    "{name}: the close reason must be counted"
                );
            }
            Expect::Limited => {}
        }
        table.push(format!(
            "{name:45} {:>8} rejects={rejected:<5} honest {:>6.0} ms vs baseline {:>6.0} ms ({:+.0}%)",
            if closed { "closed" } else { "limited" },
            took.as_secs_f64() * 1e3,
            baseline.as_secs_f64() * 1e3,
            (took.as_secs_f64() / baseline.as_secs_f64() - 1.0) * 100.0
        ));
    }
    eprintln!(
        "\nhostile-peer table (honest leecher of a 32 MiB torrent beside each case, medians of 3):"
    );
    for row in &table {
        eprintln!("{row}");
    }
    engine.shutdown();
    engine.join().unwrap();
}

#[test]
fn five_thousand_connections_opened_and_dropped_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, t, data) = setup(dir.path(), 20_000);
    let addr = engine.local_addr();
    let hash = t.info_hash_v1.unwrap().0;
    let storm = std::thread::spawn(move || {
        let mut socks = Vec::with_capacity(5000);
        for i in 0..5000 {
            if let Ok(mut s) = TcpStream::connect(addr) {
                if i % 2 == 0 {
                    let _ = s.write_all(&leecher::handshake_bytes(hash, true, true));
                }
                socks.push(s);
            }
        }
        let n = socks.len();
        drop(socks);
        n
    });
    honest(addr, &t, &data);
    let opened = storm.join().unwrap();
    assert!(opened >= 4000, "opened {opened}");
    let stats = engine.stats().to_vec();
    let deadline = Instant::now() + Duration::from_secs(10);
    while total(&stats, |s| {
        s.connections.load(Ordering::Relaxed).max(0) as u64
    }) > 0
    {
        assert!(
            Instant::now() < deadline,
            "connections not released after the storm"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    honest(addr, &t, &data);
    engine.shutdown();
    engine.join().unwrap();
}

#[test]
fn many_source_ips_beyond_the_per_ip_limit() {
    let dir = tempfile::tempdir().unwrap();
    // 4 per IP in total (2 per shard).
    let (engine, t, data) = setup(dir.path(), 4);
    let addr = engine.local_addr();
    let hash = t.info_hash_v1.unwrap().0;
    let mut held = Vec::new();
    for ip in 2..=9u8 {
        for _ in 0..10 {
            let sock =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            sock.bind(&SocketAddr::from(([127, 0, 0, ip], 0)).into())
                .unwrap();
            if sock.connect(&addr.into()).is_ok() {
                let mut s: TcpStream = sock.into();
                let _ = s.write_all(&leecher::handshake_bytes(hash, true, true));
                held.push(s);
            }
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let stats = engine.stats().to_vec();
    let live = total(&stats, |s| {
        s.connections.load(Ordering::Relaxed).max(0) as u64
    });
    let limited = total(&stats, |s| ShardStats::get(s.closed(CloseKind::Limit)));
    assert!(
        live <= 8 * 4,
        "per-IP limit holds: {live} live connections from 8 IPs"
    );
    assert!(limited >= 80 - 32, "refusals counted as `limit`: {limited}");
    // An honest leecher from another address still gets through.
    honest(addr, &t, &data);
    drop(held);
    engine.shutdown();
    engine.join().unwrap();
}
