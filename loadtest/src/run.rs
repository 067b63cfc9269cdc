//! A load run: load torrents, start the pinned generator threads, print a
//! live line every second, merge their stats, build the report.

use std::io::IsTerminal;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::config::{RunConfig, Transport};
use crate::net::{cores, plans, raise_nofile_limit, run_thread, Shared};
use crate::report::{Report, Summary};
use crate::stats::{Live, Stats};
use crate::torrents::LoadTorrent;
use crate::utpnet::run_thread_utp;

pub struct RunResult {
    pub stats: Stats,
    pub elapsed: Duration,
}

/// Runs the load described by `cfg` and returns the merged measurements.
pub fn run_load(cfg: &RunConfig) -> anyhow::Result<RunResult> {
    cfg.validate()?;
    let limit = raise_nofile_limit();
    if (limit as usize) < cfg.connections + 64 {
        eprintln!(
            "warning: RLIMIT_NOFILE is {limit}, below --connections {}: raise the hard limit (`ulimit -Hn`, LimitNOFILE)",
            cfg.connections
        );
    }
    let torrents = cfg
        .torrents
        .iter()
        .map(|p| LoadTorrent::load(p).map(Arc::new))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let live = Arc::new(Live::default());
    let shared = Arc::new(Shared {
        target: cfg.target,
        popularity_cdf: cfg.popularity.cumulative(torrents.len()),
        torrents,
        leecher: crate::leecher::LeecherConfig {
            pipeline: cfg.pipeline,
            pattern: cfg.pattern,
            verify: cfg.verify,
            stall_timeout: cfg.stall_timeout,
        },
        connect_timeout: cfg.connect_timeout,
        discard: cfg.discard,
        live: live.clone(),
        stop: Arc::new(AtomicBool::new(false)),
    });
    let start = Instant::now();
    let deadline = start + cfg.duration;
    let transport = cfg.transport;
    let handles = plans(cfg, cores())
        .into_iter()
        .map(|plan| {
            let sh = shared.clone();
            std::thread::Builder::new()
                .name(format!("loadgen-{:02}", plan.index))
                .spawn(move || match transport {
                    Transport::Tcp => run_thread(&sh, &plan, deadline),
                    Transport::Utp => run_thread_utp(&sh, &plan, deadline),
                })
                .context("spawn generator thread")
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    live_loop(cfg, &live, start, deadline, &handles);
    let mut stats = Stats::default();
    for h in handles {
        match h.join() {
            Ok(s) => stats.merge(&s),
            Err(_) => anyhow::bail!("a generator thread panicked"),
        }
    }
    Ok(RunResult {
        stats,
        elapsed: start.elapsed(),
    })
}

fn live_loop(
    cfg: &RunConfig,
    live: &Live,
    start: Instant,
    deadline: Instant,
    handles: &[std::thread::JoinHandle<Stats>],
) {
    let bar = (!cfg.quiet && std::io::stderr().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new(cfg.duration.as_secs().max(1));
        b.set_style(
            indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let mut last_bytes = 0u64;
    let mut last = start;
    while Instant::now() < deadline && handles.iter().any(|h| !h.is_finished()) {
        std::thread::sleep(
            Duration::from_secs(1).min(deadline.saturating_duration_since(Instant::now())),
        );
        let now = Instant::now();
        let bytes = Live::get(&live.payload_bytes);
        let rate = (bytes - last_bytes) as f64 / now.duration_since(last).as_secs_f64().max(1e-9);
        last_bytes = bytes;
        last = now;
        let msg = format!(
            "{:>8.1} MB/s  total {:>9.1} MB  conns {} (est {} failed {})  done {}  errors {}",
            rate / 1e6,
            bytes as f64 / 1e6,
            Live::get(&live.active),
            Live::get(&live.established),
            Live::get(&live.failed),
            Live::get(&live.completed),
            Live::get(&live.errors),
        );
        match &bar {
            Some(b) => {
                b.set_position(now.duration_since(start).as_secs());
                b.set_message(msg);
            }
            None if !cfg.quiet => {
                eprintln!("[{:>5.1}s] {msg}", now.duration_since(start).as_secs_f64())
            }
            None => {}
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
}

/// `ringseed-loadtest --target ...`: run, print the table, write the report.
/// Returns whether the run was clean (no errors, no hash mismatch).
pub fn main_run(cfg: &RunConfig) -> anyhow::Result<bool> {
    let result = run_load(cfg)?;
    let summary = Summary::from_stats(&result.stats, result.elapsed, cfg.connections);
    print!("{}", summary.table());
    let report = Report::new(cfg, summary);
    if let Some(path) = &cfg.report {
        let json = serde_json::to_vec_pretty(&report)?;
        std::fs::write(path, json).with_context(|| format!("write report {}", path.display()))?;
    }
    Ok(report.summary.ok)
}
