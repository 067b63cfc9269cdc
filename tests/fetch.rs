//! Fetch, then seed (`crate::fetch`): `serve --torrent T --data PATH` with
//! PATH missing or incomplete downloads the missing pieces from `--peer`s,
//! serves every verified piece meanwhile, and seeds when complete.
//!
//! - from a ringseed origin, v1, v2 (multi-file, odd sizes) and hybrid,
//!   then a libtorrent leecher downloads them from the fetched box;
//! - from a libtorrent seeder, v1, v2 and hybrid;
//! - an interrupted fetch resumes from its record;
//! - a peer sending bad data is banned and the pieces come from an honest one;
//! - two edges: the second, told only of the first, fills from it while
//!   the first is still fetching (the first serves what it verified).

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::serve::{libtorrent_available, metric, ServeProc, BIN};
use support::tree::assert_same_tree as same_tree;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn content(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_add(seed).wrapping_mul(2654435761) >> 13) as u8)
        .collect()
}

/// `ringseed create FLAGS -o OUT DATA`.
fn create(data: &Path, out: &Path, flags: &[&str]) {
    let st = Command::new(BIN)
        .arg("create")
        .args(flags)
        .args(["--no-date", "-o", s(out), s(data)])
        .status()
        .unwrap();
    assert!(st.success(), "ringseed create {flags:?} {}", data.display());
}

/// Origin data: a v1 single file, a v2 directory with odd sizes, a hybrid
/// single file. Returns (torrent, data) pairs.
fn releases(dir: &Path) -> Vec<(PathBuf, PathBuf)> {
    let src = dir.join("origin");
    std::fs::create_dir_all(src.join("game")).unwrap();
    std::fs::write(src.join("os.img"), content(6 << 20 | 4321, 1)).unwrap();
    std::fs::write(src.join("game/a.pak"), content(3 << 19, 2)).unwrap();
    std::fs::write(src.join("game/b.pak"), content(700_001, 3)).unwrap();
    std::fs::write(src.join("game/c.txt"), b"abc").unwrap();
    std::fs::write(src.join("game/d.pak"), content(2 << 20, 4)).unwrap();
    std::fs::write(src.join("patch.bin"), content(5 << 20 | 123, 5)).unwrap();
    let mut out = Vec::new();
    for (name, flags) in [
        ("os.img", &["--v1"][..]),
        ("game", &["--v2"][..]),
        ("patch.bin", &[][..]),
    ] {
        let t = dir.join(format!("{name}.torrent"));
        create(&src.join(name), &t, flags);
        out.push((t, src.join(name)));
    }
    out
}

fn serve_pairs(pairs: &[(PathBuf, PathBuf)], extra: &[&str]) -> ServeProc {
    let mut args: Vec<String> = Vec::new();
    for (t, d) in pairs {
        args.extend([
            "--torrent".into(),
            s(t).into(),
            "--data".into(),
            s(d).into(),
        ]);
    }
    for a in [
        "--listen",
        "127.0.0.1:0",
        "--shards",
        "1",
        "--metrics",
        "127.0.0.1:0",
        "--tracker-listen",
        "off",
        "--control",
        "off",
    ] {
        args.push(a.into());
    }
    args.extend(extra.iter().map(|a| a.to_string()));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    ServeProc::start(&a)
}

fn m(p: &ServeProc, name: &str) -> f64 {
    metric(p.metrics.as_deref().unwrap(), name)
}

/// Waits (bounded) until `n` fetches of `p` are complete.
fn wait_complete(p: &ServeProc, n: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let done = m(p, "ringseed_fetch_complete");
        if done >= n as f64 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{done} of {n} fetches complete after {timeout:?}; pieces: {}",
            m(p, "ringseed_fetch_pieces_have")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_box_fetches_v1_v2_and_hybrid_from_a_ringseed_origin_and_libtorrent_downloads_from_it() {
    let d = tempfile::tempdir().unwrap();
    let pairs = releases(d.path());
    let origin = serve_pairs(&pairs, &[]);
    let edge_dir = d.path().join("edge");
    let edge_pairs: Vec<(PathBuf, PathBuf)> = pairs
        .iter()
        .map(|(t, data)| (t.clone(), edge_dir.join(data.file_name().unwrap())))
        .collect();
    let edge = serve_pairs(&edge_pairs, &["--peer", &origin.addr]);
    assert!(
        edge.banner
            .iter()
            .filter(|l| l.contains("fetching"))
            .count()
            == 3,
        "{:#?}",
        edge.banner
    );
    wait_complete(&edge, 3, Duration::from_secs(60));
    for ((_, a), (_, b)) in pairs.iter().zip(&edge_pairs) {
        same_tree(a, b);
    }
    assert_eq!(m(&edge, "ringseed_fetch_hash_failures_total"), 0.0);
    // Records were saved: a restart trusts them (nothing fetched, nothing
    // re-hashed).
    assert!(edge_dir.join(".ringseed").is_dir());

    if !libtorrent_available() {
        return;
    }
    let save = d.path().join("lt");
    std::fs::create_dir_all(&save).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/lt_download.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script)
        .args(["--peer", &edge.addr, "--timeout", "60", "--save", s(&save)]);
    for (t, _) in &pairs {
        cmd.args(["--torrent", s(t)]);
    }
    let out = cmd.output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "libtorrent from the fetched box: {report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (_, data) in &pairs {
        same_tree(data, &save.join(data.file_name().unwrap()));
    }
}

#[test]
fn a_box_fetches_v1_v2_and_hybrid_from_a_libtorrent_seeder() {
    if !libtorrent_available() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let pairs = releases(d.path());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("loadtest/lt_seed.py");
    let mut seeders = Vec::new();
    let mut peers = Vec::new();
    for (t, data) in &pairs {
        let mut child = Kill(
            Command::new("python3")
                .arg(&script)
                .args(["--torrent", s(t), "--data", s(data)])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut line = String::new();
        let mut out = std::io::BufReader::new(child.0.stdout.take().unwrap());
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("lt_seed.py printed {line:?}"))
            .to_owned();
        peers.push(addr);
        seeders.push(child);
    }
    // `--data DIR`, an existing empty directory: each torrent goes to
    // DIR/NAME, like a client's save path.
    let edge_dir = d.path().join("edge");
    std::fs::create_dir_all(&edge_dir).unwrap();
    let edge_pairs: Vec<(PathBuf, PathBuf)> = pairs
        .iter()
        .map(|(t, _)| (t.clone(), edge_dir.clone()))
        .collect();
    let mut extra = Vec::new();
    for p in &peers {
        extra.extend(["--peer", p.as_str()]);
    }
    let edge = serve_pairs(&edge_pairs, &extra);
    wait_complete(&edge, 3, Duration::from_secs(60));
    for (_, a) in &pairs {
        same_tree(a, &edge_dir.join(a.file_name().unwrap()));
    }

    // The hybrid again, by magnet link: metadata from libtorrent (BEP 9).
    let t = ringseed::metainfo::Torrent::from_bytes(&std::fs::read(&pairs[2].0).unwrap()).unwrap();
    let magnet = ringseed::metainfo::magnet::Magnet::for_torrent(&t).to_uri();
    let by_magnet = d.path().join("by-magnet");
    std::fs::create_dir_all(&by_magnet).unwrap();
    let edge = serve_pairs(
        &[],
        &[
            "--magnet",
            &magnet,
            "--data",
            s(&by_magnet),
            "--peer",
            &peers[2],
        ],
    );
    wait_complete(&edge, 1, Duration::from_secs(60));
    same_tree(&pairs[2].1, &by_magnet.join("patch.bin"));
}

#[test]
fn an_interrupted_fetch_resumes_from_what_it_verified() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("big.bin");
    std::fs::write(&data, content(24 << 20, 9)).unwrap();
    let t = d.path().join("big.torrent");
    create(&data, &t, &["--v1", "--piece-length", "65536"]);
    let pieces = 24.0 * 16.0;
    let origin = serve_pairs(
        &[(t.clone(), data.clone())],
        &["--upload-rate-limit", "8MB/s"],
    );
    let target = d.path().join("edge/big.bin");
    let pair = [(t.clone(), target.clone())];
    let edge = serve_pairs(&pair, &["--peer", &origin.addr]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let have = m(&edge, "ringseed_fetch_pieces_have");
        if have >= pieces * 0.2 {
            break;
        }
        assert!(Instant::now() < deadline, "fetch too slow: {have} pieces");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_, status) = edge.terminate();
    assert!(status.success(), "{status}");

    let edge = serve_pairs(&pair, &["--peer", &origin.addr]);
    let line = edge
        .banner
        .iter()
        .find(|l| l.contains("pieces of"))
        .unwrap()
        .clone();
    assert!(line.contains("resumed from its record"), "{line}");
    let verified: f64 = line
        .split("bytes (")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(
        verified >= pieces * 0.2 && verified < pieces,
        "{verified} verified at restart: {line}"
    );
    wait_complete(&edge, 1, Duration::from_secs(30));
    same_tree(&data, &target);
    let fetched = m(&edge, "ringseed_fetch_pieces_fetched_total");
    assert_eq!(
        fetched,
        pieces - verified,
        "the restart fetched only what was missing"
    );
}

/// Kills the child (by its PID) when dropped.
struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A peer that claims every piece and answers every request with garbage.
struct BadSeed {
    addr: String,
    stop: Arc<AtomicBool>,
    blocks: Arc<AtomicU64>,
}

/// What a [`BadSeed`] does with requests.
#[derive(Clone, Copy, PartialEq)]
enum Bad {
    /// Answers each with garbage.
    Garbage,
    /// Never answers; sends a block nobody asked for instead.
    Withhold,
}

impl BadSeed {
    fn start(info_hash: [u8; 20]) -> BadSeed {
        Self::start_as(info_hash, Bad::Garbage)
    }

    fn start_as(info_hash: [u8; 20], how: Bad) -> BadSeed {
        use ringseed::wire::codec::{decode, Decoded, Message, ReservedFlags, HANDSHAKE_LEN};
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let blocks = Arc::new(AtomicU64::new(0));
        let (stop2, blocks2) = (Arc::clone(&stop), Arc::clone(&blocks));
        std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let Ok((mut c, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let blocks = Arc::clone(&blocks2);
                std::thread::spawn(move || {
                    c.set_nonblocking(false).unwrap();
                    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                    let mut h = [0u8; HANDSHAKE_LEN];
                    if c.read_exact(&mut h).is_err() {
                        return;
                    }
                    let mut ours = [0u8; HANDSHAKE_LEN];
                    ours[0] = 19;
                    ours[1..20].copy_from_slice(b"BitTorrent protocol");
                    ours[20..28].copy_from_slice(
                        &ReservedFlags {
                            fast: true,
                            ..ReservedFlags::default()
                        }
                        .to_bytes(),
                    );
                    ours[28..48].copy_from_slice(&info_hash);
                    ours[48..68].copy_from_slice(b"-XX0001-badbadbadbad");
                    let mut out = ours.to_vec();
                    Message::HaveAll.encode(&mut out);
                    Message::Unchoke.encode(&mut out);
                    if c.write_all(&out).is_err() {
                        return;
                    }
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 65536];
                    loop {
                        let n = match c.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        buf.extend_from_slice(&chunk[..n]);
                        let mut out = Vec::new();
                        let mut pos = 0;
                        while let Ok(Decoded::Message { msg, consumed }) =
                            decode(&buf[pos..], 1 << 20)
                        {
                            pos += consumed;
                            if let Message::Request(r) = msg {
                                // Withholding: a block of the next piece,
                                // which was not asked for.
                                let piece = if how == Bad::Withhold {
                                    r.piece + 1
                                } else {
                                    r.piece
                                };
                                out.extend_from_slice(&(9 + r.len).to_be_bytes());
                                out.push(7);
                                out.extend_from_slice(&piece.to_be_bytes());
                                out.extend_from_slice(&r.begin.to_be_bytes());
                                out.extend(std::iter::repeat_n(0xAAu8, r.len as usize));
                                blocks.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        buf.drain(..pos);
                        if c.write_all(&out).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        BadSeed { addr, stop, blocks }
    }
}

impl Drop for BadSeed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn a_peer_sending_bad_data_is_banned_and_its_pieces_come_from_an_honest_one() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("app.bin");
    std::fs::write(&data, content(8 << 20, 11)).unwrap();
    let t = d.path().join("app.torrent");
    create(&data, &t, &["--v1", "--piece-length", "65536"]);
    let torrent = ringseed::metainfo::Torrent::from_bytes(&std::fs::read(&t).unwrap()).unwrap();
    let bad = BadSeed::start(torrent.info_hash_v1.unwrap().0);
    // The honest origin is slow, so the bad peer gets its share of requests.
    let origin = serve_pairs(
        &[(t.clone(), data.clone())],
        &["--upload-rate-limit", "4MB/s"],
    );
    let target = d.path().join("edge/app.bin");
    let edge = serve_pairs(
        &[(t.clone(), target.clone())],
        &["--peer", &bad.addr, "--peer", &origin.addr],
    );
    wait_complete(&edge, 1, Duration::from_secs(30));
    same_tree(&data, &target);
    assert!(
        bad.blocks.load(Ordering::Relaxed) > 0,
        "the bad peer was never asked"
    );
    assert!(m(&edge, "ringseed_fetch_hash_failures_total") >= 1.0);
    assert_eq!(m(&edge, "ringseed_fetch_peers_banned_total"), 1.0);
}

#[test]
fn a_second_edge_fills_from_the_first_while_the_first_is_still_fetching() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("rel.bin");
    std::fs::write(&data, content(16 << 20, 13)).unwrap();
    let t = d.path().join("rel.torrent");
    create(&data, &t, &["--piece-length", "65536"]);
    let origin = serve_pairs(
        &[(t.clone(), data.clone())],
        &["--upload-rate-limit", "6MB/s"],
    );
    let first_data = d.path().join("edge1/rel.bin");
    let first = serve_pairs(
        &[(t.clone(), first_data.clone())],
        &["--peer", &origin.addr],
    );
    // The second edge knows only the first, by name.
    let by_name = format!("localhost:{}", first.addr.rsplit_once(':').unwrap().1);
    let second_data = d.path().join("edge2/rel.bin");
    let second = serve_pairs(&[(t.clone(), second_data.clone())], &["--peer", &by_name]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen_partial = false;
    while m(&second, "ringseed_fetch_complete") < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the second edge did not complete"
        );
        let second_has = m(&second, "ringseed_fetch_pieces_have");
        if second_has > 10.0 && m(&first, "ringseed_fetch_complete") == 0.0 {
            seen_partial = true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        seen_partial,
        "the second edge got nothing before the first completed"
    );
    wait_complete(&first, 1, Duration::from_secs(10));
    same_tree(&data, &first_data);
    same_tree(&data, &second_data);
}

#[test]
fn a_box_given_only_a_magnet_link_fetches_the_metadata_then_the_data() {
    let d = tempfile::tempdir().unwrap();
    let pairs = releases(d.path());
    // The hybrid one (v1 + v2 info-hashes in the link).
    let origin = serve_pairs(&pairs[2..], &[]);
    let magnet = origin
        .banner
        .iter()
        .find_map(|l| l.trim().strip_prefix("magnet").map(|m| m.trim().to_owned()))
        .expect("serve printed the magnet link");
    assert!(magnet.contains("urn:btmh:"), "{magnet}");
    let save = d.path().join("edge");
    std::fs::create_dir_all(&save).unwrap();
    let edge = serve_pairs(
        &[],
        &[
            "--magnet",
            &magnet,
            "--data",
            s(&save),
            "--peer",
            &origin.addr,
        ],
    );
    wait_complete(&edge, 1, Duration::from_secs(60));
    same_tree(&pairs[2].1, &save.join("patch.bin"));
    // The metadata was saved: a restart needs no peer for it.
    drop(edge);
    let cached = std::fs::read_dir(save.join(".ringseed"))
        .unwrap()
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().ends_with(".info"));
    assert!(cached, "no metadata saved for the magnet link");
    let again = serve_pairs(&[], &["--magnet", &magnet, "--data", s(&save)]);
    assert!(
        again.banner.iter().any(|l| l.contains("resume record")),
        "{:#?}",
        again.banner
    );
}

#[test]
fn a_v2_only_magnet_link_is_refused_with_a_clear_error() {
    let d = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args([
            "serve",
            "--magnet",
            "magnet:?xt=urn:btmh:1220d2474e86c95b19b8bcfdb92bc12c9d44667cfa36d2474e86c95b19b8bcfdb92b",
            "--data",
            s(d.path()),
            "--metrics",
            "off",
            "--control",
            "off",
            "--tracker-listen",
            "off",
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("v2-only magnet"), "{err}");
}

#[test]
fn a_torrent_added_through_the_control_api_with_missing_data_is_fetched() {
    let d = tempfile::tempdir().unwrap();
    let pairs = releases(d.path());
    let origin = serve_pairs(&pairs[..1], &[]);
    let served_dir = d.path().join("served");
    let landing = d.path().join("landing");
    std::fs::create_dir_all(&served_dir).unwrap();
    std::fs::create_dir_all(&landing).unwrap();
    let edge = ServeProc::start(&[
        s(&served_dir),
        "--listen",
        "127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
        "--control",
        "127.0.0.1:0",
        "--tracker-listen",
        "off",
        "--allow-root",
        s(&landing),
        "--peer",
        &origin.addr,
    ]);
    let url = format!("http://{}/torrents", edge.control.as_deref().unwrap());
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let target = landing.join("os.img");
    let mut resp = agent
        .post(&url)
        .query("data", s(&target))
        .content_type("application/x-bittorrent")
        .send(&std::fs::read(&pairs[0].0).unwrap()[..])
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.body_mut().read_to_string().unwrap();
    assert_eq!(status, 201, "{body}");
    wait_complete(&edge, 1, Duration::from_secs(60));
    same_tree(&pairs[0].1, &target);
    // A data path that does not exist under a directory that does not
    // either is refused, not fetched.
    let mut resp = agent
        .post(&url)
        .query("data", s(&landing.join("no/such/dir/x.bin")))
        .content_type("application/x-bittorrent")
        .send(&std::fs::read(&pairs[2].0).unwrap()[..])
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        404,
        "{}",
        resp.body_mut().read_to_string().unwrap()
    );
}

#[test]
fn a_peer_that_claims_everything_and_withholds_it_does_not_stall_the_fetch() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("app.bin");
    std::fs::write(&data, content(8 << 20, 17)).unwrap();
    let t = d.path().join("app.torrent");
    create(&data, &t, &["--v1", "--piece-length", "65536"]);
    let torrent = ringseed::metainfo::Torrent::from_bytes(&std::fs::read(&t).unwrap()).unwrap();
    let bad = BadSeed::start_as(torrent.info_hash_v1.unwrap().0, Bad::Withhold);
    let origin = serve_pairs(
        &[(t.clone(), data.clone())],
        &["--upload-rate-limit", "8MB/s"],
    );
    let target = d.path().join("edge/app.bin");
    let edge = serve_pairs(
        &[(t.clone(), target.clone())],
        &["--peer", &bad.addr, "--peer", &origin.addr],
    );
    // Well under the 20 s request timeout: the endgame asks the honest
    // peer for what the withholder sits on.
    wait_complete(&edge, 1, Duration::from_secs(15));
    same_tree(&data, &target);
    assert!(
        bad.blocks.load(Ordering::Relaxed) > 0,
        "the withholder was never asked"
    );
    assert!(m(&edge, "ringseed_fetch_unsolicited_blocks_total") > 0.0);
    assert_eq!(
        m(&edge, "ringseed_fetch_hash_failures_total"),
        0.0,
        "an unrequested block entered a piece"
    );
}
