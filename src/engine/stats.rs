//! Shard-local counters. Each shard is the only writer of its own
//! `ShardStats` (relaxed atomics: a plain add on x86, no contention); the
//! metrics exporter reads them when Prometheus scrapes.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Why a connection ended (a metrics label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseKind {
    PeerClosed,
    Timeout,
    ProtocolError,
    Limit,
    Shutdown,
    IoError,
}

impl CloseKind {
    pub const ALL: [CloseKind; 6] = [
        CloseKind::PeerClosed,
        CloseKind::Timeout,
        CloseKind::ProtocolError,
        CloseKind::Limit,
        CloseKind::Shutdown,
        CloseKind::IoError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CloseKind::PeerClosed => "peer_closed",
            CloseKind::Timeout => "timeout",
            CloseKind::ProtocolError => "protocol_error",
            CloseKind::Limit => "limit",
            CloseKind::Shutdown => "shutdown",
            CloseKind::IoError => "io_error",
        }
    }
}

#[derive(Default, Debug)]
pub struct ShardStats {
    pub connections: AtomicI64,
    pub accepted: AtomicU64,
    pub closed: [AtomicU64; 6],
    pub payload_bytes: AtomicU64,
    pub protocol_bytes: AtomicU64,
    pub blocks_served: AtomicU64,
    pub requests: AtomicU64,
    pub rejected: AtomicU64,
    pub cancelled: AtomicU64,
    pub cold_reads: AtomicU64,
    pub sends: AtomicU64,
    pub partial_sends: AtomicU64,
    pub unchoked: AtomicI64,
    pub optimistic_unchokes: AtomicU64,
    pub accept_errors: AtomicU64,
}

impl ShardStats {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub fn closed(&self, kind: CloseKind) -> &AtomicU64 {
        &self.closed[CloseKind::ALL.iter().position(|k| *k == kind).unwrap_or(0)]
    }

    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}
