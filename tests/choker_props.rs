//! Property tests: under arbitrary event sequences the choker's invariants
//! hold and its decisions agree with its state.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use ringseed::swarm::choker::{ChokeDecision, Choker, ChokerConfig, ChokerMode, PeerId};

const PEERS: u32 = 12;

#[derive(Debug, Clone)]
enum Op {
    Connect(u32),
    Disconnect(u32),
    Interested(u32, bool),
    Upload(u32, u64),
    /// Advance the clock by this many milliseconds, then tick.
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..PEERS).prop_map(Op::Connect),
        (0..PEERS).prop_map(Op::Disconnect),
        (0..PEERS, any::<bool>()).prop_map(|(p, i)| Op::Interested(p, i)),
        (0..PEERS, 0u64..(64 << 20)).prop_map(|(p, b)| Op::Upload(p, b)),
        (0u64..40_000).prop_map(Op::Advance),
    ]
}

fn config() -> impl Strategy<Value = ChokerConfig> {
    (
        0u32..5,
        0u32..3,
        any::<bool>(),
        1u64..20,
        1u64..60,
        0u64..(32 << 20),
        0u64..90,
    )
        .prop_map(
            |(slots, optimistic, fastest, rechoke, opt_interval, quota, quota_time)| ChokerConfig {
                upload_slots: slots,
                optimistic_slots: optimistic,
                mode: if fastest {
                    ChokerMode::FastestUpload
                } else {
                    ChokerMode::RoundRobin
                },
                rechoke_interval: Duration::from_secs(rechoke),
                optimistic_interval: Duration::from_secs(opt_interval),
                round_robin_quota_bytes: quota,
                round_robin_quota_time: Duration::from_secs(quota_time),
            },
        )
}

/// What an engine applying the decisions believes.
#[derive(Default)]
struct Model {
    connected: BTreeSet<u32>,
    interested: BTreeSet<u32>,
    unchoked: BTreeMap<u32, bool>,
    optimistic_unchokes: u64,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_under_arbitrary_events(config in config(), ops in prop::collection::vec(op(), 0..200)) {
        let slots = config.upload_slots as usize;
        let optimistic_limit = if slots == 0 { 0 } else { config.optimistic_slots as usize };
        let mut now = Instant::now();
        let mut choker = Choker::new(config, now);
        let mut model = Model::default();
        let mut out: Vec<ChokeDecision> = Vec::new();

        for op in ops {
            out.clear();
            match op {
                Op::Connect(p) => {
                    let result = choker.peer_connected(now, PeerId(p));
                    prop_assert_eq!(result.is_ok(), model.connected.insert(p));
                }
                Op::Disconnect(p) => {
                    choker.peer_disconnected(now, PeerId(p), &mut out);
                    model.connected.remove(&p);
                    model.interested.remove(&p);
                    model.unchoked.remove(&p);
                }
                Op::Interested(p, yes) => {
                    choker.peer_interested(now, PeerId(p), yes, &mut out);
                    if model.connected.contains(&p) {
                        if yes { model.interested.insert(p); } else { model.interested.remove(&p); }
                    }
                }
                Op::Upload(p, bytes) => choker.record_upload(PeerId(p), bytes),
                Op::Advance(ms) => {
                    now += Duration::from_millis(ms);
                    let due = now >= choker.next_tick();
                    let before = choker.rechokes_total();
                    choker.tick(now, &mut out);
                    prop_assert_eq!(choker.rechokes_total(), before + u64::from(due));
                    prop_assert!(choker.next_tick() > now);
                }
            }

            // Decisions: transitions only, connected peers only, chokes first.
            let mut seen_unchoke = false;
            for d in &out {
                let p = d.peer.0;
                prop_assert!(model.connected.contains(&p), "decision for unknown {:?}", d);
                let was = model.unchoked.contains_key(&p);
                prop_assert_eq!(was, !d.unchoke, "not a transition: {:?}", d);
                if d.unchoke {
                    seen_unchoke = true;
                    model.unchoked.insert(p, d.optimistic);
                    model.optimistic_unchokes += u64::from(d.optimistic);
                } else {
                    prop_assert!(!seen_unchoke, "choke after unchoke in {:?}", out);
                    prop_assert!(!d.optimistic);
                    model.unchoked.remove(&p);
                }
            }

            // State agrees with the decisions.
            for p in 0..PEERS {
                prop_assert_eq!(choker.is_connected(PeerId(p)), model.connected.contains(&p));
                prop_assert_eq!(choker.is_unchoked(PeerId(p)), model.unchoked.contains_key(&p));
            }
            prop_assert_eq!(choker.unchoked(), model.unchoked.len());
            prop_assert_eq!(choker.connected(), model.connected.len());
            prop_assert_eq!(choker.optimistic_unchokes_total(), model.optimistic_unchokes);

            // Only interested peers hold slots; limits hold.
            for p in model.unchoked.keys() {
                prop_assert!(model.interested.contains(p), "uninterested peer {} unchoked", p);
            }
            let waiting = model.interested.len() - model.unchoked.len();
            prop_assert_eq!(choker.waiting(), waiting);
            prop_assert!(choker.optimistic_unchoked() <= optimistic_limit);
            if slots == 0 {
                prop_assert_eq!(waiting, 0);
            } else {
                prop_assert!(choker.regular_unchoked() <= slots);
                prop_assert!(choker.unchoked() <= slots + optimistic_limit);
                // Work-conserving: nobody waits while a slot is free.
                if waiting > 0 {
                    prop_assert_eq!(choker.regular_unchoked(), slots);
                    prop_assert_eq!(choker.optimistic_unchoked(), optimistic_limit);
                }
            }
        }
    }
}
