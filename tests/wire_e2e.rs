//! End to end over loopback: a tiny blocking fake seeder driven by
//! `PeerState`, serving from memory, against the test leecher and raw
//! hostile peers.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use ringseed::wire::codec::{piece_header, Message};
use ringseed::wire::{CloseReason, PeerConfig, PeerState, TorrentCatalog, TorrentKey};
use support::catalog::{MemCatalog, MemTorrent};
use support::leecher;

const HASH: [u8; 20] = [0x5a; 20];

#[derive(Clone, Copy, Default)]
struct Behaviour {
    /// Choke (and immediately unchoke again) after this many blocks served.
    choke_after_blocks: Option<usize>,
}

/// Serves one connection until it closes; returns why.
fn serve_conn(
    mut s: TcpStream,
    cat: &MemCatalog,
    cfg: &PeerConfig,
    b: Behaviour,
) -> Result<(), CloseReason> {
    s.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
    s.set_nodelay(true).unwrap();
    let mut peer = PeerState::new(Instant::now(), cfg, s.peer_addr().unwrap());
    let mut buf = vec![0u8; 4096];
    let mut served = 0usize;
    let mut choke_done = false;
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
        // One "send": control bytes first, then up to 16 blocks.
        let mut out = peer.poll_transmit().to_vec();
        peer.advance_transmit(out.len());
        if let Some(view) = peer.torrent().and_then(|id| cat.lookup(TorrentKey::Id(id))) {
            let data = &cat.torrents[view.id.0 as usize].as_ref().unwrap().data;
            for _ in 0..16 {
                let Some(r) = peer.pop_block() else { break };
                let off = r.piece as usize * view.piece_length as usize + r.begin as usize;
                out.extend_from_slice(&piece_header(r.piece, r.begin, r.len));
                out.extend_from_slice(&data[off..off + r.len as usize]);
                served += 1;
            }
        }
        if !out.is_empty() && s.write_all(&out).is_err() {
            return Ok(());
        }
        if let Some(n) = b.choke_after_blocks {
            if served >= n && !choke_done {
                choke_done = true;
                peer.set_choked(Instant::now(), true);
            }
        }
    }
}

/// Starts a seeder accepting `conns` connections; each result is sent on the channel.
fn start_seeder(
    cat: MemCatalog,
    conns: usize,
    b: Behaviour,
) -> (SocketAddr, mpsc::Receiver<Result<(), CloseReason>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    let cat = Arc::new(cat);
    let cfg = Arc::new(PeerConfig {
        reqq: 64,
        handshake_timeout: Duration::from_secs(2),
        ..PeerConfig::default()
    });
    thread::spawn(move || {
        for s in listener.incoming().take(conns) {
            let Ok(s) = s else { continue };
            let (cat, cfg, tx) = (cat.clone(), cfg.clone(), tx.clone());
            thread::spawn(move || {
                let _ = tx.send(serve_conn(s, &cat, &cfg, b));
            });
        }
    });
    (addr, rx)
}

fn torrent(piece_length: u32, total: u64) -> (MemCatalog, Vec<u8>) {
    let t = MemTorrent::v1(HASH, piece_length, total);
    let data = t.data.clone();
    let mut cat = MemCatalog::default();
    cat.add(t);
    (cat, data)
}

#[test]
fn leecher_downloads_every_byte() {
    let (piece_len, total) = (64 * 1024, 1024 * 1024 + 12_345);
    let (cat, data) = torrent(piece_len, total);
    let (addr, results) = start_seeder(cat, 2, Behaviour::default());
    let n = support::catalog::num_pieces(piece_len, total);
    let (got, info) = leecher::download_with_info(addr, HASH, n, piece_len, total, 32).unwrap();
    assert!(got == data, "downloaded bytes differ");
    assert!(info.have_all && info.ext_handshake.is_some());
    // A second leecher with a pipeline of 1.
    let got = leecher::download(addr, HASH, n, piece_len, total, 1).unwrap();
    assert!(got == data);
    for _ in 0..2 {
        assert_eq!(
            results.recv_timeout(Duration::from_secs(5)).unwrap(),
            Ok(())
        );
    }
}

#[test]
fn leecher_survives_choke_mid_pipeline() {
    let (piece_len, total) = (32 * 1024, 300 * 1024);
    let (cat, data) = torrent(piece_len, total);
    let (addr, _results) = start_seeder(
        cat,
        1,
        Behaviour {
            choke_after_blocks: Some(3),
        },
    );
    let n = support::catalog::num_pieces(piece_len, total);
    let (got, info) = leecher::download_with_info(addr, HASH, n, piece_len, total, 16).unwrap();
    assert!(got == data);
    assert_eq!(info.chokes, 1);
}

#[test]
fn hostile_peers_are_closed_with_a_reason() {
    let (cat, _) = torrent(32 * 1024, 100_000);
    let cases: Vec<(&str, Vec<u8>, CloseReason)> = vec![
        (
            "length prefix 2^32-1",
            {
                let mut v = leecher::handshake_bytes(HASH, true, true).to_vec();
                v.extend_from_slice(&[0xff; 4]);
                v
            },
            CloseReason::MessageTooLong,
        ),
        (
            "unknown info-hash",
            leecher::handshake_bytes([1; 20], true, true).to_vec(),
            CloseReason::UnknownInfoHash,
        ),
        (
            "garbage",
            b"\x16\x03\x01 not bittorrent".to_vec(),
            CloseReason::BadHandshake,
        ),
        (
            "1 MiB request",
            {
                let mut v = leecher::handshake_bytes(HASH, true, true).to_vec();
                Message::Request(ringseed::wire::BlockRequest {
                    piece: 0,
                    begin: 0,
                    len: 1 << 20,
                })
                .encode(&mut v);
                v
            },
            CloseReason::RequestTooLarge,
        ),
        (
            "malformed extension handshake",
            {
                let mut v = leecher::handshake_bytes(HASH, true, true).to_vec();
                Message::Extended {
                    id: 0,
                    payload: b"d3:abc",
                }
                .encode(&mut v);
                v
            },
            CloseReason::BadExtension,
        ),
        (
            "handshake then silence",
            Vec::new(),
            CloseReason::HandshakeTimeout,
        ),
    ];
    let (addr, results) = start_seeder(cat, cases.len(), Behaviour::default());
    for (name, bytes, want) in cases {
        let mut s = leecher::connect(addr, Duration::from_secs(5)).unwrap();
        leecher::send_raw(&mut s, &bytes).unwrap();
        leecher::read_until_close(&mut s, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            results.recv_timeout(Duration::from_secs(5)).unwrap(),
            Err(want),
            "{name}"
        );
    }
}
