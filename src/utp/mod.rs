//! Sans-IO uTP (BEP 29, the uTorrent transport protocol): the packet codec
//! ([`packet`]) and the polite refusal of connections we do not serve
//! ([`refuse`]).
//!
//! Nothing here does I/O, reads a clock (`now` is passed in) or uses
//! `unsafe`; the shards' UDP sockets (`engine::shard::udp`) feed it.
#![forbid(unsafe_code)]

pub mod packet;
pub mod refuse;

pub use packet::{decode, encode, Header, Packet, PacketError, PacketType, SelectiveAck};
pub use refuse::{DropReason, RefuseConfig, Refuser};

/// What the shards do with uTP (`--utp`, config key `utp`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum UtpMode {
    /// `refuse` (default): listen on UDP at the TCP port and answer every
    /// uTP `SYN` with an `ST_RESET`, so clients that try uTP first (every
    /// libtorrent-based one) fall back to TCP at once instead of after a
    /// 3-4 s connect timeout.
    #[default]
    Refuse,
    /// `off`: do not listen on UDP (clients time out on uTP, then use TCP).
    Off,
}

impl UtpMode {
    /// The command-line spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
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
        [UtpMode::Refuse, UtpMode::Off]
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                if s == "serve" {
                    "--utp serve is not built yet: use refuse (clients fall back to TCP at once) or off".to_owned()
                } else {
                    format!("unknown uTP mode {s:?}: use refuse or off")
                }
            })
    }
}
