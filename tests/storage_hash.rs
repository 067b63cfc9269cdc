//! Hashing and verification against a naive, independently written model:
//! the whole piece space built in memory, SHA-1 per piece, and each file's
//! full BEP 52 merkle tree built layer by layer.

use std::path::Path;

use ringseed::metainfo::{FileEntry, MetaVersion, Torrent};
use ringseed::storage::hash::PieceCheck;
use ringseed::storage::resume::{ResumeMismatch, ResumeRecord};
use ringseed::storage::{self, hash_files, FileStatus};
use ringseed::wire::Bitfield;
use sha1::Sha1;
use sha2::{Digest, Sha256};

const K16: u64 = 16 * 1024;

fn data(len: u64, seed: u64) -> Vec<u8> {
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

fn sha256(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// Naive BEP 52: all layers of a file's tree; returns (root, piece layer).
fn naive_v2(content: &[u8], piece_length: u64) -> ([u8; 32], Vec<[u8; 32]>) {
    let mut layer: Vec<[u8; 32]> = content.chunks(K16 as usize).map(sha256).collect();
    let per_piece = (piece_length / K16) as usize;
    let min = if content.len() as u64 > piece_length {
        per_piece
    } else {
        1
    };
    let width = layer.len().max(min).next_power_of_two();
    layer.resize(width, [0; 32]);
    let mut piece_layer = Vec::new();
    let mut height_nodes = 1usize;
    loop {
        if height_nodes == per_piece {
            let pieces = (content.len() as u64).div_ceil(piece_length) as usize;
            piece_layer = layer.iter().take(pieces).copied().collect();
        }
        if layer.len() == 1 {
            break;
        }
        layer = layer
            .chunks(2)
            .map(|p| {
                let mut cat = p[0].to_vec();
                cat.extend_from_slice(&p[1]);
                sha256(&cat)
            })
            .collect();
        height_nodes *= 2;
    }
    if content.len() as u64 <= piece_length {
        piece_layer.clear();
    }
    (layer[0], piece_layer)
}

struct Built {
    dir: tempfile::TempDir,
    torrent: Torrent,
    contents: Vec<Vec<u8>>,
}

/// Write files under `dir/name/` and build a torrent of `kind` with hashes
/// from the naive model.
fn build(lengths: &[u64], piece_length: u64, kind: MetaVersion) -> Built {
    let dir = tempfile::tempdir().unwrap();
    let top = dir.path().join("top");
    std::fs::create_dir_all(&top).unwrap();
    let mut files = Vec::new();
    let mut contents = Vec::new();
    let mut space = Vec::new();
    for (i, &len) in lengths.iter().enumerate() {
        let aligned = kind != MetaVersion::V1;
        if aligned && len > 0 && space.len() as u64 % piece_length != 0 {
            let pad = piece_length - space.len() as u64 % piece_length;
            space.resize(space.len() + pad as usize, 0);
        }
        let c = data(len, i as u64 + 1);
        let name = format!("f{i}.bin");
        std::fs::write(top.join(&name), &c).unwrap();
        let (root, _) = naive_v2(&c, piece_length);
        files.push(FileEntry {
            path: vec![name],
            length: len,
            offset: space.len() as u64,
            pieces_root: (aligned && len > 0).then_some(root),
            executable: false,
            hidden: false,
        });
        space.extend_from_slice(&c);
        contents.push(c);
    }
    let piece_space_len = space.len() as u64;
    let v1_pieces = (kind != MetaVersion::V2).then(|| {
        space
            .chunks(piece_length as usize)
            .map(|p| Sha1::digest(p).into())
            .collect()
    });
    let v2_piece_layers = (kind != MetaVersion::V1).then(|| {
        contents
            .iter()
            .map(|c| naive_v2(c, piece_length).1)
            .collect()
    });
    let torrent = Torrent {
        info_bytes: Vec::new(),
        info_hash_v1: None,
        info_hash_v2: None,
        version: kind,
        name: "top".into(),
        piece_length,
        num_pieces: piece_space_len.div_ceil(piece_length) as u32,
        piece_space_len,
        total_size: lengths.iter().sum(),
        multi_file: true,
        files,
        v1_pieces,
        v2_piece_layers,
        trackers: Vec::new(),
        web_seeds: Vec::new(),
        comment: None,
        created_by: None,
        creation_date: None,
        private: false,
    };
    Built {
        dir,
        torrent,
        contents,
    }
}

fn quiet(_: u64) {}

fn flip(path: &Path, at: u64) {
    let mut b = std::fs::read(path).unwrap();
    b[at as usize] ^= 0x55;
    std::fs::write(path, b).unwrap();
}

const LENGTHS: &[u64] = &[0, 1, 5 * K16 + 3, 4 * K16, 4 * K16 + 1, 0, 3 * K16 - 1, 1];

#[test]
fn hash_files_matches_naive_model() {
    for kind in [MetaVersion::V1, MetaVersion::V2, MetaVersion::Hybrid] {
        for piece_length in [K16, 4 * K16] {
            let b = build(LENGTHS, piece_length, kind);
            let t = &b.torrent;
            let counted = std::sync::atomic::AtomicU64::new(0);
            let h = hash_files(
                &b.dir.path().join("top"),
                &t.files,
                true,
                t.piece_length,
                t.piece_space_len,
                kind != MetaVersion::V2,
                kind != MetaVersion::V1,
                2,
                &|n| {
                    counted.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                },
            )
            .unwrap();
            assert_eq!(counted.into_inner(), t.piece_space_len);
            assert_eq!(h.v1_pieces, t.v1_pieces, "{kind:?} {piece_length}");
            match &h.v2_files {
                None => assert_eq!(kind, MetaVersion::V1),
                Some(v2) => {
                    for ((fh, f), layer) in v2
                        .iter()
                        .zip(&t.files)
                        .zip(t.v2_piece_layers.as_ref().unwrap())
                    {
                        assert_eq!(fh.pieces_root, f.pieces_root, "{kind:?} {f:?}");
                        assert_eq!(&fh.piece_layer, layer, "{kind:?} {f:?}");
                    }
                }
            }
        }
    }
}

#[test]
fn v2_needs_alignment() {
    let b = build(&[3, K16], K16, MetaVersion::V1);
    let err = hash_files(
        &b.dir.path().join("top"),
        &b.torrent.files,
        true,
        K16,
        b.torrent.piece_space_len,
        false,
        true,
        1,
        &quiet,
    )
    .unwrap_err();
    assert!(err.to_string().contains("piece boundary"), "{err}");
}

#[test]
fn verify_detects_each_flipped_byte() {
    for kind in [MetaVersion::V1, MetaVersion::V2, MetaVersion::Hybrid] {
        let b = build(LENGTHS, 2 * K16, kind);
        let t = &b.torrent;
        let report = storage::verify(t, b.dir.path(), 2, &quiet).unwrap();
        assert!(report.is_all_good(), "{kind:?}: {:?}", report.bad_pieces);
        assert_eq!(report.root, b.dir.path().join("top"));
        for (i, f) in t.files.iter().enumerate() {
            if f.length == 0 {
                continue;
            }
            for at in [0, f.length / 2, f.length - 1] {
                let path = b.dir.path().join("top").join(&f.path[0]);
                flip(&path, at);
                let r = storage::verify(t, &b.dir.path().join("top"), 2, &quiet).unwrap();
                let piece = ((f.offset + at) / t.piece_length) as u32;
                let bad: Vec<u32> = r.bad_pieces.iter().map(|p| p.index).collect();
                assert_eq!(bad, vec![piece], "{kind:?} file {i} byte {at}");
                assert!(r.bad_pieces[0].files.contains(&i));
                let expected = match kind {
                    MetaVersion::V1 => PieceCheck::V1Mismatch,
                    MetaVersion::V2 => PieceCheck::V2Mismatch,
                    MetaVersion::Hybrid => PieceCheck::BothMismatch,
                };
                assert_eq!(r.bad_pieces[0].reason, expected);
                assert!(!r.verified.get(piece));
                assert_eq!(r.verified.count(), r.num_pieces - 1);
                flip(&path, at);
            }
        }
    }
}

#[test]
fn v2_without_piece_layers_checks_file_roots() {
    let mut b = build(LENGTHS, K16, MetaVersion::V2);
    b.torrent.v2_piece_layers = None;
    let r = storage::verify(&b.torrent, b.dir.path(), 1, &quiet).unwrap();
    assert!(r.is_all_good(), "{:?}", r.bad_pieces);
    let f = b.torrent.files[2].clone();
    flip(&b.dir.path().join("top/f2.bin"), 7);
    let r = storage::verify(&b.torrent, b.dir.path(), 1, &quiet).unwrap();
    let bad: Vec<u32> = r.bad_pieces.iter().map(|p| p.index).collect();
    let first = (f.offset / K16) as u32;
    let n = f.length.div_ceil(K16) as u32;
    assert_eq!(bad, (first..first + n).collect::<Vec<_>>());
}

#[test]
fn missing_and_short_files() {
    let b = build(LENGTHS, 2 * K16, MetaVersion::Hybrid);
    let top = b.dir.path().join("top");
    std::fs::remove_file(top.join("f0.bin")).unwrap(); // empty: fine
    std::fs::remove_file(top.join("f3.bin")).unwrap();
    let short = &b.contents[6][..100];
    std::fs::write(top.join("f6.bin"), short).unwrap();
    let r = storage::verify(&b.torrent, &top, 2, &quiet).unwrap();
    assert!(!r.is_all_good());
    let problems: Vec<_> = r
        .file_problems
        .iter()
        .map(|p| (p.path.as_str(), p.status.clone()))
        .collect();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert_eq!(problems[0].0, "f3.bin");
    assert!(matches!(problems[0].1, FileStatus::Missing { .. }));
    assert_eq!(
        problems[1],
        ("f6.bin", FileStatus::WrongSize { actual: 100 })
    );
    for (i, f) in b.torrent.files.iter().enumerate() {
        let first = (f.offset / b.torrent.piece_length) as u32;
        let last = ((f.offset + f.length).div_ceil(b.torrent.piece_length)) as u32;
        for p in first..last {
            let is_bad = r.bad_pieces.iter().any(|x| x.index == p);
            assert_eq!(is_bad, i == 3 || i == 6, "file {i} piece {p}");
        }
    }
    // Strict open names the file, its size and the root.
    let err = storage::Content::open(&b.torrent, b.dir.path()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("missing file f3.bin (expected 65536 bytes) under"),
        "{msg}"
    );
}

#[test]
fn content_open_maps_files() {
    let b = build(&[1, 3 * K16 + 5], K16, MetaVersion::V1);
    let c = storage::Content::open(&b.torrent, &b.dir.path().join("top")).unwrap();
    assert_eq!(c.files()[1].bytes(), &b.contents[1][..]);
    assert_eq!(c.file_bytes(1, 10, 5), Some(&b.contents[1][10..15]));
    assert_eq!(c.file_bytes(1, 3 * K16, 10), None);
    let r = storage::verify_content(&b.torrent, &c, 1, &quiet).unwrap();
    assert!(r.is_all_good());
    let mut v = storage::hash::PieceVerifier::new(&b.torrent).unwrap();
    assert_eq!(v.check_piece(&c, 2), PieceCheck::Good);
}

#[test]
fn resume_record_round_trip_and_invalidation() {
    let b = build(&[K16 + 1, 0, 7], K16, MetaVersion::V1);
    let top = b.dir.path().join("top");
    let state = b.dir.path().join("state");
    let mut bits = Bitfield::new(b.torrent.num_pieces);
    bits.set(0);
    bits.set(2);
    let rec = ResumeRecord::capture(&b.torrent, &top, &bits).unwrap();
    rec.save(&b.torrent, &state).unwrap();
    let loaded = ResumeRecord::load(&b.torrent, &state).unwrap().unwrap();
    assert_eq!(loaded, rec);
    assert_eq!(loaded.check(&b.torrent, &top), Ok(bits));
    // Rewriting a file (new mtime/inode) invalidates the record.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let p = top.join("f2.bin");
    std::fs::remove_file(&p).unwrap();
    std::fs::write(&p, b"abcdefg").unwrap();
    assert_eq!(
        loaded.check(&b.torrent, &top),
        Err(ResumeMismatch::FileChanged("f2.bin".into()))
    );
    let mut other = b.torrent.clone();
    other.piece_length *= 2;
    assert_eq!(
        loaded.check(&other, &top),
        Err(ResumeMismatch::OtherTorrent)
    );
    assert!(ResumeRecord::load(&b.torrent, &b.dir.path().join("none"))
        .unwrap()
        .is_none());
}
