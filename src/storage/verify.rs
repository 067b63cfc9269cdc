//! Verify a torrent's content: every piece against v1 SHA-1 (when present)
//! and v2 merkle hashes (piece layers, or the pieces root for files of at
//! most one piece). A hybrid piece is good only when both agree.
//!
//! When a v2 torrent comes without piece layers (magnet link), a file larger
//! than one piece is checked as a whole: the piece layer is rebuilt from the
//! data and its root compared with the file's `pieces root`.
//!
//! Missing or wrong-size files are reported, not fatal: pieces that touch
//! bytes which cannot be read are bad, the rest are checked.

use std::path::{Path, PathBuf};

use super::files::{self, AsFile, FileStatus};
use super::hash::{self, check_digest, PieceCheck};
use super::layout::PieceLayout;
use super::reader::{self, PieceDigest};
use super::{Content, StorageError};
use crate::metainfo::merkle::{self, Hash256};
use crate::metainfo::Torrent;
use crate::wire::Bitfield;

/// A piece that failed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BadPiece {
    pub index: u32,
    pub reason: PieceCheck,
    /// Indices into `Torrent::files` of the files with bytes in this piece.
    pub files: Vec<usize>,
}

/// A file that is missing or has the wrong size.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FileProblem {
    pub file_index: usize,
    /// Path relative to the torrent root, `/`-separated.
    pub path: String,
    pub expected_size: u64,
    #[serde(flatten)]
    pub status: FileStatus,
}

/// The result of verifying a torrent's content.
#[derive(Clone, Debug)]
pub struct VerifyReport {
    /// The resolved content root.
    pub root: PathBuf,
    pub num_pieces: u32,
    /// Pieces that passed every hash check they have.
    pub verified: Bitfield,
    /// Failed pieces in index order.
    pub bad_pieces: Vec<BadPiece>,
    pub file_problems: Vec<FileProblem>,
    /// Piece-space bytes hashed.
    pub bytes_checked: u64,
}

impl VerifyReport {
    /// True when every piece is good and every file is present with the
    /// right size.
    pub fn is_all_good(&self) -> bool {
        self.bad_pieces.is_empty() && self.file_problems.is_empty() && self.verified.is_full()
    }
}

/// Verify the content at `data` (see `files::resolve_data_root`).
/// `threads` 0 = one per core; `progress` receives byte increments.
pub fn verify(
    torrent: &Torrent,
    data: &Path,
    threads: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<VerifyReport, StorageError> {
    let root = files::resolve_data_root(data, &torrent.name, &torrent.files, torrent.multi_file)?;
    let sources = files::inspect_files(&root, &torrent.files, torrent.multi_file);
    let problems = torrent
        .files
        .iter()
        .zip(&sources)
        .enumerate()
        .filter(|(_, (_, s))| s.status != FileStatus::Ok)
        .map(|(i, (e, s))| FileProblem {
            file_index: i,
            path: e.display_path(),
            expected_size: e.length,
            status: s.status.clone(),
        })
        .collect();
    verify_sources(torrent, root, &sources, problems, threads, progress)
}

/// Verify already opened content (the server at start-up).
pub fn verify_content(
    torrent: &Torrent,
    content: &Content,
    threads: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<VerifyReport, StorageError> {
    verify_sources(
        torrent,
        content.root().to_path_buf(),
        content.files(),
        Vec::new(),
        threads,
        progress,
    )
}

fn verify_sources<F: AsFile + Sync>(
    torrent: &Torrent,
    root: PathBuf,
    sources: &[F],
    file_problems: Vec<FileProblem>,
    threads: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<VerifyReport, StorageError> {
    let layout = PieceLayout::new(torrent)?;
    let want_v1 = torrent.v1_pieces.is_some();
    let want_v2 = torrent.files.iter().any(|f| f.pieces_root.is_some());
    if !want_v1 && !want_v2 {
        return Err(StorageError::NothingToVerify);
    }
    if want_v2 {
        reader::check_v2_alignment(&torrent.files, torrent.piece_length)?;
    }
    let digests = hash::hash_all_pieces(
        &layout,
        &torrent.files,
        sources,
        want_v1,
        want_v2,
        threads,
        progress,
    )?;
    let mut checks: Vec<PieceCheck> = digests
        .iter()
        .enumerate()
        .map(|(i, d)| match d {
            Ok(d) => check_digest(torrent, &layout, i as u32, d, want_v1, want_v2),
            Err(_) => PieceCheck::Unreadable,
        })
        .collect();
    if want_v2 {
        check_files_without_layers(torrent, &layout, &digests, &mut checks);
    }
    let mut verified = Bitfield::new(layout.num_pieces());
    let mut bad_pieces = Vec::new();
    for (i, c) in checks.iter().enumerate() {
        let index = i as u32;
        if *c == PieceCheck::Good {
            verified.set(index);
        } else {
            bad_pieces.push(BadPiece {
                index,
                reason: *c,
                files: layout.files_in_piece(index).collect(),
            });
        }
    }
    Ok(VerifyReport {
        root,
        num_pieces: layout.num_pieces(),
        verified,
        bad_pieces,
        file_problems,
        bytes_checked: layout.piece_space_len(),
    })
}

/// For v2 files larger than a piece whose piece layer the torrent lacks,
/// rebuild the layer from the digests and compare its root.
fn check_files_without_layers(
    torrent: &Torrent,
    layout: &PieceLayout,
    digests: &[Result<PieceDigest, reader::PieceReadError>],
    checks: &mut [PieceCheck],
) {
    for (i, f) in torrent.files.iter().enumerate() {
        let Some(root) = f.pieces_root else { continue };
        let has_layer = torrent
            .v2_piece_layers
            .as_ref()
            .and_then(|l| l.get(i))
            .is_some_and(|l| !l.is_empty());
        if f.length <= torrent.piece_length || has_layer {
            continue;
        }
        let range = layout.pieces_of_file(i);
        let layer: Option<Vec<Hash256>> = range
            .clone()
            .map(|p| {
                digests
                    .get(p as usize)
                    .and_then(|d| d.as_ref().ok())
                    .and_then(|d| d.v2)
            })
            .collect();
        let root_ok = layer
            .and_then(|l| merkle::piece_layer_root(&l, f.length, torrent.piece_length))
            .is_some_and(|r| r == root);
        for p in range {
            if let Some(c) = checks.get_mut(p as usize) {
                *c = match (*c, root_ok) {
                    (PieceCheck::NoHash, true) => PieceCheck::Good,
                    (PieceCheck::NoHash | PieceCheck::Good, false) => PieceCheck::V2Mismatch,
                    (PieceCheck::V1Mismatch, false) => PieceCheck::BothMismatch,
                    (other, _) => other,
                };
            }
        }
    }
}
