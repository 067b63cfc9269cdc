//! The `/metrics` endpoint over real loopback HTTP: values, format,
//! histogram consistency, error answers, slow clients and shutdown.

mod dashboard_support;

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use dashboard_support::{http_get, FakeLoad};
use ringseed::metrics::{names, BuildInfo, MetricsServer};

fn start(load: &FakeLoad) -> MetricsServer {
    MetricsServer::start(SocketAddr::from(([127, 0, 0, 1], 0)), load.sources.clone()).unwrap()
}

/// Parses an exposition into (series with labels -> value) and (family -> type),
/// failing on any malformed line.
fn parse(text: &str) -> (BTreeMap<String, f64>, HashMap<String, String>) {
    let mut series = BTreeMap::new();
    let mut types = HashMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(
                types.insert(name.to_string(), kind.to_string()).is_none(),
                "two TYPE lines for {name}"
            );
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("malformed line {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        assert!(
            series.insert(key.to_string(), value).is_none(),
            "duplicate series {key}"
        );
    }
    (series, types)
}

fn family(series: &str, types: &HashMap<String, String>) -> String {
    let name = series.split('{').next().unwrap();
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if types.get(base).map(String::as_str) == Some("histogram") {
                return base.to_string();
            }
        }
    }
    name.to_string()
}

fn assert_histograms_consistent(series: &BTreeMap<String, f64>) {
    for name in names::HISTOGRAMS {
        let prefix = format!("{name}_bucket{{le=\"");
        let buckets: Vec<(f64, f64)> = series
            .iter()
            .filter_map(|(k, v)| {
                let le = k.strip_prefix(&prefix)?.strip_suffix("\"}")?;
                Some((
                    if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse().unwrap()
                    },
                    *v,
                ))
            })
            .collect();
        let mut sorted = buckets.clone();
        sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert!(sorted.len() >= 10, "{name}: {} buckets", sorted.len());
        assert!(
            sorted.windows(2).all(|w| w[0].1 <= w[1].1),
            "{name}: buckets not monotone: {sorted:?}"
        );
        let inf = sorted.last().unwrap();
        assert_eq!(inf.0, f64::INFINITY);
        assert_eq!(
            series[&format!("{name}_count")],
            inf.1,
            "{name}: _count != +Inf bucket"
        );
        assert!(inf.1 > 0.0, "{name}: no samples");
        assert!(series[&format!("{name}_sum")] > 0.0);
    }
}

#[test]
fn serves_every_metric_with_the_shards_values() {
    let load = FakeLoad::new(2);
    let server = start(&load);
    let (status, head, body) = http_get(server.local_addr(), "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    let (series, types) = parse(&body);

    for name in names::ALL {
        let expected = if names::COUNTERS.contains(name) {
            "counter"
        } else if names::HISTOGRAMS.contains(name) {
            "histogram"
        } else {
            "gauge"
        };
        assert_eq!(
            types.get(*name).map(String::as_str),
            Some(expected),
            "{name}\n{body}"
        );
    }
    for key in series.keys() {
        assert!(
            types.contains_key(&family(key, &types)),
            "{key} has no TYPE line"
        );
    }

    // One FakeLoad step: shard 1 (second shard) moved 2x the first's traffic.
    assert_eq!(
        series[r#"ringseed_payload_bytes_total{shard="0",transport="tcp"}"#],
        (16_384 * 64) as f64
    );
    assert_eq!(
        series[r#"ringseed_payload_bytes_total{shard="1",transport="tcp"}"#],
        (16_384 * 64 * 2) as f64
    );
    assert_eq!(
        series[r#"ringseed_connections{shard="1",transport="tcp"}"#],
        21.0
    );
    assert_eq!(
        series[r#"ringseed_connections{shard="1",transport="utp"}"#],
        0.0
    );
    for reason in [
        "queue_full",
        "choked",
        "out_of_range",
        "unavailable",
        "other",
    ] {
        assert_eq!(
            series[&format!(r#"ringseed_requests_rejected_total{{shard="0",reason="{reason}"}}"#)],
            1.0
        );
    }
    for reason in [
        "peer_closed",
        "timeout",
        "protocol_error",
        "limit",
        "shutdown",
        "io_error",
    ] {
        assert_eq!(
            series[&format!(r#"ringseed_connections_closed_total{{shard="1",reason="{reason}"}}"#)],
            1.0
        );
    }
    assert_eq!(
        series[r#"ringseed_handshake_failures_total{shard="0",reason="unknown_info_hash"}"#],
        1.0
    );
    assert_eq!(series["ringseed_pieces_verified_total"], 1.0);
    assert_eq!(series["ringseed_pieces_pending"], 999_999.0);
    assert!(series["ringseed_verify_seconds_total"] > 0.0);

    let build = BuildInfo::current();
    assert!(!build.commit.is_empty());
    let info = format!(
        r#"ringseed_build_info{{version="{}",commit="{}"}}"#,
        build.version, build.commit
    );
    let info_alt = format!(
        r#"ringseed_build_info{{commit="{}",version="{}"}}"#,
        build.commit, build.version
    );
    assert!(
        series.get(&info).or(series.get(&info_alt)) == Some(&1.0),
        "{body}"
    );

    assert!(series["ringseed_process_resident_memory_bytes"] > 1e6);
    assert!(series["ringseed_process_open_fds"] >= 3.0);
    assert!(
        series["ringseed_process_threads"] >= 2.0,
        "the metrics thread and this one"
    );
    assert_histograms_consistent(&series);
    server.shutdown();
}

#[test]
fn scrapes_stay_consistent_while_shards_publish() {
    let mut load = FakeLoad::new(3);
    let server = start(&load);
    let addr = server.local_addr();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = std::thread::spawn({
        let stop = stop.clone();
        move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                load.step();
            }
        }
    });
    let mut last_count = 0.0;
    let mut last_bytes = 0.0;
    for _ in 0..30 {
        let (status, _, body) = http_get(addr, "/metrics").unwrap();
        assert_eq!(status, 200);
        let (series, _) = parse(&body);
        assert_histograms_consistent(&series);
        let count = series["ringseed_request_to_send_seconds_count"];
        let bytes = series[r#"ringseed_payload_bytes_total{shard="2",transport="tcp"}"#];
        assert!(
            count >= last_count && bytes >= last_bytes,
            "counters went backwards"
        );
        (last_count, last_bytes) = (count, bytes);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    assert!(last_count > 0.0);
    server.shutdown();
}

fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn answers_other_requests_with_http_errors() {
    let load = FakeLoad::new(1);
    let server = start(&load);
    let addr = server.local_addr();
    assert_eq!(http_get(addr, "/").unwrap().0, 404);
    assert_eq!(http_get(addr, "/metrics/x").unwrap().0, 404);
    assert_eq!(http_get(addr, "/metrics?name[]=x").unwrap().0, 200);
    assert!(
        raw(addr, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
            .starts_with("HTTP/1.1 405")
    );
    assert!(raw(
        addr,
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"
    )
    .starts_with("HTTP/1.1 400"));
    let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
    assert!(raw(addr, huge.as_bytes()).starts_with("HTTP/1.1 431"));
    let head = raw(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n");
    assert!(
        head.starts_with("HTTP/1.1 200") && head.ends_with("\r\n\r\n"),
        "{head}"
    );
    // Still serving after all that.
    assert_eq!(http_get(addr, "/metrics").unwrap().0, 200);
    server.shutdown();
}

#[test]
fn a_silent_client_delays_a_scrape_by_at_most_the_timeout() {
    let load = FakeLoad::new(1);
    let server = start(&load);
    let addr = server.local_addr();
    let _silent = TcpStream::connect(addr).unwrap();
    let t = Instant::now();
    assert_eq!(http_get(addr, "/metrics").unwrap().0, 200);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "scrape took {:?}",
        t.elapsed()
    );
    server.shutdown();
}

#[test]
fn shutdown_stops_listening() {
    let load = FakeLoad::new(1);
    let server = start(&load);
    let addr = server.local_addr();
    assert_eq!(http_get(addr, "/metrics").unwrap().0, 200);
    let t = Instant::now();
    server.shutdown();
    assert!(t.elapsed() < Duration::from_secs(3));
    assert!(
        TcpStream::connect(addr).is_err(),
        "still listening after shutdown"
    );
    // Drop without an explicit shutdown also stops it.
    let server = start(&load);
    let addr = server.local_addr();
    drop(server);
    assert!(TcpStream::connect(addr).is_err());
}
