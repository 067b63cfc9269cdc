//! The storage error type: one variant per failing operation.

use std::io;
use std::path::PathBuf;

use super::layout::LayoutError;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("data path {path} does not exist: pass the torrent's file (single-file) or top directory (multi-file), or the directory that contains it")]
    DataPathMissing {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("missing file {file} (expected {expected} bytes) under {root}")]
    MissingFile {
        file: String,
        expected: u64,
        root: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("file {file} under {root} has {actual} bytes, expected {expected}: wrong data path or the file changed")]
    WrongSize {
        file: String,
        root: PathBuf,
        expected: u64,
        actual: u64,
    },
    #[error("cannot open {path} read-only")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot mmap {path}")]
    Mmap {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read {path} at offset {offset}")]
    Read {
        path: PathBuf,
        offset: u64,
        #[source]
        source: io::Error,
    },
    #[error("{path} ended early: {len} bytes, needed data up to offset {needed} (file truncated while hashing?)")]
    ShortRead {
        path: PathBuf,
        len: u64,
        needed: u64,
    },
    #[error("torrent layout is inconsistent")]
    Layout(#[from] LayoutError),
    #[error("v2 hashing needs every file to start on a piece boundary, but {file} starts at {offset} (piece length {piece_length}): add pad files or make a v1 torrent")]
    V2Unaligned {
        file: String,
        offset: u64,
        piece_length: u64,
    },
    #[error("the torrent has no hashes to verify against (neither v1 pieces nor v2 roots)")]
    NothingToVerify,
    #[error("cannot start hashing thread")]
    Thread(#[source] io::Error),
    #[error("resume record {path}")]
    ResumeIo {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "resume record {path} is not valid JSON for this ringseed version: delete it to re-verify"
    )]
    ResumeFormat {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}
