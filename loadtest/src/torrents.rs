//! The torrents a run downloads: what a leecher needs to speak to a seeder
//! (handshake info-hash, piece shape) and to check what it received.
//!
//! Verification: v1 and hybrid pieces are checked with SHA-1 against
//! `info.pieces`; v2-only pieces against the piece layer (or the file's
//! `pieces root` for files of at most one piece), hashing 16 KiB leaves of
//! the real file bytes in the piece (v2 pads files to piece boundaries with
//! bytes that are not part of any leaf).

use std::path::Path;

use anyhow::{bail, Context};
use ringseed::metainfo::merkle::{hash_leaf, piece_hash_from_leaves, Hash256, LEAF_SIZE};
use ringseed::metainfo::Torrent;
use sha1::{Digest, Sha1};

/// One torrent, ready for leechers.
#[derive(Debug)]
pub struct LoadTorrent {
    pub name: String,
    /// What goes into our handshake: the v1 info-hash, or the truncated v2
    /// info-hash for v2-only torrents.
    pub handshake_hash: [u8; 20],
    pub v2_only: bool,
    /// A hybrid torrent's truncated v2 info-hash: a v2-capable seeder (e.g.
    /// libtorrent) answers our v1 handshake with it when we set the upgrade
    /// bit (BEP 52).
    pub alt_handshake_hash: Option<[u8; 20]>,
    pub num_pieces: u32,
    pub piece_length: u32,
    pub piece_space_len: u64,
    pub torrent: Torrent,
}

impl LoadTorrent {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
        let torrent = Torrent::from_bytes(&bytes)
            .with_context(|| format!("parse torrent {}", path.display()))?;
        Self::from_torrent(torrent)
    }

    pub fn from_torrent(torrent: Torrent) -> anyhow::Result<Self> {
        let (handshake_hash, v2_only) = match (torrent.info_hash_v1, torrent.info_hash_v2) {
            (Some(v1), _) => (v1.0, false),
            (None, Some(v2)) => (v2.truncated(), true),
            (None, None) => bail!("torrent {} has no info-hash", torrent.name),
        };
        let piece_length = u32::try_from(torrent.piece_length).with_context(|| {
            format!(
                "torrent {}: piece length {} does not fit the wire protocol",
                torrent.name, torrent.piece_length
            )
        })?;
        if torrent.num_pieces == 0 {
            bail!(
                "torrent {} has no pieces (empty content): nothing to download",
                torrent.name
            );
        }
        Ok(LoadTorrent {
            name: torrent.name.clone(),
            handshake_hash,
            v2_only,
            alt_handshake_hash: torrent
                .info_hash_v2
                .filter(|_| !v2_only)
                .map(|h| h.truncated()),
            num_pieces: torrent.num_pieces,
            piece_length,
            piece_space_len: torrent.piece_space_len,
            torrent,
        })
    }

    /// Length of piece `index` (the last one may be short); 0 out of range.
    pub fn piece_len(&self, index: u32) -> u32 {
        if index >= self.num_pieces {
            return 0;
        }
        // At most piece_length, which fits in u32.
        self.torrent.piece_len(index) as u32
    }

    /// Checks a complete piece. `false` also when the torrent has no hash
    /// to check this piece against (that cannot be verified, so it is not).
    pub fn verify_piece(&self, index: u32, data: &[u8]) -> bool {
        if let Some(pieces) = &self.torrent.v1_pieces {
            let Some(expected) = pieces.get(index as usize) else {
                return false;
            };
            let got: [u8; 20] = Sha1::digest(data).into();
            return &got == expected;
        }
        self.verify_v2(index, data)
    }

    fn verify_v2(&self, index: u32, data: &[u8]) -> bool {
        let plen = self.torrent.piece_length;
        let start = u64::from(index) * plen;
        // v2: every file starts on a piece boundary, so one file per piece.
        let Some((fi, file)) = self
            .torrent
            .files
            .iter()
            .enumerate()
            .find(|(_, f)| f.length > 0 && f.offset <= start && start < f.offset + f.length)
        else {
            return false;
        };
        let real = ((file.offset + file.length).min(start + plen) - start) as usize;
        let Some(bytes) = data.get(..real) else {
            return false;
        };
        let mut leaves: Vec<Hash256> = bytes.chunks(LEAF_SIZE as usize).map(hash_leaf).collect();
        let got = piece_hash_from_leaves(&mut leaves, file.length, plen);
        let expected = if file.length <= plen {
            file.pieces_root
        } else {
            let first = file.offset / plen;
            self.torrent
                .v2_piece_layers
                .as_ref()
                .and_then(|l| l.get(fi))
                .and_then(|layer| layer.get((u64::from(index) - first) as usize))
                .copied()
        };
        expected == Some(got)
    }
}
