//! The validated torrent: the one type the rest of ringseed works with.
//!
//! The **piece space** is the byte sequence that piece indices and block
//! offsets on the wire refer to. For v1 it is the files concatenated in the
//! `files` order. For hybrid torrents it is the v1 concatenation including
//! BEP 47 pad files (pad bytes are zeros). For v2-only torrents every file
//! starts on a piece boundary (implicit zero padding between files), files in
//! `file tree` order. In all three cases [`FileEntry::offset`] is where the
//! file's first byte sits in the piece space, and any byte of the piece space
//! not covered by a real file is a zero pad byte.

use std::fmt;

/// SHA-1 of the bencoded `info` dictionary (v1 and hybrid torrents).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InfoHashV1(pub [u8; 20]);

/// SHA-256 of the bencoded `info` dictionary (v2 and hybrid torrents).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InfoHashV2(pub [u8; 32]);

impl InfoHashV2 {
    /// The first 20 bytes: what v2 peers put in the BEP 3 handshake and what
    /// trackers see.
    pub fn truncated(&self) -> [u8; 20] {
        let mut out = [0u8; 20];
        out.copy_from_slice(&self.0[..20]);
        out
    }
}

fn hex(bytes: &[u8], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    for b in bytes {
        write!(f, "{b:02x}")?;
    }
    Ok(())
}

impl fmt::Display for InfoHashV1 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        hex(&self.0, f)
    }
}
impl fmt::Debug for InfoHashV1 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InfoHashV1(")?;
        hex(&self.0, f)?;
        f.write_str(")")
    }
}
impl fmt::Display for InfoHashV2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        hex(&self.0, f)
    }
}
impl fmt::Debug for InfoHashV2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InfoHashV2(")?;
        hex(&self.0, f)?;
        f.write_str(")")
    }
}

/// Which hash schemes a torrent carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MetaVersion {
    V1,
    V2,
    Hybrid,
}

/// One real (non-pad) file of a torrent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    /// Validated path components relative to the torrent's root directory.
    /// For a single-file torrent this is `[name]`. No component is empty,
    /// `.` or `..`, or contains a path separator or NUL.
    pub path: Vec<String>,
    /// Length in bytes.
    pub length: u64,
    /// Offset of the first byte of this file in the piece space.
    pub offset: u64,
    /// v2 merkle root of the file (`pieces root`), absent for v1 torrents and
    /// for empty files.
    pub pieces_root: Option<[u8; 32]>,
    /// BEP 47 `attr` contains `x`.
    pub executable: bool,
    /// BEP 47 `attr` contains `h`.
    pub hidden: bool,
}

impl FileEntry {
    /// The path relative to the torrent root, joined with `/`.
    pub fn display_path(&self) -> String {
        self.path.join("/")
    }
}

/// A parsed and validated `.torrent` (or an info dictionary obtained from a
/// magnet link).
#[derive(Clone, Debug)]
pub struct Torrent {
    /// The exact bytes of the `info` dictionary as received or created.
    pub info_bytes: Vec<u8>,
    pub info_hash_v1: Option<InfoHashV1>,
    pub info_hash_v2: Option<InfoHashV2>,
    pub version: MetaVersion,
    /// `info.name`, validated like a path component. For a v2-only torrent
    /// whose `file tree` holds a single top-level file this is that file's
    /// name (BEP 52 cannot tell it from a one-file directory; libtorrent
    /// does the same).
    pub name: String,
    /// Bytes per piece. v2/hybrid: a power of two >= 16 KiB. v1: any value
    /// in 1..=`MAX_PIECE_LENGTH` (libtorrent is equally tolerant of other
    /// clients' torrents); `create` always makes powers of two.
    pub piece_length: u64,
    /// Number of pieces in the piece space.
    pub num_pieces: u32,
    /// Length of the piece space (the last piece may be shorter than
    /// `piece_length`).
    pub piece_space_len: u64,
    /// Sum of the lengths of the real files.
    pub total_size: u64,
    /// True when the torrent has a `files` list / a directory `file tree`
    /// (content lives under a directory called `name`), false for a single
    /// file.
    pub multi_file: bool,
    /// Real files, pad files removed, ordered by `offset`.
    pub files: Vec<FileEntry>,
    /// v1 piece hashes (`info.pieces`), one per piece.
    pub v1_pieces: Option<Vec<[u8; 20]>>,
    /// v2 piece layers, indexed like `files`: for a file larger than one
    /// piece, the SHA-256 hashes of its pieces (merkle layer at piece
    /// granularity); empty for files of at most one piece (their root is
    /// the piece hash) and for empty files. `None` when the torrent has no
    /// v2 part or when the piece layers are not known (magnet link).
    pub v2_piece_layers: Option<Vec<Vec<[u8; 32]>>>,
    /// BEP 12 tiers (`announce-list`, or `[[announce]]`).
    pub trackers: Vec<Vec<String>>,
    /// BEP 19 `url-list`.
    pub web_seeds: Vec<String>,
    pub comment: Option<String>,
    pub created_by: Option<String>,
    pub creation_date: Option<i64>,
    /// `info.private == 1`.
    pub private: bool,
}

impl Torrent {
    /// Length of piece `index` in the piece space (the last one may be short).
    pub fn piece_len(&self, index: u32) -> u64 {
        let start = u64::from(index) * self.piece_length;
        self.piece_space_len
            .saturating_sub(start)
            .min(self.piece_length)
    }
}
