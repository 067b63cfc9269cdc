//! A real Prometheus (Debian's `prometheus` package; `.ci/run` installs it)
//! scrapes a real `ringseed serve` every second while the load generator
//! (`ringseed-loadtest`) floods it; then every dashboard panel's query,
//! variables filled in, must return data, and the histograms as Prometheus
//! stored them must be consistent.

mod dashboard_support;
mod support;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dashboard_support::*;
use serde_json::Value;
use support::serve::ServeProc;

const PROMETHEUS: &str = "/usr/bin/prometheus";

/// Kills Prometheus by its PID however the test ends.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_prometheus(target: SocketAddr) -> Prometheus {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: ringseed\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let child = Command::new(PROMETHEUS)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start prometheus");
    Prometheus {
        child,
        addr,
        _dir: dir,
    }
}

fn log_of(p: &Prometheus) -> String {
    std::fs::read_to_string(p._dir.path().join("prometheus.log")).unwrap_or_default()
}

/// Runs an instant query; `None` if Prometheus is not answering yet.
fn query(p: &Prometheus, promql: &str) -> Option<Value> {
    let (status, _, body) = http_get(
        p.addr,
        &format!("/api/v1/query?query={}", url_encode(promql)),
    )
    .ok()?;
    let v: Value = serde_json::from_str(&body).ok()?;
    assert_eq!(status, 200, "query `{promql}` failed: {body}");
    assert_eq!(v["status"], "success", "query `{promql}`: {body}");
    Some(v["data"]["result"].clone())
}

fn values(result: &Value) -> Vec<f64> {
    result
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["value"][1].as_str()?.parse().ok())
        .collect()
}

#[test]
fn prometheus_scrapes_and_every_panel_query_returns_data() {
    if !Path::new(PROMETHEUS).exists() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{PROMETHEUS} is missing; .ci/run must `apt-get install -y prometheus`");
        }
        eprintln!("\n*** SKIP prometheus_scrapes_and_every_panel_query_returns_data: {PROMETHEUS} not installed (apt-get install prometheus) ***\n");
        return;
    }

    // A real server seeding a directory, with its metrics on a free port.
    let data = tempfile::tempdir().unwrap();
    let content: Vec<u8> = (0..24u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    std::fs::write(data.path().join("update.bin"), &content).unwrap();
    let side = tempfile::tempdir().unwrap();
    // An origin the server fetches one torrent from (the fetch panels).
    let (origin, origin_torrent) = start_origin(side.path());
    let (server, peer_addr, target) =
        start_serve(data.path(), side.path(), &origin.addr, &origin_torrent);
    let torrent = data.path().join(".ringseed/update.bin.torrent");
    // The load generator keeps it busy while Prometheus scrapes.
    let load = Proc(
        Command::new(loadtest_bin())
            .args([
                "--target",
                &peer_addr,
                "--torrent",
                torrent.to_str().unwrap(),
            ])
            .args([
                "--connections",
                "16",
                "--pipeline",
                "16",
                "--duration",
                "120s",
                "--churn",
                "4",
                "--quiet",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ringseed-loadtest"),
    );

    let prom = start_prometheus(target);
    // Wait for at least 6 scrapes of our target (bounded).
    let deadline = Instant::now() + Duration::from_secs(60);
    let instance = format!(r#"instance="{target}""#);
    loop {
        let scrapes = query(
            &prom,
            &format!("count_over_time(ringseed_build_info{{{instance}}}[1m])"),
        )
        .map(|r| values(&r))
        .and_then(|v| v.first().copied())
        .unwrap_or(0.0);
        if scrapes >= 6.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus has no data after 60 s; its log:\n{}",
            log_of(&prom)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let up = values(&query(&prom, &format!("up{{{instance}}}")).unwrap());
    assert_eq!(up, vec![1.0], "scrape target not up");

    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(dashboard_path()).unwrap()).unwrap();
    let regex = instance_regex(target);
    let mut empty = Vec::new();
    let queries = panel_queries(&dashboard);
    for (title, expr) in &queries {
        let promql = substitute(expr, &regex, "10s");
        let result = query(&prom, &promql).expect("Prometheus stopped answering");
        let finite = values(&result)
            .into_iter()
            .filter(|v| v.is_finite())
            .count();
        if finite == 0 {
            empty.push(format!("{title}: {promql} -> {result}"));
        }
    }
    assert!(
        empty.is_empty(),
        "panel queries without data:\n{}",
        empty.join("\n")
    );

    // The histograms as Prometheus stored them (one instant, one scrape).
    for name in ringseed::metrics::names::HISTOGRAMS {
        let buckets = query(&prom, &format!("{name}_bucket{{{instance}}}")).unwrap();
        let mut by_le: Vec<(f64, f64)> = buckets
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let le = s["metric"]["le"].as_str().unwrap();
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap()
                };
                (le, s["value"][1].as_str().unwrap().parse().unwrap())
            })
            .collect();
        by_le.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert!(by_le.len() >= 10, "{name}: {by_le:?}");
        assert!(
            by_le.windows(2).all(|w| w[0].1 <= w[1].1),
            "{name}: not monotone: {by_le:?}"
        );
        let diff = values(
            &query(&prom, &format!(r#"{name}_count{{{instance}}} - ignoring(le) {name}_bucket{{{instance},le="+Inf"}}"#))
                .unwrap(),
        );
        assert_eq!(diff, vec![0.0], "{name}: _count != +Inf bucket");
    }
    eprintln!(
        "{} panel queries returned data from Prometheus",
        queries.len()
    );

    drop(load);
    drop(prom);
    drop(server);
}

/// A child process killed (by its PID) on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `ringseed serve DIR` with metrics on a free port: (process, peer address,
/// metrics address).
/// A box seeding a 4 MiB release by `--torrent`; returns it and the torrent.
fn start_origin(side: &Path) -> (ServeProc, PathBuf) {
    let dir = side.join("origin");
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("release.bin");
    let bytes: Vec<u8> = (0..4u32 << 20)
        .map(|i| (i.wrapping_mul(40503) >> 7) as u8)
        .collect();
    std::fs::write(&data, bytes).unwrap();
    let torrent = dir.join("release.torrent");
    ringseed(&[
        "create",
        "--v1",
        data.to_str().unwrap(),
        "-o",
        torrent.to_str().unwrap(),
    ]);
    let origin = ServeProc::start(&[
        "--torrent",
        torrent.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--shards",
        "1",
        "--metrics",
        "off",
        "--tracker-listen",
        "off",
        "--control",
        "off",
    ]);
    (origin, torrent)
}

/// `ringseed` run to completion; panics with its output if it fails.
fn ringseed(args: &[&str]) -> String {
    let out = Command::new(support::serve::BIN)
        .args(args)
        .output()
        .expect("run ringseed");
    assert!(
        out.status.success(),
        "ringseed {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A release ledger with one block, so the ledger panels have data.
fn ledger_with_one_release(dir: &Path) -> (PathBuf, String) {
    let key = dir.join("publisher.key");
    let vkey = ringseed(&["ledger", "init", "--key", key.to_str().unwrap()]);
    let release = dir.join("release.bin");
    std::fs::write(&release, vec![7u8; 100_000]).unwrap();
    let torrent = dir.join("release.torrent");
    ringseed(&[
        "create",
        release.to_str().unwrap(),
        "-o",
        torrent.to_str().unwrap(),
    ]);
    let ledger = dir.join("ledger");
    ringseed(&[
        "ledger",
        "publish",
        torrent.to_str().unwrap(),
        "--ledger",
        ledger.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    (ledger, vkey)
}

/// Serves `dir`, with a ledger kept in `side` (outside the served
/// directory), and fetches a torrent from `origin` (for the fetch panels).
fn start_serve(
    dir: &Path,
    side: &Path,
    origin: &str,
    fetched: &Path,
) -> (ServeProc, String, SocketAddr) {
    let d = dir.to_str().unwrap();
    let (ledger, vkey) = ledger_with_one_release(side);
    let fetch_to = side.join("fetched").join("release.bin");
    let ledger_listen = format!("127.0.0.1:{}", free_port());
    let serve = ServeProc::start(&[
        d,
        "--listen",
        "127.0.0.1:0",
        "--shards",
        "2",
        "--metrics",
        "127.0.0.1:0",
        "--tracker-listen",
        "127.0.0.1:0",
        "--ledger",
        ledger.to_str().unwrap(),
        "--ledger-key",
        &vkey,
        "--ledger-listen",
        &ledger_listen,
        "--torrent",
        fetched.to_str().unwrap(),
        "--data",
        fetch_to.to_str().unwrap(),
        "--peer",
        origin,
    ]);
    let peer = serve.addr.clone();
    let metrics = serve
        .metrics
        .as_deref()
        .and_then(|m| m.parse().ok())
        .expect("serve printed its metrics address");
    (serve, peer, metrics)
}

/// The load generator binary of this workspace, built if missing.
fn loadtest_bin() -> PathBuf {
    let exe = Path::new(support::serve::BIN).with_file_name("ringseed-loadtest");
    if !exe.exists() {
        let st = Command::new(env!("CARGO"))
            .args([
                "build",
                "-p",
                "ringseed-loadtest",
                "--bin",
                "ringseed-loadtest",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build");
        assert!(st.success(), "building ringseed-loadtest failed");
    }
    exe
}
