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
    /// An in-flight send made no progress for the send timeout, or a peer
    /// kept alive only by keep-alives left our bytes unread: it does not read.
    SendTimeout,
    /// The peer provoked replies far beyond its byte budget without reading
    /// them, or flooded requests (more than 4x `reqq` outstanding).
    Flood,
}

impl CloseKind {
    pub const ALL: [CloseKind; 8] = [
        CloseKind::PeerClosed,
        CloseKind::Timeout,
        CloseKind::ProtocolError,
        CloseKind::Limit,
        CloseKind::Shutdown,
        CloseKind::IoError,
        CloseKind::SendTimeout,
        CloseKind::Flood,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CloseKind::PeerClosed => "peer_closed",
            CloseKind::Timeout => "timeout",
            CloseKind::ProtocolError => "protocol_error",
            CloseKind::Limit => "limit",
            CloseKind::Shutdown => "shutdown",
            CloseKind::IoError => "io_error",
            CloseKind::SendTimeout => "send_timeout",
            CloseKind::Flood => "flood",
        }
    }
}

/// Why a block request was rejected (a metrics label). Added by the metrics
/// branch; the engine bumps it through [`ShardStats::reject`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectReason {
    /// More requests outstanding than the advertised `reqq`.
    QueueFull,
    /// A request while the peer is choked (BEP 6 reject_request).
    Choked,
    /// Piece index, offset or length outside the torrent.
    OutOfRange,
    /// A piece we do not have verified.
    Unavailable,
}

impl RejectReason {
    pub const ALL: [RejectReason; 4] = [
        RejectReason::QueueFull,
        RejectReason::Choked,
        RejectReason::OutOfRange,
        RejectReason::Unavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::QueueFull => "queue_full",
            RejectReason::Choked => "choked",
            RejectReason::OutOfRange => "out_of_range",
            RejectReason::Unavailable => "unavailable",
        }
    }
}

/// Why a handshake failed (a metrics label). Added by the metrics branch; the
/// engine bumps it through [`ShardStats::handshake_failed`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// Not the BitTorrent protocol string, or a malformed handshake.
    Malformed,
    /// An info-hash we do not serve.
    UnknownInfoHash,
    /// The handshake did not arrive within the handshake timeout.
    Timeout,
    /// The peer closed or reset the connection mid-handshake.
    Closed,
}

impl HandshakeFailure {
    pub const ALL: [HandshakeFailure; 4] = [
        HandshakeFailure::Malformed,
        HandshakeFailure::UnknownInfoHash,
        HandshakeFailure::Timeout,
        HandshakeFailure::Closed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeFailure::Malformed => "malformed",
            HandshakeFailure::UnknownInfoHash => "unknown_info_hash",
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::Closed => "closed",
        }
    }
}

#[derive(Default, Debug)]
pub struct ShardStats {
    pub connections: AtomicI64,
    pub accepted: AtomicU64,
    pub closed: [AtomicU64; 8],
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
    /// MSE handshakes that selected plaintext (zero-copy path kept).
    pub mse_plaintext: AtomicU64,
    /// MSE handshakes that selected RC4 (copying path).
    pub mse_rc4: AtomicU64,
    /// MSE handshakes that failed (junk, unknown torrent, no common method).
    pub mse_failed: AtomicU64,
    /// Rejections by [`RejectReason`] (index as in `RejectReason::ALL`);
    /// `rejected` stays the total. Use [`ShardStats::reject`].
    pub rejected_by: [AtomicU64; 4],
    /// Failed handshakes by [`HandshakeFailure`] (index as in
    /// `HandshakeFailure::ALL`). Use [`ShardStats::handshake_failed`].
    pub handshake_failures: [AtomicU64; 4],
    /// Super-seeding: pieces offered to peers with `have`.
    pub superseed_offers: AtomicU64,
    /// Super-seeding: BEP 6 `suggest_piece` messages sent with offers.
    pub superseed_suggests: AtomicU64,
    /// Replies a peer provoked (metadata pieces, hashes, rejects) that were
    /// dropped because it was over its byte budget (it does not read).
    pub replies_dropped: AtomicU64,
    /// Upload cap: connections waiting for tokens now (gauge).
    pub throttled: AtomicI64,
    /// Upload cap: nanoseconds connections spent waiting for tokens, summed.
    pub throttle_wait_nanos: AtomicU64,
    /// Upload cap: the box-wide cap in bytes per second on shard 0, 0 on
    /// the other shards and when unlimited (gauge, set once at start).
    pub upload_limit: AtomicU64,
    /// uTP: open connections (of `connections`; the rest are TCP).
    pub utp_connections: AtomicI64,
    /// uTP: piece payload bytes sent on uTP connections (of
    /// `payload_bytes`; the rest went over TCP).
    pub utp_payload_bytes: AtomicU64,
    /// uTP: datagrams received on the shard's UDP socket.
    pub utp_datagrams: AtomicU64,
    /// uTP: `ST_RESET`s sent (answers to `SYN`s we do not serve).
    pub utp_resets_sent: AtomicU64,
    /// uTP: connections accepted and handed to the engine (`--utp serve`).
    pub utp_accepted: AtomicU64,
    /// uTP: datagrams dropped, by [`UtpDrop`] (index as in
    /// `UtpDrop::LABELS`). Use [`ShardStats::utp_drop`].
    pub utp_dropped: [AtomicU64; 6],
}

/// Why a uTP datagram was dropped or got no answer (a metrics label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UtpDrop {
    /// Refused by the sans-IO side: malformed, not a SYN, rate limited.
    Refused(crate::utp::DropReason),
    /// Longer than the receive buffer.
    Truncated,
    /// The answer could not be sent (socket buffer full, ...).
    SendFailed,
    /// The receive operation failed.
    RecvError,
}

impl UtpDrop {
    pub const LABELS: [&'static str; 6] = [
        "malformed",
        "not_syn",
        "rate_limited",
        "truncated",
        "send_failed",
        "recv_error",
    ];

    pub fn index(self) -> usize {
        match self {
            UtpDrop::Refused(r) => r.index(),
            UtpDrop::Truncated => 3,
            UtpDrop::SendFailed => 4,
            UtpDrop::RecvError => 5,
        }
    }
}

impl ShardStats {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub fn closed(&self, kind: CloseKind) -> &AtomicU64 {
        &self.closed[CloseKind::ALL.iter().position(|k| *k == kind).unwrap_or(0)]
    }

    /// Counts one rejected request: the total and its reason.
    pub fn reject(&self, reason: RejectReason) {
        Self::add(&self.rejected, 1);
        let i = RejectReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        Self::add(&self.rejected_by[i], 1);
    }

    /// Counts one failed handshake by its reason.
    pub fn handshake_failed(&self, reason: HandshakeFailure) {
        let i = HandshakeFailure::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        Self::add(&self.handshake_failures[i], 1);
    }

    /// Counts one dropped uTP datagram by its reason.
    pub fn utp_drop(&self, reason: UtpDrop) {
        Self::add(&self.utp_dropped[reason.index()], 1);
    }

    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}
