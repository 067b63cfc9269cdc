//! `.torrent` metainfo: v1 (BEP 3), v2 (BEP 52) and hybrid (BEP 47 pad files).
//!
//! Parsing keeps the raw bytes of the `info` dictionary so info-hashes are
//! computed over exactly what was received, never over a re-encoding.
//! Everything handed out of this module is a validated [`Torrent`].

mod types;

pub use types::*;
