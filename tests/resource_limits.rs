//! Resource exhaustion: a server out of file descriptors (EMFILE) backs off,
//! keeps serving the peers it has, logs once per interval, and accepts again
//! when descriptors free up. Never a crash or a busy loop.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::leecher;
use support::serve::{metric, BIN};

#[test]
fn out_of_descriptors_backs_off_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..2_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    std::fs::write(dir.path().join("f.bin"), &data).unwrap();
    // A hard limit of 96 descriptors for the server only.
    let script = format!(
        "ulimit -n 96 && exec {BIN} serve {} --listen 127.0.0.1:0 --shards 1 --metrics 127.0.0.1:0 --tracker-listen off",
        dir.path().display()
    );
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script]).stderr(Stdio::piped());
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let err = child.stderr.take().unwrap();
    let out = child.stdout.take().unwrap();
    let server = ProcGuard(child);
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
    // The log says when accepts fail: while the server is out of
    // descriptors its metrics endpoint cannot accept either.
    let (first_failure, failed) = std::sync::mpsc::channel();
    let warnings = std::thread::spawn(move || {
        let mut n = 0;
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            if l.contains("accept failed") {
                n += 1;
                let _ = first_failure.send(());
            }
        }
        n
    });
    let t = ringseed::metainfo::Torrent::from_bytes(
        &std::fs::read(dir.path().join(".ringseed/f.bin.torrent")).unwrap(),
    )
    .unwrap();
    let hash = t.info_hash_v1.unwrap().0;

    // Exhaust the server's descriptors with idle, handshaken peers.
    let mut idle = Vec::new();
    for _ in 0..150 {
        let mut s = TcpStream::connect(&addr).unwrap();
        let _ = s.write_all(&leecher::handshake_bytes(hash, true, true));
        idle.push(s);
    }
    failed
        .recv_timeout(Duration::from_secs(10))
        .expect("no accept failure logged within 10 s");
    // Free descriptors: the server accepts again after its back-off.
    idle.truncate(20);
    let got = leecher::download(
        addr.parse().unwrap(),
        hash,
        t.num_pieces,
        t.piece_length as u32,
        t.piece_space_len,
        16,
    )
    .expect("an honest leecher is served once descriptors are free again");
    assert!(got == data, "data differs");
    assert!(
        metric(&metrics, "ringseed_accept_errors_total") > 0.0,
        "accept errors counted"
    );
    drop(idle);
    drop(server);
    let n = warnings.join().unwrap();
    assert!(
        (1..=5).contains(&n),
        "accept failures are logged once per interval, not per failure: {n} lines"
    );
}

/// The `sh` child (which exec'd `ringseed serve`), killed by PID on drop.
struct ProcGuard(Child);

impl Drop for ProcGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
