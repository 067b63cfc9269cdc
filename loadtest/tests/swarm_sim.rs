//! Swarm leechers in a deterministic in-memory simulation with a virtual
//! clock (no sockets, no real time): whole swarms, the rate caps, and the
//! BEP 16 / BEP 6 behaviour a super-seeding seed relies on.

use std::io::IoSlice;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringseed::metainfo::MetaVersion;
use ringseed::swarm::ratelimit::Rate;
use ringseed::wire::codec::{
    decode, piece_header, BlockRequest, Decoded, Handshake, Message, ReservedFlags,
};
use ringseed_loadtest::swarm::node::{ConnectRequest, Node, NodeConfig};
use ringseed_loadtest::swarm::report::lower_bound;
use ringseed_loadtest::swarm::sim::Sim;
use ringseed_loadtest::swarm::store::ContentStore;
use ringseed_loadtest::swarm::PeerKey;
use ringseed_loadtest::testkit::make_torrent;
use ringseed_loadtest::torrents::LoadTorrent;

const MS5: Duration = Duration::from_millis(5);

fn rate(s: &str) -> Rate {
    s.parse().unwrap()
}

struct Setup {
    t: Arc<LoadTorrent>,
    data: Vec<u8>,
    _dir: tempfile::TempDir,
}

fn torrent(size: u64, piece: u64) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let (_, t, data) = make_torrent(dir.path(), "s.bin", size, piece, MetaVersion::Hybrid).unwrap();
    Setup { t, data, _dir: dir }
}

fn seed_node(s: &Setup, now: Instant, up: Rate, data: Vec<u8>) -> Node {
    seed_node_seeded(s, now, up, data, 99)
}

/// A seed whose peer id comes from `seed` (two seeds need two ids).
fn seed_node_seeded(s: &Setup, now: Instant, up: Rate, data: Vec<u8>, seed: u64) -> Node {
    let cfg = NodeConfig {
        up,
        ..NodeConfig::default()
    };
    let store = Arc::new(ContentStore::from_pieces(s.t.piece_length, data));
    Node::new(0, s.t.clone(), store, Arc::new(cfg), seed, now, true)
}

fn leechers(s: &Setup, now: Instant, n: usize, cfg: NodeConfig) -> Vec<Node> {
    let store = Arc::new(ContentStore::shared(&s.t));
    let cfg = Arc::new(cfg);
    (1..=n)
        .map(|i| {
            Node::new(
                i,
                s.t.clone(),
                store.clone(),
                cfg.clone(),
                i as u64,
                now,
                false,
            )
        })
        .collect()
}

#[test]
fn leechers_complete_mostly_from_each_other_under_a_slow_seed() {
    let s = torrent(2 << 20, 64 << 10);
    let t0 = Instant::now();
    let cfg = NodeConfig {
        up: rate("4MB/s"),
        down: rate("4MB/s"),
        ..NodeConfig::default()
    };
    let mut nodes = vec![seed_node(&s, t0, rate("1MB/s"), s.data.clone())];
    nodes.extend(leechers(&s, t0, 6, cfg));
    let mut sim = Sim::new(t0, nodes);
    for i in 1..=6 {
        sim.connect(i, 0, true);
    }
    sim.full_mesh(1);
    let took = sim.run_until(MS5, Duration::from_secs(120), |sim| {
        sim.nodes[1..].iter().all(Node::is_complete)
    });
    let f = s.t.piece_space_len;
    for n in &sim.nodes[1..] {
        assert!(
            n.is_complete(),
            "leecher {} has {} pieces",
            n.id(),
            n.pieces_have()
        );
        assert_eq!(n.stats().pieces_verified, s.t.num_pieces);
        assert_eq!(n.stats().hash_failures, 0);
        assert_eq!(n.stats().protocol_errors, 0);
    }
    let from_seed: u64 = sim.nodes[1..]
        .iter()
        .map(|n| n.stats().bytes_from_target)
        .sum();
    let from_peers: u64 = sim.nodes[1..]
        .iter()
        .map(|n| n.stats().bytes_from_peers)
        .sum();
    assert!(from_seed >= f, "the seed sent every byte at least once");
    assert!(
        from_peers > 2 * from_seed,
        "peers traded most of it: from seed {from_seed}, from peers {from_peers}"
    );
    assert_eq!(sim.nodes[0].stats().bytes_uploaded, from_seed);
    let bound = lower_bound(f, 6, rate("1MB/s"), rate("4MB/s"), rate("4MB/s"))
        .seconds
        .unwrap();
    let secs = took.as_secs_f64();
    eprintln!(
        "took {secs:.2} s (bound {bound:.2} s); from seed {from_seed}, from peers {from_peers}"
    );
    assert!(
        secs >= bound * 0.95 && secs < bound * 4.0,
        "took {secs:.2} s, bound {bound:.2} s"
    );
}

#[test]
fn upload_cap_paces_a_seed() {
    let s = torrent(16 << 20, 256 << 10);
    let t0 = Instant::now();
    let mut nodes = vec![seed_node(&s, t0, rate("1MB/s"), s.data.clone())];
    nodes.extend(leechers(&s, t0, 3, NodeConfig::default()));
    let mut sim = Sim::new(t0, nodes);
    for i in 1..=3 {
        sim.connect(i, 0, true);
    }
    sim.run_until(MS5, Duration::from_secs(3), |_| false);
    let up = sim.nodes[0].stats().bytes_uploaded;
    eprintln!("seed uploaded {up} in 3 s at 1 MB/s");
    // 3 s at 1 MB/s plus at most the bucket (200 ms at the rate), minus a
    // block in flight.
    assert!(
        (2_980_000..=3_000_000 + 200_000 + 16_384).contains(&up),
        "uploaded {up}"
    );
}

#[test]
fn download_cap_paces_a_leecher() {
    let s = torrent(16 << 20, 256 << 10);
    let t0 = Instant::now();
    let cfg = NodeConfig {
        down: rate("2MB/s"),
        ..NodeConfig::default()
    };
    let mut nodes = vec![seed_node(&s, t0, Rate::UNLIMITED, s.data.clone())];
    nodes.extend(leechers(&s, t0, 1, cfg));
    let mut sim = Sim::new(t0, nodes);
    sim.connect(1, 0, true);
    sim.run_until(MS5, Duration::from_secs(3), |_| false);
    let got = sim.nodes[1].stats().bytes_from_target;
    eprintln!("leecher received {got} in 3 s at 2 MB/s");
    // 3 s at 2 MB/s plus at most the bucket (200 ms at the rate).
    assert!(
        (5_950_000..=6_000_000 + 400_000).contains(&got),
        "received {got}"
    );
}

#[test]
fn corrupt_data_is_counted_and_downloaded_again() {
    let s = torrent(1 << 20, 64 << 10);
    let t0 = Instant::now();
    let mut bad = s.data.clone();
    for b in &mut bad[..64 << 10] {
        *b ^= 0x5a;
    }
    let mut nodes = vec![seed_node(&s, t0, Rate::UNLIMITED, s.data.clone())];
    let bad_seed = seed_node_seeded(&s, t0, Rate::UNLIMITED, bad, 98);
    nodes.push(bad_seed);
    nodes.extend(leechers(&s, t0, 1, NodeConfig::default()));
    let mut sim = Sim::new(t0, nodes);
    sim.connect(2, 1, false);
    sim.run_until(MS5, Duration::from_secs(2), |sim| {
        sim.nodes[2].stats().hash_failures > 0
    });
    assert_eq!(
        sim.nodes[2].stats().hash_failures,
        1,
        "piece 0 from the bad seed"
    );
    sim.connect(2, 0, true);
    sim.run_until(MS5, Duration::from_secs(30), |sim| {
        sim.nodes[2].is_complete()
    });
    let l = &sim.nodes[2];
    assert!(l.is_complete(), "{:?}", l.stats());
    assert_eq!(l.stats().pieces_verified, s.t.num_pieces);
    assert!(l.stats().hash_failures >= 1);
    // Every bad block came from the bad seed alone: a second failure of
    // its data is a second offence, and it is banned (smart ban); the good
    // seed never is.
    assert_eq!(
        l.stats().peers_banned,
        u32::from(l.stats().hash_failures >= 2)
    );
    assert!(l.stats().bytes_from_target > 0);
}

/// Drains everything `node` wants to send to `key` and decodes it.
fn sent(node: &mut Node, now: Instant, key: PeerKey, seen_handshake: &mut bool) -> Vec<String> {
    let mut bytes = Vec::new();
    loop {
        let mut iov: Vec<IoSlice<'_>> = Vec::new();
        let out = node.output(now, key, &mut iov);
        if out.bytes == 0 {
            break;
        }
        for s in &iov {
            bytes.extend_from_slice(s);
        }
        drop(iov);
        node.consume_output(now, key, out.bytes);
    }
    let mut pos = 0;
    if !*seen_handshake && bytes.len() >= 68 {
        pos = 68;
        *seen_handshake = true;
    }
    let mut msgs = vec![];
    while let Ok(Decoded::Message { msg, consumed }) = decode(&bytes[pos..], 1 << 20) {
        if !matches!(msg, Message::Extended { .. }) {
            msgs.push(format!("{msg:?}"));
        }
        pos += consumed;
    }
    assert_eq!(pos, bytes.len());
    msgs
}

fn handshake(t: &LoadTorrent, id: u8) -> Vec<u8> {
    Handshake {
        reserved: ReservedFlags {
            fast: true,
            ..ReservedFlags::default()
        }
        .to_bytes(),
        info_hash: t.handshake_hash,
        peer_id: [id; 20],
    }
    .encode()
    .to_vec()
}

#[test]
fn super_seed_offer_is_fetched_and_announced_to_every_peer_including_the_seed() {
    let s = torrent(1 << 20, 64 << 10);
    let t0 = Instant::now();
    let mut l = leechers(&s, t0, 1, NodeConfig::default()).remove(0);
    let seed = l.add_outgoing(
        t0,
        0,
        ConnectRequest {
            addr: "127.0.0.1:6881".parse().unwrap(),
            target: true,
        },
    );
    l.on_connected(t0, seed);
    let other = l
        .add_incoming(t0, 1, "127.0.0.1:7000".parse().unwrap())
        .unwrap();
    let (mut hs_seed, mut hs_other) = (false, false);
    // A super-seeding seed: have_none, then one offered piece with a have
    // and a suggestion.
    let mut b = handshake(&s.t, 1);
    Message::HaveNone.encode(&mut b);
    Message::Have(5).encode(&mut b);
    Message::Suggest(5).encode(&mut b);
    Message::Unchoke.encode(&mut b);
    assert_eq!(l.handle_data(t0, seed, &b).unwrap(), b.len());
    // Another leecher that has nothing.
    let mut b = handshake(&s.t, 2);
    Message::HaveNone.encode(&mut b);
    assert_eq!(l.handle_data(t0, other, &b).unwrap(), b.len());
    let _ = sent(&mut l, t0, other, &mut hs_other);
    let to_seed = sent(&mut l, t0, seed, &mut hs_seed);
    let requests: Vec<&String> = to_seed
        .iter()
        .filter(|m| m.starts_with("Request"))
        .collect();
    assert!(to_seed.contains(&"Interested".to_string()), "{to_seed:?}");
    assert_eq!(
        requests.len(),
        4,
        "the offered piece's 4 blocks: {to_seed:?}"
    );
    assert!(requests.iter().all(|r| r.contains("piece: 5")));
    // The seed sends piece 5.
    let mut b = Vec::new();
    for blk in 0..4u32 {
        let begin = blk * 16384;
        b.extend_from_slice(&piece_header(5, begin, 16384));
        let off = 5 * (64 << 10) + begin as usize;
        b.extend_from_slice(&s.data[off..off + 16384]);
    }
    assert_eq!(l.handle_data(t0, seed, &b).unwrap(), b.len());
    assert_eq!(l.pieces_have(), 1);
    let to_seed = sent(&mut l, t0, seed, &mut hs_seed);
    assert!(
        to_seed.contains(&"Have(5)".to_string()),
        "the seed learns it spread: {to_seed:?}"
    );
    assert!(
        to_seed.contains(&"NotInterested".to_string()),
        "nothing else offered: {to_seed:?}"
    );
    let to_other = sent(&mut l, t0, other, &mut hs_other);
    assert!(to_other.contains(&"Have(5)".to_string()), "{to_other:?}");
    // The other leecher asks for it: served once unchoked (it became
    // interested, and a slot is free).
    let mut b = Vec::new();
    Message::Interested.encode(&mut b);
    Message::Request(BlockRequest {
        piece: 5,
        begin: 0,
        len: 16384,
    })
    .encode(&mut b);
    Message::Request(BlockRequest {
        piece: 6,
        begin: 0,
        len: 16384,
    })
    .encode(&mut b);
    assert_eq!(l.handle_data(t0, other, &b).unwrap(), b.len());
    let to_other = sent(&mut l, t0, other, &mut hs_other);
    assert!(to_other.contains(&"Unchoke".to_string()), "{to_other:?}");
    assert!(
        to_other.iter().any(|m| m.starts_with("Piece { index: 5")),
        "{to_other:?}"
    );
    assert!(
        to_other
            .iter()
            .any(|m| m.starts_with("Reject(BlockRequest { piece: 6")),
        "a piece we do not have is refused: {to_other:?}"
    );
    assert_eq!(l.stats().bytes_uploaded, 16384);
}

#[test]
fn endgame_asks_a_second_peer_and_cancels_the_copy_that_is_not_needed() {
    // 2 pieces of 2 blocks: one peer's first pipeline covers everything.
    let s = torrent(64 << 10, 32 << 10);
    let t0 = Instant::now();
    let mut l = leechers(&s, t0, 1, NodeConfig::default()).remove(0);
    let a = l
        .add_incoming(t0, 0, "127.0.0.1:7001".parse().unwrap())
        .unwrap();
    let b = l
        .add_incoming(t0, 1, "127.0.0.1:7002".parse().unwrap())
        .unwrap();
    let (mut hs_a, mut hs_b) = (false, false);
    let seed_says = |id| {
        let mut m = handshake(&s.t, id);
        Message::HaveAll.encode(&mut m);
        Message::Unchoke.encode(&mut m);
        m
    };
    let m = seed_says(1);
    assert_eq!(l.handle_data(t0, a, &m).unwrap(), m.len());
    let to_a = sent(&mut l, t0, a, &mut hs_a);
    assert_eq!(
        to_a.iter().filter(|m| m.starts_with("Request")).count(),
        4,
        "{to_a:?}"
    );
    // Everything is requested from a: the second seed gets duplicates.
    let m = seed_says(2);
    assert_eq!(l.handle_data(t0, b, &m).unwrap(), m.len());
    let to_b = sent(&mut l, t0, b, &mut hs_b);
    let dups: Vec<&String> = to_b.iter().filter(|m| m.starts_with("Request")).collect();
    assert_eq!(dups.len(), 4, "endgame duplicates: {to_b:?}");
    // a delivers block 0: b is told to cancel it.
    let mut blk = piece_header(0, 0, 16384).to_vec();
    blk.extend_from_slice(&s.data[..16384]);
    assert_eq!(l.handle_data(t0, a, &blk).unwrap(), blk.len());
    let to_b = sent(&mut l, t0, b, &mut hs_b);
    assert_eq!(
        to_b,
        vec!["Cancel(BlockRequest { piece: 0, begin: 0, len: 16384 })".to_string()]
    );
    // b's copy arrives anyway (it crossed the cancel): counted as waste.
    assert_eq!(l.handle_data(t0, b, &blk).unwrap(), blk.len());
    assert_eq!(l.stats().wasted_bytes, 16384);
    assert_eq!(l.stats().hash_failures, 0);
}
