//! BEP 52 `hash request` / `hashes` / `hash reject`, served from the piece
//! layers we hold: [`V2Layers`] is built once per torrent (off the hot path)
//! and answers each request with a bounded amount of copying and no hashing.
//!
//! What we serve: hashes of the **piece layer** (`base layer` =
//! `log2(piece_length / 16 KiB)`, the only layer libtorrent asks for and the
//! one a client that joined by magnet link lacks), `length` a power of two
//! of at most [`MAX_HASH_REQUEST_LENGTH`], with uncle hashes up to the
//! requested `proof layers`. What we do not: leaf (block) layer requests,
//! which would need the file data hashed on demand; files of a single piece
//! (they have no piece layer; their root is the piece hash). Both get a
//! `hash reject`, as does anything malformed. Sans-IO, no allocation per
//! request beyond the reply itself.

use std::collections::HashMap;

use thiserror::Error;

use super::codec::{hashes_header, HashRequest};
use crate::metainfo::merkle::{
    leaves_per_piece, subtree_with_proof, tree_layers, Hash256, LEAF_SIZE,
};
use crate::metainfo::Torrent;

/// Largest `length` we serve (libtorrent requests at most 512 piece hashes
/// at a time; BEP 52: "SHOULD NOT be greater than 512").
pub const MAX_HASH_REQUEST_LENGTH: u32 = 512;

/// One file's merkle tree from its piece layer up to its root.
#[derive(Debug, Clone)]
struct FileTree {
    file_index: u32,
    num_pieces: u32,
    /// `None` for a file of a single piece (no piece layer to serve).
    /// Otherwise `layers[0]` is the piece layer, the last is the root; see
    /// [`tree_layers`].
    layers: Option<Vec<Vec<Hash256>>>,
}

/// The v2 piece layers of one torrent, by `pieces root`, with the tree
/// above each piece layer precomputed (about twice the piece layer's size).
#[derive(Debug, Clone)]
pub struct V2Layers {
    /// `log2(piece_length / 16 KiB)`: the height of the piece layer.
    piece_layer: u32,
    files: HashMap<[u8; 32], FileTree>,
}

/// Why [`V2Layers`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum V2LayersError {
    #[error("piece length {0} is not a power of two of at least 16 KiB, as v2 requires")]
    BadPieceLength(u64),
    #[error("file {file_index}: its piece layer has {got} hashes for {want} pieces")]
    LayerLength {
        file_index: u32,
        got: usize,
        want: u64,
    },
    #[error("file {file_index}: its piece layer does not hash up to its pieces root")]
    RootMismatch { file_index: u32 },
}

/// Why a hash request was answered with `hash reject`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Error)]
pub enum HashRejectReason {
    #[error("no v2 piece layers for this torrent")]
    NoLayers,
    #[error("pieces root names no file of this torrent")]
    UnknownRoot,
    #[error("file has a single piece and so no piece layer")]
    SinglePiece,
    #[error("base layer is not the piece layer")]
    BaseLayer,
    #[error("length is not a power of two in 2..=512 (1 only for the last piece)")]
    Length,
    #[error("index is not a multiple of length or runs past the layer")]
    Index,
    #[error("proof layers reach the root or beyond")]
    ProofLayers,
}

impl HashRejectReason {
    pub const COUNT: usize = 7;
    pub const ALL: [HashRejectReason; Self::COUNT] = [
        HashRejectReason::NoLayers,
        HashRejectReason::UnknownRoot,
        HashRejectReason::SinglePiece,
        HashRejectReason::BaseLayer,
        HashRejectReason::Length,
        HashRejectReason::Index,
        HashRejectReason::ProofLayers,
    ];

    /// Stable metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            HashRejectReason::NoLayers => "no_layers",
            HashRejectReason::UnknownRoot => "unknown_root",
            HashRejectReason::SinglePiece => "single_piece",
            HashRejectReason::BaseLayer => "base_layer",
            HashRejectReason::Length => "length",
            HashRejectReason::Index => "index",
            HashRejectReason::ProofLayers => "proof_layers",
        }
    }
}

/// A request that passed [`V2Layers::validate`].
#[derive(Debug, Clone, Copy)]
pub struct ValidHashRequest<'a> {
    layers: &'a [Vec<Hash256>],
    request: HashRequest,
    /// Hashes in the reply: `length` plus the uncles.
    num_hashes: usize,
}

impl ValidHashRequest<'_> {
    /// Bytes of the complete `hashes` message.
    pub fn encoded_len(&self) -> usize {
        hashes_header(&self.request, 0).len() + 32 * self.num_hashes
    }
}

impl V2Layers {
    /// `files`: `(file index, pieces root, file length, piece layer)` for
    /// every non-empty file; the piece layer is empty for files of at most
    /// one piece. Every layer is checked against its root.
    pub fn new<'l>(
        piece_length: u64,
        files: impl IntoIterator<Item = (u32, [u8; 32], u64, &'l [Hash256])>,
    ) -> Result<Self, V2LayersError> {
        if piece_length < LEAF_SIZE || !piece_length.is_power_of_two() {
            return Err(V2LayersError::BadPieceLength(piece_length));
        }
        let piece_layer = leaves_per_piece(piece_length).trailing_zeros();
        let mut map = HashMap::new();
        for (file_index, root, len, layer) in files {
            let want = len.div_ceil(piece_length);
            let layers = if len <= piece_length {
                None
            } else {
                if layer.len() as u64 != want {
                    return Err(V2LayersError::LayerLength {
                        file_index,
                        got: layer.len(),
                        want,
                    });
                }
                let layers = tree_layers(layer.to_vec(), piece_layer);
                if layers.last().and_then(|l| l.first()) != Some(&root) {
                    return Err(V2LayersError::RootMismatch { file_index });
                }
                Some(layers)
            };
            map.insert(
                root,
                FileTree {
                    file_index,
                    num_pieces: u32::try_from(want).unwrap_or(u32::MAX),
                    layers,
                },
            );
        }
        Ok(V2Layers {
            piece_layer,
            files: map,
        })
    }

    /// From a validated torrent: `Ok(None)` when it has no v2 part or its
    /// piece layers are unknown (it came from a magnet link).
    pub fn from_torrent(t: &Torrent) -> Result<Option<Self>, V2LayersError> {
        if t.info_hash_v2.is_none() {
            return Ok(None);
        }
        let Some(layers) = t.v2_piece_layers.as_ref() else {
            return Ok(None);
        };
        let files = t.files.iter().enumerate().filter_map(|(i, f)| {
            let root = f.pieces_root?;
            let layer = layers.get(i).map(Vec::as_slice).unwrap_or_default();
            Some((i as u32, root, f.length, layer))
        });
        Self::new(t.piece_length, files).map(Some)
    }

    /// The `base layer` of piece-layer requests.
    pub fn piece_layer(&self) -> u32 {
        self.piece_layer
    }

    /// The index (in the torrent's `files`) of the file with this root.
    pub fn file_index(&self, pieces_root: &[u8; 32]) -> Option<u32> {
        self.files.get(pieces_root).map(|f| f.file_index)
    }

    /// Checks a request as BEP 52 and libtorrent's `validate_hash_request`
    /// do, restricted to what we serve (see the module docs).
    pub fn validate(&self, r: &HashRequest) -> Result<ValidHashRequest<'_>, HashRejectReason> {
        let file = self
            .files
            .get(&r.pieces_root)
            .ok_or(HashRejectReason::UnknownRoot)?;
        let layers = file
            .layers
            .as_deref()
            .ok_or(HashRejectReason::SinglePiece)?;
        if r.base_layer != self.piece_layer {
            return Err(HashRejectReason::BaseLayer);
        }
        let height = (layers.len() - 1) as u32;
        let width = 1u64 << height;
        let (index, length) = (u64::from(r.index), u64::from(r.length));
        // BEP 52: at least two unless truncated by the end of the layer;
        // libtorrent asks for exactly one hash for the last 512-chunk of a
        // file of 512k+1 pieces.
        let truncated = length == 1 && index + 1 == u64::from(file.num_pieces);
        if !length.is_power_of_two()
            || r.length > MAX_HASH_REQUEST_LENGTH
            || (length < 2 && !truncated)
        {
            return Err(HashRejectReason::Length);
        }
        if index % length != 0 || index + length > width {
            return Err(HashRejectReason::Index);
        }
        if r.proof_layers >= height {
            return Err(HashRejectReason::ProofLayers);
        }
        let uncles = (r.proof_layers + 1).saturating_sub(length.trailing_zeros());
        Ok(ValidHashRequest {
            layers,
            request: *r,
            num_hashes: r.length as usize + uncles as usize,
        })
    }

    /// Appends the complete `hashes` message for a validated request.
    pub fn encode_hashes(&self, v: &ValidHashRequest<'_>, out: &mut Vec<u8>) {
        let r = &v.request;
        let mut hashes = Vec::with_capacity(v.num_hashes);
        let ok = subtree_with_proof(
            v.layers,
            self.piece_layer,
            u64::from(r.index),
            u64::from(r.length),
            r.proof_layers,
            &mut hashes,
        );
        debug_assert!(ok.is_some() && hashes.len() == v.num_hashes);
        out.reserve(v.encoded_len());
        out.extend_from_slice(&hashes_header(r, 32 * hashes.len()));
        for h in &hashes {
            out.extend_from_slice(h);
        }
    }
}
