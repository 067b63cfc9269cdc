//! The release ledger: a tamper-evident, signed, append-only history of
//! releases that every box holds and gossips (issue 15).
//!
//! - [`merkle`]: RFC 9162 tree hash, inclusion and consistency proofs.
//! - [`note`]: C2SP signed notes, Ed25519 signatures and cosignatures, vkeys.
//! - [`block`]: canonical release bytes, checkpoints, blocks.
//! - [`state`]: the [`Ledger`] a box holds: accept / refuse / detect forks.
//! - [`bundle`]: offline proof bundles (tlog-proof) and k-of-n policies.
//! - [`gossip`]: the sans-IO gossip state machine and its simulation.
//! - [`store`]: the ledger directory on disk (atomic appends).
//! - [`node`]: the ledger in `serve`: HTTP routes and the gossip thread.
//!
//! Everything but `store` and `node` is sans-IO: no sockets, no files, no clock (`now`
//! is passed in as seconds since the epoch).
#![forbid(unsafe_code)]

pub mod block;
pub mod bundle;
pub mod gossip;
pub mod merkle;
pub mod node;
pub mod note;
pub mod state;
pub mod store;

pub use block::{Block, Checkpoint, Release};
pub use bundle::{Policy, ProofBundle};
pub use note::{Note, Signer, Verifier};
pub use state::{Equivocation, Ledger, Outcome, Reject, RejectReason};
