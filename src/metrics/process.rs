//! Process-level figures read from `/proc/self` at scrape time, and the
//! process-wide verification counters that `ringseed serve` fills.
//!
//! Nothing here is on a shard's path: the exporter thread reads `/proc` once
//! per scrape. Off Linux (no `/proc`) the figures are simply absent.

use std::fs;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// What `/proc/self` says about this process; `None` where it could not be read.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessStats {
    pub resident_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    pub threads: Option<u64>,
    pub cpu_seconds: Option<f64>,
}

impl ProcessStats {
    /// Reads `/proc/self/status`, `/proc/self/fd` and `/proc/self/stat`.
    pub fn read() -> Self {
        let status = fs::read_to_string("/proc/self/status").ok();
        let status = status.as_deref().unwrap_or("");
        ProcessStats {
            resident_bytes: status_field(status, "VmRSS:")
                .and_then(|v| v.trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|kib| kib.saturating_mul(1024)),
            open_fds: count_fds(),
            threads: status_field(status, "Threads:").and_then(|v| v.parse().ok()),
            cpu_seconds: fs::read_to_string("/proc/self/stat")
                .ok()
                .and_then(|s| parse_stat_cpu_ticks(&s))
                .map(|ticks| ticks as f64 / CLOCK_TICKS_PER_SEC),
        }
    }
}

/// `USER_HZ`: fixed at 100 by the Linux ABI for /proc on every architecture.
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

fn status_field<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(str::trim)
}

fn count_fds() -> Option<u64> {
    let entries = fs::read_dir("/proc/self/fd").ok()?;
    // The directory handle we are iterating with is itself one of the entries.
    let n = entries.filter(|e| e.is_ok()).count() as u64;
    Some(n.saturating_sub(1))
}

fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may contain spaces and parentheses: split
    // after the last ')'. utime and stime are fields 14 and 15 overall, so
    // 12th and 13th after the command.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Piece verification counters for the whole process (verification runs on
/// worker threads off the shards). `ringseed serve` calls
/// [`VerifyStats::queue`] when it schedules pieces and
/// [`VerifyStats::record_piece`] as each finishes.
#[derive(Debug, Default)]
pub struct VerifyStats {
    pub pieces_verified: AtomicU64,
    pub pieces_failed: AtomicU64,
    /// Queued and not checked yet; a gauge.
    pub pieces_pending: AtomicI64,
    pub bytes: AtomicU64,
    /// Nanoseconds spent hashing, summed over worker threads (so
    /// bytes/seconds is the per-thread hash rate).
    pub nanos: AtomicU64,
}

impl VerifyStats {
    /// `pieces` more pieces are scheduled for verification.
    pub fn queue(&self, pieces: u64) {
        self.pieces_pending
            .fetch_add(i64::try_from(pieces).unwrap_or(i64::MAX), Ordering::Relaxed);
    }

    /// One piece of `bytes` was checked in `took`; `ok` if its hash matched.
    pub fn record_piece(&self, ok: bool, bytes: u64, took: Duration) {
        let counter = if ok {
            &self.pieces_verified
        } else {
            &self.pieces_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.pieces_pending.fetch_sub(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Many pieces at once: `good` passed, `bad` failed, `bytes` hashed in
    /// `took` (summed over threads).
    pub fn record_many(&self, good: u64, bad: u64, bytes: u64, took: Duration) {
        self.pieces_verified.fetch_add(good, Ordering::Relaxed);
        self.pieces_failed.fetch_add(bad, Ordering::Relaxed);
        let n = i64::try_from(good + bad).unwrap_or(i64::MAX);
        self.pieces_pending.fetch_sub(n, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Pending pieces, never negative (a `record_piece` without `queue`
    /// must not show as a negative backlog).
    pub fn pending(&self) -> u64 {
        self.pieces_pending.load(Ordering::Relaxed).max(0) as u64
    }

    pub fn seconds(&self) -> f64 {
        self.nanos.load(Ordering::Relaxed) as f64 / 1e9
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_formats() {
        let status = "Name:\tringseed\nVmRSS:\t   12345 kB\nThreads:\t7\nSigQ:\t0/1\n";
        assert_eq!(status_field(status, "Threads:"), Some("7"));
        assert_eq!(status_field(status, "VmRSS:"), Some("12345 kB"));
        assert_eq!(status_field("Name: x\n", "Threads:"), None);
        let stat = "42 (a) b) (c) S 1 42 42 0 -1 4194560 100 0 0 0 250 37 0 0 20 0 3 0";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(287));
        assert_eq!(parse_stat_cpu_ticks("42 (x) S 1"), None);
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn reads_this_process() {
        let p = ProcessStats::read();
        assert!(p.resident_bytes.unwrap() > 1 << 20, "{p:?}");
        assert!(p.open_fds.unwrap() >= 3, "{p:?}");
        assert!(p.threads.unwrap() >= 1, "{p:?}");
        assert!(p.cpu_seconds.unwrap() >= 0.0, "{p:?}");
    }

    #[test]
    fn verify_stats_count_and_never_go_negative() {
        let v = VerifyStats::default();
        v.queue(2);
        v.record_piece(true, 1 << 20, Duration::from_millis(500));
        v.record_piece(false, 1 << 20, Duration::from_millis(250));
        v.record_piece(true, 10, Duration::ZERO);
        assert_eq!(v.pieces_verified.load(Ordering::Relaxed), 2);
        assert_eq!(v.pieces_failed.load(Ordering::Relaxed), 1);
        assert_eq!(v.pending(), 0);
        assert_eq!(v.bytes.load(Ordering::Relaxed), (2 << 20) + 10);
        assert!((v.seconds() - 0.75).abs() < 1e-9);
    }
}
