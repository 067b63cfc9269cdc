//! A fleet: two `ringseed serve` boxes announce the same torrent to one
//! existing tracker (Debian's opentracker, the reference), and a stock
//! libtorrent leecher given only the `.torrent` finds both through the
//! tracker and receives payload from both.

use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod support;

use support::serve::{metric, ServeProc, BIN};

const OPENTRACKER: &str = "/usr/bin/opentracker";

fn required(what: &str, ok: bool, install: &str) -> bool {
    if !ok {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{what} is required under CI=true ({install})");
        }
        eprintln!("\n**** SKIP fleet test: {what} missing ({install}) ****\n");
    }
    ok
}

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// `ringseed serve --torrent T --data D` with metrics on a free port.
fn seed(torrent: &Path, data: &Path) -> ServeProc {
    let (t, d) = (torrent.to_str().unwrap(), data.to_str().unwrap());
    ServeProc::start(&[
        "--torrent",
        t,
        "--data",
        d,
        "--listen",
        "127.0.0.1:0",
        "--shards",
        "1",
        "--metrics",
        "127.0.0.1:0",
    ])
}

#[test]
fn two_ringseed_boxes_announce_to_opentracker_and_both_serve_one_leecher() {
    let lt = Command::new("python3")
        .args(["-c", "import libtorrent"])
        .status()
        .is_ok_and(|s| s.success());
    if !required(
        "libtorrent Python bindings",
        lt,
        "pip install libtorrent==2.1.1",
    ) || !required(
        "opentracker",
        Path::new(OPENTRACKER).exists(),
        "apt-get install -y opentracker",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("update.bin");
    let bytes: Vec<u8> = (0..48u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&data, &bytes).unwrap();
    let port = free_port();
    let announce = format!("http://127.0.0.1:{port}/announce");
    let torrent = dir.path().join("update.torrent");
    let st = Command::new(BIN)
        .args(["create", "--v1", "--no-date", "--tracker", &announce, "-o"])
        .arg(&torrent)
        .arg(&data)
        .status()
        .unwrap();
    assert!(st.success());
    let t = ringseed::metainfo::Torrent::from_bytes(&std::fs::read(&torrent).unwrap()).unwrap();
    let hash = t.info_hash_v1.unwrap().to_string();

    // Debian's opentracker only tracks whitelisted torrents; the list path
    // is read after it chroots into -d.
    let trackdir = tempfile::tempdir().unwrap();
    std::fs::write(trackdir.path().join("wl"), format!("{hash}\n")).unwrap();
    let _tracker = Proc(
        Command::new(OPENTRACKER)
            .args([
                "-i",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-P",
                &port.to_string(),
                "-d",
            ])
            .arg(trackdir.path())
            .args(["-w", "wl"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "opentracker did not start");
        std::thread::sleep(Duration::from_millis(20));
    }

    let seed_a = seed(&torrent, &data);
    let seed_b = seed(&torrent, &data);
    // Both announce `started` right after start; give them a moment.
    std::thread::sleep(Duration::from_millis(500));

    let save = dir.path().join("leecher");
    std::fs::create_dir_all(&save).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/lt_download.py");
    // A capped download (like a real host NIC) so both seeds get a share.
    let out = Command::new("python3")
        .arg(script)
        .args(["--timeout", "60", "--download-limit", "16000000", "--save"])
        .arg(&save)
        .arg("--torrent")
        .arg(&torrent)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let r: serde_json::Value = serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("{text:?}: {e}; {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(r[0]["completed"], true, "leecher via opentracker: {r}");
    assert!(
        std::fs::read(save.join("update.bin")).unwrap() == bytes,
        "data differs"
    );
    let sent = |s: &ServeProc| {
        metric(
            s.metrics.as_deref().unwrap(),
            "ringseed_payload_bytes_total",
        ) as u64
    };
    let (a, b) = (sent(&seed_a), sent(&seed_b));
    eprintln!("seed A sent {a} bytes, seed B sent {b} bytes");
    assert!(
        a > 0 && b > 0,
        "both seeds must serve the leecher: A {a}, B {b}"
    );
    assert!(a + b >= bytes.len() as u64);
}
