//! Data changing under the server: watch every served file with inotify,
//! withdraw the pieces of a file the moment it changes, re-verify them in
//! the background and make the good ones live again.
//!
//! Two threads, both off the shards:
//! - `watch-events` blocks on the inotify fd. On any event for a served file
//!   (modify, close-after-write, attribute change, truncation, delete, move)
//!   or for its name in its directory (delete, rename away, rename over,
//!   create) it clears the [`Availability`] bits of every piece touching the
//!   file at once, checks the file's size and identity with `fstat`/`stat`,
//!   logs once per burst and counts it. It never reads file data, so it is
//!   never slow.
//! - `watch-verify` waits until a changed file has been quiet for
//!   [`DEBOUNCE`], then re-hashes its pieces with `pread` through the open
//!   file (never through the mmap, whose pages past a shrunken end would
//!   SIGBUS) and makes the pieces that are good again live.
//!
//! Policy:
//! - modified in place, or truncated and written back (same inode): the
//!   mmap still shows the file, so good pieces come back after
//!   re-verification;
//! - shorter than the torrent says: pieces stay withdrawn and the file is
//!   marked `stale` until it has its full length again (then re-verified);
//! - replaced (another inode under the path: rename over it, delete and
//!   create) or deleted: our mmap still shows the *old* inode, so the
//!   torrent would never see the new content. Its pieces are withdrawn for
//!   good and the log says to restart ringseed to serve the new content.
//!   Re-opening and re-mapping at run time is deliberately not done: the
//!   shards hold the mapping without locks, and swapping it safely needs an
//!   epoch scheme that is not worth it for an operator action.
//!
//! Ordering: the events thread bumps a per-file change counter and clears
//! the bits under one mutex; the verifier notes the counter before reading
//! and restores bits under the same mutex only if it did not move, so a
//! change during re-verification always wins. The shards never take the
//! mutex.
//!
//! Writes in place never reach a peer: a third thread, `watch-leases`,
//! holds a read lease ([`super::lease`]) on every served file. A process
//! that opens one for writing (or truncates it) is held by the kernel until
//! that thread has withdrawn the file's pieces and the shards have finished
//! every send and disk read started before ([`super::fence`]); only then is
//! the lease released and the writer let go. Re-verification takes the
//! lease again first (a file still open for writing elsewhere stays
//! withdrawn until it is closed), so what is verified is what is served.
//! Files changed between the start-up verification and taking the lease
//! are caught by comparing size and change times with those seen when the
//! file was opened. Where leases are unavailable (another owner without
//! `CAP_LEASE`, NFS, `fs.leases-enable=0`) the watcher says so and works on
//! inotify alone: then a block built in the moment between a write landing
//! in the page cache and its event being read carries the new bytes.
//!
//! Not covered: renaming a directory above a file's parent (the data is
//! unchanged). See the tests in `tests/data_change.rs`.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};

use super::availability::Availability;
use super::fence::SendFence;
use super::hash::{PieceCheck, PieceVerifier};
use super::layout::{PieceLayout, Segment};
use super::lease::{self, LeaseError};
use super::{Content, FileStamp};
use crate::metainfo::Torrent;
use crate::wire::Bitfield;

/// A changed file is re-verified once it has had no event for this long.
pub const DEBOUNCE: Duration = Duration::from_millis(500);

/// How long a lease break waits for the shards' in-flight sends before
/// closing the connections that hold them (and as long again after that).
/// Far below the kernel's `lease-break-time` (45 s by default).
pub const FENCE_WAIT: Duration = Duration::from_secs(3);

/// A torrent the watcher looks after (the engine's `ServedTorrent`).
pub trait Watched: Send + Sync + 'static {
    fn torrent(&self) -> &Torrent;
    fn content(&self) -> &Content;
    fn layout(&self) -> &PieceLayout;
    /// Pieces verified at start: only these are ever made live again.
    fn have(&self) -> &Bitfield;
    fn availability(&self) -> &Availability;
}

/// Counters for the metrics exporter (monotonic).
#[derive(Debug, Default)]
pub struct DataChangeStats {
    /// Bursts of changes to a served file (one per file until re-verified).
    pub files_changed: AtomicU64,
    /// Files replaced or deleted: their pieces are withdrawn for good.
    pub files_gone: AtomicU64,
    /// Live pieces withdrawn because a file changed.
    pub pieces_withdrawn: AtomicU64,
    /// Pieces re-verified good and made live again.
    pub pieces_reverified_ok: AtomicU64,
    /// Pieces that failed re-verification (or whose file is too short).
    pub pieces_reverified_failed: AtomicU64,
    /// Files held under a read lease right now.
    pub files_leased: AtomicU64,
    /// Files on which a lease cannot be taken (inotify only).
    pub files_unleased: AtomicU64,
    /// Lease breaks: a process opened a served file for writing.
    pub lease_breaks: AtomicU64,
    /// Lease breaks whose in-flight sends did not finish within
    /// [`FENCE_WAIT`]: their connections were closed.
    pub fences_forced: AtomicU64,
}

impl DataChangeStats {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
    fn sub(c: &AtomicU64, n: u64) {
        c.fetch_sub(n, Ordering::Relaxed);
    }
}

/// Watcher state of one file, behind the shared mutex.
#[derive(Debug, Default)]
struct FileState {
    /// Events seen.
    seq: u64,
    /// `seq` at the last finished re-verification: equal when nothing is
    /// pending.
    verified_seq: u64,
    last_event: Option<Instant>,
    /// Replaced or deleted: withdrawn for good.
    gone: bool,
    /// (dev, ino) of the file we have open.
    id: Option<(u64, u64)>,
    lease: LeaseState,
    /// "open for writing elsewhere" was logged for the current change.
    busy_logged: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum LeaseState {
    /// Not leased (no file, or the watcher has not tried yet).
    #[default]
    None,
    /// A read lease is held: nobody can write the file.
    Held,
    /// Released after a break; taken again before re-verification.
    Released,
    /// Leases do not work for this file: inotify only.
    Unsupported,
}

struct Shared {
    torrents: Vec<Arc<dyn Watched>>,
    /// `[torrent][file]`.
    files: Mutex<Vec<Vec<FileState>>>,
    stats: Arc<DataChangeStats>,
    stop: AtomicBool,
    /// The shards' fence (None when no engine serves these torrents).
    fence: Option<Arc<SendFence>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Vec<Vec<FileState>>> {
        // A panic elsewhere cannot leave the state inconsistent in a way
        // that matters more than stopping to watch.
        self.files.lock().unwrap_or_else(|e| e.into_inner())
    }
}

enum Msg {
    /// A file went from quiet to changed.
    Wake,
    Stop,
}

/// What an event says about a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Change {
    /// Content or size may have changed (same inode).
    Content,
    /// The path may point elsewhere now: compare identities.
    Identity,
    /// Unknown (event queue overflow): both.
    Unknown,
}

/// The running watcher; stops (and joins its threads) on drop.
pub struct DataWatch {
    shared: Arc<Shared>,
    watches: Watches,
    wds: Vec<WatchDescriptor>,
    tx: Sender<Msg>,
    threads: Vec<JoinHandle<()>>,
}

/// Where an inotify watch descriptor leads.
#[derive(Default)]
struct Routes {
    /// File watches: (torrent, file) pairs (several for hard links).
    files: HashMap<WatchDescriptor, Vec<(usize, usize)>>,
    /// Directory watches: name -> (torrent, file) pairs.
    dirs: HashMap<WatchDescriptor, HashMap<OsString, Vec<(usize, usize)>>>,
}

impl DataWatch {
    /// Watch every non-empty file of `torrents` and take a read lease on
    /// each; `fence` is the shards' (see [`super::fence`]). Fails if inotify
    /// is not available or a watch cannot be added (e.g.
    /// `fs.inotify.max_user_watches`); a lease that cannot be taken is
    /// logged, not fatal.
    pub fn start(
        torrents: Vec<Arc<dyn Watched>>,
        fence: Option<Arc<SendFence>>,
        stats: Arc<DataChangeStats>,
    ) -> io::Result<Self> {
        let mut inotify = Inotify::init()?;
        let mut watches = inotify.watches();
        let mut routes = Routes::default();
        let mut states = Vec::with_capacity(torrents.len());
        let mut wds = Vec::new();
        let file_mask = WatchMask::MODIFY
            | WatchMask::CLOSE_WRITE
            | WatchMask::ATTRIB
            | WatchMask::DELETE_SELF
            | WatchMask::MOVE_SELF;
        let dir_mask = WatchMask::DELETE
            | WatchMask::MOVED_FROM
            | WatchMask::MOVED_TO
            | WatchMask::CREATE
            | WatchMask::DELETE_SELF
            | WatchMask::MOVE_SELF;
        for (ti, t) in torrents.iter().enumerate() {
            let mut files = Vec::new();
            for (fi, cf) in t.content().files().iter().enumerate() {
                let mut st = FileState::default();
                let expected = t.torrent().files.get(fi).map_or(0, |e| e.length);
                if let (Some(f), true) = (cf.file(), expected > 0) {
                    let m = f.metadata()?;
                    st.id = Some((m.dev(), m.ino()));
                    let path = cf.path();
                    let wd = watches
                        .add(path, file_mask)
                        .map_err(|e| with_path(e, path))?;
                    routes.files.entry(wd.clone()).or_default().push((ti, fi));
                    wds.push(wd);
                    if let (Some(dir), Some(name)) = (parent_dir(path), path.file_name()) {
                        let wd = watches
                            .add(&dir, dir_mask)
                            .map_err(|e| with_path(e, &dir))?;
                        routes
                            .dirs
                            .entry(wd.clone())
                            .or_default()
                            .entry(name.to_os_string())
                            .or_default()
                            .push((ti, fi));
                        wds.push(wd);
                    }
                }
                files.push(st);
            }
            states.push(files);
        }
        let shared = Arc::new(Shared {
            torrents,
            files: Mutex::new(states),
            stats,
            stop: AtomicBool::new(false),
            fence,
        });
        // Leases first, then: anything that changed between opening the
        // file (before verification) and now.
        let all: Vec<(usize, usize)> = enumerate_files(&shared);
        let leased = take_leases_at_start(&shared, &all);
        for &(ti, fi) in &all {
            if !size_and_identity_ok(&shared, ti, fi) {
                on_change(&shared, None, ti, fi, Change::Unknown);
            }
        }

        let (tx, rx) = mpsc::channel();
        let mut threads = Vec::new();
        if !routes.files.is_empty() {
            let s = Arc::clone(&shared);
            let tx2 = tx.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("watch-events".into())
                    .spawn(move || events_loop(&s, &mut inotify, &routes, &tx2))?,
            );
        }
        if leased {
            let s = Arc::clone(&shared);
            let tx2 = tx.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("watch-leases".into())
                    .spawn(move || lease_loop(&s, &tx2))?,
            );
        }
        let s = Arc::clone(&shared);
        threads.push(
            std::thread::Builder::new()
                .name("watch-verify".into())
                .spawn(move || verify_loop(&s, &rx))?,
        );
        wds.sort();
        wds.dedup();
        tracing::debug!(watches = wds.len(), "watching the served files for changes");
        Ok(Self {
            shared,
            watches,
            wds,
            tx,
            threads,
        })
    }

    /// The counters (for the metrics exporter).
    pub fn stats(&self) -> Arc<DataChangeStats> {
        Arc::clone(&self.shared.stats)
    }

    /// Files changed and not yet re-verified (for tests and status).
    pub fn pending_files(&self) -> usize {
        self.shared
            .lock()
            .iter()
            .flatten()
            .filter(|f| f.seq != f.verified_seq)
            .count()
    }

    /// Stop both threads and wait for them.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for DataWatch {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = self.tx.send(Msg::Stop);
        // Removing a watch queues IN_IGNORED, which wakes the events thread.
        for wd in self.wds.drain(..) {
            let _ = self.watches.remove(wd);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        // No thread answers lease breaks any more: do not hold writers up.
        let files = self.shared.lock();
        for (ti, fs) in files.iter().enumerate() {
            for (fi, st) in fs.iter().enumerate() {
                if st.lease == LeaseState::Held {
                    if let Some(f) = open_file(&self.shared, ti, fi) {
                        let _ = lease::release(f);
                    }
                }
            }
        }
    }
}

fn open_file(shared: &Shared, ti: usize, fi: usize) -> Option<&std::fs::File> {
    shared.torrents.get(ti)?.content().files().get(fi)?.file()
}

// ---- leases -------------------------------------------------------------

/// Take a lease on every file; withdraw the ones that changed since they
/// were opened or that are open for writing elsewhere. True if any file
/// can be leased (the lease thread is needed).
fn take_leases_at_start(shared: &Shared, all: &[(usize, usize)]) -> bool {
    let mut any = false;
    let mut unsupported: Vec<(PathBuf, String)> = Vec::new();
    for &(ti, fi) in all {
        let Some(cf) = shared.torrents[ti].content().files().get(fi) else {
            continue;
        };
        let Some(f) = cf.file() else { continue };
        let (state, changed) = match lease::take(f) {
            Ok(()) => {
                DataChangeStats::add(&shared.stats.files_leased, 1);
                let now = FileStamp::of(f).ok();
                (LeaseState::Held, now.is_none() || now != cf.stamp_at_open())
            }
            Err(LeaseError::Busy) => {
                tracing::warn!(
                    "{} is open for writing by another process: its pieces stay withdrawn until it is closed",
                    cf.path().display()
                );
                (LeaseState::Released, true)
            }
            Err(LeaseError::Unsupported(why)) => {
                DataChangeStats::add(&shared.stats.files_unleased, 1);
                unsupported.push((cf.path().to_path_buf(), why));
                (LeaseState::Unsupported, false)
            }
        };
        any |= state != LeaseState::Unsupported;
        {
            let mut files = shared.lock();
            files[ti][fi].lease = state;
            files[ti][fi].busy_logged = state == LeaseState::Released;
        }
        if changed {
            on_change(shared, None, ti, fi, Change::Unknown);
        }
    }
    if let Some((path, why)) = unsupported.first() {
        tracing::warn!(
            "cannot take a read lease on {} ({why}) and {} other file(s): a write in place to them may reach peers in the moment before it is noticed",
            path.display(),
            unsupported.len() - 1
        );
    }
    any
}

/// Answer lease breaks: withdraw, wait for the shards, release.
fn lease_loop(shared: &Shared, tx: &Sender<Msg>) {
    let mut seen = lease::breaks_seen();
    let mut last_scan = Instant::now();
    loop {
        lease::wait_for_break(seen, Duration::from_millis(100));
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let now_seen = lease::breaks_seen();
        // A signal, or a periodic check in case one was missed.
        if now_seen == seen && last_scan.elapsed() < Duration::from_secs(2) {
            continue;
        }
        seen = now_seen;
        last_scan = Instant::now();
        let held: Vec<(usize, usize)> = {
            let files = shared.lock();
            let mut v = Vec::new();
            for (ti, fs) in files.iter().enumerate() {
                for (fi, st) in fs.iter().enumerate() {
                    if st.lease == LeaseState::Held {
                        v.push((ti, fi));
                    }
                }
            }
            v
        };
        let broken: Vec<(usize, usize)> = held
            .into_iter()
            .filter(|&(ti, fi)| open_file(shared, ti, fi).is_some_and(|f| !lease::held(f)))
            .collect();
        if broken.is_empty() {
            continue;
        }
        // 1. Withdraw: from here on no new send touches these files.
        for &(ti, fi) in &broken {
            DataChangeStats::add(&shared.stats.lease_breaks, 1);
            on_change(shared, Some(tx), ti, fi, Change::Content);
        }
        // 2. Wait for sends and reads started before the withdrawal.
        if let Some(fence) = &shared.fence {
            let epoch = fence.raise();
            if !fence.wait(epoch, FENCE_WAIT) {
                DataChangeStats::add(&shared.stats.fences_forced, 1);
                tracing::warn!(
                    "sends to slow peers still hold pages of a file being opened for writing after {FENCE_WAIT:?}: closing those connections"
                );
                fence.force(epoch);
                if !fence.wait(epoch, FENCE_WAIT) {
                    tracing::error!("in-flight sends did not finish; letting the writer go anyway");
                }
            }
        }
        // 3. Let the writer go.
        let mut files = shared.lock();
        for &(ti, fi) in &broken {
            if let Some(f) = open_file(shared, ti, fi) {
                if let Err(e) = lease::release(f) {
                    tracing::warn!("releasing a read lease failed: {e}");
                }
            }
            files[ti][fi].lease = LeaseState::Released;
            files[ti][fi].busy_logged = false;
            DataChangeStats::sub(&shared.stats.files_leased, 1);
        }
    }
}

/// Before re-verifying file `fi`: make sure nobody can write it while we
/// read and after. False: open for writing elsewhere; try again later.
fn lease_for_verify(shared: &Shared, ti: usize, fi: usize) -> bool {
    let mut files = shared.lock();
    let st = &mut files[ti][fi];
    let Some(f) = open_file(shared, ti, fi) else {
        return true;
    };
    if st.lease == LeaseState::Held && !lease::held(f) {
        // Being broken: the lease thread withdraws and releases it; a
        // verification now would restore pieces a writer is about to change.
        st.last_event = Some(Instant::now());
        return false;
    }
    if st.lease != LeaseState::Released {
        return true;
    }
    match lease::take(f) {
        Ok(()) => {
            st.lease = LeaseState::Held;
            DataChangeStats::add(&shared.stats.files_leased, 1);
            true
        }
        Err(LeaseError::Busy) => {
            // Retry once the file has been quiet for another DEBOUNCE.
            st.last_event = Some(Instant::now());
            if !st.busy_logged {
                st.busy_logged = true;
                tracing::info!(
                    "{} is still open for writing by another process: its pieces stay withdrawn until it is closed",
                    open_path(shared, ti, fi).display()
                );
            }
            false
        }
        Err(LeaseError::Unsupported(why)) => {
            st.lease = LeaseState::Unsupported;
            DataChangeStats::add(&shared.stats.files_unleased, 1);
            tracing::warn!(
                "cannot take a read lease on {} again ({why}): watching it with inotify only",
                open_path(shared, ti, fi).display()
            );
            true
        }
    }
}

fn open_path(shared: &Shared, ti: usize, fi: usize) -> PathBuf {
    shared.torrents[ti]
        .content()
        .files()
        .get(fi)
        .map_or_else(PathBuf::new, |f| f.path().to_path_buf())
}

fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(
        e.kind(),
        format!("cannot watch {} for changes: {e}", path.display()),
    )
}

fn parent_dir(path: &Path) -> Option<PathBuf> {
    match path.parent() {
        Some(p) if p.as_os_str().is_empty() => Some(PathBuf::from(".")),
        Some(p) => Some(p.to_path_buf()),
        None => None,
    }
}

fn enumerate_files(shared: &Shared) -> Vec<(usize, usize)> {
    shared
        .lock()
        .iter()
        .enumerate()
        .flat_map(|(ti, fs)| {
            fs.iter()
                .enumerate()
                .filter(|(_, f)| f.id.is_some())
                .map(move |(fi, _)| (ti, fi))
        })
        .collect()
}

// ---- events thread ------------------------------------------------------

fn events_loop(shared: &Shared, inotify: &mut Inotify, routes: &Routes, tx: &Sender<Msg>) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut live_watches: usize = routes.files.len() + routes.dirs.len();
    loop {
        let events = match inotify.read_events_blocking(&mut buf) {
            Ok(ev) => ev,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::error!("reading inotify events failed ({e}); files changed on disk will no longer be noticed");
                return;
            }
        };
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let mut touched: Vec<((usize, usize), Change)> = Vec::new();
        for ev in events {
            if ev.mask.contains(EventMask::Q_OVERFLOW) {
                tracing::warn!(
                    "inotify queue overflowed: withdrawing and re-verifying every served file"
                );
                for tf in enumerate_files(shared) {
                    touched.push((tf, Change::Unknown));
                }
                continue;
            }
            if ev.mask.contains(EventMask::IGNORED) {
                live_watches = live_watches.saturating_sub(1);
            }
            if let Some(targets) = routes.files.get(&ev.wd) {
                let kind = if ev.mask.intersects(
                    EventMask::ATTRIB
                        | EventMask::DELETE_SELF
                        | EventMask::MOVE_SELF
                        | EventMask::IGNORED,
                ) {
                    Change::Unknown
                } else {
                    Change::Content
                };
                touched.extend(targets.iter().map(|&tf| (tf, kind)));
            }
            if let Some(names) = routes.dirs.get(&ev.wd) {
                if ev
                    .mask
                    .intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF)
                {
                    for targets in names.values() {
                        touched.extend(targets.iter().map(|&tf| (tf, Change::Identity)));
                    }
                } else if let Some(targets) = ev.name.and_then(|n| names.get(n)) {
                    touched.extend(targets.iter().map(|&tf| (tf, Change::Identity)));
                }
            }
        }
        touched.sort_unstable_by_key(|&(tf, _)| tf);
        touched.dedup_by(|b, a| {
            if a.0 == b.0 {
                if a.1 != b.1 {
                    a.1 = Change::Unknown;
                }
                true
            } else {
                false
            }
        });
        for ((ti, fi), kind) in touched {
            on_change(shared, Some(tx), ti, fi, kind);
        }
        if live_watches == 0 {
            return;
        }
    }
}

/// (dev, ino, len, nlink) of our open file.
fn open_file_stat(t: &dyn Watched, fi: usize) -> Option<(u64, u64, u64, u64)> {
    let m = t.content().files().get(fi)?.file()?.metadata().ok()?;
    Some((m.dev(), m.ino(), m.len(), m.nlink()))
}

/// Whether the path still leads to the inode we serve from.
fn path_is_ours(t: &dyn Watched, fi: usize, id: Option<(u64, u64)>) -> bool {
    let Some(cf) = t.content().files().get(fi) else {
        return false;
    };
    match std::fs::metadata(cf.path()) {
        Ok(m) => Some((m.dev(), m.ino())) == id,
        Err(_) => false,
    }
}

fn size_and_identity_ok(shared: &Shared, ti: usize, fi: usize) -> bool {
    let t = shared.torrents[ti].as_ref();
    let id = shared.lock()[ti][fi].id;
    let expected = t.torrent().files.get(fi).map_or(0, |e| e.length);
    match open_file_stat(t, fi) {
        Some((_, _, len, nlink)) => len >= expected && nlink > 0 && path_is_ours(t, fi, id),
        None => false,
    }
}

fn piece_span(r: &std::ops::Range<u32>) -> String {
    match r.len() {
        0 => "no pieces".into(),
        1 => format!("piece {}", r.start),
        _ => format!("pieces {}-{}", r.start, r.end - 1),
    }
}

/// Withdraw file `fi` of torrent `ti` now, then classify the change.
fn on_change(shared: &Shared, tx: Option<&Sender<Msg>>, ti: usize, fi: usize, kind: Change) {
    let t = shared.torrents[ti].as_ref();
    let avail = t.availability();
    let range = t.layout().pieces_of_file(fi);
    let expected = t.torrent().files.get(fi).map_or(0, |e| e.length);
    let path = t
        .content()
        .files()
        .get(fi)
        .map_or_else(PathBuf::new, |f| f.path().to_path_buf());
    let (withdrawn, was_quiet, newly_gone, short) = {
        let mut files = shared.lock();
        let Some(st) = files.get_mut(ti).and_then(|f| f.get_mut(fi)) else {
            return;
        };
        if st.id.is_none() {
            return;
        }
        let was_quiet = st.seq == st.verified_seq;
        st.seq += 1;
        st.last_event = Some(Instant::now());
        // First the bits, so the shards stop serving before anything else.
        let withdrawn = avail.withdraw(range.clone());
        let stat = open_file_stat(t, fi);
        let unlinked = stat.is_none_or(|(_, _, _, nlink)| nlink == 0);
        let replaced = kind != Change::Content && !path_is_ours(t, fi, st.id);
        let short = stat.map_or(0, |s| s.2) < expected;
        let newly_gone = !st.gone && (unlinked || replaced);
        st.gone |= unlinked || replaced;
        if let Some(flags) = avail.file(fi) {
            if short || st.gone {
                flags.stale.store(true, Ordering::SeqCst);
            }
        }
        (withdrawn, was_quiet, newly_gone, short)
    };
    let stats = &shared.stats;
    DataChangeStats::add(&stats.pieces_withdrawn, u64::from(withdrawn));
    if newly_gone {
        DataChangeStats::add(&stats.files_gone, 1);
        tracing::warn!(
            "{} was deleted or replaced while seeding {}: {} withdrawn for good; restart ringseed to serve the new content",
            path.display(),
            t.torrent().name,
            piece_span(&range)
        );
    } else if was_quiet {
        DataChangeStats::add(&stats.files_changed, 1);
        tracing::warn!(
            "{} changed on disk while seeding {}: {} withdrawn, re-verifying{}",
            path.display(),
            t.torrent().name,
            piece_span(&range),
            if short {
                " (file is now shorter than the torrent says)"
            } else {
                ""
            }
        );
    }
    if was_quiet {
        if let Some(tx) = tx {
            let _ = tx.send(Msg::Wake);
        }
    }
}

// ---- verify thread ------------------------------------------------------

fn verify_loop(shared: &Shared, rx: &mpsc::Receiver<Msg>) {
    loop {
        let now = Instant::now();
        let next_due = shared
            .lock()
            .iter()
            .flatten()
            .filter(|f| f.seq != f.verified_seq)
            .filter_map(|f| f.last_event)
            .map(|at| (at + DEBOUNCE).saturating_duration_since(now))
            .min();
        let wait = next_due.unwrap_or(Duration::from_secs(3600));
        match rx.recv_timeout(wait) {
            Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            Ok(Msg::Wake) | Err(RecvTimeoutError::Timeout) => {}
        }
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let now = Instant::now();
        let due: Vec<(usize, usize, u64)> = {
            let files = shared.lock();
            let mut due = Vec::new();
            for (ti, fs) in files.iter().enumerate() {
                for (fi, f) in fs.iter().enumerate() {
                    let quiet = f.last_event.is_some_and(|at| now >= at + DEBOUNCE);
                    if f.seq != f.verified_seq && quiet {
                        due.push((ti, fi, f.seq));
                    }
                }
            }
            due
        };
        for (ti, fi, seq) in due {
            if shared.stop.load(Ordering::SeqCst) {
                return;
            }
            if lease_for_verify(shared, ti, fi) {
                reverify_file(shared, ti, fi, seq);
            }
        }
    }
}

/// Re-hash the pieces of file `fi` (as of change `seq`) with `pread` and
/// make the good ones live if nothing changed meanwhile.
fn reverify_file(shared: &Shared, ti: usize, fi: usize, seq: u64) {
    let t = shared.torrents[ti].as_ref();
    let avail = t.availability();
    let range = t.layout().pieces_of_file(fi);
    let expected = t.torrent().files.get(fi).map_or(0, |e| e.length);
    let path = t
        .content()
        .files()
        .get(fi)
        .map_or_else(PathBuf::new, |f| f.path().to_path_buf());
    let gone = shared.lock()[ti][fi].gone;
    let len = open_file_stat(t, fi).map_or(0, |s| s.2);
    let mut results: Vec<(u32, PieceCheck)> = Vec::new();
    if !gone && len >= expected {
        match PieceVerifier::new(t.torrent()) {
            Ok(mut v) => {
                for p in range.clone().filter(|&p| t.have().get(p)) {
                    if shared.stop.load(Ordering::SeqCst) {
                        return;
                    }
                    results.push((p, v.check_piece(t.content(), p)));
                }
            }
            Err(e) => {
                tracing::error!("cannot re-verify {}: {e}", path.display());
            }
        }
    }
    let stats = &shared.stats;
    let mut files = shared.lock();
    let Some(st) = files.get_mut(ti).and_then(|f| f.get_mut(fi)) else {
        return;
    };
    if st.seq != seq {
        // Changed again while we read: the next round decides.
        return;
    }
    if st.lease == LeaseState::Held && open_file(shared, ti, fi).is_some_and(|f| !lease::held(f)) {
        // A writer is waiting for the lease: do not restore now; the lease
        // thread withdraws, and the next round verifies what it wrote.
        st.last_event = Some(Instant::now());
        return;
    }
    st.verified_seq = seq;
    if gone {
        return;
    }
    if len < expected {
        DataChangeStats::add(&stats.pieces_reverified_failed, range.len() as u64);
        tracing::warn!(
            "{} is {len} bytes, the torrent says {expected}: {} stay withdrawn until the file is restored",
            path.display(),
            piece_span(&range)
        );
        return;
    }
    if let Some(flags) = avail.file(fi) {
        flags.stale.store(false, Ordering::SeqCst);
    }
    let (mut ok, mut bad) = (0u64, Vec::new());
    for (p, check) in results {
        if check != PieceCheck::Good {
            bad.push(p);
            continue;
        }
        // A piece spanning files is live only when none of them is pending,
        // stale or gone; the other file's re-verification covers it later.
        let others_quiet = t.layout().piece_segments(p).all(|seg| match seg {
            Segment::Zero { .. } => true,
            Segment::File { file_index, .. } => {
                files
                    .get(ti)
                    .and_then(|f| f.get(file_index))
                    .is_some_and(|o| o.seq == o.verified_seq && !o.gone)
                    && !avail.is_file_stale(file_index)
            }
        });
        if others_quiet {
            avail.restore(p);
            ok += 1;
        }
    }
    drop(files);
    DataChangeStats::add(&stats.pieces_reverified_ok, ok);
    DataChangeStats::add(&stats.pieces_reverified_failed, bad.len() as u64);
    if bad.is_empty() {
        tracing::info!("{} re-verified: {ok} piece(s) good again", path.display());
    } else {
        tracing::warn!(
            "{} re-verified: {ok} piece(s) good again, {} bad and withdrawn (first: {:?}); restore the file or run `ringseed verify`",
            path.display(),
            bad.len(),
            &bad[..bad.len().min(8)]
        );
    }
}
