//! The download engine's tit-for-tat choker
//! (`ringseed::swarm::download::tit_for_tat`) on a virtual clock: regular
//! slots by what peers give us, a rotating optimistic unchoke, round robin
//! once complete.

use std::time::{Duration, Instant};

use ringseed::swarm::download::tit_for_tat::{ChokeChange, Choker, ChokerConfig};
use ringseed::swarm::download::PeerKey;

fn cfg() -> ChokerConfig {
    ChokerConfig::default()
}

fn unchoked(c: &Choker, n: u32) -> Vec<PeerKey> {
    (0..n).filter(|&k| c.is_unchoked(k)).collect()
}

#[test]
fn newly_interested_peer_gets_a_free_slot_at_once() {
    let t0 = Instant::now();
    let mut c = Choker::new(t0, cfg(), 1);
    let mut out = vec![];
    for k in 0..3 {
        c.add(t0, k);
        c.set_interested(t0, k, true, &mut out);
    }
    // 4 regular slots + 1 optimistic: all three are unchoked at once.
    assert_eq!(unchoked(&c, 3), vec![0, 1, 2]);
    assert_eq!(out.len(), 3);
}

#[test]
fn fastest_uploaders_to_us_win_regular_slots() {
    let t0 = Instant::now();
    let mut c = Choker::new(t0, cfg(), 2);
    let mut out = vec![];
    for k in 0..10 {
        c.add(t0, k);
        c.set_interested(t0, k, true, &mut out);
    }
    assert_eq!(c.unchoked_count(), 5);
    // Peers 5..9 send us data at increasing rates.
    for k in 5..10u32 {
        c.record_download(k, u64::from(k) * 1_000_000);
    }
    out.clear();
    c.tick(t0 + Duration::from_secs(10), &mut out);
    let up = unchoked(&c, 10);
    for k in [6, 7, 8, 9] {
        assert!(up.contains(&k), "{k} should hold a regular slot: {up:?}");
    }
    assert_eq!(up.len(), 5, "4 regular + 1 optimistic: {up:?}");
    let opt = c.optimistic().unwrap();
    assert!(!(6..10).contains(&opt));
}

#[test]
fn optimistic_unchoke_rotates_every_30s() {
    let t0 = Instant::now();
    let mut c = Choker::new(t0, cfg(), 3);
    let mut out = vec![];
    for k in 0..20 {
        c.add(t0, k);
        c.set_interested(t0, k, true, &mut out);
    }
    let mut seen = std::collections::HashSet::new();
    let mut last = c.optimistic();
    let mut t = t0;
    for step in 1..=30 {
        // Peers 0..4 keep the regular slots by sending data.
        for k in 0..4 {
            c.record_download(k, 1_000_000);
        }
        t += Duration::from_secs(10);
        c.tick(t, &mut out);
        let opt = c.optimistic().unwrap();
        assert!(opt >= 4, "regulars are not optimistic");
        if step % 3 == 0 {
            assert_ne!(Some(opt), last, "rotated at {}s", step * 10);
            seen.insert(opt);
        } else {
            assert_eq!(Some(opt), last, "kept between rotations");
        }
        last = Some(opt);
        assert_eq!(unchoked(&c, 4), vec![0, 1, 2, 3]);
        assert_eq!(c.unchoked_count(), 5);
    }
    assert!(
        seen.len() >= 6,
        "optimistic slot visits many peers: {seen:?}"
    );
}

#[test]
fn losing_interest_or_leaving_frees_the_slot() {
    let t0 = Instant::now();
    let mut c = Choker::new(t0, cfg(), 4);
    let mut out = vec![];
    for k in 0..6 {
        c.add(t0, k);
        c.set_interested(t0, k, true, &mut out);
    }
    assert_eq!(c.unchoked_count(), 5);
    let waiting = (0..6).find(|&k| !c.is_unchoked(k)).unwrap();
    let holder = (0..6)
        .find(|&k| c.is_unchoked(k) && Some(k) != c.optimistic())
        .unwrap();
    out.clear();
    c.set_interested(t0, holder, false, &mut out);
    assert_eq!(
        out,
        vec![ChokeChange::Choke(holder), ChokeChange::Unchoke(waiting)]
    );
    out.clear();
    c.remove(t0, waiting, &mut out);
    assert!(out.is_empty(), "nobody left waiting");
    assert_eq!(c.unchoked_count(), 4);
}

#[test]
fn seeding_rotates_round_robin_over_everyone() {
    let t0 = Instant::now();
    let mut c = Choker::new(
        t0,
        ChokerConfig {
            optimistic: false,
            ..cfg()
        },
        5,
    );
    let mut out = vec![];
    for k in 0..12 {
        c.add(t0, k);
        c.set_interested(t0, k, true, &mut out);
    }
    c.set_seeding(t0, true, &mut out);
    let mut served = std::collections::HashSet::new();
    let mut t = t0;
    for _ in 0..3 {
        let now_up = unchoked(&c, 12);
        assert_eq!(now_up.len(), 4);
        served.extend(now_up);
        t += Duration::from_secs(10);
        c.tick(t, &mut out);
    }
    assert_eq!(served.len(), 12, "everyone served in 3 rounds: {served:?}");
}

#[test]
fn next_timeout_is_the_nearest_timer() {
    let t0 = Instant::now();
    let mut c = Choker::new(t0, cfg(), 6);
    assert_eq!(c.next_timeout(), t0 + Duration::from_secs(10));
    c.tick(t0 + Duration::from_secs(10), &mut vec![]);
    assert_eq!(c.next_timeout(), t0 + Duration::from_secs(20));
    c.tick(t0 + Duration::from_secs(20), &mut vec![]);
    assert_eq!(c.next_timeout(), t0 + Duration::from_secs(30));
}
