//! Where leechers upload from: one content store per run, shared by every
//! leecher of the process.
//!
//! A leecher must keep what it downloaded to upload it to others, but 500
//! leechers each keeping a private copy of a 64 MiB torrent would need
//! 32 GiB. Once a piece has passed its SHA-1 check its bytes are the same
//! for every leecher, so the process keeps **one** copy:
//!
//! - [`ContentStore::Shared`] (`--content-store shared`, the default): the
//!   first leecher to verify a piece hands its buffer over; later verifiers
//!   drop theirs. Memory: the torrent's size once, plus each leecher's
//!   pieces in progress.
//! - [`ContentStore::File`] (`--content-store file --data PATH`): the
//!   original content, memory-mapped read-only and checked against every
//!   piece hash at start-up. Memory: page cache only, whatever the size.
//!   Single-file torrents only (the piece space is the file).
//!
//! Either way the store is not a shortcut around downloading: every leecher
//! still receives every piece over the wire, hashes it itself, and uploads
//! (reads from the store) only pieces in its own verified bitfield.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{bail, Context};
use memmap2::Mmap;

use crate::torrents::LoadTorrent;

/// See the module docs.
#[derive(Debug)]
pub enum ContentStore {
    Shared {
        piece_length: u32,
        pieces: Vec<OnceLock<Box<[u8]>>>,
    },
    File {
        piece_length: u32,
        map: Mmap,
    },
}

impl ContentStore {
    /// An empty shared store for `t`.
    pub fn shared(t: &LoadTorrent) -> Self {
        ContentStore::Shared {
            piece_length: t.piece_length,
            pieces: (0..t.num_pieces).map(|_| OnceLock::new()).collect(),
        }
    }

    /// A shared store already holding `data` (the whole piece space), for
    /// seeds in tests and simulations.
    pub fn from_pieces(piece_length: u32, data: Vec<u8>) -> Self {
        let pieces = data
            .chunks(piece_length.max(1) as usize)
            .map(|c| OnceLock::from(Box::<[u8]>::from(c)))
            .collect();
        ContentStore::Shared {
            piece_length,
            pieces,
        }
    }

    /// The content of single-file torrent `t` at `path` (the file, or a
    /// directory containing it), checked against every v1 piece hash.
    pub fn open_file(t: &LoadTorrent, path: &Path) -> anyhow::Result<Self> {
        if t.torrent.multi_file || t.torrent.files.len() != 1 {
            bail!(
                "--content-store file serves single-file torrents only; {} has {} files: use --content-store shared",
                t.name,
                t.torrent.files.len()
            );
        }
        let file_path = if path.is_dir() {
            path.join(&t.name)
        } else {
            path.to_path_buf()
        };
        let file = std::fs::File::open(&file_path)
            .with_context(|| format!("open --data {}", file_path.display()))?;
        let len = file.metadata()?.len();
        if len != t.piece_space_len {
            bail!(
                "--data {} is {len} bytes but torrent {} has {} bytes: wrong file?",
                file_path.display(),
                t.name,
                t.piece_space_len
            );
        }
        // SAFETY: the mapping is read-only and private to this process; a
        // concurrent truncation by someone else would make reads fault
        // (SIGBUS), which is the documented risk of --content-store file.
        let map =
            unsafe { Mmap::map(&file) }.with_context(|| format!("mmap {}", file_path.display()))?;
        let pl = t.piece_length as usize;
        for (i, chunk) in map.chunks(pl).enumerate() {
            if !t.verify_piece(i as u32, chunk) {
                bail!(
                    "piece {i} of {} in {} fails its SHA-1 check: the file does not match the torrent",
                    t.name,
                    file_path.display()
                );
            }
        }
        Ok(ContentStore::File {
            piece_length: t.piece_length,
            map,
        })
    }

    /// Bytes `begin..begin + len` of piece `piece`, if the store has them.
    pub fn block(&self, piece: u32, begin: u32, len: u32) -> Option<&[u8]> {
        let (b, e) = (begin as usize, begin as usize + len as usize);
        match self {
            ContentStore::Shared { pieces, .. } => pieces.get(piece as usize)?.get()?.get(b..e),
            ContentStore::File { piece_length, map } => {
                let off = piece as usize * *piece_length as usize;
                if e > *piece_length as usize {
                    return None;
                }
                map.get(off + b..off + e)
            }
        }
    }

    /// A leecher verified `piece` with these bytes: keep them if the store
    /// has no copy yet.
    pub fn offer(&self, piece: u32, data: Vec<u8>) {
        if let ContentStore::Shared { pieces, .. } = self {
            if let Some(slot) = pieces.get(piece as usize) {
                let _ = slot.set(data.into_boxed_slice());
            }
        }
    }

    /// Bytes of content held in memory (not counting a file mapping).
    pub fn resident_bytes(&self) -> u64 {
        match self {
            ContentStore::Shared { pieces, .. } => pieces
                .iter()
                .filter_map(|p| p.get().map(|b| b.len() as u64))
                .sum(),
            ContentStore::File { .. } => 0,
        }
    }

    pub fn piece_length(&self) -> u32 {
        match self {
            ContentStore::Shared { piece_length, .. } | ContentStore::File { piece_length, .. } => {
                *piece_length
            }
        }
    }
}
