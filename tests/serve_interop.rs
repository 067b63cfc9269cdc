//! Interop: real libtorrent 2.1.1 leechers (Python bindings) download from
//! the `ringseed serve` binary on loopback, told about it with
//! `connect_peer` (no tracker). Files must match byte for byte.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

mod support;

use support::tree::assert_same_tree;

use support::serve::{libtorrent_available, ServeProc, BIN};

/// `ringseed serve ARGS` on loopback, 2 shards, no metrics, embedded
/// tracker on a free port.
fn start_serve(args: &[&str]) -> ServeProc {
    let mut all = args.to_vec();
    all.extend([
        "--listen",
        "127.0.0.1:0",
        "--shards",
        "2",
        "--metrics",
        "off",
        "--tracker-listen",
        "127.0.0.1:0",
    ]);
    ServeProc::start(&all)
}

fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn create(path: &Path, out: &Path, kind: &str) {
    let st = Command::new(BIN)
        .args(["create", kind, "--piece-length", "32768", "--no-date", "-o"])
        .arg(out)
        .arg(path)
        .status()
        .unwrap();
    assert!(st.success(), "ringseed create {kind} {}", path.display());
}

fn lt_download(addr: &str, save: &Path, torrents: &[PathBuf], extra: &[&str]) -> serde_json::Value {
    let mut args: Vec<&str> = vec!["--peer", addr];
    args.extend(extra);
    for t in torrents {
        args.extend(["--torrent", t.to_str().unwrap()]);
    }
    lt_download_only(save, &args)
}

/// Single- and multi-file content, with odd sizes.
fn make_content(dir: &Path) -> (PathBuf, PathBuf) {
    let single = dir.join("single.bin");
    std::fs::write(&single, data(1, 3 * 32768 * 7 + 12345)).unwrap();
    let multi = dir.join("multi");
    std::fs::create_dir_all(multi.join("nested/deeper")).unwrap();
    std::fs::write(multi.join("a.bin"), data(2, 400_001)).unwrap();
    std::fs::write(multi.join("b.txt"), b"hello\n").unwrap();
    std::fs::write(multi.join("empty"), b"").unwrap();
    std::fs::write(multi.join("nested/c.bin"), data(3, 32768)).unwrap();
    std::fs::write(multi.join("nested/deeper/d.bin"), data(4, 1_000_000)).unwrap();
    (single, multi)
}

#[test]
fn libtorrent_downloads_v1_v2_hybrid_single_and_multi_file() {
    if !libtorrent_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let content = dir.path().join("content");
    std::fs::create_dir_all(&content).unwrap();
    let (single, multi) = make_content(&content);
    let mut args: Vec<String> = Vec::new();
    let mut torrents = Vec::new();
    for kind in ["--v1", "--v2", "--hybrid"] {
        for (name, path) in [("single", &single), ("multi", &multi)] {
            let t = dir.path().join(format!("{name}{kind}.torrent"));
            create(path, &t, kind);
            args.extend([
                "--torrent".into(),
                t.display().to_string(),
                "--data".into(),
                path.display().to_string(),
            ]);
            torrents.push(t);
        }
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = start_serve(&argv);
    // One libtorrent session per torrent kind, so each save dir holds one copy.
    for (i, pair) in torrents.chunks(2).enumerate() {
        let save = dir.path().join(format!("dl{i}"));
        std::fs::create_dir_all(&save).unwrap();
        let result = lt_download(&server.addr, &save, pair, &[]);
        for r in result.as_array().unwrap() {
            assert_eq!(r["completed"], true, "libtorrent did not complete: {r}");
        }
        assert_same_tree(&single, &save.join("single.bin"));
        assert_same_tree(&multi, &save.join("multi"));
    }
    let (took, status) = server.terminate();
    assert!(status.success(), "serve exited with {status}");
    assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
}

#[test]
fn four_libtorrent_leechers_at_once_from_serve_dir() {
    if !libtorrent_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let content = dir.path().join("content");
    std::fs::create_dir_all(&content).unwrap();
    let (single, multi) = make_content(&content);
    let server = start_serve(&[content.to_str().unwrap()]);
    let torrents = vec![
        content.join(".ringseed/single.bin.torrent"),
        content.join(".ringseed/multi.torrent"),
    ];
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let addr = server.addr.clone();
            let save = dir.path().join(format!("leecher{i}"));
            std::fs::create_dir_all(&save).unwrap();
            let torrents = torrents.clone();
            std::thread::spawn(move || (save.clone(), lt_download(&addr, &save, &torrents, &[])))
        })
        .collect();
    for h in handles {
        let (save, result) = h.join().unwrap();
        for r in result.as_array().unwrap() {
            assert_eq!(
                r["completed"], true,
                "libtorrent leecher did not complete: {r}"
            );
        }
        assert_same_tree(&single, &save.join("single.bin"));
        assert_same_tree(&multi, &save.join("multi"));
    }
    drop(server);
    // A restart reuses the torrents and the resume record (no re-hashing).
    let server = start_serve(&[content.to_str().unwrap()]);
    let save = dir.path().join("after-restart");
    std::fs::create_dir_all(&save).unwrap();
    let result = lt_download(&server.addr, &save, &torrents, &[]);
    for r in result.as_array().unwrap() {
        assert_eq!(r["completed"], true, "after restart: {r}");
    }
}

/// `lt_download.py` with `extra` arguments (no `--peer` unless given).
fn lt_download_only(save: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["--timeout", "60", "--save", save.to_str().unwrap()];
    args.extend(extra);
    run_script("lt_download.py", &args)
}

#[test]
fn libtorrent_given_only_the_torrent_finds_the_seed_via_the_embedded_tracker() {
    if !libtorrent_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let content = dir.path().join("content");
    std::fs::create_dir_all(&content).unwrap();
    let (single, multi) = make_content(&content);
    let _server = start_serve(&[content.to_str().unwrap()]);
    let save = dir.path().join("dl");
    std::fs::create_dir_all(&save).unwrap();
    // No --peer: libtorrent must learn our address from the tracker URL
    // that `serve DIR` wrote into the torrent.
    let t1 = content.join(".ringseed/single.bin.torrent");
    let t2 = content.join(".ringseed/multi.torrent");
    let result = lt_download_only(
        &save,
        &[
            "--torrent",
            t1.to_str().unwrap(),
            "--torrent",
            t2.to_str().unwrap(),
        ],
    );
    for r in result.as_array().unwrap() {
        assert_eq!(r["completed"], true, "via the embedded tracker: {r}");
    }
    assert_same_tree(&single, &save.join("single.bin"));
    assert_same_tree(&multi, &save.join("multi"));
}

/// Runs a libtorrent helper script, returning its JSON output.
fn run_script(script: &str, args: &[&str]) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop")
        .join(script);
    let out = Command::new("python3")
        .arg(path)
        .args(args)
        .output()
        .expect("run python");
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "{script} output {text:?} ({e}); stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The magnet links `serve` prints, by torrent name.
fn magnets(server_stdout: &str) -> Vec<String> {
    server_stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("magnet"))
        .map(|m| m.trim().to_string())
        .collect()
}

#[test]
fn libtorrent_joins_by_magnet_link_and_through_mse_and_rc4() {
    if !libtorrent_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let content = dir.path().join("content");
    std::fs::create_dir_all(&content).unwrap();
    let (single, multi) = make_content(&content);
    let mut args: Vec<String> = Vec::new();
    let mut kinds = Vec::new();
    for kind in ["--v1", "--v2", "--hybrid"] {
        let t = dir.path().join(format!("multi{kind}.torrent"));
        create(&multi, &t, kind);
        args.extend([
            "--torrent".into(),
            t.display().to_string(),
            "--data".into(),
            multi.display().to_string(),
        ]);
        kinds.push((kind, t));
    }
    let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
    all.extend([
        "--listen",
        "127.0.0.1:0",
        "--shards",
        "2",
        "--metrics",
        "off",
        "--tracker-listen",
        "off",
    ]);
    let server = ServeProc::start(&all);
    let lines = server.banner.clone();
    let links = magnets(&lines.join("\n"));
    assert_eq!(links.len(), 3, "one magnet per torrent: {lines:?}");
    for (i, link) in links.iter().enumerate() {
        assert!(link.contains("x.pe="), "magnet carries our address: {link}");
        let save = dir.path().join(format!("magnet{i}"));
        std::fs::create_dir_all(&save).unwrap();
        // No --peer: the x.pe hint in the link is all libtorrent gets.
        let r = lt_download_only(&save, &["--magnet", link]);
        assert_eq!(r[0]["completed"], true, "magnet {link}: {r}");
        assert_same_tree(&multi, &save.join("multi"));
    }
    // MSE: libtorrent's default settings try the encrypted handshake first;
    // we select plaintext, so there is no fallback delay.
    for enc in ["default", "plaintext", "rc4"] {
        let save = dir.path().join(format!("enc-{enc}"));
        std::fs::create_dir_all(&save).unwrap();
        let t = kinds[2].1.to_str().unwrap();
        let r = run_script(
            "lt_mse_first_byte.py",
            &[
                "--peer",
                &server.addr,
                "--save",
                save.to_str().unwrap(),
                "--torrent",
                t,
                "--enc",
                enc,
            ],
        );
        eprintln!("encryption {enc}: {r}");
        assert_eq!(r["completed"], true, "{enc}: {r}");
        assert_same_tree(&multi, &save.join("multi"));
        let first = r["first_byte_seconds"].as_f64().expect("first byte time");
        if enc != "rc4" {
            assert!(
                first < 0.5,
                "{enc}: first payload byte after {first:.3} s (target < 0.5 s)"
            );
        }
    }
    let _ = single;
}

/// One file of `len` bytes in a fresh content directory.
fn one_file(dir: &Path, name: &str, len: usize) -> PathBuf {
    let content = dir.join("content");
    std::fs::create_dir_all(&content).unwrap();
    let path = content.join(name);
    std::fs::write(&path, data(7, len)).unwrap();
    content
}

#[test]
fn libtorrent_downloads_everything_from_a_super_seed() {
    if !libtorrent_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let content = dir.path().join("content");
    std::fs::create_dir_all(&content).unwrap();
    let (single, multi) = make_content(&content);
    let server = start_serve(&[content.to_str().unwrap(), "--super-seed"]);
    assert!(
        server
            .banner
            .iter()
            .any(|l| l == "torrent single.bin (super-seeding)"),
        "{:#?}",
        server.banner
    );
    let torrents = vec![
        content.join(".ringseed/single.bin.torrent"),
        content.join(".ringseed/multi.torrent"),
    ];
    let save = dir.path().join("dl");
    std::fs::create_dir_all(&save).unwrap();
    // A lone leecher: each piece it announces releases the next offer.
    let result = lt_download(&server.addr, &save, &torrents, &[]);
    for r in result.as_array().unwrap() {
        eprintln!("super-seed: {r}");
        assert_eq!(r["completed"], true, "libtorrent did not complete: {r}");
    }
    assert_same_tree(&single, &save.join("single.bin"));
    assert_same_tree(&multi, &save.join("multi"));
}

#[test]
fn libtorrent_downloads_at_the_upload_cap() {
    if !libtorrent_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let len = 16_000_000;
    let content = one_file(dir.path(), "capped.bin", len);
    // One shard, so the lone leecher's shard enforces the whole cap.
    let server = ServeProc::start(&[
        content.to_str().unwrap(),
        "--upload-rate-limit",
        "4MB/s",
        "--shards",
        "1",
        "--listen",
        "127.0.0.1:0",
        "--metrics",
        "off",
        "--tracker-listen",
        "off",
    ]);
    let save = dir.path().join("dl");
    std::fs::create_dir_all(&save).unwrap();
    let t = content.join(".ringseed/capped.bin.torrent");
    let result = lt_download(&server.addr, &save, &[t], &[]);
    let r = &result[0];
    assert_eq!(r["completed"], true, "libtorrent did not complete: {r}");
    assert_same_tree(&content.join("capped.bin"), &save.join("capped.bin"));
    let secs = r["seconds"].as_f64().unwrap() - r["first_byte_seconds"].as_f64().unwrap();
    let rate = len as f64 / secs;
    eprintln!(
        "libtorrent at a 4 MB/s cap: {:.3} MB/s over {secs:.2} s",
        rate / 1e6
    );
    // Roughly the cap: libtorrent ramps up its requests and hashes the
    // last piece after the last byte; never above it beyond one burst.
    assert!(
        (0.85 * 4e6..=1.06 * 4e6).contains(&rate),
        "{:.3} MB/s, cap 4 MB/s",
        rate / 1e6
    );
}

#[test]
fn three_libtorrent_leechers_trade_what_a_super_seed_offers() {
    if !libtorrent_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let len = 4_000_000;
    let content = one_file(dir.path(), "swarm.bin", len);
    // One shard (one selector sees every peer); the embedded tracker lets
    // the leechers find each other.
    let server = ServeProc::start(&[
        content.to_str().unwrap(),
        "--super-seed",
        "--shards",
        "1",
        "--listen",
        "127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
        "--tracker-listen",
        "127.0.0.1:0",
    ]);
    let t = content.join(".ringseed/swarm.bin.torrent");
    let handles: Vec<_> = (0..3u64)
        .map(|i| {
            let save = dir.path().join(format!("leecher{i}"));
            std::fs::create_dir_all(&save).unwrap();
            let t = t.clone();
            std::thread::spawn(move || {
                // Started 1.5 s apart on purpose: the first completes alone
                // (every piece released at once) and the later ones must
                // trade with it rather than take the file from the origin.
                std::thread::sleep(Duration::from_millis(1500 * i));
                // Each stays 8 s after completing, so that leechers that
                // start later (python + libtorrent start-up under load)
                // still find it to trade with.
                let r =
                    lt_download_only(&save, &["--torrent", t.to_str().unwrap(), "--linger", "8"]);
                (save, r)
            })
        })
        .collect();
    for h in handles {
        let (save, r) = h.join().unwrap();
        assert_eq!(r[0]["completed"], true, "{r}");
        assert_same_tree(&content.join("swarm.bin"), &save.join("swarm.bin"));
    }
    let metrics = server.metrics.clone().unwrap();
    let sent = support::serve::metric(&metrics, "ringseed_payload_bytes_total{");
    let offers = support::serve::metric(&metrics, "ringseed_superseed_offers_total{");
    eprintln!(
        "super-seed to 3 trading leechers: origin sent {:.2} copies of the file, {offers} offers",
        sent / len as f64
    );
    // A plain seed sends up to 3 copies; a super-seed about one (measured:
    // 1.00), the leechers trade the rest.
    assert!(
        sent < 1.5 * len as f64,
        "origin sent {:.2} copies",
        sent / len as f64
    );
}

/// A stock libtorrent session (uTP on, as qBittorrent and Deluge ship it)
/// joining by the magnet link `serve DIR` prints tries uTP first. With
/// `--utp serve` (default) it is served over uTP; with `--utp refuse` its
/// SYN gets an ST_RESET and it connects over TCP at once. Either way the
/// first payload byte arrives < 0.7 s after the magnet is added (4.1-4.5 s
/// when nothing answers on UDP: a 3 s uTP connect timeout, then TCP).
#[test]
fn libtorrent_by_magnet_gets_the_first_byte_at_once_in_every_utp_mode() {
    if !libtorrent_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let content = dir.path().join("content");
    std::fs::create_dir_all(&content).unwrap();
    let (single, _multi) = make_content(&content);
    for mode in ["serve", "refuse"] {
        let server = start_serve(&[content.to_str().unwrap(), "--utp", mode]);
        let links = magnets(&server.banner.join("\n"));
        let link = links
            .iter()
            .find(|l| l.contains("single.bin"))
            .unwrap_or_else(|| panic!("a magnet for single.bin: {:?}", server.banner));
        let save = dir.path().join(format!("dl-{mode}"));
        std::fs::create_dir_all(&save).unwrap();
        let r = run_script(
            "lt_mse_first_byte.py",
            &[
                "--magnet",
                link,
                "--save",
                save.to_str().unwrap(),
                "--transport",
                "default",
                "--timeout",
                "20",
            ],
        );
        eprintln!("--utp {mode}, libtorrent defaults, by magnet: {r}");
        assert_eq!(r["completed"], true, "--utp {mode}: {r}");
        assert_same_tree(&single, &save.join("single.bin"));
        let first = r["first_byte_seconds"].as_f64().expect("first byte time");
        assert!(
            first < 0.7,
            "--utp {mode}: first payload byte after {first:.3} s (target < 0.7 s; 4.1 s without an answer on UDP)"
        );
    }
}

/// `--utp serve`: a libtorrent session with TCP switched off downloads v1,
/// v2 and hybrid torrents by their magnet links over uTP alone.
#[test]
fn libtorrent_with_tcp_off_downloads_v1_v2_hybrid_over_utp() {
    if !libtorrent_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let content = dir.path().join("content");
    std::fs::create_dir_all(&content).unwrap();
    let (_single, multi) = make_content(&content);
    let mut args: Vec<String> = Vec::new();
    for kind in ["--v1", "--v2", "--hybrid"] {
        let t = dir.path().join(format!("multi{kind}.torrent"));
        create(&multi, &t, kind);
        args.extend([
            "--torrent".into(),
            t.display().to_string(),
            "--data".into(),
            multi.display().to_string(),
        ]);
    }
    let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
    all.extend(["--utp", "serve"]);
    let server = start_serve(&all);
    let links = magnets(&server.banner.join("\n"));
    assert_eq!(
        links.len(),
        3,
        "one magnet per torrent: {:?}",
        server.banner
    );
    for (i, link) in links.iter().enumerate() {
        let save = dir.path().join(format!("utp{i}"));
        std::fs::create_dir_all(&save).unwrap();
        let r = run_script(
            "lt_mse_first_byte.py",
            &[
                "--magnet",
                link,
                "--save",
                save.to_str().unwrap(),
                "--transport",
                "utp",
                "--timeout",
                "30",
            ],
        );
        eprintln!("uTP only, magnet {i}: {r}");
        assert_eq!(r["completed"], true, "over uTP alone, {link}: {r}");
        assert_same_tree(&multi, &save.join("multi"));
    }
}
