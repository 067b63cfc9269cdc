//! The sans-IO part of the engine: what a shard knows of its connections
//! and decides for them, with no ring, socket or clock of its own (time
//! comes in as `now`). `engine::shard` is the driver around it: it turns
//! decisions into io_uring operations and completions into calls here, and
//! it alone touches memory the kernel may own.
//!
//! - [`accept`]: a new connection let in within the shard's and the box's
//!   limits.
//! - [`table`]: the connection table, connections named by typed
//!   [`ConnId`]s (slot + generation) that go stale when the slot is reused.
//! - [`conn`]: one connection as the shard holds it.
//! - [`pipeline`]: one connection's block pipeline (queued -> parked ->
//!   read from disk if not resident -> ready -> into a send), the one
//!   place that decides what its next send carries.
//! - [`send`]: what one send carries ([`Conn::fill_send`], the core's
//!   `poll_transmit`): the MSE reply and control bytes, then blocks as
//!   the pipeline decides, through a [`send::SendSink`] the driver
//!   implements over its send slot and read pool.
//! - [`egress`]: the upload cap's credit per connection and the shard's
//!   limiters on the box-wide and per-torrent token pools.
//! - [`sendwatch`]: the send-progress timeout (a peer that stops reading
//!   is closed).
//! - [`timers`]: the connections' own timers (send-progress, handshake,
//!   idle), one pass per tick.
//! - [`policy`]: the choker, the super-seed selectors and the upload cap
//!   wired to the connections, behind `handle_*(now, ..)` calls and
//!   [`Policies::poll_timeout`]; [`superseed`] is its super-seed part.
//!
//! The policies themselves live in `swarm` (choker, super-seed selector,
//! token pools), the peer protocol in `wire::PeerState`, the uTP transport
//! in `utp`: all sans-IO, all tested on virtual clocks.
//!
//! Not here yet (the shard still does it, in `engine::shard`): *when* to
//! submit (the dirty list decides which connections get a send built this
//! loop turn; receives are multishot and re-armed by the shard), and the
//! completion bookkeeping of a send (partial sends, SEND_ZC
//! notifications), which is about kernel-owned memory.

pub mod accept;
pub mod conn;
pub mod egress;
pub mod pipeline;
pub mod policy;
pub mod send;
pub mod sendwatch;
pub mod superseed;
pub mod table;
pub mod timers;

pub use conn::{Carrier, Conn, Drain, DrainStep, FIN_WAIT};
pub use pipeline::{BlockPipeline, ReadyBlock};
pub use policy::{Conns, Policies, PolicyConfig};
pub use send::{Filled, ReadStart, SendSink};
pub use table::{ConnId, ConnTable};
