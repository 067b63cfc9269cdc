//! A simple single-threaded implementation of the `storage::hash::hash_files`
//! contract, used by `create` until the storage branch (parallel hashing)
//! is merged. On merge, switch the `use` in `create.rs` to
//! `crate::storage::hash::{hash_files, ContentHashes}` and delete this file.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::metainfo::merkle::{pad_hash, root_of_layer, BLOCK_SIZE};
use crate::metainfo::FileEntry;

pub struct ContentHashes {
    pub v1_pieces: Option<Vec<[u8; 20]>>,
    pub v2_files: Option<Vec<FileHashes>>,
}

pub struct FileHashes {
    pub pieces_root: Option<[u8; 32]>,
    pub piece_layer: Vec<[u8; 32]>,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is shorter than the {expected} bytes expected: did it change while hashing?")]
    ShortFile { path: PathBuf, expected: u64 },
}

fn file_path(root: &Path, f: &FileEntry, multi_file: bool) -> PathBuf {
    if multi_file {
        f.path.iter().fold(root.to_path_buf(), |p, c| p.join(c))
    } else {
        root.to_path_buf()
    }
}

/// Feeds `len` bytes of `path` to `sink` in chunks.
fn read_file(
    path: &Path,
    len: u64,
    sink: &mut dyn FnMut(&[u8]),
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(), StorageError> {
    let err = |source| StorageError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(err)?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut left = len;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = file.read(&mut buf[..want]).map_err(err)?;
        if n == 0 {
            return Err(StorageError::ShortFile {
                path: path.to_path_buf(),
                expected: len,
            });
        }
        sink(&buf[..n]);
        progress(n as u64);
        left -= n as u64;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub fn hash_files_fallback(
    root: &Path,
    files: &[FileEntry],
    multi_file: bool,
    piece_length: u64,
    piece_space_len: u64,
    want_v1: bool,
    want_v2: bool,
    _threads: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<ContentHashes, StorageError> {
    let v1_pieces = if want_v1 {
        let mut pieces = Vec::new();
        let mut hasher = Sha1::new();
        let mut in_piece = 0u64;
        let mut feed = |mut data: &[u8]| {
            while !data.is_empty() {
                let take = (piece_length - in_piece).min(data.len() as u64) as usize;
                hasher.update(&data[..take]);
                in_piece += take as u64;
                data = &data[take..];
                if in_piece == piece_length {
                    pieces.push(hasher.finalize_reset().into());
                    in_piece = 0;
                }
            }
        };
        let zeros = vec![0u8; 64 * 1024];
        let feed_zeros = |feed: &mut dyn FnMut(&[u8]), mut n: u64| {
            while n > 0 {
                let take = n.min(zeros.len() as u64) as usize;
                feed(&zeros[..take]);
                n -= take as u64;
            }
        };
        let mut pos = 0u64;
        for f in files {
            feed_zeros(&mut feed, f.offset.saturating_sub(pos));
            read_file(
                &file_path(root, f, multi_file),
                f.length,
                &mut feed,
                progress,
            )?;
            pos = pos.max(f.offset + f.length);
        }
        feed_zeros(&mut feed, piece_space_len.saturating_sub(pos));
        if in_piece > 0 {
            pieces.push(hasher.finalize().into());
        }
        Some(pieces)
    } else {
        None
    };
    let v2_files = if want_v2 {
        let no_progress = |_: u64| {};
        let blocks_per_piece = (piece_length / BLOCK_SIZE) as usize;
        let mut out = Vec::with_capacity(files.len());
        for f in files {
            if f.length == 0 {
                out.push(FileHashes {
                    pieces_root: None,
                    piece_layer: Vec::new(),
                });
                continue;
            }
            let mut leaves: Vec<[u8; 32]> = Vec::new();
            let mut hasher = Sha256::new();
            let mut in_block = 0u64;
            let mut feed = |mut data: &[u8]| {
                while !data.is_empty() {
                    let take = (BLOCK_SIZE - in_block).min(data.len() as u64) as usize;
                    hasher.update(&data[..take]);
                    in_block += take as u64;
                    data = &data[take..];
                    if in_block == BLOCK_SIZE {
                        leaves.push(hasher.finalize_reset().into());
                        in_block = 0;
                    }
                }
            };
            let report: &(dyn Fn(u64) + Sync) = if want_v1 { &no_progress } else { progress };
            read_file(&file_path(root, f, multi_file), f.length, &mut feed, report)?;
            if in_block > 0 {
                leaves.push(hasher.finalize().into());
            }
            if leaves.len() <= blocks_per_piece {
                out.push(FileHashes {
                    pieces_root: Some(root_of_layer(&leaves, [0u8; 32])),
                    piece_layer: Vec::new(),
                });
            } else {
                let layer: Vec<[u8; 32]> = leaves
                    .chunks(blocks_per_piece)
                    .map(|chunk| {
                        let mut padded = chunk.to_vec();
                        padded.resize(blocks_per_piece, [0u8; 32]);
                        root_of_layer(&padded, [0u8; 32])
                    })
                    .collect();
                let levels = blocks_per_piece.trailing_zeros();
                out.push(FileHashes {
                    pieces_root: Some(root_of_layer(&layer, pad_hash(levels))),
                    piece_layer: layer,
                });
            }
        }
        Some(out)
    } else {
        None
    };
    Ok(ContentHashes {
        v1_pieces,
        v2_files,
    })
}
