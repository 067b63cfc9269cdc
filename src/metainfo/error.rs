//! Why a `.torrent` (or an info dictionary from a magnet link) was rejected.

use crate::bencode::DecodeError;

/// Every variant names the problem and where it is: the field (as a dotted
/// path such as `info.files[3].path`), the file inside the torrent, or the
/// byte offset for bencode errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetainfoError {
    #[error(transparent)]
    Bencode(#[from] DecodeError),
    #[error("torrent: missing required field `{field}`")]
    MissingField { field: String },
    #[error("torrent: field `{field}` should be a {expected} but is a {found}")]
    WrongType {
        field: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("torrent: field `{field}` is not valid UTF-8")]
    NotUtf8 { field: String },
    #[error("torrent: `info.piece length` is {length}: {reason}")]
    InvalidPieceLength { length: i64, reason: &'static str },
    #[error("torrent: invalid path {path:?} in `{field}`: {reason}")]
    InvalidPath {
        field: String,
        path: String,
        reason: &'static str,
    },
    #[error("torrent: file {path:?} has invalid length {length}")]
    InvalidFileLength { path: String, length: i64 },
    #[error("torrent: file {path:?} appears more than once")]
    DuplicatePath { path: String },
    #[error("torrent: {path:?} is both a file and a directory")]
    FileDirectoryClash { path: String },
    #[error("torrent: `info` has both `length` and `files`; a torrent is either single-file or multi-file")]
    LengthAndFiles,
    #[error("torrent: `info.files` is empty")]
    NoFiles,
    #[error("torrent: total size is 0 bytes; there is nothing to share")]
    EmptyTorrent,
    #[error("torrent: total size overflows 64 bits")]
    SizeOverflow,
    #[error("torrent: {pieces} pieces of {piece_length} bytes is more than the 2^31-1 the wire protocol can address")]
    TooManyPieces { pieces: u64, piece_length: u64 },
    #[error("torrent: `info.pieces` is {len} bytes, not a multiple of 20 (one SHA-1 per piece)")]
    PiecesNotMultipleOf20 { len: usize },
    #[error("torrent: `info.pieces` has {found} hashes but {size} bytes in pieces of {piece_length} need {expected}")]
    PieceCountMismatch {
        expected: u64,
        found: u64,
        size: u64,
        piece_length: u64,
    },
    #[error("torrent: `info.meta version` is {found}; only 2 (BEP 52) is known")]
    UnsupportedMetaVersion { found: i64 },
    #[error("torrent: `info.meta version` is 2 but `info.file tree` is missing")]
    MissingFileTree,
    #[error("torrent: `info` has neither `pieces` (v1) nor `meta version` 2 (v2)")]
    NoVersion,
    #[error("torrent: `info.file tree` entry {path:?}: {reason}")]
    InvalidFileTree { path: String, reason: &'static str },
    #[error("torrent: file {path:?} ({length} bytes) has no `pieces root`")]
    MissingPiecesRoot { path: String, length: u64 },
    #[error("torrent: file {path:?} has a `pieces root` of {len} bytes; it must be 32")]
    InvalidPiecesRoot { path: String, len: usize },
    #[error("torrent: `piece layers` has no entry for file {path:?} ({length} bytes, more than one piece)")]
    MissingPieceLayer { path: String, length: u64 },
    #[error("torrent: `piece layers` entry for file {path:?} is {found} bytes; {expected} expected (32 per piece)")]
    PieceLayerLength {
        path: String,
        expected: u64,
        found: usize,
    },
    #[error(
        "torrent: `piece layers` entry for file {path:?} does not hash up to its `pieces root`"
    )]
    PieceLayerRootMismatch { path: String },
    #[error("torrent: `piece layers` has an entry for root {root} that no file of more than one piece has")]
    UnknownPieceLayer { root: String },
    #[error("torrent: hybrid torrent's v1 `files` and v2 `file tree` differ: {detail}")]
    HybridMismatch { detail: String },
}

impl MetainfoError {
    pub(crate) fn wrong_type(
        field: impl Into<String>,
        expected: &'static str,
        found: &crate::bencode::Value<'_>,
    ) -> Self {
        MetainfoError::WrongType {
            field: field.into(),
            expected,
            found: found.type_name(),
        }
    }
    pub(crate) fn missing(field: impl Into<String>) -> Self {
        MetainfoError::MissingField {
            field: field.into(),
        }
    }
}
