//! `ringseed create PATH -o OUT.torrent`.

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::cli::{CreateArgs, TorrentKind};
use crate::create::{create_from_plan, plan, write_atomically, CreateOptions};
use crate::metainfo::MetaVersion;

pub fn run(args: &CreateArgs) -> anyhow::Result<ExitCode> {
    let version = match args.kind() {
        TorrentKind::V1 => MetaVersion::V1,
        TorrentKind::V2 => MetaVersion::V2,
        TorrentKind::Hybrid => MetaVersion::Hybrid,
    };
    let piece_length = args.piece_length.as_deref().map(parse_size).transpose()?;
    let mut opts = CreateOptions {
        version,
        piece_length,
        trackers: tracker_tiers(&args.trackers),
        web_seeds: args.web_seeds.clone(),
        private: args.private,
        comment: args.comment.clone(),
        ..CreateOptions::default()
    };
    if let Some(threads) = args.threads {
        opts.threads = threads.max(1);
    }
    if !args.no_date {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        opts.creation_date = Some(now.as_secs() as i64);
    }
    let plan = plan(&args.path, version, piece_length)
        .with_context(|| format!("cannot make a torrent of {}", args.path.display()))?;
    let passes = if version == MetaVersion::Hybrid { 2 } else { 1 };
    let progress = Progress::new(plan.total_size * passes);
    let created = create_from_plan(&plan, &opts, &|n| progress.add(n))?;
    progress.finish();
    write_atomically(&args.output, &created.bytes)?;
    let t = &created.torrent;
    eprintln!(
        "wrote {} ({} files, {} pieces of {} bytes)",
        args.output.display(),
        t.files.len(),
        t.num_pieces,
        t.piece_length
    );
    if let Some(h) = t.info_hash_v1 {
        println!("info-hash v1: {h}");
    }
    if let Some(h) = t.info_hash_v2 {
        println!("info-hash v2: {h}");
    }
    println!("magnet: {}", t.magnet_uri());
    Ok(ExitCode::SUCCESS)
}

/// Each `--tracker` value is one BEP 12 tier; commas separate URLs of the
/// same tier.
fn tracker_tiers(values: &[String]) -> Vec<Vec<String>> {
    values
        .iter()
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .filter(|tier| !tier.is_empty())
        .collect()
}

/// `16384`, `16K`, `4M`, `1MiB`.
fn parse_size(s: &str) -> anyhow::Result<u64> {
    let t = s.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(digits_end);
    let n: u64 = num
        .parse()
        .with_context(|| format!("--piece-length {s:?} is not a number (e.g. 262144, 256K, 4M)"))?;
    let mult = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        _ => bail!("--piece-length {s:?}: unknown suffix {suffix:?} (use K or M)"),
    };
    n.checked_mul(mult)
        .with_context(|| format!("--piece-length {s:?} is too large"))
}

/// indicatif bar on a terminal, a plain line every few seconds otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    done: AtomicU64,
    total: u64,
    last_line: Mutex<Instant>,
}

impl Progress {
    fn new(total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "hashing {bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
            ) {
                bar.set_style(style);
            }
            bar
        });
        Progress {
            bar,
            done: AtomicU64::new(0),
            total,
            last_line: Mutex::new(Instant::now()),
        }
    }
    fn add(&self, n: u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        if let Some(bar) = &self.bar {
            bar.set_position(done);
        } else if let Ok(mut last) = self.last_line.try_lock() {
            if last.elapsed() >= Duration::from_secs(5) {
                *last = Instant::now();
                eprintln!(
                    "hashing: {done} of {} bytes ({}%)",
                    self.total,
                    done * 100 / self.total.max(1)
                );
            }
        }
    }
    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_tiers() {
        assert_eq!(parse_size("16384").unwrap(), 16384);
        assert_eq!(parse_size("256K").unwrap(), 262144);
        assert_eq!(parse_size("4MiB").unwrap(), 4 << 20);
        assert!(parse_size("4G").is_err());
        assert!(parse_size("abc").is_err());
        assert_eq!(
            tracker_tiers(&["a,b".into(), "c".into(), " ".into()]),
            vec![vec!["a".to_string(), "b".into()], vec!["c".into()]]
        );
    }
}
