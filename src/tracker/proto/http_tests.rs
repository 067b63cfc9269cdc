use super::*;
use crate::tracker::proto::{AnnounceRequest, Event};

fn req() -> AnnounceRequest {
    AnnounceRequest {
        info_hash: *b"\x00\x01\xff abc&=?%+~._-xyz0",
        peer_id: *b"-RS0100-000000000000",
        port: 6881,
        uploaded: 7,
        downloaded: 0,
        left: 0,
        event: Event::Started,
        numwant: Some(0),
        key: 0xdead_beef,
        ip: None,
    }
}

#[test]
fn announce_url_percent_encodes_raw_bytes() {
    let t = announce_target("/announce", &req(), None);
    assert_eq!(
        t,
        "/announce?info_hash=%00%01%FF%20abc%26%3D%3F%25%2B~._-xyz0\
         &peer_id=-RS0100-000000000000&port=6881&uploaded=7&downloaded=0&left=0\
         &compact=1&key=DEADBEEF&numwant=0&event=started"
    );
    // The encoded hash decodes back to the same 20 bytes.
    let q = t.split_once('?').unwrap().1;
    let parsed = parse_announce_query(q.as_bytes()).unwrap();
    assert_eq!(parsed.info_hash, req().info_hash);
    assert_eq!(parsed.port, 6881);
    assert_eq!(parsed.event, Event::Started);
    assert_eq!(parsed.numwant, Some(0));
    assert!(parsed.compact);
}

#[test]
fn announce_url_keeps_existing_query_and_adds_ip_trackerid() {
    let mut r = req();
    r.event = Event::None;
    r.numwant = None;
    r.ip = Some("2001:db8::1".parse().unwrap());
    let t = announce_target("/a?passkey=k", &r, Some(b"id 1"));
    assert!(t.starts_with("/a?passkey=k&info_hash="), "{t}");
    assert!(!t.contains("event="));
    assert!(!t.contains("numwant="));
    assert!(
        t.ends_with("&ipv6=2001%3Adb8%3A%3A1&trackerid=id%201"),
        "{t}"
    );
    r.ip = Some("203.0.113.5".parse().unwrap());
    let t = announce_target("/a", &r, None);
    assert!(t.ends_with("&ip=203.0.113.5"), "{t}");
}

#[test]
fn scrape_target_follows_bep48() {
    let h = [0x41u8; 20];
    assert_eq!(
        scrape_target("/announce", &[h]).unwrap(),
        format!("/scrape?info_hash={}", "A".repeat(20))
    );
    assert_eq!(
        scrape_target("/x/announce.php?pk=1", &[h, h]).unwrap(),
        format!(
            "/x/scrape.php?pk=1&info_hash={a}&info_hash={a}",
            a = "A".repeat(20)
        )
    );
    assert_eq!(scrape_target("/a/announce/x", &[h]), None);
    assert_eq!(scrape_target("/tracker", &[h]), None);
}

fn response(body: &[u8]) -> Vec<u8> {
    let mut r = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    r.extend_from_slice(body);
    r
}

#[test]
fn parses_compact_response_with_everything() {
    let body = b"d8:completei5e10:incompletei2e8:intervali1800e12:min intervali60e\
                 5:peers12:\x01\x02\x03\x04\x1a\xe1\x0a\x00\x00\x01\x00\x50\
                 6:peers618:\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x01\x1a\xe1\
                 10:tracker id2:ab15:warning message4:slowe";
    let raw = response(body);
    let parsed = parse_announce_body(split_response(&raw).unwrap(), 50).unwrap();
    assert_eq!(parsed.interval, Duration::from_secs(1800));
    assert_eq!(parsed.min_interval, Some(Duration::from_secs(60)));
    assert_eq!(parsed.complete, Some(5));
    assert_eq!(parsed.incomplete, Some(2));
    assert_eq!(parsed.tracker_id.as_deref(), Some(&b"ab"[..]));
    assert_eq!(parsed.warning.as_deref(), Some("slow"));
    let want: Vec<SocketAddr> = vec![
        "1.2.3.4:6881".parse().unwrap(),
        "10.0.0.1:80".parse().unwrap(),
        "[2001:db8::1]:6881".parse().unwrap(),
    ];
    assert_eq!(parsed.peers, want);
    // Peers beyond max are dropped, not an error.
    assert_eq!(parse_announce_body(body, 1).unwrap().peers, want[..1]);
}

#[test]
fn parses_dictionary_peer_list() {
    let body = b"d8:intervali900e5:peersld2:ip7:1.2.3.47:peer id20:aaaaaaaaaaaaaaaaaaaa4:porti6881eed2:ip9:host.name4:porti1eed2:ip3:::14:porti2eeee";
    let parsed = parse_announce_body(body, 50).unwrap();
    assert_eq!(
        parsed.peers,
        vec!["1.2.3.4:6881".parse().unwrap(), "[::1]:2".parse().unwrap()]
    );
}

#[test]
fn failure_reason_is_an_error_with_the_text() {
    let err = parse_announce_body(b"d14:failure reason17:torrent not founde", 50).unwrap_err();
    assert_eq!(err, HttpError::Failure("torrent not found".into()));
    assert_eq!(err.to_string(), "tracker failure: torrent not found");
}

#[test]
fn hostile_responses_give_clean_errors() {
    // peers not a multiple of 6
    let e = parse_announce_body(b"d8:intervali1e5:peers7:1234567e", 50).unwrap_err();
    assert!(
        matches!(e, HttpError::Field(ref m) if m.contains("multiple of 6")),
        "{e}"
    );
    let e = parse_announce_body(b"d8:intervali1e6:peers65:12345e", 50).unwrap_err();
    assert!(matches!(e, HttpError::Field(_)), "{e}");
    // garbage, truncated, wrong types
    assert!(matches!(
        parse_announce_body(b"<html>", 50),
        Err(HttpError::Bencode { .. })
    ));
    assert!(matches!(
        parse_announce_body(b"d8:intervali1", 50),
        Err(HttpError::Bencode { .. })
    ));
    assert!(matches!(
        parse_announce_body(b"le", 50),
        Err(HttpError::Field(_))
    ));
    assert!(matches!(
        parse_announce_body(b"de", 50),
        Err(HttpError::Field(_))
    ));
    assert!(matches!(
        parse_announce_body(b"d8:interval1:xe", 50),
        Err(HttpError::Field(_))
    ));
    assert!(matches!(
        parse_announce_body(b"d8:intervali1e5:peersi3ee", 50),
        Err(HttpError::Field(_))
    ));
    // a 2 GB string claim
    assert!(matches!(
        parse_announce_body(b"d8:intervali1e5:peers2000000000:xe", 50),
        Err(HttpError::Bencode { .. })
    ));
    // negative interval is clamped, not wrapped
    assert_eq!(
        parse_announce_body(b"d8:intervali-5ee", 50)
            .unwrap()
            .interval,
        Duration::ZERO
    );
    // huge body
    let huge = vec![b'x'; MAX_BODY + 1];
    assert!(matches!(
        parse_announce_body(&huge, 50),
        Err(HttpError::BodyTooLarge { .. })
    ));
}

#[test]
fn http_framing_errors() {
    assert_eq!(
        split_response(b"HTTP/1.1 200 OK\r\n"),
        Err(HttpError::IncompleteHead)
    );
    assert!(matches!(
        split_response(b"SSH-2.0\r\n\r\n"),
        Err(HttpError::BadStatusLine { .. })
    ));
    assert!(matches!(
        split_response(b"HTTP/1.1 abc\r\n\r\n"),
        Err(HttpError::BadStatusLine { .. })
    ));
    assert_eq!(
        split_response(b"HTTP/1.1 404 Not Found\r\n\r\nx"),
        Err(HttpError::Status {
            status: 404,
            reason: "Not Found".into()
        })
    );
    assert_eq!(
        split_response(b"HTTP/1.0 200 OK\r\ncontent-length: 10\r\n\r\nabc"),
        Err(HttpError::Truncated {
            expected: 10,
            got: 3
        })
    );
    assert!(matches!(
        split_response(b"HTTP/1.0 200 OK\r\nContent-Length: 99999999999\r\n\r\n"),
        Err(HttpError::BodyTooLarge { .. })
    ));
    assert_eq!(
        split_response(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nabcd"),
        Ok(&b"ab"[..])
    );
    assert_eq!(
        split_response(b"HTTP/1.0 200 OK\r\n\r\nabcd"),
        Ok(&b"abcd"[..])
    );
}

#[test]
fn scrape_round_trip() {
    let a = [1u8; 20];
    let b = [2u8; 20];
    let stats = ScrapeStats {
        complete: 3,
        downloaded: 9,
        incomplete: 1,
    };
    let body = encode_scrape_body(&[(a, stats)]);
    assert_eq!(parse_scrape_body(&body, &[a, b]).unwrap(), vec![(a, stats)]);
    assert!(matches!(
        parse_scrape_body(b"de", &[a]),
        Err(HttpError::Field(_))
    ));
    assert!(matches!(
        parse_scrape_body(b"d14:failure reason2:noe", &[a]),
        Err(HttpError::Failure(_))
    ));
}

#[test]
fn server_response_round_trips_through_client_parser() {
    let resp = ServerResponse {
        interval: Duration::from_secs(1800),
        min_interval: Duration::from_secs(60),
        complete: 1,
        incomplete: 2,
        peers: vec![
            "127.0.0.1:6881".parse().unwrap(),
            "[::1]:6882".parse().unwrap(),
        ],
    };
    for compact in [true, false] {
        let body = encode_announce_body(&resp, compact);
        let parsed = parse_announce_body(&body, 50).unwrap();
        assert_eq!(parsed.peers, resp.peers, "compact={compact}");
        assert_eq!(parsed.interval, resp.interval);
        assert_eq!(parsed.min_interval, Some(resp.min_interval));
        assert_eq!((parsed.complete, parsed.incomplete), (Some(1), Some(2)));
    }
    let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc".to_vec();
    assert_eq!(split_response(&raw), Ok(&b"abc"[..]));
}

#[test]
fn announce_query_parsing() {
    assert_eq!(
        parse_announce_query(b"port=1"),
        Err(RequestError::Param("info_hash"))
    );
    assert_eq!(
        parse_announce_query(b"info_hash=abc&port=1"),
        Err(RequestError::Param("info_hash"))
    );
    let ih = "%41".repeat(20);
    assert_eq!(
        parse_announce_query(format!("info_hash={ih}").as_bytes()),
        Err(RequestError::Param("port"))
    );
    assert_eq!(
        parse_announce_query(format!("info_hash={ih}&port=1&event=bogus").as_bytes()),
        Err(RequestError::Param("event"))
    );
    assert_eq!(parse_query(b"a=%4"), Err(RequestError::Param("query")));
    let ok = parse_announce_query(
        format!("info_hash={ih}&port=1&left=5&compact=0&numwant=-1").as_bytes(),
    )
    .unwrap();
    assert_eq!((ok.left, ok.compact, ok.numwant), (5, false, Some(0)));
    assert_eq!(
        parse_scrape_query(format!("info_hash={ih}&info_hash={ih}").as_bytes(), 1),
        Err(RequestError::Param("info_hash"))
    );
}

#[test]
fn percent_round_trip_all_bytes() {
    let all: Vec<u8> = (0..=255).collect();
    assert_eq!(
        percent_decode(percent_encode(&all).as_bytes()).unwrap(),
        all
    );
}
