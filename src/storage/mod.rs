//! A torrent's content on disk: piece space <-> file spans, opening and
//! mapping the files, v1/v2 hashing, parallel verification and resume
//! records.
//!
//! What lives here:
//! - [`layout`]: allocation-free mapping of a piece-space range to file
//!   segments and zero (pad) segments, plus the block bounds check the server
//!   calls for every request.
//! - [`files`]: resolve a data path, check sizes, open read-only and mmap.
//! - [`hash`]: multi-threaded hashing of a torrent's content (used by
//!   `ringseed create` and by [`verify`]).
//! - [`verify`]: check every piece against v1 and v2 hashes.
//! - [`resume`]: "data unchanged since the last full verification" records.
//! - [`progress`]: a progress bar on a terminal, plain lines otherwise.
//! - [`availability`]: the pieces that may be served right now (lock-free).
//! - [`watch`]: inotify on the served files; withdraw, re-verify, restore.
//! - [`lease`]: read leases, so writers to a served file wait until its
//!   pieces are withdrawn; [`fence`]: knowing when in-flight sends are done.
//! - [`writer`]: fetching: check a downloaded piece and write it on an I/O
//!   thread, keeping the resume record up to date.
//!
//! What does not live here: parsing `.torrent` files and the BEP 52 merkle
//! math (see `metainfo`) and
//! anything that talks to the network. Nothing in this module panics on file
//! contents or sizes found on disk.

pub mod availability;
mod error;
pub mod fence;
pub mod files;
pub mod hash;
pub mod layout;
pub mod lease;
pub mod progress;
mod reader;
pub mod resume;
pub mod verify;
pub mod watch;
pub mod writer;

pub use error::StorageError;
pub use files::{resolve_data_root, Content, ContentFile, FileStamp, FileStatus};
pub use hash::{hash_files, ContentHashes, FileHashes};
pub use layout::{BlockError, LayoutError, PieceLayout, Segment, Segments, BLOCK_SIZE};
pub use verify::{verify, verify_content, BadPiece, FileProblem, VerifyReport};
