//! `serve DIR` follows DIR: one thread, `dir-follow`, blocked on an inotify
//! fd (no polling of the directory).
//!
//! - A new top-level file or directory (hidden names skipped) is added once
//!   nothing under it has changed for `settle` (default 2 s), or at once
//!   when it arrived by an atomic rename into DIR (`IN_MOVED_TO`). A new
//!   directory's subdirectories are watched too, so writes deep inside it
//!   keep it from settling. Adding (create or reuse the hybrid torrent,
//!   announce, print the magnet link, serve) is the registry's.
//! - New content under a name already served (created again, or renamed
//!   over it) is a new torrent; the old one is drained once the new one
//!   serves (counted as `replaced`).
//! - A removed (or renamed-away) entry is drained, announced `stopped`, and
//!   its records in `DIR/.ringseed/` are pruned.
//! - Writes into a served file in place are not this module's: the data
//!   watcher (`storage::watch`) withdraws and re-verifies those pieces.
//! - An inotify queue overflow rescans DIR.
//!
//! What it does not do: add in parallel (one entry is created or verified
//! at a time, in arrival order; removals wait behind an add in progress).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};

use super::registry::{Origin, Registry, RegistryError};
use crate::metrics::{TorrentChange, TorrentState};

/// A running follower; stopped on drop.
pub struct DirFollower {
    stop: Arc<AtomicBool>,
    /// Removing the DIR watch wakes the reader thread (`IN_IGNORED`).
    watches: Watches,
    dir_wd: WatchDescriptor,
    threads: Vec<JoinHandle<()>>,
}

/// One inotify event, owned (the reader thread hands them over).
struct Event {
    wd: WatchDescriptor,
    mask: EventMask,
    name: Option<String>,
}

struct Pending {
    last_event: Instant,
    /// Arrived by rename: complete as it is.
    renamed: bool,
}

struct Follower {
    dir: PathBuf,
    settle: Duration,
    registry: Arc<Registry>,
    watches: Watches,
    /// Watches on subdirectories of new entries -> (top-level name, path).
    subdirs: HashMap<WatchDescriptor, (String, PathBuf)>,
    pending: HashMap<String, Pending>,
}

impl DirFollower {
    /// Watch `dir`; entries not served yet (arrived before the watch) are
    /// picked up at once.
    pub fn start(dir: PathBuf, settle: Duration, registry: Arc<Registry>) -> io::Result<Self> {
        let mut inotify = Inotify::init()?;
        let watches = inotify.watches();
        let dir_wd = watches.clone().add(
            &dir,
            WatchMask::CREATE
                | WatchMask::MOVED_TO
                | WatchMask::MOVED_FROM
                | WatchMask::DELETE
                | WatchMask::MODIFY
                | WatchMask::CLOSE_WRITE
                | WatchMask::ATTRIB
                | WatchMask::ONLYDIR,
        )?;
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel::<Vec<Event>>();
        let reader_stop = Arc::clone(&stop);
        let reader = std::thread::Builder::new()
            .name("dir-events".into())
            .spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                while !reader_stop.load(Ordering::Relaxed) {
                    let events = match inotify.read_events_blocking(&mut buf) {
                        Ok(evs) => evs
                            .map(|e| Event {
                                wd: e.wd,
                                mask: e.mask,
                                name: e.name.and_then(visible),
                            })
                            .collect::<Vec<_>>(),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            tracing::warn!(
                                "reading DIR events failed: {e}; DIR is no longer followed"
                            );
                            return;
                        }
                    };
                    if tx.send(events).is_err() {
                        return;
                    }
                }
            })?;
        let mut f = Follower {
            dir,
            settle,
            registry,
            watches: watches.clone(),
            subdirs: HashMap::new(),
            pending: HashMap::new(),
        };
        f.rescan();
        let follow_stop = Arc::clone(&stop);
        let follower = std::thread::Builder::new()
            .name("dir-follow".into())
            .spawn(move || f.run(&rx, &follow_stop))?;
        Ok(Self {
            stop,
            watches,
            dir_wd,
            threads: vec![reader, follower],
        })
    }

    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if self.stop.swap(true, Ordering::Relaxed) {
            return;
        }
        let _ = self.watches.remove(self.dir_wd.clone());
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for DirFollower {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

fn visible(name: &OsStr) -> Option<String> {
    let name = name.to_str()?;
    (!name.starts_with('.')).then(|| name.to_owned())
}

impl Follower {
    fn run(&mut self, rx: &mpsc::Receiver<Vec<Event>>, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let next = self
                .pending
                .values()
                .map(|p| {
                    if p.renamed {
                        now
                    } else {
                        p.last_event + self.settle
                    }
                })
                .min();
            // Without anything pending, wait for events (the stop removes
            // the DIR watch, which wakes the reader and so us).
            let wait = next.map_or(Duration::from_secs(3600), |d| {
                d.saturating_duration_since(now)
            });
            match rx.recv_timeout(wait) {
                Ok(events) => self.on_events(events),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if !stop.load(Ordering::Relaxed) {
                self.add_ready();
            }
        }
    }

    fn on_events(&mut self, events: Vec<Event>) {
        let now = Instant::now();
        let mut overflow = false;
        for ev in events {
            if ev.mask.contains(EventMask::Q_OVERFLOW) {
                overflow = true;
                continue;
            }
            if ev.mask.contains(EventMask::IGNORED) {
                self.subdirs.remove(&ev.wd);
                continue;
            }
            match self.subdirs.get(&ev.wd).cloned() {
                // Inside a new entry: it is still being written.
                Some((top, sub_path)) => {
                    if let Some(p) = self.pending.get_mut(&top) {
                        p.last_event = now;
                    }
                    if ev.mask.contains(EventMask::ISDIR)
                        && ev.mask.intersects(EventMask::CREATE | EventMask::MOVED_TO)
                    {
                        if let Some(n) = ev.name {
                            self.watch_tree(&sub_path.join(n), &top, 0);
                        }
                    }
                }
                None => {
                    let Some(name) = ev.name else { continue };
                    self.on_top_level(ev.mask, name, now);
                }
            }
        }
        if overflow {
            tracing::warn!(
                "DIR event queue overflowed; rescanning {}",
                self.dir.display()
            );
            self.rescan();
        }
    }

    fn on_top_level(&mut self, mask: EventMask, name: String, now: Instant) {
        let path = self.dir.join(&name);
        if mask.intersects(EventMask::DELETE | EventMask::MOVED_FROM) {
            self.pending.remove(&name);
            self.remove_entry(&name, TorrentChange::Removed);
            return;
        }
        if mask.intersects(EventMask::CREATE | EventMask::MOVED_TO) {
            let renamed = mask.contains(EventMask::MOVED_TO);
            self.pending.insert(
                name.clone(),
                Pending {
                    last_event: now,
                    renamed,
                },
            );
            if mask.contains(EventMask::ISDIR) {
                self.watch_tree(&path, &name, 0);
            }
            return;
        }
        // Modify / close-after-write / attributes of a new entry: not
        // settled yet. Of a served one: the data watcher's.
        if let Some(p) = self.pending.get_mut(&name) {
            p.last_event = now;
        }
    }

    fn watch_tree(&mut self, path: &Path, top: &str, depth: usize) {
        if depth > super::registry::MAX_DEPTH {
            return;
        }
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return;
        };
        if !meta.is_dir() {
            return;
        }
        let mask = WatchMask::CREATE
            | WatchMask::MOVED_TO
            | WatchMask::MOVED_FROM
            | WatchMask::DELETE
            | WatchMask::MODIFY
            | WatchMask::CLOSE_WRITE
            | WatchMask::ONLYDIR;
        if let Ok(wd) = self.watches.add(path, mask) {
            self.subdirs
                .insert(wd, (top.to_owned(), path.to_path_buf()));
        }
        if let Ok(rd) = std::fs::read_dir(path) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    self.watch_tree(&e.path(), top, depth + 1);
                }
            }
        }
    }

    /// Entries in DIR the registry does not serve: add them now.
    fn rescan(&mut self) {
        let served = self.registry.dir_names();
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut present = Vec::new();
        for e in rd.flatten() {
            let Some(name) = visible(&e.file_name()) else {
                continue;
            };
            present.push(name.clone());
            if !served.contains(&name) && !self.pending.contains_key(&name) {
                self.pending.insert(
                    name,
                    Pending {
                        last_event: Instant::now(),
                        renamed: true,
                    },
                );
            }
        }
        for name in served {
            if !present.contains(&name) {
                self.remove_entry(&name, TorrentChange::Removed);
            }
        }
    }

    fn add_ready(&mut self) {
        let now = Instant::now();
        let mut ready: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| p.renamed || now.duration_since(p.last_event) >= self.settle)
            .map(|(n, _)| n.clone())
            .collect();
        ready.sort();
        for name in ready {
            self.pending.remove(&name);
            self.drop_subdir_watches(&name);
            let path = self.dir.join(&name);
            if std::fs::symlink_metadata(&path).is_err() {
                continue;
            }
            let old = self
                .registry
                .dir_entry(&name)
                .filter(|(_, s)| *s == TorrentState::Serving)
                .map(|(k, _)| k);
            match self.registry.add_data(&path, Origin::Dir(name.clone())) {
                Ok(_) => {
                    if let Some(old) = old {
                        if let Err(e) = self.registry.remove_inner(&old, TorrentChange::Replaced) {
                            tracing::warn!(entry = %name, "old content not drained: {e}");
                        }
                    }
                }
                Err(RegistryError::Duplicate(_)) if old.is_some() => {
                    // Same content again (touched, copied over itself).
                }
                Err(_) => {} // logged by the registry
            }
        }
    }

    /// Stop watching inside entry `name` (settled or gone).
    fn drop_subdir_watches(&mut self, name: &str) {
        let wds: Vec<WatchDescriptor> = self
            .subdirs
            .iter()
            .filter(|(_, (top, _))| top == name)
            .map(|(wd, _)| wd.clone())
            .collect();
        for wd in wds {
            self.subdirs.remove(&wd);
            let _ = self.watches.remove(wd);
        }
    }

    fn remove_entry(&mut self, name: &str, kind: TorrentChange) {
        self.drop_subdir_watches(name);
        if let Some((key, TorrentState::Serving)) = self.registry.dir_entry(name) {
            if let Err(e) = self.registry.remove_inner(&key, kind) {
                tracing::warn!(entry = %name, "not removed: {e}");
            }
        }
    }
}
