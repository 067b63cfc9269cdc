//! Input of a shard: accepting connections (multishot accept, limits per
//! shard and per IP) and receiving bytes (multishot receive into the
//! provided-buffer ring, fed to the MSE detector and the connection's
//! `PeerState`). What the received bytes change is handled by
//! `Shard::after_input`.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::cqueue;

use crate::wire::CloseReason;

use super::super::core::accept::{self, Admit};
use super::super::core::timers::close_kind;
use super::super::core::{Carrier, Conn, ConnId};
use super::super::stats::{CloseKind, ShardStats};
use super::super::stream::{self, FeedError, MseOutcome};
use super::super::uring::{sys, OpKind, UserData};
use super::Shard;

impl Shard {
    // ---- accept -------------------------------------------------------

    pub(super) fn on_accept(&mut self, cqe: &cqueue::Entry) -> io::Result<()> {
        let res = cqe.result();
        let exhausted = [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM].contains(&-res);
        let stopping = self.shutdown.load(Ordering::Relaxed);
        if res < 0 && res != -libc::ECANCELED && !stopping {
            ShardStats::add(&self.stats.accept_errors, 1);
            // Logged once per interval, not per failure.
            let now = Instant::now();
            if self
                .last_accept_warning
                .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10))
            {
                self.last_accept_warning = Some(now);
                tracing::warn!(
                    shard = self.cfg.index,
                    error = %io::Error::from_raw_os_error(-res),
                    "accept failed{}",
                    if exhausted {
                        "; out of descriptors or memory: backing off for a second (raise LimitNOFILE / ulimit -n, or lower --max-connections)"
                    } else {
                        "; re-arming"
                    }
                );
            }
        }
        if !cqueue::more(cqe.flags()) {
            self.accepting = false;
            if !self.shutdown.load(Ordering::Relaxed) {
                if exhausted {
                    // Re-arming at once would spin on the same error: the
                    // tick re-arms after a pause; peers wait in the backlog.
                    self.accept_backoff = true;
                } else {
                    self.arm_accept()?;
                }
            }
        }
        if res < 0 {
            return Ok(());
        }
        let Some(fd) = sys::fd_from_accept(res) else {
            return Ok(());
        };
        if self.shutdown.load(Ordering::Relaxed) {
            return Ok(());
        }
        let remote = socket2::SockRef::from(&fd)
            .peer_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        self.adopt(Carrier::Tcp(fd), remote).map(|_| ())
    }

    /// Make `carrier` a peer connection from `remote`, within the shard's
    /// limits (a TCP socket just accepted, or a uTP connection just
    /// accepted, see `utp`). `Ok(None)`: refused by a limit (a socket is
    /// closed; the caller forgets a uTP connection).
    pub(super) fn adopt(
        &mut self,
        carrier: Carrier,
        remote: SocketAddr,
    ) -> io::Result<Option<ConnId>> {
        let limits = Admit {
            per_shard: self.cfg.max_connections,
            limits: &self.cfg.limits,
            peer: &self.cfg.peer,
        };
        let now = Instant::now();
        let Ok(id) = accept::admit(now, &mut self.conns, &limits, &self.stats, carrier, remote)
        else {
            // Refused by a limit: dropping the carrier closes a socket.
            return Ok(None);
        };
        self.arm_recv(id.index())?;
        Ok(Some(id))
    }

    // ---- receive ------------------------------------------------------

    pub(super) fn arm_recv(&mut self, idx: u32) -> io::Result<()> {
        let Some(c) = self.conns.at_mut(idx) else {
            return Ok(());
        };
        if c.recv_armed || c.closing.is_some() || c.is_utp() {
            // uTP bytes are fed in by the shard's uTP turn.
            return Ok(());
        }
        let ud = UserData::new(OpKind::Recv, c.id.generation(), idx).encode();
        c.recv_armed = true;
        let fd = c.raw_fd();
        self.ring.push_recv_multi(fd, self.bufs.bgid(), ud)
    }

    pub(super) fn rearm_recvs(&mut self) -> io::Result<()> {
        if self.rearm.is_empty() {
            return Ok(());
        }
        let list = std::mem::take(&mut self.rearm);
        for idx in &list {
            self.arm_recv(*idx)?;
        }
        self.rearm = list;
        self.rearm.clear();
        Ok(())
    }

    pub(super) fn on_recv(&mut self, ud: UserData, cqe: &cqueue::Entry) -> io::Result<()> {
        let res = cqe.result();
        let flags = cqe.flags();
        let more = cqueue::more(flags);
        let bid = cqueue::buffer_select(flags);
        let now = Instant::now();
        let catalog = Arc::clone(&self.catalog);
        let Some(conn) = self.conns.get_mut(ConnId::new(ud.index, ud.generation)) else {
            if let Some(bid) = bid {
                self.bufs.recycle(bid);
            }
            return Ok(());
        };
        if !more {
            conn.recv_armed = false;
        }
        let mut outcome: Result<(), CloseKind> = Ok(());
        if res > 0 {
            if let Some(bid) = bid {
                if conn.closing.is_none() && !conn.fin_sent() {
                    let data = self.bufs.data(bid, res as usize);
                    outcome = feed(
                        conn,
                        &self.stats,
                        self.cfg.encryption,
                        catalog.as_ref(),
                        now,
                        data,
                    );
                }
                self.bufs.recycle(bid);
            }
        } else if res == 0 {
            outcome = Err(CloseKind::PeerClosed);
        } else if res == -libc::ENOBUFS {
            // Out of receive buffers: re-arm once some are recycled.
            if !more {
                self.rearm.push(ud.index);
            }
        } else if res != -libc::ECANCELED {
            outcome = Err(CloseKind::PeerClosed);
        }
        let closing = conn.closing.is_some();
        if closing {
            self.try_release(ud.index);
            return Ok(());
        }
        if let Err(kind) = outcome {
            self.close(ud.index, kind);
            return Ok(());
        }
        self.after_input(ud.index, now);
        if !more && res != -libc::ENOBUFS {
            self.arm_recv(ud.index)?;
        }
        Ok(())
    }
}

/// Received bytes into a connection: the MSE detector or RC4, then its
/// `PeerState`. `Err`: close it so.
pub(super) fn feed(
    conn: &mut Conn,
    stats: &ShardStats,
    encryption: crate::wire::mse::EncryptionPolicy,
    catalog: &crate::engine::catalog::Catalog,
    now: Instant,
    data: &[u8],
) -> Result<(), CloseKind> {
    match stream::feed(
        &mut conn.stream,
        &mut conn.peer,
        &mut conn.pre_tx,
        now,
        data,
        catalog,
        encryption,
    ) {
        Ok(MseOutcome::None) => Ok(()),
        Ok(MseOutcome::Plaintext) => {
            ShardStats::add(&stats.mse_plaintext, 1);
            Ok(())
        }
        Ok(MseOutcome::Rc4) => {
            ShardStats::add(&stats.mse_rc4, 1);
            Ok(())
        }
        Err(FeedError::Peer(reason)) => {
            conn.last_reason = Some(reason);
            tracing::debug!(peer = %conn.remote, reason = reason.as_str(), "closing peer");
            Err(close_kind(reason))
        }
        Err(FeedError::Mse(e)) => {
            ShardStats::add(&stats.mse_failed, 1);
            conn.last_reason = Some(CloseReason::BadHandshake);
            tracing::debug!(peer = %conn.remote, error = %e, "MSE handshake failed");
            Err(CloseKind::ProtocolError)
        }
    }
}
