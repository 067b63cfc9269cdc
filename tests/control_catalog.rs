//! The versioned catalogue in a running 2-shard engine: a torrent added
//! while serving is served at once; one taken out while 20 leechers are
//! downloading it is drained (no new peers, its peers closed between
//! messages with every block correct, its files let go) while another
//! torrent's download carries on untouched.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ringseed::engine::{
    Catalog, Engine, EngineConfig, EngineObservers, LiveCatalog, ShardConfig, TorrentSettings,
};
use ringseed::metainfo::MetaVersion;
use support::engine::{data, info_hash, make_torrent, served, total, wait_until};
use support::leecher::{download_until_closed, handshake_bytes, read_until_close, send_raw};

#[test]
fn torrents_are_added_and_drained_while_serving() {
    let dir = tempfile::tempdir().unwrap();
    let a_path = dir.path().join("a.bin");
    let b_path = dir.path().join("b.bin");
    std::fs::write(&a_path, data(1, 8 << 20)).unwrap();
    std::fs::write(&b_path, data(2, 4 << 20)).unwrap();
    let fa = make_torrent(&a_path, MetaVersion::V1, Some(256 << 10));
    let fb = make_torrent(&b_path, MetaVersion::Hybrid, Some(256 << 10));
    // A's own cap keeps its 20 downloads in flight for seconds.
    let a = served(&fa, &a_path).with_settings(TorrentSettings {
        super_seed: false,
        upload_rate_limit: "8MB/s".parse().unwrap(),
    });
    let live = Arc::new(LiveCatalog::new(Catalog::new(vec![a])));
    let cfg = EngineConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        shards: 2,
        pin: false,
        max_connections: 1000,
        max_per_ip: 1000,
        shard: ShardConfig::default(),
        ..EngineConfig::default()
    };
    let engine = Engine::bind(cfg)
        .unwrap()
        .start_live(Arc::clone(&live), EngineObservers::new(2))
        .unwrap();
    let addr = engine.local_addr();
    let plen = fa.torrent.piece_length as u32;
    let a_hash = info_hash(&fa.torrent);
    let a_space = Arc::new(fa.piece_space.clone());
    let leechers: Vec<_> = (0..20)
        .map(|_| {
            let space = Arc::clone(&a_space);
            std::thread::spawn(move || download_until_closed(addr, a_hash, plen, &space, 32))
        })
        .collect();
    let a_id = live.load().find(&a_hash).unwrap().id;
    assert!(
        wait_until(Duration::from_secs(10), || live
            .load()
            .get(a_id)
            .unwrap()
            .peers()
            == 20
            && total(engine.stats(), |s| s
                .payload_bytes
                .load(std::sync::atomic::Ordering::Relaxed))
                > 1 << 20),
        "20 leechers downloading A"
    );

    // B arrives while A is being downloaded, and is served at once.
    let b = live.add(served(&fb, &b_path)).unwrap();
    assert_ne!(b.id, a_id);
    let dup = live.add(served(&fb, &b_path));
    assert!(dup.is_err(), "a duplicate info-hash is refused");
    let b_hash = info_hash(&fb.torrent);
    let b_space = Arc::new(fb.piece_space.clone());
    let b_leecher = {
        let space = Arc::clone(&b_space);
        let plen = fb.torrent.piece_length as u32;
        std::thread::spawn(move || download_until_closed(addr, b_hash, plen, &space, 32))
    };
    std::thread::sleep(Duration::from_millis(100));

    // A is taken out mid-flight.
    let started = Instant::now();
    let (a_gone, report) = live.remove(a_id, Duration::ZERO).unwrap();
    println!(
        "removed A: {} peers at start, {} left, drained in {:?}",
        report.peers_at_start, report.peers_left, report.elapsed
    );
    assert_eq!(report.peers_at_start, 20);
    assert_eq!(report.peers_left, 0, "every connection of A let go of it");
    assert!(started.elapsed() < Duration::from_secs(5));
    let mut partial = 0;
    for l in leechers {
        let ended = l
            .join()
            .unwrap()
            .expect("A's leecher saw only whole, correct blocks");
        assert!(ended.closed || ended.complete, "{ended:?}");
        assert_eq!(ended.torn, 0, "closed between messages: {ended:?}");
        if !ended.complete {
            partial += 1;
        }
    }
    assert!(
        partial > 0,
        "the downloads were mid-flight when A was removed"
    );
    // Once the shards have taken the version without A (their next loop
    // turn), nobody but us holds it: its files are unmapped when we let go.
    assert!(wait_until(Duration::from_secs(2), || Arc::strong_count(
        &a_gone
    ) == 1));
    assert!(live.load().get(a_id).is_none());

    // A new peer for A is turned away; B's download was untouched.
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    send_raw(&mut s, &handshake_bytes(a_hash, true, false)).unwrap();
    let got = read_until_close(&mut s, Duration::from_secs(5)).unwrap();
    assert!(got.is_empty(), "no handshake for a removed torrent");
    let ended = b_leecher.join().unwrap().expect("B downloads");
    assert!(ended.complete, "{ended:?}");
    assert!(b.uploaded() >= b_space.len() as u64);

    // B comes out too, then A again under a new id (ids are never reused).
    let b_id = b.id;
    drop(b);
    live.remove(b_id, Duration::ZERO).unwrap();
    let again = live.add(served(&fa, &a_path)).unwrap();
    assert!(again.id.0 > b_id.0);
    engine.shutdown();
    engine.join().unwrap();
}

#[test]
fn a_drain_grace_keeps_serving_then_closes_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.bin");
    std::fs::write(&path, data(9, 4 << 20)).unwrap();
    let fix = make_torrent(&path, MetaVersion::V1, Some(256 << 10));
    let t = served(&fix, &path).with_settings(TorrentSettings {
        super_seed: false,
        upload_rate_limit: "2MB/s".parse().unwrap(),
    });
    let live = Arc::new(LiveCatalog::new(Catalog::new(vec![t])));
    let cfg = EngineConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        shards: 1,
        pin: false,
        max_connections: 100,
        max_per_ip: 100,
        shard: ShardConfig::default(),
        ..EngineConfig::default()
    };
    let engine = Engine::bind(cfg)
        .unwrap()
        .start_live(Arc::clone(&live), EngineObservers::new(1))
        .unwrap();
    let addr = engine.local_addr();
    let hash = info_hash(&fix.torrent);
    let plen = fix.torrent.piece_length as u32;
    let space = Arc::new(fix.piece_space.clone());
    let leecher = {
        let space = Arc::clone(&space);
        std::thread::spawn(move || download_until_closed(addr, hash, plen, &space, 32))
    };
    let t = live.load().find(&hash).unwrap().clone();
    assert!(wait_until(Duration::from_secs(5), || t.uploaded() > 256 << 10));
    let grace = Duration::from_millis(700);
    let remover = {
        let live = Arc::clone(&live);
        let id = t.id;
        std::thread::spawn(move || live.remove(id, grace).unwrap().1)
    };
    std::thread::sleep(Duration::from_millis(100));
    let during = t.uploaded();
    std::thread::sleep(Duration::from_millis(400));
    assert!(t.is_draining());
    assert!(
        t.uploaded() > during,
        "its peer is still served during the grace"
    );
    let report = remover.join().unwrap();
    assert!(report.elapsed >= grace, "{report:?}");
    assert_eq!(report.peers_left, 0);
    let ended = leecher.join().unwrap().expect("whole, correct blocks");
    assert!(
        ended.closed && ended.torn == 0 && !ended.complete,
        "{ended:?}"
    );
    engine.shutdown();
    engine.join().unwrap();
}
