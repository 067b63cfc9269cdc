//! BEP 52 merkle trees: SHA-256 over 16 KiB blocks, padded with zero hashes
//! to a power of two.

use sha2::{Digest, Sha256};

/// Leaf size of v2 merkle trees.
pub const BLOCK_SIZE: u64 = 16 * 1024;

/// SHA-256 of the concatenation of two hashes.
pub fn hash_pair(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// Root of a subtree of `2^levels` all-zero leaf hashes.
pub fn pad_hash(levels: u32) -> [u8; 32] {
    let mut h = [0u8; 32];
    for _ in 0..levels {
        h = hash_pair(&h, &h);
    }
    h
}

/// Root of a tree whose bottom layer is `layer` followed by `pad` hashes up
/// to the next power of two (at least one node). `pad` is the hash of a
/// missing node on that layer (zeros for leaves, [`pad_hash`] higher up).
pub fn root_of_layer(layer: &[[u8; 32]], pad: [u8; 32]) -> [u8; 32] {
    let mut current: Vec<[u8; 32]> = layer.to_vec();
    let mut pad = pad;
    if current.is_empty() {
        return pad;
    }
    while current.len() > 1 {
        if current.len() % 2 == 1 {
            current.push(pad);
        }
        current = current
            .chunks_exact(2)
            .map(|pair| hash_pair(&pair[0], &pair[1]))
            .collect();
        pad = hash_pair(&pad, &pad);
    }
    current[0]
}

/// The `pieces root` a piece layer hashes up to, for a file of more than one
/// piece with pieces of `piece_length` bytes (a power of two >= 16 KiB).
pub fn root_from_piece_layer(layer: &[[u8; 32]], piece_length: u64) -> [u8; 32] {
    let levels = (piece_length / BLOCK_SIZE).trailing_zeros();
    root_of_layer(layer, pad_hash(levels))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_is_consistent() {
        let a = [1u8; 32];
        let b = [2u8; 32];
        let c = [3u8; 32];
        let zero = [0u8; 32];
        assert_eq!(
            root_of_layer(&[a, b, c], zero),
            hash_pair(&hash_pair(&a, &b), &hash_pair(&c, &zero))
        );
        assert_eq!(root_of_layer(&[a], zero), a);
        // piece layer with 32 KiB pieces: pad node is hash(0, 0).
        let p = pad_hash(1);
        assert_eq!(
            root_from_piece_layer(&[a, b, c], 32 * 1024),
            hash_pair(&hash_pair(&a, &b), &hash_pair(&c, &p))
        );
    }
}
