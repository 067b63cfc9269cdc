//! The file lists of a torrent: v1 `length`/`files` (with BEP 47 pad files)
//! and the v2 `file tree`, with path validation and duplicate detection.

use std::collections::HashSet;

use crate::bencode::Value;

use super::fields::{opt_bytes, opt_int, utf8};
use super::MetainfoError;

/// A file as listed in the torrent, before layout.
#[derive(Clone, Debug)]
pub(crate) struct ListedFile {
    /// Relative to the torrent root; `[name]` for a single-file torrent.
    pub path: Vec<String>,
    pub length: u64,
    /// BEP 47 pad file (v1 lists only).
    pub pad: bool,
    pub executable: bool,
    pub hidden: bool,
    /// v2 only; `None` for empty files.
    pub pieces_root: Option<[u8; 32]>,
}

/// Why a single path component is unsafe, or `None` when it is fine.
pub fn component_problem(component: &str) -> Option<&'static str> {
    if component.is_empty() {
        Some("empty path component")
    } else if component == "." || component == ".." {
        Some("`.` or `..` component (path traversal)")
    } else if component.contains('/') || component.contains('\\') {
        Some("path separator inside a component (absolute path or traversal)")
    } else if component.contains('\0') {
        Some("NUL byte in a component")
    } else {
        None
    }
}

fn check_component(component: &str, field: &str, path: &[String]) -> Result<(), MetainfoError> {
    match component_problem(component) {
        None => Ok(()),
        Some(reason) => Err(MetainfoError::InvalidPath {
            field: field.to_string(),
            path: display(path, component),
            reason,
        }),
    }
}

fn display(prefix: &[String], last: &str) -> String {
    let mut parts: Vec<&str> = prefix.iter().map(String::as_str).collect();
    parts.push(last);
    parts.join("/")
}

fn attrs(attr: Option<&[u8]>) -> (bool, bool, bool) {
    let attr = attr.unwrap_or_default();
    (
        attr.contains(&b'p'),
        attr.contains(&b'x'),
        attr.contains(&b'h'),
    )
}

fn length(v: i64, path: &str) -> Result<u64, MetainfoError> {
    u64::try_from(v).map_err(|_| MetainfoError::InvalidFileLength {
        path: path.to_string(),
        length: v,
    })
}

/// v1: `info.length` (single file) or `info.files`. Returns the files in
/// listed order and whether the torrent is multi-file.
pub(crate) fn parse_v1(
    info: &Value<'_>,
    name: &str,
) -> Result<(Vec<ListedFile>, bool), MetainfoError> {
    let single = opt_int(info, "length", "info.length")?;
    let files = info.get(b"files");
    match (single, files) {
        (Some(_), Some(_)) => Err(MetainfoError::LengthAndFiles),
        (None, None) => Err(MetainfoError::missing("info.length` or `info.files")),
        (Some(len), None) => {
            let (_, executable, hidden) = attrs(opt_bytes(info, "attr", "info.attr")?);
            Ok((
                vec![ListedFile {
                    path: vec![name.to_string()],
                    length: length(len, name)?,
                    pad: false,
                    executable,
                    hidden,
                    pieces_root: None,
                }],
                false,
            ))
        }
        (None, Some(list)) => {
            let items = list
                .as_list()
                .ok_or_else(|| MetainfoError::wrong_type("info.files", "list", list))?;
            if items.is_empty() {
                return Err(MetainfoError::NoFiles);
            }
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let field = format!("info.files[{i}]");
                if item.as_dict().is_none() {
                    return Err(MetainfoError::wrong_type(field, "dictionary", item));
                }
                let path_field = format!("{field}.path");
                let path_value = item
                    .get(b"path")
                    .ok_or_else(|| MetainfoError::missing(path_field.clone()))?;
                let parts = path_value.as_list().ok_or_else(|| {
                    MetainfoError::wrong_type(path_field.clone(), "list", path_value)
                })?;
                let (pad, executable, hidden) =
                    attrs(opt_bytes(item, "attr", &format!("{field}.attr"))?);
                let mut path = Vec::with_capacity(parts.len());
                for part in parts {
                    let bytes = part.as_bytes().ok_or_else(|| {
                        MetainfoError::wrong_type(path_field.clone(), "list of strings", part)
                    })?;
                    let component = if pad {
                        String::from_utf8_lossy(bytes).into_owned()
                    } else {
                        let c = utf8(bytes, &path_field)?;
                        check_component(&c, &path_field, &path)?;
                        c
                    };
                    path.push(component);
                }
                if path.is_empty() && !pad {
                    return Err(MetainfoError::InvalidPath {
                        field: path_field,
                        path: String::new(),
                        reason: "empty path",
                    });
                }
                let len = opt_int(item, "length", &format!("{field}.length"))?
                    .ok_or_else(|| MetainfoError::missing(format!("{field}.length")))?;
                out.push(ListedFile {
                    length: length(len, &path.join("/"))?,
                    path,
                    pad,
                    executable,
                    hidden,
                    pieces_root: None,
                });
            }
            Ok((out, true))
        }
    }
}

/// v2: `info.file tree`. Files come out in tree order (sorted by path
/// component bytes) with their paths as in the tree. Returns whether the
/// tree is a single file directly at the top, which a v2-only torrent treats
/// as a single-file torrent (as libtorrent does).
pub(crate) fn parse_v2(tree: &Value<'_>) -> Result<(Vec<ListedFile>, bool), MetainfoError> {
    let mut out = Vec::new();
    let mut prefix = Vec::new();
    walk(tree, &mut prefix, &mut out)?;
    if out.is_empty() {
        return Err(MetainfoError::NoFiles);
    }
    let single = out.len() == 1 && out[0].path.len() == 1;
    Ok((out, single))
}

fn walk(
    node: &Value<'_>,
    prefix: &mut Vec<String>,
    out: &mut Vec<ListedFile>,
) -> Result<(), MetainfoError> {
    let here = || {
        if prefix.is_empty() {
            "<root>".to_string()
        } else {
            prefix.join("/")
        }
    };
    let entries = node
        .as_dict()
        .ok_or_else(|| MetainfoError::InvalidFileTree {
            path: here(),
            reason: "a directory or file node must be a dictionary",
        })?;
    if let Some(file) = node.get(b"") {
        if prefix.is_empty() {
            return Err(MetainfoError::InvalidFileTree {
                path: here(),
                reason: "the root of the file tree cannot be a file",
            });
        }
        if entries.len() != 1 {
            return Err(MetainfoError::FileDirectoryClash { path: here() });
        }
        let path = here();
        if file.as_dict().is_none() {
            return Err(MetainfoError::InvalidFileTree {
                path,
                reason: "a file's \"\" entry must be a dictionary",
            });
        }
        let field = format!("info.file tree.{path}");
        let len = opt_int(file, "length", &format!("{field}.length"))?
            .ok_or_else(|| MetainfoError::missing(format!("{field}.length")))?;
        let len = length(len, &path)?;
        let root = opt_bytes(file, "pieces root", &format!("{field}.pieces root"))?;
        let pieces_root = match root {
            _ if len == 0 => None,
            None => return Err(MetainfoError::MissingPiecesRoot { path, length: len }),
            Some(r) => {
                Some(
                    <[u8; 32]>::try_from(r).map_err(|_| MetainfoError::InvalidPiecesRoot {
                        path: path.clone(),
                        len: r.len(),
                    })?,
                )
            }
        };
        let (_, executable, hidden) = attrs(opt_bytes(file, "attr", &format!("{field}.attr"))?);
        out.push(ListedFile {
            path: prefix.clone(),
            length: len,
            pad: false,
            executable,
            hidden,
            pieces_root,
        });
        return Ok(());
    }
    for (key, child) in entries {
        let component = utf8(key, "info.file tree")?;
        check_component(&component, "info.file tree", prefix)?;
        prefix.push(component);
        walk(child, prefix, out)?;
        prefix.pop();
    }
    Ok(())
}

/// Reject two files with the same path and a file that is also a directory
/// (`a` and `a/b`). Pad files are ignored.
pub(crate) fn check_unique(files: &[ListedFile]) -> Result<(), MetainfoError> {
    let mut seen: HashSet<&[String]> = HashSet::with_capacity(files.len());
    for f in files.iter().filter(|f| !f.pad) {
        if !seen.insert(&f.path) {
            return Err(MetainfoError::DuplicatePath {
                path: f.path.join("/"),
            });
        }
    }
    for f in files.iter().filter(|f| !f.pad) {
        for end in 1..f.path.len() {
            if seen.contains(&f.path[..end]) {
                return Err(MetainfoError::FileDirectoryClash {
                    path: f.path[..end].join("/"),
                });
            }
        }
    }
    Ok(())
}
