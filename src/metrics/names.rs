//! Every metric ringseed exports, by name: `ringseed_<thing>_<unit>`, with
//! `_total` for counters. Per-shard series carry the label [`SHARD`]; no
//! series is labelled by peer, and none by torrent (a per-torrent label behind
//! an opt-in flag with a cap is not built yet).
//!
//! Dashboards and alerts query these names; `tests/dashboard.rs` proves that
//! every name a dashboard panel queries is exported.

/// Label: the shard index ("0", "1", ...).
pub const SHARD: &str = "shard";
/// Label: "tcp" or "utp", on `connections` and `payload_bytes_total`.
pub const TRANSPORT: &str = "transport";
/// Label: why something was rejected, closed or failed.
pub const REASON: &str = "reason";

// Traffic (counters, per shard).
/// Piece payload bytes handed to the kernel.
pub const PAYLOAD_BYTES: &str = "ringseed_payload_bytes_total";
/// Non-payload protocol bytes sent (headers, handshakes, bitfields, ...).
pub const PROTOCOL_BYTES: &str = "ringseed_protocol_bytes_total";
/// Blocks fully handed to the kernel.
pub const BLOCKS_SERVED: &str = "ringseed_blocks_served_total";
/// Block requests received.
pub const REQUESTS: &str = "ringseed_requests_total";
/// Block requests rejected, by `reason`.
pub const REQUESTS_REJECTED: &str = "ringseed_requests_rejected_total";
/// Block requests cancelled by the peer before they were sent.
pub const REQUESTS_CANCELLED: &str = "ringseed_requests_cancelled_total";
/// Replies a peer provoked (metadata pieces, hashes, rejects) dropped because
/// it was over its per-connection byte budget (it does not read).
pub const PEER_REPLIES_DROPPED: &str = "ringseed_peer_replies_dropped_total";
/// Send operations completed.
pub const SENDS: &str = "ringseed_sends_total";
/// Send operations that the kernel completed only in part.
pub const PARTIAL_SENDS: &str = "ringseed_partial_sends_total";
/// Blocks whose pages were not resident and were read asynchronously first.
pub const COLD_READS: &str = "ringseed_cold_reads_total";

// Connections (per shard).
/// Open peer connections (gauge).
pub const CONNECTIONS: &str = "ringseed_connections";
/// Connections accepted.
pub const CONNECTIONS_ACCEPTED: &str = "ringseed_connections_accepted_total";
/// Connections closed, by `reason`.
pub const CONNECTIONS_CLOSED: &str = "ringseed_connections_closed_total";
/// Handshakes that failed, by `reason`.
pub const HANDSHAKE_FAILURES: &str = "ringseed_handshake_failures_total";
/// accept(2) errors (EMFILE, ENOBUFS, ...).
pub const ACCEPT_ERRORS: &str = "ringseed_accept_errors_total";

// uTP on the shards' UDP sockets (per shard).
/// Datagrams received on the shard's UDP socket.
pub const UTP_DATAGRAMS: &str = "ringseed_utp_datagrams_received_total";
/// `ST_RESET`s sent in answer to `SYN`s that are not served.
pub const UTP_RESETS_SENT: &str = "ringseed_utp_resets_sent_total";
/// uTP connections accepted and served like TCP peers (`--utp serve`).
pub const UTP_CONNECTIONS_ACCEPTED: &str = "ringseed_utp_connections_accepted_total";
/// Datagrams dropped or left unanswered, by `reason` (malformed, not_syn,
/// rate_limited, truncated, send_failed, recv_error).
pub const UTP_DATAGRAMS_DROPPED: &str = "ringseed_utp_datagrams_dropped_total";

// Choker (per shard).
/// Peers currently unchoked (gauge).
pub const UNCHOKED_PEERS: &str = "ringseed_unchoked_peers";
/// Optimistic unchokes performed.
pub const OPTIMISTIC_UNCHOKES: &str = "ringseed_optimistic_unchokes_total";

// Data changing on disk (process-wide, storage::watch).
/// Served files found changed on disk (one per burst of changes).
pub const DATA_FILES_CHANGED: &str = "ringseed_data_files_changed_total";
/// Live pieces withdrawn because their file changed.
pub const DATA_PIECES_WITHDRAWN: &str = "ringseed_data_pieces_withdrawn_total";
/// Withdrawn pieces re-verified, by `result` (ok: live again, failed).
pub const DATA_PIECES_REVERIFIED: &str = "ringseed_data_pieces_reverified_total";
/// Served files under a read lease (writers wait for us) (gauge).
pub const DATA_FILES_LEASED: &str = "ringseed_data_files_leased";
/// Lease breaks: another process opened a served file for writing.
pub const DATA_LEASE_BREAKS: &str = "ringseed_data_lease_breaks_total";
/// Lease breaks that had to close slow peers' connections to let the
/// writer go.
pub const DATA_FENCES_FORCED: &str = "ringseed_data_fences_forced_total";
// Super-seeding (counters, per shard).
/// Pieces offered to super-seeded peers (one `have` each).
pub const SUPERSEED_OFFERS: &str = "ringseed_superseed_offers_total";
/// BEP 6 `suggest_piece` messages sent with super-seed offers.
pub const SUPERSEED_SUGGESTS: &str = "ringseed_superseed_suggests_total";

// Upload cap (per shard).
/// The box-wide upload cap, reported by shard 0 (the other shards report
/// 0, so the sum over shards is the cap); 0 = unlimited (gauge).
pub const UPLOAD_LIMIT: &str = "ringseed_upload_limit_bytes_per_second";
/// Connections waiting for upload tokens now (gauge).
pub const UPLOAD_THROTTLED_CONNECTIONS: &str = "ringseed_upload_throttled_connections";
/// Seconds connections spent waiting for upload tokens, summed.
pub const UPLOAD_THROTTLE_WAIT_SECONDS: &str = "ringseed_upload_throttle_wait_seconds_total";

// Data verification (process-wide).
/// Pieces that passed their hash check.
pub const PIECES_VERIFIED: &str = "ringseed_pieces_verified_total";
/// Pieces that failed their hash check.
pub const PIECES_FAILED: &str = "ringseed_pieces_failed_total";
/// Torrents by `state` (verifying, serving, draining) (gauge).
pub const TORRENTS: &str = "ringseed_torrents";
/// Torrents `added`, `removed`, `replaced` while serving.
pub const TORRENT_CHANGES: &str = "ringseed_torrent_changes_total";
/// Pieces queued for verification and not checked yet (gauge).
pub const PIECES_PENDING: &str = "ringseed_pieces_pending";
/// Bytes hashed by verification.
pub const VERIFY_BYTES: &str = "ringseed_verify_bytes_total";
/// Wall-clock seconds spent verifying.
pub const VERIFY_SECONDS: &str = "ringseed_verify_seconds_total";

// Latency and size histograms (merged over shards).
/// From a block request received to the block fully handed to the kernel.
pub const REQUEST_TO_SEND_SECONDS: &str = "ringseed_request_to_send_seconds";
/// From a completed handshake to the first unchoke.
pub const HANDSHAKE_TO_UNCHOKE_SECONDS: &str = "ringseed_handshake_to_unchoke_seconds";
/// Bytes per completed send operation.
pub const SEND_SIZE_BYTES: &str = "ringseed_send_size_bytes";

// Process.
/// Resident set size.
pub const RESIDENT_MEMORY_BYTES: &str = "ringseed_process_resident_memory_bytes";
/// Open file descriptors.
pub const OPEN_FDS: &str = "ringseed_process_open_fds";
/// OS threads.
pub const THREADS: &str = "ringseed_process_threads";
/// User plus system CPU time.
pub const CPU_SECONDS: &str = "ringseed_process_cpu_seconds_total";
/// Always 1, labelled `version` and `commit`.
pub const BUILD_INFO: &str = "ringseed_build_info";

/// Every metric family name, for tests and documentation.
pub const ALL: &[&str] = &[
    PAYLOAD_BYTES,
    PROTOCOL_BYTES,
    BLOCKS_SERVED,
    REQUESTS,
    REQUESTS_REJECTED,
    REQUESTS_CANCELLED,
    PEER_REPLIES_DROPPED,
    SENDS,
    PARTIAL_SENDS,
    COLD_READS,
    CONNECTIONS,
    CONNECTIONS_ACCEPTED,
    CONNECTIONS_CLOSED,
    HANDSHAKE_FAILURES,
    ACCEPT_ERRORS,
    UTP_DATAGRAMS,
    UTP_RESETS_SENT,
    UTP_CONNECTIONS_ACCEPTED,
    UTP_DATAGRAMS_DROPPED,
    UNCHOKED_PEERS,
    OPTIMISTIC_UNCHOKES,
    DATA_FILES_CHANGED,
    DATA_PIECES_WITHDRAWN,
    DATA_PIECES_REVERIFIED,
    DATA_FILES_LEASED,
    DATA_LEASE_BREAKS,
    DATA_FENCES_FORCED,
    SUPERSEED_OFFERS,
    SUPERSEED_SUGGESTS,
    UPLOAD_LIMIT,
    UPLOAD_THROTTLED_CONNECTIONS,
    UPLOAD_THROTTLE_WAIT_SECONDS,
    PIECES_VERIFIED,
    PIECES_FAILED,
    PIECES_PENDING,
    VERIFY_BYTES,
    VERIFY_SECONDS,
    TORRENTS,
    TORRENT_CHANGES,
    REQUEST_TO_SEND_SECONDS,
    HANDSHAKE_TO_UNCHOKE_SECONDS,
    SEND_SIZE_BYTES,
    RESIDENT_MEMORY_BYTES,
    OPEN_FDS,
    THREADS,
    CPU_SECONDS,
    BUILD_INFO,
];

/// Metric families that are counters (and must end in `_total`).
pub const COUNTERS: &[&str] = &[
    PAYLOAD_BYTES,
    PROTOCOL_BYTES,
    BLOCKS_SERVED,
    REQUESTS,
    REQUESTS_REJECTED,
    REQUESTS_CANCELLED,
    PEER_REPLIES_DROPPED,
    SENDS,
    PARTIAL_SENDS,
    COLD_READS,
    CONNECTIONS_ACCEPTED,
    CONNECTIONS_CLOSED,
    HANDSHAKE_FAILURES,
    ACCEPT_ERRORS,
    UTP_DATAGRAMS,
    UTP_RESETS_SENT,
    UTP_CONNECTIONS_ACCEPTED,
    UTP_DATAGRAMS_DROPPED,
    OPTIMISTIC_UNCHOKES,
    DATA_FILES_CHANGED,
    DATA_PIECES_WITHDRAWN,
    DATA_PIECES_REVERIFIED,
    DATA_LEASE_BREAKS,
    DATA_FENCES_FORCED,
    SUPERSEED_OFFERS,
    SUPERSEED_SUGGESTS,
    UPLOAD_THROTTLE_WAIT_SECONDS,
    PIECES_VERIFIED,
    PIECES_FAILED,
    VERIFY_BYTES,
    VERIFY_SECONDS,
    TORRENT_CHANGES,
    CPU_SECONDS,
];

/// Metric families that are histograms.
pub const HISTOGRAMS: &[&str] = &[
    REQUEST_TO_SEND_SECONDS,
    HANDSHAKE_TO_UNCHOKE_SECONDS,
    SEND_SIZE_BYTES,
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn valid_name(n: &str) -> bool {
        let mut chars = n.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    }

    #[test]
    fn names_follow_the_convention() {
        let unique: HashSet<_> = ALL.iter().collect();
        assert_eq!(unique.len(), ALL.len(), "duplicate metric name");
        for name in ALL {
            assert!(name.starts_with("ringseed_"), "{name}");
            assert!(valid_name(name), "{name}");
            let counter = COUNTERS.contains(name);
            assert_eq!(
                name.ends_with("_total"),
                counter,
                "{name}: `_total` iff counter"
            );
            assert!(
                !name.ends_with("_bucket") && !name.ends_with("_count") && !name.ends_with("_sum")
            );
        }
        for name in COUNTERS.iter().chain(HISTOGRAMS) {
            assert!(ALL.contains(name), "{name} missing from ALL");
        }
        for name in HISTOGRAMS {
            assert!(
                name.ends_with("_seconds") || name.ends_with("_bytes"),
                "{name}: unit suffix"
            );
        }
    }
}
