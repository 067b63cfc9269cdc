//! Releases, checkpoints and blocks: their canonical bytes and parsers.
//!
//! A **release** leaf is `"ringseed/release/v1\n"` followed by big-endian
//! fields: name (u16 length + UTF-8), version label (u16 length + UTF-8),
//! a flags byte (bit 0: v2 info-hash present, bit 1: v1 present), the
//! 32-byte v2 and/or 20-byte v1 info-hash, total size (u64), publish time
//! (u64 seconds since the epoch). The domain prefix keeps a release from
//! ever being read as any other signed object.
//!
//! A **block**'s signed part is a C2SP tlog-checkpoint whose first
//! extension line is `ringseed-block <height> <hex previous block hash>
//! <timestamp>`; block 1's previous hash is all zeros. The block hash is
//! `SHA-256("ringseed/block/v1\n" || checkpoint text)`: the text commits to
//! the root, which commits to every release so far. On disk and on the wire
//! a block is
//!
//! ```text
//! ringseed-block/v1
//! release <base64 release bytes>      (one line per release it adds)
//!
//! <the signed checkpoint note, verbatim>
//! ```

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use sha2::{Digest, Sha256};

use super::merkle::Hash;
use super::note::{hex_decode, hex_encode, Note, NoteError};

const RELEASE_DOMAIN: &[u8] = b"ringseed/release/v1\n";
const BLOCK_DOMAIN: &[u8] = b"ringseed/block/v1\n";
const BLOCK_MAGIC: &str = "ringseed-block/v1\n";
/// The most releases one block may add.
pub const MAX_RELEASES_PER_BLOCK: usize = 1024;
/// The largest encoded block accepted, in bytes.
pub const MAX_BLOCK_BYTES: usize = 512 * 1024;
/// The longest release name or version label, in bytes.
pub const MAX_LABEL: usize = 1024;

/// Why release, checkpoint or block bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("release bytes are malformed: {0}")]
    Release(&'static str),
    #[error("checkpoint is malformed: {0}")]
    Checkpoint(&'static str),
    #[error("block is malformed: {0}")]
    Block(&'static str),
    #[error("block is larger than {MAX_BLOCK_BYTES} bytes or adds more than {MAX_RELEASES_PER_BLOCK} releases")]
    TooLarge,
    #[error(transparent)]
    Note(#[from] NoteError),
}

/// One published release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub name: String,
    pub version: String,
    pub info_hash_v2: Option<[u8; 32]>,
    pub info_hash_v1: Option<[u8; 20]>,
    pub total_size: u64,
    pub publish_time: u64,
}

impl Release {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = RELEASE_DOMAIN.to_vec();
        for s in [&self.name, &self.version] {
            let b = s.as_bytes();
            out.extend_from_slice(&(b.len().min(MAX_LABEL) as u16).to_be_bytes());
            out.extend_from_slice(&b[..b.len().min(MAX_LABEL)]);
        }
        let flags =
            u8::from(self.info_hash_v2.is_some()) | (u8::from(self.info_hash_v1.is_some()) << 1);
        out.push(flags);
        if let Some(h) = &self.info_hash_v2 {
            out.extend_from_slice(h);
        }
        if let Some(h) = &self.info_hash_v1 {
            out.extend_from_slice(h);
        }
        out.extend_from_slice(&self.total_size.to_be_bytes());
        out.extend_from_slice(&self.publish_time.to_be_bytes());
        out
    }

    /// Parse canonical bytes; anything else (trailing bytes, unknown flags,
    /// no info-hash) is refused, so `decode(b).encode() == b`.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let body = bytes
            .strip_prefix(RELEASE_DOMAIN)
            .ok_or(FormatError::Release("missing domain prefix"))?;
        let mut r = Reader(body);
        let mut strings = Vec::with_capacity(2);
        for _ in 0..2 {
            let len = u16::from_be_bytes(r.array()?) as usize;
            if len > MAX_LABEL {
                return Err(FormatError::Release("label too long"));
            }
            let s = std::str::from_utf8(r.take(len)?)
                .map_err(|_| FormatError::Release("label is not UTF-8"))?;
            strings.push(s.to_owned());
        }
        let [flags] = r.array()?;
        if flags == 0 || flags > 3 {
            return Err(FormatError::Release(
                "flags must name a v2 and/or a v1 info-hash",
            ));
        }
        let info_hash_v2 = if flags & 1 != 0 {
            Some(r.array()?)
        } else {
            None
        };
        let info_hash_v1 = if flags & 2 != 0 {
            Some(r.array()?)
        } else {
            None
        };
        let total_size = u64::from_be_bytes(r.array()?);
        let publish_time = u64::from_be_bytes(r.array()?);
        if !r.0.is_empty() {
            return Err(FormatError::Release("trailing bytes"));
        }
        let version = strings.pop().unwrap_or_default();
        let name = strings.pop().unwrap_or_default();
        Ok(Self {
            name,
            version,
            info_hash_v2,
            info_hash_v1,
            total_size,
            publish_time,
        })
    }

    pub fn leaf_hash(&self) -> Hash {
        super::merkle::leaf_hash(&self.encode())
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        if self.0.len() < n {
            return Err(FormatError::Release("truncated"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], FormatError> {
        self.take(N)?
            .try_into()
            .map_err(|_| FormatError::Release("truncated"))
    }
}

/// The first three lines of a tlog-checkpoint and its extension lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    pub extensions: Vec<String>,
}

impl Checkpoint {
    pub fn text(&self) -> String {
        let mut t = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        );
        for e in &self.extensions {
            t.push_str(e);
            t.push('\n');
        }
        t
    }

    pub fn parse(text: &str) -> Result<Self, FormatError> {
        let body = text
            .strip_suffix('\n')
            .ok_or(FormatError::Checkpoint("text must end in a newline"))?;
        let mut lines = body.split('\n');
        let origin = lines.next().filter(|l| !l.is_empty());
        let origin = origin.ok_or(FormatError::Checkpoint("empty origin"))?;
        let size = lines
            .next()
            .ok_or(FormatError::Checkpoint("no size line"))?;
        if size.is_empty()
            || (size.len() > 1 && size.starts_with('0'))
            || !size.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(FormatError::Checkpoint(
                "size is not a decimal without leading zeroes",
            ));
        }
        let size: u64 = size
            .parse()
            .map_err(|_| FormatError::Checkpoint("size out of range"))?;
        let root = lines
            .next()
            .ok_or(FormatError::Checkpoint("no root line"))?;
        let root = B64
            .decode(root)
            .map_err(|_| FormatError::Checkpoint("root is not base64"))?;
        let root: Hash = root
            .try_into()
            .map_err(|_| FormatError::Checkpoint("root is not 32 bytes"))?;
        let extensions: Vec<String> = lines.map(str::to_owned).collect();
        if extensions.iter().any(String::is_empty) {
            return Err(FormatError::Checkpoint("empty extension line"));
        }
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
            extensions,
        })
    }
}

/// The block facts carried in the checkpoint's first extension line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockHeader {
    pub height: u64,
    pub prev: Hash,
    pub timestamp: u64,
}

impl BlockHeader {
    pub fn line(&self) -> String {
        format!(
            "ringseed-block {} {} {}",
            self.height,
            hex_encode(&self.prev),
            self.timestamp
        )
    }

    pub fn parse(line: &str) -> Result<Self, FormatError> {
        let bad = FormatError::Block("bad ringseed-block line");
        let mut it = line.split(' ');
        if it.next() != Some("ringseed-block") {
            return Err(bad);
        }
        let height = it.next().and_then(|h| h.parse().ok()).ok_or(bad.clone())?;
        let prev = it.next().and_then(hex_decode).ok_or(bad.clone())?;
        let prev: Hash = prev.try_into().map_err(|_| bad.clone())?;
        let timestamp = it.next().and_then(|t| t.parse().ok()).ok_or(bad.clone())?;
        if it.next().is_some() || height == 0 {
            return Err(bad);
        }
        Ok(Self {
            height,
            prev,
            timestamp,
        })
    }
}

/// A block as parsed (signatures not yet checked: see `Ledger`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub releases: Vec<Release>,
    pub note: Note,
    pub checkpoint: Checkpoint,
    pub header: BlockHeader,
}

impl Block {
    /// `SHA-256("ringseed/block/v1\n" || checkpoint text)`.
    pub fn hash(&self) -> Hash {
        block_hash(&self.note.text)
    }

    pub fn encode(&self) -> String {
        let mut out = BLOCK_MAGIC.to_owned();
        for r in &self.releases {
            out.push_str("release ");
            out.push_str(&B64.encode(r.encode()));
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&self.note.encode());
        out
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, FormatError> {
        if bytes.len() > MAX_BLOCK_BYTES {
            return Err(FormatError::TooLarge);
        }
        let s = std::str::from_utf8(bytes).map_err(|_| FormatError::Block("not UTF-8"))?;
        let rest = s
            .strip_prefix(BLOCK_MAGIC)
            .ok_or(FormatError::Block("missing ringseed-block/v1 line"))?;
        // The release lines end at the first blank line (or there are none).
        let (head, note) = match rest.strip_prefix('\n') {
            Some(note) => ("", note),
            None => rest.split_once("\n\n").unwrap_or(("", "")),
        };
        if note.is_empty() {
            return Err(FormatError::Block("no signed checkpoint"));
        }
        let mut releases = Vec::new();
        for line in head.split('\n').filter(|l| !l.is_empty()) {
            if releases.len() == MAX_RELEASES_PER_BLOCK {
                return Err(FormatError::TooLarge);
            }
            let b64 = line
                .strip_prefix("release ")
                .ok_or(FormatError::Block("expected a release line"))?;
            let raw = B64
                .decode(b64)
                .map_err(|_| FormatError::Block("release is not base64"))?;
            releases.push(Release::decode(&raw)?);
        }
        let note = Note::parse(note.as_bytes())?;
        let checkpoint = Checkpoint::parse(&note.text)?;
        let first = checkpoint
            .extensions
            .first()
            .ok_or(FormatError::Block("checkpoint has no ringseed-block line"))?;
        let header = BlockHeader::parse(first)?;
        Ok(Self {
            releases,
            note,
            checkpoint,
            header,
        })
    }
}

pub fn block_hash(checkpoint_text: &str) -> Hash {
    let mut h = Sha256::new();
    h.update(BLOCK_DOMAIN);
    h.update(checkpoint_text.as_bytes());
    h.finalize().into()
}
