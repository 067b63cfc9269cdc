//! Serving uTP connections (`--utp serve`) through the engine's own peer
//! path, behind one narrow interface: each uTP connection gets a Unix
//! stream socket pair; the shard adopts one end exactly like an accepted
//! TCP socket ([`Shard::adopt`]: same `PeerState`, choker, limits, upload
//! cap, super-seeding, MSE, metrics, zero-copy sends from the mmap into the
//! pair), and this module pumps the other end to and from the sans-IO
//! [`crate::utp::Endpoint`]:
//!
//! - engine -> peer: bytes the engine sent into the pair are read (as much
//!   as the uTP send buffer takes) and written into the uTP connection,
//!   whose packets go out with a non-blocking `sendto`;
//! - peer -> engine: bytes the uTP connection delivers in order are
//!   written into the pair (what does not fit waits, and the uTP receive
//!   window closes behind it);
//! - end of stream either way is passed on (FIN <-> shutdown), and a uTP
//!   connection that closes (FIN, reset, timeout) closes the pair, which
//!   the engine sees as the peer closing.
//!
//! A multishot poll on each pump end wakes the shard when the engine wrote
//! something. The price of the narrow interface: payload crosses the pair
//! (one kernel copy) and is copied into the uTP send buffer (one user-space
//! copy); datagrams go out batched with UDP GSO where the kernel has it
//! (`gso`: consecutive datagrams of one connection in one `sendmsg`).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use crate::utp::{ConnKey, Endpoint, EndpointConfig};

use super::super::stats::ShardStats;
use super::super::uring::user_data::next_generation;
use super::super::uring::{OpKind, UserData};
use super::Shard;

/// One uTP connection's pump.
struct Link {
    key: ConnKey,
    pump: UnixStream,
    generation: u32,
    /// Delivered bytes the pair could not take yet.
    to_engine: Vec<u8>,
    /// The engine closed its end (its FIN goes to the peer).
    engine_eof: bool,
    /// We shut our write side (the peer's FIN went to the engine).
    shut: bool,
    dirty: bool,
}

/// The uTP connections of one shard.
pub(super) struct Serving {
    endpoint: Endpoint,
    links: Vec<Option<Link>>,
    generations: Vec<u32>,
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
        let gso = super::gso::GsoBatch::new(cfg.conn.max_packet());
        Self {
            endpoint: Endpoint::new(cfg, seed),
            links: Vec::new(),
            generations: Vec::new(),
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

    fn poll_user_data(i: u32, generation: u32) -> u64 {
        UserData::new(OpKind::Udp, generation, i + 1).encode()
    }
}

impl Shard {
    /// A poll completion on pump `index - 1`: the engine wrote or closed.
    pub(super) fn on_pump_poll(&mut self, ud: UserData, more: bool) {
        let Some(s) = self.udp.as_mut().and_then(|u| u.serving.as_mut()) else {
            return;
        };
        let i = ud.index - 1;
        let live = s
            .links
            .get(i as usize)
            .and_then(Option::as_ref)
            .is_some_and(|l| l.generation == ud.generation);
        if live {
            s.mark(i);
            if !more {
                // The multishot poll ended (overflow): arm it again.
                self.arm_pump_poll(i);
            }
        }
    }

    fn arm_pump_poll(&mut self, i: u32) {
        let Some(s) = self.udp.as_mut().and_then(|u| u.serving.as_mut()) else {
            return;
        };
        let Some(l) = s.links.get(i as usize).and_then(Option::as_ref) else {
            return;
        };
        let ud = Serving::poll_user_data(i, l.generation);
        let fd = l.pump.as_raw_fd();
        let events = (libc::POLLIN | libc::POLLRDHUP) as u32;
        if self.ring.push_poll_multi(fd, events, ud).is_err() {
            tracing::warn!("could not arm a uTP pump poll");
        }
    }

    /// Once per loop turn: adopt new uTP connections, run their timers,
    /// pump the ones that have work, send their datagrams.
    pub(super) fn utp_turn(&mut self, now: Instant) -> io::Result<()> {
        if self.udp.as_ref().is_none_or(|u| u.serving.is_none()) {
            return Ok(());
        }
        self.utp_accept()?;
        let Some(u) = self.udp.as_mut() else {
            return Ok(());
        };
        let Some(s) = u.serving.as_mut() else {
            return Ok(());
        };
        if s.endpoint.poll_timeout().is_some_and(|t| t <= now) {
            s.endpoint.handle_timeout(now);
            s.mark_all();
        }
        let dirty = std::mem::take(&mut s.dirty);
        let mut gone = Vec::new();
        for &i in &dirty {
            if let Some(l) = s.links.get_mut(i as usize).and_then(Option::as_mut) {
                l.dirty = false;
                if pump(&mut s.endpoint, l, &mut s.buf) {
                    gone.push(i);
                } else if !l.to_engine.is_empty() {
                    // The pair is full: try again next turn.
                    l.dirty = true;
                    s.dirty.push(i);
                }
            }
        }
        // Datagrams of every connection, including ACKs of what arrived,
        // written in place into the GSO batch (consecutive ones of a
        // connection are one `sendmsg`).
        // WouldBlock: lost on our side; the connection re-sends it later.
        let real_error = |e: &io::Error| e.kind() != io::ErrorKind::WouldBlock;
        while let Some((to, n)) = s.endpoint.poll_transmit(now, s.gso.tail()) {
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
        for i in gone {
            self.utp_drop_link(i);
        }
        Ok(())
    }

    fn utp_accept(&mut self) -> io::Result<()> {
        loop {
            let Some(key) = self
                .udp
                .as_mut()
                .and_then(|u| u.serving.as_mut())
                .and_then(|s| s.endpoint.poll_accept())
            else {
                return Ok(());
            };
            let (engine_end, pump) = UnixStream::pair()?;
            engine_end.set_nonblocking(true)?;
            pump.set_nonblocking(true)?;
            let fd = OwnedFd::from(engine_end);
            let adopted = self.adopt(fd, key.remote, true)?;
            let Some(s) = self.udp.as_mut().and_then(|u| u.serving.as_mut()) else {
                return Ok(());
            };
            if adopted.is_none() {
                // Over a connection limit: forget it (the peer times out).
                if let Some(c) = s.endpoint.conn_mut(key) {
                    c.abort();
                }
                s.endpoint.remove(key);
                continue;
            }
            ShardStats::add(&self.stats.utp_accepted, 1);
            let i = match s.free.pop() {
                Some(i) => i,
                None => {
                    s.links.push(None);
                    s.generations.push(0);
                    (s.links.len() - 1) as u32
                }
            };
            let generation = s.generations[i as usize];
            s.links[i as usize] = Some(Link {
                key,
                pump,
                generation,
                to_engine: Vec::new(),
                engine_eof: false,
                shut: false,
                dirty: false,
            });
            s.by_key.insert(key, i);
            s.mark(i);
            self.arm_pump_poll(i);
        }
    }

    fn utp_drop_link(&mut self, i: u32) {
        let Some(s) = self.udp.as_mut().and_then(|u| u.serving.as_mut()) else {
            return;
        };
        let Some(l) = s.links.get_mut(i as usize).and_then(Option::take) else {
            return;
        };
        s.by_key.remove(&l.key);
        s.endpoint.remove(l.key);
        s.generations[i as usize] = next_generation(s.generations[i as usize]);
        s.free.push(i);
        let ud = Serving::poll_user_data(i, l.generation);
        let cancel = UserData::new(OpKind::Cancel, 0, 0).encode();
        let _ = self.ring.push_cancel(ud, cancel);
        drop(l); // closes the pump end: the engine sees the peer close
    }

    /// Every link's pump, e.g. once per tick as a safety net.
    pub(super) fn utp_mark_all(&mut self) {
        if let Some(s) = self.udp.as_mut().and_then(|u| u.serving.as_mut()) {
            s.mark_all();
        }
    }
}

/// Move bytes between a uTP connection and its pair; `true` when the link
/// is finished (the uTP connection closed).
fn pump(ep: &mut Endpoint, l: &mut Link, buf: &mut [u8]) -> bool {
    let Some(c) = ep.conn_mut(l.key) else {
        return true;
    };
    // Peer -> engine.
    while !l.to_engine.is_empty() {
        match l.pump.write(&l.to_engine) {
            Ok(0) => break,
            Ok(n) => {
                l.to_engine.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(_) => {
                c.abort();
                return true;
            }
        }
    }
    while l.to_engine.is_empty() {
        let n = c.read(buf);
        if n == 0 {
            break;
        }
        match l.pump.write(&buf[..n]) {
            Ok(w) if w < n => l.to_engine.extend_from_slice(&buf[w..n]),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                l.to_engine.extend_from_slice(&buf[..n]);
            }
            Err(_) => {
                c.abort();
                return true;
            }
        }
    }
    if c.is_eof() && l.to_engine.is_empty() && !l.shut {
        l.shut = true;
        let _ = l.pump.shutdown(std::net::Shutdown::Write);
    }
    // Engine -> peer.
    while !l.engine_eof {
        let room = c.send_capacity().min(buf.len());
        if room == 0 {
            break;
        }
        match l.pump.read(&mut buf[..room]) {
            Ok(0) => {
                l.engine_eof = true;
                c.close();
            }
            Ok(n) => {
                c.write(&buf[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(_) => {
                l.engine_eof = true;
                c.close();
            }
        }
    }
    c.is_closed()
}
