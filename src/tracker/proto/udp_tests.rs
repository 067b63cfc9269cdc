use super::*;

fn req() -> AnnounceRequest {
    AnnounceRequest {
        info_hash: [7; 20],
        peer_id: *b"-RS0100-abcdefghijkl",
        port: 6881,
        uploaded: 1,
        downloaded: 2,
        left: 0,
        event: Event::Started,
        numwant: None,
        key: 42,
        ip: Some("10.1.2.3".parse().unwrap()),
    }
}

#[test]
fn connect_bytes_match_bep15() {
    let b = encode_connect(0x0102_0304);
    assert_eq!(
        b,
        [0, 0, 0x04, 0x17, 0x27, 0x10, 0x19, 0x80, 0, 0, 0, 0, 1, 2, 3, 4]
    );
    assert_eq!(
        decode_request(&b),
        Ok(UdpRequest::Connect {
            transaction_id: 0x0102_0304
        })
    );
    let resp = encode_connect_response(0x0102_0304, 0xAABB);
    assert_eq!(
        decode_response(&resp, 0x0102_0304, ACTION_CONNECT, false, 0),
        Ok(UdpResponse::Connect {
            connection_id: 0xAABB
        })
    );
}

#[test]
fn announce_layout_and_round_trip() {
    let b = encode_announce(0x1122_3344_5566_7788, 9, &req());
    assert_eq!(b.len(), 98);
    assert_eq!(&b[56..64], &2u64.to_be_bytes()); // downloaded
    assert_eq!(&b[72..80], &1u64.to_be_bytes()); // uploaded
    assert_eq!(&b[84..88], &[10, 1, 2, 3]);
    assert_eq!(&b[92..96], &(-1i32).to_be_bytes());
    assert_eq!(
        decode_request(&b),
        Ok(UdpRequest::Announce {
            connection_id: 0x1122_3344_5566_7788,
            transaction_id: 9,
            info_hash: [7; 20],
            left: 0,
            event: Event::Started,
            numwant: -1,
            port: 6881,
        })
    );
    // Any truncation is an error, never a panic.
    for cut in 0..b.len() {
        assert!(decode_request(&b[..cut]).is_err(), "cut {cut}");
    }
}

#[test]
fn announce_response_ipv4_and_ipv6() {
    let v4: Vec<SocketAddr> = vec!["1.2.3.4:5".parse().unwrap(), "5.6.7.8:9".parse().unwrap()];
    let b = encode_announce_response(3, Duration::from_secs(1800), 4, 5, &v4);
    let UdpResponse::Announce(r) = decode_response(&b, 3, ACTION_ANNOUNCE, false, 50).unwrap()
    else {
        panic!("not an announce")
    };
    assert_eq!(r.interval, Duration::from_secs(1800));
    assert_eq!((r.incomplete, r.complete), (Some(4), Some(5)));
    assert_eq!(r.peers, v4);
    // capped
    let UdpResponse::Announce(r) = decode_response(&b, 3, ACTION_ANNOUNCE, false, 1).unwrap()
    else {
        panic!()
    };
    assert_eq!(r.peers.len(), 1);
    // the same bytes read as IPv6 do not fit 18-byte records
    assert_eq!(
        decode_response(&b, 3, ACTION_ANNOUNCE, true, 50),
        Err(UdpError::BadPeers { len: 12, unit: 18 })
    );
    let v6: Vec<SocketAddr> = vec!["[2001:db8::2]:6881".parse().unwrap()];
    let b = encode_announce_response(3, Duration::from_secs(60), 0, 1, &v6);
    let UdpResponse::Announce(r) = decode_response(&b, 3, ACTION_ANNOUNCE, true, 50).unwrap()
    else {
        panic!()
    };
    assert_eq!(r.peers, v6);
}

#[test]
fn hostile_responses() {
    let good = encode_announce_response(
        3,
        Duration::from_secs(1),
        0,
        0,
        &["1.2.3.4:5".parse().unwrap()],
    );
    assert_eq!(
        decode_response(&good, 4, ACTION_ANNOUNCE, false, 50),
        Err(UdpError::TransactionMismatch {
            expected: 4,
            got: 3
        })
    );
    assert_eq!(
        decode_response(&good, 3, ACTION_CONNECT, false, 50),
        Err(UdpError::WrongAction {
            expected: ACTION_CONNECT,
            got: ACTION_ANNOUNCE
        })
    );
    for cut in 0..20 {
        assert!(decode_response(&good[..cut], 3, ACTION_ANNOUNCE, false, 50).is_err());
    }
    assert!(matches!(
        decode_response(&good[..25], 3, ACTION_ANNOUNCE, false, 50),
        Err(UdpError::BadPeers { len: 5, unit: 6 })
    ));
    let err = encode_error_response(3, "unknown torrent\x07");
    assert_eq!(
        decode_response(&err, 3, ACTION_ANNOUNCE, false, 50),
        Err(UdpError::Failure("unknown torrent?".into()))
    );
    let mut odd = encode_connect_response(3, 1).to_vec();
    odd[3] = 9;
    assert_eq!(
        decode_response(&odd, 3, ACTION_CONNECT, false, 50),
        Err(UdpError::WrongAction {
            expected: 0,
            got: 9
        })
    );
    let huge = vec![0u8; MAX_DATAGRAM + 1];
    assert!(matches!(
        decode_response(&huge, 0, 0, false, 50),
        Err(UdpError::TooLarge { .. })
    ));
    let bad_scrape = [0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3];
    assert!(decode_response(&bad_scrape, 3, ACTION_SCRAPE, false, 50).is_err());
}

#[test]
fn scrape_round_trip() {
    let hashes = [[1u8; 20], [2u8; 20]];
    let b = encode_scrape(5, 6, &hashes);
    assert_eq!(
        decode_request(&b),
        Ok(UdpRequest::Scrape {
            connection_id: 5,
            transaction_id: 6,
            hashes: hashes.to_vec()
        })
    );
    let stats = vec![
        ScrapeStats {
            complete: 1,
            downloaded: 2,
            incomplete: 3,
        },
        ScrapeStats::default(),
    ];
    let r = encode_scrape_response(6, &stats);
    assert_eq!(
        decode_response(&r, 6, ACTION_SCRAPE, false, 0),
        Ok(UdpResponse::Scrape(stats))
    );
    assert_eq!(
        encode_scrape(5, 6, &[[0; 20]; 100]).len(),
        16 + 20 * MAX_SCRAPE_HASHES
    );
    let mut too_many = encode_scrape(5, 6, &[]);
    too_many.extend(std::iter::repeat_n(0u8, 20 * 75));
    assert_eq!(
        decode_request(&too_many).unwrap_err().transaction_id,
        Some(6)
    );
}

#[test]
fn bad_requests() {
    let mut c = encode_connect(1);
    c[0] = 9;
    assert_eq!(decode_request(&c).unwrap_err().transaction_id, None);
    let mut a = encode_announce(1, 2, &req());
    a[83] = 9; // event
    assert_eq!(decode_request(&a).unwrap_err().reason, "unknown event");
    let mut u = encode_connect(1);
    u[..8].copy_from_slice(&1u64.to_be_bytes());
    u[11] = 7;
    assert_eq!(decode_request(&u).unwrap_err().reason, "unknown action");
}

#[test]
fn connection_ids_expire_after_lifetime_and_bind_to_ip() {
    let ids = ConnectionIds::new(SERVER_CONNECTION_ID_LIFETIME);
    let ip: IpAddr = "10.0.0.1".parse().unwrap();
    let other: IpAddr = "10.0.0.2".parse().unwrap();
    let t0 = 1_000;
    let id = ids.issue(ip, t0);
    assert!(ids.is_valid(id, ip, t0));
    assert!(ids.is_valid(id, ip, t0 + 119_999));
    assert!(ids.is_valid(id, ip, t0 + 120_000));
    assert!(
        !ids.is_valid(id, ip, t0 + 120_001),
        "expired after 2 minutes"
    );
    assert!(!ids.is_valid(id, other, t0), "bound to the client IP");
    assert!(!ids.is_valid(id ^ 1, ip, t0), "forged");
    assert!(!ids.is_valid(id, ip, t0 - 1), "from the future");
    // IPv4-mapped IPv6 is the same client (dual-stack sockets).
    let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
    assert!(ids.is_valid(id, mapped, t0 + 5));
    // Wrapping clock.
    let late = u32::MAX - 10;
    let id = ids.issue(ip, late);
    assert!(ids.is_valid(id, ip, late.wrapping_add(1000)));
}

#[test]
fn client_cache_reuses_ids_for_one_minute() {
    let mut c = ConnectionCache::default();
    let t: SocketAddr = "127.0.0.1:6969".parse().unwrap();
    let now = Instant::now();
    assert_eq!(c.get(t, now), None);
    c.insert(t, 77, now);
    assert_eq!(c.get(t, now + Duration::from_secs(59)), Some(77));
    assert_eq!(c.get(t, now + Duration::from_secs(60)), None);
    c.remove(t);
    assert_eq!(c.get(t, now), None);
}
