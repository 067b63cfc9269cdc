//! The ledger directory on disk.
//!
//! ```text
//! DIR/publisher.vkey            the publisher's verifier key (C2SP vkey)
//! DIR/blocks/00000001.block     one file per block, in the block format
//! DIR/checkpoint                the head checkpoint with the cosignatures kept
//! DIR/equivocations/N.proof     equivocation proofs seen
//! ```
//!
//! Every file is written atomically: a temporary file in the same directory,
//! fsync, rename over the final name, fsync the directory. A crash before the
//! rename leaves the previous head intact (the stray `.tmp` is removed at the
//! next start); after it the block is whole. At start every block is checked
//! again (signature, chain, root); the first bad one stops the start with an
//! error naming it.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::note::Verifier;
use super::state::{Equivocation, Ledger, Outcome};
use super::Block;

/// Why the ledger directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot access {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "ledger block {height} ({path}) is corrupt: {reason}; restore it from a peer or a backup"
    )]
    Corrupt {
        height: u64,
        path: PathBuf,
        reason: String,
    },
    #[error("{path} names publisher {found}, not {wanted}")]
    KeyMismatch {
        path: PathBuf,
        found: String,
        wanted: String,
    },
    #[error("{0} has no publisher.vkey: give the publisher's verifier key (--ledger-key)")]
    NoPublisher(PathBuf),
    #[error("bad verifier key in {path}: {reason}")]
    BadKey { path: PathBuf, reason: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Write `bytes` to `path` atomically (temp file, fsync, rename, fsync dir).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = fs::File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(bytes).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    drop(f);
    fs::rename(&tmp, path).map_err(io_err(path))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// A ledger directory.
#[derive(Debug, Clone)]
pub struct LedgerDir {
    dir: PathBuf,
}

impl LedgerDir {
    /// Open (creating it if needed) and load every block into a [`Ledger`].
    /// `publisher` is required the first time and must match afterwards.
    pub fn open(
        dir: &Path,
        publisher: Option<&Verifier>,
        witnesses: Vec<Verifier>,
    ) -> Result<(Self, Ledger), StoreError> {
        let this = Self {
            dir: dir.to_owned(),
        };
        fs::create_dir_all(this.blocks_dir()).map_err(io_err(dir))?;
        fs::create_dir_all(dir.join("equivocations")).map_err(io_err(dir))?;
        let vkey_path = dir.join("publisher.vkey");
        let key = match fs::read_to_string(&vkey_path) {
            Ok(s) => {
                let found = Verifier::from_vkey(&s).map_err(|e| StoreError::BadKey {
                    path: vkey_path.clone(),
                    reason: e.to_string(),
                })?;
                if let Some(p) = publisher {
                    if *p != found {
                        return Err(StoreError::KeyMismatch {
                            path: vkey_path,
                            found: found.to_vkey(),
                            wanted: p.to_vkey(),
                        });
                    }
                }
                found
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let p = publisher.ok_or_else(|| StoreError::NoPublisher(dir.to_owned()))?;
                write_atomic(&vkey_path, format!("{}\n", p.to_vkey()).as_bytes())?;
                p.clone()
            }
            Err(e) => return Err(io_err(&vkey_path)(e)),
        };
        this.remove_stray_temp_files();
        let mut ledger = Ledger::new(key, witnesses);
        for height in 1.. {
            let path = this.block_path(height);
            let bytes = match fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) => return Err(io_err(&path)(e)),
            };
            match ledger.offer_block(&bytes) {
                Ok(Outcome::Appended { height: h }) if h == height => {}
                Ok(other) => {
                    return Err(StoreError::Corrupt {
                        height,
                        path,
                        reason: format!("it does not extend block {}: {other:?}", height - 1),
                    })
                }
                Err(r) => {
                    return Err(StoreError::Corrupt {
                        height,
                        path,
                        reason: r.to_string(),
                    })
                }
            }
        }
        if let Ok(rd) = fs::read_dir(dir.join("equivocations")) {
            for e in rd.flatten() {
                if let Ok(bytes) = fs::read(e.path()) {
                    // A proof that no longer verifies is reported and skipped.
                    if let Err(r) = ledger.offer_equivocation(&bytes) {
                        tracing::warn!("ignoring {}: {r}", e.path().display());
                    }
                }
            }
        }
        if let Ok(bytes) = fs::read(dir.join("checkpoint")) {
            let _ = ledger.offer_checkpoint(&bytes);
        }
        Ok((this, ledger))
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn blocks_dir(&self) -> PathBuf {
        self.dir.join("blocks")
    }

    pub fn block_path(&self, height: u64) -> PathBuf {
        self.blocks_dir().join(format!("{height:08}.block"))
    }

    fn remove_stray_temp_files(&self) {
        for d in [
            self.dir.clone(),
            self.blocks_dir(),
            self.dir.join("equivocations"),
        ] {
            for e in fs::read_dir(&d).into_iter().flatten().flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                if name.starts_with('.') && name.ends_with(".tmp") {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
    }

    /// Persist a block the ledger has just accepted.
    pub fn append(&self, block: &Block) -> Result<(), StoreError> {
        write_atomic(
            &self.block_path(block.header.height),
            block.encode().as_bytes(),
        )
    }

    /// Persist the head checkpoint with its cosignatures.
    pub fn save_checkpoint(&self, ledger: &Ledger) -> Result<(), StoreError> {
        match ledger.checkpoint_note() {
            Some(n) => write_atomic(&self.dir.join("checkpoint"), n.encode().as_bytes()),
            None => Ok(()),
        }
    }

    pub fn save_equivocation(&self, ledger: &Ledger, e: &Equivocation) -> Result<(), StoreError> {
        let n = ledger.equivocations().len();
        let path = self.dir.join("equivocations").join(format!("{n}.proof"));
        write_atomic(&path, e.encode().as_bytes())
    }
}
