//! `ServeConfig`: defaults, file and flag precedence, and errors that name
//! the problem.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ringseed::cli::ServeArgs;
use ringseed::config::{
    parse_duration, MetricsEndpoint, ServeConfig, TorrentEntry, TorrentOverrides,
};
use ringseed::create::{create, CreateOptions};
use ringseed::engine::TorrentSettings;
use ringseed::metainfo::Torrent;
use ringseed::swarm::choker::ChokerMode;
use ringseed::swarm::ratelimit::Rate;

fn args_with_dir() -> ServeArgs {
    ServeArgs {
        dir: Some(PathBuf::from("/srv/seed")),
        ..ServeArgs::default()
    }
}

fn write_config(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ringseed.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

/// The whole error chain, as `main` would print it.
fn chain(err: &anyhow::Error) -> String {
    format!("{err:#}")
}

#[test]
fn defaults_are_the_documented_ones() {
    let c = ServeConfig::load(&args_with_dir()).unwrap();
    assert_eq!(c.listen, "0.0.0.0:6881".parse::<SocketAddr>().unwrap());
    assert_eq!(
        c.shards,
        std::thread::available_parallelism().unwrap().get()
    );
    assert_eq!(c.upload_slots, None);
    assert_eq!(c.effective_upload_slots(), 256);
    assert_eq!(c.optimistic_slots, 1);
    assert_eq!(c.choker, ChokerMode::RoundRobin);
    assert_eq!(c.rechoke_interval, Duration::from_secs(10));
    assert_eq!(c.optimistic_interval, Duration::from_secs(30));
    assert_eq!(c.max_connections, 20_000);
    assert_eq!(c.max_connections_per_shard, None);
    assert_eq!(c.max_per_ip, 1000);
    assert_eq!(c.max_requests, 500);
    assert_eq!(c.handshake_timeout, Duration::from_secs(10));
    assert_eq!(c.idle_timeout, Duration::from_secs(120));
    assert!(!c.send_zc);
    assert!(!c.skip_verify);
    assert_eq!(
        c.metrics,
        MetricsEndpoint::Listen("127.0.0.1:9100".parse().unwrap())
    );
    assert_eq!(c.log_level, "info");
    assert!(!c.super_seed);
    assert!(c.upload_rate_limit.is_unlimited());
    assert!(c.per_torrent.is_empty());
    assert_eq!(
        c.effective_state_dir(),
        Some(PathBuf::from("/srv/seed/.ringseed"))
    );
}

#[test]
fn file_overrides_defaults_and_flags_override_the_file() {
    let (_tmp, path) = write_config(
        r#"
        dir = "/from/file"
        listen = "[::]:7000"
        shards = 3
        upload_slots = 10
        choker = "fastest_upload"
        rechoke_interval = "500ms"
        optimistic_interval = 45
        max_connections = 300
        max_per_ip = 5
        idle_timeout = "2m"
        send_zc = true
        metrics = "off"
        log_level = "ringseed=debug"

        [[torrents]]
        torrent = "a.torrent"
        data = "a"
        "#,
    );
    let mut args = ServeArgs {
        config: Some(path),
        ..ServeArgs::default()
    };
    let c = ServeConfig::load(&args).unwrap();
    assert_eq!(c.dir, Some(PathBuf::from("/from/file")));
    assert_eq!(c.listen, "[::]:7000".parse::<SocketAddr>().unwrap());
    assert_eq!(c.shards, 3);
    assert_eq!(c.choker, ChokerMode::FastestUpload);
    assert_eq!(c.rechoke_interval, Duration::from_millis(500));
    assert_eq!(c.optimistic_interval, Duration::from_secs(45));
    assert_eq!(c.idle_timeout, Duration::from_secs(120));
    assert_eq!(
        c.handshake_timeout,
        Duration::from_secs(10),
        "unset key keeps its default"
    );
    assert!(c.send_zc);
    assert_eq!(c.metrics, MetricsEndpoint::Off);
    assert_eq!(
        c.torrents,
        vec![TorrentEntry {
            torrent: "a.torrent".into(),
            data: "a".into()
        }]
    );
    // Derived per-shard values.
    assert_eq!(c.connections_per_shard(), 300, "box-wide by default");
    assert_eq!(c.choker_config().upload_slots, 4); // ceil(10 / 3)
    assert_eq!(c.choker_config().mode, ChokerMode::FastestUpload);

    args.dir = Some("/from/flag".into());
    args.listen = Some("127.0.0.1:0".into());
    args.shards = Some(1);
    args.upload_slots = Some(0);
    args.choker = Some("round_robin".into());
    args.rechoke_interval = Some("3s".into());
    args.metrics = Some("127.0.0.1:9999".into());
    args.torrents = vec!["b.torrent".into()];
    args.data = vec!["b".into()];
    args.max_connections_per_shard = Some(7);
    let c = ServeConfig::load(&args).unwrap();
    assert_eq!(c.dir, Some(PathBuf::from("/from/flag")));
    assert_eq!(c.listen, "127.0.0.1:0".parse::<SocketAddr>().unwrap());
    assert_eq!(c.shards, 1);
    assert_eq!(c.upload_slots, Some(0));
    assert_eq!(
        c.choker_config().upload_slots,
        0,
        "0 stays unlimited per shard"
    );
    assert_eq!(c.choker, ChokerMode::RoundRobin);
    assert_eq!(c.rechoke_interval, Duration::from_secs(3));
    assert_eq!(
        c.metrics,
        MetricsEndpoint::Listen("127.0.0.1:9999".parse().unwrap())
    );
    assert_eq!(c.torrents.len(), 1);
    assert_eq!(c.torrents[0].torrent, PathBuf::from("b.torrent"));
    assert_eq!(c.connections_per_shard(), 7);
    // Values only the file set survive.
    assert_eq!(c.max_per_ip, 5);
    assert!(c.send_zc);
}

#[test]
fn unknown_key_is_rejected_with_the_key_named() {
    let (_tmp, path) = write_config("dir = \"/x\"\nupload_slot = 3\n");
    let args = ServeArgs {
        config: Some(path.clone()),
        ..ServeArgs::default()
    };
    let msg = chain(&ServeConfig::load(&args).unwrap_err());
    assert!(msg.contains("upload_slot"), "{msg}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");

    // Inside a [[torrents]] table too.
    let err =
        ServeConfig::from_toml_str("[[torrents]]\ntorrent = \"a\"\ndata = \"b\"\nfile = \"c\"\n")
            .unwrap_err();
    let msg = chain(&anyhow::Error::from(err));
    assert!(msg.contains("unknown field `file`"), "{msg}");
}

#[test]
fn bad_durations_are_rejected_clearly() {
    for (text, needle) in [
        ("10x", "unknown unit \"x\""),
        ("s", "not a duration"),
        ("", "not a duration"),
        ("1.5s", "unknown unit"),
        ("99999999999999999999s", "too large"),
        ("18446744073709551615h", "too large"),
    ] {
        let err = parse_duration(text).unwrap_err();
        assert!(err.contains(needle), "{text:?}: {err}");
    }
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
    assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));

    let err = ServeConfig::from_toml_str("idle_timeout = \"ten seconds\"").unwrap_err();
    let msg = chain(&anyhow::Error::from(err));
    assert!(
        msg.contains("idle_timeout") && msg.contains("not a duration"),
        "{msg}"
    );
    let err = ServeConfig::from_toml_str("idle_timeout = -5").unwrap_err();
    let msg = chain(&anyhow::Error::from(err));
    assert!(msg.contains("negative"), "{msg}");

    let args = ServeArgs {
        handshake_timeout: Some("5 parsecs".into()),
        ..args_with_dir()
    };
    let msg = chain(&ServeConfig::load(&args).unwrap_err());
    assert!(
        msg.starts_with("--handshake-timeout \"5 parsecs\""),
        "{msg}"
    );
}

#[test]
fn validation_names_the_key_and_the_fix() {
    let cases: Vec<(ServeArgs, &str)> = vec![
        (
            ServeArgs {
                shards: Some(0),
                ..args_with_dir()
            },
            "shards = 0: must be at least 1",
        ),
        (
            ServeArgs {
                torrents: vec!["a.torrent".into(), "b.torrent".into()],
                data: vec!["a".into()],
                ..ServeArgs::default()
            },
            "--torrent and --data must come in pairs: got 2 --torrent and 1 --data",
        ),
        (ServeArgs::default(), "nothing to seed"),
        (
            ServeArgs {
                listen: Some("6881".into()),
                ..args_with_dir()
            },
            "--listen \"6881\": not an address:port",
        ),
        (
            ServeArgs {
                metrics: Some("on".into()),
                ..args_with_dir()
            },
            "neither `off` nor an address:port",
        ),
        (
            ServeArgs {
                choker: Some("tit_for_tat".into()),
                ..args_with_dir()
            },
            "unknown choker mode \"tit_for_tat\"",
        ),
        (
            ServeArgs {
                rechoke_interval: Some("0s".into()),
                ..args_with_dir()
            },
            "rechoke_interval = \"0s\": must be longer than zero",
        ),
        (
            ServeArgs {
                max_requests: Some(0),
                ..args_with_dir()
            },
            "max_requests = 0: must be at least 1",
        ),
        (
            ServeArgs {
                log_level: Some("ringseed=loud".into()),
                ..args_with_dir()
            },
            "log_level",
        ),
    ];
    for (args, needle) in cases {
        let msg = chain(&ServeConfig::load(&args).unwrap_err());
        assert!(msg.contains(needle), "expected {needle:?} in {msg:?}");
    }
}

#[test]
fn config_round_trips_through_toml() {
    let mut c = ServeConfig {
        dir: Some("/srv".into()),
        rechoke_interval: Duration::from_millis(1500),
        metrics: MetricsEndpoint::Off,
        ..ServeConfig::default()
    };
    c.torrents.push(TorrentEntry {
        torrent: "x.torrent".into(),
        data: "x".into(),
    });
    c.super_seed = true;
    c.upload_rate_limit = "40MiB/s".parse().unwrap();
    c.per_torrent.insert(
        "x".into(),
        TorrentOverrides {
            super_seed: Some(true),
            upload_rate_limit: Some("5MB/s".parse().unwrap()),
        },
    );
    c.per_torrent
        .insert("y".into(), TorrentOverrides::default());
    let text = toml::to_string(&c).unwrap();
    assert_eq!(ServeConfig::from_toml_str(&text).unwrap(), c);
}

#[test]
fn super_seed_and_upload_caps_from_file_and_flags() {
    let (_tmp, path) = write_config(
        r#"
        dir = "/srv"
        super_seed = true
        upload_rate_limit = "40MiB/s"

        [per_torrent."big.iso"]
        super_seed = false
        upload_rate_limit = "5MB/s"

        [per_torrent.0123456789ABCDEF0123456789abcdef01234567]
        upload_rate_limit = 1000000
        "#,
    );
    let mut args = ServeArgs {
        config: Some(path),
        ..ServeArgs::default()
    };
    let c = ServeConfig::load(&args).unwrap();
    assert!(c.super_seed);
    assert_eq!(c.upload_rate_limit.bytes_per_sec(), Some(40 << 20));
    assert_eq!(
        c.per_torrent["big.iso"],
        TorrentOverrides {
            super_seed: Some(false),
            upload_rate_limit: Some("5MB/s".parse().unwrap()),
        }
    );
    let by_hash = &c.per_torrent["0123456789ABCDEF0123456789abcdef01234567"];
    assert_eq!(by_hash.super_seed, None);
    assert_eq!(
        by_hash.upload_rate_limit,
        Some(Rate::from_bytes_per_sec(1_000_000))
    );

    args.upload_rate_limit = Some("unlimited".into());
    let c = ServeConfig::load(&args).unwrap();
    assert!(c.upload_rate_limit.is_unlimited(), "the flag wins");

    let args = ServeArgs {
        super_seed: true,
        upload_rate_limit: Some("5MB/s".into()),
        ..args_with_dir()
    };
    let c = ServeConfig::load(&args).unwrap();
    assert!(c.super_seed);
    assert_eq!(c.upload_rate_limit.bytes_per_sec(), Some(5_000_000));
}

#[test]
fn bad_rates_and_per_torrent_tables_are_rejected_clearly() {
    let args = ServeArgs {
        upload_rate_limit: Some("fast".into()),
        ..args_with_dir()
    };
    let msg = chain(&ServeConfig::load(&args).unwrap_err());
    assert!(
        msg.starts_with("--upload-rate-limit \"fast\": no number") && msg.contains("\"5MB/s\""),
        "{msg}"
    );
    for (text, needle) in [
        ("upload_rate_limit = \"10 furlongs\"", "unknown unit"),
        (
            "[per_torrent.x]\nsuperseed = true\n",
            "unknown field `superseed`",
        ),
        (
            "[per_torrent.x]\nupload_rate_limit = \"1 parsec\"\n",
            "unknown unit",
        ),
        ("super_seed = \"yes\"", "super_seed"),
    ] {
        let err = ServeConfig::from_toml_str(text).unwrap_err();
        let msg = chain(&anyhow::Error::from(err));
        assert!(msg.contains(needle), "{text:?}: {msg}");
    }
    let mut c =
        ServeConfig::from_toml_str("dir = \"/x\"\n[per_torrent.\" \"]\nsuper_seed = true\n")
            .unwrap();
    let msg = c.validate().unwrap_err().to_string();
    assert!(msg.contains("an empty key names no torrent"), "{msg}");
    c.per_torrent.clear();
    c.validate().unwrap();
}

/// A tiny real torrent named `name` (its content in `dir`).
fn tiny_torrent(dir: &std::path::Path, name: &str, seed: u8) -> Torrent {
    let path = dir.join(name);
    std::fs::write(&path, vec![seed; 40_000]).unwrap();
    let opts = CreateOptions {
        threads: 1,
        ..CreateOptions::default()
    };
    create(&path, &opts, &|_| {}).unwrap().torrent
}

#[test]
fn per_torrent_tables_name_served_torrents_by_name_or_info_hash() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tiny_torrent(tmp.path(), "a.bin", 1);
    let b = tiny_torrent(tmp.path(), "b.bin", 2);
    let other = tempfile::tempdir().unwrap();
    let b_again = tiny_torrent(other.path(), "b.bin", 3);
    let v1_upper = a.info_hash_v1.unwrap().to_string().to_uppercase();
    let v2 = b.info_hash_v2.unwrap().to_string();

    let mut c = ServeConfig {
        super_seed: true,
        ..ServeConfig::default()
    };
    c.per_torrent.insert(
        v1_upper.clone(),
        TorrentOverrides {
            super_seed: None,
            upload_rate_limit: Some("2MB/s".parse().unwrap()),
        },
    );
    c.per_torrent.insert(
        v2,
        TorrentOverrides {
            super_seed: Some(false),
            upload_rate_limit: None,
        },
    );
    let got = c.torrent_settings(&[&a, &b]).unwrap();
    assert_eq!(
        got,
        [
            TorrentSettings {
                super_seed: true,
                upload_rate_limit: Rate::from_bytes_per_sec(2_000_000),
            },
            TorrentSettings {
                super_seed: false,
                upload_rate_limit: Rate::UNLIMITED,
            },
        ]
    );

    // By name; a name that matches nothing is a warning (it may name a
    // torrent added later), and applies to that torrent when it comes.
    let mut c = ServeConfig::default();
    c.per_torrent.insert(
        "a.bin".into(),
        TorrentOverrides {
            super_seed: Some(true),
            ..TorrentOverrides::default()
        },
    );
    c.per_torrent.insert(
        "typo.bin".into(),
        TorrentOverrides {
            upload_rate_limit: Some(Rate::from_bytes_per_sec(1_000_000)),
            ..TorrentOverrides::default()
        },
    );
    let got = c.torrent_settings(&[&a, &b]).unwrap();
    assert!(got[0].super_seed && !got[1].super_seed);
    assert_eq!(c.unmatched_per_torrent(&[&a, &b]), ["typo.bin"]);
    assert!(c.settings_for(&a).super_seed);
    let mut later = b.clone();
    later.name = "typo.bin".into();
    assert_eq!(
        c.settings_for(&later).upload_rate_limit,
        Rate::from_bytes_per_sec(1_000_000)
    );

    // A name two torrents share must be an info-hash instead.
    let mut c = ServeConfig::default();
    c.per_torrent
        .insert("b.bin".into(), TorrentOverrides::default());
    let msg = c.torrent_settings(&[&b, &b_again]).unwrap_err().to_string();
    assert!(msg.contains("matches 2 served torrents"), "{msg}");

    // One torrent, two tables.
    let mut c = ServeConfig::default();
    c.per_torrent
        .insert("a.bin".into(), TorrentOverrides::default());
    c.per_torrent.insert(v1_upper, TorrentOverrides::default());
    let msg = c.torrent_settings(&[&a]).unwrap_err().to_string();
    assert!(msg.contains("configured twice"), "{msg}");
}

#[test]
fn a_capped_seed_defaults_to_a_few_upload_slots_per_shard() {
    let mut args = args_with_dir();
    args.shards = Some(2);
    args.upload_rate_limit = Some("5MB/s".into());
    let c = ServeConfig::load(&args).unwrap();
    assert_eq!(c.upload_slots, None);
    assert_eq!(c.effective_upload_slots(), 8);
    assert_eq!(c.choker_config().upload_slots, 4);
    // An explicit setting always wins, 0 (everyone) included.
    args.upload_slots = Some(0);
    let c = ServeConfig::load(&args).unwrap();
    assert_eq!(c.choker_config().upload_slots, 0);
    args.upload_slots = Some(40);
    let c = ServeConfig::load(&args).unwrap();
    assert_eq!(c.choker_config().upload_slots, 20);
}

#[test]
fn a_capped_super_seed_gets_at_least_sixteen_upload_slots() {
    let mut args = args_with_dir();
    args.shards = Some(1);
    args.upload_rate_limit = Some("5MB/s".into());
    args.super_seed = true;
    let c = ServeConfig::load(&args).unwrap();
    assert_eq!(c.effective_upload_slots(), 16);
    assert_eq!(c.choker_config().upload_slots, 16);
    // Eight shards already have 32; sixteen is a floor, not a cap.
    args.shards = Some(8);
    let c = ServeConfig::load(&args).unwrap();
    assert_eq!(c.effective_upload_slots(), 32);
    // Uncapped, or set by hand, nothing changes.
    args.upload_rate_limit = None;
    let c = ServeConfig::load(&args).unwrap();
    assert_eq!(c.effective_upload_slots(), 256);
    args.upload_rate_limit = Some("5MB/s".into());
    args.upload_slots = Some(4);
    let c = ServeConfig::load(&args).unwrap();
    assert_eq!(c.effective_upload_slots(), 4);
}
