//! One peer connection as a shard holds it: what carries its bytes (a TCP
//! socket or a uTP connection), the sans-IO [`PeerState`], its block
//! pipeline, and which operations are in flight for it.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::wire::PeerState;

use super::super::catalog::ServedTorrent;
use super::super::limits::Admission;
use super::super::stats::CloseKind;
use super::egress::{ConnEgress, Credited};
use super::pipeline::BlockPipeline;
use super::sendwatch::SendWatch;
use super::table::ConnId;

/// Where a connection of a torrent being taken out stands (see
/// `engine::shard::drain`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drain {
    /// Still served until then.
    Grace { until: Instant },
    /// Choked; waiting for its sends and reads in flight to complete.
    Choked,
    /// Our FIN is out; waiting for the peer's until `deadline`.
    FinSent { deadline: Instant },
}

/// How long a drained connection waits for the peer's FIN after ours.
pub const FIN_WAIT: Duration = Duration::from_secs(5);

/// What a draining connection needs next ([`Conn::drain_step`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrainStep {
    /// Nothing yet: its grace, its sends or the peer's FIN are still due.
    Wait,
    /// Its grace is over: choke it and take it out of every policy
    /// (`Policies::handle_drain`).
    Choke,
    /// Nothing of it is left to send: shut our side of the stream (FIN
    /// after the last whole message) and set [`Drain::FinSent`] with this
    /// deadline.
    SendFin { deadline: Instant },
    /// The peer did not close within [`FIN_WAIT`]: close it.
    Close,
}

/// What carries a connection's bytes.
#[derive(Debug)]
pub enum Carrier {
    /// A TCP socket: io_uring receives and sends on it.
    Tcp(OwnedFd),
    /// A uTP connection of the shard's endpoint, by its link index (see
    /// `shard::utp`): received bytes are fed in, and a send slot's bytes
    /// are copied into the uTP send buffer, in the shard's own loop.
    Utp(u32),
}

pub struct Conn {
    pub carrier: Carrier,
    /// Its name in the shard's table (operations carry it back).
    pub id: ConnId,
    pub remote: SocketAddr,
    /// Its place in the box-wide connection counts, given back on close.
    pub admission: Admission,
    pub peer: PeerState,
    /// The torrent this peer is attached to, once the handshake named it.
    pub torrent: Option<Arc<ServedTorrent>>,
    /// Multishot receive is armed (its final CQE has not arrived).
    pub recv_armed: bool,
    /// Send slot in flight, if any (at most one keeps the stream ordered).
    pub send_slot: Option<u32>,
    /// Send slots whose SEND_ZC notifications are still due.
    pub zc_pending: u32,
    /// Where the blocks it asked for wait: parked, being read from disk,
    /// read and ready to send.
    pub pipe: BlockPipeline,
    /// The send-progress timeout's clock: a peer that stops reading is
    /// closed.
    pub send_watch: SendWatch,
    /// Set when closing: the connection is torn down once nothing is in
    /// flight.
    pub closing: Option<CloseKind>,
    /// In the shard's dirty list (has something to send).
    pub dirty: bool,
    /// Registered with the choker (handshake done).
    pub in_choker: bool,
    /// Last interest state passed to the choker.
    pub interested: bool,
    pub accepted_at: Instant,
    /// The handshake-to-unchoke latency was recorded.
    pub unchoke_recorded: bool,
    /// Plaintext / MSE handshake / RC4.
    pub stream: super::super::stream::StreamMode,
    /// Bytes that must go out before anything `peer` queues (the MSE
    /// handshake reply).
    pub pre_tx: Vec<u8>,
    /// Why the peer state machine asked to close, if it did.
    pub last_reason: Option<crate::wire::CloseReason>,
    /// Upload-cap credit and queue state; `None` when no cap applies to
    /// this connection (the uncapped send path).
    pub egress: Option<ConnEgress>,
    /// Registered with its torrent's super-seed selector.
    pub in_superseed: bool,
    /// Its extension handshake was looked at for a `ringseed_ledger`.
    pub ledger_seen: bool,
    /// Its torrent is being taken out (see `engine::shard::drain`).
    pub drain: Option<Drain>,
}

impl Conn {
    pub fn new(
        carrier: Carrier,
        id: ConnId,
        remote: SocketAddr,
        admission: Admission,
        peer: PeerState,
        now: Instant,
    ) -> Self {
        Self {
            carrier,
            id,
            remote,
            admission,
            peer,
            torrent: None,
            recv_armed: false,
            send_slot: None,
            zc_pending: 0,
            pipe: BlockPipeline::default(),
            send_watch: SendWatch::new(now),
            closing: None,
            dirty: false,
            in_choker: false,
            interested: false,
            accepted_at: now,
            unchoke_recorded: false,
            last_reason: None,
            stream: super::super::stream::StreamMode::Detect(Vec::new()),
            pre_tx: Vec::new(),
            egress: None,
            in_superseed: false,
            ledger_seen: false,
            drain: None,
        }
    }

    /// The TCP socket, if this is a TCP connection.
    pub fn fd(&self) -> Option<&OwnedFd> {
        match &self.carrier {
            Carrier::Tcp(fd) => Some(fd),
            Carrier::Utp(_) => None,
        }
    }

    /// The socket for io_uring operations; -1 (never valid) for uTP, which
    /// has none.
    pub fn raw_fd(&self) -> RawFd {
        self.fd().map_or(-1, AsRawFd::as_raw_fd)
    }

    /// The uTP link carrying this connection, if it is a uTP one.
    pub fn utp_link(&self) -> Option<u32> {
        match self.carrier {
            Carrier::Utp(l) => Some(l),
            Carrier::Tcp(_) => None,
        }
    }

    /// A uTP connection (the `transport` label of the metrics).
    pub fn is_utp(&self) -> bool {
        self.utp_link().is_some()
    }

    /// Our side of the stream is shut for a drain: input is ignored.
    pub fn fin_sent(&self) -> bool {
        matches!(self.drain, Some(Drain::FinSent { .. }))
    }

    /// Where a draining connection goes next at `now` (`None`: it is not
    /// draining). The driver carries the step out.
    pub fn drain_step(&self, now: Instant) -> Option<DrainStep> {
        Some(match self.drain? {
            Drain::Grace { until } if now >= until => DrainStep::Choke,
            Drain::Grace { .. } => DrainStep::Wait,
            Drain::Choked => {
                let idle = self.send_slot.is_none()
                    && self.pipe.is_empty()
                    && self.pre_tx.is_empty()
                    && !self.dirty
                    && self.peer.poll_transmit().is_empty();
                if idle {
                    DrainStep::SendFin {
                        deadline: now + FIN_WAIT,
                    }
                } else {
                    DrainStep::Wait
                }
            }
            Drain::FinSent { deadline } if now >= deadline => DrainStep::Close,
            Drain::FinSent { .. } => DrainStep::Wait,
        })
    }

    /// Nothing of this connection is in the kernel's hands any more.
    pub fn quiescent(&self) -> bool {
        !self.recv_armed
            && self.send_slot.is_none()
            && self.zc_pending == 0
            && self.pipe.reads_inflight() == 0
    }
}

impl Credited for Conn {
    fn credit_mut(&mut self) -> Option<&mut ConnEgress> {
        self.egress.as_mut()
    }
}
