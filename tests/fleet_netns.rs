//! A fleet in network namespaces this test makes and removes itself: one
//! opentracker, one origin box (super-seeding) holding the release, 4 edge
//! boxes given only the `.torrent`, and 20 stock libtorrent leechers spread
//! over the edge namespaces; every link capped with `tc tbf` (each
//! namespace's veth: its upload on its side, its download on the bridge's).
//!
//! The edges fill themselves from the origin and from each other (the
//! origin reaches them by `--peer`; they find each other and the leechers
//! through the tracker, which never lists the origin), then serve the
//! leechers. Reported (`FIGURE:` lines): the time until every edge holds
//! the release, the origin's egress / file size, and the leechers'
//! completion against the bound `max(F/u_s, F/d, N*F/(u_s + N*u))` with
//! u_s the edges' aggregate upload.
//!
//! Needs root, `ip netns`, `tc`, opentracker and libtorrent: skipped with a
//! loud message where they are missing and `CI` is unset, a failure under
//! `CI=true`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::serve::{libtorrent_available, metric, ServeProc, BIN};

const OPENTRACKER: &str = "/usr/bin/opentracker";
const MB: f64 = 1_000_000.0;
/// Release size.
const F: usize = 24 << 20;
/// Origin uplink / downlink, bytes per second.
const ORIGIN_UP: u64 = 8_000_000;
const ORIGIN_DOWN: u64 = 25_000_000;
/// Each edge namespace's uplink and downlink (shared by its edge box and
/// its leechers).
const EDGE_LINK: u64 = 25_000_000;
/// Each leecher's caps (libtorrent's own limits).
const LEECHER_UP: u64 = 1_000_000;
const LEECHER_DOWN: u64 = 4_000_000;
const EDGES: usize = 4;
const LEECHERS_PER_EDGE: usize = 5;

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn skip(why: &str) {
    if ci() {
        panic!("fleet_netns: {why} (required under CI=true)");
    }
    eprintln!("\n**** SKIP fleet_netns: {why} ****\n");
}

fn sh(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The namespaces, veths and bridge of one run; removed on drop.
struct Net {
    prefix: String,
    bridge: String,
    namespaces: Vec<String>,
}

impl Net {
    fn ns(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Bridge `10.77.0.254/24` in this namespace, and one namespace per
    /// `(name, last octet, up, down)` on it.
    fn build(nodes: &[(&str, u8, u64, u64)]) -> Result<Net, String> {
        let id = std::process::id() % 100_000;
        let mut net = Net {
            prefix: format!("rsf{id}-"),
            bridge: format!("rsf{id}br"),
            namespaces: Vec::new(),
        };
        sh(&["ip", "link", "add", &net.bridge, "type", "bridge"])?;
        sh(&["ip", "addr", "add", "10.77.0.254/24", "dev", &net.bridge])?;
        sh(&["ip", "link", "set", &net.bridge, "up"])?;
        for (i, &(name, octet, up, down)) in nodes.iter().enumerate() {
            let ns = net.ns(name);
            sh(&["ip", "netns", "add", &ns])?;
            net.namespaces.push(ns.clone());
            let outer = format!("rsf{id}v{i}");
            sh(&[
                "ip", "link", "add", &outer, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            sh(&["ip", "link", "set", &outer, "master", &net.bridge])?;
            sh(&["ip", "link", "set", &outer, "up"])?;
            let addr = format!("10.77.0.{octet}/24");
            sh(&["ip", "-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
            sh(&["ip", "-n", &ns, "link", "set", "eth0", "up"])?;
            sh(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
            // Upload: the namespace's egress. Download: the bridge port's.
            tbf(Some(&ns), "eth0", up)?;
            tbf(None, &outer, down)?;
        }
        Ok(net)
    }
}

fn tbf(ns: Option<&str>, dev: &str, rate: u64) -> Result<(), String> {
    let bits = format!("{}bit", rate * 8);
    let burst = format!("{}", (rate / 100).max(64 * 1024));
    let mut args: Vec<&str> = Vec::new();
    if let Some(ns) = ns {
        args.extend(["ip", "netns", "exec", ns]);
    }
    args.extend([
        "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", &bits, "burst", &burst, "latency",
        "200ms",
    ]);
    sh(&args)
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            let _ = sh(&["ip", "netns", "del", ns]);
        }
        let _ = sh(&["ip", "link", "del", &self.bridge]);
    }
}

/// Kills the child by its PID when dropped.
struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn in_ns(ns: &str, prog: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, prog]);
    c
}

fn create(data: &Path, out: &Path, tracker: Option<&str>) {
    let mut c = Command::new(BIN);
    c.args(["create", "--no-date", "--piece-length", "262144", "-o"])
        .arg(out)
        .arg(data);
    if let Some(t) = tracker {
        c.args(["--tracker", t]);
    }
    assert!(c.status().unwrap().success());
}

fn serve_in(ns: &str, args: &[&str]) -> ServeProc {
    let mut c = in_ns(ns, BIN);
    c.arg("serve").args(args);
    ServeProc::spawn(c)
}

#[test]
fn an_origin_fills_four_edges_that_serve_twenty_libtorrent_leechers_in_namespaces() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return skip("not root (network namespaces and tc need it)");
    }
    if !Path::new(OPENTRACKER).exists() {
        return skip("opentracker missing (apt-get install -y opentracker)");
    }
    if !libtorrent_available() {
        return;
    }
    let mut nodes: Vec<(String, u8, u64, u64)> = vec![
        ("tracker".into(), 1, 10_000_000, 10_000_000),
        ("origin".into(), 2, ORIGIN_UP, ORIGIN_DOWN),
    ];
    for i in 0..EDGES {
        nodes.push((format!("edge{i}"), 11 + i as u8, EDGE_LINK, EDGE_LINK));
    }
    let spec: Vec<(&str, u8, u64, u64)> = nodes
        .iter()
        .map(|(n, o, u, d)| (n.as_str(), *o, *u, *d))
        .collect();
    let net = match Net::build(&spec) {
        Ok(n) => n,
        Err(e) => return skip(&format!("cannot build the namespaces: {e}")),
    };

    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("release.bin");
    let bytes: Vec<u8> = (0..F as u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    std::fs::write(&data, &bytes).unwrap();
    // One info dictionary, two files: the origin's names no tracker (it is
    // reached by --peer only, so clients never find it); everyone else's
    // names the tracker.
    let tracker_url = "http://10.77.0.1:6969/announce";
    let origin_t = d.path().join("origin.torrent");
    create(&data, &origin_t, None);
    let t = d.path().join("release.torrent");
    create(&data, &t, Some(tracker_url));
    let torrent = ringseed::metainfo::Torrent::from_bytes(&std::fs::read(&t).unwrap()).unwrap();
    let hash = torrent.info_hash_v1.unwrap().to_string();

    let trackdir = tempfile::tempdir().unwrap();
    std::fs::write(trackdir.path().join("wl"), format!("{hash}\n")).unwrap();
    let _tracker = Kill(
        in_ns(&net.ns("tracker"), OPENTRACKER)
            .args(["-i", "10.77.0.1", "-p", "6969", "-P", "6969", "-d"])
            .arg(trackdir.path())
            .args(["-w", "wl"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    let common = [
        "--shards",
        "1",
        "--tracker-listen",
        "off",
        "--control",
        "off",
    ];
    let mut args = vec![
        "--torrent",
        origin_t.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--listen",
        "10.77.0.2:6881",
        "--metrics",
        "10.77.0.2:9100",
        "--super-seed",
    ];
    args.extend(common);
    let origin = serve_in(&net.ns("origin"), &args);
    let started = Instant::now();
    let mut edges = Vec::new();
    let mut edge_data = Vec::new();
    for i in 0..EDGES {
        let ip = format!("10.77.0.{}", 11 + i);
        let dest = d.path().join(format!("edge{i}/release.bin"));
        let listen = format!("{ip}:6881");
        let metrics = format!("{ip}:9100");
        let mut args = vec![
            "--torrent",
            t.to_str().unwrap(),
            "--data",
            dest.to_str().unwrap(),
            "--peer",
            "10.77.0.2:6881",
            "--listen",
            &listen,
            "--metrics",
            &metrics,
        ];
        args.extend(common);
        edges.push(serve_in(&net.ns(&format!("edge{i}")), &args));
        edge_data.push(dest);
    }
    // Clients arrive while the fleet fills.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/lt_leechers.py");
    let mut leechers = Vec::new();
    for i in 0..EDGES {
        let ip = format!("10.77.0.{}", 11 + i);
        let save: PathBuf = d.path().join(format!("leechers{i}"));
        let c = in_ns(&net.ns(&format!("edge{i}")), "python3")
            .arg(&script)
            .args(["--torrent", t.to_str().unwrap(), "--listen", &ip])
            .args(["--count", &LEECHERS_PER_EDGE.to_string()])
            .args([
                "--up",
                &LEECHER_UP.to_string(),
                "--down",
                &LEECHER_DOWN.to_string(),
            ])
            .args(["--timeout", "80", "--save"])
            .arg(&save)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        leechers.push((Kill(c), save));
    }

    // Every edge holds the release.
    let deadline = started + Duration::from_secs(60);
    let mut filled = vec![None; EDGES];
    while filled.iter().any(Option::is_none) {
        assert!(
            Instant::now() < deadline,
            "edges not filled after 60 s: {filled:?}"
        );
        for (i, e) in edges.iter().enumerate() {
            if filled[i].is_none()
                && metric(e.metrics.as_deref().unwrap(), "ringseed_fetch_complete") >= 1.0
            {
                filled[i] = Some(started.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let fill = filled.iter().flatten().max().unwrap().as_secs_f64();
    for e in &edge_data {
        assert!(
            std::fs::read(e).unwrap() == bytes,
            "{} differs",
            e.display()
        );
    }

    // The leechers.
    let mut times = Vec::new();
    for (mut c, save) in leechers {
        let mut out = String::new();
        std::io::Read::read_to_string(c.0.stdout.as_mut().unwrap(), &mut out).unwrap();
        let status = c.0.wait().unwrap();
        let v: serde_json::Value = serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("lt_leechers.py printed {out:?}: {e}"));
        assert!(status.success(), "leechers did not all complete: {out}");
        for l in v["leechers"].as_array().unwrap() {
            times.push(l["completed_after"].as_f64().unwrap());
        }
        for k in 0..LEECHERS_PER_EDGE {
            let got = std::fs::read(save.join(format!("l{k}/release.bin"))).unwrap();
            assert!(got == bytes, "a leecher's file differs");
        }
    }
    let origin_out = metric(
        origin.metrics.as_deref().unwrap(),
        "ringseed_payload_bytes_total",
    );
    let ratio = origin_out / F as f64;
    let f = F as f64;
    let n = (EDGES * LEECHERS_PER_EDGE) as f64;
    let u_s = (EDGES as u64 * EDGE_LINK) as f64;
    let bound = (f / u_s)
        .max(f / LEECHER_DOWN as f64)
        .max(n * f / (u_s + n * LEECHER_UP as f64));
    let last = times.iter().copied().fold(0.0, f64::max);
    let edge_bound = f / ORIGIN_UP as f64;
    println!(
        "FIGURE: fleet of {EDGES} edges filled from a super-seeding origin ({:.0} MB/s up) in {fill:.1} s (bound F/u_origin {edge_bound:.1} s, {:.2}x)",
        ORIGIN_UP as f64 / MB,
        fill / edge_bound
    );
    println!(
        "FIGURE: origin egress {:.2} x the file ({:.1} MB of {:.1} MB)",
        ratio,
        origin_out / MB,
        f / MB
    );
    println!(
        "FIGURE: {n} leechers done after {last:.1} s (bound max(F/u_s, F/d, N*F/(u_s+N*u)) = {bound:.1} s, {:.2}x)",
        last / bound
    );
    assert!(
        ratio < 1.3,
        "the origin uploaded {ratio:.2} copies for a fleet of {EDGES}"
    );
    drop(edges);
    drop(origin);
}
