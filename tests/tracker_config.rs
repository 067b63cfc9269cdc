//! Tracker-related `serve` settings: defaults, flags, TOML, validation.

use std::net::SocketAddr;

use ringseed::cli::ServeArgs;
use ringseed::config::{ServeConfig, TrackerListen};

fn dir_args() -> ServeArgs {
    ServeArgs {
        dir: Some("/srv".into()),
        ..ServeArgs::default()
    }
}

#[test]
fn tracker_defaults_on_in_dir_mode_only() {
    let c = ServeConfig::load(&dir_args()).unwrap();
    assert_eq!(
        c.effective_tracker_listen(),
        Some("0.0.0.0:6969".parse().unwrap())
    );
    assert_eq!(
        c.effective_public_url().as_deref(),
        Some("http://127.0.0.1:6969/announce")
    );
    assert_eq!(c.effective_announce_port(), 6881);
    let pairs = ServeArgs {
        torrents: vec!["a.torrent".into()],
        data: vec!["a".into()],
        ..ServeArgs::default()
    };
    let c = ServeConfig::load(&pairs).unwrap();
    assert_eq!(c.effective_tracker_listen(), None);
    assert_eq!(c.effective_public_url(), None);
}

#[test]
fn tracker_flags_override() {
    let args = ServeArgs {
        tracker_listen: Some("[::]:7000".into()),
        announce_ip: Some("2001:db8::5".into()),
        announce_port: Some(51413),
        trackers: vec![
            "udp://a:1,http://b/announce".into(),
            "http://c/announce".into(),
        ],
        ..dir_args()
    };
    let c = ServeConfig::load(&args).unwrap();
    assert_eq!(
        c.effective_tracker_listen(),
        Some("[::]:7000".parse::<SocketAddr>().unwrap())
    );
    assert_eq!(
        c.effective_public_url().as_deref(),
        Some("http://[2001:db8::5]:7000/announce")
    );
    assert_eq!(c.effective_announce_port(), 51413);
    assert_eq!(
        c.extra_tracker_tiers(),
        vec![
            vec!["udp://a:1".to_owned(), "http://b/announce".to_owned()],
            vec!["http://c/announce".to_owned()]
        ]
    );
    let off = ServeArgs {
        tracker_listen: Some("off".into()),
        ..dir_args()
    };
    let c = ServeConfig::load(&off).unwrap();
    assert_eq!(c.tracker_listen, Some(TrackerListen::Off));
    assert_eq!(c.effective_tracker_listen(), None);
    let public = ServeArgs {
        public_url: Some("udp://tracker.example:6969".into()),
        ..off
    };
    assert_eq!(
        ServeConfig::load(&public)
            .unwrap()
            .effective_public_url()
            .as_deref(),
        Some("udp://tracker.example:6969")
    );
}

#[test]
fn tracker_bad_values_are_named() {
    let cases = [
        (
            ServeArgs {
                tracker_listen: Some("nowhere".into()),
                ..dir_args()
            },
            "--tracker-listen",
        ),
        (
            ServeArgs {
                announce_ip: Some("1.2.3".into()),
                ..dir_args()
            },
            "--announce-ip",
        ),
        (
            ServeArgs {
                announce_port: Some(0),
                ..dir_args()
            },
            "announce_port",
        ),
        (
            ServeArgs {
                trackers: vec!["https://t/announce".into()],
                ..dir_args()
            },
            "https",
        ),
        (
            ServeArgs {
                public_url: Some("t.example".into()),
                ..dir_args()
            },
            "no scheme",
        ),
    ];
    for (args, needle) in cases {
        let msg = format!("{:#}", ServeConfig::load(&args).unwrap_err());
        assert!(msg.contains(needle), "expected {needle:?} in {msg:?}");
    }
}

#[test]
fn tracker_keys_in_toml() {
    let c = ServeConfig::from_toml_str(
        r#"
        dir = "/srv"
        tracker_listen = "127.0.0.1:6970"
        public_url = "http://seed.example:6970/announce"
        announce_ip = "203.0.113.7"
        announce_port = 6000
        trackers = ["udp://t:6969"]
        "#,
    )
    .unwrap();
    assert_eq!(
        c.tracker_listen,
        Some(TrackerListen::Listen("127.0.0.1:6970".parse().unwrap()))
    );
    assert_eq!(c.announce_ip, Some("203.0.113.7".parse().unwrap()));
    let text = toml::to_string(&c).unwrap();
    assert_eq!(ServeConfig::from_toml_str(&text).unwrap(), c);
    assert!(ServeConfig::from_toml_str("tracker_listen = 5").is_err());
}
