//! One outgoing fetch connection: its socket, framing and control output.
//! The download decisions are the fetch loop's ([`super::Run`]).

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::swarm::download::peer::PeerDownload;
use crate::wire::codec::{self, Decoded, Handshake, HandshakeDecoded, Message, ReservedFlags};
use crate::wire::ext::{encode_ext_handshake, OurExtHandshake};
use crate::wire::Bitfield;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PeerPhase {
    /// `connect` in progress.
    Connecting,
    /// Our handshake sent, waiting for the peer's.
    Handshake,
    /// Handshakes done: peer-protocol messages.
    Active,
}

/// What the framing found at the front of the input.
pub(super) enum Input<'a> {
    Handshake(Handshake),
    Message(Message<'a>),
}

pub(super) struct FetchPeer {
    pub addr: SocketAddr,
    pub sock: TcpStream,
    pub phase: PeerPhase,
    /// When the current phase started.
    pub since: Instant,
    /// Bytes of an incomplete message (at most one message long).
    pub rx: Vec<u8>,
    /// Control output not taken by the kernel yet, from `tx_pos`.
    pub tx: Vec<u8>,
    pub tx_pos: usize,
    pub last_rx: Instant,
    pub last_tx: Instant,
    /// It speaks the fast extension.
    pub fast: bool,
    /// Set by [`Self::handshaken`].
    pub dl: Option<PeerDownload>,
    /// Payload bytes it sent us.
    pub dl_bytes: u64,
}

impl FetchPeer {
    /// Starts a nonblocking connect.
    pub fn connect(addr: SocketAddr, now: Instant) -> io::Result<FetchPeer> {
        let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        sock.set_nonblocking(true)?;
        sock.set_tcp_nodelay(true)?;
        match sock.connect(&SockAddr::from(addr)) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        Ok(FetchPeer {
            addr,
            sock: sock.into(),
            phase: PeerPhase::Connecting,
            since: now,
            rx: Vec::new(),
            tx: Vec::new(),
            tx_pos: 0,
            last_rx: now,
            last_tx: now,
            fast: false,
            dl: None,
            dl_bytes: 0,
        })
    }

    /// The TCP connection is up: our handshake goes out.
    pub fn connected(&mut self, now: Instant, info_hash: &[u8; 20], peer_id: &[u8; 20]) {
        self.phase = PeerPhase::Handshake;
        self.since = now;
        self.last_rx = now;
        let h = Handshake {
            reserved: ReservedFlags {
                fast: true,
                extension: true,
                ..ReservedFlags::default()
            }
            .to_bytes(),
            info_hash: *info_hash,
            peer_id: *peer_id,
        };
        self.tx.extend_from_slice(&h.encode());
    }

    /// Its handshake arrived: tell it what we have.
    pub fn handshaken(
        &mut self,
        now: Instant,
        h: Handshake,
        have: &Bitfield,
        max_requests: usize,
        listen_port: u16,
        ledger: Option<&crate::wire::ext::LedgerBeacon>,
    ) {
        self.phase = PeerPhase::Active;
        self.since = now;
        self.fast = h.supports_fast();
        if h.supports_extensions() {
            encode_ext_handshake(
                &mut self.tx,
                &OurExtHandshake {
                    client_version: concat!("ringseed/", env!("CARGO_PKG_VERSION")),
                    reqq: 16,
                    // So the peer's box can dial our shards back.
                    listen_port: (listen_port != 0).then_some(listen_port),
                    yourip: Some(self.addr.ip()),
                    metadata_size: None,
                    ledger: ledger.map(|b| b.advert()),
                },
            );
        }
        if have.count() > 0 {
            self.queue(&Message::Bitfield(have.as_bytes()));
        } else if self.fast {
            self.queue(&Message::HaveNone);
        }
        self.dl = Some(PeerDownload::new(now, have.len(), max_requests, self.fast));
    }

    pub fn queue(&mut self, m: &Message<'_>) {
        m.encode(&mut self.tx);
    }

    pub fn wants_write(&self) -> bool {
        self.phase == PeerPhase::Connecting || self.tx_pos < self.tx.len()
    }
}

/// The next handshake or message at the front of `buf`, with the bytes it
/// took; `None`: more bytes are needed.
pub(super) fn next_input(
    buf: &[u8],
    phase: PeerPhase,
    max_message: u32,
) -> Result<Option<(Input<'_>, usize)>, String> {
    match phase {
        PeerPhase::Connecting => Ok(None),
        PeerPhase::Handshake => match Handshake::decode(buf) {
            Ok(HandshakeDecoded::Complete(h)) => {
                Ok(Some((Input::Handshake(h), codec::HANDSHAKE_LEN)))
            }
            Ok(HandshakeDecoded::Incomplete { .. }) => Ok(None),
            Err(e) => Err(format!("bad handshake: {e}")),
        },
        PeerPhase::Active => match codec::decode(buf, max_message) {
            Ok(Decoded::Message { msg, consumed }) => Ok(Some((Input::Message(msg), consumed))),
            Ok(Decoded::Incomplete { .. }) => Ok(None),
            Err(e) => Err(format!("bad message: {e}")),
        },
    }
}
