//! RFC 6962/9162 Merkle tree: the published test vectors (the ones in
//! transparency-dev/merkle's `testonly/constants.go` and
//! `proof/verify_test.go`), and proptests over random trees.

use proptest::prelude::*;
use ringseed::ledger::merkle::{
    consistency_proof, empty_root, inclusion_proof, leaf_hash, root, verify_consistency,
    verify_inclusion, Frontier, Hash,
};

fn h(s: &str) -> Hash {
    let v: Vec<u8> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect();
    v.try_into().unwrap()
}

fn leaf_inputs() -> Vec<Vec<u8>> {
    [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
    .iter()
    .map(|s| {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    })
    .collect()
}

const ROOTS: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

/// (leaf index, tree size, proof)
fn inclusion_vectors() -> Vec<(u64, u64, Vec<Hash>)> {
    vec![
        (0, 1, vec![]),
        (
            0,
            8,
            vec![
                h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
                h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
            ],
        ),
        (
            5,
            8,
            vec![
                h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
                h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
                h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
            ],
        ),
        (
            2,
            3,
            vec![h(
                "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            )],
        ),
        (
            1,
            5,
            vec![
                h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
                h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            ],
        ),
    ]
}

/// (old size, new size, proof)
fn consistency_vectors() -> Vec<(u64, u64, Vec<Hash>)> {
    vec![
        (1, 1, vec![]),
        (
            1,
            8,
            vec![
                h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
                h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
            ],
        ),
        (
            6,
            8,
            vec![
                h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
                h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
                h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
            ],
        ),
        (
            2,
            5,
            vec![
                h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            ],
        ),
        (
            6,
            7,
            vec![
                h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
                h("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
                h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
            ],
        ),
    ]
}

fn vector_leaves() -> Vec<Hash> {
    leaf_inputs().iter().map(|d| leaf_hash(d)).collect()
}

#[test]
fn tree_hashes_match_the_published_vectors() {
    assert_eq!(
        empty_root(),
        h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    );
    let leaves = vector_leaves();
    assert_eq!(
        leaves[0],
        h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")
    );
    assert_eq!(
        leaves[7],
        h("46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1")
    );
    assert_eq!(root(&[]), empty_root());
    for (n, want) in ROOTS.iter().enumerate() {
        assert_eq!(
            root(&leaves[..=n]),
            h(want),
            "root of the first {} leaves",
            n + 1
        );
    }
}

#[test]
fn inclusion_proofs_match_the_published_vectors() {
    let leaves = vector_leaves();
    for (index, size, want) in inclusion_vectors() {
        let got = inclusion_proof(&leaves[..size as usize], index).unwrap();
        assert_eq!(got, want, "inclusion proof of leaf {index} in tree {size}");
        let r = h(ROOTS[size as usize - 1]);
        verify_inclusion(&leaves[index as usize], index, size, &want, &r).unwrap();
        // The corruptions verify_test.go tries: all must fail.
        let bad_root = h("abacaba000000000000000000000000000000000000000000060061e00123456");
        assert!(verify_inclusion(&leaves[index as usize], index, size, &want, &bad_root).is_err());
        assert!(verify_inclusion(&leaves[index as usize], index + 1, size, &want, &r).is_err());
        assert!(verify_inclusion(&leaves[index as usize], index, size * 2, &want, &r).is_err());
        assert!(verify_inclusion(&leaf_hash(b"WrongLeaf"), index, size, &want, &r).is_err());
        let mut longer = want.clone();
        longer.push(r);
        assert!(verify_inclusion(&leaves[index as usize], index, size, &longer, &r).is_err());
        for i in 0..want.len() {
            let mut p = want.clone();
            p[i][0] ^= 8;
            assert!(verify_inclusion(&leaves[index as usize], index, size, &p, &r).is_err());
        }
        if !want.is_empty() {
            assert!(verify_inclusion(
                &leaves[index as usize],
                index,
                size,
                &want[..want.len() - 1],
                &r
            )
            .is_err());
        }
    }
}

#[test]
fn consistency_proofs_match_the_published_vectors() {
    let leaves = vector_leaves();
    for (old, new, want) in consistency_vectors() {
        let got = consistency_proof(&leaves[..new as usize], old).unwrap();
        assert_eq!(got, want, "consistency proof {old} -> {new}");
        let (r1, r2) = (h(ROOTS[old as usize - 1]), h(ROOTS[new as usize - 1]));
        verify_consistency(old, new, &r1, &r2, &want).unwrap();
        if want.is_empty() {
            continue;
        }
        assert!(
            verify_consistency(old, new, &r2, &r1, &want).is_err(),
            "swapped roots"
        );
        assert!(verify_consistency(old - 1, new, &r1, &r2, &want).is_err());
        assert!(verify_consistency(old + 1, new, &r1, &r2, &want).is_err());
        assert!(verify_consistency(old, new * 2, &r1, &r2, &want).is_err());
        assert!(
            verify_consistency(old, new, &r1, &r2, &[]).is_err(),
            "empty proof"
        );
        assert!(verify_consistency(old, new, &r1, &r2, &want[..want.len() - 1]).is_err());
        let mut pre = vec![want[0]];
        pre.extend_from_slice(&want);
        assert!(verify_consistency(old, new, &r1, &r2, &pre).is_err());
        for i in 0..want.len() {
            let mut p = want.clone();
            p[i][0] ^= 16;
            assert!(verify_consistency(old, new, &r1, &r2, &p).is_err());
        }
    }
    // Sizes that are always consistent, and time travel.
    let (a, b) = (h(ROOTS[0]), h(ROOTS[1]));
    verify_consistency(0, 1, &a, &b, &[]).unwrap();
    assert!(verify_consistency(1, 1, &a, &b, &[]).is_err());
    assert!(verify_consistency(2, 1, &a, &b, &[]).is_err());
    assert!(verify_consistency(0, 1, &a, &b, &[a]).is_err());
}

fn tree(n: usize, seed: u64) -> Vec<Hash> {
    (0..n)
        .map(|i| leaf_hash(&(seed ^ i as u64).to_be_bytes()))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn every_inclusion_proof_verifies_and_any_flipped_bit_fails(
        n in 1usize..300, seed: u64, pick: u64, bit in 0usize..256,
    ) {
        let leaves = tree(n, seed);
        let index = pick % n as u64;
        let r = root(&leaves);
        let proof = inclusion_proof(&leaves, index).unwrap();
        prop_assert!(verify_inclusion(&leaves[index as usize], index, n as u64, &proof, &r).is_ok());
        // Flip one bit anywhere in the proof, the leaf or the root.
        let total = proof.len() + 2;
        let which = (pick as usize / 7) % total;
        let (mut proof2, mut leaf2, mut r2) = (proof.clone(), leaves[index as usize], r);
        let target: &mut Hash = if which < proof.len() { &mut proof2[which] } else if which == proof.len() { &mut leaf2 } else { &mut r2 };
        target[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(verify_inclusion(&leaf2, index, n as u64, &proof2, &r2).is_err());
    }

    #[test]
    fn every_consistency_proof_verifies_and_any_flipped_bit_fails(
        n in 2usize..300, seed: u64, pick: u64, bit in 0usize..256,
    ) {
        let leaves = tree(n, seed);
        let old = 1 + pick % (n as u64 - 1);
        let (r1, r2) = (root(&leaves[..old as usize]), root(&leaves));
        let proof = consistency_proof(&leaves, old).unwrap();
        prop_assert!(verify_consistency(old, n as u64, &r1, &r2, &proof).is_ok());
        let total = proof.len() + 2;
        let which = (pick as usize / 7) % total;
        let (mut p2, mut a, mut b) = (proof.clone(), r1, r2);
        let target: &mut Hash = if which < proof.len() { &mut p2[which] } else if which == proof.len() { &mut a } else { &mut b };
        target[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(verify_consistency(old, n as u64, &a, &b, &p2).is_err());
    }

    #[test]
    fn the_frontier_root_is_the_tree_root(n in 0usize..600, seed: u64) {
        let leaves = tree(n, seed);
        let mut f = Frontier::default();
        for (i, l) in leaves.iter().enumerate() {
            if i < 40 || i % 37 == 0 {
                prop_assert_eq!(f.root(), root(&leaves[..i]));
            }
            f.push(*l);
        }
        prop_assert_eq!(f.root(), root(&leaves));
    }

    #[test]
    fn verification_never_panics_on_any_input(
        index: u64, size: u64, old: u64, new: u64,
        proof in proptest::collection::vec(any::<[u8; 32]>(), 0..70),
    ) {
        let z = [0u8; 32];
        let _ = verify_inclusion(&z, index, size, &proof, &z);
        let _ = verify_consistency(old, new, &z, &z, &proof);
    }
}
