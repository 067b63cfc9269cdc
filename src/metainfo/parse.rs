//! `.torrent` parsing and validation: bytes in, [`Torrent`] out.

use std::collections::HashMap;

use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::bencode::{decode, Spanned, Value};

use super::fields::{opt_bytes, opt_dict, opt_int, opt_text, utf8};
use super::files::{check_unique, component_problem, parse_v1, parse_v2, ListedFile};
use super::{FileEntry, InfoHashV1, InfoHashV2, MetaVersion, MetainfoError, Torrent};
use crate::metainfo::merkle::{piece_layer_root, LEAF_SIZE as BLOCK_SIZE};

/// Largest piece length accepted (libtorrent's limit, `i32::MAX / 2`).
pub const MAX_PIECE_LENGTH: u64 = (i32::MAX / 2) as u64;
/// Most pieces a torrent may have: piece indices are 32-bit on the wire and
/// libtorrent keeps them below 2^31.
pub const MAX_PIECES: u64 = i32::MAX as u64;

impl Torrent {
    /// Parse and validate a complete `.torrent` file.
    pub fn from_bytes(data: &[u8]) -> Result<Torrent, MetainfoError> {
        let root = decode(data)?;
        if root.as_dict().is_none() {
            return Err(MetainfoError::wrong_type("<torrent>", "dictionary", &root));
        }
        let info = root
            .get(b"info")
            .ok_or_else(|| MetainfoError::missing("info"))?;
        let layers = opt_dict(&root, "piece layers", "piece layers")?;
        let mut torrent = parse_info(info, Some(layers))?;
        torrent.trackers = parse_trackers(&root)?;
        torrent.web_seeds = parse_web_seeds(&root)?;
        torrent.comment = opt_text(&root, "comment", "comment")?;
        torrent.created_by = opt_text(&root, "created by", "created by")?;
        torrent.creation_date = opt_int(&root, "creation date", "creation date")?;
        Ok(torrent)
    }

    /// Parse and validate a bare `info` dictionary (e.g. fetched with BEP 9
    /// from a magnet link). v2 piece layers are unknown, so
    /// `v2_piece_layers` is `None`; trackers etc. are empty for the caller
    /// to fill in.
    pub fn from_info_bytes(info: &[u8]) -> Result<Torrent, MetainfoError> {
        let info = decode(info)?;
        parse_info(&info, None)
    }
}

/// `layers`: `None` when piece layers are not available at all (magnet),
/// `Some(None)` when the torrent file has no `piece layers` key.
fn parse_info(
    info: &Spanned<'_>,
    layers: Option<Option<&Spanned<'_>>>,
) -> Result<Torrent, MetainfoError> {
    if info.as_dict().is_none() {
        return Err(MetainfoError::wrong_type("info", "dictionary", info));
    }
    let name_bytes =
        opt_bytes(info, "name", "info.name")?.ok_or_else(|| MetainfoError::missing("info.name"))?;
    let name = utf8(name_bytes, "info.name")?;
    if let Some(reason) = component_problem(&name) {
        return Err(MetainfoError::InvalidPath {
            field: "info.name".into(),
            path: name,
            reason,
        });
    }
    let piece_length_raw = opt_int(info, "piece length", "info.piece length")?
        .ok_or_else(|| MetainfoError::missing("info.piece length"))?;

    let meta_version = opt_int(info, "meta version", "info.meta version")?;
    let has_v2 = match meta_version {
        None => false,
        Some(2) => true,
        Some(found) => return Err(MetainfoError::UnsupportedMetaVersion { found }),
    };
    let pieces = opt_bytes(info, "pieces", "info.pieces")?;
    let has_v1 = pieces.is_some();
    if !has_v1 && !has_v2 {
        return Err(MetainfoError::NoVersion);
    }
    let piece_length = check_piece_length(piece_length_raw, has_v2)?;

    // v1 part: listed order, pads included, offsets consecutive.
    let v1 = match pieces {
        Some(pieces) => Some(layout_v1(info, &name, pieces, piece_length)?),
        None => None,
    };
    // v2 part: tree order, every non-empty file on a piece boundary.
    let v2 = if has_v2 {
        let tree = info
            .get(b"file tree")
            .ok_or(MetainfoError::MissingFileTree)?;
        Some(layout_v2(tree, piece_length)?)
    } else {
        None
    };
    let mut name = name;

    let (files, multi_file, piece_space_len, v1_pieces) = match (v1, &v2) {
        (Some(v1), Some(v2)) => {
            check_hybrid(&v1.files, &v2.files)?;
            (v1.files, v1.multi_file, v1.piece_space_len, Some(v1.pieces))
        }
        (Some(v1), None) => (v1.files, v1.multi_file, v1.piece_space_len, Some(v1.pieces)),
        (None, Some(v2)) => {
            if !v2.multi_file {
                // A v2 tree holding one top-level file is a single-file
                // torrent of that file; libtorrent names it after the file.
                if let Some(f) = v2.files.first() {
                    name = f.display_path();
                }
            }
            (v2.files.clone(), v2.multi_file, v2.piece_space_len, None)
        }
        (None, None) => return Err(MetainfoError::NoVersion),
    };
    let total_size = files
        .iter()
        .try_fold(0u64, |acc, f| acc.checked_add(f.length))
        .ok_or(MetainfoError::SizeOverflow)?;
    if total_size == 0 {
        return Err(MetainfoError::EmptyTorrent);
    }
    let num_pieces = piece_space_len.div_ceil(piece_length);
    if num_pieces > MAX_PIECES {
        return Err(MetainfoError::TooManyPieces {
            pieces: num_pieces,
            piece_length,
        });
    }

    let v2_piece_layers = match (&v2, layers) {
        (Some(v2), Some(layers)) => Some(check_piece_layers(&v2.files, layers, piece_length)?),
        _ => None,
    };
    // For hybrid torrents the files come from the v1 list; take the roots
    // from the (matching) v2 list.
    let files: Vec<FileEntry> = files
        .into_iter()
        .enumerate()
        .map(|(i, mut f)| {
            if let Some(v2) = &v2 {
                f.pieces_root = v2.files.get(i).and_then(|g| g.pieces_root);
            }
            f
        })
        .collect();

    let version = match (has_v1, has_v2) {
        (true, true) => MetaVersion::Hybrid,
        (true, false) => MetaVersion::V1,
        _ => MetaVersion::V2,
    };
    Ok(Torrent {
        info_bytes: info.raw.to_vec(),
        info_hash_v1: has_v1.then(|| InfoHashV1(Sha1::digest(info.raw).into())),
        info_hash_v2: has_v2.then(|| InfoHashV2(Sha256::digest(info.raw).into())),
        version,
        name,
        piece_length,
        num_pieces: num_pieces as u32,
        piece_space_len,
        total_size,
        multi_file,
        files,
        v1_pieces,
        v2_piece_layers,
        trackers: Vec::new(),
        web_seeds: Vec::new(),
        comment: None,
        created_by: None,
        creation_date: None,
        private: opt_int(info, "private", "info.private")? == Some(1),
    })
}

fn check_piece_length(raw: i64, v2: bool) -> Result<u64, MetainfoError> {
    let err = |reason| MetainfoError::InvalidPieceLength {
        length: raw,
        reason,
    };
    let length = u64::try_from(raw).map_err(|_| err("must be positive"))?;
    if length == 0 {
        return Err(err("must be positive"));
    }
    if length > MAX_PIECE_LENGTH {
        return Err(err("larger than 1 GiB, which no client accepts"));
    }
    if v2 && (!length.is_power_of_two() || length < BLOCK_SIZE) {
        return Err(err("v2 torrents need a power of two of at least 16384"));
    }
    Ok(length)
}

struct Layout {
    /// Real files only, with their offsets in the piece space.
    files: Vec<FileEntry>,
    multi_file: bool,
    piece_space_len: u64,
    pieces: Vec<[u8; 20]>,
}

fn entry(f: &ListedFile, offset: u64) -> FileEntry {
    FileEntry {
        path: f.path.clone(),
        length: f.length,
        offset,
        pieces_root: f.pieces_root,
        executable: f.executable,
        hidden: f.hidden,
    }
}

fn layout_v1(
    info: &Value<'_>,
    name: &str,
    pieces: &[u8],
    piece_length: u64,
) -> Result<Layout, MetainfoError> {
    let (listed, multi_file) = parse_v1(info, name)?;
    check_unique(&listed)?;
    let mut offset = 0u64;
    let mut files = Vec::with_capacity(listed.len());
    for f in &listed {
        if !f.pad {
            files.push(entry(f, offset));
        }
        offset = offset
            .checked_add(f.length)
            .ok_or(MetainfoError::SizeOverflow)?;
    }
    if pieces.len() % 20 != 0 {
        return Err(MetainfoError::PiecesNotMultipleOf20 { len: pieces.len() });
    }
    let expected = offset.div_ceil(piece_length);
    let found = (pieces.len() / 20) as u64;
    if expected != found {
        return Err(MetainfoError::PieceCountMismatch {
            expected,
            found,
            size: offset,
            piece_length,
        });
    }
    let pieces = pieces
        .chunks_exact(20)
        .map(|c| {
            let mut h = [0u8; 20];
            h.copy_from_slice(c);
            h
        })
        .collect();
    Ok(Layout {
        files,
        multi_file,
        piece_space_len: offset,
        pieces,
    })
}

struct LayoutV2 {
    files: Vec<FileEntry>,
    multi_file: bool,
    piece_space_len: u64,
}

fn layout_v2(tree: &Value<'_>, piece_length: u64) -> Result<LayoutV2, MetainfoError> {
    let (listed, single) = parse_v2(tree)?;
    let multi_file = !single;
    check_unique(&listed)?;
    let mut offset = 0u64;
    let mut end = 0u64;
    let mut files = Vec::with_capacity(listed.len());
    for f in &listed {
        if f.length > 0 {
            offset = offset
                .checked_next_multiple_of(piece_length)
                .ok_or(MetainfoError::SizeOverflow)?;
        }
        files.push(entry(f, offset));
        offset = offset
            .checked_add(f.length)
            .ok_or(MetainfoError::SizeOverflow)?;
        if f.length > 0 {
            end = offset;
        }
    }
    Ok(LayoutV2 {
        files,
        multi_file,
        piece_space_len: end,
    })
}

fn check_hybrid(v1: &[FileEntry], v2: &[FileEntry]) -> Result<(), MetainfoError> {
    if v1.len() != v2.len() {
        return Err(MetainfoError::HybridMismatch {
            detail: format!(
                "{} files in `files` but {} in `file tree`",
                v1.len(),
                v2.len()
            ),
        });
    }
    for (a, b) in v1.iter().zip(v2) {
        let detail = if a.path != b.path {
            Some(format!(
                "file {:?} in `files` is {:?} in `file tree` (same order required)",
                a.display_path(),
                b.display_path()
            ))
        } else if a.length != b.length {
            Some(format!(
                "file {:?} is {} bytes in `files` but {} in `file tree`",
                a.display_path(),
                a.length,
                b.length
            ))
        } else if a.length > 0 && a.offset != b.offset {
            Some(format!(
                "file {:?} starts at {} in the v1 piece space but must start on a piece boundary ({}): pad files missing or wrong",
                a.display_path(),
                a.offset,
                b.offset
            ))
        } else {
            None
        };
        if let Some(detail) = detail {
            return Err(MetainfoError::HybridMismatch { detail });
        }
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Check `piece layers` against every file of more than one piece and return
/// the layers indexed like `files` (empty for files of at most one piece).
fn check_piece_layers(
    files: &[FileEntry],
    layers: Option<&Spanned<'_>>,
    piece_length: u64,
) -> Result<Vec<Vec<[u8; 32]>>, MetainfoError> {
    let entries: &[(&[u8], Spanned<'_>)] = layers.and_then(|l| l.as_dict()).unwrap_or_default();
    let by_root: HashMap<&[u8], &Spanned<'_>> = entries.iter().map(|(k, v)| (*k, v)).collect();
    let mut out = Vec::with_capacity(files.len());
    for f in files {
        let root = match f.pieces_root {
            Some(root) if f.length > piece_length => root,
            _ => {
                out.push(Vec::new());
                continue;
            }
        };
        let path = f.display_path();
        let value =
            by_root
                .get(&root[..])
                .copied()
                .ok_or_else(|| MetainfoError::MissingPieceLayer {
                    path: path.clone(),
                    length: f.length,
                })?;
        let bytes = value.as_bytes().ok_or_else(|| {
            MetainfoError::wrong_type(format!("piece layers[{}]", hex(&root)), "string", value)
        })?;
        let expected = f.length.div_ceil(piece_length) * 32;
        if bytes.len() as u64 != expected {
            return Err(MetainfoError::PieceLayerLength {
                path,
                expected,
                found: bytes.len(),
            });
        }
        let layer: Vec<[u8; 32]> = bytes
            .chunks_exact(32)
            .map(|c| {
                let mut h = [0u8; 32];
                h.copy_from_slice(c);
                h
            })
            .collect();
        if piece_layer_root(&layer, f.length, piece_length) != Some(root) {
            return Err(MetainfoError::PieceLayerRootMismatch { path });
        }
        out.push(layer);
    }
    for (key, _) in entries {
        let wanted = files.iter().any(|f| {
            f.length > piece_length && f.pieces_root.as_ref().map(|r| &r[..]) == Some(*key)
        });
        if !wanted {
            return Err(MetainfoError::UnknownPieceLayer { root: hex(key) });
        }
    }
    Ok(out)
}

fn parse_trackers(root: &Value<'_>) -> Result<Vec<Vec<String>>, MetainfoError> {
    // BEP 12: announce-list wins when present; malformed entries are skipped
    // (clients disagree about them and they never affect the content).
    let mut tiers = Vec::new();
    if let Some(list) = root.get(b"announce-list").and_then(|l| l.as_list()) {
        for tier in list {
            let urls: Vec<String> = tier
                .as_list()
                .unwrap_or_default()
                .iter()
                .filter_map(|u| u.as_bytes())
                .filter_map(|b| std::str::from_utf8(b).ok())
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            if !urls.is_empty() {
                tiers.push(urls);
            }
        }
    }
    if tiers.is_empty() {
        if let Some(url) = opt_bytes(root, "announce", "announce")? {
            let url = String::from_utf8_lossy(url).trim().to_string();
            if !url.is_empty() {
                tiers.push(vec![url]);
            }
        }
    }
    Ok(tiers)
}

fn parse_web_seeds(root: &Value<'_>) -> Result<Vec<String>, MetainfoError> {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    Ok(match root.get(b"url-list") {
        None => Vec::new(),
        Some(v) => match &v.value {
            Value::Bytes([]) => Vec::new(),
            Value::Bytes(b) => vec![text(b)],
            Value::List(items) => items
                .iter()
                .filter_map(|i| i.as_bytes())
                .map(text)
                .collect(),
            _ => return Err(MetainfoError::wrong_type("url-list", "string or list", v)),
        },
    })
}
