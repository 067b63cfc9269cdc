//! HTTP tracker protocol (BEP 3, compact peers BEP 23, IPv6 BEP 7, scrape
//! BEP 48): request URLs, minimal HTTP/1.x framing, bencoded bodies.
//!
//! Client side: [`announce_target`] / [`scrape_target`] build the request
//! target, [`request_head`] the bytes to send, [`split_response`] checks the
//! status line and finds the body, [`parse_announce_body`] /
//! [`parse_scrape_body`] decode it. Server side (the HTTP framing is
//! hyper's, see `tracker::server`): [`parse_announce_query`] /
//! [`parse_scrape_query`], then [`encode_announce_body`],
//! [`encode_scrape_body`], [`encode_failure_body`].
//!
//! Bodies are decoded with [`crate::bencode`], which accepts only canonical
//! bencode (sorted keys); every tracker we know emits that.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use super::{
    decode_peers_v4, decode_peers_v6, encode_peer, tracker_text, AnnounceRequest, AnnounceResponse,
    Event, InfoHash, ScrapeStats, MAX_PEERS_PER_RESPONSE,
};
use crate::bencode::{self, DictBuilder, Value};

/// Largest response body accepted from a tracker.
pub const MAX_BODY: usize = 1 << 20;
/// Largest response or request head (status line and headers).
pub const MAX_HEAD: usize = 16 * 1024;

/// Why a tracker's HTTP response is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("tracker response has no complete HTTP head (within {MAX_HEAD} bytes)")]
    IncompleteHead,
    #[error("tracker response status line is malformed: {line:?}")]
    BadStatusLine { line: String },
    #[error("tracker answered HTTP {status} {reason:?}")]
    Status { status: u16, reason: String },
    #[error("tracker response body is {len} bytes, over the {MAX_BODY}-byte limit")]
    BodyTooLarge { len: usize },
    #[error("tracker response is truncated: Content-Length {expected}, got {got} bytes")]
    Truncated { expected: usize, got: usize },
    #[error("tracker response is not bencode")]
    Bencode {
        #[source]
        source: bencode::DecodeError,
    },
    #[error("tracker response: {0}")]
    Field(String),
    /// The tracker refused the announce (`failure reason`).
    #[error("tracker failure: {0}")]
    Failure(String),
}

fn percent_encode_into(out: &mut String, bytes: &[u8]) {
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// Percent-encode raw bytes (everything but RFC 3986 unreserved).
pub fn percent_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    percent_encode_into(&mut out, bytes);
    out
}

/// Decode `%XX` escapes and `+` (as space); `None` on a broken escape.
pub fn percent_decode(input: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'%' => {
                let hex = input.get(i + 1..i + 3)?;
                let s = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(s, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

/// The request target for an announce: `path_and_query` of the tracker URL
/// (which may already carry a query, e.g. a passkey) plus our parameters.
pub fn announce_target(
    path_and_query: &str,
    req: &AnnounceRequest,
    tracker_id: Option<&[u8]>,
) -> String {
    let mut t = String::with_capacity(path_and_query.len() + 256);
    t.push_str(path_and_query);
    t.push(if path_and_query.contains('?') {
        '&'
    } else {
        '?'
    });
    t.push_str("info_hash=");
    percent_encode_into(&mut t, &req.info_hash);
    t.push_str("&peer_id=");
    percent_encode_into(&mut t, &req.peer_id);
    let _ = write!(
        t,
        "&port={}&uploaded={}&downloaded={}&left={}&compact=1&key={:08X}",
        req.port, req.uploaded, req.downloaded, req.left, req.key
    );
    if let Some(n) = req.numwant {
        let _ = write!(t, "&numwant={n}");
    }
    if let Some(event) = req.event.as_http() {
        let _ = write!(t, "&event={event}");
    }
    match req.ip {
        Some(std::net::IpAddr::V4(ip)) => {
            let _ = write!(t, "&ip={ip}");
        }
        Some(std::net::IpAddr::V6(ip)) => {
            t.push_str("&ipv6=");
            percent_encode_into(&mut t, ip.to_string().as_bytes());
        }
        None => {}
    }
    if let Some(id) = tracker_id {
        t.push_str("&trackerid=");
        percent_encode_into(&mut t, id);
    }
    t
}

/// The scrape target for an announce path (BEP 48): the last path segment
/// must start with `announce`, which becomes `scrape`. `None` if the
/// tracker cannot scrape.
pub fn scrape_target(path_and_query: &str, info_hashes: &[InfoHash]) -> Option<String> {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let slash = path.rfind('/')?;
    let last = &path[slash + 1..];
    let rest = last.strip_prefix("announce")?;
    let mut t = format!("{}scrape{rest}", &path[..=slash]);
    let mut sep = '?';
    if let Some(q) = query {
        t.push('?');
        t.push_str(q);
        sep = '&';
    }
    for h in info_hashes {
        t.push(sep);
        sep = '&';
        t.push_str("info_hash=");
        percent_encode_into(&mut t, h);
    }
    Some(t)
}

/// An HTTP/1.0 GET (1.0 so the answer is never chunked) for `target`.
pub fn request_head(host: &str, port: u16, target: &str) -> Vec<u8> {
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    format!(
        "GET {target} HTTP/1.0\r\nHost: {host}:{port}\r\nUser-Agent: ringseed/{}\r\n\
         Accept-Encoding: identity\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    )
    .into_bytes()
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Check a complete response (read until the server closed) and return its
/// body. Non-200 statuses are errors; `Content-Length`, when present, must
/// be met (extra bytes are ignored).
pub fn split_response(buf: &[u8]) -> Result<&[u8], HttpError> {
    let head_end =
        find_head_end(&buf[..buf.len().min(MAX_HEAD)]).ok_or(HttpError::IncompleteHead)?;
    let head = &buf[..head_end];
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let status_line = lines.next().unwrap_or_default();
    let bad = || HttpError::BadStatusLine {
        line: tracker_text(status_line),
    };
    let mut parts = status_line.splitn(3, |&b| b == b' ');
    let version = parts.next().ok_or_else(bad)?;
    if !version.starts_with(b"HTTP/1.") {
        return Err(bad());
    }
    let status: u16 = std::str::from_utf8(parts.next().ok_or_else(bad)?)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    if status != 200 {
        return Err(HttpError::Status {
            status,
            reason: tracker_text(parts.next().unwrap_or_default()),
        });
    }
    let mut content_length = None;
    for line in lines {
        if let Some((name, value)) = line.split_once_byte(b':') {
            if name.eq_ignore_ascii_case(b"content-length") {
                content_length = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.trim().parse::<usize>().ok());
            }
        }
    }
    let body = &buf[head_end..];
    match content_length {
        Some(n) if n > MAX_BODY => Err(HttpError::BodyTooLarge { len: n }),
        Some(n) if n > body.len() => Err(HttpError::Truncated {
            expected: n,
            got: body.len(),
        }),
        Some(n) => Ok(&body[..n]),
        None if body.len() > MAX_BODY => Err(HttpError::BodyTooLarge { len: body.len() }),
        None => Ok(body),
    }
}

trait SplitOnce {
    fn split_once_byte(&self, sep: u8) -> Option<(&[u8], &[u8])>;
}

impl SplitOnce for [u8] {
    fn split_once_byte(&self, sep: u8) -> Option<(&[u8], &[u8])> {
        let i = self.iter().position(|&b| b == sep)?;
        Some((&self[..i], &self[i + 1..]))
    }
}

fn field_err(msg: impl Into<String>) -> HttpError {
    HttpError::Field(msg.into())
}

fn opt_u32(dict: &Value<'_>, key: &str) -> Result<Option<u32>, HttpError> {
    match dict.get(key.as_bytes()) {
        None => Ok(None),
        Some(v) => match v.as_int() {
            Some(n) => Ok(Some(u32::try_from(n.max(0)).unwrap_or(u32::MAX))),
            None => Err(field_err(format!(
                "`{key}` is a {}, not an integer",
                v.type_name()
            ))),
        },
    }
}

/// Decode an announce response body. `failure reason` becomes
/// [`HttpError::Failure`]; at most `max_peers` peers are kept (extra ones
/// are ignored), capped by [`MAX_PEERS_PER_RESPONSE`].
pub fn parse_announce_body(body: &[u8], max_peers: usize) -> Result<AnnounceResponse, HttpError> {
    let max_peers = max_peers.min(MAX_PEERS_PER_RESPONSE);
    if body.len() > MAX_BODY {
        return Err(HttpError::BodyTooLarge { len: body.len() });
    }
    let root = bencode::decode(body).map_err(|source| HttpError::Bencode { source })?;
    if root.as_dict().is_none() {
        return Err(field_err(format!(
            "top level is a {}, not a dictionary",
            root.type_name()
        )));
    }
    if let Some(reason) = root.get(b"failure reason") {
        let text = reason
            .as_bytes()
            .map_or_else(|| "(not a string)".to_owned(), tracker_text);
        return Err(HttpError::Failure(text));
    }
    let interval = opt_u32(&root, "interval")?.ok_or_else(|| field_err("no `interval`"))?;
    let mut resp = AnnounceResponse {
        interval: Duration::from_secs(interval.into()),
        min_interval: opt_u32(&root, "min interval")?.map(|s| Duration::from_secs(s.into())),
        tracker_id: root
            .get(b"tracker id")
            .and_then(|v| v.as_bytes())
            .map(|b| b[..b.len().min(super::MAX_MESSAGE_LEN)].to_vec()),
        complete: opt_u32(&root, "complete")?,
        incomplete: opt_u32(&root, "incomplete")?,
        warning: root
            .get(b"warning message")
            .and_then(|v| v.as_bytes())
            .map(tracker_text),
        peers: Vec::new(),
    };
    match root.get(b"peers").map(|p| &p.value) {
        None => {}
        Some(Value::Bytes(b)) => decode_peers_v4(b, max_peers, &mut resp.peers)
            .map_err(|len| field_err(format!("`peers` is {len} bytes, not a multiple of 6")))?,
        Some(Value::List(items)) => {
            for item in items {
                if resp.peers.len() >= max_peers {
                    break;
                }
                let ip = item
                    .get(b"ip")
                    .and_then(|v| v.as_bytes())
                    .and_then(|b| std::str::from_utf8(b).ok())
                    .and_then(|s| s.parse::<std::net::IpAddr>().ok());
                let port = item
                    .get(b"port")
                    .and_then(|v| v.as_int())
                    .and_then(|p| u16::try_from(p).ok());
                // Entries with a hostname or junk are skipped, not fatal.
                if let (Some(ip), Some(port)) = (ip, port) {
                    resp.peers.push(SocketAddr::new(ip, port));
                }
            }
        }
        Some(other) => {
            return Err(field_err(format!("`peers` is a {}", other.type_name())));
        }
    }
    match root.get(b"peers6").map(|p| &p.value) {
        None => {}
        Some(Value::Bytes(b)) => decode_peers_v6(b, max_peers, &mut resp.peers)
            .map_err(|len| field_err(format!("`peers6` is {len} bytes, not a multiple of 18")))?,
        Some(other) => return Err(field_err(format!("`peers6` is a {}", other.type_name()))),
    }
    Ok(resp)
}

/// Decode a scrape body: the stats of each requested hash the tracker
/// reported (others are left out).
pub fn parse_scrape_body(
    body: &[u8],
    wanted: &[InfoHash],
) -> Result<Vec<(InfoHash, ScrapeStats)>, HttpError> {
    let root = bencode::decode(body).map_err(|source| HttpError::Bencode { source })?;
    if let Some(reason) = root.get(b"failure reason") {
        let text = reason
            .as_bytes()
            .map_or_else(|| "(not a string)".to_owned(), tracker_text);
        return Err(HttpError::Failure(text));
    }
    let files = root
        .get(b"files")
        .filter(|f| f.as_dict().is_some())
        .ok_or_else(|| field_err("scrape response has no `files` dictionary"))?;
    let mut out = Vec::new();
    for hash in wanted {
        if let Some(entry) = files.get(hash) {
            out.push((
                *hash,
                ScrapeStats {
                    complete: opt_u32(entry, "complete")?.unwrap_or(0),
                    downloaded: opt_u32(entry, "downloaded")?.unwrap_or(0),
                    incomplete: opt_u32(entry, "incomplete")?.unwrap_or(0),
                },
            ));
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------- server

/// Why a request to the embedded tracker is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("invalid or missing parameter `{0}`")]
    Param(&'static str),
}

/// An announce as the embedded tracker sees it (only what it uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAnnounce {
    pub info_hash: InfoHash,
    pub port: u16,
    pub left: u64,
    pub event: Event,
    pub numwant: Option<u32>,
    /// `compact=0` asked for the dictionary list.
    pub compact: bool,
}

/// Percent-decoded `(key, value)` pairs of a query, in order.
pub type QueryPairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Decode `key=value&...` pairs, percent-decoded; broken pairs are errors.
pub fn parse_query(query: &[u8]) -> Result<QueryPairs, RequestError> {
    let mut out = Vec::new();
    for pair in query.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once_byte(b'=').unwrap_or((pair, b""));
        let k = percent_decode(k).ok_or(RequestError::Param("query"))?;
        let v = percent_decode(v).ok_or(RequestError::Param("query"))?;
        out.push((k, v));
        if out.len() > 256 {
            return Err(RequestError::Param("query"));
        }
    }
    Ok(out)
}

fn num<T: std::str::FromStr>(v: &[u8], name: &'static str) -> Result<T, RequestError> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(RequestError::Param(name))
}

/// The announce parameters of a query.
pub fn parse_announce_query(query: &[u8]) -> Result<ServerAnnounce, RequestError> {
    let mut info_hash = None;
    let mut port = None;
    let mut left = 0;
    let mut event = Event::None;
    let mut numwant = None;
    let mut compact = true;
    for (k, v) in parse_query(query)? {
        match k.as_slice() {
            b"info_hash" => {
                info_hash = Some(
                    InfoHash::try_from(v.as_slice())
                        .map_err(|_| RequestError::Param("info_hash"))?,
                )
            }
            b"port" => port = Some(num::<u16>(&v, "port")?),
            b"left" => left = num(&v, "left")?,
            b"event" => event = Event::from_http(&v).ok_or(RequestError::Param("event"))?,
            b"numwant" | b"num_want" => {
                numwant = Some(num::<i64>(&v, "numwant")?.clamp(0, u32::MAX.into()) as u32)
            }
            b"compact" => compact = v.as_slice() != b"0",
            _ => {}
        }
    }
    Ok(ServerAnnounce {
        info_hash: info_hash.ok_or(RequestError::Param("info_hash"))?,
        port: port
            .filter(|p| *p != 0)
            .ok_or(RequestError::Param("port"))?,
        left,
        event,
        numwant,
        compact,
    })
}

/// The info-hashes of a scrape query (at most `max`).
pub fn parse_scrape_query(query: &[u8], max: usize) -> Result<Vec<InfoHash>, RequestError> {
    let mut out = Vec::new();
    for (k, v) in parse_query(query)? {
        if k == b"info_hash" {
            out.push(
                InfoHash::try_from(v.as_slice()).map_err(|_| RequestError::Param("info_hash"))?,
            );
            if out.len() > max {
                return Err(RequestError::Param("info_hash"));
            }
        }
    }
    Ok(out)
}

/// What the embedded tracker answers to an announce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerResponse {
    pub interval: Duration,
    pub min_interval: Duration,
    pub complete: u32,
    pub incomplete: u32,
    pub peers: Vec<SocketAddr>,
}

/// Encode an announce response: compact `peers` and `peers6`, or (for
/// `compact=0`) a list of `{ip, port}` dictionaries.
pub fn encode_announce_body(resp: &ServerResponse, compact: bool) -> Vec<u8> {
    let mut d = DictBuilder::new();
    d.int("interval", resp.interval.as_secs() as i64)
        .int("min interval", resp.min_interval.as_secs() as i64)
        .int("complete", resp.complete.into())
        .int("incomplete", resp.incomplete.into());
    if compact {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for p in &resp.peers {
            match p {
                SocketAddr::V4(_) => encode_peer(*p, &mut v4),
                SocketAddr::V6(_) => encode_peer(*p, &mut v6),
            }
        }
        d.bytes("peers", v4);
        if !v6.is_empty() {
            d.bytes("peers6", v6);
        }
    } else {
        let mut list = vec![b'l'];
        for p in &resp.peers {
            let mut e = DictBuilder::new();
            e.bytes("ip", p.ip().to_string())
                .int("port", p.port().into());
            e.finish_into(&mut list);
        }
        list.push(b'e');
        d.raw("peers", list);
    }
    d.finish()
}

/// Encode a scrape response (BEP 48) for the given hashes.
pub fn encode_scrape_body(stats: &[(InfoHash, ScrapeStats)]) -> Vec<u8> {
    let mut files = DictBuilder::new();
    for (hash, s) in stats {
        let mut e = DictBuilder::new();
        e.int("complete", s.complete.into())
            .int("downloaded", s.downloaded.into())
            .int("incomplete", s.incomplete.into());
        files.raw(hash, e.finish());
    }
    let mut d = DictBuilder::new();
    d.raw("files", files.finish());
    d.finish()
}

/// Encode `d14:failure reason...e`.
pub fn encode_failure_body(reason: &str) -> Vec<u8> {
    let mut d = DictBuilder::new();
    d.bytes("failure reason", reason);
    d.finish()
}

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;
