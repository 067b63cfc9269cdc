//! `ringseed inspect FILE.torrent [--json]`: what a torrent contains.

use std::process::ExitCode;

use anyhow::Context as _;
use serde::Serialize;

use crate::metainfo::{MetaVersion, Torrent};

/// The `--json` output. Field names are stable.
#[derive(Debug, Serialize)]
pub struct InspectReport {
    pub name: String,
    pub version: MetaVersion,
    pub total_size: u64,
    pub piece_length: u64,
    pub num_pieces: u32,
    pub multi_file: bool,
    pub info_hash_v1: Option<String>,
    pub info_hash_v2: Option<String>,
    /// The first 20 bytes of the v2 info-hash, as sent in handshakes.
    pub info_hash_v2_truncated: Option<String>,
    pub magnet: String,
    pub trackers: Vec<Vec<String>>,
    pub web_seeds: Vec<String>,
    pub private: bool,
    pub comment: Option<String>,
    pub created_by: Option<String>,
    pub creation_date: Option<i64>,
    pub files: Vec<InspectFile>,
}

#[derive(Debug, Serialize)]
pub struct InspectFile {
    pub path: String,
    pub size: u64,
}

impl InspectReport {
    pub fn new(t: &Torrent) -> Self {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        InspectReport {
            name: t.name.clone(),
            version: t.version,
            total_size: t.total_size,
            piece_length: t.piece_length,
            num_pieces: t.num_pieces,
            multi_file: t.multi_file,
            info_hash_v1: t.info_hash_v1.map(|h| h.to_string()),
            info_hash_v2: t.info_hash_v2.map(|h| h.to_string()),
            info_hash_v2_truncated: t.info_hash_v2.map(|h| hex(&h.truncated())),
            magnet: t.magnet_uri(),
            trackers: t.trackers.clone(),
            web_seeds: t.web_seeds.clone(),
            private: t.private,
            comment: t.comment.clone(),
            created_by: t.created_by.clone(),
            creation_date: t.creation_date,
            files: t
                .files
                .iter()
                .map(|f| InspectFile {
                    path: f.display_path(),
                    size: f.length,
                })
                .collect(),
        }
    }
}

pub fn run(args: &crate::cli::InspectArgs) -> anyhow::Result<ExitCode> {
    let path = &args.torrent;
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let torrent = Torrent::from_bytes(&bytes)
        .with_context(|| format!("{} is not a valid torrent", path.display()))?;
    let report = InspectReport::new(&torrent);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render_text(&report));
    }
    Ok(ExitCode::SUCCESS)
}

fn render_text(r: &InspectReport) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let version = match r.version {
        MetaVersion::V1 => "v1",
        MetaVersion::V2 => "v2",
        MetaVersion::Hybrid => "hybrid (v1 + v2)",
    };
    let _ = writeln!(s, "name:          {}", r.name);
    let _ = writeln!(s, "version:       {version}");
    let _ = writeln!(
        s,
        "total size:    {} bytes ({})",
        r.total_size,
        human(r.total_size)
    );
    let _ = writeln!(
        s,
        "pieces:        {} x {} bytes",
        r.num_pieces, r.piece_length
    );
    if let Some(h) = &r.info_hash_v1 {
        let _ = writeln!(s, "info-hash v1:  {h}");
    }
    if let (Some(h), Some(t)) = (&r.info_hash_v2, &r.info_hash_v2_truncated) {
        let _ = writeln!(s, "info-hash v2:  {h}");
        let _ = writeln!(s, "  truncated:   {t}");
    }
    let _ = writeln!(s, "private:       {}", if r.private { "yes" } else { "no" });
    if let Some(c) = &r.comment {
        let _ = writeln!(s, "comment:       {c}");
    }
    if let Some(c) = &r.created_by {
        let _ = writeln!(s, "created by:    {c}");
    }
    if let Some(d) = r.creation_date {
        let _ = writeln!(s, "creation date: {d} (unix seconds)");
    }
    for (i, tier) in r.trackers.iter().enumerate() {
        let _ = writeln!(s, "tracker tier {i}: {}", tier.join(" "));
    }
    for w in &r.web_seeds {
        let _ = writeln!(s, "web seed:      {w}");
    }
    let _ = writeln!(s, "magnet:        {}", r.magnet);
    let _ = writeln!(s, "files ({}):", r.files.len());
    for f in &r.files {
        let _ = writeln!(s, "  {:>15}  {}", f.size, f.path);
    }
    s
}

/// `1.5 GiB` style sizes.
pub(crate) fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
