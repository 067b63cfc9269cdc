//! The binary end to end on loopback: against `ringseed serve`, against the
//! `ceiling` sender, and the driver against a seeder that hangs up.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use ringseed::metainfo::MetaVersion;
use ringseed_loadtest::config::{Popularity, RunConfig};
use ringseed_loadtest::leecher::Pattern;
use ringseed_loadtest::run::run_load;
use ringseed_loadtest::testkit::{make_torrent, seeder_handshake};

mod support;
use support::{ringseed_bin, start, LOADTEST};

fn run_binary(args: &[&str]) -> (bool, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("r.json");
    let out = Command::new(LOADTEST)
        .args(args)
        .args(["--report", report.to_str().unwrap(), "--quiet"])
        .output()
        .expect("run ringseed-loadtest");
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    (out.status.success(), json)
}

fn check_report(r: &serde_json::Value) {
    let s = &r["summary"];
    assert_eq!(s["ok"], true, "report has errors: {s}");
    assert!(s["payload_bytes"].as_u64().unwrap() > 0);
    assert!(s["throughput_mb_s"].as_f64().unwrap() > 0.0);
    assert!(s["downloads_completed"].as_u64().unwrap() > 0);
    assert!(s["pieces_verified"].as_u64().unwrap() > 0);
    assert!(s["bytes_verified"].as_u64().unwrap() >= s["pieces_verified"].as_u64().unwrap());
    assert_eq!(s["hash_failures"], 0);
    assert_eq!(s["protocol_errors_total"], 0);
    assert_eq!(s["connections_failed"], 0);
    for h in [
        "block_latency_us",
        "unchoke_latency_us",
        "per_connection_kib_s",
    ] {
        let p = &s[h];
        assert!(p["count"].as_u64().unwrap() > 0, "{h} empty");
        for k in ["p50", "p90", "p99", "p99_9", "max"] {
            assert!(p[k].as_u64().is_some(), "{h}.{k} missing");
        }
        assert!(p["p50"].as_u64() <= p["p99"].as_u64() && p["p99"].as_u64() <= p["max"].as_u64());
    }
    let e = &r["environment"];
    for k in ["kernel", "rustc", "cpu_model"] {
        assert!(
            e[k].as_str().is_some_and(|x| !x.is_empty()),
            "environment.{k} missing"
        );
    }
    assert!(e["cores"].as_u64().unwrap() >= 1);
    assert!(e["command"].as_array().unwrap().len() > 3);
}

/// `ringseed serve` (one shard) of a 3 MB file; the server, its address
/// and the torrent it made.
fn serve_three_mb(dir: &std::path::Path) -> (support::Server, String, std::path::PathBuf) {
    let data = dir.join("data");
    std::fs::create_dir(&data).unwrap();
    let content: Vec<u8> = (0..3_000_000u64)
        .map(ringseed_loadtest::testkit::content_byte)
        .collect();
    std::fs::write(data.join("f.bin"), &content).unwrap();
    let mut cmd = Command::new(ringseed_bin());
    cmd.args([
        "serve",
        data.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--shards",
        "1",
        "--metrics",
        "off",
        "--tracker-listen",
        "off",
    ]);
    let (server, addr) = start(cmd);
    (server, addr, data.join(".ringseed/f.bin.torrent"))
}

#[test]
fn against_ringseed_serve() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, addr, torrent) = serve_three_mb(dir.path());
    let (ok, r) = run_binary(&[
        "--target",
        &addr,
        "--torrent",
        torrent.to_str().unwrap(),
        "--connections",
        "8",
        "--duration",
        "3s",
        "--pipeline",
        "16",
        "--churn",
        "2",
        "--ramp",
        "50",
        "--source-ips",
        "127.0.0.1-127.0.0.4",
        "--verify",
    ]);
    check_report(&r);
    assert!(ok, "binary exited non-zero");
    assert!(
        r["summary"]["connections_closed"]["completed"]
            .as_u64()
            .unwrap()
            > 0
    );
}

#[test]
fn over_utp_against_ringseed_serve_bytes_verify() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, addr, torrent) = serve_three_mb(dir.path());
    let (ok, r) = run_binary(&[
        "--target",
        &addr,
        "--torrent",
        torrent.to_str().unwrap(),
        "--transport",
        "utp",
        "--connections",
        "6",
        "--duration",
        "4s",
        "--pipeline",
        "16",
        "--churn",
        "1",
        "--source-ips",
        "127.0.0.1-127.0.0.2",
        "--verify",
    ]);
    check_report(&r);
    assert!(ok, "binary exited non-zero");
    let s = &r["summary"];
    assert!(
        s["connections_closed"]["completed"].as_u64().unwrap() > 0,
        "{s}"
    );
    // --discard is refused over uTP, with the reason.
    let out = Command::new(LOADTEST)
        .args(["--target", &addr, "--torrent", torrent.to_str().unwrap()])
        .args(["--transport", "utp", "--discard", "--duration", "1s"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--discard is for TCP"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A baseline seeder (`ceiling` or `epoll-seed`) serving a 2 MB torrent.
fn baseline(kind: &str, dir: &std::path::Path) -> (support::Server, String, std::path::PathBuf) {
    let (tpath, _, _) =
        make_torrent(dir, "c.bin", 2_000_000, 64 * 1024, MetaVersion::Hybrid).unwrap();
    let mut cmd = Command::new(LOADTEST);
    cmd.args([
        kind,
        "--torrent",
        tpath.to_str().unwrap(),
        "--data",
        dir.join("c.bin").to_str().unwrap(),
    ]);
    let (server, addr) = start(cmd);
    (server, addr, tpath)
}

#[test]
fn against_the_baseline_seeders_bytes_verify() {
    for kind in ["ceiling", "epoll-seed"] {
        let dir = tempfile::tempdir().unwrap();
        let (_server, addr, tpath) = baseline(kind, dir.path());
        let (ok, r) = run_binary(&[
            "--target",
            &addr,
            "--torrent",
            tpath.to_str().unwrap(),
            "--connections",
            "4",
            "--duration",
            "2s",
            "--verify",
        ]);
        check_report(&r);
        assert!(ok, "{kind}");
    }
}

#[test]
fn discard_mode_downloads_whole_torrents_without_reading_payload() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, addr, tpath) = baseline("epoll-seed", dir.path());
    let (ok, r) = run_binary(&[
        "--target",
        &addr,
        "--torrent",
        tpath.to_str().unwrap(),
        "--connections",
        "4",
        "--pipeline",
        "16",
        "--duration",
        "2s",
        "--discard",
    ]);
    let s = &r["summary"];
    assert!(ok, "{s}");
    let done = s["downloads_completed"].as_u64().unwrap();
    assert!(done > 0, "{s}");
    // Every completed download is 2,000,000 payload bytes; the ones cut off
    // at the end of the run add less than a torrent each.
    let payload = s["payload_bytes"].as_u64().unwrap();
    assert!(payload >= done * 2_000_000, "{s}");
    assert!(payload < (done + 4) * 2_000_000, "{s}");
    assert_eq!(s["protocol_errors_total"], 0, "{s}");
    assert_eq!(s["pieces_verified"], 0, "{s}");
    // --discard with --verify is refused, with the reason.
    let out = Command::new(LOADTEST)
        .args(["--target", &addr, "--torrent", tpath.to_str().unwrap()])
        .args(["--discard", "--verify", "--duration", "1s"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exclude each other"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn config_file_is_used_and_unknown_keys_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("lt.toml");
    std::fs::write(
        &cfg,
        "target = \"127.0.0.1:1\"\nconnections = 2\nbogus = 1\n",
    )
    .unwrap();
    let out = Command::new(LOADTEST)
        .args(["--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bogus"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn seeder_that_hangs_up_is_counted_as_peer_closed() {
    let dir = tempfile::tempdir().unwrap();
    let (tpath, t, _) =
        make_torrent(dir.path(), "h.bin", 100_000, 32 * 1024, MetaVersion::V1).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let hs = seeder_handshake(&t, true);
    std::thread::spawn(move || {
        for s in listener.incoming().take(50) {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 68];
            if s.read_exact(&mut buf).is_ok() {
                let _ = s.write_all(&hs);
            }
            // Dropping the stream hangs up right after the handshake.
        }
    });
    let cfg = RunConfig {
        target: addr,
        torrents: vec![tpath],
        connections: 2,
        duration: Duration::from_millis(800),
        ramp: 0.0,
        pipeline: 4,
        pattern: Pattern::Sequential,
        churn: 0.0,
        popularity: Popularity::Uniform,
        source_ips: vec![],
        threads: 1,
        first_cpu: 0,
        discard: false,
        transport: ringseed_loadtest::config::Transport::Tcp,
        verify: false,
        report: None,
        stall_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
        quiet: true,
    };
    let r = run_load(&cfg).unwrap();
    assert!(
        r.stats.dropped.get("peer_closed").copied().unwrap_or(0) >= 2,
        "{:?}",
        r.stats.dropped
    );
    assert!(r.stats.protocol_errors.is_empty());
    assert_eq!(r.stats.payload_bytes, 0);
}
