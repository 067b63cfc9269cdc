//! `ringseed serve --upload-rate-limit` and per-torrent caps, measured by
//! raw leechers on loopback that keep requesting for 13 s: the rate they
//! receive over 10 s windows (after a 1-3 s warm-up) must be within 5% of
//! the cap; above it by more than 5% + one burst (50 ms) is always a bug.
//! Below it by more than 5% is a bug too: the cap is one pool for the box,
//! so it is reached whatever shards the leechers landed on.

mod support;

use std::path::Path;
use std::time::Duration;

use support::engine::data;
use support::leecher::{pull, rate_between};
use support::serve::{metric, ServeProc};

const RUN: Duration = Duration::from_secs(13);
const MB: f64 = 1e6;

/// `serve DIR ARGS` on loopback with metrics on a free port, no tracker.
fn serve(dir: &Path, args: &[&str]) -> ServeProc {
    let mut all = vec![
        dir.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
        "--tracker-listen",
        "off",
    ];
    all.extend(args);
    ServeProc::start(&all)
}

/// Starts a leecher thread pulling torrent `name` for [`RUN`].
fn leecher(server: &ServeProc, name: &str) -> std::thread::JoinHandle<Vec<(Duration, u32)>> {
    let addr = server.addr.parse().unwrap();
    let (hash, plen, size) = server.torrent(name);
    std::thread::spawn(move || pull(addr, hash, plen, size, 64, RUN).expect("leecher"))
}

/// The lowest and highest rate over the 10 s windows starting at 1, 2, 3 s.
fn windows(samples: &[(Duration, u32)]) -> (f64, f64) {
    let rates: Vec<f64> = (1..=3)
        .map(|s| {
            let from = Duration::from_secs(s);
            rate_between(samples, from, from + Duration::from_secs(10))
        })
        .collect();
    (
        rates.iter().copied().fold(f64::MAX, f64::min),
        rates.iter().copied().fold(0.0, f64::max),
    )
}

fn merged(all: &[Vec<(Duration, u32)>]) -> Vec<(Duration, u32)> {
    all.iter().flatten().copied().collect()
}

/// At most 5% above `cap`, plus one 50 ms burst spread over 10 s.
fn assert_not_above(rate: f64, cap: f64, what: &str) {
    let limit = cap * 1.05 + cap * 0.05 / 10.0;
    assert!(
        rate <= limit,
        "{what}: {:.3} MB/s exceeds the cap {:.3} MB/s",
        rate / MB,
        cap / MB
    );
}

fn assert_near(rate: f64, cap: f64, what: &str) {
    assert_not_above(rate, cap, what);
    assert!(
        rate >= cap * 0.95,
        "{what}: {:.3} MB/s is more than 5% below the cap {:.3} MB/s",
        rate / MB,
        cap / MB
    );
}

fn content(dir: &Path, names: &[&str]) {
    for (i, n) in names.iter().enumerate() {
        std::fs::write(dir.join(n), data(40 + i as u64, 4 << 20)).unwrap();
    }
}

/// A lone leecher gets the whole box cap at any shard count: the cap is one
/// token pool for the box, not `cap / shards` per shard. Shard counts from
/// `RINGSEED_UPLOAD_CAP_SHARDS` (e.g. `1,2,8`; default 8: the case a
/// per-shard split fails worst).
#[test]
fn one_leecher_gets_the_box_cap() {
    let counts = std::env::var("RINGSEED_UPLOAD_CAP_SHARDS").unwrap_or_else(|_| "8".into());
    for shards in counts.split(',').map(|s| s.trim().to_owned()) {
        let dir = tempfile::tempdir().unwrap();
        content(dir.path(), &["one.bin"]);
        let server = serve(
            dir.path(),
            &["--shards", &shards, "--upload-rate-limit", "4MB/s"],
        );
        let got = leecher(&server, "one.bin").join().unwrap();
        let (lo, hi) = windows(&got);
        eprintln!(
            "one leecher, {shards} shard(s), cap 4 MB/s: 10 s windows {:.4}..{:.4} MB/s ({:.2}%..{:.2}% of the cap)",
            lo / MB,
            hi / MB,
            lo / (4.0 * MB) * 100.0,
            hi / (4.0 * MB) * 100.0
        );
        assert_near(lo, 4.0 * MB, "lowest window");
        assert_near(hi, 4.0 * MB, "highest window");
        let metrics = server.metrics.clone().unwrap();
        // Summed over shards (`metric` adds every series of the name).
        let limit = metric(&metrics, "ringseed_upload_limit_bytes_per_second{");
        assert_eq!(limit, 4e6, "the gauge sums to the box cap");
        assert!(metric(&metrics, "ringseed_upload_throttle_wait_seconds_total{") > 1.0);
    }
}

#[test]
fn several_leechers_on_two_shards_share_the_box_cap() {
    let dir = tempfile::tempdir().unwrap();
    content(dir.path(), &["many.bin"]);
    let server = serve(
        dir.path(),
        &["--shards", "2", "--upload-rate-limit", "4MB/s"],
    );
    let handles: Vec<_> = (0..4).map(|_| leecher(&server, "many.bin")).collect();
    // Which shards the kernel gave the leechers (SO_REUSEPORT hash).
    std::thread::sleep(Duration::from_secs(2));
    let metrics = server.metrics.clone().unwrap();
    let busy_shards = (0..2)
        .filter(|i| metric(&metrics, &format!("ringseed_connections{{shard=\"{i}\"}}")) > 0.0)
        .count();
    let all: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let (lo, hi) = windows(&merged(&all));
    let each: Vec<f64> = all
        .iter()
        .map(|s| rate_between(s, Duration::from_secs(2), Duration::from_secs(12)))
        .collect();
    eprintln!(
        "4 leechers on {busy_shards} of 2 shards, cap 4 MB/s: total {:.4}..{:.4} MB/s, each {:?}",
        lo / MB,
        hi / MB,
        each.iter()
            .map(|r| format!("{:.3}", r / MB))
            .collect::<Vec<_>>()
    );
    // One cap for the box, however the kernel spread the leechers.
    assert_near(lo, 4.0 * MB, "lowest window");
    assert_near(hi, 4.0 * MB, "highest window");
    // Fair across shards: everyone gets at least 80% of 4 MB/s / 4.
    for (i, r) in each.iter().enumerate() {
        assert!(*r >= 0.8 * MB, "leecher {i} starved: {:.3} MB/s", r / MB);
    }
}

#[test]
fn a_per_torrent_cap_applies_within_the_box_cap() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    content(&data_dir, &["capped.bin", "free.bin"]);
    let config = dir.path().join("ringseed.toml");
    std::fs::write(
        &config,
        "upload_rate_limit = \"6MB/s\"\n\n[per_torrent.\"capped.bin\"]\nupload_rate_limit = \"2MB/s\"\n",
    )
    .unwrap();
    let server = serve(
        &data_dir,
        &["--shards", "1", "--config", config.to_str().unwrap()],
    );
    assert!(
        server
            .banner
            .iter()
            .any(|l| l == "torrent capped.bin (upload cap 2MB/s)"),
        "{:#?}",
        server.banner
    );
    let capped = leecher(&server, "capped.bin");
    let free = leecher(&server, "free.bin");
    let capped = capped.join().unwrap();
    let free = free.join().unwrap();
    let (c_lo, c_hi) = windows(&capped);
    let (t_lo, t_hi) = windows(&merged(&[capped, free]));
    eprintln!(
        "per-torrent cap 2 MB/s in a 6 MB/s box: capped {:.4}..{:.4}, total {:.4}..{:.4} MB/s",
        c_lo / MB,
        c_hi / MB,
        t_lo / MB,
        t_hi / MB
    );
    assert_near(c_lo, 2.0 * MB, "capped torrent, lowest window");
    assert_near(c_hi, 2.0 * MB, "capped torrent, highest window");
    assert_near(t_lo, 6.0 * MB, "box, lowest window");
    assert_near(t_hi, 6.0 * MB, "box, highest window");
}

#[test]
fn a_per_torrent_key_that_names_nothing_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    content(&data_dir, &["real.bin"]);
    let config = dir.path().join("ringseed.toml");
    std::fs::write(&config, "[per_torrent.\"typo.bin\"]\nsuper_seed = true\n").unwrap();
    let stderr_path = dir.path().join("stderr.txt");
    let mut cmd = std::process::Command::new(support::serve::BIN);
    cmd.args(["serve", data_dir.to_str().unwrap(), "--config"])
        .arg(&config)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--metrics",
            "off",
            "--control",
            "off",
            "--tracker-listen",
            "off",
        ])
        .stderr(std::fs::File::create(&stderr_path).unwrap());
    // ServeProc waits for `listening on`: the server starts.
    let s = ServeProc::spawn(cmd);
    let (_, status) = s.terminate();
    assert!(status.success());
    let err = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(
        err.contains(r#"[per_torrent."typo.bin"] names no served torrent"#)
            && err.contains(r#""real.bin" (v1 "#),
        "{err}"
    );
}
