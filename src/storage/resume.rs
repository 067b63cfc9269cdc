//! Resume records: proof that a torrent's data is unchanged since its last
//! full verification, so the server can skip re-hashing on restart.
//!
//! A record holds the torrent's info-hash(es), piece geometry, the verified
//! pieces and, per file, size, mtime (ns) and inode. It is JSON in the state
//! directory, written atomically (temp file + rename). Any difference means
//! "verify again"; this module never decides that data is good on its own.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::files::file_path;
use super::StorageError;
use crate::metainfo::Torrent;
use crate::wire::Bitfield;

const FORMAT_VERSION: u32 = 1;

/// What we know about one file when it was verified.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStamp {
    pub path: String,
    pub size: u64,
    pub mtime_ns: i128,
    pub inode: u64,
}

/// A saved verification result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResumeRecord {
    pub format: u32,
    pub info_hash_v1: Option<String>,
    pub info_hash_v2: Option<String>,
    pub piece_length: u64,
    pub num_pieces: u32,
    /// The verified-piece bitfield, hex (BEP 3 bit order).
    pub verified: String,
    pub files: Vec<FileStamp>,
}

/// Why a resume record does not apply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResumeMismatch {
    #[error("resume record is for another torrent or format")]
    OtherTorrent,
    #[error("file {0} changed since the last verification (size, mtime or inode)")]
    FileChanged(String),
    #[error("file {0} cannot be read: {1}")]
    FileUnreadable(String, String),
    #[error("resume record's piece bitfield is corrupt")]
    CorruptBitfield,
}

fn stamp(path: &Path, display: String) -> Result<FileStamp, std::io::Error> {
    let m = fs::metadata(path)?;
    Ok(FileStamp {
        path: display,
        size: m.len(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        inode: m.ino(),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

impl ResumeRecord {
    /// Record the current state of the files under `root` (the resolved
    /// content root) with the verified pieces.
    pub fn capture(
        torrent: &Torrent,
        root: &Path,
        verified: &Bitfield,
    ) -> Result<Self, StorageError> {
        let mut files = Vec::with_capacity(torrent.files.len());
        for e in &torrent.files {
            let path = file_path(root, torrent.multi_file, e);
            let s = match stamp(&path, e.display_path()) {
                Ok(s) => s,
                // Empty files are often not created; record them as absent.
                Err(_) if e.length == 0 => FileStamp {
                    path: e.display_path(),
                    size: 0,
                    mtime_ns: 0,
                    inode: 0,
                },
                Err(source) => return Err(StorageError::ResumeIo { path, source }),
            };
            files.push(s);
        }
        Ok(Self {
            format: FORMAT_VERSION,
            info_hash_v1: torrent.info_hash_v1.map(|h| h.to_string()),
            info_hash_v2: torrent.info_hash_v2.map(|h| h.to_string()),
            piece_length: torrent.piece_length,
            num_pieces: torrent.num_pieces,
            verified: hex(verified.as_bytes()),
            files,
        })
    }

    /// The record's file name: by v1 info-hash, else v2.
    pub fn file_name(torrent: &Torrent) -> String {
        let id = torrent
            .info_hash_v1
            .map(|h| h.to_string())
            .or_else(|| torrent.info_hash_v2.map(|h| h.to_string()))
            .unwrap_or_else(|| torrent.name.clone());
        format!("{id}.resume.json")
    }

    /// Write atomically into `state_dir`; returns the record's path.
    pub fn save(&self, torrent: &Torrent, state_dir: &Path) -> Result<PathBuf, StorageError> {
        let path = state_dir.join(Self::file_name(torrent));
        let tmp = state_dir.join(format!("{}.tmp", Self::file_name(torrent)));
        let io = |source| StorageError::ResumeIo {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(state_dir).map_err(io)?;
        let json =
            serde_json::to_vec_pretty(self).map_err(|source| StorageError::ResumeFormat {
                path: path.clone(),
                source,
            })?;
        fs::write(&tmp, json).map_err(io)?;
        fs::rename(&tmp, &path).map_err(io)?;
        Ok(path)
    }

    /// Load the record for `torrent` from `state_dir`; `Ok(None)` if there
    /// is none.
    pub fn load(torrent: &Torrent, state_dir: &Path) -> Result<Option<Self>, StorageError> {
        let path = state_dir.join(Self::file_name(torrent));
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StorageError::ResumeIo { path, source }),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| StorageError::ResumeFormat { path, source })
    }

    /// If the data under `root` is unchanged since this record was made,
    /// the verified pieces; otherwise why not.
    pub fn check(&self, torrent: &Torrent, root: &Path) -> Result<Bitfield, ResumeMismatch> {
        let same_torrent = self.format == FORMAT_VERSION
            && self.info_hash_v1 == torrent.info_hash_v1.map(|h| h.to_string())
            && self.info_hash_v2 == torrent.info_hash_v2.map(|h| h.to_string())
            && self.piece_length == torrent.piece_length
            && self.num_pieces == torrent.num_pieces
            && self.files.len() == torrent.files.len();
        if !same_torrent {
            return Err(ResumeMismatch::OtherTorrent);
        }
        for (e, saved) in torrent.files.iter().zip(&self.files) {
            let path = file_path(root, torrent.multi_file, e);
            let now = match stamp(&path, e.display_path()) {
                Ok(s) => s,
                Err(_) if e.length == 0 && saved.inode == 0 => continue,
                Err(err) => {
                    return Err(ResumeMismatch::FileUnreadable(
                        e.display_path(),
                        err.to_string(),
                    ))
                }
            };
            if &now != saved {
                return Err(ResumeMismatch::FileChanged(e.display_path()));
            }
        }
        unhex(&self.verified)
            .and_then(|b| Bitfield::from_wire(&b, torrent.num_pieces).ok())
            .ok_or(ResumeMismatch::CorruptBitfield)
    }
}
