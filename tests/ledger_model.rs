//! The ledger state machine and its formats: signed notes, vkeys,
//! cosignatures, blocks, equivocation proofs, proof bundles, and every kind
//! of bad input refused with its reason and counted.

use proptest::prelude::*;
use ringseed::ledger::gossip::{Gossip, GossipConfig, Msg};
use ringseed::ledger::note::{Signer, Verifier, ALG_COSIGNATURE_V1, ALG_ED25519};
use ringseed::ledger::{
    Block, Equivocation, Ledger, Note, Outcome, Policy, ProofBundle, RejectReason, Release,
};

fn publisher() -> Signer {
    Signer::from_seed("example.org/app", ALG_ED25519, [1; 32]).unwrap()
}

fn witness(i: u8) -> Signer {
    Signer::from_seed(&format!("box{i}.example"), ALG_COSIGNATURE_V1, [10 + i; 32]).unwrap()
}

fn rel(i: u64) -> Release {
    Release {
        name: format!("app-{i}"),
        version: format!("1.{i}"),
        info_hash_v2: Some([i as u8; 32]),
        info_hash_v1: (i % 2 == 0).then_some([i as u8; 20]),
        total_size: i * 1000,
        publish_time: 1_700_000_000 + i,
    }
}

/// A ledger with `n` blocks of two releases each, and the encoded blocks.
fn chain(n: u64) -> (Ledger, Vec<String>) {
    let key = publisher();
    let mut l = Ledger::new(key.verifier.clone(), vec![]);
    let mut blocks = Vec::new();
    for h in 1..=n {
        let b = l
            .make_block(&key, vec![rel(2 * h), rel(2 * h + 1)], 100 * h)
            .unwrap();
        let text = b.encode();
        assert_eq!(
            l.offer_block(text.as_bytes()).unwrap(),
            Outcome::Appended { height: h }
        );
        blocks.push(text);
    }
    (l, blocks)
}

#[test]
fn vkeys_keys_and_notes_round_trip() {
    let k = publisher();
    let v = Verifier::from_vkey(&k.verifier.to_vkey()).unwrap();
    assert_eq!(v, k.verifier);
    let k2 = Signer::from_skey(&k.to_skey()).unwrap();
    assert_eq!(k2.verifier, k.verifier);
    let mut note = Note {
        text: "example.org/app\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n".into(),
        signatures: vec![],
    };
    note.add_signature(k.sign(&note.text, 0));
    let w = witness(1);
    note.add_signature(w.sign(&note.text, 1_700_000_123));
    let parsed = Note::parse(note.encode().as_bytes()).unwrap();
    assert_eq!(parsed, note);
    assert_eq!(parsed.verify_by(&k.verifier).unwrap(), None);
    assert_eq!(parsed.verify_by(&w.verifier).unwrap(), Some(1_700_000_123));
    // A vkey with a wrong key ID, a name with '+' or a space: refused.
    let vk = k.verifier.to_vkey();
    let bad_id = vk.replacen('+', "+0", 1);
    assert!(Verifier::from_vkey(&bad_id).is_err());
    assert!(Verifier::from_vkey("a b+12345678+AQ==").is_err());
    // Malformed notes.
    for bad in [
        &b"no blank line\n"[..],
        b"text\n\n",
        b"text\n\nnot a signature\n",
        b"t\x01\n\n\xe2\x80\x94 k AAAAAAA=\n",
    ] {
        assert!(
            Note::parse(bad).is_err(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn releases_and_blocks_round_trip_byte_for_byte() {
    for i in 0..10 {
        let r = rel(i);
        assert_eq!(Release::decode(&r.encode()).unwrap(), r);
    }
    let (l, blocks) = chain(3);
    for (h, text) in blocks.iter().enumerate() {
        let b = Block::parse(text.as_bytes()).unwrap();
        assert_eq!(b.encode(), *text);
        assert_eq!(b.header.height, h as u64 + 1);
    }
    assert_eq!(l.size(), 6);
}

#[test]
fn every_kind_of_bad_block_is_refused_with_its_reason_and_counted() {
    let (_, blocks) = chain(4);
    let key = publisher();
    let mut l = Ledger::new(key.verifier.clone(), vec![]);
    l.offer_block(blocks[0].as_bytes()).unwrap();
    l.offer_block(blocks[1].as_bytes()).unwrap();
    let check = |l: &mut Ledger, bytes: &[u8], want: RejectReason| {
        let before = l.reject_count(want);
        let r = l.offer_block(bytes).unwrap_err();
        assert_eq!(r.reason, want, "{}", r.detail);
        assert_eq!(l.reject_count(want), before + 1);
        assert_eq!(l.height(), 2, "nothing stored");
    };
    // Malformed.
    check(&mut l, b"garbage", RejectReason::Malformed);
    // Over the size cap.
    check(&mut l, &vec![b'a'; 600 * 1024], RejectReason::TooLarge);
    // A gap: block 4 before block 3.
    check(&mut l, blocks[3].as_bytes(), RejectReason::Gap);
    // Signed by someone else.
    let other = Signer::from_seed("example.org/app", ALG_ED25519, [2; 32]).unwrap();
    let forged = Ledger::new(other.verifier.clone(), vec![]);
    let fb = forged.make_block(&other, vec![rel(99)], 5).unwrap();
    check(&mut l, fb.encode().as_bytes(), RejectReason::UnknownKey);
    // Altered signed text: bad signature.
    let altered = blocks[2].replacen("\n6\n", "\n7\n", 1);
    check(&mut l, altered.as_bytes(), RejectReason::BadSignature);
    // Releases rewritten under a valid signature: root mismatch.
    let b3 = Block::parse(blocks[2].as_bytes()).unwrap();
    let mut rewritten = b3.clone();
    rewritten.releases[0].total_size += 1;
    check(
        &mut l,
        rewritten.encode().as_bytes(),
        RejectReason::RootMismatch,
    );
    // A validly signed block that does not link to our head (another chain).
    let mut other_chain = Ledger::new(key.verifier.clone(), vec![]);
    let o1 = other_chain.make_block(&key, vec![rel(50)], 1).unwrap();
    other_chain.offer_block(o1.encode().as_bytes()).unwrap();
    let o2 = other_chain.make_block(&key, vec![rel(51)], 2).unwrap();
    other_chain.offer_block(o2.encode().as_bytes()).unwrap();
    let o3 = other_chain.make_block(&key, vec![rel(52)], 3).unwrap();
    check(
        &mut l,
        o3.encode().as_bytes(),
        RejectReason::NotExtendingHead,
    );
    // The real block 3 is still accepted afterwards.
    assert_eq!(
        l.offer_block(blocks[2].as_bytes()).unwrap(),
        Outcome::Appended { height: 3 }
    );
    // An older checkpoint offered as new: known, not a rollback.
    let b1 = Block::parse(blocks[0].as_bytes()).unwrap();
    assert!(matches!(
        l.offer_checkpoint(b1.note.encode().as_bytes()).unwrap(),
        Outcome::Known { .. }
    ));
    assert_eq!(l.height(), 3);
}

#[test]
fn two_signed_blocks_of_one_height_are_an_equivocation_that_freezes_the_ledger() {
    let (mut l, _) = chain(3);
    let key = publisher();
    let a = l.make_block(&key, vec![rel(100)], 900).unwrap();
    let b = l.make_block(&key, vec![rel(101)], 900).unwrap();
    assert_eq!(
        l.offer_block(a.encode().as_bytes()).unwrap(),
        Outcome::Appended { height: 4 }
    );
    let Outcome::Equivocation(e) = l.offer_block(b.encode().as_bytes()).unwrap() else {
        panic!("no equivocation")
    };
    assert!(l.is_frozen());
    // The proof verifies on its own, and a forged one does not.
    let enc = e.encode();
    let back = Equivocation::parse_verified(enc.as_bytes(), &key.verifier).unwrap();
    assert_eq!(back, *e);
    let same = format!(
        "ringseed-equivocation/v1\n{}\n{}\n",
        enc.lines().nth(1).unwrap(),
        enc.lines().nth(1).unwrap()
    );
    assert_eq!(
        Equivocation::parse_verified(same.as_bytes(), &key.verifier)
            .unwrap_err()
            .reason,
        RejectReason::BadProof
    );
    // A frozen ledger takes no further block.
    let mut next = Ledger::new(key.verifier.clone(), vec![]);
    let (_, blocks) = chain(3);
    for bl in &blocks {
        next.offer_block(bl.as_bytes()).unwrap();
    }
    next.offer_block(a.encode().as_bytes()).unwrap();
    let c = next.make_block(&key, vec![rel(102)], 901).unwrap();
    assert!(matches!(
        next.offer_equivocation(enc.as_bytes()).unwrap(),
        Outcome::Equivocation(_)
    ));
    assert_eq!(
        next.offer_block(c.encode().as_bytes()).unwrap_err().reason,
        RejectReason::Frozen
    );
}

#[test]
fn proof_bundles_verify_with_a_k_of_n_policy() {
    let ws: Vec<Signer> = (0..3).map(witness).collect();
    let key = publisher();
    let mut l = Ledger::new(
        key.verifier.clone(),
        ws.iter().map(|w| w.verifier.clone()).collect(),
    );
    for h in 1..=5u64 {
        let b = l
            .make_block(&key, (0..7).map(|i| rel(h * 10 + i)).collect(), h)
            .unwrap();
        l.offer_block(b.encode().as_bytes()).unwrap();
    }
    l.cosign_head(&ws[0], 1000);
    l.cosign_head(&ws[2], 1000);
    let index = 23;
    let bundle = ProofBundle {
        release: l.releases()[index].clone(),
        index: index as u64,
        proof: l.inclusion_proof(index as u64).unwrap(),
        checkpoint: l.checkpoint_note().unwrap(),
    };
    let text = bundle.encode();
    let parsed = ProofBundle::parse(text.as_bytes()).unwrap();
    assert_eq!(parsed, bundle);
    let policy = |k: usize| {
        let mut p = String::new();
        for w in &ws {
            p.push_str(&format!("cosigner {}\n", w.verifier.to_vkey()));
        }
        Policy::parse(&format!("{p}quorum {k}\n")).unwrap()
    };
    assert_eq!(parsed.verify(&key.verifier, &policy(2)).unwrap(), (35, 2));
    assert_eq!(
        parsed.verify(&key.verifier, &policy(3)).unwrap_err().reason,
        RejectReason::BadSignature
    );
    // Another release at the same index, a wrong-length proof: refused.
    let mut wrong = parsed.clone();
    wrong.release = rel(999);
    assert_eq!(
        wrong.verify(&key.verifier, &policy(2)).unwrap_err().reason,
        RejectReason::BadProof
    );
    let mut short = parsed.clone();
    short.proof.pop();
    assert_eq!(
        short.verify(&key.verifier, &policy(2)).unwrap_err().reason,
        RejectReason::BadProof
    );
    // The consistency proof from block 2 to the head holds.
    let old = l.block(2).unwrap().checkpoint.clone();
    let head = l.head().unwrap().checkpoint.clone();
    let p = l.consistency_proof(2).unwrap();
    ringseed::ledger::merkle::verify_consistency(old.size, head.size, &old.root, &head.root, &p)
        .unwrap();
}

#[test]
fn a_flooding_peer_is_refused_and_counted() {
    let (mut l, _) = chain(1);
    let cfg = GossipConfig {
        flood_limit: 10,
        flood_window: 10,
        ..GossipConfig::default()
    };
    let mut g = Gossip::new(cfg, 4, 1);
    for i in 0..30 {
        let r = g.handle(5, 2, Msg::GetCheckpoint, &mut l);
        assert_eq!(r.is_ok(), i < 10);
    }
    assert_eq!(l.reject_count(RejectReason::Flood), 20);
    // Other peers, and the same peer in the next window, are served.
    assert!(g.handle(5, 3, Msg::GetCheckpoint, &mut l).is_ok());
    assert!(g.handle(15, 2, Msg::GetCheckpoint, &mut l).is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let key = publisher();
        let mut l = Ledger::new(key.verifier.clone(), vec![]);
        let _ = Note::parse(&bytes);
        let _ = Block::parse(&bytes);
        let _ = Release::decode(&bytes);
        let _ = ProofBundle::parse(&bytes);
        let _ = l.offer_block(&bytes);
        let _ = l.offer_checkpoint(&bytes);
        let _ = l.offer_equivocation(&bytes);
        if let Ok(s) = std::str::from_utf8(&bytes) {
            let _ = Verifier::from_vkey(s);
            let _ = Policy::parse(s);
        }
    }
}
