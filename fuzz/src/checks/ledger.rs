//! `ledger_parse`: the release ledger's parsers. Input: `[selector][bytes]`,
//! the selector (mod 7) picking signed note, checkpoint, block, tlog-proof
//! bundle, equivocation proof, release bytes, or raw Merkle proof fields.
//!
//! Invariants: no panic; every accepted note, checkpoint, block, bundle and
//! release re-encodes to exactly the input; a ledger offered the input either
//! accepts it or counts exactly one refusal; proof verification never
//! accepts a proof whose length is not the RFC 9162 length.

use ringseed::ledger::merkle::{self, Hash};
use ringseed::ledger::note::{Signer, ALG_ED25519};
use ringseed::ledger::{Block, Checkpoint, Equivocation, Ledger, Note, ProofBundle, Release};

fn ledger() -> Ledger {
    let key = Signer::from_seed("example.org/app", ALG_ED25519, [1; 32]).unwrap();
    Ledger::new(key.verifier.clone(), vec![])
}

fn total_rejects(l: &Ledger) -> u64 {
    l.rejects().map(|(_, n)| n).sum()
}

pub fn check_ledger(data: &[u8]) {
    let Some((&sel, input)) = data.split_first() else {
        return;
    };
    match sel % 7 {
        0 => {
            if let Ok(n) = Note::parse(input) {
                assert_eq!(
                    n.encode().as_bytes(),
                    input,
                    "note does not re-encode to its input"
                );
            }
        }
        1 => {
            if let Ok(text) = std::str::from_utf8(input) {
                if let Ok(c) = Checkpoint::parse(text) {
                    assert_eq!(c.text(), text, "checkpoint does not re-encode to its input");
                }
            }
        }
        2 => {
            if let Ok(b) = Block::parse(input) {
                assert_eq!(
                    b.encode().as_bytes(),
                    input,
                    "block does not re-encode to its input"
                );
            }
            let mut l = ledger();
            let before = total_rejects(&l);
            match l.offer_block(input) {
                Ok(_) => assert_eq!(total_rejects(&l), before),
                Err(_) => {
                    assert_eq!(total_rejects(&l), before + 1, "refusal not counted once");
                    assert_eq!(l.height(), 0, "a refused block was stored");
                }
            }
            let before = total_rejects(&l);
            if l.offer_checkpoint(input).is_err() {
                assert_eq!(total_rejects(&l), before + 1);
            }
        }
        3 => {
            if let Ok(b) = ProofBundle::parse(input) {
                assert_eq!(
                    b.encode().as_bytes(),
                    input,
                    "bundle does not re-encode to its input"
                );
                let l = ledger();
                let _ = b.verify(l.publisher(), &Default::default());
            }
        }
        4 => {
            let mut l = ledger();
            let _ = Equivocation::parse_verified(input, l.publisher());
            let _ = l.offer_equivocation(input);
        }
        5 => {
            if let Ok(r) = Release::decode(input) {
                assert_eq!(r.encode(), input, "release does not re-encode to its input");
            }
        }
        _ => {
            // [index u64][size u64][hash count u8][hashes...]
            if input.len() < 17 {
                return;
            }
            let a = u64::from_be_bytes(input[..8].try_into().unwrap());
            let b = u64::from_be_bytes(input[8..16].try_into().unwrap());
            let proof: Vec<Hash> = input[17..]
                .chunks_exact(32)
                .take(usize::from(input[16]))
                .map(|c| c.try_into().unwrap())
                .collect();
            let z = [0u8; 32];
            if merkle::verify_inclusion(&z, a, b, &proof, &z).is_ok() {
                assert_eq!(proof.len(), merkle::inclusion_len(a, b));
            }
            if merkle::verify_consistency(a, b, &z, &z, &proof).is_ok() && a != 0 && a != b {
                assert_eq!(proof.len(), merkle::consistency_len(a, b));
            }
        }
    }
}
