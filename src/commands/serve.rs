//! `ringseed serve`: prepare (create/verify) torrents, start the shards,
//! the control API and the DIR follower (torrents added and removed while
//! serving, see `control`), wait for SIGINT/SIGTERM, shut down within 2 s
//! (a second signal exits at once).

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::cli::ServeArgs;
use crate::config::{MetricsEndpoint, ServeConfig};
use crate::control::dir::DirFollower;
use crate::control::registry::{Origin, Registry, RegistryConfig};
use crate::control::{HttpServer, HttpServerConfig};
use crate::engine::{Catalog, Engine, EngineConfig, EngineObservers, LiveCatalog, ShardConfig};
use crate::fetch::{Fetch, FetchConfig, FetchList};
use crate::metainfo::magnet::Magnet;
use crate::metrics::{BuildInfo, MetricsServer, MetricsSources, TorrentCounts, VerifyStats};
use crate::prepare::prepare_all;
use crate::storage::watch::DataChangeStats;
use crate::tracker::client::{AnnounceConfig, AnnounceTarget, Announcer};
use crate::tracker::server::{EmbeddedTracker, SeedPeer, TrackerConfig};
use crate::wire::PeerConfig;

/// The addresses of our own listener, never dialled by a fetch.
fn own_addrs(listen: std::net::SocketAddr) -> Vec<std::net::SocketAddr> {
    if listen.ip().is_unspecified() {
        vec![
            std::net::SocketAddr::from(([127, 0, 0, 1], listen.port())),
            std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, listen.port())),
        ]
    } else {
        vec![listen]
    }
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let cfg = ServeConfig::load(&args)?;
    super::set_log_level(&cfg.log_level);
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
    let data_stats = Arc::new(DataChangeStats::default());
    // The release ledger first: --ledger-required decides what is served.
    let ledger = super::ledger::start_node(&cfg.ledger)?;
    let torrent_counts = Arc::new(TorrentCounts::default());
    let fetch_list = Arc::new(FetchList::default());
    let metrics = match cfg.metrics {
        MetricsEndpoint::Off => None,
        MetricsEndpoint::Listen(addr) => {
            let sources = MetricsSources {
                shards: observers.stats.clone(),
                histograms: observers.histograms.clone(),
                verify: verify_stats.clone(),
                data: data_stats.clone(),
                torrents: torrent_counts.clone(),
                build: BuildInfo::current(),
                ledger: ledger.as_ref().map(|l| l.node.stats.clone()),
                fetches: Arc::clone(&fetch_list),
            };
            let server = MetricsServer::start(addr, sources).with_context(|| {
                format!("cannot serve metrics on {addr}: use --metrics ADDR with a free port, or --metrics off")
            })?;
            println!("metrics on http://{}/metrics", server.local_addr());
            Some(server)
        }
    };

    let engine_peer_id = PeerConfig::random_peer_id();
    let peer = PeerConfig {
        peer_id: engine_peer_id,
        reqq: cfg.max_requests,
        handshake_timeout: cfg.handshake_timeout,
        idle_timeout: cfg.idle_timeout,
        ledger: ledger.as_ref().map(|l| Arc::new(l.beacon())),
        ..PeerConfig::default()
    };
    let shard = ShardConfig {
        peer,
        choker: cfg.choker_config(),
        send_zc: cfg.send_zc,
        encryption: cfg.encryption,
        utp: cfg.utp,
        send_timeout: cfg.send_timeout,
        ledger_hints: ledger.as_ref().map(|l| l.node.hints()),
        ..ShardConfig::default()
    };
    let engine_cfg = EngineConfig {
        listen: cfg.listen,
        shards: cfg.shards,
        pin: true,
        max_connections: cfg.max_connections as usize,
        max_per_ip: cfg.max_per_ip,
        max_connections_per_shard: cfg.max_connections_per_shard.map(|n| n as usize),
        ipv6_prefix_len: cfg.ipv6_prefix_len,
        upload_rate_limit: cfg.upload_rate_limit,
        shard,
    };

    // Bind first: port 0 resolves now, so the tracker, the torrents we make
    // and the magnet links carry the real address.
    let bound = Engine::bind(engine_cfg).context("starting the engine")?;
    let listen = bound.local_addr();
    let announce_port = cfg.announce_port.unwrap_or(listen.port());

    let tracker = match cfg.effective_tracker_listen() {
        None => None,
        Some(addr) => {
            let tcfg = TrackerConfig {
                listen: addr,
                seed: Some(SeedPeer {
                    ip: cfg.announce_ip,
                    port: announce_port,
                }),
                ..TrackerConfig::default()
            };
            let t = EmbeddedTracker::start(tcfg).with_context(|| {
                format!("cannot run the embedded tracker on {addr}: use --tracker-listen ADDR with a free port, or --tracker-listen off")
            })?;
            println!("tracker on {}", t.local_addr());
            Some(t)
        }
    };
    // The announce URL written into torrents `serve DIR` makes.
    let public_url = cfg.public_url.clone().or_else(|| {
        tracker.as_ref().map(|t| {
            let ip = cfg
                .announce_ip
                .or_else(|| Some(t.local_addr().ip()).filter(|ip| !ip.is_unspecified()))
                .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
            format!(
                "http://{}/announce",
                std::net::SocketAddr::new(ip, t.local_addr().port())
            )
        })
    });
    let mut dir_trackers: Vec<Vec<String>> = public_url.iter().map(|u| vec![u.clone()]).collect();
    dir_trackers.extend(cfg.extra_tracker_tiers());

    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut prepared = prepare_all(&cfg, threads, &verify_stats, &dir_trackers)?;
    if let (Some(l), true) = (&ledger, cfg.ledger.required) {
        prepared.retain(|p| {
            let t = &p.served.torrent;
            let ok = l.node.contains(t.info_hash_v2.map(|h| h.0), t.info_hash_v1.map(|h| h.0));
            if !ok {
                tracing::error!(
                    "{} is not in the release ledger: not served (--ledger-required); publish it with `ringseed ledger publish`",
                    t.name
                );
            }
            ok
        });
    }
    if prepared.is_empty() && cfg.dir.is_none() {
        anyhow::bail!("nothing to seed");
    }
    // `super_seed` and `[per_torrent]`: a table that names nothing is a
    // warning (it may name a torrent added later).
    let settings = {
        let list: Vec<&crate::metainfo::Torrent> =
            prepared.iter().map(|p| &p.served.torrent).collect();
        cfg.torrent_settings(&list)?
    };
    // The address peers should use, as a magnet `x.pe` hint.
    let hint_ip = cfg
        .announce_ip
        .or_else(|| Some(listen.ip()).filter(|ip| !ip.is_unspecified()));
    let peer_hint = hint_ip.map(|ip| std::net::SocketAddr::new(ip, announce_port).to_string());

    let mut infos = Vec::new();
    let mut targets = Vec::new();
    let mut served = Vec::new();
    let mut origins = Vec::new();
    // (index in `served`, its writer, the tiers its fetch announces to)
    let mut to_fetch = Vec::new();
    for (mut p, mut settings) in prepared.into_iter().zip(settings) {
        let writer = p.fetch.take();
        if writer.is_some() && settings.super_seed {
            tracing::warn!(
                torrent = %p.served.torrent.name,
                "not super-seeding a torrent being fetched (super-seeding is for the origin box); it is served as a partial seed"
            );
            settings.super_seed = false;
        }
        origins.push((
            p.served.content.root().to_path_buf(),
            p.dir_entry.clone().map_or(Origin::Given, Origin::Dir),
        ));
        let t = &p.served.torrent;
        let have = p.served.live_pieces();
        let mut modes = Vec::new();
        if settings.super_seed {
            modes.push("super-seeding".to_owned());
        }
        if !settings.upload_rate_limit.is_unlimited() {
            modes.push(format!("upload cap {}", settings.upload_rate_limit));
        }
        infos.push(format!(
            "torrent {name}{modes}\n  size      {size} bytes in {files} file(s), {pieces} pieces of {plen} bytes ({have} verified, {bad} bad; {src})\n  v1        {v1}\n  v2        {v2}\n  file      {path}\n  magnet    {magnet}",
            name = t.name,
            modes = if modes.is_empty() {
                String::new()
            } else {
                format!(" ({})", modes.join(", "))
            },
            size = t.total_size,
            files = t.files.len(),
            pieces = t.num_pieces,
            plen = t.piece_length,
            bad = p.bad_pieces,
            src = p.source,
            v1 = t.info_hash_v1.map_or("-".into(), |h| h.to_string()),
            v2 = t.info_hash_v2.map_or("-".into(), |h| h.to_string()),
            path = p.torrent_path.display(),
            magnet = {
                let mut m = Magnet::for_torrent(t);
                m.peers.extend(peer_hint.clone());
                m.to_uri()
            },
        ));
        if let Some(tr) = &tracker {
            tr.add_served(t);
        }
        // Announce to every tracker but our own embedded one (it lists us already).
        let mut target = AnnounceTarget::for_torrent(t, &cfg.extra_tracker_tiers());
        target
            .tiers
            .iter_mut()
            .for_each(|tier| tier.retain(|u| Some(u) != public_url.as_ref()));
        target.tiers.retain(|tier| !tier.is_empty());
        if let Some(w) = writer {
            // Its fetch announces it (with `left`) until it is complete.
            to_fetch.push((served.len(), w, target.tiers));
        } else if !target.tiers.is_empty() {
            targets.push(target);
        }
        served.push(p.served.with_settings(settings));
    }
    let catalog = Arc::new(Catalog::new(served));
    let fetch_torrents: Vec<_> = to_fetch
        .into_iter()
        .map(|(i, w, tiers)| (Arc::clone(&catalog.torrents()[i]), w, tiers))
        .collect();
    // Files changed on disk: withdraw, re-verify, restore (storage::watch).
    let data_watch = catalog.watch_data(data_stats.clone());
    let live = Arc::new(LiveCatalog::from_arc(Arc::clone(&catalog)));
    let peer_id = engine_peer_id;
    let engine = bound
        .start_live(Arc::clone(&live), observers)
        .context("starting the engine")?;
    let mut fetches = std::collections::HashMap::new();
    // Torrents added later through the control API fetch with these.
    let fetch_template = FetchConfig {
        peer_id: engine_peer_id,
        announce_port,
        announce_ip: cfg.announce_ip,
        peers: cfg.peers.clone(),
        own: own_addrs(listen),
        ledger: ledger.as_ref().map(|l| Arc::new(l.beacon())),
        ledger_hints: ledger.as_ref().map(|l| l.node.hints()),
        ..FetchConfig::default()
    };
    for (t, writer, tiers) in fetch_torrents {
        let fcfg = FetchConfig {
            trackers: tiers,
            ..fetch_template.clone()
        };
        let (name, id) = (t.torrent.name.clone(), t.id);
        let f = Fetch::start(t, writer, fcfg)
            .with_context(|| format!("cannot start fetching {name}"))?;
        fetch_list.add(&name, Arc::clone(f.stats()));
        fetches.insert(id, f);
    }
    // Always running: torrents added later may name other trackers.
    let acfg = AnnounceConfig {
        peer_id,
        port: announce_port,
        announce_ip: cfg.announce_ip,
        ..AnnounceConfig::default()
    };
    let announcer = Announcer::start(acfg, targets).context("starting the tracker announcer")?;
    let dir_state = cfg
        .dir
        .as_ref()
        .map(|d| cfg.state_dir.clone().unwrap_or_else(|| d.join(".ringseed")));
    let registry = Arc::new(Registry::new(
        RegistryConfig {
            threads,
            created_trackers: dir_trackers.clone(),
            public_url: public_url.clone(),
            peer_hint: peer_hint.clone(),
            allow_roots: cfg.allowed_roots(),
            api_state: cfg
                .effective_state_dir()
                .unwrap_or_else(|| std::env::temp_dir().join("ringseed-state")),
            dir_state,
            drain_grace: cfg.drain_grace,
            serve: cfg.clone(),
            fetch: Some(fetch_template),
            fetch_list: Arc::clone(&fetch_list),
        },
        Arc::clone(&live),
        Arc::clone(&torrent_counts),
        verify_stats.clone(),
        data_stats.clone(),
        tracker,
        Some(announcer),
    ));
    for (t, (data, origin)) in catalog.torrents().iter().zip(origins) {
        registry.adopt(Arc::clone(t), data, origin, fetches.remove(&t.id));
    }
    drop(catalog);
    let control = match cfg.control_listen() {
        None => None,
        Some((addr, default)) => {
            let token = match &cfg.control_token_file {
                Some(f) => Some(
                    std::fs::read_to_string(f)
                        .with_context(|| {
                            format!("cannot read --control-token-file {}", f.display())
                        })?
                        .trim()
                        .to_owned(),
                ),
                None => None,
            };
            let hcfg = HttpServerConfig {
                listen: addr,
                token,
                ..HttpServerConfig::default()
            };
            let services: Vec<Arc<dyn crate::control::Service>> = vec![Arc::new(
                crate::control::api::TorrentsApi::new(Arc::clone(&registry)),
            )];
            match HttpServer::start(hcfg, services) {
                Ok(s) => {
                    println!("control on http://{}", s.local_addr());
                    Some(s)
                }
                Err(e) if default => {
                    tracing::warn!("no control API: cannot listen on {addr} ({e}); use --control ADDR with a free port, or --control off");
                    None
                }
                Err(e) => {
                    return Err(anyhow::anyhow!(e)).with_context(|| {
                        format!("cannot serve the control API on {addr}: use --control ADDR with a free port, or --control off")
                    })
                }
            }
        }
    };
    let follower = match &cfg.dir {
        Some(dir) => Some(
            DirFollower::start(dir.clone(), cfg.settle, Arc::clone(&registry))
                .with_context(|| format!("cannot follow {} with inotify", dir.display()))?,
        ),
        None => None,
    };
    for info in &infos {
        println!("{info}");
    }
    if !cfg.upload_rate_limit.is_unlimited() {
        println!(
            "upload cap {} for the box (one pool for all {} shard(s))",
            cfg.upload_rate_limit, cfg.shards
        );
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
    if let Some(f) = follower {
        f.shutdown();
    }
    if let Some(c) = control {
        c.shutdown();
    }
    engine.shutdown();
    // `stopped` announces go out while the shards close their peers.
    registry.shutdown(Duration::from_millis(1500));
    let result = engine.join();
    drop(data_watch);
    tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "stopped");
    if let Some(m) = metrics {
        m.shutdown();
    }
    drop(ledger);
    result.context("engine")?;
    Ok(ExitCode::SUCCESS)
}
