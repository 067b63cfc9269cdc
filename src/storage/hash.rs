//! Hashing a torrent's content: v1 SHA-1 pieces and v2 merkle piece layers
//! and roots, on every core. Used by `ringseed create` and by `verify`.
//!
//! The v1 hash covers the piece space (pad bytes are zeros). The v2 hashes
//! cover each file on its own (BEP 52); v2 therefore needs every file to
//! start on a piece boundary, which v2-only layouts and BEP 47 hybrids
//! guarantee.

use std::path::Path;

use super::files::{self, AsFile};
use super::layout::PieceLayout;
use super::reader::{self, PieceDigest, PieceHasher, PieceReadError};
use super::StorageError;
use crate::metainfo::merkle::{self, Hash256};
use crate::metainfo::{FileEntry, Torrent};

/// The hashes of a torrent's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContentHashes {
    /// One SHA-1 per piece of the piece space, when v1 was asked for.
    pub v1_pieces: Option<Vec<[u8; 20]>>,
    /// Per file (indexed like the input files), when v2 was asked for.
    pub v2_files: Option<Vec<FileHashes>>,
}

/// BEP 52 hashes of one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileHashes {
    /// The file's merkle root; `None` for an empty file.
    pub pieces_root: Option<[u8; 32]>,
    /// One hash per piece for a file larger than one piece, else empty.
    pub piece_layer: Vec<[u8; 32]>,
}

/// Hash the content of a torrent.
///
/// `files`: offsets in the piece space, ordered by offset. `root`: the file
/// itself (single-file) or the top directory. `threads`: worker threads (0
/// means one per core). `progress` is called from the workers with the
/// number of piece-space bytes just hashed (an increment, not a total).
#[allow(clippy::too_many_arguments)]
pub fn hash_files(
    root: &Path,
    files: &[FileEntry],
    multi_file: bool,
    piece_length: u64,
    piece_space_len: u64,
    want_v1: bool,
    want_v2: bool,
    threads: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<ContentHashes, StorageError> {
    let layout = PieceLayout::from_files(files, piece_length, piece_space_len)?;
    if want_v2 {
        reader::check_v2_alignment(files, piece_length)?;
    }
    let sources = files::open_strict(root, files, multi_file)?;
    let digests = hash_all_pieces(
        &layout, files, &sources, want_v1, want_v2, threads, progress,
    )?;
    let mut pieces = Vec::with_capacity(digests.len());
    for d in digests {
        pieces.push(d.map_err(|e| {
            match e {
                PieceReadError::Io(err) => err,
                PieceReadError::Missing { file_index } => StorageError::MissingFile {
                    file: files
                        .get(file_index)
                        .map(FileEntry::display_path)
                        .unwrap_or_default(),
                    expected: files.get(file_index).map_or(0, |f| f.length),
                    root: root.to_path_buf(),
                    source: std::io::Error::from(std::io::ErrorKind::NotFound),
                },
            }
        })?);
    }
    let v1_pieces = want_v1.then(|| pieces.iter().map(|d| d.v1.unwrap_or_default()).collect());
    let v2_files = want_v2.then(|| file_hashes_from_digests(&layout, files, &pieces));
    Ok(ContentHashes {
        v1_pieces,
        v2_files,
    })
}

/// Assemble per-file v2 hashes from per-piece digests.
fn file_hashes_from_digests(
    layout: &PieceLayout,
    files: &[FileEntry],
    pieces: &[PieceDigest],
) -> Vec<FileHashes> {
    files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let range = layout.pieces_of_file(i);
            let layer: Vec<Hash256> = pieces
                .get(range.start as usize..range.end as usize)
                .unwrap_or(&[])
                .iter()
                .map(|d| d.v2.unwrap_or_default())
                .collect();
            if f.length == 0 {
                FileHashes {
                    pieces_root: None,
                    piece_layer: Vec::new(),
                }
            } else if f.length <= layout.piece_length() {
                FileHashes {
                    pieces_root: layer.first().copied(),
                    piece_layer: Vec::new(),
                }
            } else {
                FileHashes {
                    pieces_root: merkle::piece_layer_root(&layer, f.length, layout.piece_length()),
                    piece_layer: layer,
                }
            }
        })
        .collect()
}

/// Hash every piece on `threads` threads (0 = one per core).
pub(crate) fn hash_all_pieces<F: AsFile + Sync>(
    layout: &PieceLayout,
    entries: &[FileEntry],
    files: &[F],
    want_v1: bool,
    want_v2: bool,
    threads: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Vec<Result<PieceDigest, PieceReadError>>, StorageError> {
    let threads = if threads == 0 {
        default_threads()
    } else {
        threads
    };
    reader::for_each_piece(
        layout.num_pieces(),
        layout.piece_length(),
        threads,
        || PieceHasher::new(want_v1, want_v2, layout.piece_length()),
        |hasher, piece| {
            let r = hasher.hash_piece(layout, entries, files, piece);
            progress(layout.piece_len(piece));
            r
        },
    )
}

/// One hashing thread per core.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Outcome of checking one piece.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PieceCheck {
    Good,
    /// The piece's SHA-1 does not match `info.pieces`.
    V1Mismatch,
    /// The piece's merkle hash does not match the piece layer / pieces root.
    V2Mismatch,
    /// Both hashes mismatch.
    BothMismatch,
    /// A file of the piece is missing or too short.
    Unreadable,
    /// The torrent has no hash to check this piece against (v2 file larger
    /// than a piece without known piece layers).
    NoHash,
}

/// Re-verifies single pieces of a torrent, e.g. when data changed under the
/// server. Holds one piece's worth of scratch; not thread-safe (one per
/// thread).
pub struct PieceVerifier<'t> {
    torrent: &'t Torrent,
    layout: PieceLayout,
    hasher: PieceHasher,
    want_v1: bool,
    want_v2: bool,
}

impl<'t> PieceVerifier<'t> {
    pub fn new(torrent: &'t Torrent) -> Result<Self, StorageError> {
        let layout = PieceLayout::new(torrent)?;
        let want_v1 = torrent.v1_pieces.is_some();
        let want_v2 = torrent.files.iter().any(|f| f.pieces_root.is_some());
        if want_v2 {
            reader::check_v2_alignment(&torrent.files, torrent.piece_length)?;
        }
        if !want_v1 && !want_v2 {
            return Err(StorageError::NothingToVerify);
        }
        Ok(Self {
            torrent,
            hasher: PieceHasher::new(want_v1, want_v2, torrent.piece_length),
            layout,
            want_v1,
            want_v2,
        })
    }

    /// Read piece `piece` from `content` and check it.
    pub fn check_piece(&mut self, content: &super::Content, piece: u32) -> PieceCheck {
        match self
            .hasher
            .hash_piece(&self.layout, &self.torrent.files, content.files(), piece)
        {
            Ok(d) => check_digest(
                self.torrent,
                &self.layout,
                piece,
                &d,
                self.want_v1,
                self.want_v2,
            ),
            Err(_) => PieceCheck::Unreadable,
        }
    }
}

/// Compare a piece digest against the torrent's hashes. A hybrid piece is
/// good only when both agree.
pub(crate) fn check_digest(
    torrent: &Torrent,
    layout: &PieceLayout,
    piece: u32,
    d: &PieceDigest,
    want_v1: bool,
    want_v2: bool,
) -> PieceCheck {
    let v1_ok = if want_v1 {
        let expected = torrent
            .v1_pieces
            .as_ref()
            .and_then(|p| p.get(piece as usize));
        Some(expected.is_some() && expected == d.v1.as_ref())
    } else {
        None
    };
    let v2_ok = if want_v2 {
        match expected_v2(torrent, layout, piece, d.v2_file) {
            Some(expected) => Some(d.v2 == Some(expected)),
            // A piece with no file data (v2) or a file without a root.
            None if d.v2_file.is_none() => None,
            None => {
                if v1_ok.is_none() {
                    return PieceCheck::NoHash;
                }
                None
            }
        }
    } else {
        None
    };
    match (v1_ok, v2_ok) {
        (Some(false), Some(false)) => PieceCheck::BothMismatch,
        (Some(false), _) => PieceCheck::V1Mismatch,
        (_, Some(false)) => PieceCheck::V2Mismatch,
        (None, None) => PieceCheck::NoHash,
        _ => PieceCheck::Good,
    }
}

/// The v2 hash piece `piece` of file `file` must have: its piece-layer entry
/// (file larger than a piece) or the file's root.
fn expected_v2(
    torrent: &Torrent,
    layout: &PieceLayout,
    piece: u32,
    file: Option<usize>,
) -> Option<Hash256> {
    let index = file?;
    let entry = torrent.files.get(index)?;
    if entry.length <= torrent.piece_length {
        return entry.pieces_root;
    }
    let first = layout.pieces_of_file(index).start;
    let layer = torrent.v2_piece_layers.as_ref()?.get(index)?;
    layer.get(piece.checked_sub(first)? as usize).copied()
}
