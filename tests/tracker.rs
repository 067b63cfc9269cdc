//! The announcer against the embedded tracker (and opentracker) on loopback.
//!
//! Every server binds port 0 on 127.0.0.1; every wait is bounded.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringseed::tracker::client::{announce_once, scrape_once, AnnounceCounters};
use ringseed::tracker::proto::udp;
use ringseed::tracker::proto::{AnnounceRequest, Event};
use ringseed::tracker::swarms::SwarmConfig;
use ringseed::tracker::{
    AnnounceConfig, AnnounceTarget, Announcer, EmbeddedTracker, SeedPeer, TrackerConfig,
};

const H1: [u8; 20] = [0x11; 20];
const H2: [u8; 20] = [0x22; 20];
const SEED_PORT: u16 = 6881;
const OUR_PORT: u16 = 7001;

fn tracker(interval_s: u64) -> EmbeddedTracker {
    let cfg = TrackerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        swarm: SwarmConfig {
            interval: Duration::from_secs(interval_s),
            min_interval: Duration::from_secs(interval_s),
            peer_timeout: Duration::from_secs(2 * interval_s),
            ..SwarmConfig::default()
        },
        seed: Some(SeedPeer {
            ip: None,
            port: SEED_PORT,
        }),
        connection_id_lifetime: Duration::from_millis(400),
        ..TrackerConfig::default()
    };
    let t = EmbeddedTracker::start(cfg).unwrap();
    t.add_torrent(H1);
    t.add_torrent(H2);
    t
}

fn announce_cfg() -> AnnounceConfig {
    AnnounceConfig {
        port: OUR_PORT,
        request_timeout: Duration::from_secs(2),
        min_interval: Duration::ZERO,
        min_backoff: Duration::from_millis(200),
        max_backoff: Duration::from_millis(800),
        ..AnnounceConfig::default()
    }
}

fn target(hashes: &[[u8; 20]], tiers: Vec<Vec<String>>) -> AnnounceTarget {
    AnnounceTarget {
        info_hashes: hashes.to_vec(),
        tiers,
        uploaded: Arc::default(),
    }
}

fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn ours() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], OUR_PORT))
}

fn leecher(hash: [u8; 20], port: u16, event: Event) -> AnnounceRequest {
    AnnounceRequest {
        info_hash: hash,
        peer_id: *b"-XX0001-leecher00000",
        port,
        uploaded: 0,
        downloaded: 0,
        left: 1000,
        event,
        numwant: Some(50),
        key: 1,
        ip: None,
    }
}

fn ok(c: &AnnounceCounters) -> u64 {
    c.ok.load(Ordering::Relaxed)
}

fn started_interval_stopped(url: String, t: &EmbeddedTracker) {
    let announcer = Announcer::start(
        announce_cfg(),
        vec![target(&[H1, H2], vec![vec![url.clone()]])],
    )
    .unwrap();
    let counters = announcer.counters();
    let t0 = Instant::now();
    // Both swarms of a hybrid torrent get us.
    wait_for("our peer in both swarms", Duration::from_secs(5), || {
        t.peers(&H1).contains(&ours()) && t.peers(&H2).contains(&ours())
    });
    // Two more rounds at the tracker's 1 s interval, not sooner.
    wait_for("two re-announces", Duration::from_secs(6), || {
        ok(&counters) >= 6
    });
    let elapsed = t0.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1900),
        "re-announced after {elapsed:?}, before the 1 s interval twice"
    );
    assert_eq!(
        t.counters().started.load(Ordering::Relaxed),
        2,
        "started once per swarm"
    );
    assert_eq!(counters.failed.load(Ordering::Relaxed), 0);

    // A stock client's first announce returns the seed (first) and us.
    let resp = announce_once(
        &url,
        &leecher(H1, 9999, Event::Started),
        Duration::from_secs(2),
    )
    .unwrap();
    assert_eq!(
        resp.peers.first(),
        Some(&SocketAddr::from(([127, 0, 0, 1], SEED_PORT)))
    );
    assert!(resp.peers.contains(&ours()), "{:?}", resp.peers);
    assert_eq!(resp.complete, Some(2), "the seed and our announcer");
    assert_eq!(resp.incomplete, Some(1));
    let stats = scrape_once(&url, &[H1, H2], Duration::from_secs(2)).unwrap();
    assert_eq!(stats.len(), 2);
    assert_eq!(stats[0].1.complete, 2);
    assert_eq!(stats[0].1.incomplete, 1);
    assert_eq!(stats[1].1.incomplete, 0);

    let stop = Instant::now();
    announcer.shutdown(Duration::from_secs(2));
    assert!(
        stop.elapsed() < Duration::from_secs(2),
        "shutdown took {:?}",
        stop.elapsed()
    );
    assert_eq!(counters.stopped.load(Ordering::Relaxed), 2);
    assert_eq!(t.counters().stopped.load(Ordering::Relaxed), 2);
    assert!(!t.peers(&H1).contains(&ours()));
    assert!(!t.peers(&H2).contains(&ours()));
}

#[test]
fn tracker_http_announce_started_interval_stopped() {
    let t = tracker(1);
    started_interval_stopped(t.announce_url(), &t);
    assert!(t.counters().http_announces.load(Ordering::Relaxed) >= 7);
    t.shutdown();
}

#[test]
fn tracker_udp_announce_started_interval_stopped() {
    let t = tracker(1);
    started_interval_stopped(format!("udp://{}", t.local_addr()), &t);
    assert!(t.counters().udp_announces.load(Ordering::Relaxed) >= 7);
    assert_eq!(t.counters().http_announces.load(Ordering::Relaxed), 0);
    t.shutdown();
}

#[test]
fn tracker_refuses_unknown_torrents() {
    let t = tracker(60);
    for url in [t.announce_url(), format!("udp://{}", t.local_addr())] {
        let err = announce_once(
            &url,
            &leecher([0x99; 20], 1, Event::Started),
            Duration::from_secs(2),
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown torrent"), "{url}: {err}");
    }
    assert_eq!(t.counters().refused.load(Ordering::Relaxed), 2);
    t.shutdown();
}

/// A fake HTTP tracker that refuses every announce and records when.
fn refusing_tracker() -> (SocketAddr, Arc<Mutex<Vec<Instant>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(Mutex::new(Vec::new()));
    let h = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            h.lock().unwrap().push(Instant::now());
            let mut buf = [0u8; 4096];
            let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
            let _ = s.read(&mut buf);
            let body = b"d14:failure reason19:you are not welcomee";
            let _ = write!(
                s,
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(body);
        }
    });
    (addr, hits)
}

#[test]
fn tracker_failures_back_off_exponentially() {
    let (addr, hits) = refusing_tracker();
    let announcer = Announcer::start(
        announce_cfg(),
        vec![target(&[H1], vec![vec![format!("http://{addr}/announce")]])],
    )
    .unwrap();
    let counters = announcer.counters();
    wait_for("5 attempts", Duration::from_secs(6), || {
        hits.lock().unwrap().len() >= 5
    });
    let times = hits.lock().unwrap().clone();
    let gaps: Vec<u128> = times
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis())
        .collect();
    // 200 ms doubling, capped at 800 ms.
    for (gap, want) in gaps.iter().zip([200u128, 400, 800, 800]) {
        assert!(*gap >= want - 20 && *gap < want + 400, "gaps {gaps:?}");
    }
    assert_eq!(ok(&counters), 0);
    wait_for("4 refusals counted", Duration::from_secs(2), || {
        counters.refused.load(Ordering::Relaxed) >= 4
    });
    assert_eq!(
        counters.refused.load(Ordering::Relaxed),
        counters.failed.load(Ordering::Relaxed)
    );
    let stop = Instant::now();
    announcer.shutdown(Duration::from_secs(2));
    assert!(stop.elapsed() < Duration::from_secs(2));
    assert_eq!(
        counters.stopped.load(Ordering::Relaxed),
        0,
        "no tracker ever took `started`"
    );
}

fn dead_tcp() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}/announce", l.local_addr().unwrap())
}

fn dead_udp() -> String {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    format!("udp://{}", s.local_addr().unwrap())
}

#[test]
fn tracker_tiers_fall_through_and_promote() {
    let t = tracker(1);
    let tiers = vec![
        vec![dead_tcp()],
        vec![dead_udp(), format!("udp://{}", t.local_addr())],
    ];
    let announcer = Announcer::start(announce_cfg(), vec![target(&[H1], tiers)]).unwrap();
    let c = announcer.counters();
    wait_for("two announces", Duration::from_secs(6), || ok(&c) >= 2);
    // Round 1: tier 0 fails, tier 1's dead tracker fails, the live one
    // answers and moves to the front of tier 1. Round 2: tier 0 is tried
    // first again (BEP 12), then straight to the live tracker.
    assert_eq!(c.failed.load(Ordering::Relaxed), 3);
    assert_eq!(c.refused.load(Ordering::Relaxed), 0);
    assert!(t.peers(&H1).contains(&ours()));
    announcer.shutdown(Duration::from_secs(2));
    assert_eq!(c.stopped.load(Ordering::Relaxed), 1);
    t.shutdown();
}

#[test]
fn tracker_udp_connection_id_expires() {
    let t = tracker(60);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(t.local_addr()).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 2048];
    let mut exchange = |packet: &[u8], tid: u32, action: u32| {
        sock.send(packet).unwrap();
        let n = sock.recv(&mut buf).unwrap();
        udp::decode_response(&buf[..n], tid, action, false, 50)
    };
    let udp::UdpResponse::Connect { connection_id } =
        exchange(&udp::encode_connect(1), 1, udp::ACTION_CONNECT).unwrap()
    else {
        panic!("not a connect response")
    };
    let req = leecher(H1, 4242, Event::Started);
    let fresh = exchange(
        &udp::encode_announce(connection_id, 2, &req),
        2,
        udp::ACTION_ANNOUNCE,
    )
    .unwrap();
    let udp::UdpResponse::Announce(resp) = fresh else {
        panic!("not an announce response")
    };
    assert_eq!(
        resp.peers,
        vec![SocketAddr::from(([127, 0, 0, 1], SEED_PORT))]
    );
    // A forged id is refused at once; the real one after its 400 ms lifetime.
    let forged = exchange(
        &udp::encode_announce(connection_id ^ 0xffff, 3, &req),
        3,
        udp::ACTION_ANNOUNCE,
    );
    assert!(
        matches!(forged, Err(udp::UdpError::Failure(ref m)) if m.contains("connection id")),
        "{forged:?}"
    );
    std::thread::sleep(Duration::from_millis(600));
    let stale = exchange(
        &udp::encode_announce(connection_id, 4, &req),
        4,
        udp::ACTION_ANNOUNCE,
    );
    assert!(
        matches!(stale, Err(udp::UdpError::Failure(ref m)) if m.contains("expired")),
        "{stale:?}"
    );
    // The announcer's helper reconnects and succeeds.
    announce_once(
        &format!("udp://{}", t.local_addr()),
        &req,
        Duration::from_secs(2),
    )
    .unwrap();
    t.shutdown();
}

#[test]
fn tracker_http_garbage_and_404() {
    let t = tracker(60);
    let get = |req: &[u8]| {
        let mut s = std::net::TcpStream::connect(t.local_addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.write_all(req).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    };
    assert!(get(b"GET /nope HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
    assert!(get(b"\x16\x03\x01garbage\r\n\r\n").starts_with("HTTP/1.1 400"));
    let r = get(b"GET /announce?info_hash=short&port=1 HTTP/1.1\r\n\r\n");
    assert!(
        r.contains("failure reason") && r.contains("info_hash"),
        "{r}"
    );
    // Still serving afterwards.
    announce_once(
        &t.announce_url(),
        &leecher(H1, 1, Event::Started),
        Duration::from_secs(2),
    )
    .unwrap();
    t.shutdown();
}

// ------------------------------------------------------------ opentracker

fn free_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn tracker_announcer_with_opentracker() {
    let bin = "/usr/bin/opentracker";
    if !std::path::Path::new(bin).exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "opentracker is missing in CI: install Debian's `opentracker` package"
        );
        eprintln!("\n*** SKIP tracker_announcer_with_opentracker: {bin} missing (apt-get install -y opentracker) ***\n");
        return;
    }
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    // Debian builds opentracker with a whitelist; the path is read after
    // it chroots into `-d`.
    let hex = |h: [u8; 20]| h.iter().map(|b| format!("{b:02x}")).collect::<String>();
    std::fs::write(dir.path().join("wl"), format!("{}\n{}\n", hex(H1), hex(H2))).unwrap();
    let _child = Child(
        std::process::Command::new(bin)
            .args([
                "-i",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-P",
                &port.to_string(),
                "-d",
            ])
            .arg(dir.path())
            .args(["-w", "wl"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let http = format!("http://127.0.0.1:{port}/announce");
    let udp_url = format!("udp://127.0.0.1:{port}");
    wait_for("opentracker to answer", Duration::from_secs(5), || {
        announce_once(
            &http,
            &leecher(H2, 1, Event::Stopped),
            Duration::from_millis(300),
        )
        .is_ok()
    });

    // H1 over HTTP, H2 over UDP.
    let announcer = Announcer::start(
        announce_cfg(),
        vec![
            target(&[H1], vec![vec![http.clone()]]),
            target(&[H2], vec![vec![udp_url.clone()]]),
        ],
    )
    .unwrap();
    let c = announcer.counters();
    wait_for("both announces", Duration::from_secs(5), || ok(&c) >= 2);
    assert_eq!(c.failed.load(Ordering::Relaxed), 0);
    for (hash, url) in [(H1, &http), (H2, &udp_url)] {
        let resp = announce_once(
            url,
            &leecher(hash, 9999, Event::Started),
            Duration::from_secs(2),
        )
        .unwrap();
        assert!(resp.peers.contains(&ours()), "{url}: {:?}", resp.peers);
        let stats = scrape_once(url, &[hash], Duration::from_secs(2)).unwrap();
        assert_eq!(stats[0].1.complete, 1, "{url}: our seed");
    }
    announcer.shutdown(Duration::from_secs(2));
    assert_eq!(c.stopped.load(Ordering::Relaxed), 2);
    let resp = announce_once(
        &http,
        &leecher(H1, 9998, Event::None),
        Duration::from_secs(2),
    )
    .unwrap();
    assert!(
        !resp.peers.contains(&ours()),
        "still listed after stopped: {:?}",
        resp.peers
    );
}

#[test]
fn tracker_over_ipv6_uses_peers6_and_18_byte_peers() {
    if UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("\n*** SKIP tracker_over_ipv6: no IPv6 loopback ***\n");
        return;
    }
    let t = EmbeddedTracker::start(TrackerConfig {
        listen: "[::1]:0".parse().unwrap(),
        seed: Some(SeedPeer {
            ip: None,
            port: SEED_PORT,
        }),
        ..TrackerConfig::default()
    })
    .unwrap();
    t.add_torrent(H1);
    let seed: SocketAddr = format!("[::1]:{SEED_PORT}").parse().unwrap();
    let http = t.announce_url();
    assert!(http.starts_with("http://[::1]:"), "{http}");
    let resp = announce_once(
        &http,
        &leecher(H1, 1111, Event::Started),
        Duration::from_secs(2),
    )
    .unwrap();
    assert_eq!(resp.peers, vec![seed], "seed via peers6");
    let udp_url = format!("udp://{}", t.local_addr());
    let resp = announce_once(
        &udp_url,
        &leecher(H1, 2222, Event::Started),
        Duration::from_secs(2),
    )
    .unwrap();
    let v6_leecher: SocketAddr = "[::1]:1111".parse().unwrap();
    assert_eq!(resp.peers.first(), Some(&seed));
    assert!(resp.peers.contains(&v6_leecher), "{:?}", resp.peers);
    t.shutdown();
}
