//! Release ledger at 10^6 releases: proof sizes (printed), proof generation
//! and verification times, and a whole offline bundle check (parse, the
//! publisher's Ed25519 signature, 2 of 3 cosignatures, the inclusion proof).
//! Baseline beside it: one bare Ed25519 signature check, which dominates.
//!
//! `cargo bench --bench ledger`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ringseed::ledger::merkle::{
    consistency_proof, inclusion_proof, leaf_hash, root, verify_consistency, verify_inclusion, Hash,
};
use ringseed::ledger::note::{Signer, ALG_COSIGNATURE_V1, ALG_ED25519};
use ringseed::ledger::{Block, Ledger, Policy, ProofBundle, Release};

const N: u64 = 1_000_000;

fn release(i: u64) -> Release {
    Release {
        name: format!("app-{i}"),
        version: format!("1.{i}"),
        info_hash_v2: Some([(i % 251) as u8; 32]),
        info_hash_v1: Some([(i % 241) as u8; 20]),
        total_size: i,
        publish_time: 1_700_000_000 + i,
    }
}

fn bench(c: &mut Criterion) {
    let leaves: Vec<Hash> = (0..N).map(|i| release(i).leaf_hash()).collect();
    let full_root = root(&leaves);
    let old = N / 2 + 12_345;
    let old_root = root(&leaves[..old as usize]);
    let index = 777_777;
    let inc = inclusion_proof(&leaves, index).unwrap();
    let cons = consistency_proof(&leaves, old).unwrap();

    // A real ledger whose head covers 10^6 releases (1,000 blocks of 1,000).
    let key = Signer::from_seed("example.org/app", ALG_ED25519, [1; 32]).unwrap();
    let ws: Vec<Signer> = (0..3)
        .map(|i| {
            Signer::from_seed(&format!("box{i}.example"), ALG_COSIGNATURE_V1, [9 + i; 32]).unwrap()
        })
        .collect();
    let mut l = Ledger::new(
        key.verifier.clone(),
        ws.iter().map(|w| w.verifier.clone()).collect(),
    );
    for b in 0..(N / 1000) {
        let block = l
            .make_block(&key, (b * 1000..(b + 1) * 1000).map(release).collect(), b)
            .unwrap();
        // Appending through offer_block recomputes the root each time
        // (10^6 leaves by the end); the bench only needs the head.
        let bytes = block.encode();
        assert!(Block::parse(bytes.as_bytes()).is_ok());
        l.offer_block(bytes.as_bytes()).unwrap();
    }
    l.cosign_head(&ws[0], 1);
    l.cosign_head(&ws[1], 1);
    let bundle = ProofBundle {
        release: l.releases()[index as usize].clone(),
        index,
        proof: l.inclusion_proof(index).unwrap(),
        checkpoint: l.checkpoint_note().unwrap(),
    };
    let bundle_text = bundle.encode();
    let mut policy_text = String::new();
    for w in &ws {
        policy_text.push_str(&format!("cosigner {}\n", w.verifier.to_vkey()));
    }
    policy_text.push_str("quorum 2\n");
    let policy = Policy::parse(&policy_text).unwrap();
    let block_text = l.head().unwrap().encode();
    println!(
        "ledger of {N} releases: inclusion proof {} hashes ({} B), consistency proof {}->{N} {} hashes ({} B), \
         tlog-proof bundle {} B, head block (1,000 releases) {} B",
        inc.len(),
        inc.len() * 32,
        old,
        cons.len(),
        cons.len() * 32,
        bundle_text.len(),
        block_text.len()
    );

    let mut g = c.benchmark_group("ledger_1e6");
    g.bench_function("verify_inclusion", |b| {
        b.iter(|| verify_inclusion(&leaves[index as usize], index, N, &inc, &full_root).unwrap())
    });
    g.bench_function("verify_consistency", |b| {
        b.iter(|| verify_consistency(old, N, &old_root, &full_root, &cons).unwrap())
    });
    g.bench_function("verify_bundle_parse_sig_2of3_cosig_inclusion", |b| {
        b.iter(|| {
            let p = ProofBundle::parse(bundle_text.as_bytes()).unwrap();
            p.verify(&key.verifier, &policy).unwrap()
        })
    });
    let msg = bundle.checkpoint.text.clone();
    let sig = key.sign(&msg, 0);
    g.bench_function("baseline_one_ed25519_verify", |b| {
        b.iter(|| key.verifier.verify(&msg, &sig.sig).unwrap())
    });
    g.sample_size(10);
    g.bench_with_input(
        BenchmarkId::new("inclusion_proof_generate", N),
        &index,
        |b, &i| b.iter(|| inclusion_proof(&leaves, i).unwrap()),
    );
    g.bench_function("root_of_1e6_leaf_hashes", |b| b.iter(|| root(&leaves)));
    g.bench_function("leaf_hash_1e6_releases", |b| {
        b.iter(|| {
            for i in 0..N {
                std::hint::black_box(leaf_hash(&release(i).encode()));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
