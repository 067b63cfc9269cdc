//! BEP 52 merkle trees: SHA-256 over 16 KiB leaf blocks.
//!
//! A file's tree has one leaf per 16 KiB block (the last block hashed as it
//! is, short), padded to a power of two with leaves whose hash is 32 zero
//! bytes (not SHA-256 of zeros). The *piece layer* is the layer whose nodes
//! cover `piece_length` bytes; the last piece's subtree is padded with zero
//! leaves too, and the piece layer itself is padded up to a power of two with
//! the root of an all-zero-leaf piece subtree. A file of at most one piece
//! has no piece layer: its `pieces root` is the root of its own leaf tree
//! padded to the next power of two.
//!
//! Pure functions over hashes; reading data is the caller's business.

use sha2::{Digest, Sha256};

/// Bytes per merkle leaf.
pub const LEAF_SIZE: u64 = 16 * 1024;

/// A SHA-256 node hash.
pub type Hash256 = [u8; 32];

/// The hash of a padding leaf.
pub const ZERO_LEAF: Hash256 = [0u8; 32];

/// SHA-256 of `left || right`.
pub fn hash_pair(left: &Hash256, right: &Hash256) -> Hash256 {
    let mut h = Sha256::new();
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// SHA-256 of one leaf block (at most 16 KiB; the last block of a file is
/// hashed short).
pub fn hash_leaf(block: &[u8]) -> Hash256 {
    Sha256::digest(block).into()
}

/// The root of a subtree of `2^height` padding leaves (`height` 0 is a leaf).
pub fn pad_hash(height: u32) -> Hash256 {
    let mut h = ZERO_LEAF;
    for _ in 0..height {
        h = hash_pair(&h, &h);
    }
    h
}

/// The root over `leaves` padded with [`ZERO_LEAF`] up to `pad_to` leaves
/// (rounded up to a power of two, and at least `leaves.len()`). An empty
/// input gives [`ZERO_LEAF`].
pub fn merkle_root(leaves: &[Hash256], pad_to: usize) -> Hash256 {
    let mut buf = leaves.to_vec();
    root_in_place(&mut buf, pad_to, 0)
}

/// Reduce `nodes` (a layer whose missing right-hand nodes are the root of a
/// zero subtree of height `pad_height`) to its root, padding the layer to
/// `pad_to` nodes rounded up to a power of two. Uses `nodes` as scratch.
pub fn root_in_place(nodes: &mut Vec<Hash256>, pad_to: usize, pad_height: u32) -> Hash256 {
    let width = pad_to.max(nodes.len()).max(1).next_power_of_two();
    let mut pad = pad_hash(pad_height);
    if nodes.is_empty() {
        nodes.push(pad);
    }
    let mut width = width;
    while width > 1 {
        let n = nodes.len();
        let pairs = n.div_ceil(2);
        for i in 0..pairs {
            let left = nodes[2 * i];
            let right = if 2 * i + 1 < n { nodes[2 * i + 1] } else { pad };
            nodes[i] = hash_pair(&left, &right);
        }
        nodes.truncate(pairs);
        pad = hash_pair(&pad, &pad);
        width /= 2;
    }
    nodes[0]
}

/// Leaves per piece for `piece_length` (a power of two >= 16 KiB).
pub fn leaves_per_piece(piece_length: u64) -> u64 {
    (piece_length / LEAF_SIZE).max(1)
}

/// The `pieces root` of a file larger than one piece from its piece layer.
/// `None` if the layer does not have one hash per piece of `file_len`
/// bytes, or if the file is not larger than one piece (no piece layer).
pub fn piece_layer_root(layer: &[Hash256], file_len: u64, piece_length: u64) -> Option<Hash256> {
    if piece_length < LEAF_SIZE || !piece_length.is_power_of_two() || file_len <= piece_length {
        return None;
    }
    let pieces = file_len.div_ceil(piece_length);
    if layer.len() as u64 != pieces {
        return None;
    }
    let height = leaves_per_piece(piece_length).trailing_zeros();
    let mut buf = layer.to_vec();
    Some(root_in_place(&mut buf, layer.len(), height))
}

/// The hash a piece of a file is checked against: for a file larger than
/// one piece, the piece's subtree root (leaves padded to a whole piece);
/// for a file of at most one piece, the file's `pieces root` (leaves padded
/// to the next power of two). `leaves` are the piece's leaf hashes and is
/// used as scratch.
pub fn piece_hash_from_leaves(
    leaves: &mut Vec<Hash256>,
    file_len: u64,
    piece_length: u64,
) -> Hash256 {
    let pad_to = if file_len > piece_length {
        leaves_per_piece(piece_length) as usize
    } else {
        leaves.len()
    };
    root_in_place(leaves, pad_to, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_trees_by_hand() {
        let a = hash_leaf(b"a");
        let b = hash_leaf(b"b");
        let c = hash_leaf(b"c");
        assert_eq!(merkle_root(&[a], 1), a);
        assert_eq!(merkle_root(&[a, b], 2), hash_pair(&a, &b));
        let expect = hash_pair(&hash_pair(&a, &b), &hash_pair(&c, &ZERO_LEAF));
        assert_eq!(merkle_root(&[a, b, c], 0), expect);
        // Padding to 8 adds a zero subtree of height 2 on the right.
        let expect8 = hash_pair(&expect, &pad_hash(2));
        assert_eq!(merkle_root(&[a, b, c], 8), expect8);
        assert_eq!(merkle_root(&[a, b, c], 5), expect8);
    }

    #[test]
    fn piece_layer_root_pads_with_zero_piece_subtrees() {
        // piece = 2 leaves (32 KiB), file of 3 pieces (last one short).
        let p = 32 * 1024;
        let l: Vec<Hash256> = (0u8..3).map(|i| hash_leaf(&[i])).collect();
        let root = piece_layer_root(&l, 2 * p + 1, p).unwrap();
        let expect = hash_pair(&hash_pair(&l[0], &l[1]), &hash_pair(&l[2], &pad_hash(1)));
        assert_eq!(root, expect);
        assert!(piece_layer_root(&l, p, p).is_none());
        assert!(piece_layer_root(&l[..2], 2 * p + 1, p).is_none());
    }
}
