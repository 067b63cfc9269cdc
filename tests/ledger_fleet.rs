//! Five `ringseed serve --ledger` boxes on loopback gossiping one release
//! ledger over HTTP: a new block reaches all, a rewritten block is refused
//! by every box, a publisher that signs two different block 4s is caught by
//! every box, the boxes' cosignatures satisfy a 3-of-5 client policy, and a
//! libtorrent leecher downloading from the boxes meanwhile is unaffected.

mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::serve::{libtorrent_available, metric, ServeProc, BIN};

const BOXES: usize = 5;

fn ok(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ringseed {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn torrent(dir: &Path, name: &str, len: usize, fill: u8) -> (PathBuf, PathBuf) {
    let data = dir.join(name);
    let bytes: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ fill)
        .collect();
    std::fs::write(&data, bytes).unwrap();
    let t = dir.join(format!("{name}.torrent"));
    ok(&[
        "create",
        s(&data),
        "-o",
        s(&t),
        "--no-date",
        "--piece-length",
        "65536",
    ]);
    (t, data)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// A free loopback port for a box's ledger endpoint (the boxes must know
/// each other's URLs before they start).
fn free_addr(i: usize) -> String {
    let l = TcpListener::bind(format!("127.0.0.{}:0", 20 + i)).unwrap();
    l.local_addr().unwrap().to_string()
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(2)))
        .http_status_as_error(false)
        .build()
        .into()
}

fn get(url: &str) -> (u16, String) {
    match agent().get(url).call() {
        Ok(mut r) => (
            r.status().as_u16(),
            r.body_mut().read_to_string().unwrap_or_default(),
        ),
        Err(_) => (0, String::new()),
    }
}

fn post(url: &str, body: &[u8]) -> (u16, String) {
    match agent().post(url).send(body) {
        Ok(mut r) => (
            r.status().as_u16(),
            r.body_mut().read_to_string().unwrap_or_default(),
        ),
        Err(_) => (0, String::new()),
    }
}

/// The block height in a box's checkpoint (0 when it has none).
fn height(url: &str) -> u64 {
    let (status, body) = get(&format!("{url}/ledger/checkpoint"));
    if status != 200 {
        return 0;
    }
    body.lines()
        .find_map(|l| l.strip_prefix("ringseed-block "))
        .and_then(|l| l.split(' ').next()?.parse().ok())
        .unwrap_or(0)
}

fn wait_all(timeout: Duration, mut f: impl FnMut(usize) -> bool) -> Option<Duration> {
    let start = Instant::now();
    let mut done = [false; BOXES];
    while start.elapsed() < timeout {
        for (i, d) in done.iter_mut().enumerate() {
            *d = *d || f(i);
        }
        if done.iter().all(|d| *d) {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    None
}

#[test]
fn five_boxes_gossip_reject_rewrites_and_catch_an_equivocating_publisher() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let key = dir.join("publisher.key");
    let vkey = ok(&[
        "ledger",
        "init",
        "--key",
        s(&key),
        "--name",
        "example.org/app",
    ]);
    let vkey = vkey.trim().to_owned();
    let mut policy = String::new();
    let mut cos_keys = Vec::new();
    for i in 0..BOXES {
        let k = dir.join(format!("box{i}.key"));
        let v = ok(&[
            "ledger",
            "init",
            "--cosigner",
            "--key",
            s(&k),
            "--name",
            &format!("box{i}.example"),
        ]);
        policy.push_str(&format!("cosigner {}", v));
        cos_keys.push(k);
    }
    policy.push_str("quorum 3\n");
    let policy_path = dir.join("policy");
    std::fs::write(&policy_path, &policy).unwrap();

    // History before the boxes start: block 1 (the release the boxes seed)
    // and block 2.
    let publisher = dir.join("publisher");
    let (served_t, served_data) = torrent(dir, "app-1.0.bin", 4 << 20, 1);
    let (t2, _) = torrent(dir, "app-1.1.bin", 100_000, 2);
    ok(&[
        "ledger",
        "publish",
        s(&served_t),
        "--ledger",
        s(&publisher),
        "--key",
        s(&key),
    ]);
    ok(&[
        "ledger",
        "publish",
        s(&t2),
        "--ledger",
        s(&publisher),
        "--key",
        s(&key),
    ]);

    let addrs: Vec<String> = (0..BOXES).map(free_addr).collect();
    let urls: Vec<String> = addrs.iter().map(|a| format!("http://{a}")).collect();
    let mut boxes = Vec::new();
    for i in 0..BOXES {
        let ldir = dir.join(format!("box{i}-ledger"));
        copy_dir(&publisher, &ldir);
        let mut args: Vec<String> = [
            "--torrent",
            s(&served_t),
            "--data",
            s(&served_data),
            "--listen",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
            "--tracker-listen",
            "off",
            "--shards",
            "1",
            "--ledger",
            s(&ldir),
            "--ledger-key",
            &vkey,
            "--ledger-listen",
            &addrs[i],
            "--ledger-pull-interval",
            "200ms",
            "--ledger-cosign-key",
            s(&cos_keys[i]),
            "--ledger-policy",
            s(&policy_path),
            "--ledger-required",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        for (j, u) in urls.iter().enumerate() {
            if j != i {
                args.extend(["--ledger-peer".to_owned(), u.clone()]);
            }
        }
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        boxes.push(ServeProc::start(&a));
    }

    // A libtorrent leecher downloads the seeded release from box 1 (at 2 MB/s,
    // so it runs while the ledger changes under it).
    let lt = libtorrent_available().then(|| {
        let save = dir.join("lt");
        std::fs::create_dir_all(&save).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/lt_download.py");
        let peer = boxes[1].addr.clone();
        let t = served_t.clone();
        std::thread::spawn(move || {
            let out = Command::new("python3")
                .arg(script)
                .args([
                    "--timeout",
                    "60",
                    "--download-limit",
                    "2000000",
                    "--peer",
                    &peer,
                    "--save",
                    s(&save),
                    "--torrent",
                    s(&t),
                ])
                .output()
                .unwrap();
            (save, String::from_utf8_lossy(&out.stdout).into_owned())
        })
    });

    // 1. A new block published at box 0 reaches every box.
    let (t3, _) = torrent(dir, "app-1.2.bin", 100_000, 3);
    let out = ok(&[
        "ledger",
        "publish",
        s(&t3),
        "--ledger",
        s(&publisher),
        "--key",
        s(&key),
        "--push",
        &urls[0],
    ]);
    assert!(out.contains("block 3:"), "{out}");
    let spread = wait_all(Duration::from_secs(10), |i| height(&urls[i]) == 3)
        .expect("block 3 reached every box within 10 s");
    println!(
        "FIGURE: block 3 published at box 0 held by all {BOXES} boxes after {} ms",
        spread.as_millis()
    );

    // Cosignatures spread too: box 4's directory soon proves block 3 to a
    // client that wants 3 of the 5 boxes.
    let proof = dir.join("t3.tlog-proof");
    let cosigned = wait_all(Duration::from_secs(10), |i| {
        let ldir = dir.join(format!("box{i}-ledger"));
        ok(&[
            "ledger",
            "prove",
            s(&t3),
            "--ledger",
            s(&ldir),
            "-o",
            s(&proof),
        ]);
        Command::new(BIN)
            .args([
                "verify",
                s(&t3),
                "--ledger-key",
                &vkey,
                "--proof",
                s(&proof),
                "--ledger-policy",
                s(&policy_path),
            ])
            .output()
            .unwrap()
            .status
            .success()
    })
    .expect("every box holds a 3-of-5 cosigned checkpoint within 10 s");
    println!(
        "FIGURE: every box holds >= 3 of 5 cosignatures on block 3 after {} ms",
        cosigned.as_millis()
    );

    // 2. A rewritten block 3 (a release changed; and the signed text
    // changed) is refused by every box and nothing changes.
    let block3 = std::fs::read_to_string(publisher.join("blocks/00000003.block")).unwrap();
    let mut lines: Vec<String> = block3.split('\n').map(str::to_owned).collect();
    // A character of an info-hash in the base64 (the last one before `=` padding
    // carries unused bits, and changing those makes non-canonical base64,
    // refused as malformed before the root is checked).
    let l = &mut lines[1];
    let k = "release ".len() + 80; // inside the info-hash bytes
    let c = if &l[k..k + 1] == "Q" { "R" } else { "Q" };
    l.replace_range(k..k + 1, c);
    let rewritten = lines.join("\n");
    let resigned_text = block3.replacen("\nexample.org/app\n3\n", "\nexample.org/app\n4\n", 1);
    for (i, u) in urls.iter().enumerate() {
        let before = metric(
            boxes[i].metrics.as_ref().unwrap(),
            "ringseed_ledger_rejects_total{",
        );
        let (st, body) = post(&format!("{u}/ledger/block"), rewritten.as_bytes());
        assert_eq!(st, 400, "box {i} accepted a rewritten block 3: {body}");
        assert!(body.contains("root_mismatch"), "{body}");
        let (st, body) = post(&format!("{u}/ledger/block"), resigned_text.as_bytes());
        assert_eq!(
            st, 400,
            "box {i} accepted a block 3 with altered signed text: {body}"
        );
        assert!(body.contains("bad_signature"), "{body}");
        let after = metric(
            boxes[i].metrics.as_ref().unwrap(),
            "ringseed_ledger_rejects_total{",
        );
        assert!(
            after >= before + 2.0,
            "box {i} counted its refusals ({before} -> {after})"
        );
        assert_eq!(height(u), 3);
    }

    // 3. The publisher signs two different block 4s and gives them to two
    // different boxes: every box learns of the equivocation.
    let (fork_a, fork_b) = (dir.join("fork-a"), dir.join("fork-b"));
    copy_dir(&publisher, &fork_a);
    copy_dir(&publisher, &fork_b);
    let (ta, _) = torrent(dir, "app-1.3.bin", 100_000, 4);
    let (tb, _) = torrent(dir, "app-1.3-evil.bin", 100_000, 5);
    let start = Instant::now();
    ok(&[
        "ledger",
        "publish",
        s(&ta),
        "--ledger",
        s(&fork_a),
        "--key",
        s(&key),
        "--push",
        &urls[0],
    ]);
    ok(&[
        "ledger",
        "publish",
        s(&tb),
        "--ledger",
        s(&fork_b),
        "--key",
        s(&key),
        "--push",
        &urls[3],
    ]);
    let detected = wait_all(Duration::from_secs(15), |i| {
        get(&format!("{}/ledger/equivocation", urls[i])).0 == 200
    })
    .expect("every box detected the equivocation within 15 s");
    println!(
        "FIGURE: equivocating block 4s given to boxes 0 and 3 detected by all {BOXES} boxes after {} ms",
        start.elapsed().as_millis().max(detected.as_millis())
    );
    for (i, b) in boxes.iter().enumerate() {
        let m = b.metrics.as_ref().unwrap();
        assert!(
            metric(m, "ringseed_ledger_equivocations_total") >= 1.0,
            "box {i}"
        );
        // Neither branch is taken past the fork by a box that had not got one.
        assert!(height(&urls[i]) <= 4);
    }
    // The served proof verifies offline: both notes are signed by the publisher.
    let (_, proof_text) = get(&format!("{}/ledger/equivocation", urls[2]));
    assert!(proof_text.starts_with("ringseed-equivocation/v1\n"));

    if let Some(lt) = lt {
        let (save, out) = lt.join().unwrap();
        let v: serde_json::Value =
            serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
        let r = &v.as_array().unwrap()[0];
        assert_eq!(r["completed"], true, "libtorrent download from box 1: {r}");
        assert!(
            std::fs::read(save.join("app-1.0.bin")).unwrap()
                == std::fs::read(&served_data).unwrap()
        );
        println!("libtorrent download during the ledger traffic: {r}");
    }
}

/// A publisher key and a ledger (`dir/publisher`) of two blocks: `NAME.0.bin`
/// (`len` bytes, the release the boxes serve) and `NAME.1.bin`. Returns the
/// verifier key, the ledger and the served torrent and data.
fn two_blocks(dir: &Path, name: &str, len: usize, fill: u8) -> (String, PathBuf, PathBuf, PathBuf) {
    let key = dir.join("publisher.key");
    let vkey = ok(&[
        "ledger",
        "init",
        "--key",
        s(&key),
        "--name",
        "example.org/app",
    ]);
    let publisher = dir.join("publisher");
    let (served_t, served_data) = torrent(dir, &format!("{name}.0.bin"), len, fill);
    let (t2, _) = torrent(dir, &format!("{name}.1.bin"), 50_000, fill + 1);
    for t in [&served_t, &t2] {
        ok(&[
            "ledger",
            "publish",
            s(t),
            "--ledger",
            s(&publisher),
            "--key",
            s(&key),
        ]);
    }
    (vkey.trim().to_owned(), publisher, served_t, served_data)
}

/// Boxes find each other through the peer protocol: a box greets its
/// BitTorrent peers with `ringseed_ledger` (its height and ledger port) in
/// the BEP 10 handshake, and a box that is told of a ledger ahead of its
/// own by a peer connection fetches it from that peer, with no
/// `--ledger-peer` given (every block checked as from any peer).
#[test]
fn a_box_learns_a_ledger_ahead_of_it_from_the_extension_handshake() {
    use ringseed::wire::ext::{parse_ext_handshake, LedgerAdvert};
    use support::leecher::{Got, RawPeer};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (vkey, publisher, served_t, served_data) = two_blocks(dir, "app-2", 1 << 20, 7);
    // B holds both blocks; A holds none and is given no ledger peer. B's
    // ledger listens on the address its BitTorrent peers see.
    let b_ledger = dir.join("b-ledger");
    copy_dir(&publisher, &b_ledger);
    let b_listen = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let start = |ledger: &Path, listen: &str| {
        ServeProc::start(&[
            "--torrent",
            s(&served_t),
            "--data",
            s(&served_data),
            "--listen",
            "127.0.0.1:0",
            "--metrics",
            "off",
            "--tracker-listen",
            "off",
            "--control",
            "off",
            "--shards",
            "2",
            "--ledger",
            s(ledger),
            "--ledger-key",
            &vkey,
            "--ledger-listen",
            listen,
        ])
    };
    let b = start(&b_ledger, &b_listen.to_string());
    let a_listen = free_addr(0);
    let a = start(&dir.join("a-ledger"), &a_listen);
    let a_url = format!("http://{a_listen}");
    assert_eq!(height(&a_url), 0);
    let info_hash = ringseed::metainfo::Torrent::from_bytes(&std::fs::read(&served_t).unwrap())
        .unwrap()
        .info_hash_v1
        .map(|h| h.0)
        .unwrap();

    // B tells a peer its ledger in the extension handshake.
    let mut peer = RawPeer::connect_extended(b.addr.parse().unwrap(), info_hash, b"d1:mdee")
        .expect("handshake with B");
    let advert = loop {
        match peer.recv(Duration::from_secs(5)).unwrap() {
            Some(Got::Extended(0, payload)) => {
                break parse_ext_handshake(&payload)
                    .expect("B's handshake parses")
                    .ledger
            }
            Some(_) => {}
            None => panic!("no extension handshake from B"),
        }
    };
    assert_eq!(
        advert,
        Some(LedgerAdvert {
            height: 2,
            port: b_listen.port()
        })
    );

    // A peer connection to A carrying B's advert (as B itself would send
    // when it connects to A): A learns B and catches up.
    let ours = format!(
        "d1:mde15:ringseed_ledgerd6:heighti2e4:porti{}eee",
        b_listen.port()
    );
    let told = Instant::now();
    let _peer_a = RawPeer::connect_extended(a.addr.parse().unwrap(), info_hash, ours.as_bytes())
        .expect("handshake with A");
    let deadline = told + Duration::from_secs(10);
    while height(&a_url) < 2 {
        assert!(Instant::now() < deadline, "A did not fetch B's ledger");
        std::thread::sleep(Duration::from_millis(25));
    }
    println!(
        "A learnt B's ledger from a peer's extension handshake and held both blocks {:?} later",
        told.elapsed()
    );
}

/// A box fetching a release from an origin (`--peer`, no `--ledger-peer`)
/// learns the origin's ledger from the extension handshake of its fetch
/// connection, and the origin is told of the fetching box's ledger.
#[test]
fn a_fetching_box_learns_the_origins_ledger_over_its_fetch_connection() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (vkey, publisher, served_t, served_data) = two_blocks(dir, "app-3", 2 << 20, 9);
    let start = |ledger: &Path, listen: &str, data: &Path, extra: &[&str]| {
        let mut args = vec![
            "--torrent",
            s(&served_t),
            "--data",
            s(data),
            "--listen",
            "127.0.0.1:0",
            "--metrics",
            "off",
            "--tracker-listen",
            "off",
            "--control",
            "off",
            "--shards",
            "1",
            "--ledger",
            s(ledger),
            "--ledger-key",
            &vkey,
            "--ledger-listen",
            listen,
        ];
        args.extend_from_slice(extra);
        ServeProc::start(&args)
    };
    let origin_ledger = dir.join("origin-ledger");
    copy_dir(&publisher, &origin_ledger);
    // Its ledger listens on the address its BitTorrent peers see.
    let origin_listen = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let origin = start(&origin_ledger, &origin_listen, &served_data, &[]);
    let edge_listen = free_addr(1);
    let fetched = dir.join("edge/app-3.0.bin");
    let told = Instant::now();
    let _edge = start(
        &dir.join("edge-ledger"),
        &edge_listen,
        &fetched,
        &["--peer", &origin.addr],
    );
    let url = format!("http://{edge_listen}");
    let deadline = told + Duration::from_secs(10);
    while height(&url) < 2 {
        assert!(
            Instant::now() < deadline,
            "the edge did not learn the origin's ledger"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    println!(
        "a fetching box held the origin's 2 blocks {:?} after it started",
        told.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read(&fetched).ok() != std::fs::read(&served_data).ok() {
        assert!(
            Instant::now() < deadline,
            "the edge did not fetch the release"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
