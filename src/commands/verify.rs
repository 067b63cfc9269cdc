//! `ringseed verify FILE.torrent DATA_PATH [--json] [--threads N]`: check
//! every piece of a torrent's content, report the first bad pieces with the
//! files they fall in and any missing or wrong-size files. Exit code 0 when
//! everything is good, 1 when anything is bad.

use std::process::ExitCode;

use anyhow::Context;

use crate::cli::VerifyArgs;
use crate::metainfo::Torrent;
use crate::storage::progress::Progress;
use crate::storage::{self, FileStatus, VerifyReport};

/// Bad pieces listed in text output before "... and N more".
const SHOW_BAD: usize = 20;

pub fn run(args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(&args.torrent)
        .with_context(|| format!("cannot read torrent file {}", args.torrent.display()))?;
    let torrent = parse_torrent(&bytes)
        .with_context(|| format!("cannot parse torrent file {}", args.torrent.display()))?;
    if let (Some(key), Some(proof)) = (&args.ledger_key, &args.proof) {
        super::ledger::check_proof(&torrent, key, proof, args.ledger_policy.as_deref())?;
    }
    if args.data.is_none() {
        return Ok(ExitCode::SUCCESS);
    }
    verify_torrent(&torrent, args)
}

fn parse_torrent(bytes: &[u8]) -> anyhow::Result<Torrent> {
    Ok(Torrent::from_bytes(bytes)?)
}

/// Verify `torrent` against `args.data` and print the report.
pub fn verify_torrent(torrent: &Torrent, args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let threads = args.threads.unwrap_or(0);
    let data = args
        .data
        .as_deref()
        .context("no content path given to check")?;
    let progress = if args.json {
        Progress::hidden("verify", torrent.piece_space_len)
    } else {
        Progress::new(&format!("verify {}", torrent.name), torrent.piece_space_len)
    };
    let report = storage::verify(torrent, data, threads, &|n| progress.add(n))
        .with_context(|| format!("cannot verify {} against {}", torrent.name, data.display()))?;
    progress.finish();
    let secs = progress.elapsed().as_secs_f64();
    if args.json {
        let json = report_json(torrent, &report, secs);
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print_text(torrent, &report, secs);
    }
    Ok(if report.is_all_good() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn file_names(torrent: &Torrent, files: &[usize]) -> Vec<String> {
    files
        .iter()
        .filter_map(|&i| torrent.files.get(i))
        .map(|f| f.display_path())
        .collect()
}

fn report_json(torrent: &Torrent, report: &VerifyReport, secs: f64) -> serde_json::Value {
    let bad: Vec<_> = report
        .bad_pieces
        .iter()
        .map(|b| {
            serde_json::json!({
                "index": b.index,
                "reason": b.reason,
                "files": file_names(torrent, &b.files),
            })
        })
        .collect();
    serde_json::json!({
        "name": torrent.name,
        "root": report.root,
        "ok": report.is_all_good(),
        "pieces": report.num_pieces,
        "good_pieces": report.verified.count(),
        "bad_pieces": bad,
        "file_problems": report.file_problems,
        "bytes": report.bytes_checked,
        "seconds": secs,
    })
}

fn print_text(torrent: &Torrent, report: &VerifyReport, secs: f64) {
    let rate = if secs > 0.0 {
        report.bytes_checked as f64 / secs / (1024.0 * 1024.0)
    } else {
        0.0
    };
    println!(
        "{}: {} pieces checked under {} ({} MiB in {:.2} s, {:.0} MiB/s): {} good, {} bad",
        torrent.name,
        report.num_pieces,
        report.root.display(),
        report.bytes_checked >> 20,
        secs,
        rate,
        report.verified.count(),
        report.bad_pieces.len()
    );
    for p in &report.file_problems {
        match &p.status {
            FileStatus::Missing { reason } => println!(
                "missing file {} (expected {} bytes): {reason}",
                p.path, p.expected_size
            ),
            FileStatus::WrongSize { actual } => println!(
                "wrong size: {} has {actual} bytes, expected {}",
                p.path, p.expected_size
            ),
            FileStatus::Ok => {}
        }
    }
    for b in report.bad_pieces.iter().take(SHOW_BAD) {
        println!(
            "bad piece {} ({:?}) in {}",
            b.index,
            b.reason,
            file_names(torrent, &b.files).join(", ")
        );
    }
    if report.bad_pieces.len() > SHOW_BAD {
        println!(
            "... and {} more bad pieces",
            report.bad_pieces.len() - SHOW_BAD
        );
    }
    if report.is_all_good() {
        println!("all pieces good");
    }
}
