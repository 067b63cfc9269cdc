//! Shared by `tests/dashboard.rs` and `tests/prometheus.rs`: the dashboard
//! generator (the committed `dashboards/ringseed.json` is its output), query
//! extraction, a fake load that keeps every metric moving, and small HTTP
//! helpers.
#![allow(dead_code)] // each test crate uses a different part

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ringseed::engine::stats::{CloseKind, HandshakeFailure, RejectReason, ShardStats};
use ringseed::metrics::{
    BuildInfo, MetricsSources, ShardHistograms, SharedHistograms, VerifyStats,
};
use serde_json::{json, Value};

pub fn dashboard_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("dashboards/ringseed.json")
}

// ---------------------------------------------------------------- generator

const DS: &str = "${datasource}";
/// The selector every query uses, so the instance variable filters it.
const I: &str = r#"{instance=~"$instance"}"#;

fn ds() -> Value {
    json!({ "type": "prometheus", "uid": DS })
}

struct Layout {
    next_id: u64,
    x: u64,
    y: u64,
    panels: Vec<Value>,
}

impl Layout {
    fn row(&mut self, title: &str) {
        if self.x != 0 {
            self.x = 0;
            self.y += 8;
        }
        self.panels.push(json!({
            "id": self.next_id, "type": "row", "title": title, "collapsed": false,
            "gridPos": { "x": 0, "y": self.y, "w": 24, "h": 1 }, "panels": [],
        }));
        self.next_id += 1;
        self.y += 1;
    }

    /// A panel of width `w` (24 = full row) and height 8.
    fn panel(&mut self, w: u64, mut panel: Value) {
        if self.x + w > 24 {
            self.x = 0;
            self.y += 8;
        }
        panel["id"] = json!(self.next_id);
        panel["gridPos"] = json!({ "x": self.x, "y": self.y, "w": w, "h": 8 });
        panel["datasource"] = ds();
        self.panels.push(panel);
        self.next_id += 1;
        self.x += w;
    }
}

fn target(ref_id: &str, expr: String, legend: &str) -> Value {
    json!({ "refId": ref_id, "datasource": ds(), "expr": expr, "legendFormat": legend, "range": true })
}

fn timeseries(title: &str, description: &str, unit: &str, targets: Vec<Value>) -> Value {
    json!({
        "type": "timeseries", "title": title, "description": description,
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "custom": { "drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never" },
            },
            "overrides": [],
        },
        "options": {
            "legend": { "displayMode": "list", "placement": "bottom", "showLegend": true },
            "tooltip": { "mode": "multi", "sort": "desc" },
        },
        "targets": targets,
    })
}

fn rate(metric: &str) -> String {
    format!("rate({metric}{I}[$__rate_interval])")
}

fn quantiles(metric: &str) -> Vec<Value> {
    [
        ("A", "0.5", "p50"),
        ("B", "0.9", "p90"),
        ("C", "0.99", "p99"),
        ("D", "0.999", "p99.9"),
    ]
    .iter()
    .map(|(r, q, legend)| {
        target(
            r,
            format!(
                "histogram_quantile({q}, sum by (le) ({}))",
                rate(&format!("{metric}_bucket"))
            ),
            legend,
        )
    })
    .collect()
}

fn by_reason(title: &str, description: &str, metric: &str) -> Value {
    timeseries(
        title,
        description,
        "ops",
        vec![target(
            "A",
            format!("sum by (reason) ({})", rate(metric)),
            "{{reason}}",
        )],
    )
}

/// The dashboard as committed in `dashboards/ringseed.json`.
pub fn generate_dashboard() -> Value {
    let mut l = Layout {
        next_id: 1,
        x: 0,
        y: 0,
        panels: Vec::new(),
    };

    l.row("Throughput");
    l.panel(12, timeseries(
        "Upload throughput",
        "Piece payload and protocol bytes handed to the kernel per second, per instance and in total.",
        "Bps",
        vec![
            target("A", format!("sum by (instance) ({})", rate("ringseed_payload_bytes_total")), "{{instance}} payload"),
            target("B", format!("sum by (instance) ({})", rate("ringseed_protocol_bytes_total")), "{{instance}} protocol"),
            target("C", format!("sum({})", rate("ringseed_payload_bytes_total")), "all payload"),
        ],
    ));
    l.panel(12, timeseries(
        "Upload throughput per shard",
        "Payload bytes per second by shard: one shard far above the others means accepted connections are not balanced.",
        "Bps",
        vec![target("A", format!("sum by (instance, shard) ({})", rate("ringseed_payload_bytes_total")), "{{instance}} shard {{shard}}")],
    ));
    l.panel(12, timeseries(
        "Upload throughput by transport",
        "Payload bytes per second over TCP and over uTP (BEP 29; --utp serve), and the connections of each.",
        "Bps",
        vec![
            target("A", format!("sum by (instance, transport) ({})", rate("ringseed_payload_bytes_total")), "{{instance}} {{transport}}"),
        ],
    ));
    l.panel(
        12,
        timeseries(
            "Connections by transport",
            "Open peer connections over TCP and over uTP.",
            "short",
            vec![target(
                "A",
                format!("sum by (instance, transport) (ringseed_connections{I})"),
                "{{instance}} {{transport}}",
            )],
        ),
    );
    l.panel(
        12,
        timeseries(
            "Blocks and requests",
            "Block requests received, blocks served and requests cancelled per second.",
            "ops",
            vec![
                target(
                    "A",
                    format!("sum by (instance) ({})", rate("ringseed_requests_total")),
                    "{{instance}} requests",
                ),
                target(
                    "B",
                    format!(
                        "sum by (instance) ({})",
                        rate("ringseed_blocks_served_total")
                    ),
                    "{{instance}} served",
                ),
                target(
                    "C",
                    format!(
                        "sum by (instance) ({})",
                        rate("ringseed_requests_cancelled_total")
                    ),
                    "{{instance}} cancelled",
                ),
            ],
        ),
    );
    l.panel(12, timeseries(
        "Sends and page-cache misses",
        "Send operations, sends the kernel took only in part, and blocks that were not in the page cache and had to be read first.",
        "ops",
        vec![
            target("A", format!("sum by (instance) ({})", rate("ringseed_sends_total")), "{{instance}} sends"),
            target("B", format!("sum by (instance) ({})", rate("ringseed_partial_sends_total")), "{{instance}} partial sends"),
            target("C", format!("sum by (instance, shard) ({})", rate("ringseed_cold_reads_total")), "{{instance}} shard {{shard}} cold reads"),
        ],
    ));

    l.row("Connections and choking");
    l.panel(12, timeseries(
        "Connections per shard",
        "Open peer connections by shard; connections stay on the shard that accepted them, so imbalance shows here.",
        "short",
        vec![target("A", format!("sum by (instance, shard) (ringseed_connections{I})"), "{{instance}} shard {{shard}}")],
    ));
    l.panel(
        12,
        timeseries(
            "Accepted connections",
            "New connections and accept(2) errors per second.",
            "ops",
            vec![
                target(
                    "A",
                    format!(
                        "sum by (instance) ({})",
                        rate("ringseed_connections_accepted_total")
                    ),
                    "{{instance}} accepted",
                ),
                target(
                    "B",
                    format!(
                        "sum by (instance) ({})",
                        rate("ringseed_accept_errors_total")
                    ),
                    "{{instance}} accept errors",
                ),
            ],
        ),
    );
    l.panel(
        12,
        timeseries(
            "Unchoked peers",
            "Peers holding an upload slot, by shard.",
            "short",
            vec![target(
                "A",
                format!("ringseed_unchoked_peers{I}"),
                "{{instance}} shard {{shard}}",
            )],
        ),
    );
    l.panel(
        12,
        timeseries(
            "Optimistic unchokes",
            "Optimistic unchokes per second (a newcomer gets a slot).",
            "ops",
            vec![target(
                "A",
                format!(
                    "sum by (instance) ({})",
                    rate("ringseed_optimistic_unchokes_total")
                ),
                "{{instance}}",
            )],
        ),
    );

    l.row("Super-seeding and upload cap");
    l.panel(
        8,
        timeseries(
            "Super-seed offers",
            "Pieces offered to super-seeded peers (one have each) and BEP 6 suggests sent with them, per second. Zero unless super_seed is on.",
            "ops",
            vec![
                target(
                    "A",
                    format!("sum by (instance) ({})", rate("ringseed_superseed_offers_total")),
                    "{{instance}} offers",
                ),
                target(
                    "B",
                    format!("sum by (instance) ({})", rate("ringseed_superseed_suggests_total")),
                    "{{instance}} suggests",
                ),
            ],
        ),
    );
    l.panel(
        8,
        timeseries(
            "Upload against the cap",
            "Payload bytes per second and the box's upload cap (--upload-rate-limit; 0 = unlimited). Piece headers also count against the cap.",
            "Bps",
            vec![
                target(
                    "A",
                    format!("sum by (instance) ({})", rate("ringseed_payload_bytes_total")),
                    "{{instance}} payload",
                ),
                target(
                    "B",
                    format!("sum by (instance) (ringseed_upload_limit_bytes_per_second{I})"),
                    "{{instance}} cap",
                ),
            ],
        ),
    );
    l.panel(
        8,
        timeseries(
            "Throttled connections",
            "Connections waiting for upload tokens now, by shard, and on average over the interval (seconds waited per second).",
            "short",
            vec![
                target(
                    "A",
                    format!("ringseed_upload_throttled_connections{I}"),
                    "{{instance}} shard {{shard}} now",
                ),
                target(
                    "B",
                    format!(
                        "sum by (instance) ({})",
                        rate("ringseed_upload_throttle_wait_seconds_total")
                    ),
                    "{{instance}} average",
                ),
            ],
        ),
    );

    l.row("Latency");
    l.panel(12, timeseries(
        "Request to send latency",
        "From a block request received to the block fully handed to the kernel, over the selected instances.",
        "s",
        quantiles("ringseed_request_to_send_seconds"),
    ));
    l.panel(12, json!({
        "type": "heatmap",
        "title": "Request to send latency heatmap",
        "description": "Requests per latency bucket per interval.",
        "options": {
            "calculate": false,
            "cellGap": 1,
            "color": { "mode": "scheme", "scheme": "Oranges", "steps": 64, "exponent": 0.5, "fill": "dark-orange", "scale": "exponential", "reverse": false },
            "yAxis": { "axisPlacement": "left", "unit": "s", "reverse": false },
            "rowsFrame": { "layout": "auto" },
            "tooltip": { "mode": "single", "yHistogram": true, "showColorScale": false },
            "legend": { "show": true },
            "filterValues": { "le": 1e-9 },
        },
        "fieldConfig": { "defaults": { "custom": { "scaleDistribution": { "type": "linear" } } }, "overrides": [] },
        "targets": [{
            "refId": "A", "datasource": ds(), "format": "heatmap", "legendFormat": "{{le}}", "range": true,
            "expr": format!("sum by (le) (increase(ringseed_request_to_send_seconds_bucket{I}[$__rate_interval]))"),
        }],
    }));
    l.panel(12, timeseries(
        "Handshake to unchoke latency",
        "From a completed handshake to the peer's first unchoke: how long newcomers wait for a slot.",
        "s",
        quantiles("ringseed_handshake_to_unchoke_seconds"),
    ));
    let mut sizes = quantiles("ringseed_send_size_bytes");
    sizes.push(target(
        "E",
        format!(
            "sum({}) / sum({})",
            rate("ringseed_send_size_bytes_sum"),
            rate("ringseed_send_size_bytes_count")
        ),
        "mean",
    ));
    l.panel(
        12,
        timeseries(
            "Send size",
            "Bytes per completed send: small sends mean batching is not working.",
            "bytes",
            sizes,
        ),
    );

    l.row("Rejects and disconnects");
    l.panel(
        8,
        by_reason(
            "Rejected requests by reason",
            "Block requests rejected per second.",
            "ringseed_requests_rejected_total",
        ),
    );
    l.panel(
        8,
        by_reason(
            "Disconnects by reason",
            "Connections closed per second.",
            "ringseed_connections_closed_total",
        ),
    );
    l.panel(
        8,
        by_reason(
            "Handshake failures by reason",
            "Failed handshakes per second.",
            "ringseed_handshake_failures_total",
        ),
    );

    l.row("Data");
    let done = format!(
        "sum by (instance) (ringseed_pieces_verified_total{I}) + sum by (instance) (ringseed_pieces_failed_total{I})"
    );
    l.panel(
        8,
        timeseries(
            "Verification progress",
            "Share of the scheduled pieces that have been checked, and pieces still waiting.",
            "percentunit",
            vec![target(
                "A",
                format!("({done}) / ({done} + sum by (instance) (ringseed_pieces_pending{I}))"),
                "{{instance}} checked",
            )],
        ),
    );
    l.panel(
        8,
        timeseries(
            "Verification throughput",
            "Bytes hashed per second now, and the per-thread hash rate over the process's life (bytes / thread-seconds; verification mostly runs at start-up, so a rate over a short window is often 0/0).",
            "Bps",
            vec![
                target(
                    "A",
                    format!(
                        "sum by (instance) ({})",
                        rate("ringseed_verify_bytes_total")
                    ),
                    "{{instance}} total",
                ),
                target(
                    "B",
                    format!(
                        "sum by (instance) (ringseed_verify_bytes_total{I}) / sum by (instance) (ringseed_verify_seconds_total{I} > 0)"
                    ),
                    "{{instance}} per thread",
                ),
            ],
        ),
    );
    l.panel(8, timeseries(
        "Pieces failed verification",
        "Pieces whose hash did not match: they are never served. Nonzero means damaged or changed data.",
        "short",
        vec![
            target("A", format!("sum by (instance) (ringseed_pieces_failed_total{I})"), "{{instance}} failed"),
            target("B", format!("sum by (instance) (ringseed_pieces_pending{I})"), "{{instance}} pending"),
        ],
    ));
    l.panel(12, timeseries(
        "Files changed on disk",
        "Pieces withdrawn because their file changed, and re-verified (ok: live again). Lease breaks: another process opened a served file for writing (it waits until the pieces are withdrawn); forced: slow peers' connections closed to let it go.",
        "short",
        vec![
            target("A", format!("sum by (instance) (increase(ringseed_data_pieces_withdrawn_total{I}[$__rate_interval]))"), "{{instance}} withdrawn"),
            target("B", format!("sum by (instance, result) (increase(ringseed_data_pieces_reverified_total{I}[$__rate_interval]))"), "{{instance}} re-verified {{result}}"),
            target("C", format!("sum by (instance) (increase(ringseed_data_lease_breaks_total{I}[$__rate_interval]))"), "{{instance}} lease breaks"),
            target("D", format!("sum by (instance) (increase(ringseed_data_fences_forced_total{I}[$__rate_interval]))"), "{{instance}} forced"),
        ],
    ));
    l.panel(12, timeseries(
        "Files under a read lease",
        "Served files whose writers wait for ringseed to withdraw their pieces first. Fewer than the files served means some are watched by inotify alone (see the log).",
        "short",
        vec![target("A", format!("sum by (instance) (ringseed_data_files_leased{I})"), "{{instance}} leased")],
    ));
    l.panel(12, timeseries(
        "Torrents",
        "Torrents by state: verifying (being created or verified, not served yet), serving, draining (removed: no new peers, its peers being closed).",
        "short",
        vec![target("A", format!("sum by (instance, state) (ringseed_torrents{I})"), "{{instance}} {{state}}")],
    ));
    l.panel(12, timeseries(
        "Torrent changes while serving",
        "Torrents added, removed and replaced (new content under a served DIR name) without a restart: the served DIR and the control API.",
        "short",
        vec![target("A", format!("sum by (instance, kind) (increase(ringseed_torrent_changes_total{I}[$__rate_interval]))"), "{{instance}} {{kind}}")],
    ));

    l.row("Fetching");
    l.panel(8, timeseries(
        "Fetch progress",
        "Verified pieces of each torrent being fetched (fetch, then seed), and 1 once complete. An edge box of a fleet climbs to the torrent's piece count.",
        "short",
        vec![
            target("A", format!("sum by (instance, torrent) (ringseed_fetch_pieces_have{I})"), "{{instance}} {{torrent}}"),
        ],
    ));
    l.panel(8, timeseries(
        "Fetch throughput",
        "Requested payload received by fetches, and payload wasted on endgame duplicates.",
        "Bps",
        vec![
            target("A", format!("sum by (instance) (rate(ringseed_fetch_payload_bytes_total{I}[$__rate_interval]))"), "{{instance}} received"),
            target("B", format!("sum by (instance) (rate(ringseed_fetch_wasted_blocks_total{I}[$__rate_interval])) * 16384"), "{{instance}} wasted (approx.)"),
        ],
    ));
    l.panel(8, timeseries(
        "Fetch: bad peers",
        "Fetched pieces that failed their hash check, and peers banned for it (smart ban). Nonzero means a peer sends wrong data.",
        "short",
        vec![
            target("A", format!("sum by (instance) (ringseed_fetch_hash_failures_total{I})"), "{{instance}} hash failures"),
            target("B", format!("sum by (instance) (ringseed_fetch_peers_banned_total{I})"), "{{instance}} peers banned"),
        ],
    ));

    l.row("Release ledger");
    l.panel(8, timeseries(
        "Ledger height",
        "Blocks in each box's release ledger. Boxes of one fleet should agree within a few seconds of a publish.",
        "short",
        vec![
            target("A", format!("ringseed_ledger_height{I}"), "{{instance}} blocks"),
            target("B", format!("ringseed_ledger_releases{I}"), "{{instance}} releases"),
        ],
    ));
    l.panel(8, timeseries(
        "Ledger equivocations",
        "Conflicting blocks signed by the publisher, detected or learnt by gossip. Any nonzero value means the publisher key signed two histories: investigate, the ledger accepts no further block.",
        "short",
        vec![target("A", format!("ringseed_ledger_equivocations_total{I}"), "{{instance}}")],
    ));
    l.panel(8, by_reason(
        "Ledger inputs refused",
        "Blocks, checkpoints and proofs refused, by reason (bad_signature, root_mismatch, not_extending_head, flood, ...).",
        "ringseed_ledger_rejects_total",
    ));

    l.row("Process");
    l.panel(
        8,
        timeseries(
            "Resident memory",
            "Resident set size.",
            "bytes",
            vec![target(
                "A",
                format!("ringseed_process_resident_memory_bytes{I}"),
                "{{instance}}",
            )],
        ),
    );
    l.panel(
        8,
        timeseries(
            "Open fds and threads",
            "Open file descriptors (connections, torrent files, rings) and OS threads.",
            "short",
            vec![
                target(
                    "A",
                    format!("ringseed_process_open_fds{I}"),
                    "{{instance}} fds",
                ),
                target(
                    "B",
                    format!("ringseed_process_threads{I}"),
                    "{{instance}} threads",
                ),
            ],
        ),
    );
    l.panel(
        8,
        timeseries(
            "CPU",
            "CPU cores in use, and CPU seconds per GiB of payload served.",
            "short",
            vec![
                target(
                    "A",
                    format!(
                        "sum by (instance) ({})",
                        rate("ringseed_process_cpu_seconds_total")
                    ),
                    "{{instance}} cores",
                ),
                target(
                    "B",
                    format!(
                        "sum by (instance) ({}) / (sum by (instance) ({}) / 1073741824)",
                        rate("ringseed_process_cpu_seconds_total"),
                        rate("ringseed_payload_bytes_total")
                    ),
                    "{{instance}} CPU s per GiB",
                ),
            ],
        ),
    );
    l.panel(24, json!({
        "type": "table",
        "title": "Builds",
        "description": "Version and git commit of each instance.",
        "fieldConfig": { "defaults": {}, "overrides": [] },
        "options": { "showHeader": true },
        "transformations": [{ "id": "organize", "options": { "excludeByName": { "Time": true, "Value": true, "__name__": true } } }],
        "targets": [{
            "refId": "A", "datasource": ds(), "expr": format!("ringseed_build_info{I}"),
            "format": "table", "instant": true, "range": false,
        }],
    }));

    json!({
        "uid": "ringseed-main",
        "title": "ringseed",
        "description": "ringseed BitTorrent seed boxes: throughput, connections, latency, rejects, verification, process.",
        "tags": ["ringseed", "bittorrent"],
        "editable": true,
        "graphTooltip": 1,
        "refresh": "10s",
        "schemaVersion": 39,
        "version": 1,
        "time": { "from": "now-1h", "to": "now" },
        "timepicker": {},
        "timezone": "",
        "fiscalYearStartMonth": 0,
        "liveNow": false,
        "links": [],
        "annotations": { "list": [{
            "builtIn": 1, "datasource": { "type": "grafana", "uid": "-- Grafana --" }, "enable": true,
            "hide": true, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard",
        }] },
        "templating": { "list": [
            {
                "name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
                "current": {}, "hide": 0, "includeAll": false, "multi": false, "options": [], "refresh": 1,
                "regex": "", "skipUrlSync": false,
            },
            {
                "name": "instance", "label": "Instance", "type": "query", "datasource": ds(),
                "definition": "label_values(ringseed_build_info, instance)",
                "query": { "query": "label_values(ringseed_build_info, instance)", "refId": "PrometheusVariableQueryEditor-VariableQuery", "qryType": 1 },
                "current": {}, "hide": 0, "includeAll": true, "allValue": ".*", "multi": true, "options": [],
                "refresh": 2, "regex": "", "skipUrlSync": false, "sort": 1,
            },
        ] },
        "panels": l.panels,
    })
}

// ---------------------------------------------------------------- queries

/// (panel title, PromQL) for every query target of every panel, including
/// panels nested in collapsed rows.
pub fn panel_queries(dashboard: &Value) -> Vec<(String, String)> {
    fn walk(panels: &Value, out: &mut Vec<(String, String)>) {
        for p in panels.as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or("").to_string();
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = t["expr"].as_str() {
                    out.push((title.clone(), expr.to_string()));
                }
            }
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// Metric names (`ringseed_*`) a PromQL expression selects: identifiers
/// outside string literals that start with `ringseed_`.
pub fn metric_names(expr: &str) -> Vec<String> {
    let b = expr.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let mut names = Vec::new();
    let mut in_string = false;
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'"' && (i == 0 || b[i - 1] != b'\\') {
            in_string = !in_string;
        } else if !in_string && (i == 0 || !ident(b[i - 1])) && b[i..].starts_with(b"ringseed_") {
            let start = i;
            while i < b.len() && ident(b[i]) {
                i += 1;
            }
            names.push(expr[start..i].to_string());
            continue;
        }
        i += 1;
    }
    names
}

/// Fills in Grafana's variables the way Grafana would for one instance.
pub fn substitute(expr: &str, instance_regex: &str, rate_interval: &str) -> String {
    expr.replace("${instance}", instance_regex)
        .replace("$instance", instance_regex)
        .replace("$__rate_interval", rate_interval)
}

/// `127.0.0.1:9100` as a PromQL-string regex: `127\\.0\\.0\\.1:9100`.
pub fn instance_regex(addr: SocketAddr) -> String {
    addr.to_string().replace('.', r"\\.")
}

// ---------------------------------------------------------------- fake load

/// Fake shards whose counters and histograms keep moving, as a server under
/// load would make them.
pub struct FakeLoad {
    pub sources: MetricsSources,
    recorders: Vec<ShardHistograms>,
    step: u64,
}

impl FakeLoad {
    pub fn new(shards: usize) -> Self {
        let histograms = SharedHistograms::new(shards);
        let recorders = (0..shards)
            .map(|i| histograms.for_shard(i).unwrap())
            .collect();
        let sources = MetricsSources {
            shards: (0..shards)
                .map(|_| Arc::new(ShardStats::default()))
                .collect(),
            histograms,
            verify: Arc::new(VerifyStats::default()),
            data: Default::default(),
            torrents: Default::default(),
            build: BuildInfo::current(),
            ledger: Some(Default::default()),
            fetches: {
                let l = ringseed::fetch::FetchList::default();
                l.add(
                    "release.bin",
                    Arc::new(ringseed::fetch::FetchStats::default()),
                );
                Arc::new(l)
            },
        };
        sources.verify.queue(1_000_000);
        let mut load = FakeLoad {
            sources,
            recorders,
            step: 0,
        };
        load.step();
        load
    }

    /// One tick of fake activity: every counter moves, every histogram gets
    /// samples, and the shards publish.
    pub fn step(&mut self) {
        self.step += 1;
        let k = self.step;
        for (i, s) in self.sources.shards.iter().enumerate() {
            let i = i as u64 + 1;
            let add = ShardStats::add;
            add(&s.payload_bytes, 16_384 * 64 * i);
            add(&s.protocol_bytes, 13 * 64 * i + 68);
            add(&s.blocks_served, 64 * i);
            add(&s.requests, 70 * i);
            add(&s.cancelled, i);
            add(&s.cold_reads, i);
            add(&s.sends, 4 * i);
            add(&s.partial_sends, 1);
            add(&s.accepted, i);
            add(&s.accept_errors, 1);
            add(&s.optimistic_unchokes, 1);
            add(&s.superseed_offers, 3 * i);
            add(&s.superseed_suggests, 2 * i);
            add(&s.throttle_wait_nanos, 250_000_000 * i);
            s.upload_limit.store(2_000_000, Ordering::Relaxed);
            s.throttled.store((k % 4) as i64, Ordering::Relaxed);
            for kind in CloseKind::ALL {
                add(s.closed(kind), 1);
            }
            for reason in RejectReason::ALL {
                s.reject(reason);
            }
            add(&s.rejected, 1); // one without a reason: "other"
            for f in HandshakeFailure::ALL {
                s.handshake_failed(f);
            }
            s.connections
                .store((10 * i + k % 5) as i64, Ordering::Relaxed);
            s.unchoked.store((4 * i + k % 3) as i64, Ordering::Relaxed);
        }
        let v = &self.sources.verify;
        v.record_piece(true, 1 << 20, Duration::from_micros(550));
        if k % 3 == 0 {
            v.record_piece(false, 1 << 20, Duration::from_micros(540));
        }
        for (i, h) in self.recorders.iter_mut().enumerate() {
            for j in 0..50u64 {
                let x = (k * 7919 + j * 104_729 + i as u64 * 13) % 20_000;
                h.record_request_to_send(Duration::from_micros(20 + x * (1 + j % 4)));
                h.record_handshake_to_unchoke(Duration::from_micros(500 + x * 50));
                h.record_send_size(16_397 * (1 + j % 16));
            }
            h.publish();
        }
    }
}

// ---------------------------------------------------------------- HTTP

/// A plain HTTP/1.1 GET: (status code, head, body).
pub fn http_get(addr: SocketAddr, path_and_query: &str) -> std::io::Result<(u16, String, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, head.to_string(), body))
}

/// Decodes a chunked body (Prometheus's API answers large results chunked).
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size =
            usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].strip_prefix("\r\n").unwrap_or(&after[size..]);
    }
    out
}

/// Series names in a Prometheus text exposition (`name{...} value` lines).
pub fn exposed_series(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
