//! `ringseed ledger init|publish|show|verify|prove`, and the proof check
//! behind `ringseed verify --ledger-key VKEY --proof PROOF`.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};

use crate::cli::LedgerCommand;
use crate::ledger::note::{hex_encode, ALG_COSIGNATURE_V1, ALG_ED25519};
use crate::ledger::store::LedgerDir;
use crate::ledger::{Ledger, Outcome, Policy, ProofBundle, Release, Signer, Verifier};
use crate::metainfo::Torrent;

pub fn run(cmd: LedgerCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        LedgerCommand::Init {
            key,
            name,
            cosigner,
        } => init(&key, &name, cosigner),
        LedgerCommand::Publish {
            torrents,
            ledger,
            key,
            label,
            push,
        } => publish(&torrents, &ledger, &key, label.as_deref(), &push),
        LedgerCommand::Show { ledger } => show(&ledger),
        LedgerCommand::Verify { ledger } => verify(&ledger),
        LedgerCommand::Prove {
            torrent,
            ledger,
            output,
        } => prove(&torrent, &ledger, &output),
    }
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn init(path: &Path, name: &str, cosigner: bool) -> anyhow::Result<ExitCode> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no randomness for a key: {e}"))?;
    let alg = if cosigner {
        ALG_COSIGNATURE_V1
    } else {
        ALG_ED25519
    };
    let signer = Signer::from_seed(name, alg, seed)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode_0600()
        .open(path)
        .with_context(|| {
            format!(
                "cannot create key file {} (it must not exist)",
                path.display()
            )
        })?;
    writeln!(f, "{}", signer.to_skey())?;
    f.sync_all()?;
    println!("{}", signer.verifier.to_vkey());
    Ok(ExitCode::SUCCESS)
}

trait Mode0600 {
    fn mode_0600(&mut self) -> &mut Self;
}

impl Mode0600 for std::fs::OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(0o600)
    }
}

/// A private key file (`ringseed ledger init`).
pub fn read_signer(path: &Path) -> anyhow::Result<Signer> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read key file {}", path.display()))?;
    Signer::from_skey(&text).with_context(|| format!("bad key file {}", path.display()))
}

/// A vkey given inline or as a file holding it.
pub fn read_vkey(arg: &str) -> anyhow::Result<Verifier> {
    let text = if Path::new(arg).is_file() {
        std::fs::read_to_string(arg).with_context(|| format!("cannot read {arg}"))?
    } else {
        arg.to_owned()
    };
    Verifier::from_vkey(&text).with_context(|| format!("bad verifier key {:?}", text.trim()))
}

fn read_torrent(path: &Path) -> anyhow::Result<Torrent> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Torrent::from_bytes(&bytes).with_context(|| format!("cannot parse torrent {}", path.display()))
}

pub fn release_of(t: &Torrent, label: Option<&str>, now: u64) -> anyhow::Result<Release> {
    let r = Release {
        name: t.name.clone(),
        version: label.unwrap_or(&t.name).to_owned(),
        info_hash_v2: t.info_hash_v2.map(|h| h.0),
        info_hash_v1: t.info_hash_v1.map(|h| h.0),
        total_size: t.total_size,
        publish_time: now,
    };
    if r.name.len() > crate::ledger::block::MAX_LABEL
        || r.version.len() > crate::ledger::block::MAX_LABEL
    {
        bail!(
            "release name or label of {} is longer than 1024 bytes",
            t.name
        );
    }
    Ok(r)
}

/// Does the release name this torrent (by v2 info-hash, else v1)?
pub fn same_torrent(r: &Release, t: &Torrent) -> bool {
    match (r.info_hash_v2, t.info_hash_v2) {
        (Some(a), Some(b)) => a == b.0,
        _ => matches!((r.info_hash_v1, t.info_hash_v1), (Some(a), Some(b)) if a == b.0),
    }
}

fn publish(
    torrents: &[std::path::PathBuf],
    dir: &Path,
    key: &Path,
    label: Option<&str>,
    push: &[String],
) -> anyhow::Result<ExitCode> {
    let signer = read_signer(key)?;
    let (store, mut ledger) = LedgerDir::open(dir, Some(&signer.verifier), vec![])?;
    let now = now();
    let releases = torrents
        .iter()
        .map(|p| read_torrent(p).and_then(|t| release_of(&t, label, now)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let block = ledger.make_block(&signer, releases, now)?;
    let bytes = block.encode();
    match ledger.offer_block(bytes.as_bytes())? {
        Outcome::Appended { .. } => {}
        other => bail!("the new block was not appended: {other:?}"),
    }
    store.append(&block)?;
    store.save_checkpoint(&ledger)?;
    println!(
        "block {}: {} release(s), tree size {}, root {}",
        block.header.height,
        block.releases.len(),
        block.checkpoint.size,
        hex_encode(&block.checkpoint.root)
    );
    let mut failed = 0;
    for url in push {
        let url = format!("{}/ledger/block", url.trim_end_matches('/'));
        match ureq::post(&url).send(bytes.as_bytes()) {
            Ok(_) => println!("pushed to {url}"),
            Err(e) => {
                eprintln!(
                    "ringseed: could not push block {} to {url}: {e}",
                    block.header.height
                );
                failed += 1;
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn open_existing(dir: &Path) -> anyhow::Result<(LedgerDir, Ledger)> {
    LedgerDir::open(dir, None, vec![])
        .with_context(|| format!("cannot open ledger {}", dir.display()))
}

fn show(dir: &Path) -> anyhow::Result<ExitCode> {
    let (_, ledger) = open_existing(dir)?;
    println!("publisher {}", ledger.publisher().to_vkey());
    let mut index = 0u64;
    for h in 1..=ledger.height() {
        let Some(b) = ledger.block(h) else { break };
        println!(
            "block {h} time {} size {} root {}",
            b.header.timestamp,
            b.checkpoint.size,
            hex_encode(&b.checkpoint.root)
        );
        for r in &b.releases {
            let ih = r
                .info_hash_v2
                .map(|h| hex_encode(&h))
                .or(r.info_hash_v1.map(|h| hex_encode(&h)))
                .unwrap_or_default();
            println!(
                "  #{index} {} {} {ih} {} bytes",
                r.name, r.version, r.total_size
            );
            index += 1;
        }
    }
    for e in ledger.equivocations() {
        println!("EQUIVOCATION at height {}", e.height);
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(dir: &Path) -> anyhow::Result<ExitCode> {
    let (_, ledger) = open_existing(dir)?;
    let root = ledger
        .head()
        .map(|b| hex_encode(&b.checkpoint.root))
        .unwrap_or_default();
    println!(
        "ledger {}: {} blocks, {} releases, every signature, link and root checked; head root {root}",
        dir.display(),
        ledger.height(),
        ledger.size()
    );
    if !ledger.equivocations().is_empty() {
        println!(
            "{} equivocation proof(s): the publisher signed conflicting blocks",
            ledger.equivocations().len()
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn prove(torrent: &Path, dir: &Path, output: &Path) -> anyhow::Result<ExitCode> {
    let t = read_torrent(torrent)?;
    let (_, ledger) = open_existing(dir)?;
    let index = ledger
        .releases()
        .iter()
        .rposition(|r| same_torrent(r, &t))
        .with_context(|| format!("{} is not in the ledger {}", t.name, dir.display()))?;
    let bundle = ProofBundle {
        release: ledger.releases()[index].clone(),
        index: index as u64,
        proof: ledger.inclusion_proof(index as u64)?,
        checkpoint: head_with_cosignatures(dir, &ledger)?,
    };
    crate::ledger::store::write_atomic(output, bundle.encode().as_bytes())?;
    println!(
        "release #{index} of {}: {} proof hashes, checkpoint size {}, {} signature(s)",
        ledger.size(),
        bundle.proof.len(),
        ledger.size(),
        bundle.checkpoint.signatures.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// The head checkpoint with every cosignature a box stored beside it (the
/// client checks them against its own policy).
fn head_with_cosignatures(dir: &Path, ledger: &Ledger) -> anyhow::Result<crate::ledger::Note> {
    let mut head = ledger.checkpoint_note().context("empty ledger")?;
    if let Ok(bytes) = std::fs::read(dir.join("checkpoint")) {
        if let Ok(saved) = crate::ledger::Note::parse(&bytes) {
            if saved.text == head.text {
                for s in saved.signatures {
                    head.add_signature(s);
                }
            }
        }
    }
    Ok(head)
}

/// `ringseed verify --ledger-key --proof`: the torrent must be the release
/// the proof shows in the publisher's signed (and cosigned) history.
pub fn check_proof(
    t: &Torrent,
    vkey: &str,
    proof: &Path,
    policy: Option<&Path>,
) -> anyhow::Result<()> {
    let publisher = read_vkey(vkey)?;
    let bytes =
        std::fs::read(proof).with_context(|| format!("cannot read proof {}", proof.display()))?;
    let bundle =
        ProofBundle::parse(&bytes).with_context(|| format!("bad proof {}", proof.display()))?;
    let policy = match policy {
        Some(p) => Policy::parse(
            &std::fs::read_to_string(p)
                .with_context(|| format!("cannot read policy {}", p.display()))?,
        )?,
        None => Policy::default(),
    };
    let (size, cosigned) = bundle
        .verify(&publisher, &policy)
        .with_context(|| format!("ledger proof {} does not verify", proof.display()))?;
    if !same_torrent(&bundle.release, t) {
        bail!(
            "the proof is for another release ({}), not for {}",
            bundle.release.name,
            t.name
        );
    }
    println!(
        "{}: in the ledger of {} as release #{} of {size} ({} {}), {cosigned} cosignature(s)",
        t.name, publisher.name, bundle.index, bundle.release.name, bundle.release.version
    );
    Ok(())
}

/// The ledger of `serve --ledger`: node, HTTP endpoints, gossip thread.
pub struct RunningLedger {
    pub node: std::sync::Arc<crate::ledger::node::LedgerNode>,
    // Dropped in this order: gossip stops, then the HTTP server.
    _gossip: crate::ledger::node::GossipThread,
    _http: crate::control::HttpServer,
}

impl RunningLedger {
    /// What this box tells its BitTorrent peers of its ledger (the
    /// `ringseed_ledger` key of the extension handshake).
    pub fn beacon(&self) -> crate::wire::ext::LedgerBeacon {
        crate::wire::ext::LedgerBeacon {
            height: std::sync::Arc::clone(&self.node.stats.height),
            port: self._http.local_addr().port(),
        }
    }
}

pub fn start_node(cfg: &crate::config::LedgerSettings) -> anyhow::Result<Option<RunningLedger>> {
    use crate::ledger::node::{LedgerNode, NodeConfig};
    let Some(dir) = &cfg.dir else { return Ok(None) };
    let publisher = cfg.key.as_deref().map(read_vkey).transpose()?;
    let mut witnesses = match &cfg.policy {
        Some(p) => {
            Policy::parse(
                &std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read {}", p.display()))?,
            )?
            .cosigners
        }
        None => Vec::new(),
    };
    let cosign_key = cfg.cosign_key.as_deref().map(read_signer).transpose()?;
    if let Some(k) = &cosign_key {
        if k.verifier.alg != ALG_COSIGNATURE_V1 {
            bail!(
                "--ledger-cosign-key must be a cosigning key (`ringseed ledger init --cosigner`)"
            );
        }
        if !witnesses.contains(&k.verifier) {
            witnesses.push(k.verifier.clone());
        }
    }
    let (store, ledger) = LedgerDir::open(dir, publisher.as_ref(), witnesses)
        .with_context(|| format!("cannot open the ledger {}", dir.display()))?;
    let ncfg = NodeConfig {
        peers: cfg
            .peers
            .iter()
            .map(|p| p.trim_end_matches('/').to_owned())
            .collect(),
        cosign_key,
        pull_interval: cfg.pull_interval,
        gossip: crate::ledger::gossip::GossipConfig {
            fanout: cfg.fanout,
            ..Default::default()
        },
    };
    let mut seed = [0u8; 8];
    let _ = getrandom::fill(&mut seed);
    let node = LedgerNode::new(store, ledger, &ncfg, u64::from_le_bytes(seed))?;
    let http = crate::control::HttpServer::start(
        crate::control::HttpServerConfig {
            listen: cfg.listen,
            thread_name: "ledger-http".into(),
            max_body: crate::ledger::block::MAX_BLOCK_BYTES,
            ..Default::default()
        },
        vec![node.clone()],
    )
    .with_context(|| {
        format!(
            "cannot serve the ledger on {}: use --ledger-listen ADDR with a free port",
            cfg.listen
        )
    })?;
    println!(
        "ledger on http://{} (height {}, {} peer(s))",
        http.local_addr(),
        node.height(),
        ncfg.peers.len()
    );
    let gossip = node.start_gossip(cfg.pull_interval)?;
    Ok(Some(RunningLedger {
        node,
        _gossip: gossip,
        _http: http,
    }))
}
