//! Tracker protocol parsers, both sides: what a tracker answers us (HTTP
//! announce/scrape bodies, UDP datagrams) and what peers send the embedded
//! tracker (HTTP request heads and queries, UDP requests), plus tracker URLs.
//!
//! Input: `[selector][parser input...]`. Invariants: no panic, and the
//! limits each parser is given hold (peers kept, hashes accepted, bytes
//! consumed).

use ringseed::tracker::proto::{http, udp, InfoHash, TrackerUrl};

const MAX_PEERS: usize = 50;

pub fn check_tracker(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 8 {
        0 => {
            if let Ok(r) = http::parse_announce_body(rest, MAX_PEERS) {
                assert!(r.peers.len() <= MAX_PEERS, "more peers kept than allowed");
            }
        }
        1 => {
            let wanted: [InfoHash; 2] = [[7; 20], [0x61; 20]];
            if let Ok(stats) = http::parse_scrape_body(rest, &wanted) {
                assert!(stats.len() <= wanted.len());
                assert!(
                    stats.iter().all(|(h, _)| wanted.contains(h)),
                    "unasked hash"
                );
            }
        }
        2 => {
            // [action][ipv6][datagram]: transaction id 0x01020304.
            let (Some(&action), Some(&v6)) = (rest.first(), rest.get(1)) else {
                return;
            };
            let dgram = &rest[2..];
            if let Ok(udp::UdpResponse::Announce(a)) = udp::decode_response(
                dgram,
                0x0102_0304,
                u32::from(action % 4),
                v6 & 1 == 1,
                MAX_PEERS,
            ) {
                assert!(a.peers.len() <= MAX_PEERS, "more peers kept than allowed");
            }
        }
        3 => {
            if let Ok(pairs) = http::parse_query(rest) {
                assert!(pairs.len() <= 256, "more query pairs kept than allowed");
            }
        }
        4 => {
            let _ = http::parse_announce_query(rest);
        }
        5 => {
            if let Ok(hashes) = http::parse_scrape_query(rest, 8) {
                assert!(hashes.len() <= 8, "more scrape hashes than allowed");
            }
        }
        6 => {
            let _ = udp::decode_request(rest);
        }
        _ => {
            let _ = TrackerUrl::parse(&String::from_utf8_lossy(rest));
        }
    }
}
