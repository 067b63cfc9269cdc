//! Latency and size histograms: recorded on the shard without locks, merged
//! by the exporter at scrape time, rendered as Prometheus histograms with
//! fixed buckets.
//!
//! Call order, on each shard thread:
//! 1. at start: `let mut h = shared.for_shard(index)` ([`SharedHistograms::for_shard`]);
//! 2. on the hot path: `h.record_request_to_send(d)`, `h.record_handshake_to_unchoke(d)`,
//!    `h.record_send_size(bytes)`: plain writes into a shard-local hdrhistogram;
//! 3. on every loop turn or timer tick: `h.publish_if_due(now)`. At most once per
//!    [`PUBLISH_INTERVAL`] it folds the local histograms into the shard's shared
//!    slot with `try_lock` (never blocking the shard; if the exporter holds the
//!    lock the samples stay local until the next turn) and resets them;
//! 4. at shutdown: `h.publish()` once more (returns `false` if the lock was busy).
//!
//! The shared slots only grow (Prometheus histograms are cumulative). The
//! exporter locks each slot just long enough to count its buckets.
//!
//! Resolution: hdrhistogram keeps 3 significant digits, so a sample within
//! 0.1% below a bucket bound may be counted in the next bucket up (never
//! lower: we bucket by each bin's highest equivalent value). `_sum` is exact.
//! Latencies above one hour and sizes above 1 GiB are clamped.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::names;

/// How often [`ShardHistograms::publish_if_due`] publishes.
pub const PUBLISH_INTERVAL: Duration = Duration::from_secs(1);

/// Bucket upper bounds for latencies, in microseconds (exported in seconds):
/// 50us, 100us, 250us, 500us, 1ms, 2.5ms, 5ms, 10ms, 25ms, 50ms, 100ms,
/// 250ms, 500ms, 1s, 2.5s, 5s, 10s, 30s, then +Inf.
pub const LATENCY_BUCKETS_US: &[u64] = &[
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000,
];

/// Bucket upper bounds for send sizes, in bytes: 64 B .. 4 MiB, then +Inf.
pub const SIZE_BUCKETS_BYTES: &[u64] = &[
    64, 256, 1_024, 4_096, 16_384, 32_768, 65_536, 131_072, 262_144, 524_288, 1_048_576, 4_194_304,
];

const LATENCY_MAX_US: u64 = 3_600_000_000;
const SIZE_MAX_BYTES: u64 = 1 << 30;
const SIGNIFICANT_DIGITS: u8 = 3;

/// One hdrhistogram plus the exact sum of what was recorded into it.
#[derive(Clone, Debug)]
pub struct LocalHist {
    hist: Histogram<u64>,
    sum: u64,
}

impl LocalHist {
    fn with_max(max: u64) -> Self {
        // Only fails for invalid bounds; ours are constants covered by tests.
        let hist = Histogram::new_with_bounds(1, max, SIGNIFICANT_DIGITS)
            .expect("constant histogram bounds are valid");
        LocalHist { hist, sum: 0 }
    }

    /// Records one sample (clamped to the histogram's maximum).
    #[inline]
    pub fn record(&mut self, value: u64) {
        self.hist.saturating_record(value);
        self.sum = self.sum.saturating_add(value);
    }

    /// Number of samples recorded.
    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// Exact sum of the samples recorded.
    pub fn sum(&self) -> u64 {
        self.sum
    }

    /// The value at quantile `q` (0.0..=1.0), to hdrhistogram precision.
    pub fn value_at_quantile(&self, q: f64) -> u64 {
        self.hist.value_at_quantile(q)
    }

    fn fold_into(&mut self, target: &mut LocalHist) {
        // Same bounds on both sides, so `add` cannot fail; if it ever did,
        // keep the samples locally rather than lose them.
        if target.hist.add(&self.hist).is_ok() {
            target.sum = target.sum.saturating_add(self.sum);
            self.hist.reset();
            self.sum = 0;
        }
    }

    /// Cumulative counts per bucket bound, plus +Inf.
    pub fn buckets(&self, bounds: &'static [u64]) -> BucketCounts {
        let mut cumulative = vec![0u64; bounds.len() + 1];
        for bin in self.hist.iter_recorded() {
            let top = self.hist.highest_equivalent(bin.value_iterated_to());
            let slot = bounds.partition_point(|&b| b < top);
            cumulative[slot] += bin.count_at_value();
        }
        for i in 1..cumulative.len() {
            cumulative[i] += cumulative[i - 1];
        }
        BucketCounts {
            bounds,
            cumulative,
            sum: self.sum,
        }
    }
}

/// The three histograms one shard records.
#[derive(Clone, Debug)]
pub struct HistogramSet {
    /// Request received -> block fully handed to the kernel, in microseconds.
    pub request_to_send: LocalHist,
    /// Handshake completed -> first unchoke, in microseconds.
    pub handshake_to_unchoke: LocalHist,
    /// Bytes per completed send.
    pub send_size: LocalHist,
}

impl Default for HistogramSet {
    fn default() -> Self {
        HistogramSet {
            request_to_send: LocalHist::with_max(LATENCY_MAX_US),
            handshake_to_unchoke: LocalHist::with_max(LATENCY_MAX_US),
            send_size: LocalHist::with_max(SIZE_MAX_BYTES),
        }
    }
}

impl HistogramSet {
    fn fold_into(&mut self, target: &mut HistogramSet) {
        self.request_to_send.fold_into(&mut target.request_to_send);
        self.handshake_to_unchoke
            .fold_into(&mut target.handshake_to_unchoke);
        self.send_size.fold_into(&mut target.send_size);
    }

    fn is_empty(&self) -> bool {
        self.request_to_send.count() == 0
            && self.handshake_to_unchoke.count() == 0
            && self.send_size.count() == 0
    }
}

/// The per-shard shared slots the exporter reads; cheap to clone.
#[derive(Clone, Debug)]
pub struct SharedHistograms {
    slots: Vec<Arc<Mutex<HistogramSet>>>,
}

impl SharedHistograms {
    /// One slot per shard.
    pub fn new(shards: usize) -> Self {
        SharedHistograms {
            slots: (0..shards).map(|_| Arc::default()).collect(),
        }
    }

    /// Number of shard slots.
    pub fn shards(&self) -> usize {
        self.slots.len()
    }

    /// The recording side for shard `index`; `None` if out of range.
    pub fn for_shard(&self, index: usize) -> Option<ShardHistograms> {
        let shared = self.slots.get(index)?.clone();
        Some(ShardHistograms {
            local: HistogramSet::default(),
            shared,
            last_publish: None,
        })
    }

    /// Bucket counts of every shard's published samples, merged.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut snap = HistogramSnapshot::empty();
        for slot in &self.slots {
            let set = lock(slot);
            snap.request_to_send
                .merge(&set.request_to_send.buckets(LATENCY_BUCKETS_US));
            snap.handshake_to_unchoke
                .merge(&set.handshake_to_unchoke.buckets(LATENCY_BUCKETS_US));
            snap.send_size
                .merge(&set.send_size.buckets(SIZE_BUCKETS_BYTES));
        }
        snap
    }

    /// All published samples merged into one set (for percentiles in logs
    /// and reports; the exporter uses [`SharedHistograms::snapshot`]).
    pub fn merged(&self) -> HistogramSet {
        let mut total = HistogramSet::default();
        for slot in &self.slots {
            let set = lock(slot);
            // Same bounds everywhere, so these additions cannot fail.
            let _ = total.request_to_send.hist.add(&set.request_to_send.hist);
            total.request_to_send.sum += set.request_to_send.sum;
            let _ = total
                .handshake_to_unchoke
                .hist
                .add(&set.handshake_to_unchoke.hist);
            total.handshake_to_unchoke.sum += set.handshake_to_unchoke.sum;
            let _ = total.send_size.hist.add(&set.send_size.hist);
            total.send_size.sum += set.send_size.sum;
        }
        total
    }
}

fn lock(m: &Mutex<HistogramSet>) -> MutexGuard<'_, HistogramSet> {
    // A panic while holding the lock cannot leave a histogram half-updated in
    // a way that matters for metrics; keep serving the data.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The recording side, owned by one shard thread. Recording is a plain
/// write; see the module doc for the call order.
#[derive(Debug)]
pub struct ShardHistograms {
    local: HistogramSet,
    shared: Arc<Mutex<HistogramSet>>,
    last_publish: Option<Instant>,
}

impl ShardHistograms {
    /// Request received -> block fully handed to the kernel (the send CQE).
    #[inline]
    pub fn record_request_to_send(&mut self, took: Duration) {
        self.local.request_to_send.record(micros(took));
    }

    /// Handshake completed -> the peer's first unchoke.
    #[inline]
    pub fn record_handshake_to_unchoke(&mut self, took: Duration) {
        self.local.handshake_to_unchoke.record(micros(took));
    }

    /// Bytes the kernel took in one completed send.
    #[inline]
    pub fn record_send_size(&mut self, bytes: u64) {
        self.local.send_size.record(bytes);
    }

    /// The samples not published yet.
    pub fn local(&self) -> &HistogramSet {
        &self.local
    }

    /// Publishes if [`PUBLISH_INTERVAL`] has passed since the last attempt
    /// that succeeded (or ever). Returns whether it published.
    pub fn publish_if_due(&mut self, now: Instant) -> bool {
        let due = self
            .last_publish
            .is_none_or(|last| now.saturating_duration_since(last) >= PUBLISH_INTERVAL);
        if due && self.publish() {
            self.last_publish = Some(now);
            return true;
        }
        false
    }

    /// Folds the local samples into the shared slot and resets them, unless
    /// the slot is locked by the exporter right now (then nothing happens and
    /// `false` is returned; the samples stay local). Never blocks.
    pub fn publish(&mut self) -> bool {
        if self.local.is_empty() {
            return true;
        }
        let mut shared = match self.shared.try_lock() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return false,
        };
        self.local.fold_into(&mut shared);
        true
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Cumulative bucket counts of one histogram (`cumulative.last()` is +Inf).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketCounts {
    pub bounds: &'static [u64],
    pub cumulative: Vec<u64>,
    pub sum: u64,
}

impl BucketCounts {
    fn empty(bounds: &'static [u64]) -> Self {
        BucketCounts {
            bounds,
            cumulative: vec![0; bounds.len() + 1],
            sum: 0,
        }
    }

    /// Total number of samples (the +Inf bucket).
    pub fn count(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }

    fn merge(&mut self, other: &BucketCounts) {
        for (a, b) in self.cumulative.iter_mut().zip(&other.cumulative) {
            *a += b;
        }
        self.sum = self.sum.saturating_add(other.sum);
    }

    /// Appends the Prometheus text form; recorded units are divided by
    /// `divisor` (1e6 for microseconds -> seconds; a division keeps bounds
    /// such as 0.00005 exact in decimal, a multiplication by 1e-6 would not).
    pub fn render(&self, out: &mut String, name: &str, help: &str, divisor: f64) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (bound, count) in self.bounds.iter().zip(&self.cumulative) {
            let le = *bound as f64 / divisor;
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {count}");
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum as f64 / divisor);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// The three merged histograms at one scrape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistogramSnapshot {
    pub request_to_send: BucketCounts,
    pub handshake_to_unchoke: BucketCounts,
    pub send_size: BucketCounts,
}

impl HistogramSnapshot {
    fn empty() -> Self {
        HistogramSnapshot {
            request_to_send: BucketCounts::empty(LATENCY_BUCKETS_US),
            handshake_to_unchoke: BucketCounts::empty(LATENCY_BUCKETS_US),
            send_size: BucketCounts::empty(SIZE_BUCKETS_BYTES),
        }
    }

    /// Appends all three in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        self.request_to_send.render(
            out,
            names::REQUEST_TO_SEND_SECONDS,
            "Time from a block request received to the block fully handed to the kernel.",
            1e6,
        );
        self.handshake_to_unchoke.render(
            out,
            names::HANDSHAKE_TO_UNCHOKE_SECONDS,
            "Time from a completed handshake to the peer's first unchoke.",
            1e6,
        );
        self.send_size.render(
            out,
            names::SEND_SIZE_BYTES,
            "Bytes per completed send operation.",
            1.0,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_exact_at_small_bounds_and_cumulative() {
        let shared = SharedHistograms::new(2);
        let mut a = shared.for_shard(0).unwrap();
        let mut b = shared.for_shard(1).unwrap();
        assert!(shared.for_shard(2).is_none());
        for us in [10, 50, 51, 100, 999, 1_000] {
            a.record_request_to_send(Duration::from_micros(us));
        }
        b.record_request_to_send(Duration::from_secs(31));
        b.record_request_to_send(Duration::from_secs(7200)); // clamped, still counted
        assert!(a.publish());
        assert!(b.publish());
        let snap = shared.snapshot();
        let r = &snap.request_to_send;
        // le=50us: 10, 50; le=100us: + 51, 100; le=1ms: + 999, 1000.
        assert_eq!(&r.cumulative[..5], &[2, 4, 4, 4, 6]);
        assert_eq!(r.cumulative[LATENCY_BUCKETS_US.len() - 1], 6, "le=30s");
        assert_eq!(r.count(), 8);
        assert_eq!(
            r.sum,
            10 + 50 + 51 + 100 + 999 + 1_000 + 31_000_000 + 7_200_000_000
        );
        assert!(r.cumulative.windows(2).all(|w| w[0] <= w[1]));
        // Published samples left the shard.
        assert_eq!(a.local().request_to_send.count(), 0);
    }

    #[test]
    fn publish_never_blocks_and_keeps_samples_when_busy() {
        let shared = SharedHistograms::new(1);
        let mut h = shared.for_shard(0).unwrap();
        h.record_send_size(16_397);
        {
            let _held = shared.slots[0].lock().unwrap();
            assert!(
                !h.publish(),
                "publish must give up while the exporter holds the lock"
            );
        }
        assert_eq!(h.local().send_size.count(), 1);
        let t0 = Instant::now();
        assert!(h.publish_if_due(t0));
        assert_eq!(shared.snapshot().send_size.count(), 1);
        h.record_send_size(100);
        assert!(
            !h.publish_if_due(t0 + Duration::from_millis(500)),
            "not due yet"
        );
        assert!(h.publish_if_due(t0 + PUBLISH_INTERVAL));
        let s = shared.snapshot().send_size;
        assert_eq!(s.cumulative[1], 1, "100 B is in le=256");
        assert_eq!(s.count(), 2);
        assert_eq!(s.sum, 16_497);
        assert_eq!(shared.merged().send_size.count(), 2);
    }

    #[test]
    fn render_is_a_consistent_prometheus_histogram() {
        let shared = SharedHistograms::new(1);
        let mut h = shared.for_shard(0).unwrap();
        let mut x: u64 = 1;
        for _ in 0..10_000 {
            // A spread of values over the whole range, deterministic.
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            h.record_request_to_send(Duration::from_micros((x >> 40) % 40_000_000));
            h.record_handshake_to_unchoke(Duration::from_micros((x >> 24) % 60_000_000));
            h.record_send_size((x >> 20) % 8_000_000);
        }
        h.publish();
        let mut out = String::new();
        shared.snapshot().render(&mut out);
        for name in names::HISTOGRAMS {
            let buckets: Vec<(String, u64)> = out
                .lines()
                .filter_map(|l| l.strip_prefix(&format!("{name}_bucket{{le=\"")))
                .map(|rest| {
                    let (le, n) = rest.split_once("\"} ").unwrap();
                    (le.to_string(), n.parse().unwrap())
                })
                .collect();
            let bounds: Vec<f64> = buckets[..buckets.len() - 1]
                .iter()
                .map(|(le, _)| le.parse().unwrap())
                .collect();
            assert!(
                bounds.windows(2).all(|w| w[0] < w[1]),
                "{name}: bounds ascend"
            );
            assert!(
                buckets.windows(2).all(|w| w[0].1 <= w[1].1),
                "{name}: monotone"
            );
            let (last_le, inf) = buckets.last().unwrap();
            assert_eq!(last_le, "+Inf");
            let count: u64 = out
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name}_count ")))
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(count, *inf, "{name}: _count equals +Inf bucket");
            assert_eq!(count, 10_000);
            let sum: f64 = out
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name}_sum ")))
                .unwrap()
                .parse()
                .unwrap();
            assert!(sum > 0.0);
        }
        assert!(out.contains("ringseed_request_to_send_seconds_bucket{le=\"0.00005\"}"));
        assert!(out.contains("ringseed_send_size_bytes_bucket{le=\"16384\"}"));
    }
}
