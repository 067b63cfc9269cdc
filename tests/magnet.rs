//! Magnet links: BEP 9 `ut_metadata` and BEP 52 hash requests through
//! `PeerState` (scenarios with a virtual clock), and interop: real
//! libtorrent 2.1.1 joins a fake seeder (a blocking loop driving
//! `PeerState`, serving from memory) by magnet link only, for a v1, a v2
//! and a hybrid torrent, and must complete with matching data.

mod support;

use support::tree::assert_same_tree;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use ringseed::create::{create, CreateOptions};
use ringseed::metainfo::{Magnet, MetaVersion, Torrent};
use ringseed::wire::codec::{decode, piece_header, Decoded, HashRequest, Message};
use ringseed::wire::metadata::{
    encode_request, parse_metadata_message, MetadataMessage, METADATA_PIECE_LEN,
};
use ringseed::wire::peer::{REPLY_BUDGET, REPLY_BUDGET_CLOSE};
use ringseed::wire::{
    Bitfield, CloseReason, PeerConfig, PeerState, TorrentCatalog, TorrentKey, V2Layers,
};
use support::catalog::{MemCatalog, MemTorrent};
use support::leecher::handshake_bytes;

const HASH: [u8; 20] = [0x33; 20];
/// The id the peer asks us to use for its ut_metadata messages.
const PEER_UT_METADATA: u8 = 7;

// ---- scenarios -------------------------------------------------------

struct Harness {
    cat: MemCatalog,
    peer: PeerState,
    now: Instant,
}

impl Harness {
    fn new(t: MemTorrent, peer_ext: &[u8]) -> Self {
        let mut cat = MemCatalog::default();
        cat.add(t);
        let now = Instant::now();
        let mut h = Harness {
            cat,
            peer: PeerState::new(
                now,
                &PeerConfig::default(),
                "127.0.0.1:4000".parse().unwrap(),
            ),
            now,
        };
        h.feed(&handshake_bytes(HASH, true, true)).unwrap();
        h.send(Message::Extended {
            id: 0,
            payload: peer_ext,
        })
        .unwrap();
        h.drain();
        h
    }
    fn with_info(info: Vec<u8>) -> Self {
        let mut t = MemTorrent::v1(HASH, 32 * 1024, 100_000);
        t.info_bytes = Some(info);
        Self::new(t, b"d1:md11:ut_metadatai7eee")
    }
    fn feed(&mut self, bytes: &[u8]) -> Result<(), CloseReason> {
        self.peer.handle_bytes(self.now, bytes, &self.cat)
    }
    fn send(&mut self, msg: Message<'_>) -> Result<(), CloseReason> {
        let mut b = Vec::new();
        msg.encode(&mut b);
        self.feed(&b)
    }
    fn request_metadata(&mut self, piece: u32) -> Result<(), CloseReason> {
        let mut b = Vec::new();
        encode_request(&mut b, 1, piece);
        self.feed(&b)
    }
    /// Takes every control byte and decodes the messages (owned copies).
    fn drain(&mut self) -> Vec<(u8, Vec<u8>)> {
        let bytes = self.peer.poll_transmit().to_vec();
        self.peer.advance_transmit(bytes.len());
        let mut buf = &bytes[..];
        if buf.first() == Some(&19) {
            buf = &buf[68..];
        }
        let mut out = Vec::new();
        while !buf.is_empty() {
            let Ok(Decoded::Message { msg, consumed }) = decode(buf, 1 << 20) else {
                panic!("undecodable control bytes");
            };
            let mut enc = Vec::new();
            msg.encode(&mut enc);
            out.push((enc[4], enc[5..].to_vec()));
            buf = &buf[consumed..];
        }
        out
    }
    /// The ut_metadata replies among the drained messages.
    fn metadata_replies(&mut self) -> Vec<(u8, MetadataMessage<'static>)> {
        self.drain()
            .into_iter()
            .filter(|(id, _)| *id == 20)
            .map(|(_, body)| {
                let ext = body[0];
                let body: &'static [u8] = Box::leak(body.into_boxed_slice());
                (ext, parse_metadata_message(&body[1..]).unwrap())
            })
            .collect()
    }
}

fn info_of(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 300) as u8).collect()
}

#[test]
fn ext_handshake_advertises_ut_metadata_only_with_info_bytes() {
    let mut t = MemTorrent::v1(HASH, 32 * 1024, 100_000);
    t.info_bytes = Some(info_of(1234));
    let mut cat = MemCatalog::default();
    cat.add(t);
    let now = Instant::now();
    let mut p = PeerState::new(now, &PeerConfig::default(), "127.0.0.1:1".parse().unwrap());
    p.handle_bytes(now, &handshake_bytes(HASH, true, true), &cat)
        .unwrap();
    let out = p.poll_transmit().to_vec();
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("11:ut_metadatai1e") && text.contains("13:metadata_sizei1234e"));

    let cat = {
        let mut c = MemCatalog::default();
        c.add(MemTorrent::v1(HASH, 32 * 1024, 100_000));
        c
    };
    let mut p = PeerState::new(now, &PeerConfig::default(), "127.0.0.1:1".parse().unwrap());
    p.handle_bytes(now, &handshake_bytes(HASH, true, true), &cat)
        .unwrap();
    let text = String::from_utf8_lossy(p.poll_transmit()).to_string();
    assert!(!text.contains("ut_metadata") && !text.contains("metadata_size"));
}

#[test]
fn metadata_pieces_are_sliced_and_sent_to_the_peers_id() {
    for len in [
        1,
        100,
        METADATA_PIECE_LEN - 1,
        METADATA_PIECE_LEN,
        METADATA_PIECE_LEN + 1,
        3 * METADATA_PIECE_LEN,
        3 * METADATA_PIECE_LEN + 17,
    ] {
        let info = info_of(len);
        let mut h = Harness::with_info(info.clone());
        let pieces = len.div_ceil(METADATA_PIECE_LEN) as u32;
        let mut got = Vec::new();
        for p in 0..pieces {
            h.request_metadata(p).unwrap();
            for (ext, m) in h.metadata_replies() {
                assert_eq!(ext, PEER_UT_METADATA);
                match m {
                    MetadataMessage::Data {
                        piece,
                        total_size,
                        data,
                    } => {
                        assert_eq!((piece, total_size), (p, Some(len as u64)));
                        assert!(data.len() == METADATA_PIECE_LEN || p + 1 == pieces);
                        got.extend_from_slice(data);
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
        assert!(got == info, "len {len}");
        // Out of range: reject, connection stays.
        for p in [pieces, pieces + 1, u32::MAX] {
            h.request_metadata(p).unwrap();
            let replies = h.metadata_replies();
            assert_eq!(replies.len(), 1);
            assert_eq!(replies[0].1, MetadataMessage::Reject { piece: p });
        }
        let c = h.peer.counters();
        assert_eq!(
            (
                c.metadata_requests,
                c.metadata_pieces_sent,
                c.metadata_rejected
            ),
            (u64::from(pieces) + 3, u64::from(pieces), 3)
        );
    }
}

#[test]
fn without_metadata_requests_are_rejected() {
    let mut h = Harness::new(
        MemTorrent::v1(HASH, 32 * 1024, 100_000),
        b"d1:md11:ut_metadatai7eee",
    );
    h.request_metadata(0).unwrap();
    assert_eq!(
        h.metadata_replies(),
        vec![(PEER_UT_METADATA, MetadataMessage::Reject { piece: 0 })]
    );
}

#[test]
fn peer_without_ut_metadata_gets_nothing_and_data_to_us_is_ignored() {
    let mut t = MemTorrent::v1(HASH, 32 * 1024, 100_000);
    t.info_bytes = Some(info_of(5000));
    let mut h = Harness::new(t, b"d1:md6:ut_pexi2eee");
    h.request_metadata(0).unwrap();
    assert!(h.drain().is_empty());

    let mut h = Harness::with_info(info_of(5000));
    for payload in [
        &b"\x01d8:msg_typei1e5:piecei0e10:total_sizei3eeabc"[..],
        b"\x01d8:msg_typei2e5:piecei0ee",
        b"\x01d8:msg_typei9e5:piecei0ee",
    ] {
        h.feed(&{
            let mut b = Vec::new();
            Message::Extended {
                id: payload[0],
                payload: &payload[1..],
            }
            .encode(&mut b);
            b
        })
        .unwrap();
    }
    assert!(h.drain().is_empty());
    let c = h.peer.counters();
    assert_eq!((c.metadata_unsolicited, c.extended_ignored), (2, 1));
}

#[test]
fn malformed_metadata_message_closes() {
    for bad in [&b"d8:msg_typei0ee"[..], b"x", b"d5:piecei0e8:msg_typei0ee"] {
        let mut h = Harness::with_info(info_of(5000));
        assert_eq!(
            h.send(Message::Extended {
                id: 1,
                payload: bad
            }),
            Err(CloseReason::BadMetadataMessage)
        );
    }
}

#[test]
fn metadata_flood_without_reading_closes_but_a_reader_is_fine() {
    let info = info_of(40 * METADATA_PIECE_LEN);
    // A peer that reads: any number of requests, one at a time.
    let mut h = Harness::with_info(info.clone());
    for i in 0..100 {
        h.request_metadata(i % 40).unwrap();
        assert_eq!(h.metadata_replies().len(), 1);
    }
    // A peer that never reads: replies up to the byte budget, then dropped
    // (counted), then closed once it provoked far more than it read.
    let mut h = Harness::with_info(info);
    let fit = REPLY_BUDGET / (METADATA_PIECE_LEN + 60);
    let mut provoked = 0usize;
    let mut closed_after = None;
    for i in 0..200u32 {
        match h.request_metadata(i % 40) {
            Ok(()) => provoked += 1,
            Err(e) => {
                assert_eq!(e, CloseReason::SendBacklog);
                closed_after = Some(i);
                break;
            }
        }
        assert!(
            h.peer.unsent_control_bytes() <= REPLY_BUDGET + 64,
            "memory stays bounded"
        );
    }
    assert_eq!(h.peer.pending_replies(), fit, "queued up to the budget");
    // Every request beyond the budget was dropped, the last one included.
    assert_eq!(
        h.peer.counters().replies_dropped,
        provoked as u64 + 1 - fit as u64
    );
    let closed_after = closed_after.expect("a peer that never reads is closed");
    let expect = REPLY_BUDGET_CLOSE / METADATA_PIECE_LEN;
    assert!(
        (expect as u32 - 2..=expect as u32 + 2).contains(&closed_after),
        "closed after {closed_after} requests, expected ~{expect}"
    );
    // Drained: the peer caught up, its budget is whole again.
    let mut h = Harness::with_info(info_of(40 * METADATA_PIECE_LEN));
    for i in 0..10u32 {
        h.request_metadata(i).unwrap();
    }
    assert_eq!(h.peer.pending_replies(), fit);
    assert_eq!(h.metadata_replies().len(), fit);
    h.request_metadata(0).unwrap();
    assert_eq!(h.peer.pending_replies(), 1);
    // Small replies (rejects) still fit beside queued large ones.
    h.request_metadata(1000).unwrap();
    assert_eq!(h.peer.counters().replies_dropped, 10 - fit as u64);
}

/// A v2 layer of `n` pieces of 32 KiB (piece layer height 1) for one file.
fn v2_torrent(n: u32) -> (MemTorrent, [u8; 32], Vec<[u8; 32]>) {
    let piece = 32 * 1024u32;
    let layer: Vec<[u8; 32]> = (0..n)
        .map(|i| ringseed::metainfo::merkle::hash_leaf(&i.to_be_bytes()))
        .collect();
    let len = u64::from(piece) * u64::from(n) - 5;
    let root = ringseed::metainfo::merkle::piece_layer_root(&layer, len, u64::from(piece)).unwrap();
    let single_root = [9u8; 32];
    let layers = V2Layers::new(
        u64::from(piece),
        [(0, root, len, &layer[..]), (1, single_root, 1000, &[][..])],
    )
    .unwrap();
    let mut t = MemTorrent::v1(HASH, piece, len);
    t.v2_layers = Some(layers);
    (t, root, layer)
}

#[test]
fn hash_requests_get_hashes_or_reject() {
    let (t, root, layer) = v2_torrent(5);
    let mut h = Harness::new(t, b"d1:md11:ut_metadatai7eee");
    // The whole padded layer (8), no uncles needed (root known).
    let r = HashRequest {
        pieces_root: root,
        base_layer: 1,
        index: 0,
        length: 8,
        proof_layers: 2,
    };
    h.send(Message::HashRequest(r)).unwrap();
    let out = h.drain();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, 22);
    let hashes = &out[0].1[48..];
    assert_eq!(hashes.len(), 8 * 32);
    for (i, l) in layer.iter().enumerate() {
        assert_eq!(&hashes[i * 32..i * 32 + 32], l);
    }
    let pad = ringseed::metainfo::merkle::pad_hash(1);
    assert_eq!(&hashes[5 * 32..6 * 32], &pad);
    // Bad requests: echoed in a hash reject.
    let single = [9u8; 32];
    for bad in [
        HashRequest { base_layer: 0, ..r },
        HashRequest { length: 3, ..r },
        HashRequest { length: 16, ..r },
        HashRequest {
            index: 2,
            length: 4,
            ..r
        },
        HashRequest {
            proof_layers: 3,
            ..r
        },
        HashRequest {
            pieces_root: [1; 32],
            ..r
        },
        HashRequest {
            pieces_root: single,
            ..r
        },
        HashRequest {
            index: 0,
            length: 1,
            ..r
        },
    ] {
        h.send(Message::HashRequest(bad)).unwrap();
        let out = h.drain();
        let mut expect = Vec::new();
        Message::HashReject(bad).encode(&mut expect);
        assert_eq!(out, vec![(23, expect[5..].to_vec())], "{bad:?}");
    }
    // The last piece alone is fine (truncated by the end of the layer).
    h.send(Message::HashRequest(HashRequest {
        index: 4,
        length: 1,
        proof_layers: 0,
        ..r
    }))
    .unwrap();
    assert_eq!(h.drain()[0].0, 22);
    let c = h.peer.counters();
    assert_eq!((c.hash_requests_served, c.hash_requests_rejected), (2, 8));
}

#[test]
fn v1_torrents_reject_hash_requests() {
    let mut h = Harness::with_info(info_of(10));
    let r = HashRequest {
        pieces_root: [0; 32],
        base_layer: 1,
        index: 0,
        length: 2,
        proof_layers: 0,
    };
    h.send(Message::HashRequest(r)).unwrap();
    assert_eq!(h.drain()[0].0, 23);
}

// ---- interop with libtorrent, by magnet link only -----------------------

/// libtorrent's Python bindings, or a loud skip (a failure under CI=true).
fn libtorrent_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import libtorrent, sys; sys.exit(0 if libtorrent.__version__.startswith('2.1') else 1)"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("libtorrent 2.1.x Python bindings are required under CI=true (pip install libtorrent==2.1.1)");
        }
        eprintln!("\n**** SKIP: libtorrent Python bindings missing; run `python3 -m pip install libtorrent==2.1.1` ****\n");
    }
    ok
}

fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A torrent served from memory: its piece space with pad bytes as zeros.
fn mem_torrent(t: &Torrent, content_root: &Path) -> MemTorrent {
    let mut space = vec![0u8; t.piece_space_len as usize];
    for f in &t.files {
        let mut p = content_root.to_path_buf();
        if t.multi_file {
            for c in &f.path {
                p.push(c);
            }
        }
        let bytes = std::fs::read(&p).unwrap();
        let at = f.offset as usize;
        space[at..at + bytes.len()].copy_from_slice(&bytes);
    }
    let piece_length = t.piece_length as u32;
    MemTorrent {
        v1: t.info_hash_v1.map(|h| h.0),
        v2: t.info_hash_v2.map(|h| h.truncated()),
        piece_length,
        total_len: t.piece_space_len,
        have: Bitfield::full(t.num_pieces),
        info_bytes: Some(t.info_bytes.clone()),
        v2_layers: V2Layers::from_torrent(t).unwrap(),
        data: space,
    }
}

/// What the fake seeder's connections did, summed when each one ends.
#[derive(Default, Debug)]
struct Served {
    closes: Vec<CloseReason>,
    metadata_pieces: u64,
    hash_requests_served: u64,
    hash_requests_rejected: u64,
    connections_done: u64,
}

fn serve_conn(s: TcpStream, cat: &MemCatalog, log: &std::sync::Mutex<Served>) {
    let mut peer = PeerState::new(
        Instant::now(),
        &PeerConfig::default(),
        s.peer_addr().unwrap(),
    );
    let r = serve_loop(s, cat, &mut peer);
    let c = peer.take_counters();
    let mut log = log.lock().unwrap();
    if let Err(e) = r {
        log.closes.push(e);
    }
    log.metadata_pieces += c.metadata_pieces_sent;
    log.hash_requests_served += c.hash_requests_served;
    log.hash_requests_rejected += c.hash_requests_rejected;
    log.connections_done += 1;
}

fn serve_loop(mut s: TcpStream, cat: &MemCatalog, peer: &mut PeerState) -> Result<(), CloseReason> {
    s.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
    s.set_nodelay(true).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => peer.handle_bytes(Instant::now(), &buf[..n], cat)?,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Ok(()),
        }
        peer.handle_tick(Instant::now())?;
        if peer.wants_unchoke() {
            peer.set_choked(Instant::now(), false);
        }
        let mut out = peer.poll_transmit().to_vec();
        peer.advance_transmit(out.len());
        if let Some(view) = peer.torrent().and_then(|id| cat.lookup(TorrentKey::Id(id))) {
            let data = &cat.torrents[view.id.0 as usize].as_ref().unwrap().data;
            for _ in 0..16 {
                let Some(r) = peer.pop_block() else { break };
                let off = r.piece as usize * view.piece_length as usize + r.begin as usize;
                out.extend_from_slice(&piece_header(r.piece, r.begin, r.len));
                out.extend_from_slice(&data[off..off + r.len as usize]);
            }
        }
        if !out.is_empty() && s.write_all(&out).is_err() {
            return Ok(());
        }
    }
}

/// Serves every connection on its own thread (for the life of the test
/// process); returns the address and the connections' summed counters.
fn start_seeder(cat: MemCatalog) -> (SocketAddr, Arc<std::sync::Mutex<Served>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let cat = Arc::new(cat);
    let log = Arc::new(std::sync::Mutex::new(Served::default()));
    let log2 = log.clone();
    thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(s) = s else { continue };
            let (cat, log) = (cat.clone(), log2.clone());
            thread::spawn(move || serve_conn(s, &cat, &log));
        }
    });
    (addr, log)
}

#[test]
fn libtorrent_joins_by_magnet_link_v1_v2_hybrid() {
    if !libtorrent_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // v1, 16 KiB pieces: 855 pieces, so the info dictionary spans two
    // metadata pieces. v2 (64 KiB) and hybrid (32 KiB): 550 pieces in the
    // big file, so libtorrent fetches its piece layer (not the leaf layer)
    // in two hash requests, the second with an uncle proof.
    let mut made = Vec::new();
    for (i, (version, piece_length, big)) in [
        (MetaVersion::V1, 16 * 1024, 14_000_000),
        (MetaVersion::V2, 64 * 1024, 550 * 64 * 1024 - 999),
        (MetaVersion::Hybrid, 32 * 1024, 550 * 32 * 1024 - 999),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = tmp.path().join(format!("content-{i}"));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("big.bin"), data(10 + i as u64, big)).unwrap();
        std::fs::write(dir.join("sub/mid.bin"), data(20 + i as u64, 3 * 16384 + 77)).unwrap();
        std::fs::write(dir.join("sub/tiny.txt"), data(30 + i as u64, 100)).unwrap();
        let created = create(
            &dir,
            &CreateOptions {
                version,
                piece_length: Some(piece_length),
                threads: 2,
                ..CreateOptions::default()
            },
            &|_| {},
        )
        .unwrap();
        made.push((version, dir, created.torrent));
    }
    let mut cat = MemCatalog::default();
    for (_, dir, t) in &made {
        cat.add(mem_torrent(t, dir));
    }
    assert!(made[0].2.info_bytes.len() > METADATA_PIECE_LEN);
    let (addr, served) = start_seeder(cat);

    // The hybrid once more by its v2 info-hash alone: a v2 connection, so
    // libtorrent fetches the piece layers by hash request there too.
    let mut runs: Vec<(String, &Path, &Torrent, Magnet, bool)> = made
        .iter()
        .map(|(v, d, t)| {
            let hashes = *v == MetaVersion::V2;
            (
                format!("{v:?}"),
                d.as_path(),
                t,
                Magnet::for_torrent(t),
                hashes,
            )
        })
        .collect();
    let (_, d, t) = &made[2];
    let mut v2_only = Magnet::for_torrent(t);
    v2_only.info_hash_v1 = None;
    runs.push(("Hybrid via btmh".into(), d.as_path(), t, v2_only, true));

    for (version, dir, t, magnet, needs_hashes) in &runs {
        let (done_before, metadata_before, hashes_before) = {
            let s = served.lock().unwrap();
            (
                s.connections_done,
                s.metadata_pieces,
                s.hash_requests_served,
            )
        };
        let save = tmp
            .path()
            .join(format!("save-{}", version.replace(' ', "-")));
        std::fs::create_dir_all(&save).unwrap();
        let uri = magnet.to_uri();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/lt_download.py");
        let out = Command::new("python3")
            .arg(script)
            .args(["--peer", &addr.to_string(), "--timeout", "90", "--save"])
            .arg(&save)
            .args(["--magnet", &uri])
            .output()
            .expect("run lt_download.py");
        let text = String::from_utf8_lossy(&out.stdout);
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
            panic!(
                "{version}: lt_download.py output {text:?} ({e}); stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        assert_eq!(v[0]["completed"], true, "{version} by magnet: {v}");
        assert_same_tree(dir, &save.join(&t.name));
        // The leecher has exited: wait for the seeder to see the close.
        let deadline = Instant::now() + Duration::from_secs(5);
        while served.lock().unwrap().connections_done == done_before && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        let s = served.lock().unwrap();
        eprintln!("{version} by magnet: {}; seeder: {s:?}", v[0]);
        assert!(s.closes.is_empty(), "the seeder closed libtorrent: {s:?}");
        assert!(
            s.metadata_pieces > metadata_before,
            "{version}: no metadata served"
        );
        // A hybrid joined by a magnet with both hashes connects with the v1
        // info-hash (we do not upgrade the connection to v2), so libtorrent
        // verifies with SHA-1 and sends no hash requests; on a v2
        // connection it must fetch the piece layers by hash request.
        if *needs_hashes {
            assert!(
                s.hash_requests_served >= hashes_before + 2,
                "{version}: piece layer not fetched by hash requests: {s:?}"
            );
        }
        assert_eq!(s.hash_requests_rejected, 0, "{s:?}");
    }
}

// ---- never panics ---------------------------------------------------------

use proptest::prelude::*;

/// One hostile input: a raw ut_metadata payload, or a hash request.
fn hostile() -> impl Strategy<Value = (Option<Vec<u8>>, [u32; 4])> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(|p| (Some(p), [0; 4])),
        (0u32..4, 0u32..16, 0u32..1100, 0u32..12)
            .prop_map(|(b, i, l, pl)| (None, [b, i * 2, l, pl])),
    ]
}

proptest! {
    /// Arbitrary ut_metadata payloads and hash requests, after a valid
    /// handshake, against a torrent with metadata and v2 layers: never a
    /// panic, and the control backlog stays bounded.
    #[test]
    fn metadata_and_hash_requests_never_panic(msgs in proptest::collection::vec(hostile(), 0..40)) {
        let (mut t, root, _) = v2_torrent(37);
        t.info_bytes = Some(info_of(3 * METADATA_PIECE_LEN + 3));
        let mut h = Harness::new(t, b"d1:md11:ut_metadatai7eee");
        for (meta, [base, index, length, proof]) in msgs {
            let r = match meta {
                Some(payload) => h.send(Message::Extended { id: 1, payload: &payload }),
                None => h.send(Message::HashRequest(HashRequest {
                    pieces_root: root,
                    base_layer: base,
                    index,
                    length,
                    proof_layers: proof,
                })),
            };
            if r.is_err() {
                break;
            }
            prop_assert!(h.peer.poll_transmit().len() < 512 * 1024);
        }
    }
}
