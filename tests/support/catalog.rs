//! An in-memory torrent catalogue for driving `PeerState` in tests.

use ringseed::wire::{Bitfield, TorrentCatalog, TorrentId, TorrentKey, TorrentView, V2Layers};

pub struct MemTorrent {
    pub v1: Option<[u8; 20]>,
    /// Truncated v2 info-hash.
    pub v2: Option<[u8; 20]>,
    pub piece_length: u32,
    pub total_len: u64,
    pub have: Bitfield,
    /// The info dictionary served by BEP 9 (`None`: no ut_metadata).
    pub info_bytes: Option<Vec<u8>>,
    /// BEP 52 piece layers served to hash requests.
    pub v2_layers: Option<V2Layers>,
    /// The piece space, for fake seeders.
    pub data: Vec<u8>,
}

impl MemTorrent {
    /// A v1 torrent of `total_len` bytes of deterministic data, all pieces verified.
    pub fn v1(info_hash: [u8; 20], piece_length: u32, total_len: u64) -> Self {
        let n = num_pieces(piece_length, total_len);
        MemTorrent {
            v1: Some(info_hash),
            v2: None,
            piece_length,
            total_len,
            have: Bitfield::full(n),
            info_bytes: None,
            v2_layers: None,
            data: (0..total_len).map(|i| (i * 31 + i / 7) as u8).collect(),
        }
    }

    pub fn num_pieces(&self) -> u32 {
        num_pieces(self.piece_length, self.total_len)
    }
}

pub fn num_pieces(piece_length: u32, total_len: u64) -> u32 {
    total_len.div_ceil(u64::from(piece_length)) as u32
}

#[derive(Default)]
pub struct MemCatalog {
    pub torrents: Vec<Option<MemTorrent>>,
}

impl MemCatalog {
    pub fn add(&mut self, t: MemTorrent) -> TorrentId {
        self.torrents.push(Some(t));
        TorrentId(self.torrents.len() as u32 - 1)
    }

    fn view(&self, i: usize) -> Option<TorrentView<'_>> {
        let t = self.torrents.get(i)?.as_ref()?;
        let n = t.num_pieces();
        let last = t.total_len - u64::from(t.piece_length) * u64::from(n.saturating_sub(1));
        Some(TorrentView {
            id: TorrentId(i as u32),
            num_pieces: n,
            piece_length: t.piece_length,
            last_piece_len: last as u32,
            have: &t.have,
            has_v2: t.v2.is_some(),
            info_bytes: t.info_bytes.as_deref(),
            v2: t.v2_layers.as_ref(),
            live: None,
        })
    }
}

impl TorrentCatalog for MemCatalog {
    fn lookup(&self, key: TorrentKey<'_>) -> Option<TorrentView<'_>> {
        match key {
            TorrentKey::Id(id) => self.view(id.0 as usize),
            TorrentKey::InfoHash(h) => {
                let i = self.torrents.iter().position(|t| {
                    t.as_ref()
                        .is_some_and(|t| t.v1.as_ref() == Some(h) || t.v2.as_ref() == Some(h))
                })?;
                self.view(i)
            }
        }
    }
}
