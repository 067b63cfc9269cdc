//! LEDBAT congestion control (BEP 29, RFC 6817) and the RTT/RTO estimator.
//!
//! The window grows while the one-way queueing delay our packets see is
//! below the target (100 ms, as BEP 29 and libtorrent) by BEP 29's
//! additive gain (at most [`LedbatConfig::gain_per_rtt`] per round trip),
//! and shrinks when it is above. The decrease deviates from BEP 29 on
//! purpose: it is multiplicative, as in LEDBAT++
//! (draft-irtf-iccrg-ledbat-plus-plus): per round trip the window loses
//! the fraction by which the delay exceeds the target, at most half.
//! BEP 29's symmetric 3,000 bytes per round trip needs tens of seconds to
//! drain a queue that slow start overshot at a large window (measured in
//! `tests/utp_props.rs`: a 350 KB window held the queue at 130-137 ms for
//! 5 s). A loss halves the window, a timeout drops it to one packet.
//! Slow start (doubling per round trip) ends when the delay passes half
//! the target or a packet is lost. Queueing delay is the peer's latest delay sample of our packets
//! (`timestamp_difference_microseconds`) minus the smallest sample of the
//! last two minutes (the base delay; clocks need not agree, only their
//! difference must be steady).
//!
//! [`LedbatConfig::min_window`] is the option for a dedicated seed box: the
//! delay-driven back-off and loss halving never take the window below it,
//! so the box yields to other traffic only down to that floor (BEP 29's
//! behaviour is a floor of one packet). Timeouts still drop to one packet:
//! they mean the path is broken, not busy.

use std::time::{Duration, Instant};

/// LEDBAT settings.
#[derive(Clone, Copy, Debug)]
pub struct LedbatConfig {
    /// Queueing delay aimed at. Default 100 ms (BEP 29).
    pub target: Duration,
    /// Most the window grows per round trip when the queue is empty, in
    /// bytes. Default 3,000 (libtorrent's `utp_gain_factor`).
    pub gain_per_rtt: u32,
    /// Floor of the delay- and loss-driven back-off, in bytes. Default
    /// 2,800 (two packets). A dedicated seed box that should not yield to
    /// cross traffic below some rate can raise it (e.g. 64 KiB: at 100 ms
    /// RTT that is 640 KB/s per connection at worst).
    pub min_window: u32,
    /// Ceiling of the window, in bytes. Default 4 MiB.
    pub max_window: u32,
    /// Window at the start (slow start doubles it per RTT until the delay
    /// rises or a packet is lost). Default 4 packets' worth: 5,600.
    pub initial_window: u32,
}

impl Default for LedbatConfig {
    fn default() -> Self {
        Self {
            target: Duration::from_millis(100),
            gain_per_rtt: 3000,
            min_window: 2800,
            max_window: 4 << 20,
            initial_window: 5600,
        }
    }
}

/// Sliding minimum of delay samples over `BUCKETS` x `BUCKET` (2 minutes).
#[derive(Clone, Debug)]
struct BaseDelay {
    mins: [Option<u32>; BUCKETS],
    idx: usize,
    started: Option<Instant>,
}

const BUCKETS: usize = 6;
const BUCKET: Duration = Duration::from_secs(20);

/// Whether wrapping microsecond value `a` is below `b`.
fn below(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

impl BaseDelay {
    fn new() -> Self {
        Self {
            mins: [None; BUCKETS],
            idx: 0,
            started: None,
        }
    }

    fn add(&mut self, now: Instant, sample: u32) {
        let start = *self.started.get_or_insert(now);
        let mut elapsed = now.saturating_duration_since(start);
        while elapsed >= BUCKET {
            self.idx = (self.idx + 1) % BUCKETS;
            self.mins[self.idx] = None;
            self.started = Some(self.started.unwrap_or(now) + BUCKET);
            elapsed -= BUCKET;
            if elapsed > BUCKET * BUCKETS as u32 {
                // Long silence: forget everything.
                self.mins = [None; BUCKETS];
                self.started = Some(now);
                break;
            }
        }
        let m = &mut self.mins[self.idx];
        if m.is_none_or(|m| below(sample, m)) {
            *m = Some(sample);
        }
    }

    fn base(&self) -> Option<u32> {
        self.mins
            .iter()
            .flatten()
            .copied()
            .reduce(|a, b| if below(a, b) { a } else { b })
    }
}

/// The congestion window (bytes) and its LEDBAT controller.
#[derive(Clone, Debug)]
pub struct Ledbat {
    cfg: LedbatConfig,
    cwnd: u32,
    slow_start: bool,
    base: BaseDelay,
    /// Latest queueing delay estimate.
    queue_delay: Duration,
}

impl Ledbat {
    pub fn new(cfg: LedbatConfig) -> Self {
        let cwnd = cfg
            .initial_window
            .clamp(cfg.min_window.min(cfg.max_window), cfg.max_window);
        Self {
            cfg,
            cwnd,
            slow_start: true,
            base: BaseDelay::new(),
            queue_delay: Duration::ZERO,
        }
    }

    /// Bytes that may be in flight.
    pub fn window(&self) -> u32 {
        self.cwnd
    }

    /// The latest queueing-delay estimate of our packets.
    pub fn queue_delay(&self) -> Duration {
        self.queue_delay
    }

    pub fn config(&self) -> &LedbatConfig {
        &self.cfg
    }

    /// `acked` bytes were acknowledged by a packet carrying the peer's
    /// delay sample `sample_us` (0: none yet). `in_flight` is what was
    /// outstanding before the ack.
    pub fn on_ack(&mut self, now: Instant, acked: u32, sample_us: u32, in_flight: u32) {
        if acked == 0 {
            return;
        }
        let target_us = self.cfg.target.as_micros() as i64;
        let off_target = if sample_us == 0 {
            target_us
        } else {
            self.base.add(now, sample_us);
            let base = self.base.base().unwrap_or(sample_us);
            let delay = i64::from(sample_us.wrapping_sub(base) as i32).max(0);
            self.queue_delay = Duration::from_micros(delay as u64);
            target_us - delay
        };
        if self.slow_start && off_target > target_us / 2 {
            // Slow start: double per round trip while the queue is short.
            self.cwnd = self.cwnd.saturating_add(acked);
        } else {
            self.slow_start = false;
            let window = i64::from(self.cwnd.max(in_flight).max(1));
            let gain = if off_target >= 0 {
                // BEP 29: gain = MAX_INCREASE * delay_factor * window_factor.
                i64::from(self.cfg.gain_per_rtt) * off_target * i64::from(acked)
                    / (target_us.max(1) * window)
            } else {
                // Above target: shrink by the excess in proportion to the
                // window, at most half a window per round trip (LEDBAT++).
                (off_target * i64::from(acked) / target_us.max(1)).max(-i64::from(acked) / 2)
            };
            self.cwnd = (i64::from(self.cwnd) + gain)
                .clamp(i64::from(self.floor()), i64::from(self.cfg.max_window))
                as u32;
        }
        self.cwnd = self.cwnd.min(self.cfg.max_window);
    }

    /// A packet was lost (fast retransmit): halve, at most once per window.
    pub fn on_loss(&mut self) {
        self.slow_start = false;
        self.cwnd = (self.cwnd / 2).max(self.floor());
    }

    /// Retransmission timeout: one packet.
    pub fn on_timeout(&mut self, packet: u32) {
        self.slow_start = false;
        self.cwnd = packet.min(self.cfg.max_window);
    }

    fn floor(&self) -> u32 {
        self.cfg.min_window.min(self.cfg.max_window)
    }
}

/// Round-trip time and retransmission timeout (BEP 29 "timeouts").
#[derive(Clone, Debug)]
pub struct Rtt {
    srtt_ms: Option<u32>,
    rttvar_ms: u32,
    /// Consecutive timeouts (each doubles the timeout).
    backoff: u32,
    min_rto: Duration,
    max_rto: Duration,
    initial: Duration,
}

impl Rtt {
    pub fn new(initial: Duration, min_rto: Duration, max_rto: Duration) -> Self {
        Self {
            srtt_ms: None,
            rttvar_ms: 0,
            backoff: 0,
            min_rto,
            max_rto,
            initial,
        }
    }

    /// A packet sent once was acknowledged after `rtt`.
    pub fn sample(&mut self, rtt: Duration) {
        let r = rtt.as_millis().min(u128::from(u32::MAX)) as u32;
        match self.srtt_ms {
            None => {
                self.srtt_ms = Some(r);
                self.rttvar_ms = r / 2;
            }
            Some(srtt) => {
                let delta = srtt.abs_diff(r);
                self.rttvar_ms = ((i64::from(self.rttvar_ms) * 3 + i64::from(delta)) / 4) as u32;
                self.srtt_ms = Some(((u64::from(srtt) * 7 + u64::from(r)) / 8) as u32);
            }
        }
        self.backoff = 0;
    }

    /// Smoothed round-trip time, if measured.
    pub fn srtt(&self) -> Option<Duration> {
        self.srtt_ms.map(|ms| Duration::from_millis(u64::from(ms)))
    }

    /// The current timeout: `max(rtt + 4 rtt_var, 500 ms)` (1 s before the
    /// first sample), doubled per consecutive timeout, capped.
    pub fn rto(&self) -> Duration {
        let base = match self.srtt_ms {
            None => self.initial,
            Some(s) => Duration::from_millis(u64::from(s) + 4 * u64::from(self.rttvar_ms)),
        }
        .max(self.min_rto);
        base.saturating_mul(1 << self.backoff.min(16))
            .min(self.max_rto)
    }

    pub fn on_timeout(&mut self) {
        self.backoff = self.backoff.saturating_add(1);
    }

    /// Consecutive timeouts so far.
    pub fn timeouts(&self) -> u32 {
        self.backoff
    }

    pub fn reset_backoff(&mut self) {
        self.backoff = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtt_follows_the_bep_formula_and_backs_off() {
        let mut r = Rtt::new(
            Duration::from_secs(1),
            Duration::from_millis(500),
            Duration::from_secs(30),
        );
        assert_eq!(r.rto(), Duration::from_secs(1));
        r.sample(Duration::from_millis(200));
        assert_eq!(r.rto(), Duration::from_millis(600));
        for _ in 0..50 {
            r.sample(Duration::from_millis(40));
        }
        assert_eq!(r.rto(), Duration::from_millis(500), "never below 500 ms");
        r.on_timeout();
        r.on_timeout();
        assert_eq!(r.rto(), Duration::from_secs(2));
        for _ in 0..40 {
            r.on_timeout();
        }
        assert_eq!(r.rto(), Duration::from_secs(30));
    }

    #[test]
    fn ledbat_grows_below_target_and_shrinks_above() {
        let t0 = Instant::now();
        let mut l = Ledbat::new(LedbatConfig::default());
        // Base delay 10 ms: queue empty.
        l.on_ack(t0, 1400, 10_000, 1400);
        let grown = l.window();
        assert!(grown > 5600);
        // Queue at 300 ms (3x target): shrinks.
        for _ in 0..200 {
            let before = l.window();
            l.on_ack(t0, 1400, 310_000, before);
            assert!(l.window() <= before);
        }
        assert_eq!(l.window(), 2800, "down to the floor");
        // Loss halves, not below the floor.
        l.on_loss();
        assert_eq!(l.window(), 2800);
    }

    #[test]
    fn a_seed_box_floor_limits_the_backoff() {
        let t0 = Instant::now();
        let mut l = Ledbat::new(LedbatConfig {
            min_window: 64 * 1024,
            ..LedbatConfig::default()
        });
        l.on_ack(t0, 1400, 1_000, 1400);
        for _ in 0..1000 {
            l.on_ack(t0, 1400, 900_000, l.window());
        }
        assert_eq!(l.window(), 64 * 1024);
        l.on_timeout(1400);
        assert_eq!(l.window(), 1400, "a timeout still drops to one packet");
    }

    #[test]
    fn base_delay_handles_wrapping_clocks_and_expires() {
        let t0 = Instant::now();
        let mut b = BaseDelay::new();
        b.add(t0, u32::MAX - 5);
        b.add(t0, 3); // 9 us later on a wrapped clock: not the minimum
        assert_eq!(b.base(), Some(u32::MAX - 5));
        b.add(t0 + Duration::from_secs(200), 1000);
        assert_eq!(b.base(), Some(1000), "old minima expire after 2 minutes");
    }
}
