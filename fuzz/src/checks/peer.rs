//! The per-peer state machine driven by an op sequence, against an
//! independent decoding of what the peer sent and what we sent back.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ringseed::wire::codec::{
    self, BlockRequest, Decoded, Handshake, HandshakeDecoded, HashRequest, Message, ReservedFlags,
    HANDSHAKE_LEN,
};
use ringseed::wire::ext::{encode_ext_handshake, parse_ext_handshake, OurExtHandshake};
use ringseed::wire::{
    Bitfield, CloseReason, PeerConfig, PeerState, TorrentCatalog, TorrentId, TorrentKey,
    TorrentView,
};

// ---------------------------------------------------------------------------
// peer state machine

/// The torrent the peer-state harness serves.
pub const V1_HASH: [u8; 20] = [0x11; 20];
/// Its truncated v2 info-hash (when the setup says it has a v2 part).
pub const V2_HASH: [u8; 20] = [0x22; 20];
/// An info-hash nobody serves.
pub const UNKNOWN_HASH: [u8; 20] = [0x33; 20];

/// How the harness is configured: the first [`PeerSetup::LEN`] bytes of a
/// `peer_state` input.
#[derive(Debug, Clone)]
pub struct PeerSetup {
    pub piece_length: u32,
    pub num_pieces: u32,
    /// 1..=piece_length
    pub last_piece_len: u32,
    /// Bit i of byte i % 4 (MSB first) tells whether piece i is verified;
    /// all ones = a full seed.
    pub have_pattern: [u8; 4],
    pub has_v2: bool,
    pub metadata_size: Option<u32>,
    pub reqq: u32,
    pub max_message_len: u32,
    /// `set_choked(now, false)` before the handshake.
    pub start_unchoked: bool,
}

impl PeerSetup {
    pub const LEN: usize = 10;

    pub fn from_bytes(b: &[u8; Self::LEN]) -> Self {
        let piece_length = (16 * 1024) << (b[0] % 4); // 16..128 KiB
        let num_pieces = match b[1] % 4 {
            3 => 1 + u32::from(u16::from_le_bytes([b[2], b[3]])) % 20_000,
            _ => 1 + u32::from(b[2]) % 40,
        };
        let last_piece_len = 1 + (u32::from(b[3]) * 1021 + u32::from(b[2])) % piece_length;
        let last_piece_len = if b[1] & 0x80 != 0 {
            piece_length
        } else {
            last_piece_len
        };
        PeerSetup {
            piece_length,
            num_pieces,
            last_piece_len,
            have_pattern: [b[4], b[5], b[6], b[7]],
            has_v2: b[8] & 1 != 0,
            metadata_size: (b[8] & 2 != 0).then_some(1000 + u32::from(b[5])),
            reqq: 1 + u32::from(b[9] % 16),
            max_message_len: if b[8] & 4 != 0 { 256 * 1024 } else { 4096 },
            start_unchoked: b[8] & 8 != 0,
        }
    }

    fn have(&self) -> Bitfield {
        if self.have_pattern == [0xff; 4] {
            return Bitfield::full(self.num_pieces);
        }
        let mut b = Bitfield::new(self.num_pieces);
        for i in 0..self.num_pieces {
            let byte = self.have_pattern[(i / 8 % 4) as usize];
            if byte & (0x80 >> (i % 8)) != 0 {
                b.set(i);
            }
        }
        b
    }
}

struct OneTorrent {
    setup: PeerSetup,
    have: Bitfield,
    /// Stand-in info dictionary of `setup.metadata_size` bytes.
    info: Vec<u8>,
}

impl OneTorrent {
    fn view(&self) -> TorrentView<'_> {
        TorrentView {
            id: TorrentId(7),
            num_pieces: self.setup.num_pieces,
            piece_length: self.setup.piece_length,
            last_piece_len: self.setup.last_piece_len,
            have: &self.have,
            has_v2: self.setup.has_v2,
            info_bytes: self.setup.metadata_size.map(|_| self.info.as_slice()),
            v2: None,
            live: None,
        }
    }
}

impl TorrentCatalog for OneTorrent {
    fn lookup(&self, key: TorrentKey<'_>) -> Option<TorrentView<'_>> {
        let found = match key {
            TorrentKey::Id(id) => id == TorrentId(7),
            TorrentKey::InfoHash(h) => *h == V1_HASH || (self.setup.has_v2 && *h == V2_HASH),
        };
        found.then(|| self.view())
    }
}

/// One step of a `peer_state` run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerOp {
    /// Bytes from the peer, handed to `handle_bytes` as one chunk.
    Bytes(Vec<u8>),
    /// The clock advances, then `handle_tick`.
    Tick(Duration),
    /// The choker's decision.
    SetChoked(bool),
    /// `pop_block` up to this many times.
    Pop(u8),
    /// `advance_transmit(n)` (after looking at `poll_transmit`); `n` may
    /// exceed what is pending.
    Drain(usize),
}

impl PeerOp {
    /// A message from the peer.
    pub fn msg(m: Message<'_>) -> PeerOp {
        let mut b = Vec::new();
        m.encode(&mut b);
        PeerOp::Bytes(b)
    }

    /// A handshake from the peer for `info_hash`.
    pub fn handshake(info_hash: [u8; 20], fast: bool, extension: bool) -> PeerOp {
        let h = Handshake {
            reserved: ReservedFlags {
                fast,
                extension,
                v2: false,
                dht: true,
            }
            .to_bytes(),
            info_hash,
            peer_id: *b"-qB4650-fuzzfuzzfuzz",
        };
        PeerOp::Bytes(h.encode().to_vec())
    }
}

/// Reads the ops part of a `peer_state` input (see [`decode_peer_input`]).
struct OpReader<'a> {
    ops: &'a [u8],
    stream: &'a [u8],
    setup: &'a PeerSetup,
    /// The second half of a message cut in two.
    pending: Option<Vec<u8>>,
}

impl OpReader<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.ops.split_first()?;
        self.ops = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.byte()?, self.byte()?]))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes([
            self.byte()?,
            self.byte()?,
            self.byte()?,
            self.byte()?,
        ]))
    }
    fn take_stream(&mut self, n: usize) -> Vec<u8> {
        let (head, rest) = self.stream.split_at(n.min(self.stream.len()));
        self.stream = rest;
        head.to_vec()
    }

    /// A block request biased towards the torrent's shape.
    fn request(&mut self) -> Option<BlockRequest> {
        let mode = self.byte()?;
        let n = self.setup.num_pieces;
        let piece = match mode & 3 {
            0 | 1 => u32::from(self.byte()?) % (n + 2),
            2 => n.saturating_sub(1),
            _ => self.u32()?,
        };
        let begin = match (mode >> 2) & 3 {
            0 | 1 => u32::from(self.byte()?) * 16 * 1024,
            2 => self.setup.last_piece_len.saturating_sub(16 * 1024),
            _ => self.u32()?,
        };
        let len = match (mode >> 4) & 3 {
            0 | 1 => 16 * 1024,
            2 => u32::from(self.u16()?),
            _ => self.u32()?,
        };
        Some(BlockRequest { piece, begin, len })
    }

    /// A well-formed message the peer might send.
    fn message(&mut self) -> Option<Vec<u8>> {
        let kind = self.byte()?;
        let mut out = Vec::new();
        let n = self.setup.num_pieces;
        let bitfield;
        let payload;
        let msg = match kind % 16 {
            0 => Message::Request(self.request()?),
            1 => Message::Cancel(self.request()?),
            2 => Message::Interested,
            3 => Message::NotInterested,
            4 => Message::Have(u32::from(self.u16()?) % (n + 1)),
            5 => {
                let mut b = Bitfield::new(n);
                let seed = self.byte()?;
                for i in 0..n {
                    if (i as u8).wrapping_mul(seed) & 0x80 != 0 {
                        b.set(i);
                    }
                }
                bitfield = b;
                Message::Bitfield(bitfield.as_bytes())
            }
            6 => Message::HaveAll,
            7 => Message::HaveNone,
            8 => {
                encode_ext_handshake(
                    &mut out,
                    &OurExtHandshake {
                        client_version: "libtorrent/2.1.1",
                        reqq: self.u32()?,
                        listen_port: Some(self.u16()?),
                        yourip: None,
                        metadata_size: Some(1234),
                        ledger: None,
                    },
                );
                return Some(out);
            }
            9 => Message::KeepAlive,
            10 => Message::HashRequest(HashRequest {
                pieces_root: [self.byte()?; 32],
                base_layer: u32::from(self.byte()?),
                index: u32::from(self.u16()?),
                length: u32::from(self.u16()?),
                proof_layers: u32::from(self.byte()?),
            }),
            11 => Message::Reject(self.request()?),
            12 => Message::Suggest(u32::from(self.u16()?)),
            13 => {
                let id = self.byte()?;
                let len = usize::from(self.byte()?);
                payload = self.take_stream(len);
                Message::Extended {
                    id,
                    payload: &payload,
                }
            }
            14 => Message::Port(self.u16()?),
            _ => Message::Piece {
                index: u32::from(self.byte()?),
                begin: 0,
                data: &[0xab; 32],
            },
        };
        msg.encode(&mut out);
        Some(out)
    }

    fn next_op(&mut self) -> Option<PeerOp> {
        let tag = self.byte()?;
        Some(match tag % 10 {
            0 | 1 => {
                let n = usize::from(self.byte()?);
                PeerOp::Bytes(self.take_stream(n))
            }
            2 => PeerOp::Bytes(self.message()?),
            3 => {
                let flags = self.byte()?;
                let hash = match flags % 4 {
                    0 | 1 => V1_HASH,
                    2 => V2_HASH,
                    _ => UNKNOWN_HASH,
                };
                PeerOp::handshake(hash, flags & 4 != 0, flags & 8 != 0)
            }
            4 => PeerOp::Tick(Duration::from_millis(u64::from(self.u16()?) * 10)),
            5 => PeerOp::SetChoked(true),
            6 => PeerOp::SetChoked(false),
            7 => PeerOp::Pop(self.byte()?),
            8 => PeerOp::Drain(usize::from(self.u16()?)),
            _ => {
                // A message cut in two chunks.
                let m = self.message()?;
                let cut = usize::from(self.byte()?) % (m.len() + 1);
                self.pending = Some(m[cut..].to_vec());
                PeerOp::Bytes(m[..cut].to_vec())
            }
        })
    }
}

/// `peer_state` input: `[setup: PeerSetup::LEN][ops_len: u16 LE][ops][stream]`.
/// Ops are tag bytes with arguments (see `OpReader::next_op`); "bytes" ops
/// take their bytes from the stream. Whatever stream is left after the ops
/// is fed as one last chunk. Returns `None` when the input is too short.
pub fn decode_peer_input(data: &[u8]) -> Option<(PeerSetup, Vec<PeerOp>)> {
    let setup_bytes: &[u8; PeerSetup::LEN] = data.get(..PeerSetup::LEN)?.try_into().ok()?;
    let setup = PeerSetup::from_bytes(setup_bytes);
    let rest = &data[PeerSetup::LEN..];
    let ops_len = match rest {
        [a, b, ..] => usize::from(u16::from_le_bytes([*a, *b])),
        _ => 0,
    };
    let rest = rest.get(2..).unwrap_or_default();
    let (ops, stream) = rest.split_at(ops_len.min(rest.len()));
    let mut reader = OpReader {
        ops,
        stream,
        setup: &setup,
        pending: None,
    };
    let mut out = Vec::new();
    loop {
        if let Some(p) = reader.pending.take() {
            out.push(PeerOp::Bytes(p));
        }
        match reader.next_op() {
            Some(op) => out.push(op),
            None => break,
        }
        if out.len() > 4096 {
            break;
        }
    }
    if !reader.stream.is_empty() {
        out.push(PeerOp::Bytes(reader.stream.to_vec()));
    }
    Some((setup, out))
}

/// Runs a decoded `peer_state` input through [`run_peer`].
pub fn check_peer_input(data: &[u8]) {
    if let Some((setup, ops)) = decode_peer_input(data) {
        run_peer(&setup, &ops);
    }
}

/// What the peer sent, decoded independently of `PeerState`.
struct PeerStream {
    fed: Vec<u8>,
    pos: usize,
    max: u32,
    handshake: Option<Handshake>,
    requests: HashMap<BlockRequest, u64>,
    requests_total: u64,
    hash_requests: u64,
}

impl PeerStream {
    /// Decodes the complete messages fed so far (after `handle_bytes`
    /// returned `Ok`, `PeerState` has processed exactly these).
    fn update(&mut self) {
        loop {
            let buf = &self.fed[self.pos..];
            if self.handshake.is_none() {
                match Handshake::decode(buf) {
                    Ok(HandshakeDecoded::Complete(h)) => {
                        self.handshake = Some(h);
                        self.pos += HANDSHAKE_LEN;
                        continue;
                    }
                    _ => return,
                }
            }
            match codec::decode(buf, self.max) {
                Ok(Decoded::Message { msg, consumed }) => {
                    match msg {
                        Message::Request(r) => {
                            *self.requests.entry(r).or_default() += 1;
                            self.requests_total += 1;
                        }
                        Message::HashRequest(_) => self.hash_requests += 1,
                        _ => {}
                    }
                    self.pos += consumed;
                }
                _ => return,
            }
        }
    }
}

/// What we sent, decoded and checked message by message. `Clone` so the
/// undrained tail can be checked from the drained state without committing.
#[derive(Clone, Default)]
struct OutParser {
    handshake_seen: bool,
    /// Bitfield / have_all / have_none seen (or the peer needs none).
    announced_have: bool,
    choked_announced: bool,
    rejects: HashMap<BlockRequest, u64>,
    rejects_total: u64,
    hash_rejects: u64,
}

impl OutParser {
    /// Consumes whole items from the front of `buf`; returns bytes used.
    fn feed(&mut self, buf: &[u8], t: &OneTorrent, peer_hs: &Handshake) -> usize {
        let mut used = 0;
        if !self.handshake_seen {
            match Handshake::decode(buf) {
                Ok(HandshakeDecoded::Complete(h)) => {
                    assert_eq!(h.info_hash, peer_hs.info_hash, "we answered another hash");
                    assert!(h.supports_fast() && h.supports_extensions());
                    assert_eq!(h.supports_v2(), t.setup.has_v2);
                    self.handshake_seen = true;
                    self.choked_announced = true;
                    used = HANDSHAKE_LEN;
                }
                Ok(HandshakeDecoded::Incomplete { .. }) => return 0,
                Err(e) => panic!("our output does not start with a handshake: {e}"),
            }
        }
        let fast = peer_hs.supports_fast();
        loop {
            let rest = &buf[used..];
            let (msg, consumed) = match codec::decode(rest, u32::MAX) {
                Ok(Decoded::Message { msg, consumed }) => (msg, consumed),
                Ok(Decoded::Incomplete { .. }) => return used,
                Err(e) => panic!("we sent a malformed message: {e}"),
            };
            let is_have_msg = matches!(
                msg,
                Message::Bitfield(_) | Message::HaveAll | Message::HaveNone
            );
            if !is_have_msg && !matches!(msg, Message::Extended { id: 0, .. }) {
                // Anything after the handshake and ext handshake means the
                // have announcement is over (a non-fast peer with nothing
                // verified gets none).
                self.announced_have = true;
            }
            match msg {
                Message::Extended { id: 0, payload } => {
                    assert!(!self.announced_have, "ext handshake after other messages");
                    assert!(
                        peer_hs.supports_extensions(),
                        "ext handshake to a non-BEP 10 peer"
                    );
                    let ext = parse_ext_handshake(payload).expect("our ext handshake parses");
                    assert_eq!(ext.reqq, Some(t.setup.reqq));
                    assert_eq!(ext.metadata_size, t.setup.metadata_size);
                }
                Message::Bitfield(b) => {
                    assert!(!self.announced_have, "second have announcement");
                    assert_eq!(b, t.have.as_bytes(), "bitfield differs from our haves");
                    assert!(!(fast && t.have.is_full()), "bitfield instead of have_all");
                    assert!(t.have.count() > 0, "empty bitfield sent");
                    self.announced_have = true;
                }
                Message::HaveAll => {
                    assert!(!self.announced_have && fast && t.have.is_full());
                    self.announced_have = true;
                }
                Message::HaveNone => {
                    assert!(!self.announced_have && fast && t.have.count() == 0);
                    self.announced_have = true;
                }
                Message::Choke => {
                    assert!(!self.choked_announced, "choke while already choked");
                    self.choked_announced = true;
                }
                Message::Unchoke => {
                    assert!(self.choked_announced, "unchoke while already unchoked");
                    self.choked_announced = false;
                }
                Message::Reject(r) => {
                    assert!(fast, "reject_request to a peer without the fast extension");
                    *self.rejects.entry(r).or_default() += 1;
                    self.rejects_total += 1;
                }
                Message::HashReject(_) => self.hash_rejects += 1,
                Message::KeepAlive => {}
                other => panic!("unexpected control message {other:?}"),
            }
            used += consumed;
        }
    }
}

struct PeerHarness {
    torrent: OneTorrent,
    peer: PeerState,
    now: Instant,
    created: Instant,
    last_recv: Instant,
    stream: PeerStream,
    drained: Vec<u8>,
    parsed_upto: usize,
    out: OutParser,
    popped: HashMap<BlockRequest, u64>,
    pops_total: u64,
    /// Control bytes the choker (not the peer) made us queue.
    choke_allowance: usize,
    closed: Option<CloseReason>,
}

/// Base of the transmit bound: handshake, extension handshake, one have
/// announcement, one keep-alive.
const TX_BASE: usize = HANDSHAKE_LEN + 512 + 5 + 4;
/// `PeerState`'s documented control backlog limit.
const CONTROL_BACKLOG_LIMIT: usize = 64 * 1024;

impl PeerHarness {
    fn new(setup: &PeerSetup) -> Self {
        let have = setup.have();
        let now = Instant::now();
        let cfg = PeerConfig {
            reqq: setup.reqq,
            max_message_len: setup.max_message_len,
            listen_port: Some(6881),
            ..PeerConfig::default()
        };
        let remote: SocketAddr = "192.0.2.7:51413".parse().expect("literal address");
        let mut peer = PeerState::new(now, &cfg, remote);
        if setup.start_unchoked {
            peer.set_choked(now, false);
        }
        PeerHarness {
            torrent: OneTorrent {
                info: vec![b'x'; setup.metadata_size.unwrap_or(0) as usize],
                setup: setup.clone(),
                have,
            },
            peer,
            now,
            created: now,
            last_recv: now,
            stream: PeerStream {
                fed: Vec::new(),
                pos: 0,
                max: setup.max_message_len,
                handshake: None,
                requests: HashMap::new(),
                requests_total: 0,
                hash_requests: 0,
            },
            drained: Vec::new(),
            parsed_upto: 0,
            out: OutParser::default(),
            popped: HashMap::new(),
            pops_total: 0,
            choke_allowance: 0,
            closed: None,
        }
    }

    fn apply(&mut self, op: &PeerOp) {
        match op {
            PeerOp::Bytes(b) => {
                let result = self.peer.handle_bytes(self.now, b, &self.torrent);
                if !b.is_empty() {
                    self.last_recv = self.now;
                }
                self.stream.fed.extend_from_slice(b);
                if let Err(reason) = result {
                    self.closed = Some(reason);
                    return;
                }
                self.stream.update();
                assert_eq!(
                    self.peer.is_handshake_complete(),
                    self.stream.handshake.is_some()
                );
            }
            PeerOp::Tick(d) => {
                self.now += *d;
                let since_created = self.now - self.created;
                let idle = self.now - self.last_recv;
                let complete = self.peer.is_handshake_complete();
                let handshake_late = !complete && since_created >= Duration::from_secs(10);
                let idle_late = idle >= Duration::from_secs(120);
                match self.peer.handle_tick(self.now) {
                    Ok(()) => {
                        assert!(!handshake_late, "handshake timeout missed");
                        assert!(!idle_late, "idle timeout missed");
                        self.choke_allowance += 4; // a keep-alive
                    }
                    Err(reason) => {
                        match reason {
                            CloseReason::HandshakeTimeout => assert!(handshake_late),
                            CloseReason::IdleTimeout => assert!(idle_late),
                            other => panic!("handle_tick closed with {other:?}"),
                        }
                        self.closed = Some(reason);
                    }
                }
            }
            PeerOp::SetChoked(choked) => {
                if *choked != self.peer.is_choked() {
                    self.choke_allowance += 5 + 17 * self.peer.queued_requests();
                }
                self.peer.set_choked(self.now, *choked);
                assert_eq!(self.peer.is_choked(), *choked);
            }
            PeerOp::Pop(k) => {
                for _ in 0..*k {
                    let Some(r) = self.peer.pop_block() else {
                        break;
                    };
                    assert!(!self.peer.is_choked(), "block {r:?} popped while choked");
                    if let Err(e) = self.torrent.view().validate_request(&r) {
                        panic!("popped an invalid block {r:?}: {e}");
                    }
                    let popped = self.popped.entry(r).or_default();
                    *popped += 1;
                    self.pops_total += 1;
                    let asked = self.stream.requests.get(&r).copied().unwrap_or(0);
                    assert!(*popped <= asked, "{r:?} popped more often than requested");
                }
            }
            PeerOp::Drain(n) => {
                let pending = self.peer.poll_transmit().to_vec();
                let k = (*n).min(pending.len());
                self.drained.extend_from_slice(&pending[..k]);
                self.peer.advance_transmit(*n);
                assert_eq!(self.peer.poll_transmit(), &pending[k..], "advance_transmit");
                self.commit_drained();
            }
        }
    }

    fn commit_drained(&mut self) {
        let Some(hs) = self.stream.handshake else {
            assert!(
                self.drained.is_empty(),
                "we sent bytes before the handshake"
            );
            return;
        };
        let used = self
            .out
            .feed(&self.drained[self.parsed_upto..], &self.torrent, &hs);
        self.parsed_upto += used;
    }

    fn check(&self) {
        let pending = self.peer.poll_transmit();
        let queued = self.peer.queued_requests();
        assert!(
            queued <= self.torrent.setup.reqq as usize,
            "queue beyond reqq"
        );
        if self.peer.is_choked() {
            assert_eq!(queued, 0, "requests queued while the peer is choked");
        }
        let bound = TX_BASE
            + ringseed::wire::bitfield::bitfield_len(self.torrent.setup.num_pieces)
            + CONTROL_BACKLOG_LIMIT
            + self.choke_allowance;
        assert!(
            pending.len() <= bound,
            "transmit backlog {} beyond {bound}",
            pending.len()
        );
        let counters = self.peer.counters();
        assert_eq!(
            counters.protocol_bytes_received,
            self.stream.fed.len() as u64
        );
        assert_eq!(counters.protocol_bytes_sent, self.drained.len() as u64);
        let Some(hs) = self.stream.handshake else {
            assert!(pending.is_empty(), "output before the handshake");
            return;
        };
        assert_eq!(counters.requests_received, self.stream.requests_total);
        let mut tail = self.drained[self.parsed_upto..].to_vec();
        tail.extend_from_slice(pending);
        let mut out = self.out.clone();
        let used = out.feed(&tail, &self.torrent, &hs);
        assert_eq!(used, tail.len(), "our control bytes end inside a message");
        assert_eq!(out.choked_announced, self.peer.is_choked(), "choke state");
        assert_eq!(
            out.hash_rejects, self.stream.hash_requests,
            "every hash request gets a hash reject"
        );
        let answered = self.pops_total + out.rejects_total + queued as u64;
        if hs.supports_fast() {
            assert_eq!(
                self.stream.requests_total, answered,
                "BEP 6: each request gets exactly one answer (piece or reject)"
            );
            for (r, n) in &out.rejects {
                let asked = self.stream.requests.get(r).copied().unwrap_or(0);
                assert!(*n <= asked, "{r:?} rejected more often than requested");
            }
        } else {
            assert!(self.stream.requests_total >= answered);
        }
    }

    /// The engine's flush: take all control bytes, pop everything.
    fn finish(&mut self) {
        if self.closed.is_some() {
            return;
        }
        self.apply(&PeerOp::Pop(u8::MAX));
        self.apply(&PeerOp::Drain(usize::MAX));
        self.check();
        assert_eq!(self.peer.queued_requests(), 0);
        assert!(self.peer.poll_transmit().is_empty());
    }
}

/// Drives a `PeerState` through `ops`, checking every invariant after each.
pub fn run_peer(setup: &PeerSetup, ops: &[PeerOp]) -> Option<CloseReason> {
    let mut h = PeerHarness::new(setup);
    for op in ops {
        h.apply(op);
        if h.closed.is_some() {
            return h.closed;
        }
        h.check();
    }
    h.finish();
    h.closed
}
