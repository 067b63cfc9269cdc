//! The torrents a server seeds, as the shards see them: read-only, shared by
//! `Arc`, built off the shards (after verification) and never locked on the
//! hot path. The one thing that changes at run time is each torrent's
//! [`Availability`]: the data watcher withdraws pieces whose files changed on
//! disk and restores them after re-verification; the shards read it with one
//! relaxed atomic load per request and per block.
//!
//! Each torrent also carries its [`TorrentSettings`] (super-seeding, its own
//! upload cap), fixed at start-up from the config.

use std::collections::HashMap;
use std::sync::Arc;

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
}

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
        })
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

/// All torrents, looked up by v1 info-hash or truncated v2 info-hash.
#[derive(Default)]
pub struct Catalog {
    torrents: Vec<Arc<ServedTorrent>>,
    by_hash: HashMap<[u8; 20], u32>,
    /// MSE: HASH('req2', info-hash) for every info-hash we answer to.
    skeys: SkeyIndex,
    /// Shards' in-flight sends vs. withdrawn pieces (see `storage::fence`).
    fence: Arc<SendFence>,
}

impl Catalog {
    /// Build from torrents whose ids are their positions in `torrents`.
    pub fn new(torrents: Vec<ServedTorrent>) -> Self {
        let mut by_hash = HashMap::new();
        let mut list = Vec::with_capacity(torrents.len());
        for (i, mut t) in torrents.into_iter().enumerate() {
            let id = i as u32;
            t.id = TorrentId(id);
            if let Some(h) = t.torrent.info_hash_v1 {
                by_hash.insert(h.0, id);
            }
            if let Some(h) = t.torrent.info_hash_v2 {
                by_hash.insert(h.truncated(), id);
            }
            list.push(Arc::new(t));
        }
        let skeys = by_hash.keys().copied().collect();
        Self {
            torrents: list,
            by_hash,
            skeys,
            fence: Arc::new(SendFence::new()),
        }
    }

    pub fn get(&self, id: TorrentId) -> Option<&Arc<ServedTorrent>> {
        self.torrents.get(id.0 as usize)
    }

    /// The MSE SKEY index (v1 and truncated v2 info-hashes).
    pub fn skeys(&self) -> &SkeyIndex {
        &self.skeys
    }

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
            .map(|t| Arc::clone(t) as Arc<dyn Watched>)
            .collect();
        match DataWatch::start(list, Some(Arc::clone(&self.fence)), stats) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(
                    "cannot watch the served files for changes ({e}); files changed on disk will not be noticed until a restart: raise fs.inotify.max_user_watches / max_user_instances"
                );
                None
            }
        }
    }
}

impl TorrentCatalog for Catalog {
    fn lookup(&self, key: TorrentKey<'_>) -> Option<TorrentView<'_>> {
        let id = match key {
            TorrentKey::InfoHash(h) => *self.by_hash.get(h)?,
            TorrentKey::Id(id) => id.0,
        };
        self.torrents.get(id as usize).map(|t| t.view())
    }

    fn super_seed(&self, id: TorrentId) -> bool {
        self.get(id).is_some_and(|t| t.settings.super_seed)
    }
}
