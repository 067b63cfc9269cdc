//! The vocabulary [`super::peer::PeerState`] shares with the engine:
//! configuration, the torrent view it validates against, close and reject
//! reasons, and counters.

use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

use super::bitfield::Bitfield;
use super::codec::{BlockRequest, MAX_BLOCK_LEN};
use super::hashes::V2Layers;

/// A shard-local handle for a torrent in the engine's catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TorrentId(pub u32);

/// How [`TorrentCatalog::lookup`] is asked for a torrent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TorrentKey<'k> {
    /// From a handshake: the v1 info-hash or the truncated v2 info-hash.
    InfoHash(&'k [u8; 20]),
    /// After the handshake: the id a previous lookup returned.
    Id(TorrentId),
}

/// The engine's read-only catalogue, as seen by a peer state machine.
pub trait TorrentCatalog {
    /// `None`: no such torrent (unknown info-hash, or removed since).
    fn lookup(&self, key: TorrentKey<'_>) -> Option<TorrentView<'_>>;

    /// Whether connections to torrent `id` start in super-seed mode (BEP 16:
    /// no bitfield, pieces offered one at a time, see
    /// [`super::peer::PeerState::offer_piece`]). Asked once per connection,
    /// at the handshake. Default: no.
    fn super_seed(&self, id: TorrentId) -> bool {
        let _ = id;
        false
    }
}

/// What a peer has announced, as [`super::peer::PeerState::peer_haves`]
/// reports it.
#[derive(Debug, Clone, Copy)]
pub enum PeerHaves<'a> {
    None,
    All,
    Some(&'a Bitfield),
}

/// A change of a super-seeding peer's haves, from
/// [`super::peer::PeerState::poll_have_event`], in arrival order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HaveEvent {
    /// A `have` for this piece (redundant ones included).
    Have(u32),
    /// The whole set changed (bitfield, have_all, have_none, or too many
    /// events to queue): read [`super::peer::PeerState::peer_haves`].
    Replaced,
}

/// What a peer state machine needs to know about one torrent.
#[derive(Debug, Clone, Copy)]
pub struct TorrentView<'a> {
    pub id: TorrentId,
    pub num_pieces: u32,
    /// Bytes per piece (every piece but the last).
    pub piece_length: u32,
    /// Bytes in the last piece (1..=piece_length).
    pub last_piece_len: u32,
    /// Verified pieces we can serve.
    pub have: &'a Bitfield,
    /// The torrent has a v2 part (v2-only or hybrid): we set the upgrade bit.
    pub has_v2: bool,
    /// The exact bytes of the info dictionary, when we serve it to peers
    /// that joined by magnet link (BEP 9). `None` disables `ut_metadata`
    /// (the engine passes `None` for private torrents, as libtorrent does).
    pub info_bytes: Option<&'a [u8]>,
    /// The v2 piece layers by pieces root, for BEP 52 hash requests. `None`
    /// (v1 torrents, or layers unknown) answers every hash request with a
    /// hash reject.
    pub v2: Option<&'a V2Layers>,
    /// Pieces of `have` that may be served right now (`None`: all of
    /// them). The engine withdraws pieces whose data changed on disk.
    pub live: Option<&'a dyn LivePieces>,
}

/// An overlay on [`TorrentView::have`] that can change between calls: the
/// pieces the engine may serve right now (data that changed on disk is
/// withdrawn until it is re-verified).
pub trait LivePieces: std::fmt::Debug + Sync {
    /// Whether `piece` may be served now (cheap: called per request).
    fn is_live(&self, piece: u32) -> bool;
    /// How many pieces of `have` are withdrawn now (0 on the common path).
    fn withdrawn(&self) -> u32;
    /// Bumped whenever pieces become live again: unchanged means nothing
    /// withheld from a peer can be announced yet.
    fn restored_generation(&self) -> u64;
}

/// Why a request is not valid for a torrent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RequestError {
    #[error("request length {0} is larger than {MAX_BLOCK_LEN}")]
    TooLarge(u32),
    #[error("request length is 0")]
    ZeroLength,
    #[error("request is outside the piece or the torrent")]
    OutOfRange,
    #[error("request is for a piece we do not have verified")]
    NotHave,
}

impl TorrentView<'_> {
    /// Size of the info dictionary we advertise as `metadata_size` (BEP 9),
    /// when we serve it.
    pub fn metadata_size(&self) -> Option<u32> {
        self.info_bytes
            .and_then(|b| u32::try_from(b.len()).ok())
            .filter(|&n| n > 0)
    }

    /// Length of `piece`, `None` when out of range.
    pub fn piece_len(&self, piece: u32) -> Option<u32> {
        if piece >= self.num_pieces {
            None
        } else if piece + 1 == self.num_pieces {
            Some(self.last_piece_len)
        } else {
            Some(self.piece_length)
        }
    }

    /// Whether `piece` is not withdrawn (see [`TorrentView::live`]).
    pub fn is_live(&self, piece: u32) -> bool {
        self.live.is_none_or(|l| l.is_live(piece))
    }

    /// Checks a block request against the torrent's shape and our haves.
    pub fn validate_request(&self, r: &BlockRequest) -> Result<(), RequestError> {
        if r.len > MAX_BLOCK_LEN {
            return Err(RequestError::TooLarge(r.len));
        }
        if r.len == 0 {
            return Err(RequestError::ZeroLength);
        }
        let piece_len = self.piece_len(r.piece).ok_or(RequestError::OutOfRange)?;
        let end = u64::from(r.begin) + u64::from(r.len);
        if end > u64::from(piece_len) {
            return Err(RequestError::OutOfRange);
        }
        if !self.have.get(r.piece) || !self.is_live(r.piece) {
            return Err(RequestError::NotHave);
        }
        Ok(())
    }
}

/// Per-connection protocol settings, shared by all connections of a shard.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// Our 20-byte peer id.
    pub peer_id: [u8; 20],
    /// Request queue length we advertise (`reqq`) and enforce per peer.
    /// Default 500.
    pub reqq: u32,
    /// Largest accepted length prefix (id + payload), bytes. Bounds the
    /// per-connection partial-message buffer. Default 256 KiB (bitfields of
    /// up to ~2 million pieces).
    pub max_message_len: u32,
    /// Close a connection that has not completed its handshake in this time.
    /// Default 10 s.
    pub handshake_timeout: Duration,
    /// Close a connection from which nothing arrived for this long.
    /// Default 120 s (peers send keep-alives every ~2 minutes at most).
    pub idle_timeout: Duration,
    /// Send a keep-alive when we sent nothing for this long. Default 90 s.
    pub keepalive_interval: Duration,
    /// Our `v` in the extension handshake. Default "ringseed <version>".
    pub client_version: Arc<str>,
    /// Our listen port, advertised as `p` when set. Default none.
    pub listen_port: Option<u16>,
    /// Our release ledger, advertised as `ringseed_ledger` when set (`serve
    /// --ledger`). Default none.
    pub ledger: Option<Arc<super::ext::LedgerBeacon>>,
}

impl PeerConfig {
    /// `-RS0100-` followed by 12 random characters, so several ringseed boxes
    /// in one swarm (a fleet) are told apart by clients and trackers.
    pub fn random_peer_id() -> [u8; 20] {
        use std::io::Read;
        let mut id = Self::default().peer_id;
        let mut rnd = [0u8; 12];
        let ok = std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut rnd))
            .is_ok();
        if !ok {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let mix = t ^ u128::from(std::process::id()) << 64;
            rnd.copy_from_slice(&mix.to_le_bytes()[..12]);
        }
        const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
        for (dst, r) in id[8..].iter_mut().zip(rnd) {
            *dst = ALPHABET[usize::from(r) % ALPHABET.len()];
        }
        id
    }
}

impl Default for PeerConfig {
    fn default() -> Self {
        let mut peer_id = *b"-RS0100-000000000000";
        let v = env!("CARGO_PKG_VERSION").as_bytes();
        // Fill the client-version part "-RSxyzw-" loosely from the version digits.
        let digits: Vec<u8> = v
            .iter()
            .copied()
            .filter(u8::is_ascii_digit)
            .take(4)
            .collect();
        for (i, d) in digits.iter().enumerate() {
            peer_id[3 + i] = *d;
        }
        PeerConfig {
            peer_id,
            reqq: 500,
            max_message_len: 256 * 1024,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            keepalive_interval: Duration::from_secs(90),
            client_version: Arc::from(concat!("ringseed ", env!("CARGO_PKG_VERSION"))),
            listen_port: None,
            ledger: None,
        }
    }
}

/// Why [`super::peer::PeerState`] wants its connection closed. "The peer
/// closed" and I/O errors are the engine's own reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Error)]
pub enum CloseReason {
    #[error("handshake for an info-hash we do not serve")]
    UnknownInfoHash,
    #[error("not a BitTorrent handshake (wrong protocol string, maybe MSE encryption)")]
    BadHandshake,
    #[error("message length prefix above the limit")]
    MessageTooLong,
    #[error("malformed message (wrong length for its id)")]
    MalformedMessage,
    #[error("invalid request from a peer without the fast extension")]
    BadRequest,
    #[error("request for more than 16 KiB")]
    RequestTooLarge,
    #[error("more than 4x our reqq requests outstanding from a peer without the fast extension")]
    TooManyRequests,
    #[error("bitfield of the wrong length or with spare bits set")]
    BadBitfield,
    #[error("have for a piece index out of range")]
    BadHave,
    #[error("malformed extension handshake")]
    BadExtension,
    #[error("no handshake within the handshake timeout")]
    HandshakeTimeout,
    #[error("nothing received within the idle timeout")]
    IdleTimeout,
    #[error("the torrent was removed while the peer was connected")]
    TorrentRemoved,
    #[error("peer provokes replies far beyond its byte budget without reading them")]
    SendBacklog,
    #[error("malformed ut_metadata (BEP 9) message")]
    BadMetadataMessage,
    #[error("piece data we never requested (a seed requests nothing)")]
    UnrequestedData,
}

impl CloseReason {
    pub const ALL: [CloseReason; 16] = [
        CloseReason::UnknownInfoHash,
        CloseReason::BadHandshake,
        CloseReason::MessageTooLong,
        CloseReason::MalformedMessage,
        CloseReason::BadRequest,
        CloseReason::RequestTooLarge,
        CloseReason::TooManyRequests,
        CloseReason::BadBitfield,
        CloseReason::BadHave,
        CloseReason::BadExtension,
        CloseReason::HandshakeTimeout,
        CloseReason::IdleTimeout,
        CloseReason::TorrentRemoved,
        CloseReason::SendBacklog,
        CloseReason::BadMetadataMessage,
        CloseReason::UnrequestedData,
    ];

    /// Stable metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::UnknownInfoHash => "unknown_info_hash",
            CloseReason::BadHandshake => "bad_handshake",
            CloseReason::MessageTooLong => "message_too_long",
            CloseReason::MalformedMessage => "malformed_message",
            CloseReason::BadRequest => "bad_request",
            CloseReason::RequestTooLarge => "request_too_large",
            CloseReason::TooManyRequests => "too_many_requests",
            CloseReason::BadBitfield => "bad_bitfield",
            CloseReason::BadHave => "bad_have",
            CloseReason::BadExtension => "bad_extension",
            CloseReason::HandshakeTimeout => "handshake_timeout",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::TorrentRemoved => "torrent_removed",
            CloseReason::SendBacklog => "send_backlog",
            CloseReason::BadMetadataMessage => "bad_metadata_message",
            CloseReason::UnrequestedData => "unrequested_data",
        }
    }
}

/// Why a request was refused (with reject_request for fast peers, silently
/// otherwise) rather than queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// The peer was choked when it asked.
    Choked,
    /// The peer already had `reqq` requests queued.
    QueueFull,
    ZeroLength,
    OutOfRange,
    /// A piece we do not (or no longer) have verified.
    NotHave,
    /// Queued, then dropped because we choked the peer.
    ChokeFlushed,
}

impl RejectReason {
    pub const COUNT: usize = 6;
    pub const ALL: [RejectReason; Self::COUNT] = [
        RejectReason::Choked,
        RejectReason::QueueFull,
        RejectReason::ZeroLength,
        RejectReason::OutOfRange,
        RejectReason::NotHave,
        RejectReason::ChokeFlushed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Choked => "choked",
            RejectReason::QueueFull => "queue_full",
            RejectReason::ZeroLength => "zero_length",
            RejectReason::OutOfRange => "out_of_range",
            RejectReason::NotHave => "not_have",
            RejectReason::ChokeFlushed => "choke_flushed",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Counters since the last [`super::peer::PeerState::take_counters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PeerCounters {
    pub requests_received: u64,
    /// Indexed by `RejectReason as usize`; see [`PeerCounters::rejected`].
    pub requests_rejected: [u64; RejectReason::COUNT],
    /// Cancels received (whether or not they matched a queued request).
    pub cancels: u64,
    /// Cancels that removed a queued request.
    pub cancels_matched: u64,
    /// All bytes received from the peer.
    pub protocol_bytes_received: u64,
    /// Control bytes handed to the engine by `advance_transmit` (piece
    /// headers and payload are the engine's to count).
    pub protocol_bytes_sent: u64,
    /// Piece messages from the peer (we are a seed; they are dropped).
    pub unexpected_pieces: u64,
    /// Extended messages we do not handle (unknown extended ids,
    /// `ut_metadata` types BEP 9 does not define, metadata requests from a
    /// peer that gave no `ut_metadata` id to answer to).
    pub extended_ignored: u64,
    /// Messages with ids we do not know, and hashes / hash rejects sent to us.
    pub unknown_messages: u64,
    /// BEP 52 hash requests answered with hashes.
    pub hash_requests_served: u64,
    /// BEP 52 hash requests answered with hash reject.
    pub hash_requests_rejected: u64,
    /// BEP 9 requests received.
    pub metadata_requests: u64,
    /// BEP 9 data messages sent.
    pub metadata_pieces_sent: u64,
    /// BEP 9 requests rejected (out of range, or no metadata to serve).
    pub metadata_rejected: u64,
    /// BEP 9 data and reject messages sent to us (a seed asks for nothing).
    pub metadata_unsolicited: u64,
    /// Replies the peer provoked (metadata pieces, hashes, rejects) dropped
    /// because it was over its reply budget (it does not read).
    pub replies_dropped: u64,
}

impl PeerCounters {
    pub fn rejected(&self, reason: RejectReason) -> u64 {
        self.requests_rejected
            .get(reason.index())
            .copied()
            .unwrap_or(0)
    }

    pub(crate) fn count_reject(&mut self, reason: RejectReason) {
        if let Some(c) = self.requests_rejected.get_mut(reason.index()) {
            *c += 1;
        }
    }
}
