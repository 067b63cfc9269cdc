//! Per-torrent settings: `[per_torrent."KEY"]` tables in the config file.
//!
//! ```toml
//! super_seed = false              # global default for every torrent
//! upload_rate_limit = "100MB/s"   # the whole box
//!
//! [per_torrent."ubuntu-24.04.iso"]
//! super_seed = true
//! upload_rate_limit = "20MB/s"    # this torrent, on top of the box cap
//!
//! [per_torrent.0123456789abcdef0123456789abcdef01234567]
//! upload_rate_limit = "5MB/s"
//! ```
//!
//! KEY is a served torrent's name (as `ringseed inspect` and the start-up
//! banner print it), its v1 info-hash (40 hex digits) or its v2 info-hash
//! (64 hex digits). Keys are matched once the torrents are prepared, since
//! `serve DIR` only learns the info-hashes then, and again for every torrent
//! added while serving (a new entry in DIR, `POST /torrents`): a key that
//! matches no torrent at start-up is a warning that lists what is served (it
//! may name one added later); a name shared by two torrents, or two keys for
//! one torrent, stop the start-up with an error. For a torrent added later,
//! the first matching key (in key order) applies and any other is warned
//! about.
//!
//! What it does not do: change the settings of a torrent already served
//! (remove and add it again), or hold any setting other than these two.

use serde::{Deserialize, Serialize};

use crate::engine::TorrentSettings;
use crate::metainfo::Torrent;
use crate::swarm::ratelimit::Rate;

use super::{ConfigError, ServeConfig};

/// One `[per_torrent."KEY"]` table; an absent key keeps the global value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TorrentOverrides {
    /// Super-seed this torrent (BEP 16) or not. Default: the global
    /// `super_seed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub super_seed: Option<bool>,
    /// This torrent's own upload cap for the whole box (split across
    /// shards like the box cap), applied on top of the box-wide
    /// `upload_rate_limit`. Same syntax (`"20MB/s"`, `"off"`). Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_rate_limit: Option<Rate>,
}

/// Whether `key` names `t`: its name, or its v1/v2 info-hash in hex (any case).
fn key_matches(key: &str, t: &Torrent) -> bool {
    if t.name == key {
        return true;
    }
    let hex = key.to_ascii_lowercase();
    t.info_hash_v1.is_some_and(|h| h.to_string() == hex)
        || t.info_hash_v2.is_some_and(|h| h.to_string() == hex)
}

impl ServeConfig {
    /// The settings of each of `torrents` (in order): the global
    /// `super_seed`, then the `[per_torrent]` table that names it, if any.
    /// Every table must name exactly one torrent, and no torrent may be
    /// named by two tables.
    pub fn torrent_settings(
        &self,
        torrents: &[&Torrent],
    ) -> Result<Vec<TorrentSettings>, ConfigError> {
        let mut settings = vec![
            TorrentSettings {
                super_seed: self.super_seed,
                upload_rate_limit: Rate::UNLIMITED,
            };
            torrents.len()
        ];
        let mut claimed: Vec<Option<&str>> = vec![None; torrents.len()];
        for (key, o) in &self.per_torrent {
            let hits: Vec<usize> = (0..torrents.len())
                .filter(|&i| key_matches(key, torrents[i]))
                .collect();
            let i = match hits.as_slice() {
                [i] => *i,
                [] => {
                    tracing::warn!(
                        "{}",
                        ConfigError::UnknownTorrent {
                            key: key.clone(),
                            served: served_list(torrents),
                        }
                    );
                    continue;
                }
                _ => {
                    return Err(ConfigError::AmbiguousTorrent {
                        key: key.clone(),
                        count: hits.len(),
                    })
                }
            };
            if let Some(first) = claimed[i] {
                return Err(ConfigError::TorrentConfiguredTwice {
                    first: first.to_owned(),
                    second: key.clone(),
                    name: torrents[i].name.clone(),
                });
            }
            claimed[i] = Some(key);
            if let Some(s) = o.super_seed {
                settings[i].super_seed = s;
            }
            if let Some(r) = o.upload_rate_limit {
                settings[i].upload_rate_limit = r;
            }
        }
        Ok(settings)
    }
    /// The keys of `[per_torrent]` that name none of `torrents`.
    pub fn unmatched_per_torrent(&self, torrents: &[&Torrent]) -> Vec<String> {
        self.per_torrent
            .keys()
            .filter(|k| !torrents.iter().any(|t| key_matches(k, t)))
            .cloned()
            .collect()
    }

    /// The settings of a torrent added while serving: the global
    /// `super_seed`, then the first `[per_torrent]` table that names it.
    pub fn settings_for(&self, torrent: &Torrent) -> TorrentSettings {
        let mut settings = TorrentSettings {
            super_seed: self.super_seed,
            upload_rate_limit: Rate::UNLIMITED,
        };
        let mut keys = self
            .per_torrent
            .iter()
            .filter(|(k, _)| key_matches(k, torrent));
        if let Some((key, o)) = keys.next() {
            if let Some(s) = o.super_seed {
                settings.super_seed = s;
            }
            if let Some(r) = o.upload_rate_limit {
                settings.upload_rate_limit = r;
            }
            for (other, _) in keys {
                tracing::warn!(
                    torrent = %torrent.name,
                    "[per_torrent.{other:?}] also names this torrent; [per_torrent.{key:?}] applies"
                );
            }
        }
        settings
    }
}

/// `"a" (v1 0123...), "b" (v2 4567...)`, at most 10 entries.
fn served_list(torrents: &[&Torrent]) -> String {
    let mut out: Vec<String> = torrents
        .iter()
        .take(10)
        .map(|t| {
            let hash = t
                .info_hash_v1
                .map(|h| format!("v1 {h}"))
                .or_else(|| t.info_hash_v2.map(|h| format!("v2 {h}")))
                .unwrap_or_default();
            format!("{:?} ({hash})", t.name)
        })
        .collect();
    if torrents.len() > 10 {
        out.push(format!("and {} more", torrents.len() - 10));
    }
    if out.is_empty() {
        return "nothing".to_owned();
    }
    out.join(", ")
}
