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

/// Every layer of a merkle tree from `base` up to the root, unpadded:
/// `layers[0]` is `base`, each next layer holds `ceil(n / 2)` nodes and the
/// last holds the root alone. The nodes that would pad layer `k` to a power
/// of two are not stored: they are [`pad_hash`]`(pad_height + k)` (see
/// [`layer_node`]). `pad_height` is the height of `base` above the leaves
/// (for a piece layer, `log2(piece_length / 16 KiB)`). An empty `base` is
/// treated as a single padding node.
///
/// Costs one hash per stored node above `base` (about `base.len()`), so a
/// server builds it once per file, not per request.
pub fn tree_layers(base: Vec<Hash256>, pad_height: u32) -> Vec<Vec<Hash256>> {
    let mut layers = vec![base];
    if layers[0].is_empty() {
        layers[0].push(pad_hash(pad_height));
    }
    let mut pad = pad_hash(pad_height);
    while let Some(below) = layers.last().filter(|l| l.len() > 1) {
        let next: Vec<Hash256> = below
            .chunks(2)
            .map(|pair| match pair {
                [l, r] => hash_pair(l, r),
                [l] => hash_pair(l, &pad),
                _ => pad,
            })
            .collect();
        pad = hash_pair(&pad, &pad);
        layers.push(next);
    }
    layers
}

/// Node `index` of layer `level` of a tree from [`tree_layers`]: a stored
/// node, or the padding node of that layer. `None` when `level` is above
/// the root or `index` is outside the padded layer.
pub fn layer_node(
    layers: &[Vec<Hash256>],
    pad_height: u32,
    level: usize,
    index: u64,
) -> Option<Hash256> {
    if level >= layers.len() || index >= 1u64 << (layers.len() - 1 - level) {
        return None;
    }
    let stored = usize::try_from(index)
        .ok()
        .and_then(|i| layers[level].get(i));
    Some(match stored {
        Some(h) => *h,
        None => pad_hash(pad_height + level as u32),
    })
}

/// The BEP 52 `hashes` payload for `length` nodes of layer 0 of `layers`
/// starting at `index`, followed by the uncle hashes: for each height `h`
/// (above layer 0) from `log2(length)` up to `proof_layers`, the sibling of
/// the ancestor at height `h` of the requested range. The first
/// `log2(length) - 1` proof layers are computable from the hashes
/// themselves and are omitted, but counted (BEP 52; libtorrent's
/// `merkle_tree::get_hashes` and `hash_picker::add_hashes`).
///
/// The caller validates the request first: `length` a power of two,
/// `index` a multiple of it and `index + length` within the padded layer,
/// `proof_layers` below the root. `None` if it did not.
pub fn subtree_with_proof(
    layers: &[Vec<Hash256>],
    pad_height: u32,
    index: u64,
    length: u64,
    proof_layers: u32,
    out: &mut Vec<Hash256>,
) -> Option<()> {
    if !length.is_power_of_two() || index % length != 0 {
        return None;
    }
    let height = layers.len() - 1;
    if proof_layers as usize >= height {
        return None;
    }
    let end = index.checked_add(length)?;
    if end > 1u64 << height {
        return None;
    }
    let pad = pad_hash(pad_height);
    for i in index..end {
        let stored = usize::try_from(i).ok().and_then(|i| layers[0].get(i));
        out.push(stored.copied().unwrap_or(pad));
    }
    for h in length.trailing_zeros()..=proof_layers {
        let ancestor = index >> h;
        out.push(layer_node(layers, pad_height, h as usize, ancestor ^ 1)?);
    }
    Some(())
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

    /// Node (level, i) of the padded tree over `base`, computed directly
    /// from the base layer (independent of `tree_layers`).
    fn direct_node(base: &[Hash256], pad_height: u32, level: u32, i: u64) -> Hash256 {
        let span = 1usize << level;
        let start = (i as usize) * span;
        let mut nodes: Vec<Hash256> = base.iter().skip(start).take(span).copied().collect();
        root_in_place(&mut nodes, span, pad_height)
    }

    /// What a BEP 52 receiver (libtorrent's `add_hashes`) does: demand
    /// exactly `max(0, proof_layers - log2(length) + 1)` uncles, rebuild the
    /// subtree root from the hashes, climb with the uncles and compare with
    /// the node it knows at the top (the root for a full proof).
    fn receiver_accepts(
        got: &[Hash256],
        base: &[Hash256],
        pad_height: u32,
        index: u64,
        length: u64,
        proof_layers: u32,
    ) -> bool {
        let log_len = length.trailing_zeros();
        let uncles = (proof_layers + 1).saturating_sub(log_len) as usize;
        if got.len() != length as usize + uncles {
            return false;
        }
        let mut sub = got[..length as usize].to_vec();
        let mut node = root_in_place(&mut sub, length as usize, pad_height);
        let mut pos = index >> log_len;
        for u in &got[length as usize..] {
            node = if pos & 1 == 0 {
                hash_pair(&node, u)
            } else {
                hash_pair(u, &node)
            };
            pos >>= 1;
        }
        let top = log_len.max(proof_layers + 1);
        node == direct_node(base, pad_height, top, index >> top)
    }

    #[test]
    fn tree_layers_match_direct_nodes() {
        for n in [1usize, 2, 3, 5, 8, 13, 33] {
            let base: Vec<Hash256> = (0..n).map(|i| hash_leaf(&[i as u8, 7])).collect();
            let layers = tree_layers(base.clone(), 2);
            let height = layers.len() - 1;
            assert_eq!(1usize << height, n.next_power_of_two());
            assert_eq!(layers[height], vec![root_in_place(&mut base.clone(), n, 2)]);
            for level in 0..=height {
                for i in 0..(1u64 << (height - level)) {
                    assert_eq!(
                        layer_node(&layers, 2, level, i),
                        Some(direct_node(&base, 2, level as u32, i)),
                        "n={n} level={level} i={i}"
                    );
                }
                assert_eq!(layer_node(&layers, 2, level, 1 << (height - level)), None);
            }
            assert_eq!(layer_node(&layers, 2, height + 1, 0), None);
        }
    }

    #[test]
    fn proofs_verify_against_an_independent_tree() {
        for n in [2usize, 3, 4, 7, 9, 16, 37, 64] {
            let pad_height = 3;
            let base: Vec<Hash256> = (0..n).map(|i| hash_leaf(&[i as u8, 1])).collect();
            let root = root_in_place(&mut base.clone(), n, pad_height);
            let layers = tree_layers(base.clone(), pad_height);
            let height = (layers.len() - 1) as u32;
            let width = 1u64 << height;
            let mut length = 1;
            while length <= width {
                for index in (0..width).step_by(length as usize) {
                    for proof_layers in 0..height + 2 {
                        let mut out = Vec::new();
                        let r = subtree_with_proof(
                            &layers,
                            pad_height,
                            index,
                            length,
                            proof_layers,
                            &mut out,
                        );
                        if proof_layers >= height {
                            assert!(r.is_none());
                            continue;
                        }
                        assert!(r.is_some());
                        for (k, h) in out.iter().take(length as usize).enumerate() {
                            assert_eq!(*h, direct_node(&base, pad_height, 0, index + k as u64));
                        }
                        assert!(
                            receiver_accepts(&out, &base, pad_height, index, length, proof_layers),
                            "n={n} index={index} length={length} proof={proof_layers}"
                        );
                        if proof_layers + 1 == height {
                            // A full proof climbs to the root itself.
                            assert_eq!(direct_node(&base, pad_height, height, 0), root);
                        }
                    }
                }
                length *= 2;
            }
            let mut out = Vec::new();
            assert!(subtree_with_proof(&layers, pad_height, 1, 2, 0, &mut out).is_none());
            assert!(subtree_with_proof(&layers, pad_height, 0, 3, 0, &mut out).is_none());
            assert!(subtree_with_proof(&layers, pad_height, width, 1, 0, &mut out).is_none());
            assert!(subtree_with_proof(&layers, pad_height, 0, 2 * width, 0, &mut out).is_none());
        }
    }
}
