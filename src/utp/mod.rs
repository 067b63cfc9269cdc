//! Sans-IO uTP (BEP 29, the uTorrent transport protocol):
//!
//! - [`packet`]: the header, the extension chain (selective ACK), 16-bit
//!   wrapping sequence arithmetic;
//! - [`conn`]: one connection's state machine (SYN, STATE, DATA, FIN,
//!   RESET; connection ids; re-sends with back-off; keep-alive, idle and
//!   zero-window timeouts; bounded buffers), with [`recv`] (reorder buffer,
//!   selective ACKs, receive window) and [`congestion`] (LEDBAT with a
//!   100 ms target and a floor option for seed boxes; RTT/RTO);
//! - [`sendbuf`]: the send buffer as a queue of [`bytes::Bytes`] chunks
//!   (copied protocol bytes, or blocks of a file's mmap taken as they are);
//! - [`endpoint`]: the connections behind one UDP socket, with half-open
//!   connections capped and expiring;
//! - [`refuse`]: answering a SYN we will not serve with a rate-limited
//!   reset (what the shards do today with `--utp refuse`).
//!
//! Nothing here does I/O, reads a clock (`now` is passed in) or uses
//! `unsafe`; it is driven by tests on a virtual network
//! (`tests/utp_props.rs`), fuzzers, and the shards' UDP sockets
//! (`engine::shard::udp`).
//!
//! Why our own: the crates evaluated (December 2026) are all bound to a
//! runtime or to C. `librqbit-utp` (rqbit's, smoltcp-derived) runs its
//! sockets as tokio tasks with tokio timers and channels; `utp-rs`
//! (ethereum/trin), `tokio-utp`, `async-utp` and `async-std-utp` are async
//! sockets as well (the last three unmaintained for years); `libutp-rs` and
//! `libutp-rs2` wrap the C libutp with callbacks and its own clock. None
//! takes `now` and packets in and gives packets out, which a thread-per-core
//! io_uring shard needs (no runtime, no threads, the clock and the socket
//! are the shard's), and none exposes the send side as offsets into a
//! buffer the engine could back with the file's mmap. BEP 29 is small
//! enough that a sans-IO implementation with its own property tests and
//! fuzz targets is less risk than adapting an async one.
//!
//! Not here: path-MTU probing (payloads are a fixed, conservative 1,400
//! bytes), pacing (the window is sent as fast as acks allow), and the
//! close-reason extension (skipped like any unknown extension).
#![forbid(unsafe_code)]

pub mod config;
pub mod congestion;
pub mod conn;
pub mod endpoint;
pub mod packet;
pub mod recv;
pub mod refuse;
pub mod sendbuf;

pub use congestion::LedbatConfig;
pub use conn::{CloseReason, Config, Connection, State};
pub use endpoint::{ConnKey, Endpoint, EndpointConfig, EndpointDrop};
pub use packet::{decode, encode, Header, Packet, PacketError, PacketType, SelectiveAck};
pub use refuse::{DropReason, RefuseConfig, Refuser};

/// What the shards do with uTP (`--utp`, config key `utp`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum UtpMode {
    /// `serve` (default): accept uTP connections on UDP at the TCP port and
    /// serve them like TCP peers (SYNs over the connection caps get a reset).
    #[default]
    Serve,
    /// `refuse`: listen on UDP at the TCP port and answer every uTP `SYN`
    /// with an `ST_RESET`, so clients that try uTP first (every
    /// libtorrent-based one) fall back to TCP at once instead of after a
    /// 3-4 s connect timeout.
    Refuse,
    /// `off`: do not listen on UDP (clients time out on uTP, then use TCP).
    Off,
}

impl UtpMode {
    /// The command-line spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            UtpMode::Serve => "serve",
            UtpMode::Refuse => "refuse",
            UtpMode::Off => "off",
        }
    }

    /// Whether the shards bind a UDP socket.
    pub const fn listens(self) -> bool {
        !matches!(self, UtpMode::Off)
    }
}

impl std::fmt::Display for UtpMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for UtpMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [UtpMode::Serve, UtpMode::Refuse, UtpMode::Off]
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| format!("unknown uTP mode {s:?}: use serve, refuse or off"))
    }
}
