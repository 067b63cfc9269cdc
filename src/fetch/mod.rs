//! Fetch, then seed: the missing pieces of a served torrent are downloaded
//! from the swarm while the shards already serve every piece that is
//! verified (a partial seed).
//!
//! # Shape
//!
//! One `fetch` thread per fetching torrent owns its outgoing connections
//! (nonblocking sockets under `poll(2)`; a box fetches from tens of peers,
//! not thousands, so the shards' io_uring machinery buys nothing here) and
//! drives the library's download policies ([`crate::swarm::download`]:
//! rarest first, partial pieces first, endgame with cancels, pipelines
//! sized by each peer's measured rate, BEP 6 suggest and allowed-fast,
//! smart ban). Whole pieces go to the [`PieceWriter`] thread, which checks
//! them (v1 SHA-1, v2 merkle, both for a hybrid) before a byte is written;
//! only a written piece is made live ([`Availability::restore`]), so the
//! shards never serve a piece before it is verified. They then tell their
//! peers with `have` (within 100 ms), and this thread tells the peers it
//! downloads from (a super-seeding origin learns from those `have`s that a
//! piece has spread).
//!
//! The fetch connections only download: we keep them choked and reject
//! (fast peers) or ignore their requests. Peers that want our pieces
//! connect to the shards, which serve them zero-copy from the page cache;
//! that is how edge boxes of a fleet fill from each other.
//!
//! Peers come from `--peer`, from peers that connect to our shards for
//! this torrent (the listen port `p` of their extension handshake, see
//! [`ServedTorrent::hint_fetch_peer`]; our fetch connections send ours, so
//! two fetching boxes that meet once dial each other), and from the
//! torrent's trackers (and `--tracker`), announced by a `fetch-announce`
//! thread with `left` set,
//! every [`FETCHING_REANNOUNCE`] while fetching so boxes that start later
//! are found; once complete it announces `completed` and keeps announcing
//! as a seed at the tracker's interval, and `stopped` at shutdown.
//!
//! Memory: per connection its receive buffer (one message, at most about
//! one bitfield or 16 KiB block), its small control output, and the
//! blocks outstanding at it (at most [`FetchConfig::max_requests`]); the
//! pieces in progress and the writer's bounded queue.
//!
//! A magnet link's info dictionary is fetched first ([`metadata`]).
//!
//! Not done: DHT, PEX, v2-only magnet links, encryption (MSE) on the fetch
//! connections, uTP on the fetch connections.

mod announce;
pub mod metadata;
mod peer;

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::engine::ServedTorrent;
use crate::storage::writer::{PieceWriter, WriteOutcome};
use crate::swarm::download::picker::{FailedPiece, PieceOutcome, PiecePicker};
use crate::swarm::download::smart_ban::{SmartBan, SmartBanConfig};
use crate::swarm::download::PeerKey;
use crate::wire::codec::{BlockRequest, Message};
use crate::wire::Bitfield;

use peer::{FetchPeer, Input, PeerPhase};

pub use announce::FETCHING_REANNOUNCE;

/// Settings of one fetch.
#[derive(Debug, Clone)]
pub struct FetchConfig {
    /// The engine's peer id: announced to trackers (one box, one id), and
    /// how we recognise our own shards (fetch connections use a variant).
    pub peer_id: [u8; 20],
    /// The port the shards listen on, announced to trackers.
    pub announce_port: u16,
    /// `--announce-ip`.
    pub announce_ip: Option<IpAddr>,
    /// `--peer`: peers to fetch from whatever the trackers say, `IP:PORT`
    /// or `HOST:PORT` (a `fetch-resolve` thread resolves names every
    /// [`RESOLVE_EVERY`] until the fetch is complete).
    pub peers: Vec<String>,
    /// BEP 12 tiers to announce to (usually the torrent's plus `--tracker`;
    /// the caller leaves out the box's own embedded tracker).
    pub trackers: Vec<Vec<String>>,
    /// Our own listen addresses: never dialled.
    pub own: Vec<SocketAddr>,
    /// Connections at once. Default 32.
    pub max_peers: usize,
    /// Block requests outstanding at one peer, at most (also lowered to
    /// its `reqq`). Default 128 (2 MiB).
    pub max_requests: usize,
    /// Longest a connect may take. Default 5 s.
    pub connect_timeout: Duration,
    /// Requests outstanding this long without a block are given up and
    /// the peer is not asked again for as long. Default 20 s.
    pub request_timeout: Duration,
    /// A peer that sent nothing for this long is closed. Default 120 s.
    pub idle_timeout: Duration,
    /// Our release ledger, told to peers in the extension handshake
    /// (`ringseed_ledger`, as the shards do).
    pub ledger: Option<Arc<crate::wire::ext::LedgerBeacon>>,
    /// Where another box's ledger advert goes (the ledger node pulls from
    /// it when it is ahead); never blocks.
    pub ledger_hints: Option<mpsc::SyncSender<crate::ledger::node::LedgerHint>>,
}

impl Default for FetchConfig {
    fn default() -> Self {
        FetchConfig {
            peer_id: [0; 20],
            announce_port: 0,
            announce_ip: None,
            peers: Vec::new(),
            trackers: Vec::new(),
            own: Vec::new(),
            max_peers: 32,
            max_requests: 128,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(120),
            ledger: None,
            ledger_hints: None,
        }
    }
}

/// What a fetch has done (read by the metrics endpoint and the tests).
#[derive(Debug, Default)]
pub struct FetchStats {
    /// Pieces verified and written by this fetch.
    pub pieces_fetched: AtomicU32,
    /// Pieces live (verified) now, counting those there at start.
    pub pieces_have: AtomicU32,
    /// Payload bytes received in blocks we had asked for.
    pub payload_bytes: AtomicU64,
    /// Blocks that arrived twice (endgame) or after a cancel.
    pub wasted_blocks: AtomicU64,
    /// Blocks nobody asked for (dropped).
    pub unsolicited_blocks: AtomicU64,
    /// Pieces whose hash check failed.
    pub hash_failures: AtomicU32,
    /// Peers banned by the smart ban.
    pub peers_banned: AtomicU32,
    /// Peer connections with a completed handshake now.
    pub peers_connected: AtomicU32,
    /// Every piece is verified and the resume record is saved.
    pub complete: AtomicBool,
    /// The writer stopped on an error (full disk, read-only path).
    pub failed: AtomicBool,
}

/// A running fetch. Dropping it (or [`Fetch::shutdown`]) stops it; what
/// was verified stays verified and recorded.
pub struct Fetch {
    stop: Arc<AtomicBool>,
    stats: Arc<FetchStats>,
    thread: Option<JoinHandle<()>>,
    announcer: Option<announce::FetchAnnouncer>,
    resolver: Option<JoinHandle<()>>,
}

impl Fetch {
    /// Starts fetching the pieces of `torrent` that are not live, writing
    /// them with `writer` (opened on the same files; see
    /// [`ServedTorrent::fetching`]).
    pub fn start(
        torrent: Arc<ServedTorrent>,
        writer: PieceWriter,
        cfg: FetchConfig,
    ) -> io::Result<Fetch> {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(FetchStats::default());
        let have = torrent.live_pieces();
        stats.pieces_have.store(have, Ordering::Relaxed);
        let (peers_tx, peers_rx) = mpsc::channel();
        let resolver = start_resolver(
            &cfg.peers,
            Arc::clone(&stats),
            Arc::clone(&stop),
            peers_tx.clone(),
        )?;
        let announcer =
            announce::FetchAnnouncer::start(&torrent, &cfg, Arc::clone(&stats), peers_tx)?;
        let mut run = Run::new(torrent, writer, cfg, Arc::clone(&stats), peers_rx);
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("fetch".into())
            .spawn(move || run.run(&stop2))?;
        Ok(Fetch {
            stop,
            stats,
            thread: Some(thread),
            announcer,
            resolver,
        })
    }

    pub fn stats(&self) -> &Arc<FetchStats> {
        &self.stats
    }

    pub fn is_complete(&self) -> bool {
        self.stats.complete.load(Ordering::Acquire)
    }

    /// Stops the download (the writer saves its resume record) and sends
    /// `stopped` to the trackers.
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(a) = self.announcer.take() {
            a.shutdown();
        }
        if let Some(r) = self.resolver.take() {
            let _ = r.join();
        }
    }
}

impl Drop for Fetch {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// How often `--peer` names are resolved again while fetching.
pub const RESOLVE_EVERY: Duration = Duration::from_secs(10);

/// Resolves the `--peer` entries now and every [`RESOLVE_EVERY`] until the
/// fetch is complete or stopped (a name may not resolve yet: the origin's
/// pod is starting), handing the addresses to the fetch loop.
fn start_resolver(
    names: &[String],
    stats: Arc<FetchStats>,
    stop: Arc<AtomicBool>,
    out: mpsc::Sender<Vec<SocketAddr>>,
) -> io::Result<Option<JoinHandle<()>>> {
    if names.is_empty() {
        return Ok(None);
    }
    let names = names.to_vec();
    let t = std::thread::Builder::new()
        .name("fetch-resolve".into())
        .spawn(move || {
            let mut next = Instant::now();
            while !stop.load(Ordering::Acquire) && !stats.complete.load(Ordering::Acquire) {
                if Instant::now() >= next {
                    let mut addrs = Vec::new();
                    for n in &names {
                        match std::net::ToSocketAddrs::to_socket_addrs(n.as_str()) {
                            Ok(a) => addrs.extend(a),
                            Err(e) => tracing::warn!(peer = %n, error = %e, "cannot resolve --peer; trying again"),
                        }
                    }
                    if out.send(addrs).is_err() {
                        return;
                    }
                    next = Instant::now() + RESOLVE_EVERY;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })?;
    Ok(Some(t))
}

/// Bytes read per `read` call.
const READ_CHUNK: usize = 64 * 1024;
/// Reads of one peer per turn (so one fast peer cannot starve the rest).
const READS_PER_TURN: usize = 8;
/// Housekeeping: timeouts, keep-alives, connects.
const HOUSEKEEPING: Duration = Duration::from_millis(250);
const KEEPALIVE: Duration = Duration::from_secs(60);
/// Least wait before dialling an address that failed, doubled per failure.
const RETRY_MIN: Duration = Duration::from_secs(2);
const RETRY_MAX: Duration = Duration::from_secs(60);
/// At the connection cap, a peer that has nothing we lack or chokes us,
/// this long after its handshake, is closed (and retried with back-off).
const USELESS_AFTER: Duration = Duration::from_secs(30);
/// Addresses remembered.
const MAX_KNOWN: usize = 1000;
/// Our control output a peer may leave unread before it is closed.
const MAX_TX: usize = 256 * 1024;

struct Known {
    failures: u32,
    next_try: Instant,
    connected: bool,
}

/// The fetch thread's state.
struct Run {
    torrent: Arc<ServedTorrent>,
    writer: Option<PieceWriter>,
    cfg: FetchConfig,
    stats: Arc<FetchStats>,
    peers_rx: mpsc::Receiver<Vec<SocketAddr>>,
    picker: PiecePicker,
    /// Keyed by the address we dial (ip and port): boxes of a test or a
    /// NATed fleet share an IP.
    ban: SmartBan<SocketAddr>,
    peers: HashMap<PeerKey, FetchPeer>,
    next_key: PeerKey,
    known: HashMap<SocketAddr, Known>,
    /// Addresses that turned out to be us (same peer id).
    ourselves: HashSet<SocketAddr>,
    /// Who sent each block of the pieces at the writer.
    at_writer: HashMap<u32, Vec<PeerKey>>,
    /// Pieces the writer's queue had no room for yet.
    backlog: VecDeque<(u32, Vec<u8>)>,
    info_hash: [u8; 20],
    /// The peer id of our fetch connections: the engine's with its last
    /// byte changed. A peer that our shards serve sees two ids from this
    /// box, as libtorrent drops the second connection of a peer id it
    /// already has (it would drop what it downloads from).
    fetch_id: [u8; 20],
    max_message: u32,
    last_housekeeping: Instant,
    requests: Vec<BlockRequest>,
}

impl Run {
    fn new(
        torrent: Arc<ServedTorrent>,
        writer: PieceWriter,
        cfg: FetchConfig,
        stats: Arc<FetchStats>,
        peers_rx: mpsc::Receiver<Vec<SocketAddr>>,
    ) -> Run {
        let t = &torrent.torrent;
        let seed = u64::from_le_bytes(cfg.peer_id[12..20].try_into().unwrap_or_default());
        let plen = u32::try_from(t.piece_length).unwrap_or(u32::MAX);
        let mut picker = PiecePicker::new(t.num_pieces, plen, t.piece_space_len, seed);
        for p in 0..t.num_pieces {
            if torrent.is_live(p) {
                picker.set_have(p);
            }
        }
        let max_message = (crate::wire::bitfield::bitfield_len(t.num_pieces) as u32 + 16)
            .max(crate::wire::codec::MAX_BLOCK_LEN + 64)
            .max(1 << 17);
        let now = Instant::now();
        let known = HashMap::new();
        let mut fetch_id = cfg.peer_id;
        fetch_id[19] ^= 0x5a;
        Run {
            fetch_id,
            info_hash: torrent.key(),
            torrent,
            writer: Some(writer),
            cfg,
            stats,
            peers_rx,
            picker,
            ban: SmartBan::new(SmartBanConfig::default()),
            peers: HashMap::new(),
            next_key: 0,
            known,
            ourselves: HashSet::new(),
            at_writer: HashMap::new(),
            backlog: VecDeque::new(),
            max_message,
            last_housekeeping: now - HOUSEKEEPING,
            requests: Vec::new(),
        }
    }

    fn run(&mut self, stop: &AtomicBool) {
        let name = self.torrent.torrent.name.clone();
        let missing = self.torrent.torrent.num_pieces - self.picker.have_count();
        tracing::info!(torrent = %name, missing, "fetching the missing pieces from the swarm");
        let started = Instant::now();
        let mut fds: Vec<libc::pollfd> = Vec::new();
        let mut keys: Vec<PeerKey> = Vec::new();
        let mut buf = vec![0u8; READ_CHUNK];
        while !stop.load(Ordering::Acquire) {
            let now = Instant::now();
            if now.duration_since(self.last_housekeeping) >= HOUSEKEEPING {
                self.last_housekeeping = now;
                self.housekeeping(now);
            }
            if self.drain_writer() {
                break;
            }
            self.flush_backlog();
            fds.clear();
            keys.clear();
            for (&k, p) in &self.peers {
                let mut events = libc::POLLIN;
                if p.wants_write() {
                    events |= libc::POLLOUT;
                }
                fds.push(libc::pollfd {
                    fd: p.sock.as_raw_fd(),
                    events,
                    revents: 0,
                });
                keys.push(k);
            }
            // Writer outcomes have no fd: poll briefly while pieces are there.
            let wait = if self.at_writer.is_empty() && self.backlog.is_empty() {
                HOUSEKEEPING
            } else {
                Duration::from_millis(2)
            };
            // SAFETY: `fds` is a valid array of `fds.len()` pollfd entries.
            let n = unsafe {
                libc::poll(
                    fds.as_mut_ptr(),
                    fds.len() as libc::nfds_t,
                    wait.as_millis() as libc::c_int,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!(error = %e, "fetch: poll failed; stopping the fetch");
                break;
            }
            let now = Instant::now();
            for (i, fd) in fds.iter().enumerate() {
                if fd.revents == 0 {
                    continue;
                }
                let key = keys[i];
                let r = self.service(key, fd.revents, now, &mut buf);
                if let Err(why) = r {
                    self.close(key, &why);
                }
            }
        }
        if let Some(w) = self.writer.take() {
            // Queued pieces are written and the resume record saved.
            match w.finish() {
                Ok(bits) => {
                    if bits.is_full() && !self.stats.complete.load(Ordering::Relaxed) {
                        self.complete_now(started);
                    }
                }
                Err(e) => tracing::error!(torrent = %name, error = %e, "fetch: the writer stopped"),
            }
        }
        let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
        for k in keys {
            self.close(k, "fetch stopped");
        }
    }

    fn complete_now(&self, started: Instant) {
        self.stats.complete.store(true, Ordering::Release);
        tracing::info!(
            torrent = %self.torrent.torrent.name,
            pieces = self.stats.pieces_fetched.load(Ordering::Relaxed),
            secs = started.elapsed().as_secs_f64(),
            "fetch complete: every piece verified; seeding"
        );
    }

    /// One socket is ready.
    fn service(
        &mut self,
        key: PeerKey,
        revents: i16,
        now: Instant,
        buf: &mut [u8],
    ) -> Result<(), String> {
        let Some(p) = self.peers.get_mut(&key) else {
            return Ok(());
        };
        if p.phase == PeerPhase::Connecting {
            if revents & (libc::POLLOUT | libc::POLLERR | libc::POLLHUP) == 0 {
                return Ok(());
            }
            if let Some(e) = p.sock.take_error().ok().flatten() {
                return Err(format!("connect failed: {e}"));
            }
            if revents & (libc::POLLERR | libc::POLLHUP) != 0 {
                return Err("connect failed".into());
            }
            p.connected(now, &self.info_hash, &self.fetch_id);
            if let Some(k) = self.known.get_mut(&p.addr) {
                k.failures = 0;
            }
        }
        if revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            for _ in 0..READS_PER_TURN {
                let p = self.peers.get_mut(&key).ok_or("gone")?;
                match p.sock.read(buf) {
                    Ok(0) => return Err("closed by the peer".into()),
                    Ok(n) => {
                        p.last_rx = now;
                        self.input(key, &buf[..n], now)?;
                        if n < buf.len() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => return Err(format!("read: {e}")),
                }
            }
        }
        self.after_input(key, now)?;
        self.write(key, now)
    }

    /// Bytes from a peer: frames them and handles each message. Whole
    /// messages are handled where they were read; only the tail of a
    /// message cut by the read is kept (in the peer's `rx`).
    fn input(&mut self, key: PeerKey, data: &[u8], now: Instant) -> Result<(), String> {
        let mut rx = std::mem::take(&mut self.peers.get_mut(&key).ok_or("gone")?.rx);
        let from_rx = !rx.is_empty();
        if from_rx {
            rx.extend_from_slice(data);
        }
        let src: &[u8] = if from_rx { &rx } else { data };
        let mut pos = 0;
        let result = loop {
            let Some(phase) = self.peers.get(&key).map(|p| p.phase) else {
                break Err("gone".to_owned());
            };
            match peer::next_input(&src[pos..], phase, self.max_message) {
                Ok(Some((input, used))) => {
                    pos += used;
                    if let Err(e) = self.handle(key, input, now) {
                        break Err(e);
                    }
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        let tail = if from_rx {
            rx.drain(..pos);
            rx
        } else {
            let mut v = rx;
            v.extend_from_slice(&data[pos..]);
            v
        };
        if let Some(p) = self.peers.get_mut(&key) {
            p.rx = tail;
        }
        result
    }

    fn handle(&mut self, key: PeerKey, input: Input<'_>, now: Instant) -> Result<(), String> {
        let picker = &mut self.picker;
        let p = self.peers.get_mut(&key).ok_or("gone")?;
        match input {
            Input::Handshake(h) => {
                if h.info_hash != self.info_hash {
                    return Err("wrong info-hash in its handshake".into());
                }
                if h.peer_id == self.cfg.peer_id {
                    self.ourselves.insert(p.addr);
                    return Err("that address is us".into());
                }
                let have = picker.have_bitfield().clone();
                p.handshaken(
                    now,
                    h,
                    &have,
                    self.cfg.max_requests,
                    self.cfg.announce_port,
                    self.cfg.ledger.as_deref(),
                );
                self.stats.peers_connected.fetch_add(1, Ordering::Relaxed);
            }
            Input::Message(m) => {
                let Some(dl) = p.dl.as_mut() else {
                    return Err("message before the handshake".into());
                };
                match m {
                    Message::Bitfield(bytes) => {
                        let b = Bitfield::from_wire(bytes, picker.num_pieces())
                            .map_err(|_| "malformed bitfield")?;
                        let old = dl.replace_haves(b, picker);
                        picker.remove_bitfield(&old);
                        picker.add_bitfield(&dl.has);
                    }
                    Message::HaveAll | Message::HaveNone => {
                        let b = if matches!(m, Message::HaveAll) {
                            Bitfield::full(picker.num_pieces())
                        } else {
                            Bitfield::new(picker.num_pieces())
                        };
                        let old = dl.replace_haves(b, picker);
                        picker.remove_bitfield(&old);
                        picker.add_bitfield(&dl.has);
                    }
                    Message::Have(i) => {
                        if i >= picker.num_pieces() {
                            return Err("have for a piece that does not exist".into());
                        }
                        if dl.gain(i, picker.have(i)) {
                            picker.add_have(i);
                        }
                    }
                    Message::Choke => {
                        for r in dl.on_choke() {
                            picker.request_cancelled(&r);
                        }
                    }
                    Message::Unchoke => dl.on_unchoke(now),
                    Message::Suggest(i) => dl.on_suggest(i, picker.have(i)),
                    Message::AllowedFast(i) => dl.on_allowed_fast(i),
                    Message::Reject(r) => {
                        if let crate::swarm::download::peer::RejectOutcome::Dropped { refused } =
                            dl.on_reject(&r, picker.have(r.piece))
                        {
                            picker.request_cancelled(&r);
                            if refused {
                                picker.remove_have(r.piece);
                            }
                        }
                    }
                    Message::Piece { index, begin, data } => {
                        let r = BlockRequest {
                            piece: index,
                            begin,
                            len: data.len() as u32,
                        };
                        if !dl.on_block(now, &r) {
                            self.stats
                                .unsolicited_blocks
                                .fetch_add(1, Ordering::Relaxed);
                            return Ok(());
                        }
                        self.stats
                            .payload_bytes
                            .fetch_add(data.len() as u64, Ordering::Relaxed);
                        p.dl_bytes += data.len() as u64;
                        match picker.block_buf(&r, 0, data.len()) {
                            Some(dst) => dst.copy_from_slice(data),
                            None => {
                                self.stats.wasted_blocks.fetch_add(1, Ordering::Relaxed);
                                return Ok(());
                            }
                        }
                        match picker.block_received(&r, key) {
                            crate::swarm::download::picker::BlockOutcome::New { piece_done } => {
                                self.cancel_elsewhere(key, &r);
                                if piece_done {
                                    self.piece_done(r.piece);
                                }
                            }
                            crate::swarm::download::picker::BlockOutcome::Unwanted => {
                                self.stats.wasted_blocks.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    // We only download on this connection: it stays choked
                    // (peers get our pieces from the shards); a fast peer
                    // is told, others are ignored.
                    Message::Request(r) if p.fast => p.queue(&Message::Reject(r)),
                    Message::Extended { id: 0, payload } => {
                        if let Ok(h) = crate::wire::ext::parse_ext_handshake(payload) {
                            if let Some(reqq) = h.reqq {
                                dl.set_max_depth(self.cfg.max_requests, reqq);
                            }
                            if let (Some(adv), Some(tx)) = (h.ledger, &self.cfg.ledger_hints) {
                                // Another box's ledger: its node decides.
                                let at = SocketAddr::new(p.addr.ip(), adv.port);
                                let _ = tx.try_send((at, adv.height));
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Endgame: the block came; cancel its copies at the other peers.
    fn cancel_elsewhere(&mut self, from: PeerKey, r: &BlockRequest) {
        if !self.picker.in_endgame() && self.picker.pieces_in_progress() > 0 {
            // Outside endgame a block is asked of one peer only.
            return;
        }
        for (&k, p) in self.peers.iter_mut() {
            if k == from {
                continue;
            }
            if let Some(dl) = p.dl.as_mut() {
                if dl.cancel(r) {
                    self.picker.request_cancelled(r);
                    p.queue(&Message::Cancel(*r));
                }
            }
        }
    }

    fn piece_done(&mut self, piece: u32) {
        // The writer checks the hash (one hash per piece, off this thread).
        match self.picker.finish_piece(piece, |_| true) {
            PieceOutcome::Verified { data, senders } => {
                self.at_writer.insert(piece, senders);
                self.backlog.push_back((piece, data));
                self.flush_backlog();
            }
            PieceOutcome::Failed(_) | PieceOutcome::NotReady => {}
        }
    }

    fn flush_backlog(&mut self) {
        let Some(w) = self.writer.as_ref() else {
            return;
        };
        while let Some((piece, data)) = self.backlog.pop_front() {
            match w.try_submit(piece, data) {
                Ok(None) => {}
                Ok(Some(data)) => {
                    self.backlog.push_front((piece, data));
                    return;
                }
                Err(_) => {
                    // The writer stopped; its outcome says why.
                    self.backlog.clear();
                    return;
                }
            }
        }
    }

    /// Takes the writer's outcomes; `true` when the fetch is over.
    fn drain_writer(&mut self) -> bool {
        loop {
            let Some(outcome) = self.writer.as_ref().and_then(|w| w.try_outcome()) else {
                return false;
            };
            match outcome {
                WriteOutcome::Written { piece, data } => {
                    self.at_writer.remove(&piece);
                    for addr in self.ban.piece_passed(piece, &data) {
                        self.banned(addr);
                    }
                    self.torrent.availability.restore(piece);
                    self.stats.pieces_fetched.fetch_add(1, Ordering::Relaxed);
                    self.stats.pieces_have.fetch_add(1, Ordering::Relaxed);
                    for p in self.peers.values_mut() {
                        if let Some(dl) = p.dl.as_mut() {
                            dl.we_got(piece);
                            p.queue(&Message::Have(piece));
                        }
                    }
                    if self.picker.is_complete()
                        && self.at_writer.is_empty()
                        && self.backlog.is_empty()
                    {
                        return true;
                    }
                }
                WriteOutcome::Mismatch { piece, data, check } => {
                    self.stats.hash_failures.fetch_add(1, Ordering::Relaxed);
                    let senders = self.at_writer.remove(&piece).unwrap_or_default();
                    tracing::warn!(
                        piece,
                        ?check,
                        "fetched piece failed its hash check; fetching it again"
                    );
                    self.picker.unset_have(piece);
                    let failed = FailedPiece {
                        piece,
                        data,
                        senders,
                    };
                    let peers = &self.peers;
                    let banned = self
                        .ban
                        .piece_failed(&failed, |k| peers.get(&k).map(|p| p.addr));
                    for addr in banned {
                        self.banned(addr);
                    }
                }
                WriteOutcome::Failed { piece, error } => {
                    self.stats.failed.store(true, Ordering::Release);
                    tracing::error!(
                        torrent = %self.torrent.torrent.name,
                        piece,
                        "fetch stopped: {error}"
                    );
                    return true;
                }
            }
        }
    }

    fn banned(&mut self, addr: SocketAddr) {
        self.stats.peers_banned.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(peer = %addr, "peer banned: it sent data that failed hash checks");
        let keys: Vec<PeerKey> = self
            .peers
            .iter()
            .filter(|(_, p)| p.addr == addr)
            .map(|(&k, _)| k)
            .collect();
        for k in keys {
            self.close(k, "banned");
        }
    }

    /// After input: interest and requests.
    fn after_input(&mut self, key: PeerKey, now: Instant) -> Result<(), String> {
        let complete = self.picker.is_complete();
        let throttled = !self.backlog.is_empty();
        let p = self.peers.get_mut(&key).ok_or("gone")?;
        let Some(dl) = p.dl.as_mut() else {
            return Ok(());
        };
        let want = dl.wants(complete);
        if want != dl.am_interested {
            dl.am_interested = want;
            p.queue(if want {
                &Message::Interested
            } else {
                &Message::NotInterested
            });
        }
        if throttled {
            return Ok(());
        }
        let dl = p.dl.as_mut().ok_or("gone")?;
        self.requests.clear();
        dl.fill(now, &mut self.picker, usize::MAX, &mut self.requests);
        for r in &self.requests {
            p.queue(&Message::Request(*r));
        }
        Ok(())
    }

    fn write(&mut self, key: PeerKey, now: Instant) -> Result<(), String> {
        let p = self.peers.get_mut(&key).ok_or("gone")?;
        if p.phase == PeerPhase::Connecting {
            return Ok(());
        }
        while p.tx_pos < p.tx.len() {
            match p.sock.write(&p.tx[p.tx_pos..]) {
                Ok(0) => return Err("write returned 0".into()),
                Ok(n) => {
                    p.tx_pos += n;
                    p.last_tx = now;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("write: {e}")),
            }
        }
        if p.tx_pos == p.tx.len() {
            p.tx.clear();
            p.tx_pos = 0;
        } else if p.tx.len() - p.tx_pos > MAX_TX {
            return Err("the peer does not read what we send".into());
        }
        Ok(())
    }

    fn close(&mut self, key: PeerKey, why: &str) {
        let Some(mut p) = self.peers.remove(&key) else {
            return;
        };
        tracing::debug!(peer = %p.addr, why, "fetch connection closed");
        if let Some(mut dl) = p.dl.take() {
            for r in dl.take_outstanding() {
                self.picker.request_cancelled(&r);
            }
            self.picker.remove_bitfield(&dl.has);
            if p.phase == PeerPhase::Active {
                self.stats.peers_connected.fetch_sub(1, Ordering::Relaxed);
            }
        }
        if let Some(k) = self.known.get_mut(&p.addr) {
            k.connected = false;
            if p.phase != PeerPhase::Active || p.dl_bytes == 0 {
                k.failures = k.failures.saturating_add(1);
            }
            let back = RETRY_MIN
                .saturating_mul(1 << k.failures.min(5))
                .min(RETRY_MAX);
            k.next_try = Instant::now() + back;
        }
        let _ = p.sock.shutdown(std::net::Shutdown::Both);
    }

    fn housekeeping(&mut self, now: Instant) {
        // New addresses from the trackers, `--peer`, and peers that
        // connected to our shards for this torrent.
        let hinted = self.torrent.take_fetch_hints();
        if !hinted.is_empty() {
            self.known_add(hinted, now);
        }
        while let Ok(list) = self.peers_rx.try_recv() {
            self.known_add(list, now);
        }
        // Timeouts and keep-alives.
        let full = self.peers.len() >= self.cfg.max_peers;
        let mut to_close = Vec::new();
        let mut touched = Vec::new();
        for (&k, p) in self.peers.iter_mut() {
            match p.phase {
                PeerPhase::Connecting | PeerPhase::Handshake
                    if now.duration_since(p.since) > self.cfg.connect_timeout * 2 =>
                {
                    to_close.push((k, "connect or handshake timed out"));
                    continue;
                }
                _ => {}
            }
            if p.phase == PeerPhase::Active {
                if now.duration_since(p.last_rx) > self.cfg.idle_timeout {
                    to_close.push((k, "idle"));
                    continue;
                }
                // At the connection cap, a peer with nothing we lack, or
                // one that keeps us choked, makes room after a while for
                // one that may serve us.
                let useless = p.dl.as_ref().is_some_and(|d| {
                    !d.am_interested || (d.peer_choking && d.outstanding().is_empty())
                });
                if full && useless && now.duration_since(p.since) > USELESS_AFTER {
                    to_close.push((k, "has nothing we lack"));
                    continue;
                }
                if let Some(dl) = p.dl.as_mut() {
                    for r in dl.take_timed_out(now, self.cfg.request_timeout) {
                        self.picker.request_cancelled(&r);
                        p.queue(&Message::Cancel(r));
                    }
                }
                if now.duration_since(p.last_tx) > KEEPALIVE && p.tx.is_empty() {
                    p.queue(&Message::KeepAlive);
                }
                touched.push(k);
            }
        }
        for (k, why) in to_close {
            self.close(k, why);
        }
        for k in touched {
            // Pipelines may have room again (a snub expired, pieces came back).
            let _ = self.after_input(k, now);
            if let Err(e) = self.write(k, now) {
                self.close(k, &e);
            }
        }
        if !self.picker.is_complete() {
            self.dial(now);
        }
    }

    fn known_add(&mut self, list: Vec<SocketAddr>, now: Instant) {
        for a in list {
            if self.known.len() >= MAX_KNOWN {
                break;
            }
            self.known.entry(a).or_insert(Known {
                failures: 0,
                next_try: now,
                connected: false,
            });
        }
    }

    fn dial(&mut self, now: Instant) {
        let mut room = self.cfg.max_peers.saturating_sub(self.peers.len());
        if room == 0 {
            return;
        }
        let mut due: Vec<SocketAddr> = self
            .known
            .iter()
            .filter(|(a, k)| {
                !k.connected
                    && k.next_try <= now
                    && !self.ourselves.contains(a)
                    && !self.cfg.own.contains(a)
                    && !self.ban.is_banned(a)
            })
            .map(|(a, _)| *a)
            .collect();
        due.sort_by_key(|a| self.known.get(a).map_or(0, |k| k.failures));
        for addr in due {
            if room == 0 {
                break;
            }
            let key = self.next_key;
            self.next_key = self.next_key.wrapping_add(1);
            match FetchPeer::connect(addr, now) {
                Ok(p) => {
                    self.peers.insert(key, p);
                    room -= 1;
                    if let Some(k) = self.known.get_mut(&addr) {
                        k.connected = true;
                    }
                }
                Err(e) => {
                    tracing::debug!(peer = %addr, error = %e, "fetch: cannot connect");
                    if let Some(k) = self.known.get_mut(&addr) {
                        k.failures = k.failures.saturating_add(1);
                        k.next_try = now
                            + RETRY_MIN
                                .saturating_mul(1 << k.failures.min(5))
                                .min(RETRY_MAX);
                    }
                }
            }
        }
    }
}

/// The fetches of a box, for the metrics endpoint (which starts before
/// them).
#[derive(Debug, Default)]
pub struct FetchList {
    list: std::sync::Mutex<Vec<(String, Arc<FetchStats>)>>,
}

impl FetchList {
    pub fn add(&self, torrent: &str, stats: Arc<FetchStats>) {
        if let Ok(mut l) = self.list.lock() {
            l.push((torrent.to_owned(), stats));
        }
    }

    /// Prometheus text: `ringseed_fetch_*`, one series per fetching torrent.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let Ok(list) = self.list.lock() else { return };
        if list.is_empty() {
            return;
        }
        type Get = fn(&FetchStats) -> u64;
        let series: [(&str, &str, &str, Get); 9] = [
            (
                "ringseed_fetch_pieces_have",
                "gauge",
                "Verified pieces of a torrent being fetched (or fetched).",
                |s| u64::from(s.pieces_have.load(Ordering::Relaxed)),
            ),
            (
                "ringseed_fetch_pieces_fetched_total",
                "counter",
                "Pieces downloaded, verified and written.",
                |s| u64::from(s.pieces_fetched.load(Ordering::Relaxed)),
            ),
            (
                "ringseed_fetch_payload_bytes_total",
                "counter",
                "Requested block payload received while fetching.",
                |s| s.payload_bytes.load(Ordering::Relaxed),
            ),
            (
                "ringseed_fetch_wasted_blocks_total",
                "counter",
                "Blocks received twice (endgame) or after a cancel.",
                |s| s.wasted_blocks.load(Ordering::Relaxed),
            ),
            (
                "ringseed_fetch_unsolicited_blocks_total",
                "counter",
                "Blocks nobody asked for (dropped, never part of a piece).",
                |s| s.unsolicited_blocks.load(Ordering::Relaxed),
            ),
            (
                "ringseed_fetch_hash_failures_total",
                "counter",
                "Fetched pieces that failed their hash check.",
                |s| u64::from(s.hash_failures.load(Ordering::Relaxed)),
            ),
            (
                "ringseed_fetch_peers_banned_total",
                "counter",
                "Peers banned for sending bad data.",
                |s| u64::from(s.peers_banned.load(Ordering::Relaxed)),
            ),
            (
                "ringseed_fetch_peers",
                "gauge",
                "Connections the fetch downloads from.",
                |s| u64::from(s.peers_connected.load(Ordering::Relaxed)),
            ),
            (
                "ringseed_fetch_complete",
                "gauge",
                "1 once every piece is verified.",
                |s| u64::from(s.complete.load(Ordering::Relaxed)),
            ),
        ];
        for (name, ty, help, get) in series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {ty}");
            for (torrent, s) in list.iter() {
                let t = torrent
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                let _ = writeln!(out, "{name}{{torrent=\"{t}\"}} {}", get(s));
            }
        }
    }
}
