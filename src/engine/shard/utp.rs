//! Serving uTP connections (`--utp serve`) as connections of the engine:
//! a uTP connection accepted by the shard's [`crate::utp::Endpoint`] is
//! adopted like an accepted TCP socket ([`Shard::adopt`] with
//! [`Carrier::Utp`]: same `PeerState`, choker, limits, upload cap,
//! super-seeding, MSE and metrics); only the carrying of bytes differs, and
//! it happens here, in the shard's loop, with no socket of its own:
//!
//! - peer -> engine: the bytes the uTP connection delivers in order are fed
//!   to the connection's stream and `PeerState` ([`input::feed`]), as a
//!   receive completion's would be;
//! - engine -> peer: a send slot built for the connection (headers and
//!   iovecs into the mmap or read buffers, exactly as for TCP) is not
//!   submitted to io_uring; its bytes go into the uTP send buffer as far as
//!   it has room (mmap slices as shared handles, the rest copied), and a
//!   completion for that many bytes is queued ([`Shard::reap_synthetic`]
//!   hands it to the same `on_send` as a CQE), so a partial "send" resumes
//!   when acks make room;
//! - the engine closing (or a drain's FIN) finishes the uTP stream with a
//!   FIN after what was sent; a uTP connection that ends (FIN, reset,
//!   timeout) closes the engine connection.
//!
//! The payload is never copied in user space: the uTP send buffer holds
//! the mmap slices until they are acknowledged (a re-send re-reads the
//! mmap), and each datagram goes out as its header plus iovecs into them,
//! batched with UDP GSO where the kernel has it (`gso`). Protocol bytes,
//! piece headers, cold reads and RC4 output are copied. While the send
//! buffer holds slices of a send, the send's fence epoch stays held
//! (`storage::fence`): a data change waits for the acks, and a forced
//! fence aborts such connections.
//!
//! A link (the table entry tying a uTP connection to its engine
//! connection) lives until both have let go, so the engine's
//! `Carrier::Utp(index)` never names a reused link.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::Arc;
use std::time::Instant;

use crate::storage::fence::FenceTracker;
use crate::utp::{ConnKey, Endpoint, EndpointConfig};

use super::super::core::{Carrier, ConnId};
use super::super::stats::{CloseKind, ShardStats};
use super::super::uring::send::Pending;
use super::super::uring::{OpKind, UserData};
use super::{input, Shard};

/// Mmap slices shorter than this are copied into the uTP send buffer, not
/// held: a held slice costs an allocation and a record until acked, so a
/// peer asking for tiny blocks cannot make the records outweigh the bytes
/// (a 1 MiB send buffer holds at most ~1,000 held slices).
const MIN_SHARED: usize = 1024;

/// One uTP connection and the engine connection it carries.
struct Link {
    key: ConnKey,
    /// The engine connection until it is released.
    conn: Option<ConnId>,
    /// A send slot waiting for room in the uTP send buffer.
    waiting: Option<u32>,
    /// The engine finished its side: FIN after what it sent.
    fin: bool,
    dirty: bool,
    /// Fence epochs held for mmap slices in the uTP send buffer: (stream
    /// offset after the last byte of the send, epoch), oldest first.
    held: VecDeque<(u64, u64)>,
}

/// The uTP connections of one shard.
pub(super) struct Serving {
    endpoint: Endpoint,
    links: Vec<Option<Link>>,
    free: Vec<u32>,
    by_key: HashMap<ConnKey, u32>,
    dirty: Vec<u32>,
    buf: Vec<u8>,
    /// Outgoing datagrams, batched for UDP GSO.
    gso: super::gso::GsoBatch,
}

impl Serving {
    pub(super) fn new(max_connections: usize, seed: u64) -> Self {
        let cfg = EndpointConfig {
            max_connections,
            ..EndpointConfig::default()
        };
        let gso = super::gso::GsoBatch::new(cfg.conn.max_header());
        Self {
            endpoint: Endpoint::new(cfg, seed),
            links: Vec::new(),
            free: Vec::new(),
            by_key: HashMap::new(),
            dirty: Vec::new(),
            buf: vec![0u8; 64 * 1024],
            gso,
        }
    }

    /// A datagram for the endpoint; `false` if it was a SYN the endpoint
    /// would not take (the caller refuses it with a reset).
    pub(super) fn handle(&mut self, now: Instant, from: std::net::SocketAddr, d: &[u8]) -> bool {
        match self.endpoint.handle(now, from, d) {
            Some(key) => {
                if let Some(&i) = self.by_key.get(&key) {
                    self.mark(i);
                }
                true
            }
            None => !matches!(
                crate::utp::packet::decode_header(d),
                Ok((h, _)) if h.ty == crate::utp::PacketType::Syn
            ),
        }
    }

    fn mark(&mut self, i: u32) {
        if let Some(l) = self.links.get_mut(i as usize).and_then(Option::as_mut) {
            if !l.dirty {
                l.dirty = true;
                self.dirty.push(i);
            }
        }
    }

    fn mark_all(&mut self) {
        for i in 0..self.links.len() as u32 {
            self.mark(i);
        }
    }

    /// Whether the shard should not sleep, or when it must wake.
    pub(super) fn deadline(&self) -> Option<Instant> {
        if !self.dirty.is_empty() {
            return Some(Instant::now());
        }
        self.endpoint.poll_timeout()
    }

    fn link_mut(&mut self, i: u32) -> Option<&mut Link> {
        self.links.get_mut(i as usize).and_then(Option::as_mut)
    }

    /// Forget link `i` and its uTP connection (and the fence epochs it
    /// held: its send buffer goes with it).
    fn drop_link(&mut self, i: u32, fence: &mut FenceTracker) {
        if let Some(l) = self.links.get_mut(i as usize).and_then(Option::take) {
            self.by_key.remove(&l.key);
            self.endpoint.remove(l.key);
            for (_, epoch) in l.held {
                fence.end(epoch);
            }
            self.free.push(i);
        }
    }

    /// Ends the fence epochs of link `i` whose bytes are all acknowledged.
    fn release_acked(&mut self, i: u32, fence: &mut FenceTracker) {
        let Some(l) = self.links.get_mut(i as usize).and_then(Option::as_mut) else {
            return;
        };
        let Some(acked) = self.endpoint.conn(l.key).map(|c| c.acked()) else {
            return;
        };
        while let Some(&(end, epoch)) = l.held.front() {
            if end > acked {
                break;
            }
            l.held.pop_front();
            fence.end(epoch);
        }
    }

    /// Links holding bytes of a send built before `epoch`.
    fn holding_before(&self, epoch: u64) -> Vec<u32> {
        self.links
            .iter()
            .enumerate()
            .filter_map(|(i, l)| {
                let l = l.as_ref()?;
                l.held.iter().any(|&(_, e)| e < epoch).then_some(i as u32)
            })
            .collect()
    }
}

fn send_user_data(slot_id: u32) -> u64 {
    UserData::new(OpKind::Send, 0, slot_id).encode()
}

impl Shard {
    fn serving(&mut self) -> Option<&mut Serving> {
        self.udp.as_mut().and_then(|u| u.serving.as_mut())
    }

    /// Once per loop turn: adopt new uTP connections, run their timers,
    /// carry the bytes of the ones that have work, send their datagrams.
    pub(super) fn utp_turn(&mut self, now: Instant) -> io::Result<()> {
        if self.serving().is_none() {
            return Ok(());
        }
        self.utp_accept()?;
        let fins = std::mem::take(&mut self.utp_fin);
        let Some(s) = self.serving() else {
            return Ok(());
        };
        for &i in &fins {
            if let Some(l) = s.link_mut(i) {
                l.fin = true;
            }
            s.mark(i);
        }
        if s.endpoint.poll_timeout().is_some_and(|t| t <= now) {
            s.endpoint.handle_timeout(now);
            s.mark_all();
        }
        let dirty = std::mem::take(&mut s.dirty);
        for &i in &dirty {
            self.utp_service(i, now);
        }
        let Some(u) = self.udp.as_mut() else {
            return Ok(());
        };
        let Some(s) = u.serving.as_mut() else {
            return Ok(());
        };
        let mut dirty = dirty;
        dirty.clear();
        if s.dirty.is_empty() {
            s.dirty = dirty;
        }
        let mut fins = fins;
        fins.clear();
        if self.utp_fin.is_empty() {
            self.utp_fin = fins;
        }
        // Datagrams of every connection, including ACKs of what arrived,
        // written in place into the GSO batch (consecutive ones of a
        // connection are one `sendmsg`).
        // WouldBlock: lost on our side; the connection re-sends it later.
        let real_error = |e: &io::Error| e.kind() != io::ErrorKind::WouldBlock;
        loop {
            let (header, parts) = s.gso.next();
            let Some((to, n)) = s.endpoint.poll_transmit_parts(now, header, parts) else {
                break;
            };
            if let Err(e) = s.gso.push(&u.sock, to, n) {
                if !real_error(&e) {
                    break;
                }
                tracing::debug!(peer = %to, error = %e, "uTP datagram not sent");
            }
        }
        if let Err(e) = s.gso.flush(&u.sock) {
            if real_error(&e) {
                tracing::debug!(error = %e, "uTP datagrams not sent");
            }
        }
        Ok(())
    }

    fn utp_accept(&mut self) -> io::Result<()> {
        loop {
            let Some(s) = self.serving() else {
                return Ok(());
            };
            let Some(key) = s.endpoint.poll_accept() else {
                return Ok(());
            };
            let i = s.free.pop().unwrap_or_else(|| {
                s.links.push(None);
                (s.links.len() - 1) as u32
            });
            s.links[i as usize] = Some(Link {
                key,
                conn: None,
                waiting: None,
                fin: false,
                dirty: false,
                held: VecDeque::new(),
            });
            s.by_key.insert(key, i);
            let adopted = self.adopt(Carrier::Utp(i), key.remote)?;
            let Some(s) = self.udp.as_mut().and_then(|u| u.serving.as_mut()) else {
                return Ok(());
            };
            match adopted {
                Some(owner) => {
                    if let Some(l) = s.link_mut(i) {
                        l.conn = Some(owner);
                    }
                    s.mark(i);
                    ShardStats::add(&self.stats.utp_accepted, 1);
                }
                None => {
                    // Over a connection limit: forget it (the peer times out).
                    if let Some(c) = s.endpoint.conn_mut(key) {
                        c.abort();
                    }
                    s.drop_link(i, &mut self.fence);
                }
            }
        }
    }

    /// Carries link `i`'s bytes both ways and follows its state.
    fn utp_service(&mut self, i: u32, now: Instant) {
        let Some(l) = self.serving().and_then(|s| s.link_mut(i)) else {
            return;
        };
        l.dirty = false;
        let (key, owner, waiting, fin) = (l.key, l.conn, l.waiting, l.fin);
        let alive = owner
            .filter(|&id| self.conns.get(id).is_some_and(|c| c.closing.is_none()))
            .map(ConnId::index);
        // Peer -> engine, in order, as much as has arrived.
        if let Some(idx) = alive {
            let catalog = Arc::clone(&self.catalog);
            let mut fed = false;
            loop {
                let Some(s) = self.udp.as_mut().and_then(|u| u.serving.as_mut()) else {
                    return;
                };
                let Some(c) = s.endpoint.conn_mut(key) else {
                    break;
                };
                let n = c.read(&mut s.buf);
                if n == 0 {
                    break;
                }
                let Some(conn) = self.conns.at_mut(idx) else {
                    break;
                };
                if conn.closing.is_some() || conn.fin_sent() {
                    // Closing, or drained: input is ignored.
                    continue;
                }
                let outcome = input::feed(
                    conn,
                    &self.stats,
                    self.cfg.encryption,
                    catalog.as_ref(),
                    now,
                    &s.buf[..n],
                );
                fed = true;
                if let Err(kind) = outcome {
                    self.close(idx, kind);
                    fed = false;
                    break;
                }
            }
            if fed {
                self.after_input(idx, now);
            }
        }
        // Engine -> peer: acked sends let go of their fence epochs; a send
        // that waited for room.
        if let Some(s) = self.udp.as_mut().and_then(|u| u.serving.as_mut()) {
            s.release_acked(i, &mut self.fence);
        }
        if let Some(slot_id) = waiting {
            self.utp_send(i, slot_id);
        }
        let Some(s) = self.serving() else {
            return;
        };
        let (closed, eof) = match s.endpoint.conn_mut(key) {
            Some(c) => {
                if fin {
                    c.close();
                }
                (c.is_closed(), c.is_eof())
            }
            None => (true, true),
        };
        if closed || eof {
            // The peer finished or the connection died: so does the engine
            // connection (its in-flight send, if any, fails below).
            if let Some(idx) = alive {
                self.close(idx, CloseKind::PeerClosed);
            }
        }
        if closed {
            self.utp_fail_waiting(i);
            let Some(s) = self.udp.as_mut().and_then(|u| u.serving.as_mut()) else {
                return;
            };
            if s.link_mut(i).is_some_and(|l| l.conn.is_none()) {
                s.drop_link(i, &mut self.fence);
            }
        }
    }

    /// Puts what send slot `slot_id` still has into link `i`'s uTP send
    /// buffer, as far as there is room (mmap slices shared, the rest
    /// copied), and queues the completion; with no room the slot waits for
    /// acks. Shared slices hold the slot's fence epoch until acked.
    pub(super) fn utp_send(&mut self, i: u32, slot_id: u32) {
        let Some(u) = self.udp.as_mut() else {
            return;
        };
        let Some(s) = u.serving.as_mut() else {
            return;
        };
        let Some(l) = s.links.get_mut(i as usize).and_then(Option::as_mut) else {
            self.synthetic
                .push_back((send_user_data(slot_id), -libc::ECONNRESET));
            return;
        };
        let Some(c) = s.endpoint.conn_mut(l.key).filter(|c| !c.is_closed()) else {
            l.waiting = None;
            self.synthetic
                .push_back((send_user_data(slot_id), -libc::ECONNRESET));
            return;
        };
        let Some(slot) = self.sends.get_mut(slot_id) else {
            l.waiting = None;
            return;
        };
        let room = c.send_capacity();
        if room == 0 {
            l.waiting = Some(slot_id);
            return;
        }
        let mut n = 0;
        let mut shared = false;
        for part in slot.pending_parts(MIN_SHARED) {
            let (len, written) = match part {
                Pending::Copy(bytes) => (bytes.len(), c.write(&bytes[..bytes.len().min(room - n)])),
                Pending::Shared(bytes) => {
                    shared = true;
                    (bytes.len(), c.write_shared(bytes))
                }
            };
            n += written;
            if written < len || n >= room {
                // Full: the rest of this iovec and the next wait for room.
                break;
            }
        }
        if shared {
            self.fence.retain(slot.epoch);
            l.held.push_back((c.written(), slot.epoch));
        }
        l.waiting = None;
        self.synthetic
            .push_back((send_user_data(slot_id), n.min(i32::MAX as usize) as i32));
    }

    /// Fails the send slot link `i` holds waiting for room, if any (the
    /// connection is closing or gone), so its engine connection can go.
    pub(super) fn utp_fail_waiting(&mut self, i: u32) {
        let Some(l) = self.serving().and_then(|s| s.link_mut(i)) else {
            return;
        };
        if let Some(slot_id) = l.waiting.take() {
            self.synthetic
                .push_back((send_user_data(slot_id), -libc::ECONNRESET));
        }
    }

    /// The engine connection on link `i` was released: the link goes once
    /// its uTP connection has finished (the FIN exchange, or a timeout).
    pub(super) fn utp_released(&mut self, i: u32) {
        let Some(s) = self.serving() else {
            return;
        };
        let Some(l) = s.link_mut(i) else {
            return;
        };
        l.conn = None;
        l.fin = true;
        let key = l.key;
        let gone = s.endpoint.conn(key).is_none_or(|c| c.is_closed());
        if gone {
            if let Some(s) = self.udp.as_mut().and_then(|u| u.serving.as_mut()) {
                s.drop_link(i, &mut self.fence);
            }
        } else {
            s.mark(i);
        }
    }

    /// A forced fence (`fence_turn`): uTP connections still holding bytes
    /// of a send built before `forced` are aborted (a FIN would still
    /// re-send them), their engine connections closed, and the epochs let
    /// go.
    pub(super) fn utp_abort_stale(&mut self, forced: u64) {
        let Some(s) = self.udp.as_mut().and_then(|u| u.serving.as_mut()) else {
            return;
        };
        for i in s.holding_before(forced) {
            let Some(s) = self.udp.as_mut().and_then(|u| u.serving.as_mut()) else {
                return;
            };
            let Some(l) = s.link_mut(i) else { continue };
            let (key, owner) = (l.key, l.conn);
            for (_, epoch) in std::mem::take(&mut l.held) {
                self.fence.end(epoch);
            }
            if let Some(c) = s.endpoint.conn_mut(key) {
                c.abort();
            }
            s.mark(i);
            if let Some(id) = owner.filter(|&id| self.conns.get(id).is_some()) {
                self.close(id.index(), CloseKind::IoError);
            }
        }
    }

    /// Every link's state, e.g. once per tick as a safety net.
    pub(super) fn utp_mark_all(&mut self) {
        if let Some(s) = self.serving() {
            s.mark_all();
        }
    }
}
