//! `.torrent` metainfo: v1 (BEP 3), v2 (BEP 52) and hybrid (BEP 47 pad files).
//!
//! Parsing keeps the raw bytes of the `info` dictionary so info-hashes are
//! computed over exactly what was received, never over a re-encoding.
//! Everything handed out of this module is a validated [`Torrent`]: paths are
//! safe to join under a directory (no `..`, `.`, absolute paths, separators
//! or NUL inside components), no path appears twice or is both a file and a
//! directory, piece counts match sizes, v2 piece layers hash up to their
//! `pieces root`, and a hybrid torrent's v1 and v2 halves describe the same
//! files at the same offsets. It does not read file contents: hashing data
//! is `storage`'s job, and making a torrent from files is [`crate::create`]'s. [`merkle`] holds the BEP 52 merkle math (leaf
//! hashing, roots, piece layers) that parsing, the wire's hash messages and
//! storage's hashing share.

mod error;
mod fields;
mod files;
pub mod magnet;
pub mod merkle;
mod parse;
mod types;

pub use error::MetainfoError;
pub use files::component_problem;
pub use magnet::{Magnet, MagnetError};
pub use parse::{MAX_PIECES, MAX_PIECE_LENGTH};
pub use types::*;
