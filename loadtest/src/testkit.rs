//! Fixtures shared by the tests and the receive-path bench: a real torrent
//! over deterministic data, the bytes a seeder would send, and a tiny
//! threaded seed ([`TestSeed`]) for in-process swarm tests.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use ringseed::metainfo::create::{create, CreateOptions};
use ringseed::metainfo::MetaVersion;
use ringseed::wire::codec::{piece_header, Handshake, Message, ReservedFlags};

use crate::leecher::{Leecher, LeecherConfig, Pattern};
use crate::rng::Rng;
use crate::stats::Stats;
use crate::torrents::LoadTorrent;

/// Deterministic content byte `i`.
pub fn content_byte(i: u64) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 13) as u8
}

/// Writes `size` bytes of content to `dir/name` and creates a torrent for
/// it at `dir/name.torrent`. Returns the torrent path and content.
pub fn make_torrent(
    dir: &Path,
    name: &str,
    size: u64,
    piece_length: u64,
    version: MetaVersion,
) -> anyhow::Result<(PathBuf, Arc<LoadTorrent>, Vec<u8>)> {
    let data: Vec<u8> = (0..size).map(content_byte).collect();
    let path = dir.join(name);
    std::fs::write(&path, &data)?;
    let opts = CreateOptions {
        version,
        piece_length: Some(piece_length),
        threads: 1,
        ..CreateOptions::default()
    };
    let created = create(&path, &opts, &|_| {})?;
    let tpath = dir.join(format!("{name}.torrent"));
    std::fs::write(&tpath, &created.bytes)?;
    Ok((
        tpath,
        Arc::new(LoadTorrent::from_torrent(created.torrent)?),
        data,
    ))
}

/// Seeder handshake for `t`, with the fast extension as chosen.
pub fn seeder_handshake(t: &LoadTorrent, fast: bool) -> Vec<u8> {
    Handshake {
        reserved: ReservedFlags {
            fast,
            extension: false,
            v2: false,
            dht: false,
        }
        .to_bytes(),
        info_hash: t.handshake_hash,
        peer_id: *b"-SS0100-scriptedseed",
    }
    .encode()
    .to_vec()
}

/// A piece message carrying `data[piece * piece_length + begin..][..len]`.
pub fn piece_msg(t: &LoadTorrent, data: &[u8], piece: u32, begin: u32, len: u32) -> Vec<u8> {
    let off = u64::from(piece) * u64::from(t.piece_length) + u64::from(begin);
    let mut m = piece_header(piece, begin, len).to_vec();
    let end = (off + u64::from(len)) as usize;
    m.extend_from_slice(data.get(off as usize..end).unwrap_or_default());
    m
}

/// The receive-path bench fixture.
pub struct RecvFixture {
    /// Piece messages for every block of the torrent, in order.
    pub stream: Vec<u8>,
    /// A leecher that has been unchoked and requested every block, and
    /// fresh stats.
    pub make: Box<dyn Fn() -> (Leecher, Stats)>,
}

/// A 4 MiB v1 torrent in the temp dir; `_blocks` reserved for other sizes.
pub fn recv_fixture(_blocks: usize) -> RecvFixture {
    let dir = std::env::temp_dir().join(format!("ringseed-loadtest-bench-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let (_, t, data) = make_torrent(&dir, "bench.bin", 4 << 20, 256 << 10, MetaVersion::V1)
        .expect("create bench torrent in the temp dir");
    let _ = std::fs::remove_dir_all(&dir);
    let mut stream = Vec::with_capacity(data.len() + 4096);
    for piece in 0..t.num_pieces {
        let plen = t.piece_len(piece);
        let mut begin = 0;
        while begin < plen {
            let len = (plen - begin).min(16 * 1024);
            stream.extend_from_slice(&piece_msg(&t, &data, piece, begin, len));
            begin += len;
        }
    }
    let blocks = (data.len() / (16 * 1024)).max(1);
    let make = Box::new(move || {
        let cfg = LeecherConfig {
            pipeline: blocks,
            pattern: Pattern::Sequential,
            ..LeecherConfig::default()
        };
        let mut l = Leecher::new(t.clone(), cfg, &mut Rng::new(1), &[]);
        let now = Instant::now();
        l.on_connected(now);
        let mut pre = seeder_handshake(&t, true);
        Message::HaveAll.encode(&mut pre);
        Message::Unchoke.encode(&mut pre);
        let mut stats = Stats::default();
        let _ = l.handle_data(now, &pre, &mut stats);
        (l, stats)
    });
    RecvFixture { stream, make }
}

/// A tiny seed for in-process swarm tests: a thread per connection,
/// blocking sockets, every piece announced (have_all), everyone unchoked,
/// requests served in order through one shared upload cap (like
/// ringseed's `--upload-rate-limit`). Other messages are read and ignored.
pub struct TestSeed {
    pub addr: std::net::SocketAddr,
    /// Payload bytes sent.
    pub uploaded: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl TestSeed {
    /// Serves `data` (the piece space of `t`) on 127.0.0.1, port 0.
    pub fn start(
        t: Arc<LoadTorrent>,
        data: Arc<Vec<u8>>,
        rate: ringseed::swarm::ratelimit::Rate,
    ) -> std::io::Result<TestSeed> {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use std::sync::Mutex;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let uploaded = Arc::new(AtomicU64::new(0));
        let now = Instant::now();
        let bucket = Arc::new(Mutex::new(match rate.bytes_per_sec() {
            Some(r) => ringseed::swarm::ratelimit::TokenBucket::new(now, r, (r / 20).max(65_536)),
            None => ringseed::swarm::ratelimit::TokenBucket::unlimited(now),
        }));
        let (st, up) = (stop.clone(), uploaded.clone());
        let accept = std::thread::Builder::new()
            .name("test-seed".into())
            .spawn(move || {
                for s in listener.incoming() {
                    if st.load(Ordering::Relaxed) {
                        return;
                    }
                    let Ok(s) = s else { continue };
                    let (t, data, bucket, up, st) = (
                        t.clone(),
                        data.clone(),
                        bucket.clone(),
                        up.clone(),
                        st.clone(),
                    );
                    let _ = std::thread::Builder::new()
                        .name("test-seed-conn".into())
                        .spawn(move || {
                            let _ = serve_conn(s, &t, &data, &bucket, &up, &st);
                        });
                }
            })?;
        Ok(TestSeed {
            addr,
            uploaded,
            stop,
            accept: Some(accept),
        })
    }
}

impl Drop for TestSeed {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        // Wake the accept loop.
        let _ = std::net::TcpStream::connect(self.addr);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn wait_for_tokens(bucket: &std::sync::Mutex<ringseed::swarm::ratelimit::TokenBucket>, n: u64) {
    loop {
        let wait = {
            let mut b = bucket.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            if b.available(now) >= n {
                b.take(now, n);
                return;
            }
            b.next_ready(now, n).saturating_duration_since(now)
        };
        std::thread::sleep(wait.max(std::time::Duration::from_micros(200)));
    }
}

fn serve_conn(
    mut s: std::net::TcpStream,
    t: &LoadTorrent,
    data: &[u8],
    bucket: &std::sync::Mutex<ringseed::swarm::ratelimit::TokenBucket>,
    uploaded: &std::sync::atomic::AtomicU64,
    stop: &std::sync::atomic::AtomicBool,
) -> std::io::Result<()> {
    use std::io::{Read, Write};
    use std::sync::atomic::Ordering;
    s.set_read_timeout(Some(std::time::Duration::from_millis(200)))?;
    s.set_nodelay(true)?;
    let mut hs = [0u8; 68];
    s.read_exact(&mut hs)?;
    let mut out = seeder_handshake(t, true);
    Message::HaveAll.encode(&mut out);
    Message::Unchoke.encode(&mut out);
    s.write_all(&out)?;
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        match s.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => return Err(e),
        }
        let mut pos = 0;
        while let Some(head) = buf.get(pos..pos + 4) {
            let n = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
            let Some(body) = buf.get(pos + 4..pos + 4 + n) else {
                break;
            };
            pos += 4 + n;
            if n != 13 || body[0] != ringseed::wire::codec::MSG_ID_REQUEST {
                continue;
            }
            let word =
                |i: usize| u32::from_be_bytes([body[i], body[i + 1], body[i + 2], body[i + 3]]);
            let (piece, begin, blen) = (word(1), word(5), word(9));
            let off = u64::from(piece) * u64::from(t.piece_length) + u64::from(begin);
            let Some(block) = data.get(off as usize..off as usize + blen as usize) else {
                return Ok(());
            };
            wait_for_tokens(bucket, u64::from(blen));
            let mut msg = piece_header(piece, begin, blen).to_vec();
            msg.extend_from_slice(block);
            s.write_all(&msg)?;
            uploaded.fetch_add(u64::from(blen), Ordering::Relaxed);
        }
        buf.drain(..pos);
    }
    Ok(())
}
