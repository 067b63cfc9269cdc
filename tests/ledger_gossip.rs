//! Gossip simulation on a virtual clock: 1,000 boxes, fanout f. Rounds and
//! messages until every box holds a new block, and until every box knows of
//! an equivocation, printed against log2 N (run with `--nocapture`).

use ringseed::ledger::gossip::{Gossip, GossipConfig, Msg};
use ringseed::ledger::note::{Signer, ALG_ED25519};
use ringseed::ledger::{Ledger, Release};

const N: usize = 1000;

fn publisher() -> Signer {
    Signer::from_seed("example.org/releases", ALG_ED25519, [7; 32]).unwrap()
}

fn release(i: u64, tag: &str) -> Release {
    Release {
        name: format!("app-{tag}"),
        version: format!("1.{i}"),
        info_hash_v2: Some([i as u8; 32]),
        info_hash_v1: None,
        total_size: 1000 + i,
        publish_time: 1_700_000_000 + i,
    }
}

struct Fleet {
    ledgers: Vec<Ledger>,
    gossip: Vec<Gossip>,
    inflight: Vec<(usize, usize, Msg)>,
    messages: u64,
    anti_entropy: u64,
}

impl Fleet {
    /// `N` boxes all holding block 1.
    fn new(fanout: usize, seed: u64) -> (Self, Ledger) {
        let key = publisher();
        let mut origin = Ledger::new(key.verifier.clone(), vec![]);
        let b1 = origin.make_block(&key, vec![release(1, "a")], 100).unwrap();
        let b1 = b1.encode().into_bytes();
        origin.offer_block(&b1).unwrap();
        let cfg = GossipConfig {
            fanout,
            ..GossipConfig::default()
        };
        let mut ledgers = Vec::with_capacity(N);
        let mut gossip = Vec::with_capacity(N);
        for i in 0..N {
            let mut l = Ledger::new(key.verifier.clone(), vec![]);
            l.offer_block(&b1).unwrap();
            ledgers.push(l);
            gossip.push(Gossip::new(
                cfg,
                N - 1,
                seed.wrapping_mul(1_000_003) ^ (i as u64 + 1),
            ));
        }
        (
            Self {
                ledgers,
                gossip,
                inflight: Vec::new(),
                messages: 0,
                anti_entropy: 0,
            },
            origin,
        )
    }

    fn collect(&mut self, from: usize) {
        while let Some((p, m)) = self.gossip[from].poll() {
            let to = p + usize::from(p >= from);
            if matches!(m, Msg::GetCheckpoint | Msg::Checkpoint(_)) {
                self.anti_entropy += 1;
            }
            self.inflight.push((from, to, m));
            self.messages += 1;
        }
    }

    /// One round: every box ticks, then every message sent in the previous
    /// round is delivered (one hop per round).
    fn round(&mut self, now: u64) {
        let deliver = std::mem::take(&mut self.inflight);
        for i in 0..N {
            self.gossip[i].tick(now);
            self.collect(i);
        }
        for (from, to, m) in deliver {
            let peer = from - usize::from(from > to);
            let _ = self.gossip[to].handle(now, peer, m, &mut self.ledgers[to]);
            self.collect(to);
        }
    }
}

fn block_spread(fanout: usize, seed: u64) -> (u64, u64, u64) {
    let (mut fleet, origin) = Fleet::new(fanout, seed);
    let key = publisher();
    let b2 = origin.make_block(&key, vec![release(2, "a")], 200).unwrap();
    fleet.ledgers[0]
        .offer_block(b2.encode().as_bytes())
        .unwrap();
    let before = fleet.messages;
    let before_ae = fleet.anti_entropy;
    fleet.gossip[0].announce_block(&fleet.ledgers[0], 2);
    fleet.collect(0);
    // The steady anti-entropy traffic (about 2 messages per box per round)
    // is counted in the total and reported separately.
    for round in 1..=200u64 {
        fleet.round(round);
        if fleet.ledgers.iter().all(|l| l.height() == 2) {
            return (
                round,
                fleet.messages - before,
                fleet.anti_entropy - before_ae,
            );
        }
    }
    panic!("block did not reach every box in 200 rounds (fanout {fanout})");
}

fn equivocation_spread(fanout: usize, seed: u64) -> u64 {
    let (mut fleet, origin) = Fleet::new(fanout, seed);
    let key = publisher();
    // The publisher signs two different block 2s and gives them to two boxes.
    let a = origin.make_block(&key, vec![release(2, "a")], 200).unwrap();
    let b = origin
        .make_block(&key, vec![release(2, "evil")], 200)
        .unwrap();
    fleet.ledgers[0].offer_block(a.encode().as_bytes()).unwrap();
    fleet.ledgers[N / 2]
        .offer_block(b.encode().as_bytes())
        .unwrap();
    fleet.gossip[0].announce_block(&fleet.ledgers[0], 2);
    fleet.gossip[N / 2].announce_block(&fleet.ledgers[N / 2], 2);
    fleet.collect(0);
    fleet.collect(N / 2);
    for round in 1..=200u64 {
        fleet.round(round);
        if fleet.ledgers.iter().all(|l| l.is_frozen()) {
            return round;
        }
    }
    panic!("equivocation did not reach every box in 200 rounds (fanout {fanout})");
}

#[test]
fn a_new_block_reaches_all_1000_boxes_in_about_log_n_rounds() {
    let log2n = (N as f64).log2();
    println!("gossip simulation: N = {N} boxes, log2 N = {log2n:.2}, one hop per round,");
    println!("anti-entropy: each box asks 1 random peer per round (2 msgs/box/round, counted in the total)");
    println!("| fanout | rounds (block) | rounds / log2 N | messages | of which anti-entropy | msgs per box | rounds (equivocation) |");
    println!("|---|---|---|---|---|---|---|");
    for fanout in [1usize, 2, 3, 4, 6, 8] {
        let (rounds, msgs, ae) = block_spread(fanout, 42);
        let eq = equivocation_spread(fanout, 42);
        println!(
            "| {fanout} | {rounds} | {:.2} | {msgs} | {ae} | {:.1} | {eq} |",
            rounds as f64 / log2n,
            msgs as f64 / N as f64
        );
        // Bounds that hold with a wide margin: epidemic spread is O(log N).
        assert!(
            rounds as f64 <= 3.0 * log2n + 6.0,
            "fanout {fanout}: {rounds} rounds"
        );
        assert!(
            eq as f64 <= 4.0 * log2n + 8.0,
            "fanout {fanout}: equivocation took {eq} rounds"
        );
    }
}
