//! The Grafana dashboard: generated (never hand-edited), valid, and every
//! metric any panel queries is one the server exports.
//!
//! After changing the generator in `tests/dashboard_support/mod.rs`, rewrite
//! the committed file with `RINGSEED_BLESS=1 cargo test --test dashboard`.

mod dashboard_support;

use std::collections::HashSet;
use std::net::SocketAddr;

use dashboard_support::*;
use ringseed::metrics::MetricsServer;
use serde_json::Value;

fn committed() -> Value {
    let text = std::fs::read_to_string(dashboard_path()).expect("dashboards/ringseed.json");
    serde_json::from_str(&text).expect("dashboards/ringseed.json is JSON")
}

#[test]
fn dashboard_file_is_the_generator_output() {
    let generated = serde_json::to_string_pretty(&generate_dashboard()).unwrap() + "\n";
    if std::env::var_os("RINGSEED_BLESS").is_some() {
        std::fs::write(dashboard_path(), &generated).unwrap();
    }
    let on_disk = std::fs::read_to_string(dashboard_path()).unwrap_or_default();
    assert!(
        on_disk == generated,
        "dashboards/ringseed.json differs from its generator; run `RINGSEED_BLESS=1 cargo test --test dashboard`"
    );
}

#[test]
fn dashboard_is_valid_grafana_json() {
    let d = committed();
    assert_eq!(d["uid"], "ringseed-main");
    assert_eq!(d["schemaVersion"], 39);
    let vars = d["templating"]["list"].as_array().unwrap();
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("variable {name}"))
    };
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    let instance = var("instance");
    assert_eq!(instance["multi"], true);
    assert_eq!(instance["datasource"]["uid"], "${datasource}");
    assert_eq!(
        instance["definition"],
        "label_values(ringseed_build_info, instance)"
    );

    let panels = d["panels"].as_array().unwrap();
    let mut ids = HashSet::new();
    let mut cells = HashSet::new();
    for p in panels {
        let title = p["title"].as_str().unwrap();
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "{title}: duplicate id"
        );
        let g = &p["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_u64().unwrap(),
            g["y"].as_u64().unwrap(),
            g["w"].as_u64().unwrap(),
            g["h"].as_u64().unwrap(),
        );
        assert!(x + w <= 24, "{title}: wider than the grid");
        for cx in x..x + w {
            for cy in y..y + h {
                assert!(
                    cells.insert((cx, cy)),
                    "{title}: overlaps another panel at ({cx},{cy})"
                );
            }
        }
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}: no query");
        let refs: HashSet<_> = targets
            .iter()
            .map(|t| t["refId"].as_str().unwrap())
            .collect();
        assert_eq!(refs.len(), targets.len(), "{title}: duplicate refId");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
        }
    }
    for (title, expr) in panel_queries(&d) {
        let names = metric_names(&expr);
        assert!(
            !names.is_empty(),
            "{title}: `{expr}` queries no ringseed metric"
        );
        // Every selector is filtered by the instance variable, so the
        // dashboard works for one box and for a fleet.
        let selectors = expr.matches("ringseed_").count();
        let filtered = expr.matches(r#"{instance=~"$instance"}"#).count();
        assert_eq!(
            selectors, filtered,
            "{title}: `{expr}` has a selector without the instance filter"
        );
    }
    let kinds: HashSet<_> = panels.iter().map(|p| p["type"].as_str().unwrap()).collect();
    assert!(kinds.contains("heatmap") && kinds.contains("timeseries"));
    assert!(panel_queries(&d)
        .iter()
        .any(|(_, e)| e.contains("histogram_quantile")));
}

#[test]
fn every_queried_metric_is_exported() {
    let load = FakeLoad::new(2);
    let server =
        MetricsServer::start(SocketAddr::from(([127, 0, 0, 1], 0)), load.sources.clone()).unwrap();
    let (status, _, body) = http_get(server.local_addr(), "/metrics").unwrap();
    assert_eq!(status, 200);
    let exported = exposed_series(&body);
    let queries = panel_queries(&committed());
    assert!(queries.len() >= 20, "only {} queries", queries.len());
    let mut missing = Vec::new();
    for (title, expr) in &queries {
        for name in metric_names(expr) {
            if !exported.contains(&name) {
                missing.push(format!("{title}: {name}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "queried but not exported: {missing:#?}\nexported: {exported:#?}"
    );
    server.shutdown();
}

#[test]
fn metric_name_extraction() {
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.9, sum by (le) (rate(ringseed_a_bucket{instance=~"$instance"}[1m]))) / ringseed_b"#
        ),
        vec!["ringseed_a_bucket", "ringseed_b"]
    );
    assert!(metric_names(r#"x{label="ringseed_not_a_metric"} + my_ringseed_x"#).is_empty());
    assert_eq!(
        substitute(r#"a{instance=~"$instance"}[$__rate_interval]"#, "i", "10s"),
        r#"a{instance=~"i"}[10s]"#
    );
    let addr: SocketAddr = "127.0.0.1:9100".parse().unwrap();
    assert_eq!(instance_regex(addr), r"127\\.0\\.0\\.1:9100");
}
