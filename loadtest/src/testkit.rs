//! Fixtures shared by the tests and the receive-path bench: a real torrent
//! over deterministic data, and the bytes a seeder would send. The tiny
//! seed for in-process swarm tests is [`crate::testseed`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use ringseed::create::{create, CreateOptions};
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
