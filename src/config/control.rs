//! The control plane's settings: `control`, `control_token_file`,
//! `drain_grace`, `settle`, `allow_roots` (fields of [`ServeConfig`]).

use std::net::SocketAddr;
use std::path::PathBuf;

use super::{flag_duration, ConfigError, MetricsEndpoint, ServeConfig};
use crate::cli::ServeArgs;

/// The control API's default address.
pub const DEFAULT_CONTROL_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9101);

impl ServeConfig {
    pub(super) fn apply_control_args(&mut self, args: &ServeArgs) -> Result<(), ConfigError> {
        if let Some(c) = &args.control {
            self.control = Some(c.parse().map_err(|reason: String| ConfigError::Flag {
                flag: "--control",
                value: c.clone(),
                reason: reason.replace("metrics endpoint", "control address"),
            })?);
        }
        if let Some(f) = &args.control_token_file {
            self.control_token_file = Some(f.clone());
        }
        flag_duration(&mut self.drain_grace, "--drain-grace", &args.drain_grace)?;
        flag_duration(&mut self.settle, "--settle", &args.settle)?;
        self.allow_roots.extend(args.allow_roots.iter().cloned());
        Ok(())
    }

    pub(super) fn validate_control(&self) -> Result<(), ConfigError> {
        if let Some(MetricsEndpoint::Listen(addr)) = self.control {
            if !addr.ip().is_loopback() && self.control_token_file.is_none() {
                return Err(ConfigError::Invalid {
                    key: "control",
                    value: addr.to_string(),
                    reason: "a control API on a non-loopback address needs a bearer token: \
                             set --control-token-file FILE (or bind 127.0.0.1)",
                });
            }
        }
        Ok(())
    }

    /// Where the control API listens: `None` when off; the flag says
    /// whether the address was the default (best effort).
    pub fn control_listen(&self) -> Option<(SocketAddr, bool)> {
        match self.control {
            Some(MetricsEndpoint::Off) => None,
            Some(MetricsEndpoint::Listen(a)) => Some((a, false)),
            None => Some((DEFAULT_CONTROL_LISTEN, true)),
        }
    }

    /// Roots the control API may serve data from: `allow_roots`, the DIR and
    /// every `--data` path given at start (canonical; missing ones skipped).
    pub fn allowed_roots(&self) -> Vec<PathBuf> {
        let mut roots: Vec<PathBuf> = self
            .allow_roots
            .iter()
            .chain(self.dir.iter())
            .chain(self.torrents.iter().map(|t| &t.data))
            .filter_map(|p| std::fs::canonicalize(p).ok())
            .collect();
        roots.sort();
        roots.dedup();
        roots
    }
}
