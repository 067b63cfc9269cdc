//! BEP 52 hash requests against `V2Layers`: validation reasons, and replies
//! checked against a tree computed independently from the piece hashes.

use ringseed::metainfo::merkle::{hash_leaf, hash_pair, pad_hash, piece_layer_root, Hash256};
use ringseed::wire::codec::{decode, Decoded, HashRequest, Message};
use ringseed::wire::hashes::{V2LayersError, MAX_HASH_REQUEST_LENGTH};
use ringseed::wire::{HashRejectReason, V2Layers};

const PIECE: u64 = 64 * 1024; // piece layer = 2

fn layer(n: u32) -> Vec<Hash256> {
    (0..n)
        .map(|i| hash_leaf(&(i * 3 + 1).to_be_bytes()))
        .collect()
}

/// The padded piece layer and every layer above it, built naively.
fn full_tree(l: &[Hash256]) -> Vec<Vec<Hash256>> {
    let width = l.len().next_power_of_two();
    let mut cur: Vec<Hash256> = (0..width)
        .map(|i| l.get(i).copied().unwrap_or(pad_hash(2)))
        .collect();
    let mut out = vec![cur.clone()];
    while cur.len() > 1 {
        cur = cur.chunks(2).map(|p| hash_pair(&p[0], &p[1])).collect();
        out.push(cur.clone());
    }
    out
}

fn setup(n: u32) -> (V2Layers, [u8; 32], Vec<Hash256>) {
    let l = layer(n);
    let len = PIECE * u64::from(n) - 123;
    let root = piece_layer_root(&l, len, PIECE).unwrap();
    let v = V2Layers::new(PIECE, [(3, root, len, &l[..])]).unwrap();
    (v, root, l)
}

fn reply(v: &V2Layers, r: &HashRequest) -> Result<Vec<Hash256>, HashRejectReason> {
    let valid = v.validate(r)?;
    let mut out = Vec::new();
    v.encode_hashes(&valid, &mut out);
    assert_eq!(out.len(), valid.encoded_len());
    let Ok(Decoded::Message {
        msg: Message::Hashes { request, hashes },
        consumed,
    }) = decode(&out, 1 << 20)
    else {
        panic!("not a hashes message");
    };
    assert_eq!((request, consumed), (*r, out.len()));
    Ok(hashes
        .chunks(32)
        .map(|c| <[u8; 32]>::try_from(c).unwrap())
        .collect())
}

#[test]
fn replies_match_an_independent_tree() {
    for n in [2u32, 3, 5, 8, 100, 513, 1100] {
        let (v, root, l) = setup(n);
        assert_eq!(v.piece_layer(), 2);
        assert_eq!(v.file_index(&root), Some(3));
        let tree = full_tree(&l);
        let height = (tree.len() - 1) as u32;
        assert_eq!(tree[height as usize][0], root);
        let width = 1u32 << height;
        let mut length = 2;
        while length <= width.min(MAX_HASH_REQUEST_LENGTH) {
            for index in (0..width).step_by(length as usize) {
                for proof_layers in 0..height {
                    let r = HashRequest {
                        pieces_root: root,
                        base_layer: 2,
                        index,
                        length,
                        proof_layers,
                    };
                    let got = reply(&v, &r).unwrap();
                    let (base, uncles) = got.split_at(length as usize);
                    assert_eq!(base, &tree[0][index as usize..(index + length) as usize]);
                    // Uncles: siblings of the ancestors from height
                    // log2(length) up to proof_layers.
                    let expect: Vec<Hash256> = (length.trailing_zeros()..=proof_layers)
                        .map(|h| tree[h as usize][((index >> h) ^ 1) as usize])
                        .collect();
                    assert_eq!(uncles, &expect[..], "n={n} {r:?}");
                }
            }
            length *= 2;
        }
    }
}

#[test]
fn what_libtorrent_asks_for_a_magnet_join() {
    // libtorrent: chunks of 512 piece hashes; for the last chunk
    // min(512, next_pow2(remaining)); proof layers up to the known root.
    let (v, root, l) = setup(1100);
    let tree = full_tree(&l);
    for (index, length, uncles) in [(0u32, 512u32, 2usize), (512, 512, 2), (1024, 128, 4)] {
        let r = HashRequest {
            pieces_root: root,
            base_layer: 2,
            index,
            length,
            proof_layers: 10,
        };
        let got = reply(&v, &r).unwrap();
        assert_eq!(got.len(), length as usize + uncles);
        assert_eq!(
            got[length as usize + uncles - 1],
            tree[10][((index >> 10) ^ 1) as usize]
        );
    }
    // A file of 512k+1 pieces: the lone last hash, with a proof from height 0.
    let (v, root, l) = setup(513);
    let tree = full_tree(&l);
    let got = reply(
        &v,
        &HashRequest {
            pieces_root: root,
            base_layer: 2,
            index: 512,
            length: 1,
            proof_layers: 9,
        },
    )
    .unwrap();
    assert_eq!(got.len(), 1 + 10);
    assert_eq!(got[0], l[512]);
    assert_eq!(got[1], tree[0][513]);
}

#[test]
fn invalid_requests_are_rejected_with_a_reason() {
    let (v, root, _) = setup(5); // padded width 8, height 3
    let ok = HashRequest {
        pieces_root: root,
        base_layer: 2,
        index: 0,
        length: 2,
        proof_layers: 2,
    };
    assert!(v.validate(&ok).is_ok());
    let cases = [
        (
            HashRequest {
                pieces_root: [0; 32],
                ..ok
            },
            HashRejectReason::UnknownRoot,
        ),
        (
            HashRequest {
                base_layer: 0,
                ..ok
            },
            HashRejectReason::BaseLayer,
        ),
        (
            HashRequest {
                base_layer: 3,
                ..ok
            },
            HashRejectReason::BaseLayer,
        ),
        (HashRequest { length: 0, ..ok }, HashRejectReason::Length),
        (HashRequest { length: 3, ..ok }, HashRejectReason::Length),
        (HashRequest { length: 1, ..ok }, HashRejectReason::Length),
        (HashRequest { length: 1024, ..ok }, HashRejectReason::Length),
        (
            HashRequest {
                length: u32::MAX,
                ..ok
            },
            HashRejectReason::Length,
        ),
        (HashRequest { index: 1, ..ok }, HashRejectReason::Index),
        (HashRequest { index: 8, ..ok }, HashRejectReason::Index),
        (
            HashRequest {
                index: u32::MAX - 1,
                ..ok
            },
            HashRejectReason::Index,
        ),
        (HashRequest { length: 16, ..ok }, HashRejectReason::Index),
        (
            HashRequest {
                proof_layers: 3,
                ..ok
            },
            HashRejectReason::ProofLayers,
        ),
        (
            HashRequest {
                proof_layers: u32::MAX,
                ..ok
            },
            HashRejectReason::ProofLayers,
        ),
    ];
    for (r, want) in cases {
        assert_eq!(v.validate(&r).err(), Some(want), "{r:?}");
    }
    // The last real piece alone is allowed; index u32::MAX does not overflow.
    assert!(v
        .validate(&HashRequest {
            index: 4,
            length: 1,
            proof_layers: 0,
            ..ok
        })
        .is_ok());
    assert!(v
        .validate(&HashRequest {
            index: u32::MAX,
            length: 1,
            ..ok
        })
        .is_err());
    // A file of one piece has no layer to serve.
    let single = [5u8; 32];
    let v = V2Layers::new(PIECE, [(0, single, PIECE, &[][..])]).unwrap();
    assert_eq!(
        v.validate(&HashRequest {
            pieces_root: single,
            ..ok
        })
        .err(),
        Some(HashRejectReason::SinglePiece)
    );
}

#[test]
fn inconsistent_layers_are_refused() {
    let l = layer(4);
    let len = 4 * PIECE;
    let root = piece_layer_root(&l, len, PIECE).unwrap();
    assert_eq!(
        V2Layers::new(PIECE, [(0, root, len, &l[..3])]).err(),
        Some(V2LayersError::LayerLength {
            file_index: 0,
            got: 3,
            want: 4
        })
    );
    assert_eq!(
        V2Layers::new(PIECE, [(1, [0; 32], len, &l[..])]).err(),
        Some(V2LayersError::RootMismatch { file_index: 1 })
    );
    assert_eq!(
        V2Layers::new(1000, [(0, root, len, &l[..])]).err(),
        Some(V2LayersError::BadPieceLength(1000))
    );
}
