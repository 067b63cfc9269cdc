//! The torrents a running server serves, as the control plane sees them:
//! adding (create or verify off the shards, then publish in the live
//! catalogue, announce, print the magnet link), removing (drain, announce
//! `stopped`, let go of the files, prune `DIR/.ringseed/`), listing.
//!
//! Callers: the control API (`control::api`), the `serve DIR` follower
//! (`control::dir`) and `serve` start-up (torrents prepared before the
//! shards started are adopted). Every method blocks (hashing, draining) and
//! runs off the shards: on the HTTP server's blocking pool or the
//! follower's thread.
//!
//! What it refuses, with the HTTP status the API answers: a `.torrent` that
//! does not parse (400), a data path outside the allowed roots (403), a
//! path that does not exist (404), a FIFO, device, socket, symlink loop or
//! too deep a tree (422), data that does not match the torrent (size or any
//! piece's hash; 422: nothing unverified is ever served), an info-hash
//! already served or being added (409). A refusal is one log line; nothing
//! else changes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;

use crate::config::ServeConfig;
use crate::engine::catalog::{watch, CatalogError, LiveCatalog, ServedTorrent};
use crate::metainfo::magnet::Magnet;
use crate::metainfo::Torrent;
use crate::metrics::{TorrentChange, TorrentCounts, TorrentState, VerifyStats};
use crate::prepare::{prepare_dir_entry, prepare_torrent, Prepared};
use crate::storage::resume::ResumeRecord;
use crate::storage::watch::{DataChangeStats, DataWatch, Watched};
use crate::tracker::client::{AnnounceTarget, Announcer};
use crate::tracker::server::EmbeddedTracker;

/// Deepest directory tree accepted under a served path.
pub const MAX_DEPTH: usize = 32;

/// Why a torrent was not added or removed; [`RegistryError::status`] is
/// the HTTP status the API answers with.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("not a valid .torrent: {0}")]
    BadTorrent(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{path} is outside the allowed roots ({roots}); add it with --allow-root")]
    OutsideRoots { path: String, roots: String },
    #[error("{0}: no such file or directory")]
    NotFound(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("the data does not match the torrent: {0}")]
    Mismatch(String),
    #[error("{0}")]
    Duplicate(String),
    #[error("no torrent {0} is served")]
    NoSuchTorrent(String),
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    Internal(String),
}

impl RegistryError {
    pub fn status(&self) -> u16 {
        match self {
            Self::BadTorrent(_) | Self::BadRequest(_) => 400,
            Self::OutsideRoots { .. } => 403,
            Self::NotFound(_) | Self::NoSuchTorrent(_) => 404,
            Self::Duplicate(_) | Self::Busy(_) => 409,
            Self::Unsupported(_) | Self::Mismatch(_) => 422,
            Self::Internal(_) => 500,
        }
    }
}

/// Where a torrent came from (decides what its removal prunes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Top-level entry `name` of the served DIR.
    Dir(String),
    /// Given at start-up or through the API.
    Given,
}

/// One torrent as `GET /torrents` shows it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct TorrentInfo {
    pub name: String,
    pub info_hash_v1: Option<String>,
    pub info_hash_v2: Option<String>,
    pub size: u64,
    pub pieces_verified: u32,
    pub pieces_total: u32,
    pub peers: u32,
    pub uploaded_bytes: u64,
    /// `verifying`, `serving` or `draining`.
    pub state: String,
    pub data_path: String,
    pub magnet: Option<String>,
}

struct Entry {
    /// Name shown while verifying (the torrent's, or the data path's).
    name: String,
    /// v1 and truncated v2 info-hashes, once known.
    keys: Vec<[u8; 20]>,
    state: TorrentState,
    served: Option<Arc<ServedTorrent>>,
    data: PathBuf,
    origin: Origin,
    /// Held for its `Drop`: stops watching the files on removal.
    _watch: Option<DataWatch>,
    /// Held for its `Drop`: stops fetching on removal (what was verified
    /// stays recorded).
    _fetch: Option<crate::fetch::Fetch>,
}

/// What adding needs to know about the server.
pub struct RegistryConfig {
    pub serve: ServeConfig,
    pub threads: usize,
    /// Tiers written into torrents created for data paths (our tracker first).
    pub created_trackers: Vec<Vec<String>>,
    /// Our embedded tracker's announce URL (not announced to: it lists us).
    pub public_url: Option<String>,
    /// `x.pe` hint in printed magnet links.
    pub peer_hint: Option<String>,
    /// Data paths must be under one of these (canonical).
    pub allow_roots: Vec<PathBuf>,
    /// Created torrents and resume records of DIR entries (`DIR/.ringseed`).
    pub dir_state: Option<PathBuf>,
    /// Same for torrents added by data path alone through the API.
    pub api_state: PathBuf,
    /// How long a removed torrent's peers keep being served.
    pub drain_grace: Duration,
    /// Settings for fetching a torrent added with missing or incomplete
    /// data (its `trackers` are filled per torrent); `None`: such an add is
    /// refused.
    pub fetch: Option<crate::fetch::FetchConfig>,
    /// Where started fetches are listed for the metrics endpoint.
    pub fetch_list: Arc<crate::fetch::FetchList>,
}

/// The served set. Shared by the API, the DIR follower and `serve`.
pub struct Registry {
    cfg: RegistryConfig,
    live: Arc<LiveCatalog>,
    entries: Mutex<Vec<Entry>>,
    counts: Arc<TorrentCounts>,
    verify_stats: Arc<VerifyStats>,
    data_stats: Arc<DataChangeStats>,
    tracker: Mutex<Option<EmbeddedTracker>>,
    announcer: Mutex<Option<Announcer>>,
    /// Removals in progress (joined at shutdown).
    drains: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn keys_of(t: &Torrent) -> Vec<[u8; 20]> {
    t.info_hash_v1
        .map(|h| h.0)
        .into_iter()
        .chain(t.info_hash_v2.map(|h| h.truncated()))
        .collect()
}

impl Registry {
    pub fn new(
        cfg: RegistryConfig,
        live: Arc<LiveCatalog>,
        counts: Arc<TorrentCounts>,
        verify_stats: Arc<VerifyStats>,
        data_stats: Arc<DataChangeStats>,
        tracker: Option<EmbeddedTracker>,
        announcer: Option<Announcer>,
    ) -> Self {
        Self {
            cfg,
            live,
            entries: Mutex::new(Vec::new()),
            counts,
            verify_stats,
            data_stats,
            tracker: Mutex::new(tracker),
            announcer: Mutex::new(announcer),
            drains: Mutex::new(Vec::new()),
        }
    }

    fn entries(&self) -> MutexGuard<'_, Vec<Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn live(&self) -> &Arc<LiveCatalog> {
        &self.live
    }

    pub fn config(&self) -> &RegistryConfig {
        &self.cfg
    }

    /// A torrent prepared at start-up, already in the catalogue, announced
    /// and watched by `serve`.
    pub fn adopt(
        &self,
        served: Arc<ServedTorrent>,
        data: PathBuf,
        origin: Origin,
        fetch: Option<crate::fetch::Fetch>,
    ) {
        self.counts.moved(None, Some(TorrentState::Serving));
        self.entries().push(Entry {
            name: served.torrent.name.clone(),
            keys: keys_of(&served.torrent),
            state: TorrentState::Serving,
            served: Some(served),
            data,
            origin,
            _watch: None,
            _fetch: fetch,
        });
    }

    /// The magnet link peers can use for `t`.
    pub fn magnet(&self, t: &Torrent) -> String {
        let mut m = Magnet::for_torrent(t);
        m.peers.extend(self.cfg.peer_hint.clone());
        m.to_uri()
    }

    /// Every torrent, in the order they were added.
    pub fn list(&self) -> Vec<TorrentInfo> {
        self.entries().iter().map(|e| self.info(e)).collect()
    }

    /// One torrent by v1 or v2 info-hash (hex, any case) or name.
    pub fn get(&self, key: &str) -> Option<TorrentInfo> {
        let entries = self.entries();
        let i = find(&entries, key)?;
        Some(self.info(&entries[i]))
    }

    fn info(&self, e: &Entry) -> TorrentInfo {
        match &e.served {
            Some(s) => {
                let t = &s.torrent;
                TorrentInfo {
                    name: t.name.clone(),
                    info_hash_v1: t.info_hash_v1.map(|h| h.to_string()),
                    info_hash_v2: t.info_hash_v2.map(|h| h.to_string()),
                    size: t.total_size,
                    pieces_verified: s.live_pieces(),
                    pieces_total: t.num_pieces,
                    peers: s.peers(),
                    uploaded_bytes: s.uploaded(),
                    state: e.state.as_str().to_owned(),
                    data_path: e.data.display().to_string(),
                    magnet: Some(self.magnet(t)),
                }
            }
            None => TorrentInfo {
                name: e.name.clone(),
                info_hash_v1: e.keys.first().map(|k| hex(k)),
                info_hash_v2: None,
                size: 0,
                pieces_verified: 0,
                pieces_total: 0,
                peers: 0,
                uploaded_bytes: 0,
                state: e.state.as_str().to_owned(),
                data_path: e.data.display().to_string(),
                magnet: None,
            },
        }
    }

    /// Whether `path` may be served, and what it is. `fetch`: it may not
    /// exist yet (a torrent whose data will be fetched there).
    pub fn check_path(&self, path: &Path, fetch: bool) -> Result<PathBuf, RegistryError> {
        let shown = path.display().to_string();
        let canon = match std::fs::canonicalize(path) {
            Ok(c) => c,
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(RegistryError::Unsupported(format!("{shown}: symlink loop")))
            }
            // A path that does not exist yet is where a fetch will put
            // the data: its directory must exist (inside the roots).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match (path.parent(), path.file_name()) {
                    (Some(dir), Some(name)) if fetch && self.cfg.fetch.is_some() => {
                        let dir = if dir.as_os_str().is_empty() {
                            Path::new(".")
                        } else {
                            dir
                        };
                        match std::fs::canonicalize(dir) {
                            Ok(d) => d.join(name),
                            Err(_) => return Err(RegistryError::NotFound(shown)),
                        }
                    }
                    _ => return Err(RegistryError::NotFound(shown)),
                }
            }
            Err(e) => return Err(RegistryError::BadRequest(format!("{shown}: {e}"))),
        };
        if !self.cfg.allow_roots.iter().any(|r| canon.starts_with(r)) {
            let roots: Vec<String> = self
                .cfg
                .allow_roots
                .iter()
                .map(|r| r.display().to_string())
                .collect();
            tracing::warn!(path = %shown, "refused: outside the allowed roots");
            return Err(RegistryError::OutsideRoots {
                path: shown,
                roots: roots.join(", "),
            });
        }
        if canon.exists() {
            check_tree(&canon, 0)?;
        }
        Ok(canon)
    }

    /// `POST /torrents` with a `.torrent`: verify `data` against it and
    /// serve it. Returns once it is served.
    pub fn add_torrent(&self, bytes: &[u8], data: &Path) -> Result<TorrentInfo, RegistryError> {
        let r = self.add_torrent_inner(bytes, data);
        if let Err(e) = &r {
            tracing::warn!(data = %data.display(), "torrent not added: {e}");
        }
        r
    }

    fn add_torrent_inner(&self, bytes: &[u8], data: &Path) -> Result<TorrentInfo, RegistryError> {
        let torrent =
            Torrent::from_bytes(bytes).map_err(|e| RegistryError::BadTorrent(e.to_string()))?;
        let data = self.check_path(data, true)?;
        let keys = keys_of(&torrent);
        self.reserve(&torrent.name, &keys, &data, Origin::Given)?;
        let result = (|| {
            let state = self.cfg.serve.effective_state_dir();
            // Missing or incomplete data is fetched (and served as it
            // verifies), like `serve --torrent T --data PATH`.
            let p = prepare_torrent(
                torrent,
                Path::new(""),
                &data,
                state.as_deref(),
                self.cfg.serve.skip_verify,
                self.cfg.threads,
                0,
                &self.verify_stats,
                false,
            )
            .map_err(|e| RegistryError::Mismatch(format!("{e:#}")))?;
            if p.fetch.is_some() && self.cfg.fetch.is_none() {
                return Err(RegistryError::Mismatch(
                    "the data is missing or incomplete and this server does not fetch".into(),
                ));
            }
            if p.bad_pieces > 0 {
                return Err(RegistryError::Mismatch(format!(
                    "{} of {} pieces failed their hash check; run `ringseed verify`",
                    p.bad_pieces, p.served.torrent.num_pieces
                )));
            }
            Ok(p)
        })();
        self.publish(&keys, result, false)
    }

    /// `POST /torrents` with a data path alone, or a new `serve DIR` entry:
    /// create a hybrid torrent for it (or reuse the one made last time if
    /// its resume record proves the data unchanged) and serve it.
    pub fn add_data(&self, data: &Path, origin: Origin) -> Result<TorrentInfo, RegistryError> {
        let r = self.add_data_inner(data, origin);
        if let Err(e) = &r {
            tracing::warn!(data = %data.display(), "torrent not added: {e}");
        }
        r
    }

    fn add_data_inner(&self, data: &Path, origin: Origin) -> Result<TorrentInfo, RegistryError> {
        let canon = self.check_path(data, false)?;
        // DIR entries keep the path they were found under (renames of the
        // served DIR itself aside, it is the same file).
        let path = match origin {
            Origin::Dir(_) => data.to_path_buf(),
            Origin::Given => canon,
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let pending_key = {
            // Until the info-hash is known, the data path is the key.
            let mut k = [0u8; 20];
            let h = sha1_of(path.as_os_str().as_encoded_bytes());
            k.copy_from_slice(&h);
            k
        };
        let replacing = match &origin {
            Origin::Dir(n) => self
                .dir_entry(n)
                .is_some_and(|(_, s)| s == TorrentState::Serving),
            Origin::Given => false,
        };
        self.reserve(&name, &[pending_key], &path, origin.clone())?;
        let state = match (&origin, &self.cfg.dir_state) {
            (Origin::Dir(_), Some(s)) => s.clone(),
            _ => self.cfg.api_state.clone(),
        };
        let result = prepare_dir_entry(
            &path,
            &state,
            self.cfg.threads,
            0,
            &self.verify_stats,
            &self.cfg.created_trackers,
        )
        .map_err(|e| RegistryError::Unsupported(format!("{e:#}")));
        self.publish(&[pending_key], result, replacing)
    }

    /// Note a torrent being added, or refuse a duplicate.
    fn reserve(
        &self,
        name: &str,
        keys: &[[u8; 20]],
        data: &Path,
        origin: Origin,
    ) -> Result<(), RegistryError> {
        let mut entries = self.entries();
        for e in entries.iter() {
            if e.state != TorrentState::Draining && e.keys.iter().any(|k| keys.contains(k)) {
                return Err(RegistryError::Duplicate(format!(
                    "{name}: already {} as {} (info-hash {})",
                    if e.state == TorrentState::Verifying {
                        "being added"
                    } else {
                        "served"
                    },
                    e.name,
                    hex(&e.keys[0])
                )));
            }
        }
        entries.push(Entry {
            name: name.to_owned(),
            keys: keys.to_vec(),
            state: TorrentState::Verifying,
            served: None,
            data: data.to_path_buf(),
            origin,
            _watch: None,
            _fetch: None,
        });
        drop(entries);
        self.counts.moved(None, Some(TorrentState::Verifying));
        Ok(())
    }

    /// The end of an add: serve the prepared torrent (or drop the
    /// reservation `pending` on error). A replacement is counted when the
    /// old torrent goes, not here.
    fn publish(
        &self,
        pending: &[[u8; 20]],
        prepared: Result<Prepared, RegistryError>,
        replacing: bool,
    ) -> Result<TorrentInfo, RegistryError> {
        let unreserve = |this: &Self| {
            let mut entries = this.entries();
            if let Some(i) = entries
                .iter()
                .position(|e| e.state == TorrentState::Verifying && e.keys == pending)
            {
                entries.remove(i);
                this.counts.moved(Some(TorrentState::Verifying), None);
            }
        };
        let mut p = match prepared {
            Ok(p) => p,
            Err(e) => {
                unreserve(self);
                return Err(e);
            }
        };
        let writer = p.fetch.take();
        let settings = self.cfg.serve.settings_for(&p.served.torrent);
        let served = match self.live.add(p.served.with_settings(settings)) {
            Ok(s) => s,
            Err(e) => {
                unreserve(self);
                return Err(match e {
                    CatalogError::Duplicate { .. } => RegistryError::Duplicate(e.to_string()),
                    other => RegistryError::Internal(other.to_string()),
                });
            }
        };
        let t = &served.torrent;
        let (watch, fetch) = match writer {
            // Its fetch announces it (with `left`) and the files are ours.
            Some(w) => (None, self.start_fetch(&served, w)),
            None => {
                self.announce(t);
                let w = watch(
                    vec![Arc::clone(&served) as Arc<dyn Watched>],
                    self.live.fence(),
                    Arc::clone(&self.data_stats),
                );
                (w, None)
            }
        };
        println!(
            "torrent {name} (added)\n  size      {size} bytes in {files} file(s), {pieces} pieces of {plen} bytes ({src})\n  v1        {v1}\n  v2        {v2}\n  magnet    {magnet}",
            name = t.name,
            size = t.total_size,
            files = t.files.len(),
            pieces = t.num_pieces,
            plen = t.piece_length,
            src = p.source,
            v1 = t.info_hash_v1.map_or("-".into(), |h| h.to_string()),
            v2 = t.info_hash_v2.map_or("-".into(), |h| h.to_string()),
            magnet = self.magnet(t),
        );
        use std::io::Write;
        let _ = std::io::stdout().flush();
        tracing::info!(torrent = %t.name, "added");
        let mut entries = self.entries();
        let i = entries
            .iter()
            .position(|e| e.state == TorrentState::Verifying && e.keys == pending);
        let entry = Entry {
            name: t.name.clone(),
            keys: keys_of(t),
            state: TorrentState::Serving,
            served: Some(Arc::clone(&served)),
            data: i.map_or_else(|| PathBuf::from(&t.name), |i| entries[i].data.clone()),
            origin: i.map_or(Origin::Given, |i| entries[i].origin.clone()),
            _watch: watch,
            _fetch: fetch,
        };
        let info = self.info(&entry);
        match i {
            Some(i) => entries[i] = entry,
            None => entries.push(entry),
        }
        drop(entries);
        self.counts
            .moved(Some(TorrentState::Verifying), Some(TorrentState::Serving));
        if !replacing {
            self.counts.changed(TorrentChange::Added);
        }
        Ok(info)
    }

    /// Starts fetching `served`'s missing pieces (see `crate::fetch`).
    fn start_fetch(
        &self,
        served: &Arc<ServedTorrent>,
        writer: crate::storage::writer::PieceWriter,
    ) -> Option<crate::fetch::Fetch> {
        let mut cfg = self.cfg.fetch.clone()?;
        let mut target = crate::tracker::client::AnnounceTarget::for_torrent(
            &served.torrent,
            &self.cfg.serve.extra_tracker_tiers(),
        );
        for tier in &mut target.tiers {
            tier.retain(|u| Some(u) != self.cfg.public_url.as_ref());
        }
        target.tiers.retain(|t| !t.is_empty());
        cfg.trackers = target.tiers;
        match crate::fetch::Fetch::start(Arc::clone(served), writer, cfg) {
            Ok(f) => {
                self.cfg
                    .fetch_list
                    .add(&served.torrent.name, Arc::clone(f.stats()));
                Some(f)
            }
            Err(e) => {
                tracing::error!(torrent = %served.torrent.name, "cannot start fetching: {e}");
                None
            }
        }
    }

    fn announce(&self, t: &Torrent) {
        if let Some(tr) = self
            .tracker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            tr.add_served(t);
        }
        let mut target = AnnounceTarget::for_torrent(t, &self.cfg.serve.extra_tracker_tiers());
        target
            .tiers
            .iter_mut()
            .for_each(|tier| tier.retain(|u| Some(u) != self.cfg.public_url.as_ref()));
        target.tiers.retain(|tier| !tier.is_empty());
        if !target.tiers.is_empty() {
            if let Some(a) = self
                .announcer
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
            {
                a.add(target);
            }
        }
    }

    fn unannounce(&self, keys: &[[u8; 20]]) {
        if let Some(tr) = self
            .tracker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            for k in keys {
                tr.remove_torrent(k);
            }
        }
        if let Some(a) = self
            .announcer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            a.remove(keys.to_vec());
        }
    }

    /// `DELETE /torrents/{key}`: start draining the torrent; it is gone
    /// (announced `stopped`, files let go, DIR records pruned) once its
    /// peers have closed. Returns its state as of now (`draining`).
    pub fn remove(self: &Arc<Self>, key: &str) -> Result<TorrentInfo, RegistryError> {
        self.remove_inner(key, TorrentChange::Removed)
    }

    /// [`Registry::remove`], counted as `kind`.
    pub fn remove_inner(
        self: &Arc<Self>,
        key: &str,
        kind: TorrentChange,
    ) -> Result<TorrentInfo, RegistryError> {
        let mut entries = self.entries();
        let i = find(&entries, key).ok_or_else(|| RegistryError::NoSuchTorrent(key.to_owned()))?;
        let e = &mut entries[i];
        let served = match (e.state, &e.served) {
            (TorrentState::Serving, Some(s)) => Arc::clone(s),
            (TorrentState::Verifying, _) => {
                return Err(RegistryError::Busy(format!(
                    "{} is still being verified; remove it once it serves",
                    e.name
                )))
            }
            _ => {
                return Err(RegistryError::Busy(format!(
                    "{} is already being removed",
                    e.name
                )))
            }
        };
        e.state = TorrentState::Draining;
        let info = self.info(e);
        drop(entries);
        self.counts
            .moved(Some(TorrentState::Serving), Some(TorrentState::Draining));
        let id = served.id;
        drop(served);
        let this = Arc::clone(self);
        let handle = std::thread::Builder::new()
            .name("torrent-drain".into())
            .spawn(move || this.finish_removal(id, kind))
            .map_err(|e| RegistryError::Internal(format!("cannot start a thread: {e}")))?;
        let mut drains = self.drains.lock().unwrap_or_else(|e| e.into_inner());
        drains.retain(|h| !h.is_finished());
        drains.push(handle);
        Ok(info)
    }

    fn finish_removal(&self, id: crate::wire::TorrentId, kind: TorrentChange) {
        let result = self.live.remove(id, self.cfg.drain_grace);
        let mut entries = self.entries();
        let Some(i) = entries.iter().position(|e| {
            e.state == TorrentState::Draining && e.served.as_ref().is_some_and(|s| s.id == id)
        }) else {
            return;
        };
        let entry = entries.remove(i);
        let keys = entry.keys.clone();
        // Another entry with the same name (a replacement) keeps the records.
        let replaced = entries
            .iter()
            .any(|e| e.name == entry.name && e.origin == entry.origin);
        drop(entries);
        self.unannounce(&keys);
        self.counts.moved(Some(TorrentState::Draining), None);
        self.counts.changed(kind);
        if let (Origin::Dir(name), Some(state)) = (&entry.origin, &self.cfg.dir_state) {
            // A replacement wrote its own NAME.torrent: keep that one.
            prune_records(
                state,
                (!replaced).then_some(name.as_str()),
                entry.served.as_deref().map(|s| &s.torrent),
            );
        }
        match result {
            Ok((_, report)) => tracing::info!(
                torrent = %entry.name,
                peers = report.peers_at_start,
                left = report.peers_left,
                elapsed_ms = report.elapsed.as_millis() as u64,
                "removed"
            ),
            Err(e) => tracing::warn!(torrent = %entry.name, "removal: {e}"),
        }
        // Dropping the entry drops its data watch and our hold on the files.
        drop(entry);
    }

    /// The serving torrent of DIR entry `name`, if any.
    pub fn dir_entry(&self, name: &str) -> Option<(String, TorrentState)> {
        let entries = self.entries();
        entries
            .iter()
            .filter(|e| e.origin == Origin::Dir(name.to_owned()))
            .find(|e| e.state != TorrentState::Draining)
            .map(|e| (e.keys.first().map(|k| hex(k)).unwrap_or_default(), e.state))
    }

    /// Every DIR entry name served or being added.
    pub fn dir_names(&self) -> Vec<String> {
        self.entries()
            .iter()
            .filter(|e| e.state != TorrentState::Draining)
            .filter_map(|e| match &e.origin {
                Origin::Dir(n) => Some(n.clone()),
                Origin::Given => None,
            })
            .collect()
    }

    pub fn counts(&self) -> &Arc<TorrentCounts> {
        &self.counts
    }

    /// Send `stopped` for everything and stop the tracker (at exit;
    /// removals still draining are left to the shards' shutdown).
    pub fn shutdown(&self, announce_deadline: Duration) {
        self.drains
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        if let Some(a) = self
            .announcer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            a.shutdown(announce_deadline);
        }
        if let Some(t) = self
            .tracker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            t.shutdown();
        }
        self.entries().clear();
    }
}

fn sha1_of(bytes: &[u8]) -> [u8; 20] {
    use sha1::Digest;
    sha1::Sha1::digest(bytes).into()
}

fn find(entries: &[Entry], key: &str) -> Option<usize> {
    let k = key.to_ascii_lowercase();
    entries
        .iter()
        .position(|e| {
            e.state != TorrentState::Draining
                && e.served.as_ref().is_some_and(|s| {
                    s.torrent.info_hash_v1.is_some_and(|h| h.to_string() == k)
                        || s.torrent.info_hash_v2.is_some_and(|h| h.to_string() == k)
                })
        })
        .or_else(|| {
            entries.iter().position(|e| {
                e.served.as_ref().is_some_and(|s| {
                    s.torrent.info_hash_v1.is_some_and(|h| h.to_string() == k)
                        || s.torrent.info_hash_v2.is_some_and(|h| h.to_string() == k)
                })
            })
        })
        .or_else(|| {
            entries
                .iter()
                .position(|e| e.keys.iter().any(|h| hex(h) == k))
        })
}

/// Refuse what cannot be served: FIFOs, sockets, devices, symlink loops,
/// trees deeper than [`MAX_DEPTH`].
fn check_tree(path: &Path, depth: usize) -> Result<(), RegistryError> {
    if depth > MAX_DEPTH {
        return Err(RegistryError::Unsupported(format!(
            "{}: directories nested deeper than {MAX_DEPTH} levels",
            path.display()
        )));
    }
    let meta = std::fs::metadata(path).map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) {
            RegistryError::Unsupported(format!("{}: symlink loop", path.display()))
        } else {
            RegistryError::BadRequest(format!("{}: {e}", path.display()))
        }
    })?;
    if meta.is_file() {
        return Ok(());
    }
    if !meta.is_dir() {
        return Err(RegistryError::Unsupported(format!(
            "{} is not a regular file or directory (FIFO, socket or device)",
            path.display()
        )));
    }
    let rd = std::fs::read_dir(path)
        .map_err(|e| RegistryError::BadRequest(format!("{}: {e}", path.display())))?;
    for entry in rd.flatten() {
        check_tree(&entry.path(), depth + 1)?;
    }
    Ok(())
}

/// Remove `DIR/.ringseed/NAME.torrent` (if `name`) and the torrent's
/// resume record.
fn prune_records(state: &Path, name: Option<&str>, torrent: Option<&Torrent>) {
    if let Some(name) = name {
        let _ = std::fs::remove_file(state.join(format!("{name}.torrent")));
    }
    if let Some(t) = torrent {
        let _ = std::fs::remove_file(state.join(ResumeRecord::file_name(t)));
    }
}
