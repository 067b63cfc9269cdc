//! What sits between a connection's socket and its `PeerState`: routing by
//! the first bytes (plaintext BitTorrent handshake or MSE), the MSE/PE
//! handshake itself, and RC4 for the rare peer that insists on it.
//!
//! Plaintext (the common case, also after an MSE handshake that selected
//! plaintext) keeps the zero-copy send path. RC4 connections take the
//! copying path in `shard::transmit` (every byte sent is encrypted in order).

use std::time::Instant;

use crate::wire::mse::{
    self, Crypto, EncryptionPolicy, MseError, MseProgress, MseResponder, Rc4Stream, Route,
};
use crate::wire::{CloseReason, PeerState};

use super::catalog::Catalog;

/// The byte-stream mode of a connection.
pub enum StreamMode {
    /// No byte yet, or a proper prefix of `"\x13BitTorrent protocol"`.
    Detect(Vec<u8>),
    /// MSE handshake in progress.
    Mse(Box<MseResponder>),
    /// Plain peer protocol (possibly after an MSE handshake).
    Plain,
    /// RC4 after an MSE handshake: decrypt input, encrypt output.
    Rc4(Box<Rc4Stream>),
}

impl StreamMode {
    pub fn is_rc4(&self) -> bool {
        matches!(self, StreamMode::Rc4(_))
    }

    /// `PeerState` is driving the connection (handshake routing is done).
    pub fn is_peer_protocol(&self) -> bool {
        matches!(self, StreamMode::Plain | StreamMode::Rc4(_))
    }
}

/// Why input could not be taken.
#[derive(Debug)]
pub enum FeedError {
    Peer(CloseReason),
    Mse(MseError),
}

/// What happened to the MSE handshake during a feed, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MseOutcome {
    None,
    Plaintext,
    Rc4,
}

/// Feed received bytes through the stream mode into the peer state.
/// Bytes the MSE handshake wants sent are appended to `pre_tx` (they must
/// go out before anything `PeerState` queues).
pub fn feed(
    mode: &mut StreamMode,
    peer: &mut PeerState,
    pre_tx: &mut Vec<u8>,
    now: Instant,
    data: &[u8],
    catalog: &Catalog,
    policy: EncryptionPolicy,
) -> Result<MseOutcome, FeedError> {
    match mode {
        StreamMode::Plain => peer
            .handle_bytes(now, data, catalog)
            .map_err(FeedError::Peer)
            .map(|()| MseOutcome::None),
        StreamMode::Rc4(rc4) => {
            let mut buf = data.to_vec();
            rc4.decrypt(&mut buf);
            peer.handle_bytes(now, &buf, catalog)
                .map_err(FeedError::Peer)
                .map(|()| MseOutcome::None)
        }
        StreamMode::Detect(seen) => {
            let route = if seen.is_empty() {
                mse::classify(data)
            } else {
                seen.extend_from_slice(data);
                mse::classify(seen)
            };
            let input = if seen.is_empty() {
                data.to_vec()
            } else {
                std::mem::take(seen)
            };
            match route {
                Route::NeedMore => {
                    *seen = input;
                    Ok(MseOutcome::None)
                }
                Route::Plaintext => {
                    *mode = StreamMode::Plain;
                    peer.handle_bytes(now, &input, catalog)
                        .map_err(FeedError::Peer)
                        .map(|()| MseOutcome::None)
                }
                Route::Encrypted => {
                    let responder =
                        MseResponder::with_os_entropy(policy).map_err(FeedError::Mse)?;
                    *mode = StreamMode::Mse(Box::new(responder));
                    feed(mode, peer, pre_tx, now, &input, catalog, policy)
                }
            }
        }
        StreamMode::Mse(responder) => {
            let progress = responder
                .handle_bytes(data, catalog.skeys())
                .map_err(FeedError::Mse)?;
            pre_tx.extend_from_slice(responder.poll_transmit());
            let n = responder.poll_transmit().len();
            responder.advance_transmit(n);
            match progress {
                MseProgress::NeedMore => Ok(MseOutcome::None),
                MseProgress::Done(done) => {
                    let outcome = match (done.selected, done.rc4) {
                        (Crypto::Rc4, Some(rc4)) => {
                            *mode = StreamMode::Rc4(rc4);
                            MseOutcome::Rc4
                        }
                        _ => {
                            *mode = StreamMode::Plain;
                            MseOutcome::Plaintext
                        }
                    };
                    peer.handle_bytes(now, &done.leftover, catalog)
                        .map_err(FeedError::Peer)?;
                    // The peer's BT handshake must name the torrent it
                    // proved knowledge of (SKEY), as libtorrent checks.
                    if let Some(h) = peer.info_hash() {
                        if *h != done.skey {
                            return Err(FeedError::Peer(CloseReason::BadHandshake));
                        }
                    }
                    Ok(outcome)
                }
            }
        }
    }
}

/// Puts one flattened send of a connection into its wire form: under RC4,
/// encrypts everything after the first `handshake_len` bytes, which are the
/// MSE handshake's own bytes (step 4, already encrypted by the responder
/// with the same key stream; encrypting them again would garble them and
/// desynchronise every byte after). Plaintext and MSE modes: unchanged.
pub fn seal_outgoing(mode: &mut StreamMode, bytes: &mut [u8], handshake_len: usize) {
    if let StreamMode::Rc4(rc4) = mode {
        let start = handshake_len.min(bytes.len());
        rc4.encrypt(&mut bytes[start..]);
    }
}
