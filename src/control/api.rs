//! The control API's torrent routes, mounted on [`super::HttpServer`]:
//!
//! - `GET /torrents`: every torrent, as a JSON array of
//!   [`TorrentInfo`] (name, v1/v2 info-hashes, size, pieces verified and
//!   total, connected peers, bytes uploaded, state, data path, magnet);
//! - `GET /torrents/{infohash}`: one (v1 or v2 hex, or the name);
//! - `POST /torrents`: either a `.torrent` as the body
//!   (`Content-Type: application/x-bittorrent`) with its data path in the
//!   query (`?data=/srv/iso/ubuntu.iso`, percent-encoded), or the JSON
//!   `{"data": "/srv/iso/new-release"}` alone, for which a hybrid torrent is
//!   created. Answers `201` with the torrent once it is served (verification
//!   and creation run here, on the server's blocking pool, never on a
//!   shard);
//! - `DELETE /torrents/{infohash}`: `202` with the torrent `draining`; it is
//!   gone once its peers have closed.
//!
//! Errors are `{"error": "..."}` with the status of [`RegistryError::status`].

use std::path::PathBuf;
use std::sync::Arc;

use hyper::{Method, StatusCode};

use super::registry::{Registry, RegistryError, TorrentInfo};
use super::server::{HttpRequest, HttpResponse, Service};

/// The `/torrents` routes.
pub struct TorrentsApi {
    registry: Arc<Registry>,
}

impl TorrentsApi {
    pub fn new(registry: Arc<Registry>) -> Self {
        Self { registry }
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AddRequest {
    data: PathBuf,
}

fn error(e: &RegistryError) -> HttpResponse {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
    HttpResponse::error(status, &e.to_string())
}

fn answer(status: StatusCode, r: Result<TorrentInfo, RegistryError>) -> HttpResponse {
    match r {
        Ok(info) => HttpResponse::json(status, &info),
        Err(e) => error(&e),
    }
}

/// `%XX` and `+` decoding of one query value (the tracker's decoder).
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    crate::tracker::proto::http::percent_decode(s.as_bytes())
}

fn query_param(query: Option<&str>, name: &str) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name)
            .then(|| percent_decode(v).map(|b| PathBuf::from(std::ffi::OsString::from_vec(b))))?
    })
}

impl Service for TorrentsApi {
    fn handle(&self, req: &HttpRequest) -> Option<HttpResponse> {
        let rest = req.path.strip_prefix("/torrents")?;
        let key = match rest {
            "" | "/" => None,
            r => Some(r.strip_prefix('/')?.trim_end_matches('/')),
        };
        Some(match (&req.method, key) {
            (&Method::GET, None) => HttpResponse::json(StatusCode::OK, &self.registry.list()),
            (&Method::GET, Some(k)) => match self.registry.get(k) {
                Some(info) => HttpResponse::json(StatusCode::OK, &info),
                None => error(&RegistryError::NoSuchTorrent(k.to_owned())),
            },
            (&Method::POST, None) => self.add(req),
            (&Method::DELETE, Some(k)) => answer(StatusCode::ACCEPTED, self.registry.remove(k)),
            _ => HttpResponse::error(
                StatusCode::METHOD_NOT_ALLOWED,
                &format!(
                    "{} {}: use GET /torrents, GET /torrents/{{infohash}}, POST /torrents or DELETE /torrents/{{infohash}}",
                    req.method, req.path
                ),
            ),
        })
    }
}

impl TorrentsApi {
    fn add(&self, req: &HttpRequest) -> HttpResponse {
        let ctype = req
            .headers
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if ctype.starts_with("application/x-bittorrent") {
            let Some(data) = query_param(req.query.as_deref(), "data") else {
                return error(&RegistryError::BadRequest(
                    "a .torrent needs its data path: POST /torrents?data=PATH".into(),
                ));
            };
            return answer(
                StatusCode::CREATED,
                self.registry.add_torrent(&req.body, &data),
            );
        }
        match serde_json::from_slice::<AddRequest>(&req.body) {
            Ok(a) => answer(
                StatusCode::CREATED,
                self.registry
                    .add_data(&a.data, super::registry::Origin::Given),
            ),
            Err(e) => error(&RegistryError::BadRequest(format!(
                "expected a .torrent (Content-Type: application/x-bittorrent, ?data=PATH) or JSON {{\"data\": PATH}}: {e}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(
            query_param(Some("x=1&data=%2Fsrv%2Fa+b%C3%A9.iso"), "data"),
            Some(PathBuf::from("/srv/a bé.iso"))
        );
        assert_eq!(query_param(Some("data=%zz"), "data"), None);
        assert_eq!(query_param(None, "data"), None);
    }
}
