//! Sans-IO BitTorrent peer protocol: the message codec ([`codec`]), piece
//! bitfields ([`bitfield`]), the BEP 10 extension handshake ([`ext`]), BEP 9
//! metadata messages ([`metadata`]), BEP 52 hash requests served from the
//! piece layers ([`hashes`]), the per-connection state machine of a seed
//! ([`peer`]) and the receiving side of the MSE/PE encrypted handshake
//! ([`mse`]).
//!
//! Nothing here does I/O, reads a clock (`now` is passed in) or uses
//! `unsafe`; it can be driven by tests, fuzzers and the io_uring engine alike.
#![forbid(unsafe_code)]

pub mod bitfield;
pub mod codec;
pub mod ext;
pub mod hashes;
pub mod metadata;
pub mod mse;
pub mod peer;
pub mod types;

pub use bitfield::{Bitfield, BitfieldError};
pub use codec::{
    decode, piece_header, BlockRequest, Decoded, Handshake, HandshakeDecoded, HashRequest, Message,
    ReservedFlags, WireError,
};
pub use hashes::{HashRejectReason, V2Layers};
pub use peer::PeerState;
pub use types::{
    CloseReason, LivePieces, PeerConfig, PeerCounters, RejectReason, RequestError, TorrentCatalog,
    TorrentId, TorrentKey, TorrentView,
};
