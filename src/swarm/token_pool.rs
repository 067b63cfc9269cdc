//! One box-wide byte budget that every shard draws from: a lock-free GCRA
//! ("virtual scheduling") token pool with an injected clock.
//!
//! # Why this shape
//!
//! A cap the user sets for the box (or for one torrent) is one number for
//! the box. Splitting it into `shards` slices breaks as soon as peers land
//! unevenly (a lone leecher got `cap / shards`). Instead every shard's
//! [`crate::swarm::ratelimit::EgressLimiter`] draws from one [`TokenPool`]:
//! one `u64` in an atomic, touched once per grant (a quantum of up to 16
//! block messages), never per block.
//!
//! # How it counts
//!
//! The pool keeps a *theoretical arrival time* `tat`, measured in bytes on
//! a time axis where `now_b = elapsed_ns * rate / 1e9` (so integer
//! arithmetic is exact and nothing drifts). The pool is full when
//! `tat <= now_b` and holds `burst - (tat - now_b)` bytes otherwise.
//! - [`TokenPool::try_take`]: take `n` bytes now if that many are there;
//! - [`TokenPool::reserve`]: book `n` bytes whatever the level and learn
//!   when they exist. Bookings are served in the order they were made,
//!   box-wide, so a connection that waits is served before anyone who asks
//!   after it, whatever shard either is on: with each connection holding at
//!   most one booking (the limiter's rule), backlogged connections share the
//!   cap round-robin across shards.
//! - [`TokenPool::give_back`]: return bytes granted or booked and not used.
//!
//! Over any interval `T` the pool grants at most `burst + rate * T` bytes.
//!
//! # What it does not do
//!
//! Queue anybody: the per-shard limiter keeps its waiting connections and
//! wakes them at the instant [`TokenPool::reserve`] returned, so no shard
//! ever waits on, wakes or polls another.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const NANOS: u128 = 1_000_000_000;

/// A box-wide (or torrent-wide) byte budget shared by all shards.
#[derive(Debug)]
pub struct TokenPool {
    /// Bytes per second (> 0).
    rate: u64,
    /// Most bytes saved up.
    burst: u64,
    /// The time axis' origin.
    epoch: Instant,
    /// Theoretical arrival time, in bytes on the time axis.
    tat: AtomicU64,
}

impl TokenPool {
    /// A full pool of `burst` bytes refilled at `rate_bytes_per_sec` (both
    /// raised to at least 1).
    pub fn new(now: Instant, rate_bytes_per_sec: u64, burst: u64) -> Self {
        Self {
            rate: rate_bytes_per_sec.max(1),
            burst: burst.max(1),
            epoch: now,
            tat: AtomicU64::new(0),
        }
    }

    pub fn rate_bytes_per_sec(&self) -> u64 {
        self.rate
    }

    pub fn burst(&self) -> u64 {
        self.burst
    }

    /// `now` on the time axis, in bytes. Saturates (a clock before the
    /// epoch is the epoch; 5.8 years at 100 GB/s before overflow).
    fn now_b(&self, now: Instant) -> u64 {
        let ns = now.saturating_duration_since(self.epoch).as_nanos();
        u64::try_from(ns * u128::from(self.rate) / NANOS).unwrap_or(u64::MAX)
    }

    /// The instant at which point `b` of the time axis is reached (rounded
    /// up, so the bytes are really there then).
    fn instant_of(&self, b: u64) -> Instant {
        let ns = (u128::from(b) * NANOS).div_ceil(u128::from(self.rate));
        self.epoch + Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }

    /// Whole bytes available at `now` (0 while bookings exceed the burst).
    pub fn available(&self, now: Instant) -> u64 {
        let now_b = self.now_b(now);
        let tat = self.tat.load(Ordering::Relaxed).max(now_b);
        self.burst.saturating_sub(tat - now_b)
    }

    /// Takes `n` bytes if the pool holds that many at `now`.
    pub fn try_take(&self, now: Instant, n: u64) -> bool {
        let now_b = self.now_b(now);
        self.tat
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |tat| {
                let t = tat.max(now_b);
                (t + n - now_b <= self.burst).then_some(t + n)
            })
            .is_ok()
    }

    /// Books `n` bytes behind every earlier booking; returns the instant
    /// from which they are the caller's (`<= now`: at once).
    pub fn reserve(&self, now: Instant, n: u64) -> Instant {
        let now_b = self.now_b(now);
        let prev = self
            .tat
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |tat| {
                Some(tat.max(now_b).saturating_add(n))
            })
            .unwrap_or_else(|t| t);
        let end = prev.max(now_b).saturating_add(n);
        match end.checked_sub(self.burst) {
            Some(ready) if ready > now_b => self.instant_of(ready),
            _ => now,
        }
    }

    /// Returns `n` bytes granted or booked and not used (a pool is never
    /// fuller than its burst).
    pub fn give_back(&self, n: u64) {
        let _ = self
            .tat
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |tat| {
                Some(tat.saturating_sub(n))
            });
    }

    /// Takes `n` bytes whatever the level (bytes already sent).
    pub fn charge(&self, now: Instant, n: u64) {
        let now_b = self.now_b(now);
        let _ = self
            .tat
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |tat| {
                Some(tat.max(now_b).saturating_add(n))
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_full_and_refills_at_the_rate() {
        let t0 = Instant::now();
        let p = TokenPool::new(t0, 1_000_000, 50_000);
        assert_eq!(p.available(t0), 50_000);
        assert!(p.try_take(t0, 50_000));
        assert!(!p.try_take(t0, 1));
        assert_eq!(p.available(t0 + Duration::from_millis(10)), 10_000);
        assert_eq!(p.available(t0 + Duration::from_secs(5)), 50_000);
    }

    #[test]
    fn bookings_are_served_in_order() {
        let t0 = Instant::now();
        let p = TokenPool::new(t0, 1_000_000, 10_000);
        assert!(p.try_take(t0, 10_000));
        let a = p.reserve(t0, 10_000);
        let b = p.reserve(t0, 10_000);
        assert_eq!(a, t0 + Duration::from_millis(10));
        assert_eq!(b, t0 + Duration::from_millis(20));
        // Nothing is left before the bookings are due.
        assert_eq!(p.available(t0 + Duration::from_millis(15)), 0);
        p.give_back(10_000);
        assert_eq!(p.available(t0 + Duration::from_millis(20)), 10_000);
    }

    #[test]
    fn never_grants_more_than_burst_plus_rate_times_t() {
        let t0 = Instant::now();
        let p = TokenPool::new(t0, 3_000_000, 64_000);
        let mut granted = 0u64;
        let mut now = t0;
        for i in 0..100_000u64 {
            now += Duration::from_micros(37 + i % 11);
            while p.try_take(now, 4_000) {
                granted += 4_000;
            }
        }
        let t = now.duration_since(t0).as_secs_f64();
        let bound = 64_000.0 + 3_000_000.0 * t;
        assert!(granted as f64 <= bound, "{granted} > {bound}");
        assert!(
            granted as f64 >= bound - 64_000.0 - 4_000.0,
            "{granted} < {bound}"
        );
    }
}
