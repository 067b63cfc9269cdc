//! `--utp serve` end to end, without libtorrent: a client built on the
//! sans-IO `utp::Endpoint` over a real UDP socket connects to the engine's
//! UDP port, speaks the peer protocol over uTP (handshake, interested,
//! requests after the unchoke) and receives every block byte for byte,
//! through the same peer path as TCP.

use std::net::UdpSocket;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

mod support;

use ringseed::engine::ShardConfig;
use ringseed::metainfo::MetaVersion;
use ringseed::utp::{Endpoint, EndpointConfig, State, UtpMode};
use support::engine::{data, info_hash, make_torrent, served, start_engine, total, wait_until};
use support::leecher::handshake_bytes;

const BLOCK: u64 = 16384;

/// A uTP client on a real UDP socket, driven by the sans-IO endpoint; it
/// can lose every `n`th datagram each way (loss on the path).
struct Client {
    sock: UdpSocket,
    ep: Endpoint,
    key: ringseed::utp::ConnKey,
    out: Vec<u8>,
    inbuf: Vec<u8>,
    /// Lose every `drop_in`th datagram received, `drop_out`th sent (0: none).
    drop_in: u32,
    drop_out: u32,
    seen_in: u32,
    seen_out: u32,
    lost: u32,
}

impl Client {
    fn connect(server: std::net::SocketAddr, seed: u64, drop_in: u32, drop_out: u32) -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(2)))
            .unwrap();
        let mut ep = Endpoint::new(EndpointConfig::default(), seed);
        let key = ep.connect(Instant::now(), server);
        Self {
            sock,
            ep,
            key,
            out: vec![0u8; 2048],
            inbuf: vec![0u8; 4096],
            drop_in,
            drop_out,
            seen_in: 0,
            seen_out: 0,
            lost: 0,
        }
    }

    /// Sends what is due, takes one datagram (waiting up to 2 ms), runs
    /// the timers.
    fn turn(&mut self) {
        let now = Instant::now();
        while let Some((to, n)) = self.ep.poll_transmit(now, &mut self.out) {
            self.seen_out += 1;
            if self.drop_out > 0 && self.seen_out % self.drop_out == 0 {
                self.lost += 1;
                continue;
            }
            self.sock.send_to(&self.out[..n], to).unwrap();
        }
        if let Ok((n, from)) = self.sock.recv_from(&mut self.inbuf) {
            self.seen_in += 1;
            if self.drop_in > 0 && self.seen_in % self.drop_in == 0 {
                self.lost += 1;
            } else {
                self.ep.handle(Instant::now(), from, &self.inbuf[..n]);
            }
        }
        let now = Instant::now();
        if self.ep.poll_timeout().is_some_and(|t| t <= now) {
            self.ep.handle_timeout(now);
        }
    }

    fn conn(&mut self) -> Option<&mut ringseed::utp::Connection> {
        self.ep.conn_mut(self.key)
    }
}

/// Downloads a 37.1-block torrent over uTP from a 2-shard engine, losing
/// every `drop_in`th / `drop_out`th datagram; checks every byte and the
/// engine's counters.
fn download_over_utp(drop_in: u32, drop_out: u32) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f.bin");
    let len = BLOCK as usize * 37 + 1234;
    std::fs::write(&file, data(5, len)).unwrap();
    let fix = make_torrent(&file, MetaVersion::V1, Some(BLOCK * 2));
    let engine = start_engine(
        vec![served(&fix, &file)],
        2,
        ShardConfig {
            utp: UtpMode::Serve,
            ..ShardConfig::default()
        },
    );
    let t0 = Instant::now();
    let mut client = Client::connect(engine.local_addr(), 99, drop_in, drop_out);
    let mut rbuf = vec![0u8; 1 << 16];
    let mut stream: Vec<u8> = Vec::new();
    let mut sent_hello = false;
    let mut requested = false;
    let mut got = vec![0u8; len];
    let mut blocks_left = (len as u64).div_ceil(BLOCK);
    let mut handshake_seen = false;
    let deadline = t0 + Duration::from_secs(30);
    while blocks_left > 0 && Instant::now() < deadline {
        client.turn();
        let c = client.conn().expect("connection");
        assert!(!c.is_closed(), "closed: {:?}", c.close_reason());
        if c.state() == State::Connected && !sent_hello {
            sent_hello = true;
            let mut hello = handshake_bytes(info_hash(&fix.torrent), true, false).to_vec();
            hello.extend_from_slice(&[0, 0, 0, 1, 2]); // interested
            assert_eq!(c.write(&hello), hello.len());
        }
        loop {
            let n = c.read(&mut rbuf);
            if n == 0 {
                break;
            }
            stream.extend_from_slice(&rbuf[..n]);
        }
        // Parse what arrived: the handshake, then length-prefixed messages.
        if !handshake_seen && stream.len() >= 68 {
            assert_eq!(&stream[..20], b"\x13BitTorrent protocol");
            stream.drain(..68);
            handshake_seen = true;
        }
        while handshake_seen && stream.len() >= 4 {
            let mlen = u32::from_be_bytes(stream[..4].try_into().unwrap()) as usize;
            if stream.len() < 4 + mlen {
                break;
            }
            let msg: Vec<u8> = stream.drain(..4 + mlen).skip(4).collect();
            match msg.first() {
                Some(1) if !requested => {
                    // Unchoked: ask for every block.
                    requested = true;
                    let mut reqs = Vec::new();
                    let mut off = 0u64;
                    while off < len as u64 {
                        let piece = (off / (BLOCK * 2)) as u32;
                        let begin = (off % (BLOCK * 2)) as u32;
                        let l = BLOCK.min(len as u64 - off) as u32;
                        reqs.extend_from_slice(&13u32.to_be_bytes());
                        reqs.push(6);
                        reqs.extend_from_slice(&piece.to_be_bytes());
                        reqs.extend_from_slice(&begin.to_be_bytes());
                        reqs.extend_from_slice(&l.to_be_bytes());
                        off += BLOCK;
                    }
                    assert_eq!(c.write(&reqs), reqs.len());
                }
                Some(7) => {
                    let piece = u32::from_be_bytes(msg[1..5].try_into().unwrap()) as usize;
                    let begin = u32::from_be_bytes(msg[5..9].try_into().unwrap()) as usize;
                    let at = piece * 2 * BLOCK as usize + begin;
                    got[at..at + msg.len() - 9].copy_from_slice(&msg[9..]);
                    blocks_left -= 1;
                }
                _ => {}
            }
        }
    }
    assert_eq!(blocks_left, 0, "every block arrived within 30 s");
    assert!(got == fix.piece_space[..len], "bytes match the file");
    assert!(wait_until(Duration::from_secs(2), || {
        total(engine.stats(), |s| s.utp_accepted.load(Ordering::Relaxed)) == 1
            && total(engine.stats(), |s| s.payload_bytes.load(Ordering::Relaxed)) == len as u64
            // Counted as uTP traffic (the `transport` label).
            && total(engine.stats(), |s| s.utp_payload_bytes.load(Ordering::Relaxed)) == len as u64
    }));
    if drop_in > 0 || drop_out > 0 {
        assert!(client.lost > 0, "the path lost datagrams");
    }
    eprintln!(
        "{len} bytes over uTP in {:?} ({} datagrams lost on the way)",
        t0.elapsed(),
        client.lost
    );
    engine.shutdown();
    engine.join().unwrap();
}

#[test]
fn a_utp_client_downloads_a_torrent_through_the_engine() {
    download_over_utp(0, 0);
}

/// Every 20th datagram from the seed and every 25th to it are lost: the
/// seed re-sends from the mmap (its send buffer holds the slices, not a
/// copy) and every byte still arrives intact.
#[test]
fn a_lossy_path_is_repaired_by_resends_from_the_mmap() {
    download_over_utp(20, 25);
}

/// A uTP peer that asks for a whole torrent and then stops reading: its
/// receive window closes, the seed's uTP send buffer fills, the engine's
/// send waits for room and makes no progress, and the send timeout closes
/// the connection (counted as such), leaving nothing behind.
#[test]
fn a_utp_peer_that_stops_reading_is_closed_by_the_send_timeout() {
    use ringseed::engine::CloseKind;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f.bin");
    // Far more than the uTP send buffer (1 MiB) and the receive window.
    let len = 8 << 20;
    std::fs::write(&file, data(6, len)).unwrap();
    let fix = make_torrent(&file, MetaVersion::V1, Some(BLOCK * 16));
    let engine = start_engine(
        vec![served(&fix, &file)],
        1,
        ShardConfig {
            utp: UtpMode::Serve,
            send_timeout: Duration::from_secs(1),
            ..ShardConfig::default()
        },
    );
    let t0 = Instant::now();
    let mut client = Client::connect(engine.local_addr(), 7, 0, 0);
    let (mut hello, mut sent) = (false, false);
    let mut stream: Vec<u8> = Vec::new();
    let closed = |e: &ringseed::engine::Engine| {
        total(e.stats(), |s| {
            s.closed(CloseKind::SendTimeout).load(Ordering::Relaxed)
        })
    };
    while closed(&engine) == 0 && t0.elapsed() < Duration::from_secs(15) {
        client.turn();
        let Some(c) = client.conn() else { break };
        if c.state() == State::Connected && !hello {
            hello = true;
            let mut m = handshake_bytes(info_hash(&fix.torrent), true, false).to_vec();
            m.extend_from_slice(&[0, 0, 0, 1, 2]); // interested
            assert_eq!(c.write(&m), m.len());
        }
        if !sent {
            // Read until the unchoke, then ask for 250 blocks at once and
            // never read again.
            let mut rbuf = [0u8; 4096];
            loop {
                let n = c.read(&mut rbuf);
                if n == 0 {
                    break;
                }
                stream.extend_from_slice(&rbuf[..n]);
            }
            let mut pos = 68.min(stream.len());
            let mut unchoked = false;
            while stream.len() >= 68 && stream.len() >= pos + 5 {
                let mlen = u32::from_be_bytes(stream[pos..pos + 4].try_into().unwrap()) as usize;
                if stream.len() < pos + 4 + mlen {
                    break;
                }
                unchoked |= mlen >= 1 && stream[pos + 4] == 1;
                pos += 4 + mlen;
            }
            if unchoked {
                sent = true;
                let mut m = Vec::new();
                for off in (0..len as u64).step_by(BLOCK as usize).take(250) {
                    let piece = (off / (BLOCK * 16)) as u32;
                    let begin = (off % (BLOCK * 16)) as u32;
                    m.extend_from_slice(&13u32.to_be_bytes());
                    m.push(6);
                    m.extend_from_slice(&piece.to_be_bytes());
                    m.extend_from_slice(&begin.to_be_bytes());
                    m.extend_from_slice(&(BLOCK as u32).to_be_bytes());
                }
                assert_eq!(c.write(&m), m.len());
            }
        }
    }
    let waited = t0.elapsed();
    assert_eq!(
        closed(&engine),
        1,
        "closed by the send timeout after {waited:?}"
    );
    assert!(
        wait_until(Duration::from_secs(5), || engine
            .stats()
            .iter()
            .all(|s| s.utp_connections.load(Ordering::Relaxed) == 0)),
        "the uTP connection was let go"
    );
    // What reached us is less than the torrent: the seed stopped at the
    // closed window (its send buffer and our receive window), not sooner.
    let sent_bytes = total(engine.stats(), |s| s.payload_bytes.load(Ordering::Relaxed));
    assert!(sent_bytes < len as u64, "{sent_bytes}");
    eprintln!("stalled uTP peer closed after {waited:?}, {sent_bytes} payload bytes sent");
    engine.shutdown();
    engine.join().unwrap();
}
