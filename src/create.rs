//! Making torrents: scan a file or directory, lay it out, hash it, encode.
//!
//! Deterministic: files are sorted by path (component bytes, which is also
//! the v2 `file tree` order), so the same content, options and date give the
//! same bytes. Hybrid torrents get a BEP 47 pad file after every non-empty
//! file that is followed by another non-empty one, so v2 files start on piece
//! boundaries in the v1 piece space. Regular files only (symlinks are
//! followed); special files are an error. Hashing is done on every core by
//! `storage::hash::hash_files`.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::bencode::{encode_bytes, encode_int, DictBuilder};

use crate::metainfo::merkle::LEAF_SIZE as BLOCK_SIZE;
use crate::metainfo::{
    component_problem, FileEntry, MetaVersion, MetainfoError, Torrent, MAX_PIECES,
};
use crate::storage::hash::{hash_files, ContentHashes, FileHashes};
use crate::storage::StorageError;

/// Default piece lengths are clamped to this range.
pub const MIN_PIECE_LENGTH: u64 = 16 * 1024;
pub const MAX_DEFAULT_PIECE_LENGTH: u64 = 16 * 1024 * 1024;
/// Largest piece length `create` accepts.
pub const MAX_CREATE_PIECE_LENGTH: u64 = 128 * 1024 * 1024;

/// What to make.
#[derive(Clone, Debug)]
pub struct CreateOptions {
    pub version: MetaVersion,
    /// Bytes; `None` = [`default_piece_length`].
    pub piece_length: Option<u64>,
    /// BEP 12 tiers; the first URL also goes into `announce`.
    pub trackers: Vec<Vec<String>>,
    /// BEP 19 `url-list`.
    pub web_seeds: Vec<String>,
    pub private: bool,
    pub comment: Option<String>,
    /// Unix seconds; `None` leaves `creation date` out.
    pub creation_date: Option<i64>,
    /// Default `ringseed/<version>`.
    pub created_by: Option<String>,
    /// Hashing threads.
    pub threads: usize,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions {
            version: MetaVersion::Hybrid,
            piece_length: None,
            trackers: Vec::new(),
            web_seeds: Vec::new(),
            private: false,
            comment: None,
            creation_date: None,
            created_by: Some(concat!("ringseed/", env!("CARGO_PKG_VERSION")).to_string()),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a regular file or directory (socket, FIFO or device); move it out of the tree")]
    SpecialFile { path: PathBuf },
    #[error("{path}: {reason}; rename it")]
    BadName { path: PathBuf, reason: &'static str },
    #[error("{path} contains no files")]
    NoFiles { path: PathBuf },
    #[error("{path} holds 0 bytes in total; a torrent needs some data")]
    EmptyContent { path: PathBuf },
    #[error("{path}: directories nested deeper than 64 levels (a symlink loop?)")]
    TooDeep { path: PathBuf },
    #[error("piece length {length}: {reason}")]
    InvalidPieceLength { length: u64, reason: &'static str },
    #[error("{pieces} pieces is more than the wire protocol can address; choose a larger --piece-length")]
    TooManyPieces { pieces: u64 },
    #[error("hashing failed")]
    Hash(#[source] StorageError),
    #[error("the torrent we made does not validate (a ringseed bug)")]
    SelfCheck(#[source] MetainfoError),
}

/// One entry of the v1 file list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListEntry {
    /// Index into [`Plan::files`].
    File(usize),
    /// BEP 47 pad file of this many zero bytes.
    Pad(u64),
}

/// The layout of a torrent-to-be, before hashing.
#[derive(Clone, Debug)]
pub struct Plan {
    /// What `hash_files` reads: the file itself (single-file) or the top
    /// directory (multi-file).
    pub content_root: PathBuf,
    pub name: String,
    pub multi_file: bool,
    pub version: MetaVersion,
    pub piece_length: u64,
    /// Real files sorted by path, with offsets in the piece space.
    pub files: Vec<FileEntry>,
    /// v1 `files` order including pad files (v1 and hybrid).
    pub v1_list: Vec<ListEntry>,
    pub piece_space_len: u64,
    pub total_size: u64,
}

/// Piece length for `total` bytes: the smallest power of two giving at most
/// 2048 pieces (so ~1000-2000), clamped to 16 KiB..16 MiB.
pub fn default_piece_length(total: u64) -> u64 {
    let mut length = MIN_PIECE_LENGTH;
    while length < MAX_DEFAULT_PIECE_LENGTH && total.div_ceil(length) > 2048 {
        length *= 2;
    }
    length
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CreateError {
    let path = path.to_path_buf();
    move |source| CreateError::Io {
        action,
        path,
        source,
    }
}

fn name_of(path: &Path) -> Result<String, CreateError> {
    let name = path
        .file_name()
        .ok_or(CreateError::BadName {
            path: path.to_path_buf(),
            reason: "has no file name",
        })?
        .to_str()
        .ok_or(CreateError::BadName {
            path: path.to_path_buf(),
            reason: "name is not valid UTF-8",
        })?
        .to_string();
    if let Some(reason) = component_problem(&name) {
        return Err(CreateError::BadName {
            path: path.to_path_buf(),
            reason,
        });
    }
    Ok(name)
}

fn executable(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o111 != 0
}

fn scan(
    dir: &Path,
    prefix: &mut Vec<String>,
    out: &mut Vec<(Vec<String>, u64, bool)>,
) -> Result<(), CreateError> {
    if prefix.len() >= 64 {
        return Err(CreateError::TooDeep {
            path: dir.to_path_buf(),
        });
    }
    for entry in std::fs::read_dir(dir).map_err(io_err("read directory", dir))? {
        let entry = entry.map_err(io_err("read directory", dir))?;
        let path = entry.path();
        let meta = std::fs::metadata(&path).map_err(io_err("stat", &path))?;
        prefix.push(name_of(&path)?);
        if meta.is_dir() {
            scan(&path, prefix, out)?;
        } else if meta.is_file() {
            out.push((prefix.clone(), meta.len(), executable(&meta)));
        } else {
            return Err(CreateError::SpecialFile { path });
        }
        prefix.pop();
    }
    Ok(())
}

/// Scan `path` and lay it out.
pub fn plan(
    path: &Path,
    version: MetaVersion,
    piece_length: Option<u64>,
) -> Result<Plan, CreateError> {
    let meta = std::fs::metadata(path).map_err(io_err("stat", path))?;
    let mut name = name_of(path)?;
    let mut content_root = path.to_path_buf();
    let mut multi_file = meta.is_dir();
    let mut found: Vec<(Vec<String>, u64, bool)> = Vec::new();
    if meta.is_dir() {
        scan(path, &mut Vec::new(), &mut found)?;
        if found.is_empty() {
            return Err(CreateError::NoFiles {
                path: path.to_path_buf(),
            });
        }
        // A v2 tree with one top-level file reads back as a single-file
        // torrent of that file (BEP 52 cannot tell them apart), so make it one.
        if version == MetaVersion::V2 && found.len() == 1 && found[0].0.len() == 1 {
            name = found[0].0[0].clone();
            content_root = path.join(&name);
            multi_file = false;
        }
    } else if meta.is_file() {
        found.push((vec![name.clone()], meta.len(), executable(&meta)));
    } else {
        return Err(CreateError::SpecialFile {
            path: path.to_path_buf(),
        });
    }
    if !multi_file {
        found[0].0 = vec![name.clone()];
    }
    found.sort();
    let total_size: u64 = found.iter().map(|f| f.1).sum();
    if total_size == 0 {
        return Err(CreateError::EmptyContent {
            path: path.to_path_buf(),
        });
    }
    let piece_length = piece_length.unwrap_or_else(|| default_piece_length(total_size));
    if !piece_length.is_power_of_two() || piece_length < BLOCK_SIZE {
        return Err(CreateError::InvalidPieceLength {
            length: piece_length,
            reason: "must be a power of two of at least 16384",
        });
    }
    if piece_length > MAX_CREATE_PIECE_LENGTH {
        return Err(CreateError::InvalidPieceLength {
            length: piece_length,
            reason: "must be at most 128 MiB",
        });
    }

    let mut files = Vec::with_capacity(found.len());
    let mut v1_list = Vec::new();
    let mut offset = 0u64;
    let mut end = 0u64;
    let last_nonempty = found.iter().rposition(|f| f.1 > 0).unwrap_or(0);
    for (i, (path, length, exec)) in found.into_iter().enumerate() {
        if version == MetaVersion::V2 && length > 0 {
            offset = offset.next_multiple_of(piece_length);
        }
        files.push(FileEntry {
            path,
            length,
            offset,
            pieces_root: None,
            executable: exec,
            hidden: false,
        });
        v1_list.push(ListEntry::File(i));
        offset += length;
        if length > 0 {
            end = offset;
        }
        if version == MetaVersion::Hybrid
            && length > 0
            && i < last_nonempty
            && offset % piece_length != 0
        {
            let pad = piece_length - offset % piece_length;
            v1_list.push(ListEntry::Pad(pad));
            offset += pad;
        }
    }
    let piece_space_len = if version == MetaVersion::V2 {
        end
    } else {
        offset
    };
    let pieces = piece_space_len.div_ceil(piece_length);
    if pieces > MAX_PIECES {
        return Err(CreateError::TooManyPieces { pieces });
    }
    if version == MetaVersion::V1 {
        v1_list.retain(|e| matches!(e, ListEntry::File(_)));
    }
    Ok(Plan {
        content_root,
        name,
        multi_file,
        version,
        piece_length,
        files,
        v1_list,
        piece_space_len,
        total_size,
    })
}

/// The result of [`create`] / [`build`]: the `.torrent` bytes and the parsed
/// torrent (its info-hashes etc.).
#[derive(Clone, Debug)]
pub struct Created {
    pub bytes: Vec<u8>,
    pub torrent: Torrent,
}

/// Scan, hash and encode. `progress` is called with byte counts as data is
/// hashed (total: [`Plan::total_size`] per hash pass).
pub fn create(
    path: &Path,
    opts: &CreateOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Created, CreateError> {
    let plan = plan(path, opts.version, opts.piece_length)?;
    create_from_plan(&plan, opts, progress)
}

pub fn create_from_plan(
    plan: &Plan,
    opts: &CreateOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Created, CreateError> {
    let want_v1 = plan.version != MetaVersion::V2;
    let want_v2 = plan.version != MetaVersion::V1;
    let hashes = hash_files(
        &plan.content_root,
        &plan.files,
        plan.multi_file,
        plan.piece_length,
        plan.piece_space_len,
        want_v1,
        want_v2,
        opts.threads.max(1),
        progress,
    )
    .map_err(CreateError::Hash)?;
    build(plan, &hashes, opts)
}

fn file_dict(f: &FileEntry, with_path: bool, pieces_root: Option<&[u8; 32]>) -> Vec<u8> {
    let mut d = DictBuilder::new();
    if f.executable {
        d.bytes("attr", "x");
    }
    d.int("length", f.length as i64);
    if with_path {
        let mut path = vec![b'l'];
        for c in &f.path {
            encode_bytes(&mut path, c.as_bytes());
        }
        path.push(b'e');
        d.raw("path", path);
    }
    if let Some(root) = pieces_root {
        d.bytes("pieces root", root);
    }
    d.finish()
}

/// Encode a torrent from a plan and its hashes, then parse it back (the
/// same validation every other torrent gets).
pub fn build(
    plan: &Plan,
    hashes: &ContentHashes,
    opts: &CreateOptions,
) -> Result<Created, CreateError> {
    let mut info = DictBuilder::new();
    info.bytes("name", &plan.name);
    info.int("piece length", plan.piece_length as i64);
    if opts.private {
        info.int("private", 1);
    }
    if let Some(pieces) = &hashes.v1_pieces {
        info.bytes("pieces", pieces.concat());
        if plan.multi_file {
            let mut list = vec![b'l'];
            for entry in &plan.v1_list {
                match entry {
                    ListEntry::File(i) => list.extend(file_dict(&plan.files[*i], true, None)),
                    ListEntry::Pad(len) => {
                        let mut d = DictBuilder::new();
                        d.bytes("attr", "p").int("length", *len as i64);
                        let mut path = vec![b'l'];
                        encode_bytes(&mut path, b".pad");
                        encode_bytes(&mut path, len.to_string().as_bytes());
                        path.push(b'e');
                        d.raw("path", path);
                        d.finish_into(&mut list);
                    }
                }
            }
            list.push(b'e');
            info.raw("files", list);
        } else {
            info.int("length", plan.files[0].length as i64);
            if plan.files[0].executable {
                info.bytes("attr", "x");
            }
        }
    }
    let mut layers = DictBuilder::new();
    if let Some(v2) = &hashes.v2_files {
        info.int("meta version", 2);
        // Nested dictionaries, built bottom-up from the sorted file list.
        let tree = build_tree(&plan.files, v2, 0, plan.files.len(), 0);
        info.raw("file tree", tree);
        for fh in v2 {
            if let (Some(root), false) = (fh.pieces_root, fh.piece_layer.is_empty()) {
                layers.bytes(root, fh.piece_layer.concat());
            }
        }
    }
    let info_bytes = info.finish();

    let mut top = DictBuilder::new();
    if let Some(first) = opts.trackers.iter().flatten().next() {
        top.bytes("announce", first);
    }
    if opts.trackers.iter().flatten().count() > 1 {
        let mut list = vec![b'l'];
        for tier in opts.trackers.iter().filter(|t| !t.is_empty()) {
            list.push(b'l');
            for url in tier {
                encode_bytes(&mut list, url.as_bytes());
            }
            list.push(b'e');
        }
        list.push(b'e');
        top.raw("announce-list", list);
    }
    if let Some(c) = &opts.comment {
        top.bytes("comment", c);
    }
    if let Some(c) = &opts.created_by {
        top.bytes("created by", c);
    }
    if let Some(date) = opts.creation_date {
        let mut d = Vec::new();
        encode_int(&mut d, date);
        top.raw("creation date", d);
    }
    top.raw("info", info_bytes);
    if hashes.v2_files.is_some() {
        top.raw("piece layers", layers.finish());
    }
    match opts.web_seeds.as_slice() {
        [] => {}
        [one] => {
            top.bytes("url-list", one);
        }
        many => {
            let mut list = vec![b'l'];
            for url in many {
                encode_bytes(&mut list, url.as_bytes());
            }
            list.push(b'e');
            top.raw("url-list", list);
        }
    }
    let bytes = top.finish();
    let torrent = Torrent::from_bytes(&bytes).map_err(CreateError::SelfCheck)?;
    Ok(Created { bytes, torrent })
}

/// Encode files[start..end] (sorted, sharing their first `depth` components)
/// as a `file tree` dictionary.
fn build_tree(
    files: &[FileEntry],
    hashes: &[FileHashes],
    start: usize,
    end: usize,
    depth: usize,
) -> Vec<u8> {
    let mut out = vec![b'd'];
    let mut i = start;
    while i < end {
        let component = &files[i].path[depth];
        let mut j = i + 1;
        while j < end && files[j].path.get(depth) == Some(component) {
            j += 1;
        }
        encode_bytes(&mut out, component.as_bytes());
        if files[i].path.len() == depth + 1 {
            // A file (duplicates/clashes are impossible from a directory scan).
            out.push(b'd');
            encode_bytes(&mut out, b"");
            out.extend(file_dict(
                &files[i],
                false,
                hashes.get(i).and_then(|h| h.pieces_root.as_ref()),
            ));
            out.push(b'e');
        } else {
            out.extend(build_tree(files, hashes, i, j, depth + 1));
        }
        i = j;
    }
    out.push(b'e');
    out
}

/// Write `bytes` to `path` through a temporary file in the same directory
/// and a rename, so a failure never leaves a partial file behind.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), CreateError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(io_err("create", &tmp))?;
        f.write_all(bytes).map_err(io_err("write", &tmp))?;
        f.sync_all().map_err(io_err("sync", &tmp))?;
        std::fs::rename(&tmp, path).map_err(io_err("rename into place", path))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_piece_lengths() {
        assert_eq!(default_piece_length(1), 16 * 1024);
        assert_eq!(default_piece_length(1 << 30), 512 * 1024);
        assert_eq!(default_piece_length(1 << 50), 16 * 1024 * 1024);
    }
}
