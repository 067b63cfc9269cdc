//! Piece hashing throughput: ringseed's v1 and v2 paths against the bare
//! sha1/sha2 crates on the same bytes, in memory and from a page-cached file
//! (tmpfs when /dev/shm exists).
//!
//! `RINGSEED_BENCH_VERIFY_MIB=1024 cargo bench --bench hashing` additionally
//! times `storage::verify` of a hybrid single-file torrent of that size with
//! 1 thread and with every core (printed, not a criterion group).

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use ringseed::metainfo::merkle;
use ringseed::metainfo::{FileEntry, MetaVersion, Torrent};
use ringseed::storage::{self, hash_files};
use sha1::Sha1;
use sha2::{Digest, Sha256};

const PIECE: u64 = 256 * 1024;
const LEN: u64 = 32 << 20;

fn data(len: u64) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3])
        .collect()
}

fn temp_dir() -> tempfile::TempDir {
    if Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm").expect("temp dir in /dev/shm")
    } else {
        tempfile::tempdir().expect("temp dir")
    }
}

fn entry(len: u64) -> Vec<FileEntry> {
    vec![FileEntry {
        path: vec!["data.bin".into()],
        length: len,
        offset: 0,
        pieces_root: None,
        executable: false,
        hidden: false,
    }]
}

fn bench_hashing(c: &mut Criterion) {
    let buf = data(LEN);
    let dir = temp_dir();
    let file = dir.path().join("data.bin");
    std::fs::write(&file, &buf).expect("write bench file");
    let files = entry(LEN);

    let mut g = c.benchmark_group("v1");
    g.throughput(Throughput::Bytes(LEN));
    g.sample_size(10);
    g.bench_function("bare_sha1_mem", |b| {
        b.iter(|| {
            for p in buf.chunks(PIECE as usize) {
                black_box(Sha1::digest(p));
            }
        })
    });
    g.bench_function(BenchmarkId::new("ringseed_file", "1thread"), |b| {
        b.iter(|| {
            black_box(
                hash_files(&file, &files, false, PIECE, LEN, true, false, 1, &|_| {}).unwrap(),
            )
        })
    });
    // The alternative read strategy: hash straight from a fresh mmap each
    // iteration (page faults included), as pread's competitor.
    g.bench_function("alt_mmap_sha1_file", |b| {
        b.iter(|| {
            let f = std::fs::File::open(&file).unwrap();
            // SAFETY: read-only private mapping of a bench file nobody else
            // writes while the bench runs.
            let map = unsafe { memmap2::Mmap::map(&f) }.unwrap();
            let _ = map.advise(memmap2::Advice::Sequential);
            for p in map.chunks(PIECE as usize) {
                black_box(Sha1::digest(p));
            }
        })
    });
    g.finish();

    let mut g = c.benchmark_group("v2");
    g.throughput(Throughput::Bytes(LEN));
    g.sample_size(10);
    g.bench_function("bare_sha256_leaves_mem", |b| {
        b.iter(|| {
            for leaf in buf.chunks(merkle::LEAF_SIZE as usize) {
                black_box(Sha256::digest(leaf));
            }
        })
    });
    g.bench_function("ringseed_merkle_mem", |b| {
        let mut leaves = Vec::new();
        b.iter(|| {
            for p in buf.chunks(PIECE as usize) {
                leaves.clear();
                leaves.extend(p.chunks(merkle::LEAF_SIZE as usize).map(merkle::hash_leaf));
                black_box(merkle::piece_hash_from_leaves(&mut leaves, LEN, PIECE));
            }
        })
    });
    g.bench_function(BenchmarkId::new("ringseed_file", "1thread"), |b| {
        b.iter(|| {
            black_box(
                hash_files(&file, &files, false, PIECE, LEN, false, true, 1, &|_| {}).unwrap(),
            )
        })
    });
    g.finish();
}

/// Time `verify` of a hybrid torrent of `mib` MiB with 1 thread and all cores.
fn verify_scaling(mib: u64) {
    let len = mib << 20;
    let dir = temp_dir();
    let file = dir.path().join("data.bin");
    std::fs::write(&file, data(len)).expect("write verify file");
    let mut files = entry(len);
    let cores = storage::hash::default_threads();
    let h = hash_files(&file, &files, false, PIECE, len, true, true, cores, &|_| {})
        .expect("hash verify file");
    let v2 = h.v2_files.expect("v2 hashes");
    files[0].pieces_root = v2[0].pieces_root;
    let torrent = Torrent {
        info_bytes: Vec::new(),
        info_hash_v1: None,
        info_hash_v2: None,
        version: MetaVersion::Hybrid,
        name: "data.bin".into(),
        piece_length: PIECE,
        num_pieces: len.div_ceil(PIECE) as u32,
        piece_space_len: len,
        total_size: len,
        multi_file: false,
        files,
        v1_pieces: h.v1_pieces,
        v2_piece_layers: Some(vec![v2[0].piece_layer.clone()]),
        trackers: Vec::new(),
        web_seeds: Vec::new(),
        comment: None,
        created_by: None,
        creation_date: None,
        private: false,
    };
    for threads in [1, cores] {
        let start = Instant::now();
        let r = storage::verify(&torrent, &file, threads, &|_| {}).expect("verify");
        let secs = start.elapsed().as_secs_f64();
        assert!(r.is_all_good());
        println!(
            "verify hybrid {mib} MiB, {threads} thread(s): {secs:.2} s, {:.0} MiB/s",
            mib as f64 / secs
        );
    }
}

criterion_group!(benches, bench_hashing);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    if let Some(mib) = std::env::var("RINGSEED_BENCH_VERIFY_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        verify_scaling(mib);
    }
}
