//! One synthetic swarm leecher ([`Node`]): all of its peer connections, its
//! piece picker, choker and rate caps, sans-IO (no sockets; `now` is passed
//! in), so a whole swarm can be simulated with a virtual clock
//! ([`super::sim`]) or driven over real sockets ([`super::driver`]).
//!
//! # Call order (the driver's contract)
//!
//! 1. [`Node::new`], then [`Node::set_listen`] with its listen address.
//! 2. Connections: [`Node::poll_connects`] says whom to connect to; for
//!    each, [`Node::add_outgoing`] (then [`Node::on_connected`] once the TCP
//!    connection is up) or [`Node::connect_failed`]. Accepted connections:
//!    [`Node::add_incoming`] (`None`: over `--max-accept`, close it).
//! 3. Receiving: at most [`Node::read_budget`] bytes per read (0: the
//!    download cap is exhausted, do not read until [`Node::down_ready_at`]),
//!    passed to [`Node::handle_data`], which returns how many bytes it
//!    consumed; the rest (part of one message) is presented again in front
//!    of the next bytes. `Err`: close the connection.
//! 4. Sending: for peers listed by [`Node::take_dirty`] at once, by
//!    [`Node::take_lazy`] within a few milliseconds, and whenever a socket
//!    becomes writable, [`Node::output`] fills iovecs within the upload
//!    cap; report what the kernel took with [`Node::consume_output`].
//!    `blocked` output waits for [`Node::up_ready_at`].
//! 5. [`Node::tick`] at (or after) [`Node::next_timeout`]: choking,
//!    timeouts, keep-alives, reconnecting to the seed.
//! 6. Closing: connections listed by [`Node::take_closes`], and any the
//!    driver closes itself, are reported with [`Node::remove_peer`].
//!
//! # Behaviour
//!
//! Fast extension (BEP 6) and extension protocol (BEP 10) bits are set;
//! with a fast peer we send have_all / have_none and reject requests we
//! will not serve. Every verified piece is announced with `have` to every
//! peer, the seed included (a super-seeding seed learns from those haves
//! that a piece has spread). Requests for pieces we have not verified are
//! refused. Rate caps apply to payload bytes: the download cap by not
//! reading (and by bounding the bytes requested at once), the upload cap by
//! starting a block only when the bucket covers it.
//!
//! The download policy (picker, per-peer pipelines, tit-for-tat choker,
//! smart ban) is the library's [`ringseed::swarm::download`]; this node is
//! its driver for the load generator: allowed-fast pieces are requested
//! while choked, suggestions are honoured, and a peer whose blocks fail
//! hash checks twice is banned (by peer id) and disconnected.
//!
//! Not done: PEX/DHT, encryption, `port` messages, v2 hashes (pieces are
//! checked with their v1 SHA-1).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringseed::swarm::ratelimit::{Rate, TokenBucket};
use ringseed::wire::codec::{BlockRequest, Handshake, Message, ReservedFlags};

use ringseed::swarm::download::peer::PeerDownload;
use ringseed::swarm::download::picker::{PiecePicker, BLOCK_LEN};
use ringseed::swarm::download::rng::Rng;
use ringseed::swarm::download::smart_ban::{SmartBan, SmartBanConfig};
use ringseed::swarm::download::tit_for_tat::{ChokeChange, Choker, ChokerConfig};

use super::store::ContentStore;
use super::wire::{Fill, PeerWire};
use super::PeerKey;
use crate::torrents::LoadTorrent;

mod messages;

/// Addresses remembered for connecting later.
const MAX_CANDIDATES: usize = 2000;
/// How often timeouts and keep-alives are checked.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
const KEEPALIVE_AFTER: Duration = Duration::from_secs(60);
const TARGET_RETRY: Duration = Duration::from_secs(1);

/// Settings shared by every leecher of a run.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Outstanding block requests per peer (lowered to the peer's `reqq`).
    /// Default 16.
    pub pipeline: usize,
    /// Outgoing peer connections (the seed not counted). Default 50.
    pub max_connect: usize,
    /// Incoming peer connections accepted. Default 80.
    pub max_accept: usize,
    pub choker: ChokerConfig,
    /// Payload upload cap of each leecher. Default unlimited.
    pub up: Rate,
    /// Payload download cap of each leecher. Default unlimited.
    pub down: Rate,
    /// Outstanding requests to a peer that sent no block for this long are
    /// cancelled and the peer is not asked again for as long. Default 20 s.
    pub request_timeout: Duration,
    /// Default 10 s.
    pub handshake_timeout: Duration,
    /// Requests we queue per peer (our `reqq`). Default 128.
    pub max_peer_requests: usize,
    /// The seed every leecher connects to (and reconnects to until done).
    pub target: Option<SocketAddr>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            pipeline: 16,
            max_connect: 50,
            max_accept: 80,
            choker: ChokerConfig::default(),
            up: Rate::UNLIMITED,
            down: Rate::UNLIMITED,
            request_timeout: Duration::from_secs(20),
            handshake_timeout: Duration::from_secs(10),
            max_peer_requests: 128,
            target: None,
        }
    }
}

/// Bucket depth for a cap: 200 ms at the rate (at least 4 blocks), so a
/// busy event loop that serves a leecher a little late does not lose its
/// share; over any longer interval the cap holds exactly.
pub fn bucket_for(now: Instant, rate: Rate) -> TokenBucket {
    match rate.bytes_per_sec() {
        Some(r) => TokenBucket::new(now, r, (r / 5).max(4 * u64::from(BLOCK_LEN))),
        None => TokenBucket::unlimited(now),
    }
}

/// A connection the node wants opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectRequest {
    pub addr: SocketAddr,
    /// The `--target` seed.
    pub target: bool,
}

/// What one leecher did (payload bytes unless named otherwise).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct NodeStats {
    /// Received on connections to the `--target` seed.
    pub bytes_from_target: u64,
    /// Received from other leechers.
    pub bytes_from_peers: u64,
    pub bytes_uploaded: u64,
    /// Received but not needed (endgame duplicates, blocks after a cancel).
    pub wasted_bytes: u64,
    /// Blocks that arrived from a peer we had not asked for them.
    pub unsolicited_blocks: u64,
    pub pieces_verified: u32,
    pub hash_failures: u32,
    /// Peers banned for sending bad blocks (smart ban).
    pub peers_banned: u32,
    pub requests_sent: u64,
    pub rejects_received: u64,
    pub requests_timed_out: u64,
    /// Peer handshakes completed (the seed not counted).
    pub peers_connected: u64,
    pub connect_failures: u64,
    pub protocol_errors: u64,
    /// Connections closed, by reason.
    pub closes: BTreeMap<&'static str, u64>,
}

#[derive(Debug)]
struct Peer {
    conn: u64,
    /// The remote address of an accepted connection.
    addr: Option<SocketAddr>,
    outgoing: bool,
    is_target: bool,
    wire: PeerWire,
    handshaken: bool,
    closing: bool,
    /// Listed in `Node::dirty` (send now) / `Node::lazy` (send soon).
    dirty: bool,
    lazy: bool,
    remote_id: [u8; 20],
    am_choking: bool,
    /// The download side: what it has, our requests to it, its rate (the
    /// library's engine; its `has` is counted in the picker's availability).
    dl: PeerDownload,
    opened: Instant,
    last_tx: Instant,
}

/// What [`Node::output`] offered.
pub type Output = Fill;

/// See the module docs.
#[derive(Debug)]
pub struct Node {
    id: usize,
    torrent: Arc<LoadTorrent>,
    store: Arc<ContentStore>,
    cfg: Arc<NodeConfig>,
    peer_id: [u8; 20],
    listen: Option<SocketAddr>,
    peers: Vec<Option<Peer>>,
    free_keys: Vec<PeerKey>,
    n_out: usize,
    n_in: usize,
    picker: PiecePicker,
    choker: Choker,
    smart_ban: SmartBan<[u8; 20]>,
    up: TokenBucket,
    down: TokenBucket,
    outstanding_bytes: u64,
    max_outstanding_bytes: u64,
    completed_at: Option<Instant>,
    stats: NodeStats,
    candidates: VecDeque<SocketAddr>,
    known: HashSet<SocketAddr>,
    target_key: Option<PeerKey>,
    target_pending: bool,
    target_next_try: Instant,
    endgame_seen: bool,
    dirty: Vec<PeerKey>,
    lazy: Vec<PeerKey>,
    closes: Vec<(PeerKey, &'static str)>,
    changes: Vec<ChokeChange>,
    scratch: Vec<BlockRequest>,
    next_housekeeping: Instant,
    rr: usize,
}

type NodeResult = Result<(), &'static str>;

impl Node {
    /// Leecher `id`; `complete`: start as a seed (the store must hold every
    /// piece). `seed` makes its peer id and piece order reproducible.
    pub fn new(
        id: usize,
        torrent: Arc<LoadTorrent>,
        store: Arc<ContentStore>,
        cfg: Arc<NodeConfig>,
        seed: u64,
        now: Instant,
        complete: bool,
    ) -> Self {
        let mut rng = Rng::new(seed);
        let mut peer_id = *b"-RL0200-000000000000";
        for b in peer_id.iter_mut().skip(8) {
            *b = b'a' + (rng.next_u64() % 26) as u8;
        }
        let mut picker = PiecePicker::new(
            torrent.num_pieces,
            torrent.piece_length,
            torrent.piece_space_len,
            rng.next_u64(),
        );
        let mut choker = Choker::new(now, cfg.choker.clone(), rng.next_u64());
        if complete {
            picker.set_have_all();
            choker.set_seeding(now, true, &mut Vec::new());
        }
        // Per peer, requests follow its rate (`queue_depth`); this is only
        // a backstop under a download cap: 2 s of data at most, beyond
        // which requests merely wait in socket buffers and go stale.
        let max_outstanding_bytes = cfg.down.bytes_per_sec().map_or(u64::MAX, |r| {
            (2 * r).clamp(16 * u64::from(BLOCK_LEN), 2048 * u64::from(BLOCK_LEN))
        });
        Node {
            id,
            up: bucket_for(now, cfg.up),
            down: bucket_for(now, cfg.down),
            torrent,
            store,
            peer_id,
            listen: None,
            peers: Vec::new(),
            free_keys: Vec::new(),
            n_out: 0,
            n_in: 0,
            picker,
            choker,
            smart_ban: SmartBan::new(SmartBanConfig::default()),
            outstanding_bytes: 0,
            max_outstanding_bytes,
            completed_at: complete.then_some(now),
            stats: NodeStats::default(),
            candidates: VecDeque::new(),
            known: HashSet::new(),
            target_key: None,
            target_pending: false,
            target_next_try: now,
            endgame_seen: false,
            dirty: Vec::new(),
            lazy: Vec::new(),
            closes: Vec::new(),
            changes: Vec::new(),
            scratch: Vec::new(),
            next_housekeeping: now + HOUSEKEEPING,
            rr: 0,
            cfg,
        }
    }

    pub fn id(&self) -> usize {
        self.id
    }

    pub fn peer_id(&self) -> [u8; 20] {
        self.peer_id
    }

    pub fn set_listen(&mut self, addr: SocketAddr) {
        self.listen = Some(addr);
    }

    pub fn listen(&self) -> Option<SocketAddr> {
        self.listen
    }

    pub fn stats(&self) -> &NodeStats {
        &self.stats
    }

    pub fn completed_at(&self) -> Option<Instant> {
        self.completed_at
    }

    pub fn is_complete(&self) -> bool {
        self.completed_at.is_some()
    }

    pub fn pieces_have(&self) -> u32 {
        self.picker.have_count()
    }

    /// Connections (any state).
    pub fn peer_count(&self) -> usize {
        self.peers.iter().flatten().count()
    }

    pub fn unchoked_count(&self) -> usize {
        self.choker.unchoked_count()
    }

    pub fn bytes_remaining(&self) -> u64 {
        if self.is_complete() {
            0
        } else {
            let have: u64 = (0..self.torrent.num_pieces)
                .filter(|&p| self.picker.have(p))
                .map(|p| u64::from(self.picker.piece_len(p)))
                .sum();
            self.torrent.piece_space_len - have
        }
    }

    /// Addresses of other leechers (from a tracker or the tool). Our own
    /// address, the seed's and ones seen before are skipped.
    pub fn add_candidates(&mut self, addrs: &[SocketAddr]) {
        for &a in addrs {
            if Some(a) == self.listen || Some(a) == self.cfg.target || self.known.contains(&a) {
                continue;
            }
            if self.known.len() >= MAX_CANDIDATES {
                break;
            }
            self.known.insert(a);
            self.candidates.push_back(a);
        }
    }

    /// `addr` is connected already (it dialled us): do not dial it.
    fn forget_candidate(&mut self, addr: SocketAddr) {
        if self.known.insert(addr) {
            return;
        }
        self.candidates.retain(|&a| a != addr);
    }

    /// Connections to open now (the seed while not connected and not done,
    /// then candidates up to `--max-connect`). Answer each with
    /// [`Self::add_outgoing`] or [`Self::connect_failed`].
    pub fn poll_connects(&mut self, now: Instant, out: &mut Vec<ConnectRequest>) {
        if let Some(t) = self.cfg.target {
            if self.target_key.is_none()
                && !self.target_pending
                && !self.is_complete()
                && now >= self.target_next_try
            {
                self.target_pending = true;
                out.push(ConnectRequest {
                    addr: t,
                    target: true,
                });
            }
        }
        while self.n_out < self.cfg.max_connect {
            let Some(addr) = self.candidates.pop_front() else {
                break;
            };
            self.n_out += 1;
            out.push(ConnectRequest {
                addr,
                target: false,
            });
        }
    }

    fn insert_peer(&mut self, now: Instant, conn: u64, outgoing: bool, is_target: bool) -> PeerKey {
        let peer = Peer {
            conn,
            addr: None,
            outgoing,
            is_target,
            wire: PeerWire::new(),
            handshaken: false,
            closing: false,
            dirty: false,
            lazy: false,
            remote_id: [0; 20],
            am_choking: true,
            dl: PeerDownload::new(now, self.torrent.num_pieces, self.cfg.pipeline, false),
            opened: now,
            last_tx: now,
        };
        match self.free_keys.pop() {
            Some(k) => {
                self.peers[k as usize] = Some(peer);
                k
            }
            None => {
                self.peers.push(Some(peer));
                (self.peers.len() - 1) as PeerKey
            }
        }
    }

    /// A connection from [`Self::poll_connects`] is being opened as `conn`
    /// (the driver's handle, handed back by [`Self::take_dirty`] etc.).
    pub fn add_outgoing(&mut self, now: Instant, conn: u64, req: ConnectRequest) -> PeerKey {
        let k = self.insert_peer(now, conn, true, req.target);
        if req.target {
            self.target_pending = false;
            self.target_key = Some(k);
        }
        k
    }

    /// A connection from [`Self::poll_connects`] could not be opened.
    pub fn connect_failed(&mut self, now: Instant, req: ConnectRequest) {
        self.stats.connect_failures += 1;
        if req.target {
            self.target_pending = false;
            self.target_next_try = now + TARGET_RETRY;
        } else {
            self.n_out = self.n_out.saturating_sub(1);
        }
    }

    /// An accepted connection from `from`; `None`: over `--max-accept`,
    /// close it.
    pub fn add_incoming(&mut self, now: Instant, conn: u64, from: SocketAddr) -> Option<PeerKey> {
        if self.n_in >= self.cfg.max_accept {
            return None;
        }
        self.n_in += 1;
        let k = self.insert_peer(now, conn, false, false);
        if let Some(p) = self.peer_mut(k) {
            p.addr = Some(from);
        }
        Some(k)
    }

    /// The TCP connection of outgoing peer `key` is up: send our handshake.
    pub fn on_connected(&mut self, now: Instant, key: PeerKey) {
        let hs = self.our_handshake();
        if let Some(p) = self.peer_mut(key) {
            p.wire.queue_raw(&hs);
            p.opened = now;
        }
        self.mark_dirty(key);
    }

    fn our_handshake(&self) -> [u8; 68] {
        Handshake {
            reserved: ReservedFlags {
                fast: true,
                extension: true,
                v2: false,
                dht: false,
            }
            .to_bytes(),
            info_hash: self.torrent.handshake_hash,
            peer_id: self.peer_id,
        }
        .encode()
    }

    fn peer_mut(&mut self, key: PeerKey) -> Option<&mut Peer> {
        self.peers.get_mut(key as usize)?.as_mut()
    }

    fn peer(&self, key: PeerKey) -> Option<&Peer> {
        self.peers.get(key as usize)?.as_ref()
    }

    fn mark_dirty(&mut self, key: PeerKey) {
        if let Some(p) = self.peer_mut(key) {
            if !p.dirty && !p.closing {
                p.dirty = true;
                self.dirty.push(key);
            }
        }
    }

    /// Output that may wait a little (haves, not interested, keep-alives):
    /// flushed with the next urgent output or by [`Self::take_lazy`], so a
    /// verified piece costs one send per peer per flush, not one per have.
    fn mark_lazy(&mut self, key: PeerKey) {
        if let Some(p) = self.peer_mut(key) {
            if !p.dirty && !p.lazy && !p.closing {
                p.lazy = true;
                self.lazy.push(key);
            }
        }
    }

    fn queue_msg(&mut self, key: PeerKey, m: &Message<'_>) {
        if let Some(p) = self.peer_mut(key) {
            p.wire.queue(m);
        }
        self.mark_dirty(key);
    }

    /// Closes `key` from inside the node (duplicate, timeout).
    fn close(&mut self, key: PeerKey, reason: &'static str) {
        if let Some(p) = self.peer_mut(key) {
            if !p.closing {
                p.closing = true;
                self.closes.push((key, reason));
            }
        }
    }

    /// Peers with new output since the last call: `(key, conn)`.
    pub fn take_dirty(&mut self, out: &mut Vec<(PeerKey, u64)>) {
        let Self { dirty, peers, .. } = self;
        for k in dirty.drain(..) {
            if let Some(p) = peers.get_mut(k as usize).and_then(Option::as_mut) {
                p.dirty = false;
                if !p.closing {
                    out.push((k, p.conn));
                }
            }
        }
    }

    /// Peers with output that can wait (see [`Self::mark_lazy`]); the
    /// driver flushes them every few milliseconds.
    pub fn take_lazy(&mut self, out: &mut Vec<(PeerKey, u64)>) {
        let Self { lazy, peers, .. } = self;
        for k in lazy.drain(..) {
            if let Some(p) = peers.get_mut(k as usize).and_then(Option::as_mut) {
                p.lazy = false;
                if !p.closing && p.wire.has_output() {
                    out.push((k, p.conn));
                }
            }
        }
    }

    /// Connections the node wants closed: `(key, conn, reason)`. Call
    /// [`Self::remove_peer`] for each once closed.
    pub fn take_closes(&mut self, out: &mut Vec<(PeerKey, u64, &'static str)>) {
        let Self { closes, peers, .. } = self;
        for (k, reason) in closes.drain(..) {
            if let Some(p) = peers.get(k as usize).and_then(Option::as_ref) {
                out.push((k, p.conn, reason));
            }
        }
    }

    /// The connection of `key` is gone (closed by either side): forget it.
    pub fn remove_peer(&mut self, now: Instant, key: PeerKey, reason: &'static str) {
        let Some(mut p) = self.peers.get_mut(key as usize).and_then(Option::take) else {
            return;
        };
        self.free_keys.push(key);
        *self.stats.closes.entry(reason).or_default() += 1;
        self.picker.remove_bitfield(&p.dl.has);
        for r in &p.dl.take_outstanding() {
            self.picker.request_cancelled(r);
            self.outstanding_bytes -= u64::from(r.len);
        }
        if p.is_target {
            self.target_key = None;
            self.target_next_try = now + TARGET_RETRY;
        } else if p.outgoing {
            self.n_out = self.n_out.saturating_sub(1);
        } else {
            self.n_in = self.n_in.saturating_sub(1);
        }
        if p.handshaken {
            let mut changes = std::mem::take(&mut self.changes);
            self.choker.remove(now, key, &mut changes);
            self.apply_choke_changes(&mut changes);
            self.changes = changes;
        }
        self.fill_requests(now);
    }

    /// Bytes that may be read now (payload and protocol together); 0 while
    /// the download cap is exhausted.
    pub fn read_budget(&self, now: Instant) -> usize {
        if self.down.is_unlimited() {
            usize::MAX
        } else {
            usize::try_from(self.down.available(now)).unwrap_or(usize::MAX)
        }
    }

    /// When reading can resume after [`Self::read_budget`] was 0.
    pub fn down_ready_at(&self, now: Instant) -> Instant {
        self.down.next_ready(now, u64::from(BLOCK_LEN))
    }

    /// When a blocked upload can start.
    pub fn up_ready_at(&self, now: Instant) -> Instant {
        self.up.next_ready(now, u64::from(BLOCK_LEN))
    }

    /// Everything `key` should send now within the upload cap.
    pub fn output<'a>(&'a self, now: Instant, key: PeerKey, iov: &mut Vec<IoSlice<'a>>) -> Output {
        let Some(p) = self.peer(key).filter(|p| !p.closing) else {
            return Output::default();
        };
        let budget = if self.up.is_unlimited() {
            u64::MAX
        } else {
            self.up.available(now)
        };
        p.wire.fill_iov(&self.store, budget, iov)
    }

    /// `n` bytes of the last [`Self::output`] for `key` were sent.
    pub fn consume_output(&mut self, now: Instant, key: PeerKey, n: usize) {
        let Some(p) = self.peers.get_mut(key as usize).and_then(Option::as_mut) else {
            return;
        };
        let sent = p.wire.consume(n);
        if n > 0 {
            p.last_tx = now;
        }
        self.up.charge(now, sent.started);
        self.stats.bytes_uploaded += sent.payload;
    }

    pub fn next_timeout(&self) -> Instant {
        let mut t = self.choker.next_timeout().min(self.next_housekeeping);
        if self.cfg.target.is_some() && self.target_key.is_none() && !self.is_complete() {
            t = t.min(self.target_next_try);
        }
        t
    }

    /// Timers: choking, timeouts, keep-alives.
    pub fn tick(&mut self, now: Instant) {
        let mut changes = std::mem::take(&mut self.changes);
        self.choker.tick(now, &mut changes);
        self.apply_choke_changes(&mut changes);
        self.changes = changes;
        if now >= self.next_housekeeping {
            self.next_housekeeping = now + HOUSEKEEPING;
            self.housekeeping(now);
        }
        self.fill_requests(now);
    }

    fn housekeeping(&mut self, now: Instant) {
        for k in 0..self.peers.len() as PeerKey {
            let cfg = &self.cfg;
            let Some(p) = self.peers[k as usize].as_mut() else {
                continue;
            };
            if p.closing {
                continue;
            }
            if !p.handshaken && now.saturating_duration_since(p.opened) > cfg.handshake_timeout {
                self.close(k, "handshake_timeout");
                continue;
            }
            let timed_out = p.dl.take_timed_out(now, cfg.request_timeout);
            if !timed_out.is_empty() {
                for r in &timed_out {
                    p.wire.queue(&Message::Cancel(*r));
                }
                self.stats.requests_timed_out += timed_out.len() as u64;
                self.forget_requests(&timed_out);
                self.mark_dirty(k);
                continue;
            }
            if p.handshaken && now.saturating_duration_since(p.last_tx) > KEEPALIVE_AFTER {
                p.wire.queue(&Message::KeepAlive);
                p.last_tx = now;
                self.mark_lazy(k);
            }
        }
    }
}
