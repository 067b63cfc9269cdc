//! Sans-IO BitTorrent peer protocol: the message codec ([`codec`]), piece
//! bitfields ([`bitfield`]), the BEP 10 extension handshake ([`ext`]) and the
//! per-connection state machine of a seed ([`peer`]).
//!
//! Nothing here does I/O, reads a clock (`now` is passed in) or uses
//! `unsafe`; it can be driven by tests, fuzzers and the io_uring engine alike.
#![forbid(unsafe_code)]

pub mod bitfield;
pub mod codec;
pub mod ext;
pub mod peer;
pub mod types;

pub use bitfield::{Bitfield, BitfieldError};
pub use codec::{
    decode, piece_header, BlockRequest, Decoded, Handshake, HandshakeDecoded, HashRequest, Message,
    ReservedFlags, WireError,
};
pub use peer::PeerState;
pub use types::{
    CloseReason, LivePieces, PeerConfig, PeerCounters, RejectReason, RequestError, TorrentCatalog,
    TorrentId, TorrentKey, TorrentView,
};
