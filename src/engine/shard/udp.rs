//! The shard's UDP socket, bound at the TCP port (SO_REUSEPORT, so one
//! remote address always lands on one shard): datagrams arrive through the
//! ring's multishot RECVMSG ([`UdpInput`]) and go to the sans-IO uTP side.
//!
//! With `--utp serve` (default) datagrams go to the shard's uTP endpoint
//! and its connections are served like TCP peers (see [`super::utp`]); a
//! SYN the endpoint will not take (connection or half-open caps) is refused
//! like with `--utp refuse`: every uTP `SYN` gets an `ST_RESET`
//! ([`crate::utp::refuse`]: one 20-byte datagram per SYN at most, rate
//! limited per source and per shard) and everything else is dropped,
//! counted by reason. Resets go with a non-blocking `sendto` straight from
//! the shard: they are rare, tiny and rate limited, so an SQE and an
//! in-flight slot per reset would buy nothing.

use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::time::Instant;

use io_uring::cqueue;

use crate::utp::packet::HEADER_LEN;
use crate::utp::{RefuseConfig, Refuser, UtpMode};

use super::super::stats::{ShardStats, UtpDrop};
use super::super::uring::{OpKind, Ring, UdpInput, UserData};
use super::Shard;

/// Receive buffers of the UDP ring, and the datagram bytes each holds
/// (a full Ethernet-MTU datagram and then some).
const UDP_BUFFERS: u16 = 256;
const UDP_PAYLOAD: u32 = 2048;

/// One shard's uTP side.
pub(super) struct Udp {
    pub(super) sock: UdpSocket,
    input: UdpInput,
    refuser: Refuser,
    /// The uTP connections (`--utp serve`).
    pub(super) serving: Option<super::utp::Serving>,
    /// Origin of the microsecond timestamps we put in packets.
    epoch: Instant,
}

impl Udp {
    pub(super) fn new(
        ring: &Ring,
        sock: UdpSocket,
        mode: UtpMode,
        max_connections: usize,
    ) -> io::Result<Self> {
        sock.set_nonblocking(true)?;
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            ^ (sock.as_raw_fd() as u64) << 32;
        Ok(Self {
            input: UdpInput::new(ring, UDP_BUFFERS, UDP_PAYLOAD)?,
            sock,
            refuser: Refuser::new(RefuseConfig::default()),
            serving: (mode == UtpMode::Serve)
                .then(|| super::utp::Serving::new(max_connections, seed)),
            epoch: Instant::now(),
        })
    }

    pub(super) fn is_armed(&self) -> bool {
        self.input.is_armed()
    }

    pub(super) fn unregister(&mut self, ring: &Ring) {
        self.input.unregister(ring);
    }

    fn user_data() -> u64 {
        UserData::new(OpKind::Udp, 0, 0).encode()
    }
}

impl Shard {
    pub(super) fn arm_udp(&mut self) -> io::Result<()> {
        let Some(u) = self.udp.as_mut() else {
            return Ok(());
        };
        let fd = u.sock.as_raw_fd();
        u.input.arm(&mut self.ring, fd, Udp::user_data())
    }

    /// Stop receiving (shutdown): the final CQE disarms the input.
    pub(super) fn cancel_udp(&mut self) {
        if self.udp.as_ref().is_some_and(Udp::is_armed) {
            let cancel = UserData::new(OpKind::Cancel, 0, 0).encode();
            let _ = self.ring.push_cancel(Udp::user_data(), cancel);
        }
    }

    pub(super) fn on_udp(&mut self, ud: UserData, cqe: &cqueue::Entry) -> io::Result<()> {
        if ud.index != 0 {
            // Only the socket's own receive (index 0) is ours.
            return Ok(());
        }
        let Some(u) = self.udp.as_mut() else {
            return Ok(());
        };
        let stats = &self.stats;
        let now = Instant::now();
        let now_us = now.duration_since(u.epoch).as_micros() as u32;
        let Udp {
            sock,
            input,
            refuser,
            serving,
            ..
        } = u;
        let res = cqe.result();
        input.complete(res, cqe.flags(), |d| {
            let d = match d {
                Ok(d) => d,
                Err(e) if e == -libc::ENOBUFS || e == -libc::ECANCELED => return,
                Err(_) => {
                    stats.utp_drop(UtpDrop::RecvError);
                    return;
                }
            };
            ShardStats::add(&stats.utp_datagrams, 1);
            if d.truncated {
                stats.utp_drop(UtpDrop::Truncated);
                return;
            }
            if let Some(s) = serving.as_mut() {
                if s.handle(now, d.from, d.payload) {
                    return;
                }
            }
            let mut out = [0u8; HEADER_LEN];
            match refuser.handle(now, now_us, d.from.ip(), d.payload, &mut out) {
                Ok(n) => match sock.send_to(&out[..n], d.from) {
                    Ok(_) => ShardStats::add(&stats.utp_resets_sent, 1),
                    Err(e) => {
                        tracing::debug!(peer = %d.from, error = %e, "uTP reset not sent");
                        stats.utp_drop(UtpDrop::SendFailed);
                    }
                },
                Err(reason) => stats.utp_drop(UtpDrop::Refused(reason)),
            }
        });
        // On a hard error the tick re-arms (no spinning on a failing socket).
        if !self.udp.as_ref().is_some_and(Udp::is_armed)
            && (res >= 0 || res == -libc::ENOBUFS)
            && !self.shutdown.load(std::sync::atomic::Ordering::Relaxed)
        {
            self.arm_udp()?;
        }
        Ok(())
    }
}
