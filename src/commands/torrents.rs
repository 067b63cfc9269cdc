//! `ringseed torrents list | add | remove`: a client of a running server's
//! control API (`control::api`) over HTTP (ureq). A table by default,
//! the server's JSON with `--json`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::cli::{TorrentsArgs, TorrentsCommand};
use crate::control::registry::TorrentInfo;

pub fn run(args: &TorrentsArgs) -> anyhow::Result<ExitCode> {
    let base = args.server.trim_end_matches('/');
    let token = match &args.token_file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("cannot read --token-file {}", f.display()))?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        // Adding a large release hashes it first.
        .timeout_global(Some(Duration::from_secs(3600)))
        .http_status_as_error(false)
        .build()
        .into();
    let auth = token.map(|t| format!("Bearer {t}"));
    let result = match &args.command {
        TorrentsCommand::List => {
            let mut req = agent.get(format!("{base}/torrents"));
            if let Some(a) = &auth {
                req = req.header("Authorization", a);
            }
            req.call()
        }
        TorrentsCommand::Add { data, torrent } => {
            // The server resolves paths on its side: send an absolute one.
            let data = std::path::absolute(data)
                .with_context(|| format!("cannot resolve {}", data.display()))?;
            let data_s = data.to_string_lossy().into_owned();
            match torrent {
                Some(t) => {
                    let bytes =
                        std::fs::read(t).with_context(|| format!("cannot read {}", t.display()))?;
                    let mut req = agent
                        .post(format!("{base}/torrents"))
                        .query("data", &data_s)
                        .content_type("application/x-bittorrent");
                    if let Some(a) = &auth {
                        req = req.header("Authorization", a);
                    }
                    req.send(&bytes[..])
                }
                None => {
                    let body = serde_json::json!({ "data": data_s }).to_string();
                    let mut req = agent
                        .post(format!("{base}/torrents"))
                        .content_type("application/json");
                    if let Some(a) = &auth {
                        req = req.header("Authorization", a);
                    }
                    req.send(body)
                }
            }
        }
        TorrentsCommand::Remove { infohash } => {
            let mut req = agent.delete(format!("{base}/torrents/{infohash}"));
            if let Some(a) = &auth {
                req = req.header("Authorization", a);
            }
            req.call()
        }
    };
    let mut resp = result.with_context(|| {
        format!("cannot reach the control API at {base}: is `ringseed serve` running with --control? (use --server URL)")
    })?;
    let status = resp.status();
    let body = resp
        .body_mut()
        .read_to_string()
        .context("reading the control API's answer")?;
    if !status.is_success() {
        let msg = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error")?.as_str().map(str::to_owned))
            .unwrap_or(body);
        anyhow::bail!("{} ({})", msg, status.as_u16());
    }
    if args.json {
        println!("{body}");
        return Ok(ExitCode::SUCCESS);
    }
    let list: Vec<TorrentInfo> = match &args.command {
        TorrentsCommand::List => serde_json::from_str(&body),
        _ => serde_json::from_str(&body).map(|t| vec![t]),
    }
    .context("the control API answered with unexpected JSON")?;
    print!("{}", table(&list));
    Ok(ExitCode::SUCCESS)
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The list as an aligned text table.
pub fn table(list: &[TorrentInfo]) -> String {
    let mut rows = vec![[
        "NAME".to_owned(),
        "STATE".to_owned(),
        "SIZE".to_owned(),
        "PIECES".to_owned(),
        "PEERS".to_owned(),
        "UPLOADED".to_owned(),
        "INFOHASH".to_owned(),
    ]];
    for t in list {
        rows.push([
            t.name.clone(),
            t.state.clone(),
            human(t.size),
            format!("{}/{}", t.pieces_verified, t.pieces_total),
            t.peers.to_string(),
            human(t.uploaded_bytes),
            t.info_hash_v1
                .clone()
                .or_else(|| t.info_hash_v2.clone())
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    let mut widths = [0usize; 7];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}
