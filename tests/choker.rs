//! Deterministic choker scenarios on a virtual clock.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use ringseed::swarm::choker::{
    ChokeDecision, Choker, ChokerConfig, ChokerError, ChokerMode, PeerId,
};

const SEC: Duration = Duration::from_secs(1);

struct Sim {
    choker: Choker,
    now: Instant,
    out: Vec<ChokeDecision>,
    /// Peer -> time it started waiting (interested and choked).
    waiting_since: HashMap<PeerId, (Instant, u64)>,
    order: u64,
    ever_unchoked: BTreeSet<PeerId>,
}

impl Sim {
    fn new(config: ChokerConfig) -> Self {
        let now = Instant::now();
        Self {
            choker: Choker::new(config, now),
            now,
            out: Vec::new(),
            waiting_since: HashMap::new(),
            order: 0,
            ever_unchoked: BTreeSet::new(),
        }
    }

    fn config(slots: u32, optimistic: u32, mode: ChokerMode) -> ChokerConfig {
        ChokerConfig {
            upload_slots: slots,
            optimistic_slots: optimistic,
            mode,
            ..ChokerConfig::default()
        }
    }

    /// Track waiting order from the decisions, as an engine observer would.
    fn absorb(&mut self) -> Vec<ChokeDecision> {
        let decisions = std::mem::take(&mut self.out);
        for d in &decisions {
            if d.unchoke {
                self.waiting_since.remove(&d.peer);
                self.ever_unchoked.insert(d.peer);
            } else {
                self.order += 1;
                self.waiting_since.insert(d.peer, (self.now, self.order));
            }
        }
        decisions
    }

    fn connect(&mut self, id: u32) {
        self.choker.peer_connected(self.now, PeerId(id)).unwrap();
    }

    fn interested(&mut self, id: u32, yes: bool) -> Vec<ChokeDecision> {
        if yes {
            self.order += 1;
            self.waiting_since
                .insert(PeerId(id), (self.now, self.order));
        } else {
            self.waiting_since.remove(&PeerId(id));
        }
        self.choker
            .peer_interested(self.now, PeerId(id), yes, &mut self.out);
        self.absorb()
    }

    fn connect_interested(&mut self, ids: std::ops::Range<u32>) {
        for id in ids {
            self.connect(id);
            self.interested(id, true);
        }
    }

    fn disconnect(&mut self, id: u32) -> Vec<ChokeDecision> {
        self.waiting_since.remove(&PeerId(id));
        self.choker
            .peer_disconnected(self.now, PeerId(id), &mut self.out);
        self.absorb()
    }

    /// Advance to the next tick and run it.
    fn tick(&mut self) -> Vec<ChokeDecision> {
        self.now = self.choker.next_tick();
        self.choker.tick(self.now, &mut self.out);
        self.absorb()
    }

    fn unchoked(&self, ids: std::ops::Range<u32>) -> Vec<u32> {
        ids.filter(|&i| self.choker.is_unchoked(PeerId(i)))
            .collect()
    }

    fn upload_to_unchoked(&mut self, ids: std::ops::Range<u32>, bytes: u64) {
        for id in ids {
            if self.choker.is_unchoked(PeerId(id)) {
                self.choker.record_upload(PeerId(id), bytes);
            }
        }
    }
}

fn unchoke(peer: u32, optimistic: bool) -> ChokeDecision {
    ChokeDecision {
        peer: PeerId(peer),
        unchoke: true,
        optimistic,
    }
}

fn choke(peer: u32) -> ChokeDecision {
    ChokeDecision {
        peer: PeerId(peer),
        unchoke: false,
        optimistic: false,
    }
}

#[test]
fn newly_interested_peer_gets_a_free_slot_immediately() {
    let mut sim = Sim::new(Sim::config(2, 0, ChokerMode::RoundRobin));
    sim.connect(7);
    assert_eq!(sim.interested(7, true), vec![unchoke(7, false)]);
    assert!(sim.choker.is_unchoked(PeerId(7)));
    // Before any tick, a second one too; the third waits.
    sim.connect(8);
    assert_eq!(sim.interested(8, true), vec![unchoke(8, false)]);
    sim.connect(9);
    assert_eq!(sim.interested(9, true), vec![]);
    assert_eq!(sim.choker.waiting(), 1);
}

#[test]
fn slot_limits_hold_across_many_rounds() {
    let mut sim = Sim::new(Sim::config(3, 1, ChokerMode::RoundRobin));
    sim.connect_interested(0..20);
    assert_eq!(sim.choker.regular_unchoked(), 3);
    assert_eq!(sim.choker.optimistic_unchoked(), 1);
    for round in 0..50u64 {
        sim.upload_to_unchoked(0..20, (round % 5) * (8 << 20));
        sim.tick();
        assert_eq!(sim.unchoked(0..20).len(), 4, "round {round}");
        assert_eq!(sim.choker.unchoked(), 4);
        assert_eq!(sim.choker.waiting(), 16);
    }
}

#[test]
fn connected_but_not_interested_peers_never_get_slots() {
    let mut sim = Sim::new(Sim::config(4, 1, ChokerMode::RoundRobin));
    for id in 0..5 {
        sim.connect(id);
    }
    for _ in 0..6 {
        assert_eq!(sim.tick(), vec![]);
    }
    assert_eq!(sim.choker.unchoked(), 0);
}

#[test]
fn zero_slots_unchokes_every_interested_peer() {
    let mut sim = Sim::new(Sim::config(0, 1, ChokerMode::RoundRobin));
    for id in 0..100 {
        sim.connect(id);
        if id % 3 != 0 {
            assert_eq!(sim.interested(id, true), vec![unchoke(id, false)]);
        }
    }
    assert_eq!(sim.choker.unchoked(), 66);
    assert_eq!(sim.choker.optimistic_unchoked(), 0);
    for _ in 0..5 {
        assert_eq!(sim.tick(), vec![]);
    }
    assert_eq!(sim.interested(1, false), vec![choke(1)]);
    assert_eq!(sim.choker.unchoked(), 65);
}

#[test]
fn disconnect_frees_the_slot_and_it_is_refilled_at_once() {
    let mut sim = Sim::new(Sim::config(2, 0, ChokerMode::RoundRobin));
    sim.connect_interested(0..5);
    assert_eq!(sim.unchoked(0..5), vec![0, 1]);
    // Peer 2 has waited longest.
    assert_eq!(sim.disconnect(0), vec![unchoke(2, false)]);
    assert!(!sim.choker.is_connected(PeerId(0)));
    assert_eq!(sim.unchoked(0..5), vec![1, 2]);
    // A waiting peer leaving changes nothing.
    assert_eq!(sim.disconnect(4), vec![]);
    // Unknown ids are ignored.
    assert_eq!(sim.disconnect(99), vec![]);
    assert_eq!(sim.choker.connected(), 3);
}

#[test]
fn not_interested_peer_loses_its_slot_to_the_longest_waiter() {
    let mut sim = Sim::new(Sim::config(2, 0, ChokerMode::RoundRobin));
    sim.connect_interested(0..4);
    assert_eq!(sim.interested(1, false), vec![choke(1), unchoke(2, false)]);
    // Interested again: waits behind peer 3.
    assert_eq!(sim.interested(1, true), vec![]);
    assert_eq!(sim.interested(0, false), vec![choke(0), unchoke(3, false)]);
    assert_eq!(sim.interested(2, false), vec![choke(2), unchoke(1, false)]);
}

#[test]
fn round_robin_gives_every_interested_peer_a_turn() {
    let mut config = Sim::config(2, 0, ChokerMode::RoundRobin);
    config.round_robin_quota_bytes = 1 << 20;
    let mut sim = Sim::new(config);
    sim.connect_interested(0..7);
    // 7 peers, 2 slots: everyone has had a turn within ceil(7/2) rounds.
    for _ in 0..4 {
        sim.upload_to_unchoked(0..7, 2 << 20);
        sim.tick();
        assert_eq!(sim.choker.unchoked(), 2);
    }
    assert_eq!(sim.ever_unchoked.len(), 7, "{:?}", sim.ever_unchoked);
}

#[test]
fn round_robin_rotates_on_time_quota_without_uploads() {
    let mut config = Sim::config(1, 0, ChokerMode::RoundRobin);
    config.round_robin_quota_time = 20 * SEC;
    let mut sim = Sim::new(config);
    sim.connect_interested(0..3);
    assert_eq!(sim.tick(), vec![]); // 10 s: turn not over
    assert_eq!(sim.tick(), vec![choke(0), unchoke(1, false)]); // 20 s
    assert_eq!(sim.tick(), vec![]);
    assert_eq!(sim.tick(), vec![choke(1), unchoke(2, false)]);
    assert_eq!(sim.tick(), vec![]);
    assert_eq!(sim.tick(), vec![choke(2), unchoke(0, false)]);
}

#[test]
fn round_robin_keeps_peers_whose_turn_is_over_when_nobody_waits() {
    let mut config = Sim::config(3, 0, ChokerMode::RoundRobin);
    config.round_robin_quota_bytes = 1;
    let mut sim = Sim::new(config);
    sim.connect_interested(0..3);
    for _ in 0..10 {
        sim.upload_to_unchoked(0..3, 1 << 20);
        assert_eq!(sim.tick(), vec![]);
    }
    assert_eq!(sim.unchoked(0..3), vec![0, 1, 2]);
}

#[test]
fn optimistic_unchoke_every_30s_goes_to_the_longest_waiting_peer() {
    let mut sim = Sim::new(Sim::config(2, 1, ChokerMode::RoundRobin));
    sim.connect_interested(0..8);
    // Peer 2 took the free optimistic slot on arrival.
    assert!(sim.choker.is_optimistic(PeerId(2)));
    assert_eq!(sim.choker.optimistic_unchokes_total(), 1);
    let start = sim.now;
    for _ in 0..12 {
        let waiting_before = sim.waiting_since.clone();
        let optimistic_before = sim.choker.optimistic_unchokes_total();
        let decisions = sim.tick();
        // The longest waiter of those this round did not give a regular slot.
        let longest = waiting_before
            .iter()
            .filter(|(p, _)| !decisions.contains(&unchoke(p.0, false)))
            .min_by_key(|(_, &at)| at)
            .map(|(&p, _)| p)
            .unwrap();
        let elapsed = sim.now - start;
        let optimistic: Vec<_> = decisions.iter().filter(|d| d.optimistic).collect();
        if elapsed.as_secs() % 30 == 0 {
            assert_eq!(optimistic.len(), 1, "at {elapsed:?}: {decisions:?}");
            assert_eq!(optimistic[0].peer, longest, "at {elapsed:?}");
            assert!(sim.choker.is_optimistic(longest));
            assert_eq!(
                sim.choker.optimistic_unchokes_total(),
                optimistic_before + 1
            );
        } else {
            assert!(optimistic.is_empty(), "at {elapsed:?}: {decisions:?}");
        }
        assert_eq!(sim.choker.unchoked(), 3);
    }
    // Optimistic rounds alone have given every one of the 8 peers a turn.
    assert_eq!(sim.ever_unchoked.len(), 8);
}

#[test]
fn optimistic_slot_is_unused_without_waiting_peers() {
    let mut sim = Sim::new(Sim::config(2, 1, ChokerMode::RoundRobin));
    sim.connect_interested(0..2);
    for _ in 0..7 {
        assert_eq!(sim.tick(), vec![]);
    }
    assert_eq!(sim.choker.optimistic_unchoked(), 0);
    assert_eq!(sim.choker.optimistic_unchokes_total(), 0);
}

#[test]
fn fastest_upload_keeps_the_fast_peers() {
    let mut sim = Sim::new(Sim::config(2, 1, ChokerMode::FastestUpload));
    sim.connect_interested(0..5);
    assert_eq!(sim.unchoked(0..5), vec![0, 1, 2]);
    assert!(sim.choker.is_optimistic(PeerId(2)));
    // Peer 0 is slow, 1 fast, optimistic 2 fastest.
    let rates = [1u64 << 10, 50 << 20, 80 << 20, 90 << 20, 1];
    for _ in 0..3 {
        for (id, rate) in rates.iter().enumerate() {
            if sim.choker.is_unchoked(PeerId(id as u32)) {
                sim.choker.record_upload(PeerId(id as u32), *rate);
            }
        }
        sim.tick();
    }
    // At 30 s: 2 proved fastest and won a regular slot from slow 0; the
    // optimistic slot went to 3, the longest waiter.
    assert_eq!(sim.unchoked(0..5), vec![1, 2, 3]);
    assert!(sim.choker.is_optimistic(PeerId(3)));
    for _ in 0..3 {
        for (id, rate) in rates.iter().enumerate() {
            if sim.choker.is_unchoked(PeerId(id as u32)) {
                sim.choker.record_upload(PeerId(id as u32), *rate);
            }
        }
        sim.tick();
    }
    // At 60 s: 3 beat 1; the regular slots hold the two fastest peers.
    assert!(sim.choker.is_unchoked(PeerId(2)) && !sim.choker.is_optimistic(PeerId(2)));
    assert!(sim.choker.is_unchoked(PeerId(3)) && !sim.choker.is_optimistic(PeerId(3)));
}

#[test]
fn fastest_upload_gives_an_idle_peers_slot_to_a_waiter() {
    let mut sim = Sim::new(Sim::config(2, 0, ChokerMode::FastestUpload));
    sim.connect_interested(0..3);
    sim.choker.record_upload(PeerId(0), 1 << 20);
    // Peer 1 took nothing in the round: it makes way for 2.
    assert_eq!(sim.tick(), vec![choke(1), unchoke(2, false)]);
}

#[test]
fn tick_before_it_is_due_does_nothing_and_late_ticks_do_not_burst() {
    let mut config = Sim::config(1, 0, ChokerMode::RoundRobin);
    config.round_robin_quota_time = Duration::ZERO;
    let mut sim = Sim::new(config);
    let start = sim.now;
    assert_eq!(sim.choker.next_tick(), start + 10 * SEC);
    sim.connect_interested(0..2);
    sim.choker.tick(start + 9 * SEC, &mut sim.out);
    assert!(sim.out.is_empty());
    assert_eq!(sim.choker.rechokes_total(), 0);
    // Very late: one round, then the next is an interval later.
    let late = start + 95 * SEC;
    sim.choker.tick(late, &mut sim.out);
    assert_eq!(sim.out, vec![choke(0), unchoke(1, false)]);
    assert_eq!(sim.choker.rechokes_total(), 1);
    assert_eq!(sim.choker.next_tick(), late + 10 * SEC);
}

#[test]
fn connecting_a_peer_twice_is_an_error_naming_it() {
    let mut sim = Sim::new(ChokerConfig::default());
    sim.connect(3);
    let err = sim.choker.peer_connected(sim.now, PeerId(3)).unwrap_err();
    assert_eq!(err, ChokerError::AlreadyConnected(PeerId(3)));
    assert!(err.to_string().contains("peer #3"), "{err}");
}

#[test]
fn events_for_unknown_peers_are_ignored() {
    let mut sim = Sim::new(ChokerConfig::default());
    sim.choker.record_upload(PeerId(1), 10);
    assert_eq!(sim.interested(1, true), vec![]);
    assert_eq!(sim.choker.connected(), 0);
    assert!(!sim.choker.is_unchoked(PeerId(1)));
}
