//! Turn the serve configuration into verified, servable torrents, off the
//! shards and before they start: create torrents for `serve DIR`, open and
//! map content, verify every piece (or trust a resume record that proves
//! the data unchanged since the last full verification).

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::config::ServeConfig;
use crate::create::{create, write_atomically, CreateOptions};
use crate::metainfo::{MetaVersion, Torrent};
use crate::metrics::VerifyStats;
use crate::storage::files::resolve_data_root;
use crate::storage::progress::Progress;
use crate::storage::resume::ResumeRecord;
use crate::storage::writer::{PieceWriter, WriterConfig};
use crate::storage::{verify, Content};
use crate::wire::Bitfield;

use crate::engine::catalog::ServedTorrent;

/// A torrent ready to be served, plus what the operator is told about it.
pub struct Prepared {
    pub served: ServedTorrent,
    /// Where its `.torrent` is (created or given).
    pub torrent_path: PathBuf,
    /// Pieces that failed verification (never advertised or served).
    pub bad_pieces: u32,
    /// How the pieces were established: "verified", "resume record", "created".
    pub source: &'static str,
    /// The `serve DIR` entry it was made for, if any.
    pub dir_entry: Option<String>,
    /// Pieces are missing: the writer for fetching them (see `crate::fetch`).
    pub fetch: Option<PieceWriter>,
}

/// Prepare every torrent the configuration names.
/// Verification progress and results go to `verify_stats` (the metrics
/// endpoint is up while this runs).
///
/// `dir_trackers`: the BEP 12 tiers written into torrents `serve DIR` makes
/// (the embedded tracker's announce URL first); torrents made earlier with
/// other trackers are rewritten (the info dictionary, and so the info-hash,
/// stays the same).
pub fn prepare_all(
    cfg: &ServeConfig,
    threads: usize,
    verify_stats: &VerifyStats,
    dir_trackers: &[Vec<String>],
) -> anyhow::Result<Vec<Prepared>> {
    let state_dir = cfg.effective_state_dir();
    let mut out = Vec::new();
    if let Some(dir) = &cfg.dir {
        let state = state_dir.clone().unwrap_or_else(|| dir.join(".ringseed"));
        for entry in dir_entries(dir)? {
            let p = prepare_dir_entry(
                &entry,
                &state,
                threads,
                out.len() as u32,
                verify_stats,
                dir_trackers,
            )
            .with_context(|| format!("preparing {}", entry.display()))?;
            out.push(p);
        }
    }
    for t in &cfg.torrents {
        let p = prepare_pair(
            &t.torrent,
            &t.data,
            state_dir.as_deref(),
            cfg,
            threads,
            out.len() as u32,
            verify_stats,
        )
        .with_context(|| {
            format!(
                "preparing {} with data {}",
                t.torrent.display(),
                t.data.display()
            )
        })?;
        out.push(p);
    }
    // Two entries with the same info-hash would be ambiguous for peers.
    let mut seen = std::collections::HashSet::new();
    for p in &out {
        for h in [
            p.served.torrent.info_hash_v1.map(|h| h.0),
            p.served.torrent.info_hash_v2.map(|h| h.truncated()),
        ]
        .into_iter()
        .flatten()
        {
            if !seen.insert(h) {
                anyhow::bail!(
                    "{} is configured twice (same info-hash); remove the duplicate",
                    p.served.torrent.name
                );
            }
        }
    }
    Ok(out)
}

/// Files and top-level directories of DIR, sorted, hidden entries skipped.
pub fn dir_entries(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut entries = Vec::new();
    for e in std::fs::read_dir(dir)
        .with_context(|| format!("cannot read directory {}", dir.display()))?
    {
        let e = e?;
        let name = e.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let ft = e.file_type()?;
        if ft.is_file() || ft.is_dir() {
            entries.push(e.path());
        }
    }
    entries.sort();
    Ok(entries)
}

fn progress_for(label: &str, bytes: u64) -> Progress {
    Progress::new(label, bytes)
}

/// `serve DIR` entry `path`: reuse the torrent made last time (in `state`)
/// if its resume record proves the data unchanged, else create a hybrid
/// torrent for it (hashing every byte, with a progress line).
pub fn prepare_dir_entry(
    path: &Path,
    state: &Path,
    threads: usize,
    id: u32,
    verify_stats: &VerifyStats,
    trackers: &[Vec<String>],
) -> anyhow::Result<Prepared> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let torrent_path = state.join(format!("{name}.torrent"));
    std::fs::create_dir_all(state)
        .with_context(|| format!("cannot create state directory {}", state.display()))?;
    // Reuse the torrent made last time if the data is provably unchanged.
    if let Ok(bytes) = std::fs::read(&torrent_path) {
        if let Ok(mut torrent) = Torrent::from_bytes(&bytes) {
            if let Ok(Some(rec)) = ResumeRecord::load(&torrent, state) {
                // DIR mode: the entry itself is the content root.
                if let Ok(have) = rec.check(&torrent, path) {
                    if torrent.trackers != trackers {
                        torrent.trackers = trackers.to_vec();
                        write_atomically(&torrent_path, &encode_with_trackers(&torrent))?;
                    }
                    let content = Content::open(&torrent, path)?;
                    let bad = torrent.num_pieces - have.count();
                    let served = ServedTorrent::new(id, torrent, content, have)?;
                    return Ok(Prepared {
                        served,
                        torrent_path,
                        bad_pieces: bad,
                        source: "resume record",
                        dir_entry: Some(name),
                        fetch: None,
                    });
                }
            }
        }
    }
    let opts = CreateOptions {
        version: MetaVersion::Hybrid,
        trackers: trackers.to_vec(),
        threads,
        creation_date: None,
        ..CreateOptions::default()
    };
    let total = dir_size(path);
    let progress = progress_for(&format!("hashing {name}"), total);
    let started = std::time::Instant::now();
    let created = create(path, &opts, &|n| progress.add(n))
        .with_context(|| format!("creating a torrent for {}", path.display()))?;
    progress.finish();
    write_atomically(&torrent_path, &created.bytes)?;
    let torrent = created.torrent;
    verify_stats.queue(u64::from(torrent.num_pieces));
    verify_stats.record_many(
        u64::from(torrent.num_pieces),
        0,
        torrent.total_size,
        started.elapsed(),
    );
    let content = Content::open(&torrent, path)?;
    // We just hashed every byte: every piece is verified as of now.
    let have = Bitfield::full(torrent.num_pieces);
    if let Ok(rec) = ResumeRecord::capture(&torrent, content.root(), &have) {
        let _ = rec.save(&torrent, state);
    }
    let served = ServedTorrent::new(id, torrent, content, have)?;
    Ok(Prepared {
        served,
        torrent_path,
        bad_pieces: 0,
        source: "created",
        dir_entry: Some(name),
        fetch: None,
    })
}

/// A `.torrent` with `torrent.trackers` and the unchanged info dictionary.
fn encode_with_trackers(torrent: &Torrent) -> Vec<u8> {
    use crate::bencode::{encode_bytes, DictBuilder};
    let mut d = DictBuilder::new();
    if let Some(first) = torrent.trackers.iter().flatten().next() {
        d.bytes("announce", first);
    }
    if torrent.trackers.iter().flatten().count() > 1 {
        let mut list = vec![b'l'];
        for tier in &torrent.trackers {
            list.push(b'l');
            for url in tier {
                encode_bytes(&mut list, url.as_bytes());
            }
            list.push(b'e');
        }
        list.push(b'e');
        d.raw("announce-list", list);
    }
    if let Some(c) = &torrent.created_by {
        d.bytes("created by", c);
    }
    d.raw("info", torrent.info_bytes.clone());
    if let Some(layers) = &torrent.v2_piece_layers {
        let mut entries: Vec<([u8; 32], &Vec<[u8; 32]>)> = torrent
            .files
            .iter()
            .zip(layers)
            .filter(|(_, l)| !l.is_empty())
            .filter_map(|(f, l)| f.pieces_root.map(|r| (r, l)))
            .collect();
        entries.sort_by_key(|e| e.0);
        entries.dedup_by(|a, b| a.0 == b.0);
        let mut pl = DictBuilder::new();
        for (root, layer) in entries {
            pl.bytes(root, layer.concat());
        }
        d.raw("piece layers", pl.finish());
    }
    d.finish()
}

fn dir_size(path: &Path) -> u64 {
    let Ok(meta) = std::fs::metadata(path) else {
        return 0;
    };
    if meta.is_file() {
        return meta.len();
    }
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(path) {
        for e in rd.flatten() {
            total += dir_size(&e.path());
        }
    }
    total
}

fn prepare_pair(
    torrent_file: &Path,
    data: &Path,
    state: Option<&Path>,
    cfg: &ServeConfig,
    threads: usize,
    id: u32,
    verify_stats: &VerifyStats,
) -> anyhow::Result<Prepared> {
    let magnet_file;
    let (torrent, torrent_file) = match torrent_file.to_str().filter(|s| s.starts_with("magnet:")) {
        Some(uri) => {
            let cache = state.map_or_else(|| save_path_state(data), Path::to_path_buf);
            let (t, path) = torrent_for_magnet(uri, &cache, cfg)?;
            magnet_file = path;
            (t, magnet_file.as_path())
        }
        None => {
            let bytes = std::fs::read(torrent_file)
                .with_context(|| format!("cannot read {}", torrent_file.display()))?;
            let t = Torrent::from_bytes(&bytes)
                .with_context(|| format!("{} is not a valid torrent", torrent_file.display()))?;
            (t, torrent_file)
        }
    };
    prepare_torrent(
        torrent,
        torrent_file,
        data,
        state,
        cfg.skip_verify,
        threads,
        id,
        verify_stats,
        true,
    )
}

/// A parsed torrent and its `--data PATH`: verified (or trusted from its
/// resume record) when the content is there, else prepared for fetching
/// ([`Prepared::fetch`]) when it is missing or an earlier fetch of it is
/// unfinished. `torrent_file`: where its `.torrent` is, for the operator.
/// `fill_existing`: files that exist but are short or missing from an
/// existing PATH are fetched too (`serve`); else that is an error (the
/// control API: a mistyped path must not start a download).
#[allow(clippy::too_many_arguments)]
pub fn prepare_torrent(
    torrent: Torrent,
    torrent_file: &Path,
    data: &Path,
    state: Option<&Path>,
    skip_verify: bool,
    threads: usize,
    id: u32,
    verify_stats: &VerifyStats,
    fill_existing: bool,
) -> anyhow::Result<Prepared> {
    let root = fetch_or_data_root(data, &torrent)?;
    // Fetching keeps a resume record; without --state-dir it goes beside
    // the data, where a restart finds it.
    let fetch_state = state.map_or_else(|| default_fetch_state(&root), Path::to_path_buf);
    let record = ResumeRecord::load(&torrent, &fetch_state).ok().flatten();
    let unfinished = record
        .as_ref()
        .is_some_and(|r| r.check(&torrent, &root).map_or(true, |h| !h.is_full()));
    let content = match Content::open(&torrent, data) {
        Ok(c) if !unfinished => c,
        Ok(_) => return prepare_fetch(torrent, &root, &fetch_state, torrent_file, id),
        Err(
            crate::storage::StorageError::MissingFile { .. }
            | crate::storage::StorageError::WrongSize { .. }
            | crate::storage::StorageError::DataPathMissing { .. },
        ) if !skip_verify && (fill_existing || !data.exists()) => {
            return prepare_fetch(torrent, &root, &fetch_state, torrent_file, id)
        }
        Err(e) => return Err(e.into()),
    };
    let state = state.or(record.is_some().then_some(fetch_state.as_path()));
    let mut p = prepare_opened(
        torrent,
        content,
        torrent_file.to_path_buf(),
        state,
        skip_verify,
        threads,
        verify_stats,
    )?;
    p.served.id = crate::wire::TorrentId(id);
    Ok(p)
}

/// The content root for `--data PATH`: as `storage::files` resolves it when
/// the content is there; a PATH that does not exist is the content itself;
/// an existing directory without any of a multi-file torrent's files gets
/// the content in `PATH/NAME` (a "save path", as every client has it).
fn fetch_or_data_root(data: &Path, torrent: &Torrent) -> anyhow::Result<PathBuf> {
    if !data.exists() {
        return Ok(data.to_path_buf());
    }
    let root = resolve_data_root(data, &torrent.name, &torrent.files, torrent.multi_file)?;
    let empty = |dir: &Path| {
        !torrent
            .files
            .iter()
            .any(|f| crate::storage::files::file_path(dir, true, f).exists())
    };
    if torrent.multi_file && root == data && data.is_dir() && empty(data) {
        return Ok(data.join(&torrent.name));
    }
    Ok(root)
}

/// [`default_fetch_state`] before the torrent's name is known: for an
/// existing directory (a save path) its `.ringseed/`, else the one beside.
fn save_path_state(data: &Path) -> PathBuf {
    if data.is_dir() {
        data.join(".ringseed")
    } else {
        default_fetch_state(data)
    }
}

/// The torrent of a magnet link: its info dictionary from `cache`
/// (`HASH.info`) if an earlier start saved it, else fetched from peers
/// (BEP 9), checked against the info-hash and saved there; the link's
/// trackers are its tiers. (Not a `.torrent`: a hybrid's piece layers are
/// not in the info dictionary, and its pieces are checked with v1 SHA-1.)
fn torrent_for_magnet(
    uri: &str,
    cache: &Path,
    cfg: &ServeConfig,
) -> anyhow::Result<(Torrent, PathBuf)> {
    use crate::metainfo::magnet::Magnet;
    let m = Magnet::parse(uri).with_context(|| format!("bad magnet link {uri}"))?;
    let hex = m
        .info_hash_v1
        .map(|h| h.to_string())
        .or_else(|| m.info_hash_v2.map(|h| h.to_string()))
        .unwrap_or_default();
    let path = cache.join(format!("{hex}.info"));
    let name = m.display_name.clone().unwrap_or_else(|| hex.clone());
    let info = match std::fs::read(&path) {
        Ok(info) => info,
        Err(_) => {
            tracing::info!(torrent = %name, "fetching the metadata of a magnet link");
            let port = cfg.announce_port.unwrap_or(cfg.listen.port()).max(1);
            let info = crate::fetch::metadata::fetch_info(
                &m,
                &cfg.peers,
                // Not the engine's: the metadata connection is gone before
                // the engine serves; distinct per box, as libtorrent drops
                // a second connection with a peer id it already has.
                crate::wire::PeerConfig::random_peer_id(),
                port,
                std::time::Duration::from_secs(60),
            )?;
            std::fs::create_dir_all(cache)
                .with_context(|| format!("cannot create {}", cache.display()))?;
            write_atomically(&path, &info)
                .with_context(|| format!("cannot save {}", path.display()))?;
            tracing::info!(torrent = %name, file = %path.display(), "metadata fetched and saved");
            info
        }
    };
    let mut torrent = Torrent::from_info_bytes(&info).with_context(|| {
        format!(
            "the metadata of {name} ({}) is not a valid info dictionary",
            path.display()
        )
    })?;
    if torrent.info_hash_v1 != m.info_hash_v1 {
        anyhow::bail!("{} does not belong to {uri}: delete it", path.display());
    }
    torrent.trackers = m.trackers.iter().map(|t| vec![t.clone()]).collect();
    Ok((torrent, path))
}

/// Where a fetch keeps its resume record without `--state-dir`: a
/// `.ringseed` directory beside the content.
fn default_fetch_state(root: &Path) -> PathBuf {
    root.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join(".ringseed")
}

/// A torrent whose content is missing or incomplete: its files are created
/// (or checked, for what is there) by the piece writer, and it is served as
/// a partial seed while `crate::fetch` downloads the rest.
fn prepare_fetch(
    torrent: Torrent,
    root: &Path,
    state: &Path,
    torrent_file: &Path,
    id: u32,
) -> anyhow::Result<Prepared> {
    let wcfg = WriterConfig {
        state_dir: Some(state.to_path_buf()),
        ..WriterConfig::default()
    };
    let (writer, report) = PieceWriter::open(std::sync::Arc::new(torrent.clone()), root, wcfg)
        .with_context(|| format!("cannot fetch {} into {}", torrent.name, root.display()))?;
    let content = Content::open_root(root, &torrent.files, torrent.multi_file)?;
    let have = report.verified.count();
    let missing = torrent.num_pieces - have;
    let served = ServedTorrent::fetching(id, torrent, content, &report.verified)?;
    Ok(Prepared {
        served,
        torrent_path: torrent_file.to_path_buf(),
        bad_pieces: 0,
        source: if report.from_resume {
            "fetching; resumed from its record"
        } else if have > 0 {
            "fetching; the pieces present were checked"
        } else {
            "fetching"
        },
        dir_entry: None,
        fetch: (missing > 0).then_some(writer),
    })
}

/// A parsed torrent whose content is open: trust its resume record if it
/// proves the data unchanged, else verify every piece (with a progress
/// line), and save a new record. `torrent_path`: where its `.torrent` is,
/// for the operator.
pub fn prepare_opened(
    torrent: Torrent,
    content: Content,
    torrent_path: PathBuf,
    state: Option<&Path>,
    skip_verify: bool,
    threads: usize,
    verify_stats: &VerifyStats,
) -> anyhow::Result<Prepared> {
    let torrent_file = torrent_path.as_path();
    let id = 0;
    if let Some(state) = state {
        if let Ok(Some(rec)) = ResumeRecord::load(&torrent, state) {
            if let Ok(have) = rec.check(&torrent, content.root()) {
                let bad = torrent.num_pieces - have.count();
                let served = ServedTorrent::new(id, torrent, content, have)?;
                return Ok(Prepared {
                    served,
                    torrent_path: torrent_file.to_path_buf(),
                    bad_pieces: bad,
                    source: "resume record",
                    dir_entry: None,
                    fetch: None,
                });
            }
        }
    }
    let (have, bad, source) = if skip_verify {
        let have = Bitfield::full(torrent.num_pieces);
        tracing::warn!(torrent = %torrent.name, "--skip-verify: serving pieces without checking them");
        (have, 0, "trusted (--skip-verify)")
    } else {
        let progress = progress_for(
            &format!("verifying {}", torrent.name),
            torrent.piece_space_len,
        );
        verify_stats.queue(u64::from(torrent.num_pieces));
        let started = std::time::Instant::now();
        let report = verify::verify_content(&torrent, &content, threads, &|n| progress.add(n))?;
        let bad = report.bad_pieces.len() as u64;
        verify_stats.record_many(
            u64::from(torrent.num_pieces).saturating_sub(bad),
            bad,
            report.bytes_checked,
            started.elapsed(),
        );
        progress.finish();
        for bad in report.bad_pieces.iter().take(10) {
            let files: Vec<String> = bad
                .files
                .iter()
                .filter_map(|&i| torrent.files.get(i).map(|f| f.display_path()))
                .collect();
            tracing::warn!(
                torrent = %torrent.name,
                piece = bad.index,
                files = %files.join(", "),
                "piece failed its hash check and will not be served: file damaged or changed on disk? run `ringseed verify`"
            );
        }
        let bad = report.bad_pieces.len() as u32;
        if let Some(state) = state {
            if let Ok(rec) = ResumeRecord::capture(&torrent, content.root(), &report.verified) {
                let _ = rec.save(&torrent, state);
            }
        }
        (report.verified, bad, "verified")
    };
    let served = ServedTorrent::new(id, torrent, content, have)?;
    Ok(Prepared {
        served,
        torrent_path: torrent_file.to_path_buf(),
        bad_pieces: bad,
        source,
        dir_entry: None,
        fetch: None,
    })
}
