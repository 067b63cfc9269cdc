//! `ringseed serve`: prepare (create/verify) torrents, start the shards,
//! wait for SIGINT/SIGTERM, shut down within 2 s (a second signal exits at
//! once).

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::cli::ServeArgs;
use crate::config::{MetricsEndpoint, ServeConfig};
use crate::engine::prepare::prepare_all;
use crate::engine::{Catalog, Engine, EngineConfig, EngineObservers, ShardConfig};
use crate::metainfo::magnet::Magnet;
use crate::metrics::{BuildInfo, MetricsServer, MetricsSources, VerifyStats};
use crate::wire::PeerConfig;

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let cfg = ServeConfig::load(&args)?;
    let term = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal while shutting down exits at once (code 130).
        signal_hook::flag::register_conditional_shutdown(sig, 130, term.clone())
            .context("installing signal handlers")?;
        signal_hook::flag::register(sig, term.clone()).context("installing signal handlers")?;
    }

    // Counters exist before the engine so the metrics endpoint is up (and
    // shows verification progress) from the start.
    let observers = EngineObservers::new(cfg.shards);
    let verify_stats = Arc::new(VerifyStats::default());
    let metrics = match cfg.metrics {
        MetricsEndpoint::Off => None,
        MetricsEndpoint::Listen(addr) => {
            let sources = MetricsSources {
                shards: observers.stats.clone(),
                histograms: observers.histograms.clone(),
                verify: verify_stats.clone(),
                build: BuildInfo::current(),
            };
            let server = MetricsServer::start(addr, sources).with_context(|| {
                format!("cannot serve metrics on {addr}: use --metrics ADDR with a free port, or --metrics off")
            })?;
            println!("metrics on http://{}/metrics", server.local_addr());
            Some(server)
        }
    };

    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let prepared = prepare_all(&cfg, threads, &verify_stats)?;
    if prepared.is_empty() {
        anyhow::bail!("nothing to seed: the directory is empty (hidden entries are skipped)");
    }

    let mut peer = PeerConfig {
        reqq: cfg.max_requests,
        handshake_timeout: cfg.handshake_timeout,
        idle_timeout: cfg.idle_timeout,
        ..PeerConfig::default()
    };
    peer.listen_port = Some(cfg.listen.port()).filter(|p| *p != 0);
    let shard = ShardConfig {
        peer,
        choker: cfg.choker_config(),
        send_zc: cfg.send_zc,
        ..ShardConfig::default()
    };
    let engine_cfg = EngineConfig {
        listen: cfg.listen,
        shards: cfg.shards,
        pin: true,
        max_connections: cfg.max_connections as usize,
        max_per_ip: cfg.max_per_ip,
        shard,
    };

    let mut infos = Vec::new();
    let mut served = Vec::new();
    for p in prepared {
        let t = &p.served.torrent;
        let have = p.served.have.count();
        infos.push(format!(
            "torrent {name}\n  size      {size} bytes in {files} file(s), {pieces} pieces of {plen} bytes ({have} verified, {bad} bad; {src})\n  v1        {v1}\n  v2        {v2}\n  file      {path}\n  magnet    {magnet}",
            name = t.name,
            size = t.total_size,
            files = t.files.len(),
            pieces = t.num_pieces,
            plen = t.piece_length,
            bad = p.bad_pieces,
            src = p.source,
            v1 = t.info_hash_v1.map_or("-".into(), |h| h.to_string()),
            v2 = t.info_hash_v2.map_or("-".into(), |h| h.to_string()),
            path = p.torrent_path.display(),
            magnet = Magnet::for_torrent(t).to_uri(),
        ));
        served.push(p.served);
    }
    let catalog = Arc::new(Catalog::new(served));
    // Files changed on disk: withdraw, re-verify, restore (storage::watch).
    let data_watch = catalog.watch_data();
    let engine =
        Engine::start_observed(engine_cfg, catalog, observers).context("starting the engine")?;
    for info in &infos {
        println!("{info}");
    }
    println!(
        "listening on {} with {} shard(s)",
        engine.local_addr(),
        cfg.shards
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();

    while !term.load(Ordering::Relaxed) && !engine.any_shard_exited() {
        std::thread::sleep(Duration::from_millis(50));
    }
    let started = Instant::now();
    tracing::info!("shutting down");
    engine.shutdown();
    let result = engine.join();
    drop(data_watch);
    tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "stopped");
    if let Some(m) = metrics {
        m.shutdown();
    }
    result.context("engine")?;
    Ok(ExitCode::SUCCESS)
}
