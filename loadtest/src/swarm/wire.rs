//! One connection's byte stream, both directions, sans-IO: framing of what
//! the peer sends ([`PeerWire::next_event`]) and the queue of what we send
//! ([`PeerWire::fill_iov`] / [`PeerWire::consume`]). What the messages
//! mean is the [`super::node`]'s business.
//!
//! Receive: piece payload is never buffered here. A piece message is
//! recognised from its 13-byte header and its payload is handed out as
//! [`WireEvent::BlockData`] slices of the caller's bytes as they arrive, then
//! [`WireEvent::BlockDone`]; so what the caller must keep between reads is at
//! most one partial control message (or handshake, or piece header).
//!
//! Send: control messages are encoded into one buffer; uploaded blocks are
//! queued as requests and go out as `[13-byte header, slice of the content
//! store]` iovecs, never copied. Order: the rest of a block already partly
//! sent, then all control bytes, then queued blocks (as many whole blocks as
//! the caller's upload budget allows). Control messages may therefore
//! overtake queued blocks; the node drops (and rejects) queued blocks when it
//! chokes, so a choke is never followed by blocks queued before it.

use std::collections::VecDeque;
use std::io::IoSlice;

use ringseed::wire::codec::{
    decode, piece_header, BlockRequest, Decoded, Handshake, HandshakeDecoded, Message,
    HANDSHAKE_LEN, MAX_BLOCK_LEN, MSG_ID_PIECE, PIECE_HEADER_LEN,
};

use super::store::ContentStore;
use crate::leecher::MAX_MESSAGE_LEN;

/// Most iovecs one [`PeerWire::fill_iov`] produces.
pub const MAX_IOV: usize = 40;

/// What the peer sent, one item at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireEvent<'a> {
    Handshake(Handshake),
    /// Any message but `piece` (which arrives as the two below).
    Message(Message<'a>),
    /// Payload of a piece message: `bytes` start `offset` bytes into `req`.
    BlockData {
        req: BlockRequest,
        offset: u32,
        bytes: &'a [u8],
    },
    /// The last payload byte of `req` has been handed out.
    BlockDone(BlockRequest),
}

/// The stream cannot be parsed any more: close the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    BadHandshake,
    BadPieceLength,
    Framing,
}

impl WireError {
    pub fn as_str(self) -> &'static str {
        match self {
            WireError::BadHandshake => "bad_handshake",
            WireError::BadPieceLength => "bad_piece_length",
            WireError::Framing => "framing",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct QueuedBlock {
    req: BlockRequest,
    header: [u8; PIECE_HEADER_LEN],
}

impl QueuedBlock {
    fn wire_len(&self) -> usize {
        PIECE_HEADER_LEN + self.req.len as usize
    }
}

/// What [`PeerWire::consume`] moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sent {
    /// Payload bytes handed to the kernel.
    pub payload: u64,
    /// Payload bytes of blocks whose first byte went out in this call (what
    /// the upload bucket is charged: a block is started only when the
    /// budget covers all of it).
    pub started: u64,
}

/// What [`PeerWire::fill_iov`] offered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fill {
    pub bytes: usize,
    /// Blocks are queued that the budget did not cover.
    pub blocked: bool,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct PeerWire {
    handshake_done: bool,
    /// The block whose payload is being received, and bytes seen so far.
    streaming: Option<(BlockRequest, u32)>,
    ctrl: Vec<u8>,
    ctrl_pos: usize,
    queue: VecDeque<QueuedBlock>,
    /// A block partly handed to the kernel, and how many of its bytes.
    cur: Option<(QueuedBlock, usize)>,
}

impl PeerWire {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn handshake_done(&self) -> bool {
        self.handshake_done
    }

    /// The next item in `data[*pos..]`, advancing `*pos` past it. `Ok(None)`:
    /// the rest is an incomplete message; present it again with more bytes.
    pub fn next_event<'a>(
        &mut self,
        data: &'a [u8],
        pos: &mut usize,
    ) -> Result<Option<WireEvent<'a>>, WireError> {
        loop {
            let rest = data.get(*pos..).unwrap_or_default();
            if let Some((req, got)) = self.streaming {
                if got == req.len {
                    self.streaming = None;
                    return Ok(Some(WireEvent::BlockDone(req)));
                }
                if rest.is_empty() {
                    return Ok(None);
                }
                let take = ((req.len - got) as usize).min(rest.len());
                *pos += take;
                self.streaming = Some((req, got + take as u32));
                return Ok(Some(WireEvent::BlockData {
                    req,
                    offset: got,
                    bytes: &rest[..take],
                }));
            }
            if !self.handshake_done {
                return match Handshake::decode(rest) {
                    Err(_) => Err(WireError::BadHandshake),
                    Ok(HandshakeDecoded::Incomplete { .. }) => Ok(None),
                    Ok(HandshakeDecoded::Complete(h)) => {
                        *pos += HANDSHAKE_LEN;
                        self.handshake_done = true;
                        Ok(Some(WireEvent::Handshake(h)))
                    }
                };
            }
            if rest.len() >= 5 && rest[4] == MSG_ID_PIECE {
                let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
                if !(9..=9 + MAX_BLOCK_LEN).contains(&len) {
                    return Err(WireError::BadPieceLength);
                }
                let Some(h) = rest.get(..PIECE_HEADER_LEN) else {
                    return Ok(None);
                };
                let req = BlockRequest {
                    piece: u32::from_be_bytes([h[5], h[6], h[7], h[8]]),
                    begin: u32::from_be_bytes([h[9], h[10], h[11], h[12]]),
                    len: len - 9,
                };
                *pos += PIECE_HEADER_LEN;
                self.streaming = Some((req, 0));
                continue;
            }
            return match decode(rest, MAX_MESSAGE_LEN) {
                Err(_) => Err(WireError::Framing),
                Ok(Decoded::Incomplete { .. }) => Ok(None),
                Ok(Decoded::Message { msg, consumed }) => {
                    *pos += consumed;
                    Ok(Some(WireEvent::Message(msg)))
                }
            };
        }
    }

    /// Queues a control message.
    pub fn queue(&mut self, m: &Message<'_>) {
        m.encode(&mut self.ctrl);
    }

    /// Queues raw control bytes (the handshake).
    pub fn queue_raw(&mut self, bytes: &[u8]) {
        self.ctrl.extend_from_slice(bytes);
    }

    /// Queues an upload of block `req` (the caller checked it is ours).
    pub fn queue_block(&mut self, req: BlockRequest) {
        self.queue.push_back(QueuedBlock {
            req,
            header: piece_header(req.piece, req.begin, req.len),
        });
    }

    /// Uploads queued and not started.
    pub fn queued_blocks(&self) -> usize {
        self.queue.len()
    }

    /// Drops a queued upload that has not started; whether it was queued.
    pub fn unqueue_block(&mut self, req: &BlockRequest) -> bool {
        match self.queue.iter().position(|q| q.req == *req) {
            Some(i) => {
                self.queue.remove(i);
                true
            }
            None => false,
        }
    }

    /// Drops every queued upload that has not started, appending them to `out`.
    pub fn drain_queued_blocks(&mut self, out: &mut Vec<BlockRequest>) {
        out.extend(self.queue.drain(..).map(|q| q.req));
    }

    /// Anything to send (whatever the budget).
    pub fn has_output(&self) -> bool {
        self.cur.is_some() || self.ctrl_pos < self.ctrl.len() || !self.queue.is_empty()
    }

    /// Control bytes not yet sent.
    pub fn ctrl_pending(&self) -> usize {
        self.ctrl.len() - self.ctrl_pos
    }

    /// Appends what to send next to `iov`: the rest of a started block,
    /// control bytes, then queued blocks while `budget` (payload bytes)
    /// covers each whole. Hand at most [`Fill::bytes`] to the kernel and
    /// report how many went with [`Self::consume`] before changing anything.
    pub fn fill_iov<'a>(
        &'a self,
        store: &'a ContentStore,
        mut budget: u64,
        iov: &mut Vec<IoSlice<'a>>,
    ) -> Fill {
        let mut fill = Fill::default();
        let mut push = |iov: &mut Vec<IoSlice<'a>>, s: &'a [u8]| {
            if !s.is_empty() {
                fill.bytes += s.len();
                iov.push(IoSlice::new(s));
            }
        };
        if let Some((q, sent)) = &self.cur {
            let Some(payload) = store.block(q.req.piece, q.req.begin, q.req.len) else {
                return fill;
            };
            if *sent < PIECE_HEADER_LEN {
                push(iov, &q.header[*sent..]);
                push(iov, payload);
            } else {
                push(iov, &payload[*sent - PIECE_HEADER_LEN..]);
            }
        }
        push(iov, &self.ctrl[self.ctrl_pos..]);
        if self.cur.is_some() {
            // Keep one partially sent block at a time: simpler accounting.
            return fill;
        }
        for q in &self.queue {
            if iov.len() + 2 > MAX_IOV {
                break;
            }
            if u64::from(q.req.len) > budget {
                fill.blocked = true;
                break;
            }
            let Some(payload) = store.block(q.req.piece, q.req.begin, q.req.len) else {
                break;
            };
            budget -= u64::from(q.req.len);
            push(iov, &q.header);
            push(iov, payload);
        }
        fill
    }

    /// `n` bytes of the last [`Self::fill_iov`] were handed to the kernel.
    pub fn consume(&mut self, mut n: usize) -> Sent {
        let mut sent = Sent::default();
        if let Some((q, done)) = &mut self.cur {
            let k = n.min(q.wire_len() - *done);
            sent.payload += overlap_payload(*done, k) as u64;
            *done += k;
            n -= k;
            if *done < q.wire_len() {
                return sent;
            }
            self.cur = None;
        }
        let k = n.min(self.ctrl.len() - self.ctrl_pos);
        self.ctrl_pos += k;
        n -= k;
        if self.ctrl_pos == self.ctrl.len() {
            self.ctrl.clear();
            self.ctrl_pos = 0;
        }
        while n > 0 {
            let Some(q) = self.queue.pop_front() else {
                break;
            };
            sent.started += u64::from(q.req.len);
            let k = n.min(q.wire_len());
            sent.payload += overlap_payload(0, k) as u64;
            n -= k;
            if k < q.wire_len() {
                self.cur = Some((q, k));
            }
        }
        sent
    }
}

/// Payload bytes among wire bytes `from..from + k` of a block message.
fn overlap_payload(from: usize, k: usize) -> usize {
    (from + k).saturating_sub(PIECE_HEADER_LEN.max(from))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringseed::wire::codec::{Handshake, ReservedFlags};

    fn store() -> ContentStore {
        let data: Vec<u8> = (0..64 * 1024u32).map(|i| (i % 251) as u8).collect();
        ContentStore::from_pieces(32 * 1024, data)
    }

    fn events(w: &mut PeerWire, data: &[u8]) -> (Vec<String>, usize) {
        let mut pos = 0;
        let mut out = vec![];
        while let Some(ev) = w.next_event(data, &mut pos).unwrap() {
            out.push(match ev {
                WireEvent::Handshake(_) => "hs".to_string(),
                WireEvent::Message(m) => format!("{m:?}"),
                WireEvent::BlockData { offset, bytes, .. } => {
                    format!("data {offset}+{}", bytes.len())
                }
                WireEvent::BlockDone(r) => format!("done {}", r.begin),
            });
        }
        (out, pos)
    }

    #[test]
    fn piece_payload_streams_through_at_every_split() {
        let mut stream = Handshake {
            reserved: ReservedFlags::default().to_bytes(),
            info_hash: [1; 20],
            peer_id: [2; 20],
        }
        .encode()
        .to_vec();
        Message::Unchoke.encode(&mut stream);
        stream.extend_from_slice(&piece_header(0, 16384, 100));
        stream.extend(std::iter::repeat_n(9u8, 100));
        Message::Have(3).encode(&mut stream);
        for split in 0..stream.len() {
            let mut w = PeerWire::new();
            let (mut a, used) = events(&mut w, &stream[..split]);
            let mut rest = stream[used..split].to_vec();
            assert!(rest.len() < 68, "kept at most a partial message");
            rest.extend_from_slice(&stream[split..]);
            let (b, used2) = events(&mut w, &rest);
            assert_eq!(used2, rest.len());
            a.extend(b);
            let payload: usize = a
                .iter()
                .filter_map(|e| e.strip_prefix("data "))
                .map(|e| e.split('+').nth(1).unwrap().parse::<usize>().unwrap())
                .sum();
            assert_eq!(payload, 100, "split {split}: {a:?}");
            assert_eq!(a.first().map(String::as_str), Some("hs"));
            assert!(a.contains(&"done 16384".to_string()));
            assert_eq!(a.last().map(String::as_str), Some("Have(3)"));
        }
    }

    #[test]
    fn oversized_piece_is_an_error() {
        let mut w = PeerWire::new();
        w.handshake_done = true;
        let mut pos = 0;
        let bad = [0, 1, 0, 0, MSG_ID_PIECE];
        assert_eq!(w.next_event(&bad, &mut pos), Err(WireError::BadPieceLength));
    }

    #[test]
    fn send_order_budget_and_partial_writes() {
        let s = store();
        let mut w = PeerWire::new();
        w.queue(&Message::Unchoke);
        let a = BlockRequest {
            piece: 0,
            begin: 0,
            len: 16384,
        };
        let b = BlockRequest {
            piece: 1,
            begin: 16384,
            len: 16384,
        };
        w.queue_block(a);
        w.queue_block(b);
        // Budget for one block only.
        let mut iov = vec![];
        let f = w.fill_iov(&s, 20_000, &mut iov);
        assert!(f.blocked);
        assert_eq!(f.bytes, 5 + 13 + 16384);
        let wire: Vec<u8> = iov.iter().flat_map(|x| x.iter().copied()).collect();
        assert_eq!(&wire[..5], &[0, 0, 0, 1, 1], "control first");
        assert_eq!(&wire[5..18], &piece_header(0, 0, 16384));
        assert_eq!(&wire[18..], s.block(0, 0, 16384).unwrap());
        drop(iov);
        // The kernel takes 5 + 13 + 100 bytes.
        let sent = w.consume(118);
        assert_eq!(
            sent,
            Sent {
                payload: 100,
                started: 16384
            }
        );
        // A control message queued now waits behind the started block.
        w.queue(&Message::Have(1));
        let mut iov = vec![];
        let f = w.fill_iov(&s, 0, &mut iov);
        assert_eq!(f.bytes, 16284 + 9);
        drop(iov);
        let sent = w.consume(16284 + 9);
        assert_eq!(
            sent,
            Sent {
                payload: 16284,
                started: 0
            }
        );
        assert!(w.has_output());
        let mut iov = vec![];
        let f = w.fill_iov(&s, u64::MAX, &mut iov);
        assert_eq!(f.bytes, 13 + 16384);
        drop(iov);
        assert_eq!(w.consume(13 + 16384).started, 16384);
        assert!(!w.has_output());
    }

    #[test]
    fn queued_blocks_can_be_cancelled() {
        let mut w = PeerWire::new();
        let a = BlockRequest {
            piece: 0,
            begin: 0,
            len: 10,
        };
        w.queue_block(a);
        w.queue_block(BlockRequest {
            piece: 0,
            begin: 10,
            len: 10,
        });
        assert!(w.unqueue_block(&a));
        assert!(!w.unqueue_block(&a));
        let mut out = vec![];
        w.drain_queued_blocks(&mut out);
        assert_eq!(out.len(), 1);
        assert!(!w.has_output());
    }
}
