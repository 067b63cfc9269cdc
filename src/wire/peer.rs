//! The per-connection state machine of a seed: [`PeerState`].
//!
//! It turns the bytes a peer sends into bytes to send back and block requests
//! to serve. It never downloads, never does I/O and never reads a clock.
//!
//! # Call order (the engine's contract)
//!
//! 1. [`PeerState::new`] when a connection is accepted.
//! 2. [`PeerState::handle_bytes`] with every chunk received, in order, split
//!    anywhere. Before the handshake completes it looks the info-hash up in
//!    the [`TorrentCatalog`] by [`TorrentKey::InfoHash`]; afterwards by the
//!    [`TorrentId`] it returned ([`PeerState::torrent`]) once per call.
//!    `Err(reason)`: close the connection and count `reason`.
//! 3. To build one send: first take all of [`PeerState::poll_transmit`]
//!    (control messages: handshake, extension handshake, bitfield, unchoke,
//!    choke, rejects, keep-alives), then pop up to a batch of blocks with
//!    [`PeerState::pop_block`] and append `[piece_header, data]` for each
//!    after the control bytes. Report how many control bytes were handed to
//!    the kernel with [`PeerState::advance_transmit`]. Control bytes queued
//!    later go into a later send, so a choke is never overtaken by blocks
//!    popped after it, and a reject never precedes the piece it replaces.
//! 4. [`PeerState::set_choked`] whenever the choker decides;
//!    [`PeerState::wants_unchoke`] tells it who asks.
//! 5. [`PeerState::handle_tick`] at least every few seconds (or at
//!    [`PeerState::poll_timeout`]): handshake and idle timeouts, keep-alives.
//! 6. [`PeerState::take_counters`] whenever metrics are aggregated.
//!
//! Memory: the partial-message buffer only holds a message split across
//! receives (bounded by `max_message_len`); whole messages are decoded in
//! place from the caller's bytes without allocating.
//!
//! BEP 9 `ut_metadata` requests are answered from
//! [`TorrentView::info_bytes`] (sent to the peer's own `ut_metadata` id),
//! BEP 52 hash requests from [`TorrentView::v2`]; both replies are control
//! bytes. Metadata `data`/`reject` and `hashes`/`hash reject` sent to us are
//! counted and ignored (a seed asks for nothing). Piece data sent to us is
//! never asked for: a few blocks are counted and dropped, more close the
//! connection ([`CloseReason::UnrequestedData`]).
//!
//! # The reply budget: peers that provoke more than they read
//!
//! Everything a peer can make us queue (metadata pieces, hashes, rejects,
//! hash rejects, choke/unchoke, haves, suggests, keep-alives) is charged to
//! one per-connection byte budget, measured as control bytes not yet handed
//! to the engine (the engine hands them over with each send, so they pile up
//! only while a send is stuck behind a peer that does not read). Above
//! [`REPLY_BUDGET`] (plus the initial bitfield) replies that may be dropped
//! are dropped and counted ([`PeerCounters::replies_dropped`]); state
//! changes (choke, unchoke, have) are always queued. Once the bytes queued
//! plus those dropped since the peer last caught up exceed
//! [`REPLY_BUDGET_CLOSE`], or state changes pile up past twice the budget,
//! the peer is closed ([`CloseReason::SendBacklog`]): a connection never
//! holds more than about `2 x REPLY_BUDGET` of control bytes (plus its
//! bitfield).
//!
//! Requests beyond `reqq` from a peer without the fast extension are dropped
//! and counted, as libtorrent does (such a client re-requests them); only a
//! gross flood, more than [`GROSS_FLOOD_FACTOR`] x `reqq` outstanding
//! (queued, plus dropped since we last served a block), closes it
//! ([`CloseReason::TooManyRequests`]).
//!
//! Super-seeding (BEP 16): when [`TorrentCatalog::super_seed`] says so at the
//! handshake, no bitfield/have_all is sent (have_none to fast peers), pieces
//! are announced one by one with [`PeerState::offer_piece`] as the selector
//! ([`crate::swarm::superseed`]) decides, requests for pieces not announced
//! are refused like pieces we lack, and the peer's haves are reported through
//! [`PeerState::poll_have_event`] / [`PeerState::peer_haves`].
//!
//! Not handled here (yet): allowed-fast sets. Requests for pieces we lost (not in `have`, or withdrawn because
//! their data changed on disk: [`TorrentView::live`]) are rejected for fast
//! peers and silently dropped for others, since losing them is our doing.
//! Pieces withdrawn at handshake time are left out of our bitfield and
//! announced with `have` once live again ([`PeerState::announce_restored`]).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use super::bitfield::{bitfield_len, Bitfield};
use super::codec::HashRequest;
use super::codec::{
    decode, BlockRequest, Decoded, Handshake, HandshakeDecoded, Message, ReservedFlags, WireError,
    HANDSHAKE_LEN,
};
use super::ext::{
    encode_ext_handshake, parse_ext_handshake, OurExtHandshake, PeerExtHandshake, UT_METADATA_ID,
};
use super::metadata::{self, MetadataMessage};
use super::types::{
    CloseReason, HaveEvent, PeerConfig, PeerCounters, PeerHaves, RejectReason, RequestError,
    TorrentCatalog, TorrentId, TorrentKey, TorrentView,
};

/// Unsent control bytes (beyond the initial bitfield) above which replies a
/// peer provokes are dropped: four metadata pieces or hash replies, or
/// thousands of rejects. Bounds what a peer that does not read costs us.
pub const REPLY_BUDGET: usize = 64 * 1024;
/// Bytes provoked (queued or dropped) since the peer last caught up above
/// which it is closed: far beyond what a client that reads ever provokes.
pub const REPLY_BUDGET_CLOSE: usize = 1024 * 1024;
/// A peer without the fast extension with more than this many times `reqq`
/// requests outstanding floods us and is closed.
pub const GROSS_FLOOD_FACTOR: usize = 4;
/// Piece messages sent to us (a seed requests nothing) tolerated before the
/// connection is closed.
pub const UNREQUESTED_PIECES_LIMIT: u64 = 4;
/// Buffers larger than this are released once drained, so idle connections
/// stay small after a large bitfield.
const SHRINK_ABOVE: usize = 16 * 1024;
/// Have events queued beyond this collapse into one [`HaveEvent::Replaced`],
/// so a peer flooding `have`s cannot grow the queue.
const HAVE_EVENTS_LIMIT: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitHandshake,
    Active,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PeerHas {
    Nothing,
    All,
    Some(Bitfield),
}

enum Step {
    Consumed(usize),
    Need(usize),
}

/// What [`PeerState::charge`] decided for a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Charge {
    Queue,
    Drop,
}

/// One peer connection of a seed. See the module docs for the call order.
#[derive(Debug)]
pub struct PeerState {
    cfg: PeerConfig,
    remote: SocketAddr,
    phase: Phase,
    torrent: Option<TorrentId>,
    num_pieces: u32,
    info_hash: [u8; 20],
    peer_id: [u8; 20],
    peer_flags: ReservedFlags,
    peer_ext: Option<PeerExtHandshake>,
    peer_has: PeerHas,
    peer_interested: bool,
    am_choking: bool,
    rx: Vec<u8>,
    tx: Vec<u8>,
    tx_pos: usize,
    /// Replies (metadata pieces, hashes) in `tx` not yet handed to the
    /// engine: `(end offset in tx, length)`, oldest first.
    replies: VecDeque<(usize, usize)>,
    /// Bytes of replies dropped (over budget) since `tx` was last drained.
    dropped_since_drain: usize,
    /// Provoked more than [`REPLY_BUDGET_CLOSE`]: closed at the next input
    /// or tick.
    over_budget: bool,
    /// Requests dropped for a full queue (no fast extension) since we last
    /// served a block: the part of the peer's outstanding requests we hold
    /// no record of.
    excess_requests: usize,
    /// Piece messages received (a seed asks for none).
    unrequested_pieces: u64,
    /// Queued requests with the time the bytes carrying them arrived.
    queue: VecDeque<(BlockRequest, Instant)>,
    /// `now` of the current `handle_bytes` call.
    input_at: Instant,
    created: Instant,
    handshake_at: Option<Instant>,
    last_recv: Instant,
    last_send: Instant,
    sent_since_tick: bool,
    last_wire_error: Option<WireError>,
    counters: PeerCounters,
    /// Verified pieces left out of our bitfield because they were withdrawn
    /// at handshake time; announced with `have` once live again.
    withheld: Option<Bitfield>,
    /// [`LivePieces::restored_generation`] when `withheld` was last scanned.
    withheld_seen: u64,
    /// Super-seed mode (BEP 16), decided at the handshake.
    super_seed: Option<Box<SuperSeedPeer>>,
}

/// Per-connection super-seed state, allocated only in super-seed mode.
#[derive(Debug)]
struct SuperSeedPeer {
    /// Pieces announced to the peer with `have`: the only ones it may request.
    announced: Bitfield,
    /// Changes of the peer's haves for the engine to forward to the selector.
    events: VecDeque<HaveEvent>,
}

impl PeerState {
    pub fn new(now: Instant, config: &PeerConfig, remote: SocketAddr) -> Self {
        PeerState {
            cfg: config.clone(),
            remote,
            phase: Phase::AwaitHandshake,
            torrent: None,
            num_pieces: 0,
            info_hash: [0; 20],
            peer_id: [0; 20],
            peer_flags: ReservedFlags::default(),
            peer_ext: None,
            peer_has: PeerHas::Nothing,
            peer_interested: false,
            am_choking: true,
            rx: Vec::new(),
            tx: Vec::new(),
            tx_pos: 0,
            replies: VecDeque::new(),
            dropped_since_drain: 0,
            over_budget: false,
            excess_requests: 0,
            unrequested_pieces: 0,
            queue: VecDeque::new(),
            input_at: now,
            created: now,
            handshake_at: None,
            last_recv: now,
            last_send: now,
            sent_since_tick: false,
            last_wire_error: None,
            counters: PeerCounters::default(),
            super_seed: None,
            withheld: None,
            withheld_seen: 0,
        }
    }

    /// Feeds bytes received from the peer. Any split of the stream works.
    pub fn handle_bytes<C: TorrentCatalog + ?Sized>(
        &mut self,
        now: Instant,
        bytes: &[u8],
        catalog: &C,
    ) -> Result<(), CloseReason> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.last_recv = now;
        self.input_at = now;
        self.counters.protocol_bytes_received += bytes.len() as u64;
        let mut view = match self.torrent {
            Some(id) => Some(
                catalog
                    .lookup(TorrentKey::Id(id))
                    .ok_or(CloseReason::TorrentRemoved)?,
            ),
            None => None,
        };
        let mut input = bytes;

        // Finish a message split across receives, copying only its bytes.
        if !self.rx.is_empty() {
            let mut rx = std::mem::take(&mut self.rx);
            let result = loop {
                match self.step(now, &rx, catalog, &mut view) {
                    Ok(Step::Need(needed)) => {
                        if input.is_empty() {
                            break Ok(false);
                        }
                        let take = needed.min(input.len());
                        let (head, rest) = input.split_at(take);
                        rx.extend_from_slice(head);
                        input = rest;
                    }
                    Ok(Step::Consumed(_)) => break Ok(true),
                    Err(e) => break Err(e),
                }
            };
            match result {
                Ok(false) => {
                    self.rx = rx;
                    return Ok(());
                }
                Ok(true) => {
                    rx.clear();
                    if rx.capacity() > SHRINK_ABOVE {
                        rx = Vec::new();
                    }
                    self.rx = rx;
                }
                Err(e) => return Err(e),
            }
        }

        // Whole messages are decoded in place.
        while !input.is_empty() {
            match self.step(now, input, catalog, &mut view)? {
                Step::Consumed(n) => input = input.get(n..).unwrap_or_default(),
                Step::Need(_) => {
                    self.rx.extend_from_slice(input);
                    break;
                }
            }
        }
        Ok(())
    }

    fn step<'c, C: TorrentCatalog + ?Sized>(
        &mut self,
        now: Instant,
        buf: &[u8],
        catalog: &'c C,
        view: &mut Option<TorrentView<'c>>,
    ) -> Result<Step, CloseReason> {
        match self.phase {
            Phase::AwaitHandshake => match Handshake::decode(buf) {
                Err(e) => {
                    self.last_wire_error = Some(e);
                    Err(CloseReason::BadHandshake)
                }
                Ok(HandshakeDecoded::Incomplete { needed }) => Ok(Step::Need(needed)),
                Ok(HandshakeDecoded::Complete(h)) => {
                    let v = catalog
                        .lookup(TorrentKey::InfoHash(&h.info_hash))
                        .ok_or(CloseReason::UnknownInfoHash)?;
                    let super_seed = catalog.super_seed(v.id);
                    self.on_handshake(now, &h, &v, super_seed);
                    *view = Some(v);
                    Ok(Step::Consumed(HANDSHAKE_LEN))
                }
            },
            Phase::Active if self.over_budget => Err(CloseReason::SendBacklog),
            Phase::Active => match decode(buf, self.cfg.max_message_len) {
                Err(e) => {
                    self.last_wire_error = Some(e);
                    Err(match e {
                        WireError::MessageTooLong { .. } => CloseReason::MessageTooLong,
                        _ => CloseReason::MalformedMessage,
                    })
                }
                Ok(Decoded::Incomplete { needed }) => Ok(Step::Need(needed)),
                Ok(Decoded::Message { msg, consumed }) => {
                    let v = view.as_ref().ok_or(CloseReason::TorrentRemoved)?;
                    self.on_message(msg, v)?;
                    Ok(Step::Consumed(consumed))
                }
            },
        }
    }

    fn on_handshake(
        &mut self,
        now: Instant,
        h: &Handshake,
        view: &TorrentView<'_>,
        super_seed: bool,
    ) {
        self.phase = Phase::Active;
        self.handshake_at = Some(now);
        self.torrent = Some(view.id);
        self.num_pieces = view.num_pieces;
        self.info_hash = h.info_hash;
        self.peer_id = h.peer_id;
        self.peer_flags = h.flags();

        let ours = Handshake {
            reserved: ReservedFlags {
                fast: true,
                extension: true,
                v2: view.has_v2,
                dht: false,
            }
            .to_bytes(),
            info_hash: h.info_hash,
            peer_id: self.cfg.peer_id,
        };
        self.tx.extend_from_slice(&ours.encode());
        if self.peer_flags.extension {
            encode_ext_handshake(
                &mut self.tx,
                &OurExtHandshake {
                    client_version: &self.cfg.client_version,
                    reqq: self.cfg.reqq,
                    listen_port: self.cfg.listen_port,
                    yourip: Some(self.remote.ip()),
                    metadata_size: view.metadata_size(),
                    ledger: self.cfg.ledger.as_ref().map(|b| b.advert()),
                },
            );
        }
        let fast = self.peer_flags.fast;
        if super_seed {
            // BEP 16: advertise nothing; offers follow as `have`s. Without the
            // fast extension, sending no bitfield means "nothing" (BEP 3).
            self.super_seed = Some(Box::new(SuperSeedPeer {
                announced: Bitfield::new(view.num_pieces),
                events: VecDeque::new(),
            }));
            if fast {
                Message::HaveNone.encode(&mut self.tx);
            }
        } else if view.live.is_some_and(|l| l.withdrawn() > 0) {
            // Some verified pieces are withdrawn (data changed on disk):
            // advertise the live ones, announce the rest when they return.
            let mut live = view.have.clone();
            let mut withheld = Bitfield::new(view.num_pieces);
            for i in 0..view.num_pieces {
                if view.have.get(i) && !view.is_live(i) {
                    live.unset(i);
                    withheld.set(i);
                }
            }
            if live.count() == 0 {
                if fast {
                    Message::HaveNone.encode(&mut self.tx);
                }
            } else {
                Message::Bitfield(live.as_bytes()).encode(&mut self.tx);
            }
            self.withheld = (withheld.count() > 0).then_some(withheld);
            self.withheld_seen = view.live.map_or(0, |l| l.restored_generation());
        } else if fast && view.have.is_full() {
            Message::HaveAll.encode(&mut self.tx);
        } else if view.have.count() == 0 {
            if fast {
                Message::HaveNone.encode(&mut self.tx);
            }
        } else {
            Message::Bitfield(view.have.as_bytes()).encode(&mut self.tx);
        }
        if !self.am_choking {
            Message::Unchoke.encode(&mut self.tx);
        }
    }

    fn on_message(&mut self, msg: Message<'_>, view: &TorrentView<'_>) -> Result<(), CloseReason> {
        match msg {
            Message::KeepAlive | Message::Choke | Message::Unchoke => {}
            Message::Interested => self.peer_interested = true,
            Message::NotInterested => self.peer_interested = false,
            Message::Have(i) => {
                if i >= view.num_pieces {
                    return Err(CloseReason::BadHave);
                }
                self.push_have_event(HaveEvent::Have(i));
                match &mut self.peer_has {
                    PeerHas::All => {}
                    PeerHas::Some(b) => {
                        b.set(i);
                        if b.is_full() {
                            self.peer_has = PeerHas::All;
                        }
                    }
                    PeerHas::Nothing => {
                        let mut b = Bitfield::new(view.num_pieces);
                        b.set(i);
                        self.peer_has = if b.is_full() {
                            PeerHas::All
                        } else {
                            PeerHas::Some(b)
                        };
                    }
                }
            }
            Message::Bitfield(bytes) => {
                let b = Bitfield::from_wire(bytes, view.num_pieces)
                    .map_err(|_| CloseReason::BadBitfield)?;
                self.peer_has = if b.is_full() {
                    PeerHas::All
                } else if b.count() == 0 {
                    PeerHas::Nothing
                } else {
                    PeerHas::Some(b)
                };
                self.push_have_event(HaveEvent::Replaced);
            }
            Message::HaveAll => {
                self.peer_has = PeerHas::All;
                self.push_have_event(HaveEvent::Replaced);
            }
            Message::HaveNone => {
                self.peer_has = PeerHas::Nothing;
                self.push_have_event(HaveEvent::Replaced);
            }
            Message::Request(r) => self.on_request(r, view)?,
            Message::Cancel(r) => {
                self.counters.cancels += 1;
                if let Some(pos) = self.queue.iter().position(|q| q.0 == r) {
                    self.queue.remove(pos);
                    self.counters.cancels_matched += 1;
                    // BEP 6: every request gets exactly one answer, even when cancelled.
                    if self.peer_flags.fast {
                        self.queue_control(Message::Reject(r))?;
                    }
                }
            }
            Message::Piece { .. } => {
                // A seed requests nothing: a peer pushing data at us would
                // otherwise be drained forever.
                self.counters.unexpected_pieces += 1;
                self.unrequested_pieces += 1;
                if self.unrequested_pieces > UNREQUESTED_PIECES_LIMIT {
                    return Err(CloseReason::UnrequestedData);
                }
            }
            Message::Port(_)
            | Message::Suggest(_)
            | Message::AllowedFast(_)
            | Message::Reject(_) => {}
            Message::Extended { id: 0, payload } => {
                let ext = parse_ext_handshake(payload).map_err(|_| CloseReason::BadExtension)?;
                self.peer_ext = Some(ext);
            }
            Message::Extended {
                id: UT_METADATA_ID,
                payload,
            } => self.on_metadata(payload, view)?,
            Message::Extended { .. } => self.counters.extended_ignored += 1,
            Message::HashRequest(r) => self.on_hash_request(r, view)?,
            Message::Hashes { .. } | Message::HashReject(_) | Message::Unknown { .. } => {
                self.counters.unknown_messages += 1
            }
        }
        Ok(())
    }

    /// A `ut_metadata` message sent to our id.
    fn on_metadata(&mut self, payload: &[u8], view: &TorrentView<'_>) -> Result<(), CloseReason> {
        let msg = metadata::parse_metadata_message(payload)
            .map_err(|_| CloseReason::BadMetadataMessage)?;
        let piece = match msg {
            MetadataMessage::Request { piece } => piece,
            MetadataMessage::Data { .. } | MetadataMessage::Reject { .. } => {
                self.counters.metadata_unsolicited += 1;
                return Ok(());
            }
            MetadataMessage::Other { .. } => {
                self.counters.extended_ignored += 1;
                return Ok(());
            }
        };
        self.counters.metadata_requests += 1;
        // The reply goes to the id the peer gave in its extension handshake.
        let Some(ext_id) = self
            .peer_ext
            .and_then(|e| e.ut_metadata)
            .filter(|&id| id != 0)
        else {
            self.counters.extended_ignored += 1;
            return Ok(());
        };
        let info = view
            .info_bytes
            .filter(|i| metadata::metadata_piece(i, piece).is_some());
        match info {
            Some(info) => {
                self.counters.metadata_pieces_sent += 1;
                self.queue_reply(|tx| {
                    metadata::encode_data(tx, ext_id, piece, info);
                })
            }
            None => {
                self.counters.metadata_rejected += 1;
                let mut msg = Vec::with_capacity(48);
                metadata::encode_reject(&mut msg, ext_id, piece);
                self.queue_control_bytes(&msg)
            }
        }
    }

    fn on_hash_request(
        &mut self,
        r: HashRequest,
        view: &TorrentView<'_>,
    ) -> Result<(), CloseReason> {
        let valid = view.v2.map(|layers| (layers, layers.validate(&r)));
        match valid {
            Some((layers, Ok(v))) => {
                self.counters.hash_requests_served += 1;
                self.queue_reply(|tx| layers.encode_hashes(&v, tx))
            }
            _ => {
                self.counters.hash_requests_rejected += 1;
                self.queue_control(Message::HashReject(r))
            }
        }
    }

    /// Appends a large reply the peer asked for (metadata piece, hashes),
    /// charged to the reply budget: dropped (counted) when over it.
    fn queue_reply(&mut self, encode: impl FnOnce(&mut Vec<u8>)) -> Result<(), CloseReason> {
        let start = self.tx.len();
        encode(&mut self.tx);
        let reply = self.tx.split_off(start);
        let len = reply.len();
        if self.charge(len, true) == Charge::Drop {
            return self.budget_result();
        }
        self.tx.extend_from_slice(&reply);
        if len > 0 {
            self.replies.push_back((self.tx.len(), len));
        }
        self.budget_result()
    }

    fn on_request(&mut self, r: BlockRequest, view: &TorrentView<'_>) -> Result<(), CloseReason> {
        self.counters.requests_received += 1;
        match view.validate_request(&r) {
            Ok(()) => {}
            Err(RequestError::TooLarge(_)) => return Err(CloseReason::RequestTooLarge),
            Err(RequestError::ZeroLength) => {
                return self.refuse(
                    r,
                    RejectReason::ZeroLength,
                    Some(CloseReason::BadRequest),
                    view,
                )
            }
            Err(RequestError::OutOfRange) => {
                return self.refuse(
                    r,
                    RejectReason::OutOfRange,
                    Some(CloseReason::BadRequest),
                    view,
                )
            }
            Err(RequestError::NotHave) => return self.refuse(r, RejectReason::NotHave, None, view),
        }
        if let Some(ss) = &self.super_seed {
            if !ss.announced.get(r.piece) {
                // Super-seeding: as far as the peer knows we lack this piece.
                return self.refuse(r, RejectReason::NotHave, None, view);
            }
        }
        if self.am_choking {
            return self.refuse(r, RejectReason::Choked, None, view);
        }
        if self.queue.len() >= self.cfg.reqq as usize {
            if !self.peer_flags.fast {
                // Dropped, as libtorrent does: such a client re-requests.
                // Only a gross flood closes it.
                self.excess_requests += 1;
                let limit = GROSS_FLOOD_FACTOR * self.cfg.reqq as usize;
                if self.queue.len() + self.excess_requests > limit {
                    self.counters.count_reject(RejectReason::QueueFull);
                    return Err(CloseReason::TooManyRequests);
                }
            }
            return self.refuse(r, RejectReason::QueueFull, None, view);
        }
        self.queue.push_back((r, self.input_at));
        Ok(())
    }

    /// Refuses a request: reject_request for fast peers; for others close
    /// with `close` if given, else drop it silently.
    fn refuse(
        &mut self,
        r: BlockRequest,
        reason: RejectReason,
        close: Option<CloseReason>,
        view: &TorrentView<'_>,
    ) -> Result<(), CloseReason> {
        let _ = view;
        self.counters.count_reject(reason);
        if self.peer_flags.fast {
            self.queue_control(Message::Reject(r))
        } else {
            close.map_or(Ok(()), Err)
        }
    }

    /// Queues a small reply the peer provoked (reject, hash reject), charged
    /// to the reply budget: dropped (counted) when over it.
    fn queue_control(&mut self, msg: Message<'_>) -> Result<(), CloseReason> {
        if self.charge(msg.encoded_len(), true) == Charge::Queue {
            msg.encode(&mut self.tx);
        }
        self.budget_result()
    }

    /// [`PeerState::queue_control`] for an already encoded message.
    fn queue_control_bytes(&mut self, msg: &[u8]) -> Result<(), CloseReason> {
        if self.charge(msg.len(), true) == Charge::Queue {
            self.tx.extend_from_slice(msg);
        }
        self.budget_result()
    }

    /// Queues a state change we must not drop (choke, unchoke, have,
    /// suggest), still charged to the budget so that a peer provoking them
    /// without reading is closed.
    fn queue_state(&mut self, msg: Message<'_>) {
        self.charge(msg.encoded_len(), false);
        msg.encode(&mut self.tx);
    }

    /// Charges `len` bytes the peer provoked to its budget: whether to queue
    /// or drop them (only if `droppable`). Sets `over_budget` when the bytes
    /// queued and dropped since it last caught up pass the close limit.
    fn charge(&mut self, len: usize, droppable: bool) -> Charge {
        let allowance = bitfield_len(self.num_pieces);
        let unsent = self.tx.len() - self.tx_pos;
        if unsent + self.dropped_since_drain + len > REPLY_BUDGET_CLOSE + allowance
            || unsent + len > 2 * REPLY_BUDGET + allowance
        {
            // Grossly over: provoked far more than it read, or so many state
            // changes (which are never dropped) that they would outgrow
            // twice the budget in memory.
            self.over_budget = true;
        }
        if droppable && unsent + len > REPLY_BUDGET + allowance {
            self.dropped_since_drain += len;
            self.counters.replies_dropped += 1;
            return Charge::Drop;
        }
        Charge::Queue
    }

    fn budget_result(&self) -> Result<(), CloseReason> {
        if self.over_budget {
            Err(CloseReason::SendBacklog)
        } else {
            Ok(())
        }
    }

    fn push_have_event(&mut self, event: HaveEvent) {
        let Some(ss) = &mut self.super_seed else {
            return;
        };
        if ss.events.len() >= HAVE_EVENTS_LIMIT || event == HaveEvent::Replaced {
            ss.events.clear();
            ss.events.push_back(HaveEvent::Replaced);
        } else {
            ss.events.push_back(event);
        }
    }

    /// Chokes or unchokes the peer. Choking drops its queued requests
    /// (rejecting each if it speaks the fast extension, as BEP 6 requires).
    /// Before the handshake completes this only sets the initial state.
    pub fn set_choked(&mut self, now: Instant, choked: bool) {
        let _ = now;
        if choked == self.am_choking {
            return;
        }
        self.am_choking = choked;
        if self.phase != Phase::Active {
            return;
        }
        if choked {
            self.queue_state(Message::Choke);
            while let Some((r, _)) = self.queue.pop_front() {
                self.counters.count_reject(RejectReason::ChokeFlushed);
                if self.peer_flags.fast {
                    // Over budget: dropped (counted); closed at the next
                    // input or tick if grossly over.
                    let _ = self.queue_control(Message::Reject(r));
                }
            }
        } else {
            self.queue_state(Message::Unchoke);
        }
    }

    /// Timeouts and keep-alives.
    pub fn handle_tick(&mut self, now: Instant) -> Result<(), CloseReason> {
        self.budget_result()?;
        if self.sent_since_tick {
            self.sent_since_tick = false;
            self.last_send = now;
        }
        if self.phase == Phase::AwaitHandshake
            && now.saturating_duration_since(self.created) >= self.cfg.handshake_timeout
        {
            return Err(CloseReason::HandshakeTimeout);
        }
        if now.saturating_duration_since(self.last_recv) >= self.cfg.idle_timeout {
            return Err(CloseReason::IdleTimeout);
        }
        if self.phase == Phase::Active
            && self.tx_pos == self.tx.len()
            && now.saturating_duration_since(self.last_send) >= self.cfg.keepalive_interval
        {
            Message::KeepAlive.encode(&mut self.tx);
            self.last_send = now;
        }
        Ok(())
    }

    /// The next instant at which [`PeerState::handle_tick`] has work.
    pub fn poll_timeout(&self) -> Instant {
        let idle = self.last_recv + self.cfg.idle_timeout;
        match self.phase {
            Phase::AwaitHandshake => idle.min(self.created + self.cfg.handshake_timeout),
            Phase::Active => idle.min(self.last_send + self.cfg.keepalive_interval),
        }
    }

    /// Control bytes waiting to be sent (may be empty).
    pub fn poll_transmit(&self) -> &[u8] {
        self.tx.get(self.tx_pos..).unwrap_or_default()
    }

    /// `n` bytes of [`PeerState::poll_transmit`] were handed to the kernel.
    pub fn advance_transmit(&mut self, n: usize) {
        let n = n.min(self.tx.len() - self.tx_pos);
        if n == 0 {
            return;
        }
        self.tx_pos += n;
        self.counters.protocol_bytes_sent += n as u64;
        self.sent_since_tick = true;
        while let Some(&(end, _)) = self.replies.front() {
            if end > self.tx_pos {
                break;
            }
            self.replies.pop_front();
        }
        if self.tx_pos == self.tx.len() {
            // The peer caught up with everything it provoked.
            self.dropped_since_drain = 0;
            self.tx_pos = 0;
            self.tx.clear();
            if self.tx.capacity() > SHRINK_ABOVE {
                self.tx = Vec::new();
            }
        }
    }

    /// The next request to serve, oldest first.
    pub fn pop_block(&mut self) -> Option<BlockRequest> {
        self.pop_block_timed().map(|(r, _)| r)
    }

    /// Like [`PeerState::pop_block`], with the time the request arrived
    /// (the `now` of the `handle_bytes` call that decoded it), for the
    /// request-to-send latency histogram.
    pub fn pop_block_timed(&mut self) -> Option<(BlockRequest, Instant)> {
        let r = self.queue.pop_front();
        if r.is_some() {
            self.sent_since_tick = true;
            self.excess_requests = 0;
        }
        r
    }

    /// Metadata and hash replies in the control bytes not yet handed over.
    pub fn pending_replies(&self) -> usize {
        self.replies.len()
    }

    /// A request popped with [`PeerState::pop_block_timed`] cannot be
    /// served after all (its piece was withdrawn since it was queued): reject
    /// it for fast peers (it goes out with the next send's control bytes),
    /// drop it for others. Bounded: every popped request was queued once.
    pub fn reject_popped(&mut self, r: BlockRequest) {
        self.counters.count_reject(RejectReason::NotHave);
        if self.peer_flags.fast {
            // Over budget: dropped and counted (the peer does not read).
            let _ = self.queue_control(Message::Reject(r));
        }
    }

    /// Announces (with `have`) the pieces left out of our bitfield at
    /// handshake time that are live again. Cheap when nothing was withheld;
    /// call it from time to time (the engine does on its tick).
    pub fn announce_restored(&mut self, view: &TorrentView<'_>) {
        if self.withheld.is_none() {
            return;
        }
        // Nothing became live since the last scan: O(1).
        let generation = view.live.map_or(0, |l| l.restored_generation());
        if generation == self.withheld_seen {
            return;
        }
        self.withheld_seen = generation;
        let Some(mut withheld) = self.withheld.take() else {
            return;
        };
        for i in 0..withheld.len() {
            if withheld.get(i) && view.is_live(i) {
                withheld.unset(i);
                self.queue_state(Message::Have(i));
            }
        }
        if withheld.count() > 0 {
            self.withheld = Some(withheld);
        }
    }

    /// Requests queued and not yet popped.
    pub fn queued_requests(&self) -> usize {
        self.queue.len()
    }

    /// The torrent this peer is attached to, once the handshake completed.
    pub fn torrent(&self) -> Option<TorrentId> {
        self.torrent
    }

    /// The info-hash the peer used (v1, or the truncated v2 one).
    pub fn info_hash(&self) -> Option<&[u8; 20]> {
        self.torrent.map(|_| &self.info_hash)
    }

    pub fn peer_id(&self) -> Option<&[u8; 20]> {
        self.torrent.map(|_| &self.peer_id)
    }

    pub fn remote(&self) -> SocketAddr {
        self.remote
    }

    pub fn is_handshake_complete(&self) -> bool {
        self.phase == Phase::Active
    }

    pub fn handshake_completed_at(&self) -> Option<Instant> {
        self.handshake_at
    }

    /// The peer's handshake capabilities (all false before the handshake).
    pub fn peer_flags(&self) -> ReservedFlags {
        self.peer_flags
    }

    pub fn peer_ext(&self) -> Option<&PeerExtHandshake> {
        self.peer_ext.as_ref()
    }

    pub fn is_interested(&self) -> bool {
        self.peer_interested
    }

    pub fn is_choked(&self) -> bool {
        self.am_choking
    }

    /// Interested, handshaken and still choked: a candidate for an upload slot.
    pub fn wants_unchoke(&self) -> bool {
        self.phase == Phase::Active && self.peer_interested && self.am_choking
    }

    /// How many pieces the peer says it has.
    pub fn peer_piece_count(&self) -> u32 {
        match &self.peer_has {
            PeerHas::Nothing => 0,
            PeerHas::All => self.num_pieces,
            PeerHas::Some(b) => b.count(),
        }
    }

    pub fn peer_has_piece(&self, piece: u32) -> bool {
        match &self.peer_has {
            PeerHas::Nothing => false,
            PeerHas::All => piece < self.num_pieces,
            PeerHas::Some(b) => b.get(piece),
        }
    }

    /// Everything the peer has announced (have, bitfield, have_all/none).
    pub fn peer_haves(&self) -> PeerHaves<'_> {
        match &self.peer_has {
            PeerHas::Nothing => PeerHaves::None,
            PeerHas::All => PeerHaves::All,
            PeerHas::Some(b) => PeerHaves::Some(b),
        }
    }

    /// The connection is in super-seed mode (decided at the handshake by
    /// [`TorrentCatalog::super_seed`]).
    pub fn is_super_seeding(&self) -> bool {
        self.super_seed.is_some()
    }

    /// Super-seed mode: the next change of the peer's haves, oldest first,
    /// to forward to [`crate::swarm::superseed::SuperSeeder`]. Drain it after
    /// every `handle_bytes`. Always `None` outside super-seed mode.
    pub fn poll_have_event(&mut self) -> Option<HaveEvent> {
        self.super_seed.as_mut()?.events.pop_front()
    }

    /// Announces `piece` to the peer with a `have`, queued behind the
    /// control bytes already waiting (so right after the handshake reply
    /// when called in the same flush). In super-seed mode this is the
    /// offer that makes the piece requestable; each piece is announced at
    /// most once. Outside super-seed mode it announces a piece that became
    /// available (e.g. re-verified). Returns whether a `have` was queued:
    /// `false` before the handshake, out of range, or already announced.
    pub fn offer_piece(&mut self, piece: u32) -> bool {
        if self.phase != Phase::Active || piece >= self.num_pieces {
            return false;
        }
        if let Some(ss) = &mut self.super_seed {
            if ss.announced.get(piece) {
                return false;
            }
            ss.announced.set(piece);
        }
        self.queue_state(Message::Have(piece));
        true
    }

    /// Sends BEP 6 `suggest_piece` for `piece` to a peer that speaks the
    /// fast extension; `false` (nothing queued) for others, before the
    /// handshake, out of range, or for a piece not offered in super-seed
    /// mode (suggesting a piece the peer cannot request would only confuse).
    pub fn suggest_piece(&mut self, piece: u32) -> bool {
        if self.phase != Phase::Active || !self.peer_flags.fast || piece >= self.num_pieces {
            return false;
        }
        if let Some(ss) = &self.super_seed {
            if !ss.announced.get(piece) {
                return false;
            }
        }
        self.queue_state(Message::Suggest(piece));
        true
    }

    /// Pieces announced in super-seed mode so far (0 outside it).
    pub fn offered_piece_count(&self) -> u32 {
        self.super_seed
            .as_ref()
            .map_or(0, |ss| ss.announced.count())
    }

    /// Control bytes queued and not yet handed to the engine: what the reply
    /// budget measures.
    pub fn unsent_control_bytes(&self) -> usize {
        self.tx.len() - self.tx_pos
    }

    /// The peer provoked more than [`REPLY_BUDGET_CLOSE`] without reading:
    /// the next input or tick returns [`CloseReason::SendBacklog`].
    pub fn is_over_budget(&self) -> bool {
        self.over_budget
    }

    /// The codec error behind the last `BadHandshake`/`MalformedMessage`/
    /// `MessageTooLong`, for debug logs.
    pub fn last_wire_error(&self) -> Option<&WireError> {
        self.last_wire_error.as_ref()
    }

    pub fn counters(&self) -> &PeerCounters {
        &self.counters
    }

    /// Returns the counters and resets them.
    pub fn take_counters(&mut self) -> PeerCounters {
        std::mem::take(&mut self.counters)
    }
}
