//! Running the io_uring engine in-process: torrents made from files on
//! disk, an engine on `127.0.0.1:0`, and small polling helpers.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringseed::create::{create, CreateOptions};
use ringseed::engine::{Catalog, Engine, EngineConfig, ServedTorrent, ShardConfig, ShardStats};
use ringseed::metainfo::{MetaVersion, Torrent};
use ringseed::storage::Content;
use ringseed::wire::Bitfield;

/// Deterministic pseudo-random bytes.
pub fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub struct Fixture {
    pub torrent: Torrent,
    /// The piece space as a leecher must receive it (pad bytes are zeros).
    pub piece_space: Vec<u8>,
}

pub fn make_torrent(root: &Path, version: MetaVersion, piece_length: Option<u64>) -> Fixture {
    let opts = CreateOptions {
        version,
        piece_length,
        threads: 2,
        ..CreateOptions::default()
    };
    let created = create(root, &opts, &|_| {}).expect("create torrent");
    let t = created.torrent;
    let mut space = vec![0u8; t.piece_space_len as usize];
    for f in &t.files {
        let path = if t.multi_file {
            f.path.iter().fold(root.to_path_buf(), |p, c| p.join(c))
        } else {
            root.to_path_buf()
        };
        let bytes = std::fs::read(&path).unwrap();
        space[f.offset as usize..f.offset as usize + bytes.len()].copy_from_slice(&bytes);
    }
    Fixture {
        torrent: t,
        piece_space: space,
    }
}

/// The fixture served with every piece verified.
pub fn served(fix: &Fixture, root: &Path) -> ServedTorrent {
    let content = Content::open(&fix.torrent, root).expect("open content");
    let have = Bitfield::full(fix.torrent.num_pieces);
    ServedTorrent::new(0, fix.torrent.clone(), content, have).expect("layout")
}

/// An engine on `127.0.0.1:0` (unpinned) serving `torrents`.
pub fn start_engine(torrents: Vec<ServedTorrent>, shards: usize, shard: ShardConfig) -> Engine {
    let cfg = EngineConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        shards,
        pin: false,
        max_connections: 5000,
        max_per_ip: 5000,
        shard,
        ..EngineConfig::default()
    };
    Engine::start(cfg, Arc::new(Catalog::new(torrents))).expect("engine starts")
}

/// The info-hash a peer would use: v1, else the truncated v2 one.
pub fn info_hash(t: &Torrent) -> [u8; 20] {
    t.info_hash_v1
        .map(|h| h.0)
        .unwrap_or_else(|| t.info_hash_v2.unwrap().truncated())
}

/// A counter summed over shards.
pub fn total(stats: &[Arc<ShardStats>], f: impl Fn(&ShardStats) -> u64) -> u64 {
    stats.iter().map(|s| f(s)).sum()
}

/// Polls `f` every 10 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}
