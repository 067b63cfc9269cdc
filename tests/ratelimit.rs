//! Egress cap: rate parsing, token bucket arithmetic, and the per-shard
//! limiter's accuracy and fairness on a virtual clock.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;

use ringseed::swarm::ratelimit::{
    pool_for, EgressLimiter, Rate, TokenBucket, TokenPool, DEFAULT_QUANTUM, MAX_BLOCK_MESSAGE,
};

const MS: Duration = Duration::from_millis(1);

#[test]
fn parses_rates() {
    let ok = [
        ("100MB/s", 100_000_000),
        ("1Gbit", 125_000_000),
        ("1Gbps", 125_000_000),
        ("800Mbit/s", 100_000_000),
        ("50MiB/s", 50 << 20),
        ("1.5GiB", 3 << 29),
        ("5 MB/s", 5_000_000),
        ("64KiB", 65536),
        ("10kB/s", 10_000),
        ("1000", 1000),
        ("8b", 1),
    ];
    for (s, want) in ok {
        let r: Rate = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(r.bytes_per_sec(), Some(want), "{s}");
    }
    for s in ["0", "off", "OFF", "unlimited", " 0 ", "0MB/s"] {
        assert!(s.parse::<Rate>().unwrap().is_unlimited(), "{s}");
    }
    for s in [
        "",
        "fast",
        "MB/s",
        "10 furlongs",
        "1.2.3MB",
        "1b/s/s",
        "0.1b",
    ] {
        let e = s.parse::<Rate>().unwrap_err();
        assert!(e.to_string().contains("100MB/s"), "{e}");
    }
    assert_eq!(Rate::from_bytes_per_sec(50 << 20).to_string(), "50MiB/s");
    assert_eq!(Rate::UNLIMITED.to_string(), "off");
    let r: Rate = Rate::from_bytes_per_sec(12_345)
        .to_string()
        .parse()
        .unwrap();
    assert_eq!(r.bytes_per_sec(), Some(12_345));
}

#[test]
fn rate_from_config_accepts_strings_and_integers() {
    #[derive(serde::Deserialize)]
    struct C {
        a: Rate,
        b: Rate,
    }
    let c: C = toml::from_str("a = \"1Gbit\"\nb = 4096").unwrap();
    assert_eq!(c.a.bytes_per_sec(), Some(125_000_000));
    assert_eq!(c.b.bytes_per_sec(), Some(4096));
    assert!(toml::from_str::<C>("a = \"lots\"\nb = 1").is_err());
}

#[test]
fn bucket_grants_rate_and_burst() {
    let t0 = Instant::now();
    let mut b = TokenBucket::new(t0, 1000, 500);
    assert_eq!(b.take(t0, 800), 500, "starts full");
    assert_eq!(b.take(t0, 1), 0);
    assert_eq!(b.next_ready(t0, 100), t0 + Duration::from_millis(100));
    assert_eq!(b.take(t0 + Duration::from_millis(99), 100), 99);
    // Saturates at burst after a long idle time.
    assert_eq!(b.take(t0 + Duration::from_secs(60), 10_000), 500);
    // Debt from a charge is repaid before anything is granted.
    let t1 = t0 + Duration::from_secs(60);
    b.charge(t1, 1000);
    assert_eq!(b.available(t1 + Duration::from_millis(999)), 0);
    assert_eq!(b.next_ready(t1, 1), t1 + Duration::from_millis(1001));
    b.give_back(1_000_000);
    assert_eq!(b.available(t1), 500, "give_back is capped at burst");

    let mut u = TokenBucket::unlimited(t0);
    assert_eq!(u.take(t0, u64::MAX), u64::MAX);
    assert_eq!(u.next_ready(t0, 1 << 40), t0);
}

#[test]
fn bucket_does_not_drift_over_odd_steps() {
    // 7 bytes/s taken every 333 us for an hour: exactly rate x time (the
    // bucket never fills, so no token is lost to the cap).
    let t0 = Instant::now();
    let mut b = TokenBucket::new(t0, 7, 10);
    assert_eq!(b.take(t0, 10), 10);
    let mut got = 0;
    let mut t = t0;
    for _ in 0..(3600 * 3003) {
        t += Duration::from_micros(333);
        got += b.take(t, u64::MAX);
    }
    let elapsed = t - t0;
    let exact = 7 * elapsed.as_nanos() / 1_000_000_000;
    assert_eq!(u128::from(got), exact);
}

#[test]
fn unlimited_limiter_grants_everything() {
    let t0 = Instant::now();
    let mut l = EgressLimiter::<u32>::shared(pool_for(t0, Rate::UNLIMITED));
    assert_eq!(l.request(t0, 1, 10 << 20), 10 << 20);
    assert_eq!(l.next_ready(t0), None);
}

#[test]
fn waiters_are_served_in_order_and_nobody_jumps_the_queue() {
    let t0 = Instant::now();
    let batch = 4 * MAX_BLOCK_MESSAGE;
    let pool = Arc::new(TokenPool::new(t0, 1_000_000, batch));
    let mut l = EgressLimiter::new(Some(pool), batch);
    assert_eq!(l.request(t0, 1, batch), batch, "bucket starts full");
    assert_eq!(l.request(t0, 2, batch), 0);
    assert_eq!(l.request(t0, 3, MAX_BLOCK_MESSAGE), 0);
    assert_eq!(l.waiting(), 2);
    // A grant a latecomer could take at once goes to the queue head first.
    let t1 = t0 + Duration::from_millis(20);
    assert_eq!(l.request(t1, 4, 1), 0);
    let ready = l.next_ready(t1).unwrap();
    assert!(ready > t1);
    let mut out = Vec::new();
    l.poll_ready(ready, &mut out);
    assert_eq!(out, [(2, batch)]);
    out.clear();
    l.poll_ready(ready + Duration::from_secs(1), &mut out);
    assert_eq!(out, [(3, MAX_BLOCK_MESSAGE), (4, 1)]);
    // A full pool with nobody waiting grants at once; a waiter removed
    // (closed connection) leaves the queue and its booking goes back.
    let t2 = ready + Duration::from_secs(1);
    assert_eq!(l.request(t2, 5, 10 * batch), batch);
    assert_eq!(l.request(t2, 6, batch), 0);
    l.remove(6);
    assert_eq!(l.waiting(), 0);
    let refilled = t2 + Duration::from_micros(batch * 1_000_000 / 1_000_000);
    assert_eq!(l.pool().unwrap().available(refilled), batch);
}

#[test]
fn quantum_and_burst_cover_at_least_one_block() {
    let t0 = Instant::now();
    let l = EgressLimiter::<u32>::shared(pool_for(t0, Rate::from_bytes_per_sec(1000)));
    assert_eq!(l.quantum(), MAX_BLOCK_MESSAGE);
    assert!(l.pool().unwrap().burst() >= MAX_BLOCK_MESSAGE);
    let fast = EgressLimiter::<u32>::shared(pool_for(t0, "10Gbit".parse().unwrap()));
    assert_eq!(fast.quantum(), DEFAULT_QUANTUM);
}

/// A connection of the simulated shard.
#[derive(Clone)]
struct Conn {
    /// Bytes left in its current demand (0: idle).
    backlog: u64,
    /// When its current send completes (at most one in flight).
    busy_until: Instant,
    /// When it next gets new demand while idle.
    next_demand: Instant,
    waiting: bool,
    got: u64,
    /// Always backlogged (for the fairness check).
    greedy: bool,
}

/// Drives one shard's limiter with `n` connections of random demand for
/// `secs` virtual seconds in 1 ms steps; returns the bytes granted per ms and
/// the connections.
fn run_shard(rate: Rate, n: usize, secs: u64, seed: u64) -> (Vec<u64>, Vec<Conn>) {
    let (per_ms, mut shards) = run_shards(rate, &[n], 0, secs, seed);
    (per_ms, shards.remove(0))
}

/// Like [`run_shard`] for several shards whose limiters draw from one
/// box-wide pool: `greedy` connections per shard listed first (always
/// backlogged), `shard_conns[i] - greedy` of random demand. Shards are
/// polled in a fixed order each step (the worst case for fairness).
fn run_shards(
    rate: Rate,
    shard_conns: &[usize],
    greedy_per_shard: usize,
    secs: u64,
    seed: u64,
) -> (Vec<u64>, Vec<Vec<Conn>>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let t0 = Instant::now();
    let pool = pool_for(t0, rate);
    let mut limiters: Vec<EgressLimiter<usize>> = shard_conns
        .iter()
        .map(|_| EgressLimiter::shared(pool.clone()))
        .collect();
    let per_conn_link = 50_000_000u64; // bytes/s a connection's socket drains
    let single = shard_conns.len() == 1;
    let mut shards: Vec<Vec<Conn>> = shard_conns
        .iter()
        .map(|&n| {
            (0..n)
                .map(|i| Conn {
                    backlog: 0,
                    busy_until: t0,
                    next_demand: t0 + MS * rng.random_range(0..200),
                    waiting: false,
                    got: 0,
                    greedy: if single { i < 4 } else { i < greedy_per_shard },
                })
                .collect()
        })
        .collect();
    let steps = secs * 1000;
    let mut granted_per_ms = vec![0u64; steps as usize];
    let mut ready = Vec::new();
    for step in 0..steps {
        let now = t0 + MS * step as u32;
        let grant = |c: &mut Conn, g: u64, slot: &mut u64| {
            c.backlog -= g;
            c.got += g;
            *slot += g;
            let send_ns = g * 1_000_000_000 / per_conn_link;
            c.busy_until = now + Duration::from_nanos(send_ns);
        };
        for (l, conns) in limiters.iter_mut().zip(shards.iter_mut()) {
            // Waiters served as their bookings come due.
            ready.clear();
            l.poll_ready(now, &mut ready);
            for &(i, g) in &ready {
                let c: &mut Conn = &mut conns[i];
                c.waiting = false;
                grant(c, g, &mut granted_per_ms[step as usize]);
            }
            for (i, c) in conns.iter_mut().enumerate() {
                if c.backlog == 0 {
                    if c.greedy {
                        c.backlog = 64 << 20;
                    } else if now >= c.next_demand {
                        // Random demand: a few blocks to a few MiB, then quiet.
                        c.backlog = rng.random_range(1..=256) * MAX_BLOCK_MESSAGE;
                        c.next_demand = now + MS * rng.random_range(0..3000);
                    }
                }
                if c.backlog > 0 && !c.waiting && now >= c.busy_until {
                    let want = c.backlog.min(16 * MAX_BLOCK_MESSAGE);
                    let g = l.request(now, i, want);
                    if g == 0 {
                        c.waiting = true;
                    } else {
                        grant(c, g, &mut granted_per_ms[step as usize]);
                    }
                }
            }
        }
    }
    (granted_per_ms, shards)
}

/// The least and most of any 10 s window (sliding by 1 ms after a 1 s
/// warm-up) as a fraction of `rate`.
fn window_range(per_ms: &[u64], rate: u64) -> (f64, f64) {
    let window = 10_000;
    let want = rate as f64 * 10.0;
    let mut sum: u64 = per_ms[1000..1000 + window].iter().sum();
    let (mut lo, mut hi) = (f64::MAX, 0f64);
    for start in 1000..per_ms.len() - window {
        if start > 1000 {
            sum = sum + per_ms[start + window - 1] - per_ms[start - 1];
        }
        let ratio = sum as f64 / want;
        lo = lo.min(ratio);
        hi = hi.max(ratio);
    }
    (lo, hi)
}

#[test]
fn one_pool_is_one_cap_across_shards_and_fair_per_connection() {
    // 8 shards, connections landed unevenly: 1, 7, 0, 0, 3, 0, 0, 1, all
    // always backlogged. Every connection gets the same share of the box
    // cap, whatever shard it is on, and the box stays at the cap.
    let rate: Rate = "100MB/s".parse().unwrap();
    let r = rate.bytes_per_sec().unwrap();
    let layout = [1, 7, 0, 0, 3, 0, 0, 1];
    let (per_ms, shards) = run_shards(rate, &layout, usize::MAX, 21, 7);
    let (lo, hi) = window_range(&per_ms, r);
    eprintln!("8 shards: 10 s windows at {lo:.4}..{hi:.4} of the box cap");
    assert!(lo >= 0.98 && hi <= 1.02, "{lo} {hi}");
    let got: Vec<u64> = shards.iter().flatten().map(|c| c.got).collect();
    let (min, max) = (*got.iter().min().unwrap(), *got.iter().max().unwrap());
    eprintln!("per-connection shares: {got:?}");
    assert!(max as f64 <= min as f64 * 1.05, "unfair: {got:?}");
}

#[test]
fn a_lone_leecher_gets_the_whole_box_cap_at_any_shard_count() {
    let rate: Rate = "40MB/s".parse().unwrap();
    let r = rate.bytes_per_sec().unwrap();
    for shards in [1usize, 2, 8] {
        let mut layout = vec![0; shards];
        layout[shards - 1] = 1;
        let (per_ms, _) = run_shards(rate, &layout, usize::MAX, 12, 1);
        let (lo, hi) = window_range(&per_ms, r);
        eprintln!("{shards} shard(s), one leecher: {lo:.4}..{hi:.4} of the box cap");
        assert!(lo >= 0.98 && hi <= 1.02, "{shards} shards: {lo} {hi}");
    }
}

#[test]
fn every_10s_window_is_within_5_percent_of_the_cap() {
    // A 50 MB/s cap on one shard driven by 200 connections whose total
    // demand exceeds it.
    let rate: Rate = "50MB/s".parse().unwrap();
    let share = rate.bytes_per_sec().unwrap();
    for seed in [1, 2] {
        let (per_ms, conns) = run_shard(rate, 200, 40, seed);
        let (lo, hi) = window_range(&per_ms, share);
        eprintln!("seed {seed}: 10 s windows at {lo:.4}..{hi:.4} of the cap");
        assert!(lo >= 0.95 && hi <= 1.05, "{lo} {hi}");

        // Fairness: the always-backlogged connections got equal shares.
        let greedy: Vec<u64> = conns.iter().filter(|c| c.greedy).map(|c| c.got).collect();
        let (min, max) = (greedy.iter().min().unwrap(), greedy.iter().max().unwrap());
        assert!(
            *max as f64 <= *min as f64 * 1.05,
            "greedy shares {greedy:?}"
        );
    }
}

#[test]
fn a_low_rate_is_still_accurate() {
    // 333 KB/s: bursts of one block.
    let rate = Rate::from_bytes_per_sec(333_334);
    let (per_ms, _) = run_shard(rate, 20, 25, 3);
    let want = rate.bytes_per_sec().unwrap() as f64 * 10.0;
    for start in (1000..per_ms.len() - 10_000).step_by(100) {
        let sum: u64 = per_ms[start..start + 10_000].iter().sum();
        let ratio = sum as f64 / want;
        assert!(
            (0.95..=1.05).contains(&ratio),
            "window at {start} ms: {ratio}"
        );
    }
}
