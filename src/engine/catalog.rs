//! The torrents a server seeds, as the shards see them: read-only, shared by
//! `Arc`, built off the shards (after verification) and never locked on the
//! hot path. The one thing that changes at run time is each torrent's
//! [`Availability`]: the data watcher withdraws pieces whose files changed on
//! disk and restores them after re-verification; the shards read it with one
//! relaxed atomic load per request and per block.
//!
//! Each torrent also carries its [`TorrentSettings`] (super-seeding, its own
//! upload cap), fixed when it is added.
//!
//! # Live changes
//!
//! A [`Catalog`] is one immutable version. [`LiveCatalog`] holds the current
//! version and publishes new ones (a torrent added, a torrent draining, a
//! torrent gone): it builds the next version off the shards, swaps the `Arc`
//! under a mutex and bumps a version counter. A shard reads the counter (one
//! atomic load) at the top of its loop and takes the mutex only when it
//! moved, to clone the new `Arc`; nothing on the hot path locks.
//!
//! Removing a torrent ([`LiveCatalog::remove`]), in order:
//! 1. the next version has it *draining*: no longer found by info-hash (no
//!    new peers), still found by id (its connected peers keep working);
//! 2. the fence ([`crate::storage::fence`]) is raised and waited for: once it
//!    has passed, every shard has taken that version (shards take the new
//!    catalogue before observing the fence) and started draining the
//!    torrent's connections (see `engine::shard::drain`);
//! 3. wait until no connection holds the torrent: a connection lets go of
//!    its `Arc<ServedTorrent>` only once nothing of it is in flight (sends,
//!    SEND_ZC notifications, disk reads), so its mmaps are never unmapped
//!    under the kernel;
//! 4. the next version forgets it; the last `Arc` dropped unmaps the files.
//!
//! Ids are handed out in increasing order and never reused, so a stale id
//! (a connection, a shard's per-torrent state) can never name another
//! torrent. Per-shard tables indexed by id grow with the ids ever issued
//! (one `Option` per id), which is fine for the thousands of changes a
//! server sees between restarts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::swarm::ratelimit::TokenPool;
use crate::swarm::superseed::SharedSpread;
use std::time::{Duration, Instant};

use crate::metainfo::Torrent;
use crate::storage::availability::Availability;
use crate::storage::fence::SendFence;
use crate::storage::watch::{DataChangeStats, DataWatch, Watched};
use crate::storage::{Content, PieceLayout};
use crate::swarm::ratelimit::Rate;
use crate::wire::mse::SkeyIndex;
use crate::wire::{Bitfield, TorrentCatalog, TorrentId, TorrentKey, TorrentView, V2Layers};

/// How one torrent is served, beyond what every torrent gets. Set from the
/// config (`super_seed`, `[per_torrent."KEY"]`) before the shards start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TorrentSettings {
    /// Super-seed (BEP 16): advertise no pieces, offer them one at a time
    /// per peer (see `swarm::superseed`). Default false.
    pub super_seed: bool,
    /// This torrent's own upload cap for the whole box (split across
    /// shards), on top of the box-wide `--upload-rate-limit`. Default
    /// unlimited.
    pub upload_rate_limit: Rate,
}

/// One torrent being seeded: metadata, open content, the piece layout and
/// the pieces that passed verification (only those are advertised/served,
/// and only while `availability` says they are live).
pub struct ServedTorrent {
    pub id: TorrentId,
    pub torrent: Torrent,
    pub content: Content,
    pub layout: PieceLayout,
    pub have: Bitfield,
    /// `have` minus the pieces withdrawn because their data changed on disk.
    pub availability: Availability,
    /// Super-seeding and the torrent's own upload cap (default: neither).
    pub settings: TorrentSettings,
    piece_length: u32,
    last_piece_len: u32,
    /// BEP 52 piece layers by pieces root, with the trees above them, for
    /// hash requests from peers that joined by magnet link. `None` for v1
    /// torrents (and if the layers were unknown or inconsistent).
    v2_layers: Option<V2Layers>,
    /// Connections attached to this torrent, on every shard (a connection
    /// counts until its slot is freed, i.e. nothing of it is in flight).
    peers: AtomicU32,
    /// Piece payload bytes sent, on every shard (added per send batch).
    uploaded: AtomicU64,
    /// Taken out: no new peers; its connections are being closed.
    draining: AtomicBool,
    /// How long a draining torrent's peers keep being served (ms).
    drain_grace_ms: AtomicU64,
    /// Its upload cap's token pool, one for every shard (made on first use).
    egress_pool: OnceLock<Arc<TokenPool>>,
    /// Its super-seed spread, one for every shard (made on first use).
    spread: OnceLock<Arc<SharedSpread>>,
    /// Made by [`Self::fetching`]: its missing pieces are being downloaded
    /// (and it is not watched for data changes: the writes are ours).
    fetched: bool,
    /// Listen addresses of peers that connected to the shards for it while
    /// it is fetched (from their extension handshake's `p`): the fetch
    /// dials them too. Bounded by [`MAX_FETCH_HINTS`].
    fetch_hints: std::sync::Mutex<Vec<std::net::SocketAddr>>,
}

/// Peer addresses queued for a fetch at most (more are dropped: the fetch
/// also learns peers from its trackers).
pub const MAX_FETCH_HINTS: usize = 256;

impl ServedTorrent {
    /// `have`: the verified pieces (from `storage::verify` or a resume record).
    pub fn new(
        id: u32,
        torrent: Torrent,
        content: Content,
        have: Bitfield,
    ) -> Result<Self, crate::storage::LayoutError> {
        let layout = PieceLayout::new(&torrent)?;
        let piece_length = u32::try_from(torrent.piece_length).unwrap_or(u32::MAX);
        let last_piece_len = if torrent.num_pieces == 0 {
            0
        } else {
            u32::try_from(torrent.piece_len(torrent.num_pieces - 1)).unwrap_or(u32::MAX)
        };
        // The metainfo parser already checked every layer against its root,
        // so an error here is a bug; serve without hashes rather than fail.
        let v2_layers = V2Layers::from_torrent(&torrent).unwrap_or_else(|e| {
            tracing::warn!(torrent = %torrent.name, error = %e, "not serving v2 hash requests");
            None
        });
        let availability = Availability::new(&have, torrent.files.len());
        Ok(Self {
            id: TorrentId(id),
            torrent,
            content,
            layout,
            have,
            availability,
            settings: TorrentSettings::default(),
            piece_length,
            last_piece_len,
            v2_layers,
            peers: AtomicU32::new(0),
            uploaded: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            drain_grace_ms: AtomicU64::new(0),
            egress_pool: OnceLock::new(),
            spread: OnceLock::new(),
            fetched: false,
            fetch_hints: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// A torrent whose data is being fetched (see `crate::fetch`): every
    /// piece counts as ours-to-be (`have` is full), and only `verified` is
    /// live; the fetcher makes each piece live
    /// ([`Availability::restore`]) once it is written, and connected peers
    /// are told with `have` (the withheld-pieces path of `PeerState`).
    pub fn fetching(
        id: u32,
        torrent: Torrent,
        content: Content,
        verified: &Bitfield,
    ) -> Result<Self, crate::storage::LayoutError> {
        let n = torrent.num_pieces;
        let mut t = Self::new(id, torrent, content, Bitfield::full(n))?;
        for i in (0..n).filter(|&i| !verified.get(i)) {
            t.availability.withdraw(i..i + 1);
        }
        t.fetched = true;
        Ok(t)
    }

    /// Whether it was made by [`Self::fetching`] (complete or not).
    pub fn is_fetched(&self) -> bool {
        self.fetched
    }

    /// A peer that connected to a shard listens at `addr`: worth dialling
    /// while pieces are missing (once per connection; bounded).
    pub fn hint_fetch_peer(&self, addr: std::net::SocketAddr) {
        if !self.fetched || self.availability.withdrawn() == 0 {
            return;
        }
        if let Ok(mut h) = self.fetch_hints.lock() {
            if h.len() < MAX_FETCH_HINTS && !h.contains(&addr) {
                h.push(addr);
            }
        }
    }

    /// The hinted addresses, taken.
    pub fn take_fetch_hints(&self) -> Vec<std::net::SocketAddr> {
        self.fetch_hints
            .lock()
            .map(|mut h| std::mem::take(&mut *h))
            .unwrap_or_default()
    }

    /// Pieces that may be served now.
    pub fn live_pieces(&self) -> u32 {
        self.availability.pieces().count()
    }

    /// The token pool of this torrent's own upload cap, shared by every
    /// shard; `None` when it has no cap of its own.
    pub fn egress_pool(&self, now: Instant) -> Option<Arc<TokenPool>> {
        let rate = self.settings.upload_rate_limit;
        if rate.is_unlimited() {
            return None;
        }
        let pool = self
            .egress_pool
            .get_or_init(|| crate::swarm::ratelimit::pool_for(now, rate).expect("capped"));
        Some(Arc::clone(pool))
    }

    /// The super-seed spread of this torrent (per-piece copies and offers
    /// counted over every shard's peers).
    pub fn spread(&self) -> Arc<SharedSpread> {
        let n = self.have.len();
        Arc::clone(self.spread.get_or_init(|| Arc::new(SharedSpread::new(n))))
    }

    /// Connections attached to this torrent right now (all shards).
    pub fn peers(&self) -> u32 {
        self.peers.load(Ordering::Relaxed)
    }

    /// A connection attached (`true`) or let go (`false`).
    pub fn count_peer(&self, attached: bool) {
        if attached {
            self.peers.fetch_add(1, Ordering::Relaxed);
        } else {
            self.peers.fetch_sub(1, Ordering::Release);
        }
    }

    /// Piece payload bytes sent so far.
    pub fn uploaded(&self) -> u64 {
        self.uploaded.load(Ordering::Relaxed)
    }

    /// A send batch carried `payload` bytes of this torrent.
    #[inline]
    pub fn add_uploaded(&self, payload: u64) {
        self.uploaded.fetch_add(payload, Ordering::Relaxed);
    }

    /// Whether the torrent is being taken out (see [`LiveCatalog::remove`]).
    #[inline]
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// How long its peers keep being served once draining.
    pub fn drain_grace(&self) -> Duration {
        Duration::from_millis(self.drain_grace_ms.load(Ordering::Relaxed))
    }

    /// The v1 info-hash, or the truncated v2 one (the key peers use).
    pub fn key(&self) -> [u8; 20] {
        self.torrent
            .info_hash_v1
            .map(|h| h.0)
            .or_else(|| self.torrent.info_hash_v2.map(|h| h.truncated()))
            .unwrap_or_default()
    }

    /// The same torrent served with `settings`.
    pub fn with_settings(mut self, settings: TorrentSettings) -> Self {
        self.settings = settings;
        self
    }

    pub fn view(&self) -> TorrentView<'_> {
        TorrentView {
            id: self.id,
            num_pieces: self.torrent.num_pieces,
            piece_length: self.piece_length,
            last_piece_len: self.last_piece_len,
            have: &self.have,
            has_v2: self.torrent.info_hash_v2.is_some(),
            // Like libtorrent, no ut_metadata for private torrents.
            info_bytes: (!self.torrent.private && !self.torrent.info_bytes.is_empty())
                .then_some(self.torrent.info_bytes.as_slice()),
            v2: self.v2_layers.as_ref(),
            live: Some(&self.availability),
        }
    }

    /// Whether `piece` may be served right now (one relaxed load).
    #[inline]
    pub fn is_live(&self, piece: u32) -> bool {
        self.availability.is_live(piece)
    }
}

impl Watched for ServedTorrent {
    fn torrent(&self) -> &Torrent {
        &self.torrent
    }
    fn content(&self) -> &Content {
        &self.content
    }
    fn layout(&self) -> &PieceLayout {
        &self.layout
    }
    fn have(&self) -> &Bitfield {
        &self.have
    }
    fn availability(&self) -> &Availability {
        &self.availability
    }
}

/// All torrents of one catalogue version, looked up by v1 info-hash or
/// truncated v2 info-hash (serving ones only) or by id (draining ones too).
#[derive(Default)]
pub struct Catalog {
    /// Serving and draining torrents, by increasing id.
    torrents: Vec<Arc<ServedTorrent>>,
    /// Position in `torrents` of id `base + i`.
    slots: Vec<Option<u32>>,
    base: u32,
    /// The next id to hand out (ids are never reused).
    next_id: u32,
    by_hash: HashMap<[u8; 20], u32>,
    /// MSE: HASH('req2', info-hash) for every info-hash we answer to.
    skeys: SkeyIndex,
    /// Shards' in-flight sends vs. withdrawn pieces (see `storage::fence`);
    /// the same fence in every version.
    fence: Arc<SendFence>,
}

/// Why a catalogue change was refused.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{name}: info-hash {hash} is already served (as {other}); remove it first")]
    Duplicate {
        name: String,
        hash: String,
        other: String,
    },
    #[error("no torrent with id {0} is served")]
    NoSuchTorrent(u32),
    #[error("torrent id space exhausted; restart the server")]
    IdsExhausted,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Catalog {
    /// Build from torrents whose ids are their positions in `torrents`.
    pub fn new(torrents: Vec<ServedTorrent>) -> Self {
        let list = torrents
            .into_iter()
            .enumerate()
            .map(|(i, mut t)| {
                t.id = TorrentId(i as u32);
                Arc::new(t)
            })
            .collect::<Vec<_>>();
        let next_id = list.len() as u32;
        Self::build(list, next_id, Arc::new(SendFence::new()))
    }

    /// A version holding `torrents` (ids increasing, each below `next_id`).
    fn build(torrents: Vec<Arc<ServedTorrent>>, next_id: u32, fence: Arc<SendFence>) -> Self {
        let base = torrents.first().map_or(next_id, |t| t.id.0);
        let mut slots = vec![None; (next_id - base) as usize];
        let mut by_hash = HashMap::new();
        for (pos, t) in torrents.iter().enumerate() {
            slots[(t.id.0 - base) as usize] = Some(pos as u32);
            if t.is_draining() {
                continue;
            }
            if let Some(h) = t.torrent.info_hash_v1 {
                by_hash.insert(h.0, t.id.0);
            }
            if let Some(h) = t.torrent.info_hash_v2 {
                by_hash.insert(h.truncated(), t.id.0);
            }
        }
        let skeys = by_hash.keys().copied().collect();
        Self {
            torrents,
            slots,
            base,
            next_id,
            by_hash,
            skeys,
            fence,
        }
    }

    /// A serving or draining torrent.
    #[inline]
    pub fn get(&self, id: TorrentId) -> Option<&Arc<ServedTorrent>> {
        let i = id.0.checked_sub(self.base)?;
        let pos = (*self.slots.get(i as usize)?)?;
        self.torrents.get(pos as usize)
    }

    /// The serving torrent peers reach by `info_hash` (v1 or truncated v2).
    pub fn find(&self, info_hash: &[u8; 20]) -> Option<&Arc<ServedTorrent>> {
        self.get(TorrentId(*self.by_hash.get(info_hash)?))
    }

    /// Ids handed out so far are all below this.
    pub fn id_bound(&self) -> u32 {
        self.next_id
    }

    /// The MSE SKEY index (v1 and truncated v2 info-hashes).
    pub fn skeys(&self) -> &SkeyIndex {
        &self.skeys
    }

    /// Serving and draining torrents, by increasing id.
    pub fn torrents(&self) -> &[Arc<ServedTorrent>] {
        &self.torrents
    }

    /// The fence every shard serving this catalog registers with.
    pub fn fence(&self) -> &Arc<SendFence> {
        &self.fence
    }

    /// Start watching every served file for changes on disk (see
    /// `storage::watch`). On failure (no inotify, watch limit) the server
    /// keeps serving without it, and says so.
    pub fn watch_data(&self, stats: Arc<DataChangeStats>) -> Option<DataWatch> {
        let list: Vec<Arc<dyn Watched>> = self
            .torrents
            .iter()
            .filter(|t| !t.is_fetched())
            .map(|t| Arc::clone(t) as Arc<dyn Watched>)
            .collect();
        watch(list, &self.fence, stats)
    }
}

/// Watch `list` for data changes, or say why not.
pub fn watch(
    list: Vec<Arc<dyn Watched>>,
    fence: &Arc<SendFence>,
    stats: Arc<DataChangeStats>,
) -> Option<DataWatch> {
    match DataWatch::start(list, Some(Arc::clone(fence)), stats) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(
                "cannot watch the served files for changes ({e}); files changed on disk will not be noticed until a restart: raise fs.inotify.max_user_watches / max_user_instances"
            );
            None
        }
    }
}

/// How a removal went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// Connections the torrent had when it was taken out.
    pub peers_at_start: u32,
    /// Connections still holding it when we stopped waiting (0: drained;
    /// otherwise its files stay mapped until they close).
    pub peers_left: u32,
    pub elapsed: Duration,
}

/// The current catalogue version, and the only way to change it.
pub struct LiveCatalog {
    version: AtomicU64,
    current: Mutex<Arc<Catalog>>,
    /// Serialises writers (building a version from the latest one).
    writer: Mutex<()>,
    fence: Arc<SendFence>,
}

/// How long a removal waits for shards to see it and for connections past
/// their grace to close before giving up waiting (never unmapping early).
const CLOSE_WAIT: Duration = Duration::from_secs(10);

impl LiveCatalog {
    pub fn new(catalog: Catalog) -> Self {
        Self::from_arc(Arc::new(catalog))
    }

    /// Start from an existing version (its fence stays the fence).
    pub fn from_arc(catalog: Arc<Catalog>) -> Self {
        Self {
            version: AtomicU64::new(1),
            fence: Arc::clone(&catalog.fence),
            current: Mutex::new(catalog),
            writer: Mutex::new(()),
        }
    }

    /// The version counter: a shard re-[`LiveCatalog::load`]s when it moved.
    #[inline]
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The current version (takes the mutex briefly).
    pub fn load(&self) -> Arc<Catalog> {
        Arc::clone(&self.current.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The current version and its number, consistently.
    pub fn load_versioned(&self) -> (u64, Arc<Catalog>) {
        let cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        (self.version.load(Ordering::Acquire), Arc::clone(&cur))
    }

    pub fn fence(&self) -> &Arc<SendFence> {
        &self.fence
    }

    fn publish(&self, next: Catalog) {
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        *cur = Arc::new(next);
        self.version.fetch_add(1, Ordering::Release);
    }

    /// Serve `t` under a fresh id. Refused if one of its info-hashes is
    /// already served.
    pub fn add(&self, mut t: ServedTorrent) -> Result<Arc<ServedTorrent>, CatalogError> {
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let cur = self.load();
        for h in [
            t.torrent.info_hash_v1.map(|h| h.0),
            t.torrent.info_hash_v2.map(|h| h.truncated()),
        ]
        .into_iter()
        .flatten()
        {
            if let Some(other) = cur.find(&h) {
                return Err(CatalogError::Duplicate {
                    name: t.torrent.name.clone(),
                    hash: hex(&h),
                    other: other.torrent.name.clone(),
                });
            }
        }
        let id = cur.next_id;
        let next_id = id.checked_add(1).ok_or(CatalogError::IdsExhausted)?;
        t.id = TorrentId(id);
        let t = Arc::new(t);
        let mut list = cur.torrents.clone();
        list.push(Arc::clone(&t));
        self.publish(Catalog::build(list, next_id, Arc::clone(&self.fence)));
        Ok(t)
    }

    /// Steps 1-2 of a removal: publish the torrent as draining (no new
    /// peers; its peers are served `grace` longer, then closed once their
    /// sends are done). Returns the torrent.
    pub fn start_drain(
        &self,
        id: TorrentId,
        grace: Duration,
    ) -> Result<Arc<ServedTorrent>, CatalogError> {
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let cur = self.load();
        let t = Arc::clone(cur.get(id).ok_or(CatalogError::NoSuchTorrent(id.0))?);
        t.drain_grace_ms
            .store(grace.as_millis() as u64, Ordering::Relaxed);
        t.draining.store(true, Ordering::Release);
        self.publish(Catalog::build(
            cur.torrents.clone(),
            cur.next_id,
            Arc::clone(&self.fence),
        ));
        Ok(t)
    }

    /// Step 4: forget a torrent (no one can reach it by id any more).
    fn forget(&self, id: TorrentId) {
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let cur = self.load();
        let list: Vec<Arc<ServedTorrent>> = cur
            .torrents
            .iter()
            .filter(|t| t.id != id)
            .cloned()
            .collect();
        self.publish(Catalog::build(list, cur.next_id, Arc::clone(&self.fence)));
    }

    /// Take torrent `id` out (blocking; run it off the shards): drain it
    /// as the module doc says, then forget it. Its files are unmapped when
    /// the caller and the last connection let go of the returned `Arc`.
    pub fn remove(
        &self,
        id: TorrentId,
        grace: Duration,
    ) -> Result<(Arc<ServedTorrent>, DrainReport), CatalogError> {
        let started = Instant::now();
        let t = self.start_drain(id, grace)?;
        let peers_at_start = t.peers();
        let epoch = self.fence.raise();
        if !self.fence.wait(epoch, CLOSE_WAIT) {
            tracing::warn!(torrent = %t.torrent.name, "a shard did not take the new catalogue in time");
        }
        let deadline = Instant::now() + grace + CLOSE_WAIT;
        while t.peers() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let peers_left = t.peers();
        if peers_left > 0 {
            tracing::warn!(
                torrent = %t.torrent.name,
                peers = peers_left,
                "connections of a removed torrent are still closing; its files stay mapped until they have"
            );
        }
        // No connection holds it and no shard can attach a new one: forget
        // it. Shards still on an older version hold the `Arc` only through
        // that version, which they drop when they take the next one.
        self.forget(id);
        Ok((
            t,
            DrainReport {
                peers_at_start,
                peers_left,
                elapsed: started.elapsed(),
            },
        ))
    }
}

impl TorrentCatalog for Catalog {
    fn lookup(&self, key: TorrentKey<'_>) -> Option<TorrentView<'_>> {
        let t = match key {
            TorrentKey::InfoHash(h) => self.find(h)?,
            TorrentKey::Id(id) => self.get(id)?,
        };
        Some(t.view())
    }

    fn super_seed(&self, id: TorrentId) -> bool {
        self.get(id).is_some_and(|t| t.settings.super_seed)
    }
}
