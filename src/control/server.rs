//! A blocking-handler HTTP/1.1 server on hyper.
//!
//! Rooms implement [`Service`] and are mounted in order; the first that
//! returns `Some` answers, and a request nobody claims gets 404. Request
//! bodies are limited to [`HttpServerConfig::max_body`] (413 beyond).
//! When [`HttpServerConfig::token`] is set, every request must carry
//! `Authorization: Bearer <token>` (401 otherwise, compared in constant
//! time).
//!
//! Call order: [`HttpServer::start`] (binds, returns once listening) ->
//! [`HttpServer::local_addr`] -> ... -> [`HttpServer::shutdown`] (stops
//! accepting, lets requests in progress finish for up to a second, joins the
//! thread). Dropping the server shuts it down too.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

/// One request, read whole, as a handler sees it.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    pub method: Method,
    /// The path, percent-encoding untouched (e.g. `/torrents/0123...`).
    pub path: String,
    /// The query string without `?`, if any.
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub remote: SocketAddr,
    /// The address the client reached us at (the connection's local address).
    pub local: SocketAddr,
}

/// A handler's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: Bytes,
    /// Further headers (e.g. `Allow` on a 405); build with [`HttpResponse::with_header`].
    pub headers: Vec<(&'static str, HeaderValue)>,
}

impl HttpResponse {
    /// `value` as JSON.
    pub fn json<T: serde::Serialize + ?Sized>(status: StatusCode, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => Self::bytes(status, "application/json", body),
            Err(e) => Self::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("cannot encode the answer as JSON: {e}"),
            ),
        }
    }

    /// `{"error": message}`: every 4xx/5xx of the control plane has this form.
    pub fn error(status: StatusCode, message: &str) -> Self {
        let body = serde_json::json!({ "error": message }).to_string();
        Self::bytes(status, "application/json", body)
    }

    pub fn text(status: StatusCode, text: impl Into<String>) -> Self {
        Self::bytes(status, "text/plain; charset=utf-8", text.into())
    }

    pub fn bytes(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Self {
        Self {
            status,
            content_type,
            body: body.into(),
            headers: Vec::new(),
        }
    }

    /// 405 with the `Allow` header RFC 9110 asks for.
    pub fn method_not_allowed(allow: &'static str) -> Self {
        Self::error(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("method not allowed here; allowed: {allow}"),
        )
        .with_header("allow", HeaderValue::from_static(allow))
    }

    pub fn with_header(mut self, name: &'static str, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }
}

/// Something that answers some of the server's requests.
pub trait Service: Send + Sync + 'static {
    /// The answer, or `None` when the request is not this service's (the
    /// next one is asked; 404 when nobody answers). Runs on a blocking
    /// thread: it may do file I/O, but should not hold shared locks long.
    fn handle(&self, req: &HttpRequest) -> Option<HttpResponse>;
}

/// Server settings.
#[derive(Debug, Clone)]
pub struct HttpServerConfig {
    /// Port 0 picks a free port (see [`HttpServer::local_addr`]).
    pub listen: SocketAddr,
    /// Required bearer token, if any.
    pub token: Option<String>,
    /// Largest request body in bytes. Default 64 MiB (a `.torrent` of a
    /// very large release with its piece layers fits).
    pub max_body: usize,
    /// Name of the server's thread (and its log lines).
    pub thread_name: String,
    /// A client that has not sent a whole request head within this is
    /// dropped. Default 10 s.
    pub header_timeout: Duration,
    /// Largest request head in bytes (431 beyond). Default 16 KiB.
    pub max_head: usize,
    /// Keep connections open between requests. Default on.
    pub keep_alive: bool,
    /// Connections served at once; more are closed at once. Default 256.
    pub max_connections: usize,
}

impl Default for HttpServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9101)),
            token: None,
            max_body: 64 << 20,
            thread_name: "control-http".into(),
            header_timeout: Duration::from_secs(10),
            max_head: 16 * 1024,
            keep_alive: true,
            max_connections: 256,
        }
    }
}

/// A running server.
pub struct HttpServer {
    local_addr: SocketAddr,
    stop: Option<watch::Sender<bool>>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    services: Vec<Arc<dyn Service>>,
    token: Option<String>,
    max_body: usize,
}

impl HttpServer {
    /// Bind `cfg.listen` and serve `services` on a thread of its own.
    pub fn start(cfg: HttpServerConfig, services: Vec<Arc<dyn Service>>) -> io::Result<Self> {
        let listener = std::net::TcpListener::bind(cfg.listen)?;
        Self::with_listener(listener, cfg, services)
    }

    /// Serve on a listener the caller bound (`cfg.listen` is ignored).
    pub fn with_listener(
        std_listener: std::net::TcpListener,
        cfg: HttpServerConfig,
        services: Vec<Arc<dyn Service>>,
    ) -> io::Result<Self> {
        std_listener.set_nonblocking(true)?;
        let local_addr = std_listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .max_blocking_threads(16)
            .thread_name(format!("{}-blocking", cfg.thread_name))
            .build()?;
        let shared = Arc::new(Shared {
            services,
            token: cfg.token.clone(),
            max_body: cfg.max_body,
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let conn_cfg = ConnConfig {
            header_timeout: cfg.header_timeout,
            max_head: cfg.max_head.max(8192),
            keep_alive: cfg.keep_alive,
            max_connections: cfg.max_connections.max(1),
        };
        let thread = std::thread::Builder::new()
            .name(cfg.thread_name.clone())
            .spawn(move || {
                runtime.block_on(serve(std_listener, shared, stop_rx, conn_cfg));
                // Requests in progress get a moment to finish.
                runtime.shutdown_timeout(Duration::from_secs(1));
            })?;
        Ok(Self {
            local_addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stop accepting and join the server thread.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

#[derive(Clone, Copy)]
struct ConnConfig {
    header_timeout: Duration,
    max_head: usize,
    keep_alive: bool,
    max_connections: usize,
}

async fn serve(
    std_listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    cfg: ConnConfig,
) {
    let listener = match tokio::net::TcpListener::from_std(std_listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("control HTTP server cannot use its socket: {e}");
            return;
        }
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(cfg.max_connections));
    loop {
        let (stream, remote) = tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("control HTTP accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::debug!(%remote, "control HTTP: {} connections already; closing", cfg.max_connections);
            continue; // dropped: closed at once
        };
        let Ok(local) = stream.local_addr() else {
            continue;
        };
        let shared = Arc::clone(&shared);
        let mut conn_stop = stop.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let svc = service_fn(move |req| {
                let shared = Arc::clone(&shared);
                async move { Ok::<_, Infallible>(answer(shared, req, remote, local).await) }
            });
            let conn = http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(cfg.header_timeout)
                .max_buf_size(cfg.max_head)
                .keep_alive(cfg.keep_alive)
                .serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                res = conn.as_mut() => {
                    if let Err(e) = res {
                        tracing::debug!(%remote, "control HTTP connection: {e}");
                    }
                }
                _ = conn_stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
}

async fn answer(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    remote: SocketAddr,
    local: SocketAddr,
) -> Response<Full<Bytes>> {
    if let Some(token) = &shared.token {
        if !authorized(req.headers(), token) {
            let mut resp = to_hyper(HttpResponse::error(
                StatusCode::UNAUTHORIZED,
                "this control API needs `Authorization: Bearer <token>` (the token in --control-token-file)",
            ));
            resp.headers_mut()
                .insert("www-authenticate", HeaderValue::from_static("Bearer"));
            return resp;
        }
    }
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, shared.max_body).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let status = if e
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            };
            return to_hyper(HttpResponse::error(
                status,
                &format!(
                    "cannot read the request body (limit {} bytes): {e}",
                    shared.max_body
                ),
            ));
        }
    };
    let request = HttpRequest {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers,
        body,
        remote,
        local,
    };
    let handled = tokio::task::spawn_blocking(move || {
        shared
            .services
            .iter()
            .find_map(|s| s.handle(&request))
            .unwrap_or_else(|| {
                HttpResponse::error(
                    StatusCode::NOT_FOUND,
                    &format!("no such endpoint: {} {}", request.method, request.path),
                )
            })
    })
    .await;
    to_hyper(handled.unwrap_or_else(|e| {
        tracing::error!("control HTTP handler failed: {e}");
        HttpResponse::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the handler failed; see the server log",
        )
    }))
}

fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let Some(value) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some(given) = value.strip_prefix("Bearer ") else {
        return false;
    };
    constant_time_eq(given.trim().as_bytes(), token.as_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn to_hyper(r: HttpResponse) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(r.body));
    *resp.status_mut() = r.status;
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(r.content_type));
    for (name, value) in r.headers {
        headers.insert(name, value);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    struct Echo;
    impl Service for Echo {
        fn handle(&self, req: &HttpRequest) -> Option<HttpResponse> {
            (req.path == "/echo").then(|| {
                HttpResponse::bytes(StatusCode::OK, "application/octet-stream", req.body.clone())
            })
        }
    }

    fn raw(addr: SocketAddr, request: &str) -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    fn start(token: Option<&str>, max_body: usize) -> HttpServer {
        let cfg = HttpServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            token: token.map(str::to_owned),
            max_body,
            ..HttpServerConfig::default()
        };
        HttpServer::start(cfg, vec![Arc::new(Echo)]).unwrap()
    }

    #[test]
    fn routes_limits_and_tokens() {
        let server = start(None, 16);
        let addr = server.local_addr();
        let ok = raw(
            addr,
            "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
        );
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.ends_with("hello"), "{ok}");
        let missing = raw(
            addr,
            "GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        assert!(missing.contains("no such endpoint: GET /nope"), "{missing}");
        let big = raw(addr, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 17\r\nConnection: close\r\n\r\n01234567890123456");
        assert!(big.starts_with("HTTP/1.1 413"), "{big}");
        server.shutdown();

        let server = start(Some("s3cret"), 1024);
        let addr = server.local_addr();
        let denied = raw(
            addr,
            "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        assert!(denied.starts_with("HTTP/1.1 401"), "{denied}");
        let wrong = raw(addr, "POST /echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cre\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        assert!(wrong.starts_with("HTTP/1.1 401"), "{wrong}");
        let allowed = raw(addr, "POST /echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        assert!(allowed.starts_with("HTTP/1.1 200"), "{allowed}");
        drop(server);
    }

    #[test]
    fn garbage_is_answered_with_400_and_the_server_keeps_serving() {
        let server = start(None, 1024);
        let addr = server.local_addr();
        let bad = raw(addr, "\x00\x01 not http\r\n\r\n");
        assert!(bad.is_empty() || bad.starts_with("HTTP/1.1 400"), "{bad:?}");
        let ok = raw(
            addr,
            "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx",
        );
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    }
}
