//! The control plane's HTTP: a small server on a well-kept crate (hyper)
//! that other rooms mount their routes on — the control API (torrents) and
//! the release ledger's gossip endpoints. Never on a shard: it runs on its
//! own thread with a single-threaded tokio runtime, and handlers run on
//! tokio's blocking pool so a slow one (creating and verifying a torrent)
//! never holds up another request.
//!
//! Mounted here: [`api::TorrentsApi`] (`/torrents`) over the
//! [`registry::Registry`] of served torrents, which `serve DIR`'s follower
//! ([`dir`]) feeds too.
//!
//! Deliberately not here: TLS (put a reverse proxy in front, or bind to
//! loopback or a management network), HTTP/2, request pipelining beyond
//! what hyper gives HTTP/1.1 keep-alive.

pub mod api;
pub mod dir;
pub mod registry;
pub mod server;

pub use server::{HttpRequest, HttpResponse, HttpServer, HttpServerConfig, Service};
