//! Piece layout: piece-space ranges to file/zero segments, and block bounds.

use proptest::prelude::*;
use ringseed::metainfo::FileEntry;
use ringseed::storage::{BlockError, PieceLayout, Segment};

const K16: u64 = 16 * 1024;

fn entry(name: &str, offset: u64, length: u64) -> FileEntry {
    FileEntry {
        path: vec![name.to_string()],
        length,
        offset,
        pieces_root: None,
        executable: false,
        hidden: false,
    }
}

/// Files laid out back to back (v1), from lengths.
fn concat(lengths: &[u64]) -> (Vec<FileEntry>, u64) {
    let mut off = 0;
    let files = lengths
        .iter()
        .enumerate()
        .map(|(i, &l)| {
            let e = entry(&format!("f{i}"), off, l);
            off += l;
            e
        })
        .collect();
    (files, off)
}

fn file(file_index: usize, file_offset: u64, len: u64) -> Segment {
    Segment::File {
        file_index,
        file_offset,
        len,
    }
}

#[test]
fn zero_and_one_byte_files() {
    let (files, total) = concat(&[0, 1, 0, 0, 1, K16, 0]);
    let l = PieceLayout::from_files(&files, K16, total).unwrap();
    assert_eq!(l.num_pieces(), 2);
    let segs: Vec<_> = l.piece_segments(0).collect();
    assert_eq!(
        segs,
        vec![file(1, 0, 1), file(4, 0, 1), file(5, 0, K16 - 2)]
    );
    let segs: Vec<_> = l.piece_segments(1).collect();
    assert_eq!(segs, vec![file(5, K16 - 2, 2)]);
    assert_eq!(l.piece_len(1), 2);
    assert_eq!(l.pieces_of_file(0), 0..0);
    assert_eq!(l.pieces_of_file(5), 0..2);
    assert_eq!(l.files_in_piece(0).collect::<Vec<_>>(), vec![1, 4, 5]);
}

#[test]
fn pad_files_and_v2_alignment_gaps() {
    // Hybrid/v2 style: each file starts on a piece boundary (32 KiB pieces).
    let p = 2 * K16;
    let files = vec![
        entry("a", 0, 100),
        entry("b", p, p + 1),
        entry("c", 3 * p, 5),
    ];
    let l = PieceLayout::from_files(&files, p, 3 * p + 5).unwrap();
    assert_eq!(l.num_pieces(), 4);
    let segs: Vec<_> = l.piece_segments(0).collect();
    assert_eq!(segs, vec![file(0, 0, 100), Segment::Zero { len: p - 100 }]);
    let segs: Vec<_> = l.piece_segments(2).collect();
    assert_eq!(segs, vec![file(1, p, 1), Segment::Zero { len: p - 1 }]);
    let segs: Vec<_> = l.piece_segments(3).collect();
    assert_eq!(segs, vec![file(2, 0, 5)]);
    // A block entirely inside a gap.
    let segs: Vec<_> = l.segments(0, K16, K16).collect();
    assert_eq!(segs, vec![Segment::Zero { len: K16 }]);
}

#[test]
fn block_spanning_three_files() {
    let (files, total) = concat(&[K16 - 10, 5, 5, 3 * K16]);
    let l = PieceLayout::from_files(&files, 4 * K16, total).unwrap();
    let segs: Vec<_> = l.segments(0, K16 - 12, K16).collect();
    assert_eq!(
        segs,
        vec![
            file(0, K16 - 12, 2),
            file(1, 0, 5),
            file(2, 0, 5),
            file(3, 0, K16 - 12)
        ]
    );
    assert_eq!(segs.iter().map(Segment::len).sum::<u64>(), K16);
}

#[test]
fn last_short_piece_and_block_checks() {
    let (files, total) = concat(&[2 * K16 + 7]);
    let l = PieceLayout::from_files(&files, K16, total).unwrap();
    assert_eq!(l.num_pieces(), 3);
    assert_eq!(l.piece_len(2), 7);
    assert_eq!(l.check_block(2, 0, 7), Ok(()));
    assert!(matches!(
        l.check_block(2, 0, 8),
        Err(BlockError::BeyondPiece { piece_len: 7, .. })
    ));
    assert!(matches!(
        l.check_block(3, 0, 1),
        Err(BlockError::NoSuchPiece { num_pieces: 3, .. })
    ));
    assert!(matches!(
        l.check_block(0, 0, 0),
        Err(BlockError::BadLength { len: 0 })
    ));
    assert!(matches!(
        l.check_block(0, 0, 16 * 1024 + 1),
        Err(BlockError::BadLength { .. })
    ));
    assert!(matches!(
        l.check_block(0, u32::MAX, 16 * 1024),
        Err(BlockError::BeyondPiece { .. })
    ));
    assert_eq!(l.check_block(1, 0, 16 * 1024), Ok(()));
    // Ranges past the end are clamped, never panic.
    assert_eq!(
        l.segments(2, 5, 100).collect::<Vec<_>>(),
        vec![file(0, 2 * K16 + 5, 2)]
    );
    assert_eq!(l.segments(9, 0, 100).count(), 0);
}

/// Naive model: what byte `pos` of the piece space is.
fn naive(files: &[FileEntry], pos: u64) -> Option<(usize, u64)> {
    files
        .iter()
        .enumerate()
        .find(|(_, f)| pos >= f.offset && pos < f.offset + f.length)
        .map(|(i, f)| (i, pos - f.offset))
}

proptest! {
    #[test]
    fn segments_match_byte_model(
        specs in proptest::collection::vec((0u64..3, 0u64..40_000), 0..8),
        start in 0u64..200_000,
        len in 0u64..70_000,
    ) {
        // Each spec: (gap before: 0 none / 1 small / 2 align to 16 KiB, length).
        let mut files = Vec::new();
        let mut off = 0u64;
        for (i, (gap, length)) in specs.iter().enumerate() {
            off += match gap { 0 => 0, 1 => 3, _ => (K16 - off % K16) % K16 };
            files.push(entry(&format!("f{i}"), off, *length));
            off += length;
        }
        let total = off + 1; // a trailing pad byte
        let l = PieceLayout::from_files(&files, K16, total).unwrap();
        let mut pos = start.min(total);
        let end = start.saturating_add(len).min(total);
        for seg in l.range(start, len) {
            prop_assert!(!seg.is_empty());
            match seg {
                Segment::File { file_index, file_offset, len } => {
                    prop_assert_eq!(naive(&files, pos), Some((file_index, file_offset)));
                    prop_assert_eq!(naive(&files, pos + len - 1), Some((file_index, file_offset + len - 1)));
                    pos += len;
                }
                Segment::Zero { len } => {
                    prop_assert_eq!(naive(&files, pos), None);
                    prop_assert_eq!(naive(&files, pos + len - 1), None);
                    pos += len;
                }
            }
        }
        prop_assert_eq!(pos, end);
    }
}
