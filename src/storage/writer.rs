//! The verified piece writer: the storage side of fetching. It takes a
//! complete piece (every block, in memory), checks it against the torrent's
//! hashes (v1 SHA-1, v2 merkle, both for a hybrid), writes it into the
//! torrent's files and records it in the resume record, on a dedicated I/O
//! thread fed by a bounded queue.
//!
//! # Why a thread and not io_uring writes
//!
//! Every piece must be hashed before it is written, and hashing (about
//! 0.5 ms per MiB per core) is far more work than the write itself, which
//! lands in the page cache. A shard cannot hash without stalling its peers,
//! so a thread is needed anyway; that thread then writes what it just
//! hashed while the bytes are still in cache, with plain `pwrite`. Writing
//! through a shard's ring instead would add buffer lifetimes to the shard's
//! in-flight slots for no gain, and a buffered write that hits the kernel's
//! dirty-page throttling (`balance_dirty_pages`) would stall the ring of a
//! shard that also serves. The bounded queue is the back-pressure: when it
//! is full ([`PieceWriter::try_submit`] hands the piece back) the
//! downloader stops requesting until outcomes drain.
//!
//! # Guarantees
//!
//! - A piece is reported [`WriteOutcome::Written`] (and set in the resume
//!   record) only after its hash matched *and* every byte was written. The
//!   files are `fdatasync`ed before each resume record save, so a record
//!   never claims a piece the disk does not hold.
//! - An interrupted fetch resumes from what it verified: at
//!   [`PieceWriter::open`], a resume record that still matches the files is
//!   trusted; otherwise every piece whose bytes are present is hashed again.
//! - Existing files are never clobbered silently: without a resume record
//!   for this torrent (the files are not from an earlier fetch of ours), a
//!   file that is larger than the torrent says or holds a piece that fails
//!   its hash is a [`WriteError::FileConflict`]; nothing is created or
//!   changed then. Pieces that match are kept (a partial copy made by other
//!   means is fine).
//! - Clear errors: a full disk ([`WriteError::DiskFull`], also for
//!   `EDQUOT` and `EFBIG`), a read-only data path ([`WriteError::ReadOnly`]).
//!   What was verified before the error stays verified and recorded.
//!
//! Not here: choosing what to download (see `swarm::download`), serving the
//! written pieces (the caller publishes them as available), `fallocate`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::files::{file_path, AsFile};
use super::hash::{check_digest, PieceCheck};
use super::layout::{PieceLayout, Segment};
use super::reader::{check_v2_alignment, PieceHasher};
use super::resume::ResumeRecord;
use super::StorageError;
use crate::metainfo::Torrent;
use crate::wire::Bitfield;

/// Writer settings.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Pieces waiting to be hashed and written. Default 16.
    pub queue: usize,
    /// Where the resume record is kept; `None`: no record.
    pub state_dir: Option<PathBuf>,
    /// Least time between resume record saves (each costs an `fdatasync`
    /// of the files written since the last). Default 2 s; the last piece
    /// and [`PieceWriter::finish`] always save.
    pub resume_interval: Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            queue: 16,
            state_dir: None,
            resume_interval: Duration::from_secs(2),
        }
    }
}

/// What went wrong, with the path and the fix.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("disk full writing {path} (piece {piece}): free space on that filesystem; what was verified is kept and the fetch resumes from it")]
    DiskFull {
        path: PathBuf,
        piece: u32,
        #[source]
        source: io::Error,
    },
    #[error("data path {path} is read-only: make it writable or pass a writable --data")]
    ReadOnly {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} already exists and does not match the torrent ({reason}): move it away or choose another --data")]
    FileConflict { path: PathBuf, reason: String },
    #[error("{path} is in the way of a torrent file (a directory or special file)")]
    NotAFile { path: PathBuf },
    #[error("cannot {op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("piece {piece} has {got} bytes, expected {expected}")]
    WrongLength {
        piece: u32,
        got: usize,
        expected: u64,
    },
    #[error("the writer thread is gone (an earlier error stopped it)")]
    Closed,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Maps an I/O error on `path` to the error a user can act on.
fn classify(op: &'static str, path: &Path, piece: u32, e: io::Error) -> WriteError {
    let path = path.to_path_buf();
    match e.raw_os_error() {
        Some(libc::ENOSPC | libc::EDQUOT | libc::EFBIG) => WriteError::DiskFull {
            path,
            piece,
            source: e,
        },
        Some(libc::EROFS | libc::EACCES | libc::EPERM) => WriteError::ReadOnly { path, source: e },
        _ => WriteError::Io {
            op,
            path,
            source: e,
        },
    }
}

/// The outcome of one submitted piece.
#[derive(Debug)]
pub enum WriteOutcome {
    /// Hash matched and the piece is written: serve it, announce it.
    /// `data`: the submitted buffer, handed back (for the smart ban's
    /// comparison with earlier bad copies, or to be reused).
    Written { piece: u32, data: Vec<u8> },
    /// The piece did not match its hash (nothing written): download it
    /// again and blame its senders; `data` is the evidence.
    Mismatch {
        piece: u32,
        check: PieceCheck,
        data: Vec<u8>,
    },
    /// It could not be written; the writer has stopped (a full disk or a
    /// read-only path stays that way). The piece is not verified.
    Failed { piece: u32, error: WriteError },
}

/// What [`PieceWriter::open`] found on disk.
#[derive(Debug, Clone)]
pub struct OpenReport {
    /// Pieces already verified (from the resume record or by hashing).
    pub verified: Bitfield,
    /// The resume record was trusted (nothing re-hashed).
    pub from_resume: bool,
    /// Pieces hashed at open (their bytes were present).
    pub hashed: u32,
}

struct Job {
    piece: u32,
    data: Vec<u8>,
}

struct Target {
    path: PathBuf,
    file: Option<File>,
}

impl AsFile for Target {
    fn as_file(&self) -> Option<&File> {
        self.file.as_ref()
    }
    fn path(&self) -> &Path {
        &self.path
    }
}

/// See the module docs. Dropping it stops the thread after the queued
/// pieces (use [`Self::finish`] to wait and get the final state).
pub struct PieceWriter {
    jobs: Option<SyncSender<Job>>,
    outcomes: Receiver<WriteOutcome>,
    thread: Option<JoinHandle<Result<Bitfield, WriteError>>>,
}

impl PieceWriter {
    /// Prepares `torrent`'s files under `root` (the file itself for a
    /// single-file torrent, the top directory otherwise: see
    /// [`file_path`]), finds what is verified already and starts the I/O
    /// thread.
    pub fn open(
        torrent: Arc<Torrent>,
        root: &Path,
        cfg: WriterConfig,
    ) -> Result<(PieceWriter, OpenReport), WriteError> {
        let layout = PieceLayout::new(&torrent).map_err(StorageError::from)?;
        let want_v1 = torrent.v1_pieces.is_some();
        let want_v2 = torrent.files.iter().any(|f| f.pieces_root.is_some());
        if want_v2 {
            check_v2_alignment(&torrent.files, torrent.piece_length)?;
        }
        if !want_v1 && !want_v2 {
            return Err(StorageError::NothingToVerify.into());
        }
        let paths: Vec<PathBuf> = torrent
            .files
            .iter()
            .map(|e| file_path(root, torrent.multi_file, e))
            .collect();
        let record = match &cfg.state_dir {
            Some(dir) => ResumeRecord::load(&torrent, dir)?,
            None => None,
        };
        let trusted = record.as_ref().and_then(|r| r.check(&torrent, root).ok());
        let ours = record.is_some();
        let mut hasher = PieceHasher::new(want_v1, want_v2, torrent.piece_length);
        let (verified, from_resume, hashed) = match trusted {
            Some(bits) => (bits, true, 0),
            None => {
                let (bits, hashed) = scan_existing(
                    &torrent,
                    &layout,
                    &paths,
                    &mut hasher,
                    ours,
                    want_v1,
                    want_v2,
                )?;
                (bits, false, hashed)
            }
        };
        let files = create_files(&torrent, &paths)?;
        let (jobs_tx, jobs_rx) = mpsc::sync_channel::<Job>(cfg.queue.max(1));
        let (out_tx, out_rx) = mpsc::channel();
        let mut io = IoThread {
            torrent,
            root: root.to_path_buf(),
            layout,
            files,
            hasher,
            want_v1,
            want_v2,
            verified: verified.clone(),
            dirty: Vec::new(),
            cfg,
            last_save: None,
        };
        let thread = std::thread::Builder::new()
            .name("piece-writer".into())
            .spawn(move || io.run(jobs_rx, out_tx))
            .map_err(StorageError::Thread)?;
        Ok((
            PieceWriter {
                jobs: Some(jobs_tx),
                outcomes: out_rx,
                thread: Some(thread),
            },
            OpenReport {
                verified,
                from_resume,
                hashed,
            },
        ))
    }

    /// Queues a whole piece, waiting while the queue is full.
    pub fn submit(&self, piece: u32, data: Vec<u8>) -> Result<(), WriteError> {
        let tx = self.jobs.as_ref().ok_or(WriteError::Closed)?;
        tx.send(Job { piece, data }).map_err(|_| WriteError::Closed)
    }

    /// Queues a whole piece if there is room; a full queue hands it back
    /// (`Ok(Some(data))`): keep it and stop requesting until outcomes drain.
    pub fn try_submit(&self, piece: u32, data: Vec<u8>) -> Result<Option<Vec<u8>>, WriteError> {
        let tx = self.jobs.as_ref().ok_or(WriteError::Closed)?;
        match tx.try_send(Job { piece, data }) {
            Ok(()) => Ok(None),
            Err(TrySendError::Full(j)) => Ok(Some(j.data)),
            Err(TrySendError::Disconnected(_)) => Err(WriteError::Closed),
        }
    }

    /// The next outcome, if one is ready.
    pub fn try_outcome(&self) -> Option<WriteOutcome> {
        self.outcomes.try_recv().ok()
    }

    /// The next outcome, waiting at most `timeout`.
    pub fn outcome_timeout(&self, timeout: Duration) -> Option<WriteOutcome> {
        self.outcomes.recv_timeout(timeout).ok()
    }

    /// Writes everything queued, saves the resume record and stops the
    /// thread; returns the verified pieces (or the error that stopped it).
    pub fn finish(mut self) -> Result<Bitfield, WriteError> {
        self.jobs = None;
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            None => Err(WriteError::Closed),
        }
    }
}

impl Drop for PieceWriter {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Hashes every piece whose bytes are all present in the existing files.
/// Without a resume record of ours, a file that is too large or holds a
/// piece that fails is a conflict (checked before anything is created).
fn scan_existing(
    torrent: &Torrent,
    layout: &PieceLayout,
    paths: &[PathBuf],
    hasher: &mut PieceHasher,
    ours: bool,
    want_v1: bool,
    want_v2: bool,
) -> Result<(Bitfield, u32), WriteError> {
    let mut verified = Bitfield::new(torrent.num_pieces);
    let mut lens = Vec::with_capacity(paths.len());
    let mut sources = Vec::with_capacity(paths.len());
    for (e, path) in torrent.files.iter().zip(paths) {
        let (len, file) = match std::fs::metadata(path) {
            Ok(m) if !m.is_file() => return Err(WriteError::NotAFile { path: path.clone() }),
            Ok(m) => {
                if m.len() > e.length && !ours {
                    return Err(WriteError::FileConflict {
                        path: path.clone(),
                        reason: format!("{} bytes, the torrent's file has {}", m.len(), e.length),
                    });
                }
                let f = File::open(path).map_err(|s| classify("open", path, 0, s))?;
                (m.len(), Some(f))
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => (0, None),
            Err(err) => return Err(classify("inspect", path, 0, err)),
        };
        lens.push(len);
        sources.push(Target {
            path: path.clone(),
            file,
        });
    }
    let mut hashed = 0;
    let mut bad: Vec<(usize, u32)> = Vec::new();
    for piece in 0..torrent.num_pieces {
        let mut present = true;
        let mut any_file = false;
        for seg in layout.piece_segments(piece) {
            if let Segment::File {
                file_index,
                file_offset,
                len,
            } = seg
            {
                any_file = true;
                present &= file_offset + len <= lens[file_index];
            }
        }
        if !present || !any_file {
            continue;
        }
        hashed += 1;
        let check = match hasher.hash_piece(layout, &torrent.files, &sources, piece) {
            Ok(d) => check_digest(torrent, layout, piece, &d, want_v1, want_v2),
            Err(_) => PieceCheck::Unreadable,
        };
        if check == PieceCheck::Good {
            verified.set(piece);
        } else if let Some(f) = layout.files_in_piece(piece).next() {
            bad.push((f, piece));
        }
    }
    if let (false, Some(&(f, _))) = (ours, bad.first()) {
        return Err(WriteError::FileConflict {
            path: paths[f].clone(),
            reason: format!(
                "{} of the {hashed} pieces present fail their hash, first piece {}",
                bad.len(),
                bad[0].1
            ),
        });
    }
    Ok((verified, hashed))
}

/// Creates missing directories and files and extends short files to their
/// size (sparse). Empty files are created too.
fn create_files(torrent: &Torrent, paths: &[PathBuf]) -> Result<Vec<Target>, WriteError> {
    let mut out = Vec::with_capacity(paths.len());
    for (e, path) in torrent.files.iter().zip(paths) {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|s| classify("create directory", dir, 0, s))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|s| classify("create", path, 0, s))?;
        let len = file
            .metadata()
            .map_err(|s| classify("inspect", path, 0, s))?
            .len();
        if len < e.length {
            file.set_len(e.length)
                .map_err(|s| classify("extend", path, 0, s))?;
        }
        out.push(Target {
            path: path.clone(),
            file: Some(file),
        });
    }
    Ok(out)
}

struct IoThread {
    torrent: Arc<Torrent>,
    root: PathBuf,
    layout: PieceLayout,
    files: Vec<Target>,
    hasher: PieceHasher,
    want_v1: bool,
    want_v2: bool,
    verified: Bitfield,
    /// Files written since the last resume save.
    dirty: Vec<usize>,
    cfg: WriterConfig,
    last_save: Option<Instant>,
}

impl IoThread {
    fn run(
        &mut self,
        jobs: Receiver<Job>,
        out: mpsc::Sender<WriteOutcome>,
    ) -> Result<Bitfield, WriteError> {
        while let Ok(job) = jobs.recv() {
            let piece = job.piece;
            match self.one(&job) {
                Ok(None) => {
                    let due = self.verified.is_full()
                        || self
                            .last_save
                            .is_none_or(|t| t.elapsed() >= self.cfg.resume_interval);
                    if due {
                        if let Err(error) = self.save() {
                            let _ = out.send(WriteOutcome::Failed { piece, error });
                            break;
                        }
                    }
                    let _ = out.send(WriteOutcome::Written {
                        piece,
                        data: job.data,
                    });
                }
                Ok(Some(check)) => {
                    let _ = out.send(WriteOutcome::Mismatch {
                        piece,
                        check,
                        data: job.data,
                    });
                }
                Err(error) => {
                    // Keep what was verified before the error.
                    let _ = self.save();
                    let _ = out.send(WriteOutcome::Failed { piece, error });
                    return Ok(self.verified.clone());
                }
            }
        }
        self.save()?;
        Ok(self.verified.clone())
    }

    /// Checks and writes one piece: `Ok(None)` written, `Ok(Some(check))`
    /// hash mismatch (nothing written).
    fn one(&mut self, job: &Job) -> Result<Option<PieceCheck>, WriteError> {
        let Job { piece, ref data } = *job;
        let expected = self.layout.piece_len(piece);
        if piece >= self.torrent.num_pieces || data.len() as u64 != expected {
            return Err(WriteError::WrongLength {
                piece,
                got: data.len(),
                expected,
            });
        }
        let d = self
            .hasher
            .hash_buffer(&self.layout, &self.torrent.files, piece, data);
        let check = check_digest(
            &self.torrent,
            &self.layout,
            piece,
            &d,
            self.want_v1,
            self.want_v2,
        );
        if check != PieceCheck::Good {
            return Ok(Some(check));
        }
        let mut pos = 0usize;
        for seg in self.layout.piece_segments(piece) {
            let len = seg.len() as usize;
            if let Segment::File {
                file_index,
                file_offset,
                ..
            } = seg
            {
                let t = &self.files[file_index];
                let f = t.file.as_ref().ok_or(WriteError::Closed)?;
                f.write_all_at(&data[pos..pos + len], file_offset)
                    .map_err(|e| classify("write", &t.path, piece, e))?;
                if !self.dirty.contains(&file_index) {
                    self.dirty.push(file_index);
                }
            }
            pos += len;
        }
        self.verified.set(piece);
        Ok(None)
    }

    /// Syncs the files written since the last save, then saves the record.
    fn save(&mut self) -> Result<(), WriteError> {
        let Some(dir) = self.cfg.state_dir.clone() else {
            self.dirty.clear();
            return Ok(());
        };
        for i in self.dirty.drain(..) {
            let t = &self.files[i];
            if let Some(f) = &t.file {
                f.sync_data().map_err(|e| classify("sync", &t.path, 0, e))?;
            }
        }
        ResumeRecord::capture(&self.torrent, &self.root, &self.verified)?
            .save(&self.torrent, &dir)?;
        self.last_save = Some(Instant::now());
        Ok(())
    }
}
