//! A connection's settings, states, close reasons and counters (see
//! [`super::conn`]).

use std::time::Duration;

use super::congestion::LedbatConfig;
use super::packet::HEADER_LEN;

/// Per-connection settings.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Payload bytes per DATA packet. Default 1,400 (a 1,420-byte uTP
    /// packet fits a 1,500-byte Ethernet MTU with IPv6 and UDP headers; no
    /// path-MTU probing).
    pub max_payload: usize,
    /// Receive window advertised and buffered at most, bytes. Default 1 MiB.
    pub recv_window: u32,
    /// Bytes the application may have written and not yet had
    /// acknowledged. Default 1 MiB.
    pub send_buffer: usize,
    pub ledbat: LedbatConfig,
    /// Retransmission timeout before the first RTT sample. Default 1 s.
    pub initial_rto: Duration,
    /// Floor of the timeout. Default 500 ms (BEP 29).
    pub min_rto: Duration,
    /// Ceiling of the backed-off timeout. Default 30 s.
    pub max_rto: Duration,
    /// Consecutive timeouts without progress before giving up (a SYN
    /// nobody answers, a peer gone, a zero window forever). Default 6:
    /// about 1 min with the back-off.
    pub max_timeouts: u32,
    /// Send an ACK after this much silence on our side. Default 29 s.
    pub keepalive: Duration,
    /// Close after hearing nothing for this long. Default 90 s.
    pub idle_timeout: Duration,
    /// Packets in flight at most (whatever the windows say). Default 512.
    pub max_in_flight_packets: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_payload: 1400,
            recv_window: 1 << 20,
            send_buffer: 1 << 20,
            ledbat: LedbatConfig::default(),
            initial_rto: Duration::from_secs(1),
            min_rto: Duration::from_millis(500),
            max_rto: Duration::from_secs(30),
            max_timeouts: 6,
            keepalive: Duration::from_secs(29),
            idle_timeout: Duration::from_secs(90),
            max_in_flight_packets: 512,
        }
    }
}

impl Config {
    /// Bytes [`Connection::poll_transmit`] may need: header, the largest
    /// selective ACK and a full payload.
    pub fn max_packet(&self) -> usize {
        self.max_header() + self.max_payload
    }

    /// Bytes a header may need: the fixed header and the largest selective
    /// ACK ([`Connection::poll_transmit_parts`]).
    pub fn max_header(&self) -> usize {
        HEADER_LEN + 2 + 32
    }
}

/// Where the connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// We sent a SYN and wait for the STATE answering it.
    SynSent,
    /// Data may flow (the acceptor is here from the SYN on).
    Connected,
    /// Closed; see [`Connection::close_reason`].
    Closed,
}

/// Why a connection closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// Both FINs sent and acknowledged.
    Done,
    /// The peer sent a RESET.
    Reset,
    /// Too many timeouts, or nothing heard for the idle timeout.
    Timeout,
    /// The SYN was never answered.
    ConnectTimeout,
    /// The peer's window stayed zero through every timeout.
    ZeroWindow,
    /// Closed locally without a FIN ([`Connection::abort`]).
    Aborted,
}

/// Why an incoming packet was dropped or ignored (counted per reason).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ignored {
    /// Not this connection's id.
    WrongConnId,
    /// Acknowledges a sequence number we never sent.
    AckUnsent,
    /// A SYN on an established connection (not a re-send of its SYN).
    UnexpectedSyn,
    /// A DATA packet without payload.
    EmptyData,
    /// Already received (re-sent or duplicated on the way).
    Duplicate,
    /// Beyond the reorder buffer.
    OutOfWindow,
    /// The receive window is full (the application is not reading).
    NoRoom,
    /// Data at or past the peer's FIN, or a contradicting FIN.
    AfterFin,
    /// Anything arriving after the connection closed.
    Closed,
}

impl Ignored {
    pub const ALL: [Ignored; 9] = [
        Ignored::WrongConnId,
        Ignored::AckUnsent,
        Ignored::UnexpectedSyn,
        Ignored::EmptyData,
        Ignored::Duplicate,
        Ignored::OutOfWindow,
        Ignored::NoRoom,
        Ignored::AfterFin,
        Ignored::Closed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Ignored::WrongConnId => "wrong_conn_id",
            Ignored::AckUnsent => "ack_unsent",
            Ignored::UnexpectedSyn => "unexpected_syn",
            Ignored::EmptyData => "empty_data",
            Ignored::Duplicate => "duplicate",
            Ignored::OutOfWindow => "out_of_window",
            Ignored::NoRoom => "no_room",
            Ignored::AfterFin => "after_fin",
            Ignored::Closed => "closed",
        }
    }

    pub(super) fn index(self) -> usize {
        Ignored::ALL.iter().position(|d| *d == self).unwrap_or(0)
    }
}

/// What a connection counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub packets_in: u64,
    pub packets_out: u64,
    pub retransmits: u64,
    pub fast_retransmits: u64,
    pub timeouts: u64,
    pub dropped: [u64; 9],
}

impl Counters {
    pub fn dropped(&self, d: Ignored) -> u64 {
        self.dropped[d.index()]
    }
}
