//! Soak: `ringseed serve` under the load generator with connection churn;
//! RSS and open fds are sampled every 10 s and must stay flat after
//! warm-up, and after the load stops the server must hold no leaked
//! connection or descriptor; SIGTERM must then stop it within 2 s.
//!
//! CI runs 60 s. The documented long run (issue 6) is
//! `RINGSEED_SOAK_SECS=600 cargo test --release -p ringseed-loadtest --test soak -- --nocapture`,
//! which prints the RSS/fd series.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LOADTEST: &str = env!("CARGO_BIN_EXE_ringseed-loadtest");

fn ringseed_bin() -> PathBuf {
    let same_profile = Path::new(LOADTEST).with_file_name("ringseed");
    if !same_profile.exists() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let st = Command::new(env!("CARGO"))
            .args(["build", "-p", "ringseed", "--bin", "ringseed"])
            .current_dir(root)
            .status()
            .unwrap();
        assert!(st.success());
    }
    same_profile
}

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn metric(addr: &str, name: &str) -> f64 {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return -1.0;
    };
    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn soak_with_churn_has_no_leaks() {
    let secs: u64 = std::env::var("RINGSEED_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..16u64 << 20)
        .map(ringseed_loadtest::testkit::content_byte)
        .collect();
    std::fs::write(dir.path().join("soak.bin"), &data).unwrap();
    let mut child = Command::new(ringseed_bin())
        .arg("serve")
        .arg(dir.path())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--shards",
            "2",
            "--metrics",
            "127.0.0.1:0",
            "--tracker-listen",
            "off",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.stdout.take().unwrap();
    let mut server = Proc(child);
    let (mut addr, mut metrics) = (String::new(), String::new());
    for line in BufReader::new(out).lines().map_while(Result::ok) {
        if let Some(m) = line.strip_prefix("metrics on http://") {
            metrics = m.trim_end_matches("/metrics").to_string();
        }
        if let Some(rest) = line.strip_prefix("listening on ") {
            addr = rest.split_whitespace().next().unwrap().to_string();
            break;
        }
    }
    let fds_before = fds(pid);
    let torrent = dir.path().join(".ringseed/soak.bin.torrent");
    let duration = format!("{secs}s");
    let mut load = Proc(
        Command::new(LOADTEST)
            .args(["--target", &addr, "--torrent", torrent.to_str().unwrap()])
            .args([
                "--connections",
                "64",
                "--pipeline",
                "16",
                "--churn",
                "40",
                "--duration",
                &duration,
            ])
            .args(["--source-ips", "127.0.0.1-127.0.0.8", "--verify", "--quiet"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let start = Instant::now();
    let mut series = Vec::new();
    while start.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(
            Duration::from_secs(10).min(Duration::from_secs(secs).saturating_sub(start.elapsed())),
        );
        let sample = (
            start.elapsed().as_secs(),
            rss_kib(pid),
            fds(pid),
            metric(&metrics, "ringseed_connections{"),
        );
        eprintln!(
            "t={:>4}s rss={:>7} KiB fds={:>5} connections={}",
            sample.0, sample.1, sample.2, sample.3
        );
        series.push(sample);
    }
    let status = load.0.wait().unwrap();
    assert!(
        status.success(),
        "the load generator reported errors (hash failures or protocol errors)"
    );
    // Flat after warm-up: the last sample is within 25% (+4 MiB) of the one
    // after the first 20 s.
    let warm = series
        .iter()
        .find(|s| s.0 >= 20)
        .or(series.first())
        .unwrap();
    let last = series.last().unwrap();
    assert!(
        last.1 <= warm.1 + warm.1 / 4 + 4096,
        "RSS grew from {} KiB to {} KiB: {series:?}",
        warm.1,
        last.1
    );
    // After the load: no connection and no descriptor left behind.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let conns = metric(&metrics, "ringseed_connections{");
        let now_fds = fds(pid);
        if conns == 0.0 && now_fds <= fds_before + 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "leak after load: {conns} connections, {now_fds} fds (before: {fds_before})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Graceful shutdown within 2 s.
    let t = Instant::now();
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    loop {
        if let Some(st) = server.0.try_wait().unwrap() {
            assert!(st.success(), "serve exited with {st}");
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "shutdown took over 2 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let served = data.len();
    eprintln!("soak of {secs} s passed ({served} byte torrent)");
}
