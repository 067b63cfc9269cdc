//! End-to-end tests of the io_uring engine on loopback: many leechers,
//! hostile peers beside an honest one, a cold page cache, and shutdown.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringseed::engine::{CloseKind, Engine, ServedTorrent, ShardConfig, ShardStats};
use ringseed::metainfo::MetaVersion;
use ringseed::wire::PeerConfig;
use support::engine::{
    data, info_hash, make_torrent, served, start_engine, total, wait_until, Fixture,
};
use support::leecher;

fn start(torrents: Vec<ServedTorrent>, shards: usize, peer: PeerConfig) -> Engine {
    start_engine(
        torrents,
        shards,
        ShardConfig {
            peer,
            ..ShardConfig::default()
        },
    )
}

fn fetch(addr: SocketAddr, fix: &Fixture, pipeline: usize) -> Vec<u8> {
    let t = &fix.torrent;
    leecher::download(
        addr,
        info_hash(t),
        t.num_pieces,
        t.piece_length as u32,
        t.piece_space_len,
        pipeline,
    )
    .unwrap_or_else(|e| panic!("download of {} failed: {e}", t.name))
}

fn closed(stats: &[Arc<ShardStats>], kind: CloseKind) -> u64 {
    total(stats, |s| ShardStats::get(s.closed(kind)))
}

fn two_torrents(dir: &Path) -> (Fixture, Fixture, std::path::PathBuf, std::path::PathBuf) {
    // A hybrid multi-file torrent with odd sizes (pad files) ...
    let multi = dir.join("multi");
    std::fs::create_dir_all(multi.join("sub")).unwrap();
    std::fs::write(multi.join("a.bin"), data(1, 100_001)).unwrap();
    std::fs::write(multi.join("empty"), b"").unwrap();
    std::fs::write(multi.join("one"), b"x").unwrap();
    std::fs::write(multi.join("sub/c.bin"), data(2, 700_000)).unwrap();
    let f1 = make_torrent(&multi, MetaVersion::Hybrid, Some(32768));
    // ... and a v1 single-file torrent one byte over a piece boundary.
    let single = dir.join("single.bin");
    std::fs::write(&single, data(3, 16384 * 40 + 1)).unwrap();
    let f2 = make_torrent(&single, MetaVersion::V1, Some(16384));
    (f1, f2, multi, single)
}

#[test]
fn two_hundred_leechers_download_two_torrents_from_two_shards() {
    let dir = tempfile::tempdir().unwrap();
    let (f1, f2, multi, single) = two_torrents(dir.path());
    let engine = start(
        vec![served(&f1, &multi), served(&f2, &single)],
        2,
        PeerConfig::default(),
    );
    let addr = engine.local_addr();
    let fixtures = Arc::new((f1, f2));
    let handles: Vec<_> = (0..200)
        .map(|i| {
            let fx = fixtures.clone();
            std::thread::spawn(move || {
                let fix = if i % 2 == 0 { &fx.0 } else { &fx.1 };
                let got = fetch(addr, fix, 8 + i % 24);
                assert!(
                    got == fix.piece_space,
                    "leecher {i}: data differs from the torrent's content"
                );
            })
        })
        .collect();
    for h in handles {
        h.join().expect("leecher thread");
    }
    let stats = engine.stats().to_vec();
    assert_eq!(total(&stats, |s| ShardStats::get(&s.accepted)), 200);
    for (i, s) in stats.iter().enumerate() {
        assert!(
            ShardStats::get(&s.accepted) > 0,
            "shard {i} accepted no connection"
        );
    }
    let expected_payload =
        100 * (fixtures.0.piece_space.len() + fixtures.1.piece_space.len()) as u64;
    assert_eq!(
        total(&stats, |s| ShardStats::get(&s.payload_bytes)),
        expected_payload
    );
    engine.shutdown();
    engine.join().expect("clean shutdown");
}

/// Read everything until the server closes; panics if it does not close
/// within `timeout`.
fn expect_closed(mut s: TcpStream, timeout: Duration, what: &str) {
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 65536];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return, // reset counts as closed
        }
    }
    panic!("{what}: server did not close the connection within {timeout:?}");
}

#[test]
fn hostile_peers_are_closed_while_an_honest_leecher_completes() {
    let dir = tempfile::tempdir().unwrap();
    let (f1, _f2, multi, _single) = two_torrents(dir.path());
    let peer = PeerConfig {
        handshake_timeout: Duration::from_millis(500),
        ..PeerConfig::default()
    };
    let engine = start(vec![served(&f1, &multi)], 2, peer);
    let addr = engine.local_addr();
    let hash = info_hash(&f1.torrent);
    let fix = Arc::new(f1);
    let honest = {
        let fix = fix.clone();
        std::thread::spawn(move || {
            for _ in 0..5 {
                assert!(fetch(addr, &fix, 16) == fix.piece_space);
            }
        })
    };
    let connect = || leecher::connect(addr, Duration::from_secs(2)).expect("connect");
    let t = Duration::from_secs(3);

    // Unknown info-hash.
    let mut s = connect();
    s.write_all(&leecher::handshake_bytes([0xee; 20], true, true))
        .unwrap();
    expect_closed(s, t, "unknown info-hash");
    // Garbage instead of a handshake.
    let mut s = connect();
    s.write_all(&[0xffu8; 200]).unwrap();
    expect_closed(s, t, "garbage");
    // Handshake then a length prefix of 2^32-1.
    let mut s = connect();
    s.write_all(&leecher::handshake_bytes(hash, true, true))
        .unwrap();
    s.write_all(&[0xff, 0xff, 0xff, 0xff, 7]).unwrap();
    expect_closed(s, t, "huge length prefix");
    // A request for 1 MiB.
    let mut s = connect();
    s.write_all(&leecher::handshake_bytes(hash, true, true))
        .unwrap();
    let mut req = vec![0, 0, 0, 13, 6];
    req.extend_from_slice(&0u32.to_be_bytes());
    req.extend_from_slice(&0u32.to_be_bytes());
    req.extend_from_slice(&(1u32 << 20).to_be_bytes());
    s.write_all(&[0, 0, 0, 1, 2]).unwrap(); // interested
    s.write_all(&req).unwrap();
    expect_closed(s, t, "1 MiB request");
    // A bitfield of the wrong length.
    let mut s = connect();
    s.write_all(&leecher::handshake_bytes(hash, false, false))
        .unwrap();
    s.write_all(&[0, 0, 0, 3, 5, 0xff, 0xff]).unwrap();
    expect_closed(s, t, "bitfield of the wrong length");
    // Connect and say nothing: the handshake timeout closes it.
    let s = connect();
    expect_closed(s, t, "silent peer");
    // Slowloris: the handshake one byte at a time, too slowly.
    let mut s = connect();
    for b in leecher::handshake_bytes(hash, true, true).iter().take(10) {
        let _ = s.write_all(&[*b]);
        std::thread::sleep(Duration::from_millis(80));
    }
    expect_closed(s, t, "slowloris");

    honest
        .join()
        .expect("the honest leecher completes beside hostile peers");
    let stats = engine.stats().to_vec();
    let counts: Vec<(&str, u64)> = CloseKind::ALL
        .iter()
        .map(|k| (k.as_str(), closed(&stats, *k)))
        .collect();
    assert!(
        closed(&stats, CloseKind::ProtocolError) >= 5,
        "protocol errors counted: {counts:?}"
    );
    assert!(
        closed(&stats, CloseKind::Timeout) >= 2,
        "timeouts counted: {counts:?}"
    );
    engine.shutdown();
    engine.join().unwrap();
}

#[test]
fn a_cold_page_cache_never_stalls_other_peers() {
    // /tmp is on disk here (not tmpfs), so DONTNEED really evicts.
    let dir = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let path = dir.path().join("cold.bin");
    std::fs::write(&path, data(9, 8 << 20)).unwrap();
    // Dirty pages cannot be evicted: write them back first.
    std::fs::File::open(&path).unwrap().sync_all().unwrap();
    let fix = make_torrent(&path, MetaVersion::V1, Some(262144));
    let engine = start(vec![served(&fix, &path)], 1, PeerConfig::default());
    let addr = engine.local_addr();
    let file = std::fs::File::open(&path).unwrap();
    let fix = Arc::new(fix);
    let mut handles = Vec::new();
    for round in 0..6 {
        ringseed::engine::uring::sys::evict_from_page_cache(&file).unwrap();
        for _ in 0..3 {
            let fix = fix.clone();
            handles.push(std::thread::spawn(move || {
                assert!(
                    fetch(addr, &fix, 32) == fix.piece_space,
                    "round {round}: data differs"
                );
            }));
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    for h in handles {
        h.join().unwrap();
    }
    let stats = engine.stats().to_vec();
    assert!(
        total(&stats, |s| ShardStats::get(&s.cold_reads)) > 0,
        "evicted blocks must be read asynchronously, not faulted in"
    );
    engine.shutdown();
    engine.join().unwrap();
}

#[test]
fn shutdown_closes_connected_peers_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let (f1, _f2, multi, _single) = two_torrents(dir.path());
    let hash = info_hash(&f1.torrent);
    let engine = start(vec![served(&f1, &multi)], 2, PeerConfig::default());
    let addr = engine.local_addr();
    let mut peers = Vec::new();
    for _ in 0..20 {
        let mut s = leecher::connect(addr, Duration::from_secs(2)).unwrap();
        s.write_all(&leecher::handshake_bytes(hash, true, true))
            .unwrap();
        peers.push(s);
    }
    let stats = engine.stats().to_vec();
    assert!(wait_until(Duration::from_secs(3), || total(&stats, |s| s
        .connections
        .load(std::sync::atomic::Ordering::Relaxed)
        as u64)
        == 20));
    let started = Instant::now();
    engine.shutdown();
    engine.join().expect("clean shutdown");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "shutdown took {:?}",
        started.elapsed()
    );
    for s in peers {
        expect_closed(s, Duration::from_secs(1), "peer at shutdown");
    }
    assert_eq!(closed(&stats, CloseKind::Shutdown), 20);
    assert_eq!(
        total(
            &stats,
            |s| s.connections.load(std::sync::atomic::Ordering::Relaxed) as u64
        ),
        0
    );
}
