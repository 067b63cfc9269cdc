//! The verified piece writer (`storage::writer`): v1, v2 and hybrid pieces
//! checked and written into multi-file layouts, bad pieces never written,
//! resume from what was verified, and the bad-input cases: existing
//! non-matching files, a read-only data path, a full disk.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use ringseed::metainfo::{MetaVersion, Torrent};
use ringseed::storage::hash::PieceCheck;
use ringseed::storage::writer::{PieceWriter, WriteError, WriteOutcome, WriterConfig};
use support::engine::{data, make_torrent, Fixture};

const PL: u64 = 32 * 1024;

/// A multi-file source: a file of 2.5 pieces, a tiny one, one of 3 pieces.
fn source(dir: &Path) -> PathBuf {
    let root = dir.join("release");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("a.bin"), data(1, (PL * 5 / 2) as usize)).unwrap();
    std::fs::write(root.join("sub/b.txt"), data(2, 1000)).unwrap();
    std::fs::write(root.join("sub/c.bin"), data(3, (PL * 3) as usize)).unwrap();
    root
}

fn fixture(dir: &Path, version: MetaVersion) -> (Fixture, PathBuf) {
    let src = source(dir);
    let fix = make_torrent(&src, version, Some(PL));
    (fix, src)
}

fn piece(fix: &Fixture, p: u32) -> Vec<u8> {
    let pl = fix.torrent.piece_length as usize;
    let start = p as usize * pl;
    let end = (start + pl).min(fix.piece_space.len());
    fix.piece_space[start..end].to_vec()
}

fn cfg(state: Option<&Path>) -> WriterConfig {
    WriterConfig {
        queue: 4,
        state_dir: state.map(Path::to_path_buf),
        resume_interval: Duration::ZERO,
    }
}

fn outcome(w: &PieceWriter) -> WriteOutcome {
    w.outcome_timeout(Duration::from_secs(10))
        .expect("an outcome within 10 s")
}

fn same_files(t: &Torrent, a: &Path, b: &Path) {
    for f in &t.files {
        let rel: PathBuf = f.path.iter().collect();
        let x = std::fs::read(a.join(&rel)).unwrap();
        let y = std::fs::read(b.join(&rel)).unwrap();
        assert!(x == y, "{} differs", rel.display());
    }
}

fn write_all_pieces(version: MetaVersion) {
    let dir = tempfile::tempdir().unwrap();
    let (fix, src) = fixture(dir.path(), version);
    let t = Arc::new(fix.torrent.clone());
    let dst = dir.path().join("fetched");
    let (w, report) = PieceWriter::open(t.clone(), &dst, cfg(None)).unwrap();
    assert_eq!(report.verified.count(), 0);
    // Out of order, as a swarm delivers them.
    let mut order: Vec<u32> = (0..t.num_pieces).rev().collect();
    order.swap(0, 2);
    for &p in &order {
        w.submit(p, piece(&fix, p)).unwrap();
        match outcome(&w) {
            WriteOutcome::Written { piece, .. } => assert_eq!(piece, p),
            other => panic!("piece {p}: {other:?}"),
        }
    }
    let verified = w.finish().unwrap();
    assert!(verified.is_full());
    same_files(&t, &src, &dst);
}

#[test]
fn v1_pieces_are_checked_and_written_into_every_file() {
    write_all_pieces(MetaVersion::V1);
}

#[test]
fn v2_pieces_are_checked_against_the_merkle_layers_and_written() {
    write_all_pieces(MetaVersion::V2);
}

#[test]
fn hybrid_pieces_are_checked_both_ways_and_written() {
    write_all_pieces(MetaVersion::Hybrid);
}

#[test]
fn a_bad_piece_is_never_written_nor_verified() {
    for version in [MetaVersion::V1, MetaVersion::V2] {
        let dir = tempfile::tempdir().unwrap();
        let (fix, _) = fixture(dir.path(), version);
        let t = Arc::new(fix.torrent.clone());
        let dst = dir.path().join("fetched");
        let state = dir.path().join("state");
        let (w, _) = PieceWriter::open(t.clone(), &dst, cfg(Some(&state))).unwrap();
        let mut bad = piece(&fix, 1);
        bad[100] ^= 1;
        w.submit(1, bad).unwrap();
        match outcome(&w) {
            WriteOutcome::Mismatch {
                piece: 1, check, ..
            } => {
                assert_ne!(check, PieceCheck::Good)
            }
            other => panic!("{other:?}"),
        }
        // Wrong length: refused, and the writer stops.
        w.submit(0, vec![0; 10]).unwrap();
        assert!(matches!(
            outcome(&w),
            WriteOutcome::Failed {
                piece: 0,
                error: WriteError::WrongLength { .. }
            }
        ));
        let verified = w.finish().unwrap();
        assert_eq!(verified.count(), 0);
        let a = std::fs::read(dst.join("a.bin")).unwrap();
        assert!(a.iter().all(|&b| b == 0), "{version:?}: nothing written");
    }
}

#[test]
fn an_interrupted_fetch_resumes_from_what_it_verified() {
    let dir = tempfile::tempdir().unwrap();
    let (fix, src) = fixture(dir.path(), MetaVersion::Hybrid);
    let t = Arc::new(fix.torrent.clone());
    let dst = dir.path().join("fetched");
    let state = dir.path().join("state");
    let (w, _) = PieceWriter::open(t.clone(), &dst, cfg(Some(&state))).unwrap();
    for p in [0, 3, 5] {
        w.submit(p, piece(&fix, p)).unwrap();
        assert!(matches!(outcome(&w), WriteOutcome::Written { .. }));
    }
    drop(w); // interrupted: no finish()

    let (w, report) = PieceWriter::open(t.clone(), &dst, cfg(Some(&state))).unwrap();
    assert!(report.from_resume, "the record matches the files");
    let got: Vec<u32> = (0..t.num_pieces)
        .filter(|&p| report.verified.get(p))
        .collect();
    assert_eq!(got, vec![0, 3, 5]);
    drop(w);

    // The files changed after the record (a write the record never saw):
    // every present piece is hashed again; our own files are no conflict.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dst.join("sub/c.bin"))
        .unwrap();
    f.set_len(PL * 3).unwrap();
    let mtime = std::time::SystemTime::now() + Duration::from_secs(5);
    f.set_modified(mtime).unwrap();
    drop(f);
    let (w, report) = PieceWriter::open(t.clone(), &dst, cfg(Some(&state))).unwrap();
    assert!(!report.from_resume);
    assert_eq!(
        report.hashed, t.num_pieces,
        "sparse files: every piece present"
    );
    let got: Vec<u32> = (0..t.num_pieces)
        .filter(|&p| report.verified.get(p))
        .collect();
    assert_eq!(got, vec![0, 3, 5]);
    for p in 0..t.num_pieces {
        if !report.verified.get(p) {
            w.submit(p, piece(&fix, p)).unwrap();
            assert!(matches!(outcome(&w), WriteOutcome::Written { .. }));
        }
    }
    assert!(w.finish().unwrap().is_full());
    same_files(&t, &src, &dst);
}

#[test]
fn existing_files_that_do_not_match_are_a_conflict_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (fix, src) = fixture(dir.path(), MetaVersion::V1);
    let t = Arc::new(fix.torrent.clone());
    let dst = dir.path().join("fetched");
    std::fs::create_dir_all(&dst).unwrap();
    let other = data(99, (PL * 5 / 2) as usize);
    std::fs::write(dst.join("a.bin"), &other).unwrap();
    let err = PieceWriter::open(t.clone(), &dst, cfg(None))
        .err()
        .expect("conflict");
    assert!(
        matches!(&err, WriteError::FileConflict { path, .. } if path.ends_with("a.bin")),
        "{err}"
    );
    assert!(err.to_string().contains("move it away"), "{err}");
    assert_eq!(std::fs::read(dst.join("a.bin")).unwrap(), other);
    assert!(!dst.join("sub").exists(), "nothing created");

    // Larger than the torrent's file: a conflict too.
    std::fs::write(dst.join("a.bin"), data(1, (PL * 3) as usize)).unwrap();
    assert!(matches!(
        PieceWriter::open(t.clone(), &dst, cfg(None)),
        Err(WriteError::FileConflict { .. })
    ));

    // A correct copy of one file made by other means: kept and verified.
    std::fs::copy(src.join("a.bin"), dst.join("a.bin")).unwrap();
    let (w, report) = PieceWriter::open(t.clone(), &dst, cfg(None)).unwrap();
    assert!(
        report.verified.get(0) && report.verified.get(1),
        "a.bin's whole pieces"
    );
    assert!(!report.verified.get(t.num_pieces - 1));
    drop(w);

    // A directory where a file should be.
    let dst2 = dir.path().join("fetched2");
    std::fs::create_dir_all(dst2.join("a.bin")).unwrap();
    assert!(matches!(
        PieceWriter::open(t, &dst2, cfg(None)),
        Err(WriteError::NotAFile { .. })
    ));
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// A tmpfs mounted by the test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, opts: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn skip_or_fail(what: &str) {
    let msg = format!("SKIPPED: {what}");
    assert!(!ci(), "{msg} (CI=true: this must run)");
    eprintln!("\n!!!!!!!! {msg} !!!!!!!!\n");
}

#[test]
fn a_read_only_data_path_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (fix, _) = fixture(dir.path(), MetaVersion::V1);
    let t = Arc::new(fix.torrent.clone());
    let ro = dir.path().join("ro");
    let _mount;
    if is_root() {
        match Tmpfs::mount(&ro, "ro,size=1m") {
            Some(m) => _mount = m,
            None => return skip_or_fail("root but cannot mount a read-only tmpfs"),
        }
    } else {
        std::fs::create_dir_all(&ro).unwrap();
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    }
    let err = PieceWriter::open(t, &ro.join("release"), cfg(None))
        .err()
        .expect("read-only");
    assert!(matches!(err, WriteError::ReadOnly { .. }), "{err:?}");
    assert!(err.to_string().contains("read-only"), "{err}");
}

#[test]
fn a_full_disk_is_a_clear_error_and_keeps_what_was_verified() {
    if !is_root() {
        return skip_or_fail("a full disk needs a small tmpfs, which needs root");
    }
    let dir = tempfile::tempdir().unwrap();
    let (fix, _) = fixture(dir.path(), MetaVersion::V1);
    let t = Arc::new(fix.torrent.clone());
    let small = dir.path().join("small");
    // Room for about 2 of the 6 pieces.
    let Some(_mount) = Tmpfs::mount(&small, "size=64k") else {
        return skip_or_fail("cannot mount a small tmpfs");
    };
    let state = dir.path().join("state");
    let dst = small.join("release");
    let (w, _) = PieceWriter::open(t.clone(), &dst, cfg(Some(&state))).unwrap();
    let mut written = Vec::new();
    let mut full = None;
    for p in 0..t.num_pieces {
        if w.submit(p, piece(&fix, p)).is_err() {
            break;
        }
        match outcome(&w) {
            WriteOutcome::Written { piece, .. } => written.push(piece),
            WriteOutcome::Failed { piece, error } => {
                full = Some((piece, error));
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    let (piece_no, error) = full.expect("the disk fills up");
    assert!(
        matches!(error, WriteError::DiskFull { piece, .. } if piece == piece_no),
        "{error:?}"
    );
    assert!(error.to_string().contains("disk full"), "{error}");
    assert!(!written.is_empty(), "some pieces fit");
    let verified = w.finish().unwrap();
    assert!(!verified.get(piece_no), "the failed piece is not verified");
    // What was verified is kept: the resume record holds exactly it.
    let record = ringseed::storage::resume::ResumeRecord::load(&t, &state)
        .unwrap()
        .expect("record saved");
    let bits = record.check(&t, &dst).expect("record matches the files");
    let kept: Vec<u32> = (0..t.num_pieces).filter(|&p| bits.get(p)).collect();
    assert_eq!(kept, written);
}
