//! A torrent's content on disk: find it, check it, open it read-only and map
//! it for zero-copy serving.
//!
//! The data path a user gives is the content itself (the file of a
//! single-file torrent, the top directory of a multi-file one) or, as
//! clients' "save path" is, a directory that contains an entry with the
//! torrent's name. [`Content::open`] is strict (every file present with its
//! exact size) because the server must not serve from damaged data;
//! [`inspect_files`] is lenient and reports what is wrong, for `verify`.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::StorageError;
use crate::metainfo::{FileEntry, Torrent};

/// Where file `entry` of a torrent lives under `root`.
pub fn file_path(root: &Path, multi_file: bool, entry: &FileEntry) -> PathBuf {
    if multi_file {
        let mut p = root.to_path_buf();
        p.extend(&entry.path);
        p
    } else {
        root.to_path_buf()
    }
}

/// Resolve the user's data path to the content root: the file itself for a
/// single-file torrent, the top directory for a multi-file one. `data` may
/// also be a directory containing an entry called `name`.
pub fn resolve_data_root(
    data: &Path,
    name: &str,
    files: &[FileEntry],
    multi_file: bool,
) -> Result<PathBuf, StorageError> {
    let meta = std::fs::metadata(data).map_err(|source| StorageError::DataPathMissing {
        path: data.to_path_buf(),
        source,
    })?;
    let inner = data.join(name);
    if !multi_file {
        return Ok(if meta.is_dir() {
            inner
        } else {
            data.to_path_buf()
        });
    }
    if !meta.is_dir() {
        // A multi-file torrent's content is a directory; report the files as
        // missing under the path given.
        return Ok(data.to_path_buf());
    }
    let probe = files.iter().find(|f| f.length > 0).or(files.first());
    if let Some(f) = probe {
        if file_path(data, true, f).exists() {
            return Ok(data.to_path_buf());
        }
    }
    if inner.is_dir() {
        return Ok(inner);
    }
    Ok(data.to_path_buf())
}

/// State of one file of the torrent on disk.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum FileStatus {
    Ok,
    Missing { reason: String },
    WrongSize { actual: u64 },
}

/// A file opened for hashing; `file` is `None` when it could not be opened.
#[derive(Debug)]
pub(crate) struct SourceFile {
    pub path: PathBuf,
    pub file: Option<File>,
    pub status: FileStatus,
}

/// Anything the piece reader can pread from.
pub(crate) trait AsFile {
    fn as_file(&self) -> Option<&File>;
    fn path(&self) -> &Path;
}

impl AsFile for SourceFile {
    fn as_file(&self) -> Option<&File> {
        self.file.as_ref()
    }
    fn path(&self) -> &Path {
        &self.path
    }
}

/// Open every file of the torrent for reading, recording what is wrong
/// instead of failing. Empty files are never opened.
pub(crate) fn inspect_files(root: &Path, files: &[FileEntry], multi_file: bool) -> Vec<SourceFile> {
    files
        .iter()
        .map(|entry| {
            let path = file_path(root, multi_file, entry);
            let opened = File::open(&path).and_then(|f| {
                let m = f.metadata()?;
                if m.is_dir() {
                    return Err(std::io::Error::other("is a directory"));
                }
                Ok((f, m.len()))
            });
            match opened {
                Ok((f, actual)) => {
                    let status = if actual == entry.length {
                        FileStatus::Ok
                    } else {
                        FileStatus::WrongSize { actual }
                    };
                    SourceFile {
                        path,
                        file: Some(f),
                        status,
                    }
                }
                Err(e) if entry.length == 0 && e.kind() == std::io::ErrorKind::NotFound => {
                    // Clients often do not create empty files; nothing to check.
                    SourceFile {
                        path,
                        file: None,
                        status: FileStatus::Ok,
                    }
                }
                Err(e) => SourceFile {
                    path,
                    file: None,
                    status: FileStatus::Missing {
                        reason: e.to_string(),
                    },
                },
            }
        })
        .collect()
}

/// Open every file strictly: each must exist with its exact length.
pub(crate) fn open_strict(
    root: &Path,
    files: &[FileEntry],
    multi_file: bool,
) -> Result<Vec<SourceFile>, StorageError> {
    let opened = inspect_files(root, files, multi_file);
    for (entry, src) in files.iter().zip(&opened) {
        match &src.status {
            FileStatus::Ok => {}
            FileStatus::Missing { reason } => {
                return Err(StorageError::MissingFile {
                    file: entry.display_path(),
                    expected: entry.length,
                    root: root.to_path_buf(),
                    source: std::io::Error::other(reason.clone()),
                })
            }
            FileStatus::WrongSize { actual } => {
                return Err(StorageError::WrongSize {
                    file: entry.display_path(),
                    root: root.to_path_buf(),
                    expected: entry.length,
                    actual: *actual,
                })
            }
        }
    }
    Ok(opened)
}

/// One file of a torrent, open read-only and mapped (empty files are not
/// mapped).
#[derive(Debug)]
pub struct ContentFile {
    path: PathBuf,
    file: Option<File>,
    map: Option<Mmap>,
    /// The file as it was when opened, before verification.
    stamp: Option<FileStamp>,
}

/// Identity, size and change times of an open file: if any differs later,
/// the file may have been written since.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStamp {
    pub dev: u64,
    pub ino: u64,
    pub len: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
}

impl FileStamp {
    /// `fstat` the open file.
    pub fn of(file: &File) -> std::io::Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let m = file.metadata()?;
        Ok(Self {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

impl ContentFile {
    /// Path on disk.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open file (None for an empty file that does not exist on disk).
    pub fn file(&self) -> Option<&File> {
        self.file.as_ref()
    }

    /// [`FileStamp`] taken when the file was opened (None if not opened).
    pub fn stamp_at_open(&self) -> Option<FileStamp> {
        self.stamp
    }

    /// The mapped bytes (empty for an empty file).
    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }
}

impl AsFile for ContentFile {
    fn as_file(&self) -> Option<&File> {
        self.file.as_ref()
    }
    fn path(&self) -> &Path {
        &self.path
    }
}

/// A torrent's content, checked and mapped. Indexed like `Torrent::files`.
#[derive(Debug)]
pub struct Content {
    root: PathBuf,
    files: Vec<ContentFile>,
}

impl Content {
    /// Resolve `data` (see [`resolve_data_root`]), check every file exists
    /// with the right size, open and map them.
    pub fn open(torrent: &Torrent, data: &Path) -> Result<Self, StorageError> {
        let root = resolve_data_root(data, &torrent.name, &torrent.files, torrent.multi_file)?;
        Self::open_root(&root, &torrent.files, torrent.multi_file)
    }

    /// Like [`Content::open`] with an already resolved root.
    pub fn open_root(
        root: &Path,
        files: &[FileEntry],
        multi_file: bool,
    ) -> Result<Self, StorageError> {
        let opened = open_strict(root, files, multi_file)?;
        let mut out = Vec::with_capacity(opened.len());
        for (entry, src) in files.iter().zip(opened) {
            let stamp = src.file.as_ref().and_then(|f| FileStamp::of(f).ok());
            let map = match &src.file {
                Some(f) if entry.length > 0 => {
                    // SAFETY: the mapping is read-only and private to this
                    // process. Another process truncating the file while it
                    // is mapped would make accesses past the new end fault
                    // (SIGBUS); the server re-checks sizes before serving and
                    // the file was just checked to have `entry.length` bytes.
                    let m = unsafe { Mmap::map(f) }.map_err(|source| StorageError::Mmap {
                        path: src.path.clone(),
                        source,
                    })?;
                    Some(m)
                }
                _ => None,
            };
            out.push(ContentFile {
                path: src.path,
                file: src.file,
                map,
                stamp,
            });
        }
        Ok(Self {
            root: root.to_path_buf(),
            files: out,
        })
    }

    /// The resolved content root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The files, indexed like `Torrent::files`.
    pub fn files(&self) -> &[ContentFile] {
        &self.files
    }

    /// The bytes of a file segment (see `layout::Segment::File`); `None` if
    /// the segment is outside the mapped file.
    pub fn file_bytes(&self, file_index: usize, file_offset: u64, len: u64) -> Option<&[u8]> {
        let bytes = self.files.get(file_index)?.bytes();
        let start = usize::try_from(file_offset).ok()?;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        bytes.get(start..end)
    }
}
