use super::*;

const H: InfoHash = [1; 20];

fn ann(peer: &str, left: u64, event: Event) -> Announce {
    Announce {
        info_hash: H,
        peer: peer.parse().unwrap(),
        left,
        event,
        numwant: None,
        family: Family::Any,
        seed: Some("192.0.2.1:6881".parse().unwrap()),
    }
}

#[test]
fn unknown_torrents_refused_by_default() {
    let mut s = Swarms::new(SwarmConfig::default());
    let now = Instant::now();
    assert_eq!(
        s.announce(now, &ann("10.0.0.1:1", 5, Event::Started)),
        Err(Refusal::UnknownTorrent)
    );
    assert_eq!(s.scrape(&H), None);
    s.add_known(H);
    let r = s
        .announce(now, &ann("10.0.0.1:1", 5, Event::Started))
        .unwrap();
    assert_eq!(
        r.peers,
        vec!["192.0.2.1:6881".parse().unwrap()],
        "the seed comes first"
    );
    assert_eq!((r.complete, r.incomplete), (1, 1));
}

#[test]
fn peers_exchange_and_stop_and_complete() {
    let mut s = Swarms::new(SwarmConfig::default());
    s.add_known(H);
    let now = Instant::now();
    s.announce(now, &ann("10.0.0.1:1", 5, Event::Started))
        .unwrap();
    let r = s
        .announce(now, &ann("10.0.0.2:2", 5, Event::Started))
        .unwrap();
    assert_eq!(r.peers.len(), 2);
    assert!(r.peers.contains(&"10.0.0.1:1".parse().unwrap()));
    assert!(
        !r.peers.contains(&"10.0.0.2:2".parse().unwrap()),
        "never yourself"
    );
    s.announce(now, &ann("10.0.0.2:2", 0, Event::Completed))
        .unwrap();
    assert_eq!(
        s.scrape(&H),
        Some(ScrapeStats {
            complete: 2,
            downloaded: 1,
            incomplete: 1
        })
    );
    // A completed again does not count twice.
    s.announce(now, &ann("10.0.0.2:2", 0, Event::Completed))
        .unwrap();
    assert_eq!(s.scrape(&H).unwrap().downloaded, 1);
    let r = s
        .announce(now, &ann("10.0.0.1:1", 5, Event::Stopped))
        .unwrap();
    assert!(r.peers.is_empty());
    assert_eq!(s.peers(&H), vec!["10.0.0.2:2".parse().unwrap()]);
}

#[test]
fn numwant_default_max_and_family() {
    let cfg = SwarmConfig {
        default_numwant: 3,
        max_numwant: 5,
        ..SwarmConfig::default()
    };
    let mut s = Swarms::new(cfg);
    s.add_known(H);
    let now = Instant::now();
    for i in 0..10 {
        s.announce(now, &ann(&format!("10.0.0.{i}:1"), 1, Event::Started))
            .unwrap();
    }
    s.announce(now, &ann("[2001:db8::1]:1", 1, Event::Started))
        .unwrap();
    let mut a = ann("10.0.1.1:1", 1, Event::None);
    assert_eq!(s.announce(now, &a).unwrap().peers.len(), 3);
    a.numwant = Some(1000);
    assert_eq!(s.announce(now, &a).unwrap().peers.len(), 5);
    a.numwant = Some(0);
    assert!(s.announce(now, &a).unwrap().peers.is_empty());
    a.numwant = Some(1000);
    a.family = Family::V6;
    a.seed = None;
    assert_eq!(
        s.announce(now, &a).unwrap().peers,
        vec!["[2001:db8::1]:1".parse().unwrap()]
    );
}

#[test]
fn peers_expire_and_caps_hold() {
    let cfg = SwarmConfig {
        peer_timeout: Duration::from_secs(10),
        max_peers_per_swarm: 2,
        allow_unknown: true,
        max_unknown_swarms: 1,
        ..SwarmConfig::default()
    };
    let mut s = Swarms::new(cfg);
    s.add_known(H);
    let t0 = Instant::now();
    for i in 0..5 {
        s.announce(t0, &ann(&format!("10.0.0.{i}:1"), 1, Event::Started))
            .unwrap();
    }
    assert_eq!(s.peers(&H).len(), 2, "capped per swarm");
    // One unknown swarm allowed, the second refused.
    let mut u = ann("10.0.0.9:1", 1, Event::Started);
    u.info_hash = [2; 20];
    s.announce(t0, &u).unwrap();
    u.info_hash = [3; 20];
    assert_eq!(s.announce(t0, &u), Err(Refusal::Full));
    s.expire(t0 + Duration::from_secs(9));
    assert_eq!(s.total_peers(), 3);
    s.expire(t0 + Duration::from_secs(10));
    assert_eq!(s.total_peers(), 0);
    // The emptied unknown swarm is gone and frees its slot; known stays.
    assert_eq!(s.scrape(&[2; 20]), None);
    assert!(s.scrape(&H).is_some());
    assert!(s.announce(t0, &u).is_ok());
}

#[test]
fn seeds_get_only_leechers() {
    let mut s = Swarms::new(SwarmConfig::default());
    s.add_known(H);
    let now = Instant::now();
    s.announce(now, &ann("10.0.0.1:1", 0, Event::Started))
        .unwrap();
    s.announce(now, &ann("10.0.0.2:1", 7, Event::Started))
        .unwrap();
    let mut a = ann("10.0.0.3:1", 0, Event::Started);
    a.seed = None;
    assert_eq!(
        s.announce(now, &a).unwrap().peers,
        vec!["10.0.0.2:1".parse().unwrap()]
    );
}
