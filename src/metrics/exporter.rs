//! The `/metrics` endpoint: an HTTP/1.1 server on its own thread that
//! reads the shards' counters at scrape time and renders them in the
//! Prometheus text format 0.0.4.
//!
//! Counters and gauges go through `metrics-exporter-prometheus` (a private
//! recorder, never the process-global one, so several servers can live in one
//! process, as in tests). Histograms and the float-valued counters (seconds)
//! are rendered here and appended to its output.
//!
//! The HTTP itself is hyper's, through [`crate::control::HttpServer`].
//! Deliberately not here: keep-alive (every response closes the connection;
//! Prometheus copes), compression, TLS, authentication. Bind it to loopback or
//! a management network.

use std::fmt::Write as _;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper::{Method, StatusCode};

use metrics::{counter, describe_counter, describe_gauge, gauge, Counter, Gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};

use super::histogram::SharedHistograms;
use super::names;
use super::process::{ProcessStats, VerifyStats};
use super::BuildInfo;
use crate::control::{HttpRequest, HttpResponse, HttpServer, HttpServerConfig, Service};
use crate::engine::stats::{CloseKind, HandshakeFailure, RejectReason, ShardStats, UtpDrop};
use crate::storage::watch::DataChangeStats;

/// Everything the exporter reads at scrape time.
#[derive(Clone, Debug)]
pub struct MetricsSources {
    /// One per shard, index = shard number.
    pub shards: Vec<Arc<ShardStats>>,
    pub histograms: SharedHistograms,
    pub verify: Arc<VerifyStats>,
    /// Files changed on disk, leases (`storage::watch`).
    pub data: Arc<DataChangeStats>,
    /// Torrents by state, changes while serving (`control`).
    pub torrents: Arc<super::TorrentCounts>,
    pub build: BuildInfo,
    /// The release ledger's counters, when `serve --ledger` runs one.
    pub ledger: Option<Arc<crate::ledger::node::NodeStats>>,
    /// Torrents being fetched (`crate::fetch`), added as they start.
    pub fetches: Arc<crate::fetch::FetchList>,
}

/// Longest request head we read; anything longer gets 431.
const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// A client that does not send its request (or read the answer) within this
/// time is dropped, so one stuck client delays scrapes by at most this.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// Reads one counter out of a shard's stats.
type ReadStat = fn(&ShardStats) -> u64;
/// Reads one counter out of the data-change stats.
type ReadData = fn(&DataChangeStats) -> u64;

/// Counter and gauge handles of one shard, registered once.
struct ShardHandles {
    counters: Vec<(Counter, ReadStat)>,
    rejected: Vec<Counter>,
    closed: Vec<Counter>,
    handshake_failures: Vec<Counter>,
    utp_dropped: Vec<Counter>,
    /// `transport="tcp"`, `transport="utp"`.
    payload: [Counter; 2],
    connections: [Gauge; 2],
    unchoked: Gauge,
    upload_limit: Gauge,
    throttled: Gauge,
}

fn load(c: &std::sync::atomic::AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// Renders the whole `/metrics` page from [`MetricsSources`].
pub struct Renderer {
    recorder: PrometheusRecorder,
    sources: MetricsSources,
    shards: Vec<ShardHandles>,
    verified: Counter,
    failed: Counter,
    pending: Gauge,
    verify_bytes: Counter,
    /// (counter, reader) pairs of `DataChangeStats`.
    data: Vec<(Counter, ReadData)>,
    files_leased: Gauge,
}

impl Renderer {
    pub fn new(sources: MetricsSources) -> Self {
        let recorder = PrometheusBuilder::new().build_recorder();
        let build = sources.build.clone();
        let (shards, verified, failed, pending, verify_bytes, data, files_leased) =
            metrics::with_local_recorder(&recorder, || {
                describe_all();
                gauge!(names::BUILD_INFO, "version" => build.version, "commit" => build.commit)
                    .set(1.0);
                let shards = (0..sources.shards.len()).map(register_shard).collect();
                (
                    shards,
                    counter!(names::PIECES_VERIFIED),
                    counter!(names::PIECES_FAILED),
                    gauge!(names::PIECES_PENDING),
                    counter!(names::VERIFY_BYTES),
                    data_counters(),
                    gauge!(names::DATA_FILES_LEASED),
                )
            });
        Renderer {
            recorder,
            sources,
            shards,
            verified,
            failed,
            pending,
            verify_bytes,
            data,
            files_leased,
        }
    }

    /// The page as Prometheus scrapes it.
    pub fn render(&self) -> String {
        for (stats, h) in self.sources.shards.iter().zip(&self.shards) {
            for (counter, read) in &h.counters {
                counter.absolute(read(stats));
            }
            for (counter, c) in h.rejected.iter().zip(&stats.rejected_by) {
                counter.absolute(load(c));
            }
            // Rejections counted without a reason show as "other".
            let with_reason: u64 = stats.rejected_by.iter().map(load).sum();
            if let Some(other) = h.rejected.last() {
                other.absolute(load(&stats.rejected).saturating_sub(with_reason));
            }
            for (counter, kind) in h.closed.iter().zip(CloseKind::ALL) {
                counter.absolute(load(stats.closed(kind)));
            }
            for (counter, c) in h.handshake_failures.iter().zip(&stats.handshake_failures) {
                counter.absolute(load(c));
            }
            for (counter, c) in h.utp_dropped.iter().zip(&stats.utp_dropped) {
                counter.absolute(load(c));
            }
            let all = stats.connections.load(Ordering::Relaxed);
            let utp = stats.utp_connections.load(Ordering::Relaxed);
            h.connections[0].set(all.saturating_sub(utp) as f64);
            h.connections[1].set(utp as f64);
            let utp = load(&stats.utp_payload_bytes);
            h.payload[0].absolute(load(&stats.payload_bytes).saturating_sub(utp));
            h.payload[1].absolute(utp);
            h.unchoked
                .set(stats.unchoked.load(Ordering::Relaxed) as f64);
            h.upload_limit.set(load(&stats.upload_limit) as f64);
            h.throttled
                .set(stats.throttled.load(Ordering::Relaxed) as f64);
        }
        let v = &self.sources.verify;
        self.verified.absolute(load(&v.pieces_verified));
        self.failed.absolute(load(&v.pieces_failed));
        self.pending.set(v.pending() as f64);
        self.verify_bytes.absolute(load(&v.bytes));
        for (counter, read) in &self.data {
            counter.absolute(read(&self.sources.data));
        }
        self.files_leased
            .set(load(&self.sources.data.files_leased) as f64);

        let mut out = self.recorder.handle().render();
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        float_counter(
            &mut out,
            names::VERIFY_SECONDS,
            "Seconds spent hashing pieces, summed over verification threads.",
            Some(v.seconds()),
        );
        shard_float_counter(
            &mut out,
            names::UPLOAD_THROTTLE_WAIT_SECONDS,
            "Seconds connections spent waiting for upload tokens (--upload-rate-limit), summed.",
            self.sources
                .shards
                .iter()
                .map(|s| load(&s.throttle_wait_nanos) as f64 / 1e9),
        );
        self.sources.torrents.render(&mut out);
        let p = ProcessStats::read();
        float_counter(
            &mut out,
            names::CPU_SECONDS,
            "User plus system CPU time of the process.",
            p.cpu_seconds,
        );
        plain_gauge(
            &mut out,
            names::RESIDENT_MEMORY_BYTES,
            "Resident set size.",
            p.resident_bytes,
        );
        plain_gauge(
            &mut out,
            names::OPEN_FDS,
            "Open file descriptors.",
            p.open_fds,
        );
        plain_gauge(&mut out, names::THREADS, "OS threads.", p.threads);
        self.sources.histograms.snapshot().render(&mut out);
        if let Some(l) = &self.sources.ledger {
            l.render(&mut out);
        }
        self.sources.fetches.render(&mut out);
        out
    }
}

fn float_counter(out: &mut String, name: &str, help: &str, value: Option<f64>) {
    if let Some(v) = value {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
        );
    }
}

/// A float counter with one sample per shard (`shard` label).
fn shard_float_counter(
    out: &mut String,
    name: &str,
    help: &str,
    values: impl Iterator<Item = f64>,
) {
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} counter\n");
    for (i, v) in values.enumerate() {
        let _ = writeln!(out, "{name}{{{}=\"{i}\"}} {v}", names::SHARD);
    }
}

fn plain_gauge(out: &mut String, name: &str, help: &str, value: Option<u64>) {
    if let Some(v) = value {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n"
        );
    }
}

/// Values of the `transport` label.
const TRANSPORTS: [&str; 2] = ["tcp", "utp"];

fn register_shard(index: usize) -> ShardHandles {
    let shard = index.to_string();
    let c = |name: &'static str| counter!(name, names::SHARD => shard.clone());
    let counters: Vec<(Counter, ReadStat)> = vec![
        (c(names::PROTOCOL_BYTES), |s| load(&s.protocol_bytes)),
        (c(names::BLOCKS_SERVED), |s| load(&s.blocks_served)),
        (c(names::REQUESTS), |s| load(&s.requests)),
        (c(names::REQUESTS_CANCELLED), |s| load(&s.cancelled)),
        (c(names::PEER_REPLIES_DROPPED), |s| load(&s.replies_dropped)),
        (c(names::SENDS), |s| load(&s.sends)),
        (c(names::PARTIAL_SENDS), |s| load(&s.partial_sends)),
        (c(names::COLD_READS), |s| load(&s.cold_reads)),
        (c(names::CONNECTIONS_ACCEPTED), |s| load(&s.accepted)),
        (c(names::ACCEPT_ERRORS), |s| load(&s.accept_errors)),
        (c(names::OPTIMISTIC_UNCHOKES), |s| {
            load(&s.optimistic_unchokes)
        }),
        (c(names::SUPERSEED_OFFERS), |s| load(&s.superseed_offers)),
        (c(names::SUPERSEED_SUGGESTS), |s| {
            load(&s.superseed_suggests)
        }),
        (c(names::UTP_DATAGRAMS), |s| load(&s.utp_datagrams)),
        (c(names::UTP_RESETS_SENT), |s| load(&s.utp_resets_sent)),
        (c(names::UTP_CONNECTIONS_ACCEPTED), |s| {
            load(&s.utp_accepted)
        }),
    ];
    let reason = |name: &'static str, r: &'static str| counter!(name, names::SHARD => shard.clone(), names::REASON => r);
    let mut rejected: Vec<Counter> = RejectReason::ALL
        .iter()
        .map(|r| reason(names::REQUESTS_REJECTED, r.as_str()))
        .collect();
    rejected.push(reason(names::REQUESTS_REJECTED, "other"));
    ShardHandles {
        counters,
        rejected,
        closed: CloseKind::ALL
            .iter()
            .map(|k| reason(names::CONNECTIONS_CLOSED, k.as_str()))
            .collect(),
        handshake_failures: HandshakeFailure::ALL
            .iter()
            .map(|f| reason(names::HANDSHAKE_FAILURES, f.as_str()))
            .collect(),
        utp_dropped: UtpDrop::LABELS
            .iter()
            .map(|r| reason(names::UTP_DATAGRAMS_DROPPED, r))
            .collect(),
        payload: TRANSPORTS.map(|t| {
            counter!(names::PAYLOAD_BYTES, names::SHARD => shard.clone(), names::TRANSPORT => t)
        }),
        connections: TRANSPORTS.map(|t| {
            gauge!(names::CONNECTIONS, names::SHARD => shard.clone(), names::TRANSPORT => t)
        }),
        unchoked: gauge!(names::UNCHOKED_PEERS, names::SHARD => shard.clone()),
        upload_limit: gauge!(names::UPLOAD_LIMIT, names::SHARD => shard.clone()),
        throttled: gauge!(names::UPLOAD_THROTTLED_CONNECTIONS, names::SHARD => shard.clone()),
    }
}

fn data_counters() -> Vec<(Counter, ReadData)> {
    use names::*;
    vec![
        (counter!(DATA_FILES_CHANGED), |d| load(&d.files_changed)),
        (counter!(DATA_PIECES_WITHDRAWN), |d| {
            load(&d.pieces_withdrawn)
        }),
        (counter!(DATA_PIECES_REVERIFIED, "result" => "ok"), |d| {
            load(&d.pieces_reverified_ok)
        }),
        (
            counter!(DATA_PIECES_REVERIFIED, "result" => "failed"),
            |d| load(&d.pieces_reverified_failed),
        ),
        (counter!(DATA_LEASE_BREAKS), |d| load(&d.lease_breaks)),
        (counter!(DATA_FENCES_FORCED), |d| load(&d.fences_forced)),
    ]
}

fn describe_all() {
    use names::*;
    describe_counter!(PAYLOAD_BYTES, "Piece payload bytes handed to the kernel.");
    describe_counter!(PROTOCOL_BYTES, "Non-payload protocol bytes sent.");
    describe_counter!(BLOCKS_SERVED, "Blocks fully handed to the kernel.");
    describe_counter!(REQUESTS, "Block requests received.");
    describe_counter!(REQUESTS_REJECTED, "Block requests rejected, by reason.");
    describe_counter!(REQUESTS_CANCELLED, "Block requests cancelled by the peer.");
    describe_counter!(
        PEER_REPLIES_DROPPED,
        "Replies dropped because the peer was over its byte budget (it does not read)."
    );
    describe_counter!(SENDS, "Send operations completed.");
    describe_counter!(PARTIAL_SENDS, "Sends the kernel completed only in part.");
    describe_counter!(
        COLD_READS,
        "Blocks not in the page cache, read asynchronously first."
    );
    describe_gauge!(CONNECTIONS, "Open peer connections.");
    describe_counter!(CONNECTIONS_ACCEPTED, "Connections accepted.");
    describe_counter!(CONNECTIONS_CLOSED, "Connections closed, by reason.");
    describe_counter!(HANDSHAKE_FAILURES, "Failed handshakes, by reason.");
    describe_counter!(ACCEPT_ERRORS, "accept(2) errors.");
    describe_counter!(
        UTP_DATAGRAMS,
        "Datagrams received on the shard's uTP (UDP) socket."
    );
    describe_counter!(
        UTP_RESETS_SENT,
        "uTP ST_RESETs sent to SYNs that are not served (--utp refuse)."
    );
    describe_counter!(
        UTP_CONNECTIONS_ACCEPTED,
        "uTP connections accepted and served like TCP peers (--utp serve)."
    );
    describe_counter!(
        UTP_DATAGRAMS_DROPPED,
        "uTP datagrams dropped or left unanswered, by reason."
    );
    describe_gauge!(UNCHOKED_PEERS, "Peers currently unchoked.");
    describe_counter!(OPTIMISTIC_UNCHOKES, "Optimistic unchokes performed.");
    describe_counter!(
        SUPERSEED_OFFERS,
        "Pieces offered to super-seeded peers (one have each)."
    );
    describe_counter!(
        SUPERSEED_SUGGESTS,
        "suggest_piece messages sent with super-seed offers."
    );
    describe_gauge!(
        UPLOAD_LIMIT,
        "The box-wide upload cap in bytes per second, on shard 0 (0 on the others); 0 = unlimited."
    );
    describe_gauge!(
        UPLOAD_THROTTLED_CONNECTIONS,
        "Connections waiting for upload tokens."
    );
    describe_counter!(PIECES_VERIFIED, "Pieces that passed their hash check.");
    describe_counter!(PIECES_FAILED, "Pieces that failed their hash check.");
    describe_gauge!(
        PIECES_PENDING,
        "Pieces queued for verification, not checked yet."
    );
    describe_counter!(VERIFY_BYTES, "Bytes hashed by verification.");
    describe_counter!(
        DATA_FILES_CHANGED,
        "Served files found changed on disk (one per burst)."
    );
    describe_counter!(
        DATA_PIECES_WITHDRAWN,
        "Live pieces withdrawn because their file changed."
    );
    describe_counter!(
        DATA_PIECES_REVERIFIED,
        "Withdrawn pieces re-verified, by result."
    );
    describe_gauge!(
        DATA_FILES_LEASED,
        "Served files under a read lease (writers wait until their pieces are withdrawn)."
    );
    describe_counter!(
        DATA_LEASE_BREAKS,
        "Another process opened a served file for writing."
    );
    describe_counter!(
        DATA_FENCES_FORCED,
        "Lease breaks that closed slow peers' connections to let the writer go."
    );
    describe_gauge!(BUILD_INFO, "Always 1; the labels say which build this is.");
}

/// The `/metrics` HTTP server: a [`Renderer`] mounted on the control
/// plane's hyper server (its own address, its own thread).
pub struct MetricsServer {
    http: HttpServer,
}

/// Answers `GET`/`HEAD /metrics` (any query string); 404 elsewhere, 405
/// for other methods on `/metrics`.
struct MetricsService(Renderer);

impl Service for MetricsService {
    fn handle(&self, req: &HttpRequest) -> Option<HttpResponse> {
        if req.path != "/metrics" {
            return Some(HttpResponse::text(
                StatusCode::NOT_FOUND,
                "not found; try /metrics\n",
            ));
        }
        Some(match req.method {
            Method::GET | Method::HEAD => HttpResponse::bytes(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                self.0.render(),
            ),
            _ => HttpResponse::method_not_allowed("GET, HEAD"),
        })
    }
}

impl MetricsServer {
    /// Binds `addr` (port 0 picks a free port; see [`MetricsServer::local_addr`])
    /// and starts serving on a thread named `metrics`.
    pub fn start(addr: SocketAddr, sources: MetricsSources) -> io::Result<MetricsServer> {
        Self::with_listener(TcpListener::bind(addr)?, sources)
    }

    /// Serves on a listener the caller bound.
    pub fn with_listener(listener: TcpListener, sources: MetricsSources) -> io::Result<Self> {
        let cfg = HttpServerConfig {
            thread_name: "metrics".into(),
            header_timeout: IO_TIMEOUT,
            max_head: MAX_REQUEST_HEAD,
            max_body: 0,
            // Prometheus opens a connection per scrape; closing after each
            // answer keeps idle scrapers from holding sockets.
            keep_alive: false,
            ..HttpServerConfig::default()
        };
        let service: Arc<dyn Service> = Arc::new(MetricsService(Renderer::new(sources)));
        Ok(Self {
            http: HttpServer::with_listener(listener, cfg, vec![service])?,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.http.local_addr()
    }

    /// Stops accepting and joins the thread. Dropping the server does the same.
    pub fn shutdown(self) {
        self.http.shutdown();
    }
}
