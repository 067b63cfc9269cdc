//! Publishing without restarts, through the `serve` binary: torrents
//! arriving in the served DIR and removed through the control API while
//! peers download, bad input refused, and add/remove cycles that leave no
//! memory or fds behind.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::engine::data;
use support::leecher::download_until_closed;
use support::serve::{libtorrent_available, metric, ServeProc, BIN};

fn hex(h: &[u8]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

fn api() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// (status, body) of a control API request.
fn call(req: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, serde_json::Value) {
    let mut resp = req.expect("control API reachable");
    let status = resp.status().as_u16();
    let body = resp.body_mut().read_to_string().unwrap();
    let v = serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
    (status, v)
}

fn serve(dir: &Path, extra: &[&str]) -> ServeProc {
    let mut args = vec![
        dir.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
        "--control",
        "127.0.0.1:0",
        "--tracker-listen",
        "127.0.0.1:0",
        "--settle",
        "300ms",
    ];
    args.extend_from_slice(extra);
    ServeProc::start(&args)
}

/// Waits until `GET /torrents/{key}` answers 404 (the torrent is gone).
fn wait_gone(control: &str, key: &str, timeout: Duration) -> bool {
    let agent = api();
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let (status, _) = call(agent.get(format!("http://{control}/torrents/{key}")).call());
        if status == 404 {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

#[test]
fn torrents_arrive_by_rename_and_leave_through_the_api_on_two_shards() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dir");
    std::fs::create_dir(&dir).unwrap();
    let a_data = data(1, 8 << 20);
    let b_data = data(2, 3 << 20);
    let c_data = data(3, 4 << 20);
    std::fs::write(dir.join("a.bin"), &a_data).unwrap();
    std::fs::write(dir.join("c.bin"), &c_data).unwrap();
    // Caps keep A's and C's downloads in flight while B arrives and A goes.
    let config = tmp.path().join("ringseed.toml");
    std::fs::write(
        &config,
        "[per_torrent.\"a.bin\"]\nupload_rate_limit = \"6MB/s\"\n\n[per_torrent.\"c.bin\"]\nupload_rate_limit = \"3MB/s\"\n\n[per_torrent.\"later.bin\"]\nsuper_seed = false\n",
    )
    .unwrap();
    let s = serve(
        &dir,
        &["--shards", "2", "--config", config.to_str().unwrap()],
    );
    let control = s.control.clone().expect("control API address printed");
    let metrics = s.metrics.clone().unwrap();
    let addr: std::net::SocketAddr = s.addr.parse().unwrap();
    let (a_hash, a_plen, _) = s.torrent("a.bin");
    let (c_hash, c_plen, _) = s.torrent("c.bin");
    let a_space = std::sync::Arc::new(a_data.clone());
    let a_leechers: Vec<_> = (0..20)
        .map(|_| {
            let space = std::sync::Arc::clone(&a_space);
            std::thread::spawn(move || download_until_closed(addr, a_hash, a_plen, &space, 32))
        })
        .collect();
    let c_space = std::sync::Arc::new(c_data.clone());
    let c_leechers: Vec<_> = (0..2)
        .map(|_| {
            let space = std::sync::Arc::clone(&c_space);
            std::thread::spawn(move || download_until_closed(addr, c_hash, c_plen, &space, 32))
        })
        .collect();
    let started = Instant::now();
    while metric(&metrics, "ringseed_connections{") < 22.0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "22 leechers connected"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    // B arrives by atomic rename; the server prints its magnet link.
    let part = dir.join(".b.bin.part");
    std::fs::write(&part, &b_data).unwrap();
    let renamed = Instant::now();
    std::fs::rename(&part, dir.join("b.bin")).unwrap();
    let magnet = s
        .wait_line(Duration::from_secs(20), |l| {
            l.trim_start().starts_with("magnet") && l.contains("dn=b.bin")
        })
        .expect("B's magnet link printed");
    println!("B served {:?} after the rename", renamed.elapsed());
    let uri = magnet.split_whitespace().nth(1).unwrap().to_owned();
    let save = tmp.path().join("lt-save");
    std::fs::create_dir_all(&save).unwrap();
    let lt = libtorrent_available().then(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/lt_download.py");
        let save = save.clone();
        std::thread::spawn(move || {
            Command::new("python3")
                .arg(script)
                .args(["--timeout", "60", "--save"])
                .arg(&save)
                .args(["--magnet", &uri])
                .output()
                .expect("run lt_download.py")
        })
    });

    // A goes, through the CLI, while its 20 downloads are in flight.
    std::thread::sleep(Duration::from_millis(200));
    let out = Command::new(BIN)
        .args(["torrents", "remove", "--server"])
        .arg(format!("http://{control}"))
        .arg(hex(&a_hash))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("a.bin") && table.contains("draining"),
        "{table}"
    );
    let mut partial = 0;
    for l in a_leechers {
        let ended = l
            .join()
            .unwrap()
            .expect("A's peers saw only whole, correct blocks");
        assert!(ended.closed || ended.complete, "{ended:?}");
        assert_eq!(ended.torn, 0, "A's peer closed between messages: {ended:?}");
        partial += usize::from(!ended.complete);
    }
    assert!(partial > 0, "A's downloads were mid-flight");
    for l in c_leechers {
        let ended = l.join().unwrap().expect("C's download is untouched");
        assert!(ended.complete, "C's peer was dropped: {ended:?}");
    }
    if let Some(lt) = lt {
        let out = lt.join().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
            panic!(
                "lt_download.py: {text:?} ({e}); {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        assert_eq!(
            v[0]["completed"], true,
            "libtorrent downloads B by magnet: {v}"
        );
        assert_eq!(std::fs::read(save.join("b.bin")).unwrap(), b_data);
    }
    assert!(wait_gone(&control, &hex(&a_hash), Duration::from_secs(10)));

    // The list, as the CLI shows it.
    let out = Command::new(BIN)
        .args(["torrents", "list", "--json", "--server"])
        .arg(format!("http://{control}"))
        .output()
        .unwrap();
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["c.bin", "b.bin"], "{list}");
    assert_eq!(list[1]["state"], "serving");
    assert_eq!(list[1]["pieces_verified"], list[1]["pieces_total"]);
    assert!(std::fs::read_dir(dir.join(".ringseed"))
        .unwrap()
        .flatten()
        .all(|e| !e.file_name().to_string_lossy().starts_with("a.bin")));
    assert_eq!(
        metric(&metrics, "ringseed_torrent_changes_total{kind=\"removed\"}"),
        1.0
    );
    assert_eq!(
        metric(&metrics, "ringseed_torrent_changes_total{kind=\"added\"}"),
        1.0
    );
    assert_eq!(
        metric(&metrics, "ringseed_torrents{state=\"serving\"}"),
        2.0
    );
    let (took, status) = s.terminate();
    assert!(
        status.success() && took < Duration::from_secs(3),
        "{took:?} {status}"
    );
}

#[test]
fn bad_input_is_refused_and_the_rest_keeps_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dir");
    let other = tmp.path().join("elsewhere");
    let bad = tmp.path().join("bad");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&other).unwrap();
    std::fs::create_dir_all(&bad).unwrap();
    let c_data = data(3, 1 << 20);
    std::fs::write(dir.join("c.bin"), &c_data).unwrap();
    std::fs::write(other.join("x.bin"), data(4, 100_000)).unwrap();
    let s = serve(
        &dir,
        &["--shards", "1", "--allow-root", bad.to_str().unwrap()],
    );
    let control = s.control.clone().unwrap();
    let url = format!("http://{control}/torrents");
    let agent = api();
    let post_json = |path: &Path| {
        call(
            agent
                .post(&url)
                .content_type("application/json")
                .send(serde_json::json!({ "data": path }).to_string()),
        )
    };
    // Outside the allowed roots.
    let (st, v) = post_json(&other.join("x.bin"));
    assert_eq!(st, 403, "{v}");
    assert!(v["error"].as_str().unwrap().contains("--allow-root"), "{v}");
    // A .torrent that does not parse.
    let (st, v) = call(
        agent
            .post(&url)
            .query("data", dir.join("c.bin").to_str().unwrap())
            .content_type("application/x-bittorrent")
            .send(&b"d4:infoi3ee"[..]),
    );
    assert_eq!(st, 400, "{v}");
    // Data that does not match: a torrent of other bytes.
    let orig = bad.join("orig.bin");
    std::fs::write(&orig, &c_data).unwrap();
    let opts = ringseed::create::CreateOptions {
        version: ringseed::metainfo::MetaVersion::V1,
        piece_length: Some(1 << 16),
        ..Default::default()
    };
    let torrent = ringseed::create::create(&orig, &opts, &|_| {})
        .unwrap()
        .bytes;
    let mut wrong = c_data.clone();
    wrong[1000] ^= 1;
    let wrong_path = bad.join("c.bin");
    std::fs::write(&wrong_path, &wrong).unwrap();
    let (st, v) = call(
        agent
            .post(&url)
            .query("data", wrong_path.to_str().unwrap())
            .content_type("application/x-bittorrent")
            .send(&torrent[..]),
    );
    assert_eq!(st, 422, "{v}");
    std::fs::write(&wrong_path, &c_data[..1000]).unwrap();
    let (st, v) = call(
        agent
            .post(&url)
            .query("data", wrong_path.to_str().unwrap())
            .content_type("application/x-bittorrent")
            .send(&torrent[..]),
    );
    assert_eq!(st, 422, "size mismatch: {v}");
    // A duplicate info-hash.
    let (st, v) = post_json(&dir.join("c.bin"));
    assert_eq!(st, 409, "{v}");
    // A FIFO, a symlink loop, a tree too deep.
    let fifo = bad.join("fifo");
    let ok = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(ok.success());
    let (st, v) = post_json(&fifo);
    assert_eq!(st, 422, "{v}");
    let looped = bad.join("loop");
    std::os::unix::fs::symlink(&looped, &looped).unwrap();
    let (st, v) = post_json(&looped);
    assert_eq!(st, 422, "{v}");
    std::fs::remove_file(&looped).unwrap();
    std::fs::remove_file(&fifo).unwrap();
    let mut deep = bad.join("deep");
    for _ in 0..40 {
        deep.push("d");
    }
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("f"), b"x").unwrap();
    let (st, v) = post_json(&bad.join("deep"));
    assert_eq!(st, 422, "{v}");
    // A FIFO dropped into DIR is refused by the follower (one log line).
    let ok = Command::new("mkfifo")
        .arg(dir.join("pipe"))
        .status()
        .unwrap();
    assert!(ok.success());
    std::thread::sleep(Duration::from_millis(800));
    // Removing what is not there.
    let (st, _) = call(agent.delete(format!("{url}/{}", "00".repeat(20))).call());
    assert_eq!(st, 404);

    // Nothing of that is served; c.bin still is, in full.
    let (st, list) = call(agent.get(&url).call());
    assert_eq!(st, 200);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["c.bin"], "{list}");
    let (c_hash, c_plen, _) = s.torrent("c.bin");
    let ended = download_until_closed(s.addr.parse().unwrap(), c_hash, c_plen, &c_data, 32)
        .expect("c.bin downloads");
    assert!(ended.complete);
}

/// Anonymous RSS (kB) and open fds of process `pid`.
fn footprint(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let anon = status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    (anon, fds)
}

#[test]
fn a_hundred_add_remove_cycles_leave_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dir");
    let pool = tmp.path().join("pool");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&pool).unwrap();
    std::fs::write(dir.join("keep.bin"), data(5, 256 << 10)).unwrap();
    std::fs::write(pool.join("cycle.bin"), data(6, 1 << 20)).unwrap();
    let s = serve(
        &dir,
        &["--shards", "2", "--allow-root", pool.to_str().unwrap()],
    );
    let control = s.control.clone().unwrap();
    let pid = s.child.id();
    let agent = api();
    let url = format!("http://{control}/torrents");
    let cycle = || {
        let (st, v) = call(
            agent
                .post(&url)
                .content_type("application/json")
                .send(serde_json::json!({ "data": pool.join("cycle.bin") }).to_string()),
        );
        assert_eq!(st, 201, "{v}");
        assert_eq!(v["state"], "serving");
        let key = v["info_hash_v1"].as_str().unwrap().to_owned();
        let (st, v) = call(agent.delete(format!("{url}/{key}")).call());
        assert_eq!(st, 202, "{v}");
        assert!(wait_gone(&control, &key, Duration::from_secs(10)));
    };
    // Warm up (allocator pools, thread stacks, the HTTP runtime): by hand,
    // 1000 cycles stay within 31-36 MB, the level of the first 100.
    for _ in 0..20 {
        cycle();
    }
    // The last removal's thread finishes (its data watch) after the 404.
    std::thread::sleep(Duration::from_millis(300));
    let before = footprint(pid);
    let started = Instant::now();
    let rounds: usize = std::env::var("RINGSEED_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    for i in 1..=rounds {
        cycle();
        if i % 100 == 0 {
            std::thread::sleep(Duration::from_millis(300));
            let now = footprint(pid);
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
            let threads = status
                .lines()
                .find(|l| l.starts_with("Threads:"))
                .unwrap_or("");
            let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
                .unwrap()
                .lines()
                .count();
            println!(
                "after {i} cycles: RssAnon {} kB, open fds {}, {threads}, {maps} mappings",
                now.0, now.1
            );
        }
    }
    let took = started.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let after = footprint(pid);
    println!(
        "{rounds} add/remove cycles in {took:?}: RssAnon {} kB -> {} kB, open fds {} -> {}",
        before.0, after.0, before.1, after.1
    );
    assert!(after.1 <= before.1, "open fds back to their level");
    assert!(
        after.0 < before.0 + 8192,
        "anonymous RSS grew by {} kB",
        after.0.saturating_sub(before.0)
    );
    let metrics = s.metrics.clone().unwrap();
    assert_eq!(
        metric(&metrics, "ringseed_torrent_changes_total{kind=\"removed\"}"),
        rounds as f64 + 20.0
    );
}

/// Info-hash (v1 hex) in a printed magnet link.
fn btih(magnet: &str) -> [u8; 20] {
    let i = magnet.find("xt=urn:btih:").expect("btih in magnet") + 12;
    let hexs = &magnet[i..i + 40];
    let mut h = [0u8; 20];
    for (k, b) in h.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hexs[2 * k..2 * k + 2], 16).unwrap();
    }
    h
}

#[test]
fn dir_entries_are_replaced_and_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dir");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("r.bin"), data(7, 300_000)).unwrap();
    let s = serve(&dir, &["--shards", "1"]);
    let control = s.control.clone().unwrap();
    let metrics = s.metrics.clone().unwrap();
    let (old, _, _) = s.torrent("r.bin");
    let state = dir.join(".ringseed");
    let records = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&state)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(records().len(), 2, "{:?}", records());

    // New content renamed over the name: a new torrent, the old drained.
    let new_data = data(8, 200_000);
    std::fs::write(dir.join(".r.part"), &new_data).unwrap();
    std::fs::rename(dir.join(".r.part"), dir.join("r.bin")).unwrap();
    let magnet = s
        .wait_line(Duration::from_secs(10), |l| {
            l.contains("magnet:?") && l.contains("dn=r.bin")
        })
        .expect("the new r.bin is announced");
    let new = btih(&magnet);
    assert_ne!(new, old);
    assert!(wait_gone(&control, &hex(&old), Duration::from_secs(10)));
    let (_, v) = call(
        api()
            .get(format!("http://{control}/torrents/{}", hex(&new)))
            .call(),
    );
    assert_eq!(v["state"], "serving", "{v}");
    assert_eq!(v["size"], new_data.len());
    assert_eq!(
        metric(
            &metrics,
            "ringseed_torrent_changes_total{kind=\"replaced\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(&metrics, "ringseed_torrent_changes_total{kind=\"added\"}"),
        0.0
    );
    assert_eq!(
        records().len(),
        2,
        "old resume record pruned: {:?}",
        records()
    );

    // The entry removed: drained, records pruned.
    std::fs::remove_file(dir.join("r.bin")).unwrap();
    assert!(wait_gone(&control, &hex(&new), Duration::from_secs(10)));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !records().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(records().is_empty(), "{:?}", records());
    assert_eq!(
        metric(&metrics, "ringseed_torrent_changes_total{kind=\"removed\"}"),
        1.0
    );
}

/// Time from the rename of a new file into DIR to the first payload byte a
/// waiting client receives: the client learns the info-hash from the
/// printed magnet link, connects and asks for the first block. Bounded by
/// hashing (the file is in the page cache: it was just written).
/// `RINGSEED_FIRST_BYTE_MIB` (default 64) sets the size.
#[test]
fn first_byte_after_a_rename_into_dir() {
    let mib: usize = std::env::var("RINGSEED_FIRST_BYTE_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dir");
    std::fs::create_dir_all(&dir).unwrap();
    let s = serve(&dir, &["--shards", "2"]);
    let addr: std::net::SocketAddr = s.addr.parse().unwrap();
    let part = dir.join(".big.part");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&part).unwrap());
        let chunk = data(9, 1 << 20);
        for _ in 0..mib {
            f.write_all(&chunk).unwrap();
        }
        f.flush().unwrap();
    }
    let renamed = Instant::now();
    std::fs::rename(&part, dir.join("big.bin")).unwrap();
    let magnet = s
        .wait_line(Duration::from_secs(600), |l| {
            l.contains("magnet:?") && l.contains("dn=big.bin")
        })
        .expect("big.bin announced");
    let announced = renamed.elapsed();
    let hash = btih(&magnet);
    use ringseed::wire::codec::{BlockRequest, Message};
    use support::leecher::{Got, RawPeer};
    let mut peer = RawPeer::connect(addr, hash, true, &[Message::Interested]).expect("handshake");
    let block = BlockRequest {
        piece: 0,
        begin: 0,
        len: 16384,
    };
    let first_byte = loop {
        match peer.recv(Duration::from_secs(10)).unwrap() {
            Some(Got::Unchoke) => peer.send(&[Message::Request(block)]).unwrap(),
            Some(Got::Piece(_)) => break renamed.elapsed(),
            Some(_) => {}
            None => panic!("no block within 10 s"),
        }
    };
    println!(
        "{mib} MiB: rename -> magnet printed {announced:?}, -> first payload byte {first_byte:?}"
    );
    assert!(first_byte >= announced);
}

#[test]
fn a_control_api_off_loopback_needs_a_token() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dir");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("t.bin"), data(10, 100_000)).unwrap();
    let common = [
        "--listen",
        "127.0.0.1:0",
        "--metrics",
        "off",
        "--tracker-listen",
        "off",
        "--shards",
        "1",
        "--control",
        "0.0.0.0:0",
    ];
    let out = Command::new(BIN)
        .arg("serve")
        .arg(&dir)
        .args(common)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--control-token-file"), "{err}");

    let token = tmp.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .arg(&dir)
        .args(common)
        .arg("--control-token-file")
        .arg(&token);
    let s = ServeProc::spawn(cmd);
    let port = s
        .control
        .clone()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();
    let url = format!("http://127.0.0.1:{port}");
    let (st, v) = call(api().get(format!("{url}/torrents")).call());
    assert_eq!(st, 401, "{v}");
    let out = Command::new(BIN)
        .args(["torrents", "list", "--server", &url, "--token-file"])
        .arg(&token)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.starts_with("NAME") && table.contains("t.bin") && table.contains("serving"),
        "{table}"
    );
}
