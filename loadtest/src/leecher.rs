//! The synthetic leecher: a sans-IO state machine for one connection to a
//! seeder. No sockets, no clock (`now` is passed in), so tests drive it with
//! scripted seeder bytes.
//!
//! Call order: [`Leecher::new`] -> [`Leecher::on_connected`] (queues our
//! handshake) -> repeatedly [`Leecher::handle_data`] with received bytes
//! (returns how many it consumed; the caller keeps the rest, at most one
//! partial control message or piece header, and presents it again with the
//! next bytes), [`Leecher::pending_output`] / [`Leecher::consume_output`]
//! to send, [`Leecher::check_timeout`] now and then, until
//! [`Leecher::is_done`] (everything downloaded: the driver closes and starts
//! over on a new connection) or an error ([`DropReason`]).
//!
//! Receive path: piece payload is never buffered. A piece message is
//! recognised from its 13-byte header and its payload is streamed through
//! (counted and, with `verify`, copied into the piece buffer), so the
//! caller's leftover is bounded by one control message.
//!
//! Piece selection happens once per piece; blocks of a piece are requested
//! in order. What it deliberately does not do: upload, send keep-alives
//! (runs download continuously), endgame, or cancel.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringseed::wire::codec::{
    decode, BlockRequest, Decoded, Handshake, HandshakeDecoded, Message, ReservedFlags,
    HANDSHAKE_LEN, MAX_BLOCK_LEN, MSG_ID_PIECE, PIECE_HEADER_LEN,
};
use ringseed::wire::ext::{encode_ext_handshake, parse_ext_handshake, OurExtHandshake};
use ringseed::wire::Bitfield;

use crate::rng::Rng;
use crate::stats::{record, DropReason, Stats};
use crate::torrents::LoadTorrent;

/// Largest control message we accept (bitfields of ~2 million pieces).
pub const MAX_MESSAGE_LEN: u32 = 256 * 1024;
/// A connection that keeps having the same blocks rejected is dropped.
pub const MAX_REJECTS_PER_CONN: u64 = 10_000;

/// Order in which a leecher asks for pieces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pattern {
    /// A random permutation of all pieces, different per connection.
    Random,
    /// Piece 0, 1, 2, ...
    Sequential,
    /// Pieces the fewest of this thread's leechers have downloaded first
    /// (ties in random order): a synthetic swarm spreading its requests.
    RarestFirst,
}

impl std::str::FromStr for Pattern {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "random" => Ok(Pattern::Random),
            "sequential" => Ok(Pattern::Sequential),
            "rarest-first" => Ok(Pattern::RarestFirst),
            _ => Err(format!(
                "unknown pattern {s:?}: use random, sequential or rarest-first"
            )),
        }
    }
}

/// Settings shared by all leechers of a run.
#[derive(Debug, Clone)]
pub struct LeecherConfig {
    /// Requests kept outstanding (capped by the seeder's `reqq`).
    pub pipeline: usize,
    pub pattern: Pattern,
    /// Hash every completed piece; a mismatch ends the connection with
    /// [`DropReason::HashMismatch`].
    pub verify: bool,
    /// No byte from the seeder for this long: [`DropReason::Stalled`].
    pub stall_timeout: Duration,
}

impl Default for LeecherConfig {
    fn default() -> Self {
        LeecherConfig {
            pipeline: 64,
            pattern: Pattern::Random,
            verify: false,
            stall_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug)]
struct PieceInProgress {
    piece: u32,
    len: u32,
    received: u32,
    /// Piece bytes, only with `verify`.
    data: Vec<u8>,
}

#[derive(Debug, Clone, Copy)]
struct Streaming {
    req: BlockRequest,
    sent: Instant,
    /// Payload bytes of this block already seen.
    got: u32,
}

/// One synthetic leecher connection.
#[derive(Debug)]
pub struct Leecher {
    torrent: Arc<LoadTorrent>,
    cfg: LeecherConfig,
    peer_id: [u8; 20],
    handshake_done: bool,
    peer_fast: bool,
    peer_ext: bool,
    unchoked: bool,
    ever_unchoked: bool,
    connected_at: Option<Instant>,
    last_rx: Option<Instant>,
    depth: usize,
    peer_has: Bitfield,
    order: Vec<u32>,
    next_pick: usize,
    /// Picked pieces the seeder did not have at the time.
    deferred: Vec<u32>,
    /// Blocks to ask for again (rejected, or dropped by a choke).
    retry: VecDeque<BlockRequest>,
    /// The piece whose blocks are being requested, and the next offset.
    cur_piece: Option<(u32, u32)>,
    outstanding: VecDeque<(BlockRequest, Instant)>,
    in_progress: Vec<PieceInProgress>,
    streaming: Option<Streaming>,
    pieces_done: u32,
    completed_log: Vec<u32>,
    payload_bytes: u64,
    rejects: u64,
    out: Vec<u8>,
    out_pos: usize,
}

impl Leecher {
    /// `rarity` (for [`Pattern::RarestFirst`]): how often each piece was
    /// downloaded by this thread's leechers so far; may be empty.
    pub fn new(
        torrent: Arc<LoadTorrent>,
        cfg: LeecherConfig,
        rng: &mut Rng,
        rarity: &[u32],
    ) -> Self {
        let n = torrent.num_pieces;
        let mut order: Vec<u32> = (0..n).collect();
        match cfg.pattern {
            Pattern::Sequential => {}
            Pattern::Random => rng.shuffle(&mut order),
            Pattern::RarestFirst => {
                rng.shuffle(&mut order);
                // Stable sort keeps the random order among equals.
                order.sort_by_key(|&p| rarity.get(p as usize).copied().unwrap_or(0));
            }
        }
        let mut peer_id = *b"-RL0100-000000000000";
        for b in peer_id.iter_mut().skip(8) {
            *b = b'a' + (rng.next_u64() % 26) as u8;
        }
        let depth = cfg.pipeline.max(1);
        Leecher {
            peer_has: Bitfield::new(n),
            torrent,
            cfg,
            peer_id,
            handshake_done: false,
            peer_fast: false,
            peer_ext: false,
            unchoked: false,
            ever_unchoked: false,
            connected_at: None,
            last_rx: None,
            depth,
            order,
            next_pick: 0,
            deferred: Vec::new(),
            retry: VecDeque::new(),
            cur_piece: None,
            outstanding: VecDeque::new(),
            in_progress: Vec::new(),
            streaming: None,
            pieces_done: 0,
            completed_log: Vec::new(),
            payload_bytes: 0,
            rejects: 0,
            out: Vec::with_capacity(256),
            out_pos: 0,
        }
    }

    pub fn torrent(&self) -> &Arc<LoadTorrent> {
        &self.torrent
    }

    /// The TCP connection is up: queue our handshake (fast and extension
    /// bits; the v2 upgrade bit only for torrents with a v2 part:
    /// libtorrent drops a peer that asks to upgrade a v1-only torrent).
    pub fn on_connected(&mut self, now: Instant) {
        self.connected_at = Some(now);
        self.last_rx = Some(now);
        let hs = Handshake {
            reserved: ReservedFlags {
                fast: true,
                extension: true,
                v2: self.torrent.torrent.info_hash_v2.is_some(),
                dht: false,
            }
            .to_bytes(),
            info_hash: self.torrent.handshake_hash,
            peer_id: self.peer_id,
        };
        self.out.extend_from_slice(&hs.encode());
    }

    /// Bytes waiting to be sent.
    pub fn pending_output(&self) -> &[u8] {
        self.out.get(self.out_pos..).unwrap_or_default()
    }

    /// `n` bytes of [`Self::pending_output`] were sent.
    pub fn consume_output(&mut self, n: usize) {
        self.out_pos = (self.out_pos + n).min(self.out.len());
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        }
    }

    /// Everything downloaded (and verified, with `verify`).
    pub fn is_done(&self) -> bool {
        self.pieces_done == self.torrent.num_pieces
    }

    pub fn is_unchoked(&self) -> bool {
        self.unchoked
    }

    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    pub fn pieces_done(&self) -> u32 {
        self.pieces_done
    }

    /// Payload bytes received on this connection.
    pub fn payload_bytes(&self) -> u64 {
        self.payload_bytes
    }

    pub fn connected_at(&self) -> Option<Instant> {
        self.connected_at
    }

    /// `Some` when the connection should be dropped for silence.
    pub fn check_timeout(&self, now: Instant) -> Option<DropReason> {
        let last = self.last_rx?;
        (now.saturating_duration_since(last) > self.cfg.stall_timeout)
            .then_some(DropReason::Stalled)
    }

    /// Processes received bytes; returns how many were consumed. The rest
    /// (an incomplete message) must be presented again, followed by more.
    pub fn handle_data(
        &mut self,
        now: Instant,
        data: &[u8],
        stats: &mut Stats,
    ) -> Result<usize, DropReason> {
        if !data.is_empty() {
            self.last_rx = Some(now);
        }
        let mut pos = 0;
        let result = self.parse(now, data, &mut pos, stats);
        stats.protocol_bytes_received += pos as u64;
        result?;
        self.fill_pipeline(now, stats);
        Ok(pos)
    }

    /// Payload bytes of the block now arriving that the caller may throw
    /// away unread ([`Self::discarded`]): 0 unless a block is arriving and
    /// `verify` is off. The next bytes on the wire are exactly these.
    pub fn discardable(&self) -> usize {
        match self.streaming {
            Some(s) if !self.cfg.verify => (s.req.len - s.got) as usize,
            _ => 0,
        }
    }

    /// `n` bytes of [`Self::discardable`] payload were discarded unread.
    pub fn discarded(
        &mut self,
        now: Instant,
        n: usize,
        stats: &mut Stats,
    ) -> Result<(), DropReason> {
        let Some(mut s) = self.streaming.filter(|_| n > 0) else {
            return Ok(());
        };
        self.last_rx = Some(now);
        let take = (s.req.len - s.got).min(u32::try_from(n).unwrap_or(u32::MAX));
        s.got += take;
        self.payload_bytes += u64::from(take);
        stats.payload_bytes += u64::from(take);
        stats.protocol_bytes_received += u64::from(take);
        if s.got < s.req.len {
            self.streaming = Some(s);
            return Ok(());
        }
        self.streaming = None;
        self.finish_block(now, s, stats)?;
        self.fill_pipeline(now, stats);
        Ok(())
    }

    fn parse(
        &mut self,
        now: Instant,
        data: &[u8],
        pos: &mut usize,
        stats: &mut Stats,
    ) -> Result<(), DropReason> {
        loop {
            if let Some(mut s) = self.streaming {
                let rest = data.get(*pos..).unwrap_or_default();
                let take = ((s.req.len - s.got) as usize).min(rest.len());
                if self.cfg.verify {
                    self.copy_block_bytes(&s, &rest[..take]);
                }
                s.got += take as u32;
                *pos += take;
                self.payload_bytes += take as u64;
                stats.payload_bytes += take as u64;
                if s.got < s.req.len {
                    self.streaming = Some(s);
                    return Ok(());
                }
                self.streaming = None;
                self.finish_block(now, s, stats)?;
                continue;
            }
            let rest = data.get(*pos..).unwrap_or_default();
            if !self.handshake_done {
                match Handshake::decode(rest) {
                    Err(_) => return Err(self.protocol_error(stats, "bad_handshake")),
                    Ok(HandshakeDecoded::Incomplete { .. }) => return Ok(()),
                    Ok(HandshakeDecoded::Complete(h)) => {
                        *pos += HANDSHAKE_LEN;
                        self.on_handshake(&h, stats)?;
                        continue;
                    }
                }
            }
            if rest.len() >= 5 && rest[4] == MSG_ID_PIECE {
                let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
                if !(9..=9 + MAX_BLOCK_LEN).contains(&len) {
                    return Err(self.protocol_error(stats, "bad_piece_length"));
                }
                let Some(h) = rest.get(..PIECE_HEADER_LEN) else {
                    return Ok(());
                };
                let piece = u32::from_be_bytes([h[5], h[6], h[7], h[8]]);
                let begin = u32::from_be_bytes([h[9], h[10], h[11], h[12]]);
                let req = BlockRequest {
                    piece,
                    begin,
                    len: len - 9,
                };
                let Some(i) = self.outstanding.iter().position(|(r, _)| *r == req) else {
                    return Err(self.protocol_error(stats, "unrequested_block"));
                };
                let sent = self.outstanding.remove(i).map_or(now, |(_, t)| t);
                *pos += PIECE_HEADER_LEN;
                self.streaming = Some(Streaming { req, sent, got: 0 });
                continue;
            }
            match decode(rest, MAX_MESSAGE_LEN) {
                Err(_) => return Err(self.protocol_error(stats, "framing")),
                Ok(Decoded::Incomplete { .. }) => return Ok(()),
                Ok(Decoded::Message { msg, consumed }) => {
                    self.on_message(now, msg, stats)?;
                    *pos += consumed;
                }
            }
        }
    }

    fn protocol_error(&self, stats: &mut Stats, what: &'static str) -> DropReason {
        stats.count_protocol_error(what);
        DropReason::ProtocolError
    }

    fn on_handshake(&mut self, h: &Handshake, stats: &mut Stats) -> Result<(), DropReason> {
        if h.info_hash != self.torrent.handshake_hash
            && Some(h.info_hash) != self.torrent.alt_handshake_hash
        {
            return Err(self.protocol_error(stats, "wrong_info_hash"));
        }
        self.handshake_done = true;
        let flags = h.flags();
        self.peer_fast = flags.fast;
        self.peer_ext = flags.extension;
        if self.peer_ext {
            encode_ext_handshake(
                &mut self.out,
                &OurExtHandshake {
                    client_version: concat!("ringseed-loadtest ", env!("CARGO_PKG_VERSION")),
                    reqq: 250,
                    listen_port: None,
                    yourip: None,
                    metadata_size: None,
                    ledger: None,
                },
            );
        }
        if self.peer_fast {
            Message::HaveNone.encode(&mut self.out);
        }
        Message::Interested.encode(&mut self.out);
        Ok(())
    }

    fn on_message(
        &mut self,
        now: Instant,
        msg: Message<'_>,
        stats: &mut Stats,
    ) -> Result<(), DropReason> {
        let n = self.torrent.num_pieces;
        match msg {
            Message::Choke => {
                stats.chokes += 1;
                self.unchoked = false;
                if !self.peer_fast {
                    // BEP 3: a choke discards every pending request.
                    for (r, _) in self.outstanding.drain(..).rev() {
                        self.retry.push_front(r);
                    }
                }
            }
            Message::Unchoke => {
                stats.unchokes += 1;
                self.unchoked = true;
                if !self.ever_unchoked {
                    self.ever_unchoked = true;
                    if let Some(t) = self.connected_at {
                        record(
                            &mut stats.unchoke_latency_us,
                            now.saturating_duration_since(t).as_micros() as u64,
                        );
                    }
                }
            }
            Message::Have(i) => {
                if i >= n {
                    return Err(self.protocol_error(stats, "have_out_of_range"));
                }
                self.peer_has.set(i);
                self.undefer();
            }
            Message::Bitfield(b) => {
                self.peer_has = Bitfield::from_wire(b, n)
                    .map_err(|_| self.protocol_error(stats, "bad_bitfield"))?;
                self.undefer();
            }
            Message::HaveAll => {
                self.peer_has = Bitfield::full(n);
                self.undefer();
            }
            Message::HaveNone => self.peer_has = Bitfield::new(n),
            Message::Reject(r) => {
                stats.rejects += 1;
                self.rejects += 1;
                if let Some(i) = self.outstanding.iter().position(|(o, _)| *o == r) {
                    self.outstanding.remove(i);
                    self.retry.push_back(r);
                }
                if self.rejects > MAX_REJECTS_PER_CONN {
                    return Err(DropReason::TooManyRejects);
                }
            }
            Message::Extended { id: 0, payload } => match parse_ext_handshake(payload) {
                Ok(h) => {
                    if let Some(q) = h.reqq.filter(|&q| q > 0) {
                        self.depth = self.cfg.pipeline.clamp(1, q as usize);
                    }
                }
                Err(_) => stats.count_protocol_error("bad_ext_handshake"),
            },
            // Seeders do not ask us for anything we could serve; other
            // messages (keep-alive, allowed_fast, suggest, port, hashes,
            // unknown ids) need no answer from a leecher that only downloads.
            _ => {}
        }
        Ok(())
    }

    fn undefer(&mut self) {
        if !self.deferred.is_empty() {
            // Not yet picked pieces keep their place; deferred ones go last.
            self.order.append(&mut self.deferred);
        }
    }

    fn copy_block_bytes(&mut self, s: &Streaming, bytes: &[u8]) {
        if let Some(p) = self.in_progress.iter_mut().find(|p| p.piece == s.req.piece) {
            let at = (s.req.begin + s.got) as usize;
            if let Some(dst) = p.data.get_mut(at..at + bytes.len()) {
                dst.copy_from_slice(bytes);
            }
        }
    }

    fn finish_block(
        &mut self,
        now: Instant,
        s: Streaming,
        stats: &mut Stats,
    ) -> Result<(), DropReason> {
        stats.blocks += 1;
        record(
            &mut stats.block_latency_us,
            now.saturating_duration_since(s.sent).as_micros() as u64,
        );
        let Some(i) = self.in_progress.iter().position(|p| p.piece == s.req.piece) else {
            return Ok(());
        };
        let p = &mut self.in_progress[i];
        p.received += s.req.len;
        if p.received < p.len {
            return Ok(());
        }
        let p = self.in_progress.swap_remove(i);
        stats.pieces_completed += 1;
        if self.cfg.verify {
            if !self.torrent.verify_piece(p.piece, &p.data) {
                stats.hash_failures += 1;
                return Err(DropReason::HashMismatch);
            }
            stats.pieces_verified += 1;
            stats.bytes_verified += u64::from(p.len);
        }
        self.pieces_done += 1;
        if self.cfg.pattern == Pattern::RarestFirst {
            self.completed_log.push(p.piece);
        }
        Ok(())
    }

    fn next_block(&mut self) -> Option<BlockRequest> {
        if let Some(r) = self.retry.pop_front() {
            return Some(r);
        }
        if self.cur_piece.is_none() {
            let piece = self.pick_piece()?;
            let len = self.torrent.piece_len(piece);
            self.in_progress.push(PieceInProgress {
                piece,
                len,
                received: 0,
                data: if self.cfg.verify {
                    vec![0; len as usize]
                } else {
                    Vec::new()
                },
            });
            self.cur_piece = Some((piece, 0));
        }
        let (piece, begin) = self.cur_piece?;
        let plen = self.torrent.piece_len(piece);
        let len = (plen - begin).min(MAX_BLOCK_LEN);
        let next = begin + len;
        self.cur_piece = (next < plen).then_some((piece, next));
        Some(BlockRequest { piece, begin, len })
    }

    fn pick_piece(&mut self) -> Option<u32> {
        while let Some(&p) = self.order.get(self.next_pick) {
            self.next_pick += 1;
            if self.peer_has.get(p) {
                return Some(p);
            }
            self.deferred.push(p);
        }
        None
    }

    fn fill_pipeline(&mut self, now: Instant, stats: &mut Stats) {
        if !self.unchoked || !self.handshake_done {
            return;
        }
        while self.outstanding.len() < self.depth {
            let Some(r) = self.next_block() else { break };
            Message::Request(r).encode(&mut self.out);
            self.outstanding.push_back((r, now));
            stats.requests_sent += 1;
        }
    }

    /// Pieces completed since the last call (only recorded for
    /// [`Pattern::RarestFirst`], whose bookkeeping needs them).
    pub fn take_completed(&mut self, into: &mut Vec<u32>) {
        into.append(&mut self.completed_log);
    }
}
