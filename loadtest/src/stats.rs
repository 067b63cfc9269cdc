//! Counters and latency histograms. Each generator thread owns one
//! [`Stats`] (no sharing on the hot path) and merges it at the end; the few
//! numbers the live line needs are published through [`Live`] atomics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;

/// Highest value the histograms record: 60 s in microseconds (larger
/// values are clamped).
const HIST_MAX: u64 = 60_000_000;

pub fn new_histogram() -> Histogram<u64> {
    // Bounds are constants that hdrhistogram accepts; 3 significant digits.
    Histogram::new_with_bounds(1, HIST_MAX, 3).expect("constant histogram bounds are valid")
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropReason {
    /// It downloaded everything (not an error; a new connection follows).
    Completed,
    /// `--churn` closed it on purpose.
    Churn,
    /// The run ended.
    RunEnded,
    PeerClosed,
    IoError,
    /// No data for the stall timeout.
    Stalled,
    /// Too many reject_request messages for blocks we keep asking for.
    TooManyRejects,
    ProtocolError,
    /// A completed piece did not match its hash (`--verify`).
    HashMismatch,
}

impl DropReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Completed => "completed",
            DropReason::Churn => "churn",
            DropReason::RunEnded => "run_ended",
            DropReason::PeerClosed => "peer_closed",
            DropReason::IoError => "io_error",
            DropReason::Stalled => "stalled",
            DropReason::TooManyRejects => "too_many_rejects",
            DropReason::ProtocolError => "protocol_error",
            DropReason::HashMismatch => "hash_mismatch",
        }
    }

    /// Reasons that mean something went wrong (fail the run's `ok`).
    pub fn is_error(self) -> bool {
        matches!(
            self,
            DropReason::ProtocolError | DropReason::HashMismatch | DropReason::IoError
        )
    }
}

/// Everything one thread measured.
#[derive(Debug, Clone)]
pub struct Stats {
    pub payload_bytes: u64,
    pub protocol_bytes_received: u64,
    pub blocks: u64,
    pub requests_sent: u64,
    pub rejects: u64,
    pub chokes: u64,
    pub unchokes: u64,
    pub pieces_completed: u64,
    pub pieces_verified: u64,
    pub bytes_verified: u64,
    pub hash_failures: u64,
    pub downloads_completed: u64,
    pub connect_attempts: u64,
    pub connections_established: u64,
    pub connections_failed: u64,
    pub dropped: BTreeMap<&'static str, u64>,
    pub protocol_errors: BTreeMap<&'static str, u64>,
    /// Request sent -> block fully received, microseconds.
    pub block_latency_us: Histogram<u64>,
    /// Connection established -> first unchoke, microseconds.
    pub unchoke_latency_us: Histogram<u64>,
    /// Payload throughput of each closed connection, KiB/s.
    pub conn_throughput_kib_s: Histogram<u64>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            payload_bytes: 0,
            protocol_bytes_received: 0,
            blocks: 0,
            requests_sent: 0,
            rejects: 0,
            chokes: 0,
            unchokes: 0,
            pieces_completed: 0,
            pieces_verified: 0,
            bytes_verified: 0,
            hash_failures: 0,
            downloads_completed: 0,
            connect_attempts: 0,
            connections_established: 0,
            connections_failed: 0,
            dropped: BTreeMap::new(),
            protocol_errors: BTreeMap::new(),
            block_latency_us: new_histogram(),
            unchoke_latency_us: new_histogram(),
            conn_throughput_kib_s: new_histogram(),
        }
    }
}

pub fn record(h: &mut Histogram<u64>, v: u64) {
    h.saturating_record(v.clamp(1, HIST_MAX));
}

impl Stats {
    pub fn count_drop(&mut self, r: DropReason) {
        *self.dropped.entry(r.as_str()).or_default() += 1;
    }

    pub fn count_protocol_error(&mut self, what: &'static str) {
        *self.protocol_errors.entry(what).or_default() += 1;
    }

    pub fn merge(&mut self, o: &Stats) {
        self.payload_bytes += o.payload_bytes;
        self.protocol_bytes_received += o.protocol_bytes_received;
        self.blocks += o.blocks;
        self.requests_sent += o.requests_sent;
        self.rejects += o.rejects;
        self.chokes += o.chokes;
        self.unchokes += o.unchokes;
        self.pieces_completed += o.pieces_completed;
        self.pieces_verified += o.pieces_verified;
        self.bytes_verified += o.bytes_verified;
        self.hash_failures += o.hash_failures;
        self.downloads_completed += o.downloads_completed;
        self.connect_attempts += o.connect_attempts;
        self.connections_established += o.connections_established;
        self.connections_failed += o.connections_failed;
        for (k, v) in &o.dropped {
            *self.dropped.entry(k).or_default() += v;
        }
        for (k, v) in &o.protocol_errors {
            *self.protocol_errors.entry(k).or_default() += v;
        }
        // Same bounds on both sides, so add cannot fail; ignore if it did.
        let _ = self.block_latency_us.add(&o.block_latency_us);
        let _ = self.unchoke_latency_us.add(&o.unchoke_latency_us);
        let _ = self.conn_throughput_kib_s.add(&o.conn_throughput_kib_s);
    }

    /// Number of drops that are errors.
    pub fn error_drops(&self) -> u64 {
        self.dropped
            .iter()
            .filter(|(k, _)| {
                [
                    DropReason::ProtocolError,
                    DropReason::HashMismatch,
                    DropReason::IoError,
                ]
                .iter()
                .any(|r| r.as_str() == **k)
            })
            .map(|(_, v)| v)
            .sum()
    }
}

/// Numbers the once-a-second live line reads while threads run.
#[derive(Debug, Default)]
pub struct Live {
    pub payload_bytes: AtomicU64,
    pub blocks: AtomicU64,
    pub active: AtomicU64,
    pub established: AtomicU64,
    pub failed: AtomicU64,
    pub errors: AtomicU64,
    pub completed: AtomicU64,
}

impl Live {
    pub fn add(c: &AtomicU64, v: u64) {
        if v != 0 {
            c.fetch_add(v, Ordering::Relaxed);
        }
    }
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}
