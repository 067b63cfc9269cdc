//! A new connection's admission, sans-IO: a TCP socket just accepted or a
//! uTP connection just set up is let in within this shard's limit
//! (`--max-connections-per-shard`) and the box's (`--max-connections`,
//! `--max-per-ip`, counted over every shard, IPv6 per /64 by default), and
//! gets its slot in the table. The driver then arms its receive.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::wire::{PeerConfig, PeerState};

use super::super::limits::ConnLimits;
use super::super::stats::{CloseKind, ShardStats};
use super::conn::{Carrier, Conn};
use super::table::{ConnId, ConnTable};

/// The limits a shard admits connections within.
pub struct Admit<'a> {
    /// This shard's connections at most.
    pub per_shard: usize,
    /// The box-wide counts, shared by every shard.
    pub limits: &'a ConnLimits,
    pub peer: &'a PeerConfig,
}

/// A connection from `remote` arrived on `carrier`: admit it and return its
/// id, or give the carrier back (`Err`) when a limit refuses it, counted as
/// closed for `limit`; the driver drops it (closing a socket) or forgets
/// the uTP connection.
pub fn admit(
    now: Instant,
    table: &mut ConnTable<Conn>,
    admit: &Admit<'_>,
    stats: &ShardStats,
    carrier: Carrier,
    remote: SocketAddr,
) -> Result<ConnId, Carrier> {
    if table.len() >= admit.per_shard {
        ShardStats::add(stats.closed(CloseKind::Limit), 1);
        return Err(carrier);
    }
    // Box-wide: the total and the per-source count, whatever shard.
    let Ok(admission) = admit.limits.admit(remote.ip()) else {
        ShardStats::add(stats.closed(CloseKind::Limit), 1);
        return Err(carrier);
    };
    ShardStats::add(&stats.accepted, 1);
    stats.connections.fetch_add(1, Ordering::Relaxed);
    if matches!(carrier, Carrier::Utp(_)) {
        stats.utp_connections.fetch_add(1, Ordering::Relaxed);
    }
    let peer = PeerState::new(now, admit.peer, remote);
    Ok(table.insert_with(|id| Conn::new(carrier, id, remote, admission, peer, now)))
}
