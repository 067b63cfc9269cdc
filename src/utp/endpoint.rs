//! All the uTP connections behind one UDP socket: datagrams in, each to
//! its connection by `(remote address, connection id)`; new connections
//! from SYNs; datagrams out, from every connection in turn.
//!
//! Half-open connections (a SYN arrived, nothing else yet) are capped
//! ([`EndpointConfig::max_half_open`]): a SYN flood from many source
//! ports costs at most `max_half_open` x [`Endpoint::HALF_OPEN_BYTES`]
//! bytes and never more answers than SYNs. A half-open connection holds no
//! heap memory of its own (its buffers are empty), only its table entry.
//! When the cap is reached, a new SYN takes the slot of the oldest
//! half-open connection older than [`EndpointConfig::half_open_timeout`].
//! Age alone never drops one: the initiator's first DATA may be lost and
//! re-sent on a backed-off timer well past any fixed deadline, and the
//! connection must still be there when it arrives (nothing heard at all
//! closes it after the connection's idle timeout).
//!
//! Call order: [`Endpoint::handle`] for each datagram, then
//! [`Endpoint::poll_accept`] for new connections, the application works on
//! connections through [`Endpoint::conn_mut`], then drain
//! [`Endpoint::poll_transmit`]; [`Endpoint::handle_timeout`] when
//! [`Endpoint::poll_timeout`] is due. Closed connections are dropped by
//! [`Endpoint::handle_timeout`] after the application saw them closed
//! ([`Endpoint::remove`]) or at once if it never took them.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::conn::{Config, Connection};
use super::packet::{self, PacketError, PacketType};

/// Settings of an [`Endpoint`].
#[derive(Clone, Copy, Debug)]
pub struct EndpointConfig {
    pub conn: Config,
    /// Accept SYNs at all (false: every SYN is refused by the caller).
    pub accept: bool,
    /// Connections at most. Default 10,000.
    pub max_connections: usize,
    /// Half-open connections at most. Default 256.
    pub max_half_open: usize,
    /// A half-open connection this old gives its slot to a new SYN when
    /// the half-open cap is reached. Default 5 s.
    pub half_open_timeout: Duration,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            conn: Config::default(),
            accept: true,
            max_connections: 10_000,
            max_half_open: 256,
            half_open_timeout: Duration::from_secs(5),
        }
    }
}

/// A connection's key: the peer's address and the id it sends to us.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub remote: SocketAddr,
    pub recv_id: u16,
}

/// Why the endpoint dropped a datagram (a metrics label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointDrop {
    Malformed(PacketError),
    /// No connection has this id (and it is not a SYN).
    UnknownConnection,
    /// A SYN while the half-open cap is reached.
    HalfOpenFull,
    /// A SYN while the connection cap is reached (or accepting is off).
    Refused,
}

impl EndpointDrop {
    pub const ALL: [&'static str; 4] = [
        "malformed",
        "unknown_connection",
        "half_open_full",
        "refused",
    ];

    pub fn index(self) -> usize {
        match self {
            EndpointDrop::Malformed(_) => 0,
            EndpointDrop::UnknownConnection => 1,
            EndpointDrop::HalfOpenFull => 2,
            EndpointDrop::Refused => 3,
        }
    }
}

struct Entry {
    conn: Connection,
    created: Instant,
    /// Handed to the application by `poll_accept` (or made by `connect`).
    taken: bool,
}

/// The connections of one UDP socket.
pub struct Endpoint {
    cfg: EndpointConfig,
    conns: HashMap<ConnKey, Entry>,
    accepted: VecDeque<ConnKey>,
    half_open: usize,
    /// Half-open connections in the order their SYNs came (with their
    /// creation time, to tell a reused key apart); entries that are no
    /// longer half-open are skipped and pruned lazily.
    half_open_order: VecDeque<(Instant, ConnKey)>,
    /// Round-robin position of `poll_transmit`.
    order: Vec<ConnKey>,
    next: usize,
    rng: u64,
    pub dropped: [u64; 4],
}

impl Endpoint {
    /// Bytes one half-open connection costs (its table entry; no heap).
    pub const HALF_OPEN_BYTES: usize =
        std::mem::size_of::<Entry>() + std::mem::size_of::<ConnKey>() + 8;

    /// `seed` feeds the generator of our sequence numbers and ids.
    pub fn new(cfg: EndpointConfig, seed: u64) -> Self {
        Self {
            cfg,
            conns: HashMap::new(),
            accepted: VecDeque::new(),
            half_open: 0,
            half_open_order: VecDeque::new(),
            order: Vec::new(),
            next: 0,
            rng: seed | 1,
            dropped: [0; 4],
        }
    }

    fn random(&mut self) -> u16 {
        // xorshift64*: sequence numbers need not be secret, only varied.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 48) as u16
    }

    fn drop(&mut self, d: EndpointDrop) -> Option<ConnKey> {
        self.dropped[d.index()] += 1;
        None
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Half-open connections now.
    pub fn half_open(&self) -> usize {
        self.half_open
    }

    /// Open a connection to `remote`.
    pub fn connect(&mut self, now: Instant, remote: SocketAddr) -> ConnKey {
        let mut recv_id = self.random();
        while self.conns.contains_key(&ConnKey { remote, recv_id }) {
            recv_id = self.random();
        }
        let key = ConnKey { remote, recv_id };
        let conn = Connection::connect(now, self.cfg.conn, recv_id);
        self.insert(key, conn, now, true);
        key
    }

    fn insert(&mut self, key: ConnKey, conn: Connection, now: Instant, taken: bool) {
        self.conns.insert(
            key,
            Entry {
                conn,
                created: now,
                taken,
            },
        );
        self.order.push(key);
    }

    /// One datagram from `from`. Returns the connection it went to.
    pub fn handle(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) -> Option<ConnKey> {
        let p = match packet::decode(datagram) {
            Ok(p) => p,
            Err(e) => return self.drop(EndpointDrop::Malformed(e)),
        };
        let h = p.header;
        let recv_id = if h.ty == PacketType::Syn {
            h.connection_id.wrapping_add(1)
        } else {
            h.connection_id
        };
        let key = ConnKey {
            remote: from,
            recv_id,
        };
        if let Some(e) = self.conns.get_mut(&key) {
            let was = e.conn.is_established();
            e.conn.handle(now, &p);
            if !was && e.conn.is_established() && !e.conn_is_initiator() {
                self.half_open -= 1;
            }
            return Some(key);
        }
        if h.ty != PacketType::Syn {
            return self.drop(EndpointDrop::UnknownConnection);
        }
        if !self.cfg.accept || self.conns.len() >= self.cfg.max_connections {
            return self.drop(EndpointDrop::Refused);
        }
        if self.half_open >= self.cfg.max_half_open && !self.evict_stale_half_open(now) {
            return self.drop(EndpointDrop::HalfOpenFull);
        }
        let seq = self.random();
        let conn = Connection::accept(now, self.cfg.conn, &h, seq);
        self.half_open += 1;
        self.insert(key, conn, now, false);
        self.accepted.push_back(key);
        if self.half_open_order.len() >= 2 * self.cfg.max_half_open.max(1) {
            let conns = &self.conns;
            self.half_open_order
                .retain(|(at, k)| conns.get(k).is_some_and(|e| e.is_half_open_since(*at)));
        }
        self.half_open_order.push_back((now, key));
        Some(key)
    }

    /// Drop the oldest half-open connection if it is older than the
    /// half-open timeout, to make room for a new SYN.
    fn evict_stale_half_open(&mut self, now: Instant) -> bool {
        while let Some(&(at, key)) = self.half_open_order.front() {
            if !self
                .conns
                .get(&key)
                .is_some_and(|e| e.is_half_open_since(at))
            {
                self.half_open_order.pop_front();
                continue;
            }
            if now < at + self.cfg.half_open_timeout {
                return false;
            }
            self.half_open_order.pop_front();
            self.remove(key);
            return true;
        }
        false
    }

    /// A connection accepted since the last call.
    pub fn poll_accept(&mut self) -> Option<ConnKey> {
        while let Some(key) = self.accepted.pop_front() {
            if let Some(e) = self.conns.get_mut(&key) {
                if !e.conn.is_closed() {
                    e.taken = true;
                    return Some(key);
                }
            }
        }
        None
    }

    pub fn conn(&self, key: ConnKey) -> Option<&Connection> {
        self.conns.get(&key).map(|e| &e.conn)
    }

    pub fn conn_mut(&mut self, key: ConnKey) -> Option<&mut Connection> {
        self.conns.get_mut(&key).map(|e| &mut e.conn)
    }

    /// Forget a connection (the application is done with it).
    pub fn remove(&mut self, key: ConnKey) {
        if let Some(e) = self.conns.remove(&key) {
            if !e.conn.is_established() && !e.conn_is_initiator() {
                self.half_open -= 1;
            }
            self.order.retain(|k| *k != key);
        }
    }

    /// The next datagram of any connection, round robin.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut [u8]) -> Option<(SocketAddr, usize)> {
        self.poll_each(|c| c.poll_transmit(now, out))
    }

    /// [`Endpoint::poll_transmit`] without copying payloads: the header
    /// goes into `header`, the payload's slices onto `parts`
    /// ([`Connection::poll_transmit_parts`]).
    pub fn poll_transmit_parts(
        &mut self,
        now: Instant,
        header: &mut [u8],
        parts: &mut Vec<bytes::Bytes>,
    ) -> Option<(SocketAddr, usize)> {
        self.poll_each(|c| c.poll_transmit_parts(now, header, parts))
    }

    /// Round robin over the connections, staying on one until `f` gives
    /// it nothing more to send.
    fn poll_each(
        &mut self,
        mut f: impl FnMut(&mut Connection) -> Option<usize>,
    ) -> Option<(SocketAddr, usize)> {
        let n = self.order.len();
        for _ in 0..n {
            if self.next >= self.order.len() {
                self.next = 0;
            }
            let key = self.order[self.next];
            self.next += 1;
            if let Some(e) = self.conns.get_mut(&key) {
                if let Some(len) = f(&mut e.conn) {
                    self.next -= 1; // stay on it until it is drained
                    return Some((key.remote, len));
                }
            }
        }
        None
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.conns
            .values()
            .filter_map(|e| e.conn.poll_timeout())
            .min()
    }

    /// Run timers; drop closed connections the application never took.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut gone = Vec::new();
        for (key, e) in self.conns.iter_mut() {
            e.conn.handle_timeout(now);
            if e.conn.is_closed() && !e.taken {
                gone.push(*key);
            }
        }
        for key in gone {
            self.remove(key);
        }
    }
}

impl Entry {
    fn conn_is_initiator(&self) -> bool {
        self.conn.is_initiator()
    }

    /// Still the half-open connection made at `at`.
    fn is_half_open_since(&self, at: Instant) -> bool {
        self.created == at && !self.conn.is_established() && !self.conn_is_initiator()
    }
}
