//! The only place in ringseed with `unsafe`: io_uring setup, the provided
//! buffer ring, and the in-flight send slots whose addresses the kernel holds.
//!
//! Rules kept here (see STYLE.md §3):
//! - anything whose address is in a submitted SQE (iovecs, msghdr, piece
//!   headers, control bytes, read buffers) lives in a boxed slot that does not
//!   move and is not reused until the operation's **last** CQE (for SEND_ZC:
//!   the notification CQE);
//! - provided buffers are handed back to the ring on every path;
//! - each operation kind has its own small constructor below, so the SQE
//!   building code is in one place.

pub mod bufring;
pub mod readpool;
pub mod ring;
pub mod send;
pub mod sys;
pub mod udp;
pub mod user_data;

pub use bufring::ProvidedBufRing;
pub use readpool::{ReadPool, READ_BUF_SIZE};
pub use ring::{probe_kernel, Ring, RingConfig};
pub use send::{SendSlot, SendTable, SentBlock, MAX_BLOCKS_PER_SEND};
pub use udp::{Datagram, UdpInput};
pub use user_data::{OpKind, UserData};
