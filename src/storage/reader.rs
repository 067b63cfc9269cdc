//! Reading and hashing one piece, and running many pieces on a thread pool.
//!
//! Reads are plain `pread`s of at most [`CHUNK`] bytes into a reusable
//! per-thread buffer, so the data is still in L2 when the hashers read it and
//! read sizes are controlled (no mmap fault storms or readahead surprises).

use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU32, Ordering};

use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::files::AsFile;
use super::layout::{PieceLayout, Segment};
use super::StorageError;
use crate::metainfo::merkle::{self, Hash256, LEAF_SIZE};
use crate::metainfo::FileEntry;

/// Bytes per pread: a multiple of the merkle leaf size.
pub(crate) const CHUNK: usize = 256 * 1024;

static ZEROS: [u8; LEAF_SIZE as usize] = [0; LEAF_SIZE as usize];

/// Hashes of one piece.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct PieceDigest {
    pub v1: Option<[u8; 20]>,
    /// The v2 hash of the piece's file part: the piece-layer node for files
    /// larger than a piece, the file's pieces root otherwise. `None` when
    /// v2 was not asked for or the piece holds no file data.
    pub v2: Option<Hash256>,
    /// Index of the file whose data the v2 hash covers.
    pub v2_file: Option<usize>,
}

/// Why a piece could not be read.
#[derive(Debug)]
pub(crate) enum PieceReadError {
    Missing { file_index: usize },
    Io(StorageError),
}

/// Per-thread hashing state: the read buffer and the leaf scratch.
pub(crate) struct PieceHasher {
    want_v1: bool,
    want_v2: bool,
    buf: Vec<u8>,
    leaves: Vec<Hash256>,
}

impl PieceHasher {
    pub fn new(want_v1: bool, want_v2: bool, piece_length: u64) -> Self {
        let chunk = (piece_length as usize).min(CHUNK);
        Self {
            want_v1,
            want_v2,
            buf: vec![0; chunk],
            leaves: Vec::with_capacity(merkle::leaves_per_piece(piece_length) as usize),
        }
    }

    /// Read piece `piece` from `files` and hash it. v2 hashing assumes the
    /// piece's file data starts at the piece start (checked by
    /// [`check_v2_alignment`]).
    pub fn hash_piece<F: AsFile>(
        &mut self,
        layout: &PieceLayout,
        entries: &[FileEntry],
        files: &[F],
        piece: u32,
    ) -> Result<PieceDigest, PieceReadError> {
        let mut sha1 = self.want_v1.then(Sha1::new);
        let mut v2_file = None;
        self.leaves.clear();
        for seg in layout.piece_segments(piece) {
            match seg {
                Segment::Zero { len } => {
                    if let Some(h) = sha1.as_mut() {
                        let mut left = len;
                        while left > 0 {
                            let n = left.min(LEAF_SIZE);
                            h.update(&ZEROS[..n as usize]);
                            left -= n;
                        }
                    }
                }
                Segment::File {
                    file_index,
                    file_offset,
                    len,
                } => {
                    let src = files
                        .get(file_index)
                        .and_then(|f| f.as_file().map(|file| (f, file)));
                    let Some((src, file)) = src else {
                        return Err(PieceReadError::Missing { file_index });
                    };
                    let hash_leaves = self.want_v2 && v2_file.is_none();
                    if hash_leaves {
                        v2_file = Some(file_index);
                    }
                    let mut done = 0u64;
                    while done < len {
                        let n = (len - done).min(self.buf.len() as u64) as usize;
                        let buf = &mut self.buf[..n];
                        let offset = file_offset + done;
                        file.read_exact_at(buf, offset).map_err(|e| {
                            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                                PieceReadError::Io(StorageError::ShortRead {
                                    path: src.path().to_path_buf(),
                                    len: file.metadata().map(|m| m.len()).unwrap_or(0),
                                    needed: offset + n as u64,
                                })
                            } else {
                                PieceReadError::Io(StorageError::Read {
                                    path: src.path().to_path_buf(),
                                    offset,
                                    source: e,
                                })
                            }
                        })?;
                        if let Some(h) = sha1.as_mut() {
                            h.update(&*buf);
                        }
                        if hash_leaves {
                            for block in buf.chunks(LEAF_SIZE as usize) {
                                self.leaves.push(Sha256::digest(block).into());
                            }
                        }
                        done += n as u64;
                    }
                }
            }
        }
        let v2 = match v2_file.and_then(|i| entries.get(i)) {
            Some(entry) => Some(merkle::piece_hash_from_leaves(
                &mut self.leaves,
                entry.length,
                layout.piece_length(),
            )),
            None => None,
        };
        Ok(PieceDigest {
            v1: sha1.map(|h| h.finalize().into()),
            v2,
            v2_file,
        })
    }
}

impl PieceHasher {
    /// Hash piece `piece` from `data` (the whole piece, already in memory:
    /// a downloaded piece before it is written). `data` must be exactly the
    /// piece's length; pad (zero) segments are taken from `data` as the
    /// wire carries them (a peer must send zeros there: if it does not, the
    /// v1 hash fails).
    pub fn hash_buffer(
        &mut self,
        layout: &PieceLayout,
        entries: &[FileEntry],
        piece: u32,
        data: &[u8],
    ) -> PieceDigest {
        let mut sha1 = self.want_v1.then(Sha1::new);
        if let Some(h) = sha1.as_mut() {
            h.update(data);
        }
        let mut v2_file = None;
        self.leaves.clear();
        if self.want_v2 {
            let mut pos = 0usize;
            for seg in layout.piece_segments(piece) {
                let len = seg.len() as usize;
                if let Segment::File { file_index, .. } = seg {
                    if v2_file.is_none() {
                        v2_file = Some(file_index);
                        let part = data.get(pos..pos + len).unwrap_or(&[]);
                        for block in part.chunks(LEAF_SIZE as usize) {
                            self.leaves.push(Sha256::digest(block).into());
                        }
                    }
                }
                pos += len;
            }
        }
        let v2 = v2_file.and_then(|i| entries.get(i)).map(|entry| {
            merkle::piece_hash_from_leaves(&mut self.leaves, entry.length, layout.piece_length())
        });
        PieceDigest {
            v1: sha1.map(|h| h.finalize().into()),
            v2,
            v2_file,
        }
    }
}

/// v2 needs every non-empty file to start on a piece boundary.
pub(crate) fn check_v2_alignment(
    entries: &[FileEntry],
    piece_length: u64,
) -> Result<(), StorageError> {
    for e in entries {
        if e.length > 0 && e.offset % piece_length != 0 {
            return Err(StorageError::V2Unaligned {
                file: e.display_path(),
                offset: e.offset,
                piece_length,
            });
        }
    }
    Ok(())
}

/// Run `work` for every piece on `threads` threads (at least one), handing
/// out small batches so slow files do not leave threads idle. Results are in
/// piece order.
pub(crate) fn for_each_piece<S, T, Init, Work>(
    num_pieces: u32,
    piece_length: u64,
    threads: usize,
    init: Init,
    work: Work,
) -> Result<Vec<T>, StorageError>
where
    T: Send,
    Init: Fn() -> S + Sync,
    Work: Fn(&mut S, u32) -> T + Sync,
{
    let threads = threads.clamp(1, (num_pieces as usize).max(1));
    // About 4 MiB per batch, at least one piece.
    let batch = ((4u64 << 20) / piece_length).clamp(1, 64) as u32;
    let next = AtomicU32::new(0);
    let run = || {
        let mut state = init();
        let mut out = Vec::new();
        loop {
            let start = next.fetch_add(batch, Ordering::Relaxed);
            if start >= num_pieces {
                break;
            }
            let end = start.saturating_add(batch).min(num_pieces);
            for piece in start..end {
                out.push((piece, work(&mut state, piece)));
            }
        }
        out
    };
    let parts = std::thread::scope(|scope| -> Result<Vec<_>, StorageError> {
        let mut handles = Vec::with_capacity(threads);
        for i in 0..threads {
            let h = std::thread::Builder::new()
                .name(format!("hash-{i:02}"))
                .spawn_scoped(scope, run)
                .map_err(StorageError::Thread)?;
            handles.push(h);
        }
        let mut parts = Vec::with_capacity(threads);
        for h in handles {
            match h.join() {
                Ok(p) => parts.push(p),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        Ok(parts)
    })?;
    // Every piece was handed out exactly once, so sorting restores order.
    let mut all: Vec<(u32, T)> = parts.into_iter().flatten().collect();
    all.sort_unstable_by_key(|(piece, _)| *piece);
    Ok(all.into_iter().map(|(_, value)| value).collect())
}
