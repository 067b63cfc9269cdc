//! The connections' own timers, sans-IO: once a second (the shard's tick)
//! every open connection is checked for a send that makes no progress
//! (the send-progress timeout, [`super::sendwatch`]) and for the peer
//! protocol's own timeouts (handshake, idle, keep-alive due:
//! `PeerState::handle_tick`); its protocol counters move into the shard's
//! stats on the way.
//!
//! The one thing the core cannot know is how much of a TCP socket's send
//! queue the peer has not read yet (an ioctl): the driver passes it in as
//! `unsent`, asked only for connections that need it.

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use crate::wire::{CloseReason, PeerState};

use super::super::stats::{CloseKind, RejectReason, ShardStats};
use super::conn::Carrier;
use super::policy::Conns;

/// One pass over the open connections at `now`: those to close, with why,
/// go into `to_close` (the driver closes them); those whose timers queued
/// something (a keep-alive) are marked dirty.
///
/// `unsent(fd)`: the bytes in a TCP socket's send queue not yet read by
/// the peer, asked for connections past their handshake only (uTP has no
/// such queue: a peer that stops reading closes its window, and a send
/// waiting for room is a send in flight).
pub fn tick(
    now: Instant,
    send_timeout: Duration,
    cx: &mut Conns<'_>,
    stats: &ShardStats,
    unsent: impl Fn(&OwnedFd) -> u32,
    to_close: &mut Vec<(u32, CloseKind)>,
) {
    for (id, c) in cx.table.iter_mut() {
        let idx = id.index();
        if c.closing.is_some() {
            continue;
        }
        fold_counters(stats, &mut c.peer);
        // A peer that stopped reading: keep-alives or requests from it do
        // not matter, it cannot hold its send (or the bytes in its socket's
        // queue) forever.
        let in_flight = c.send_slot.is_some();
        let fd = match &c.carrier {
            Carrier::Tcp(fd) if c.peer.is_handshake_complete() => Some(fd),
            _ => None,
        };
        if c.send_watch
            .stalled(now, send_timeout, in_flight, || fd.map(&unsent))
        {
            tracing::debug!(peer = %c.remote, in_flight, "peer does not read; closing it");
            to_close.push((idx, CloseKind::SendTimeout));
            continue;
        }
        if let Err(reason) = c.peer.handle_tick(now) {
            c.last_reason = Some(reason);
            to_close.push((idx, close_kind(reason)));
        } else if !c.peer.poll_transmit().is_empty() && !c.dirty {
            c.dirty = true;
            cx.dirty.push(idx);
        }
    }
}

/// Move a peer's protocol counters into the shard's stats.
pub fn fold_counters(stats: &ShardStats, peer: &mut PeerState) {
    use crate::wire::RejectReason as Wire;
    let pc = peer.take_counters();
    ShardStats::add(&stats.requests, pc.requests_received);
    ShardStats::add(&stats.cancelled, pc.cancels_matched);
    ShardStats::add(&stats.replies_dropped, pc.replies_dropped);
    for r in Wire::ALL {
        let n = pc.rejected(r);
        if n == 0 {
            continue;
        }
        let reason = match r {
            Wire::Choked | Wire::ChokeFlushed => RejectReason::Choked,
            Wire::QueueFull => RejectReason::QueueFull,
            Wire::ZeroLength | Wire::OutOfRange => RejectReason::OutOfRange,
            Wire::NotHave => RejectReason::Unavailable,
        };
        for _ in 0..n {
            stats.reject(reason);
        }
    }
}

/// Map a protocol close reason to its metrics group.
pub fn close_kind(reason: CloseReason) -> CloseKind {
    match reason {
        CloseReason::HandshakeTimeout | CloseReason::IdleTimeout => CloseKind::Timeout,
        CloseReason::SendBacklog | CloseReason::TooManyRequests | CloseReason::UnrequestedData => {
            CloseKind::Flood
        }
        _ => CloseKind::ProtocolError,
    }
}
