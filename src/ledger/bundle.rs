//! Offline proof bundles (the C2SP tlog-proof format) and k-of-n
//! cosignature policies.
//!
//! A bundle is
//!
//! ```text
//! c2sp.org/tlog-proof@v1
//! extra <base64 canonical release bytes>
//! index <leaf index>
//! <base64 inclusion proof hash>            (zero or more)
//!
//! <signed checkpoint: publisher signature and cosignatures>
//! ```
//!
//! The extra line carries the release itself so that a client can check the
//! info-hash it is about to download against the leaf that is proven.
//!
//! A policy file has lines `cosigner <vkey>` and one `quorum <k>`; blank
//! lines and `#` comments are ignored. With no policy, no cosignature is
//! required.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use super::block::Release;
use super::merkle::{self, Hash, MAX_PROOF_HASHES};
use super::note::{Note, Verifier, ALG_COSIGNATURE_V1};
use super::state::{verified_header, Reject, RejectReason};

const MAGIC: &str = "c2sp.org/tlog-proof@v1";

/// Which cosigners a client trusts and how many must have cosigned.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub cosigners: Vec<Verifier>,
    pub quorum: usize,
}

impl Policy {
    pub fn parse(text: &str) -> Result<Self, Reject> {
        let bad = |d: String| Reject::new(RejectReason::Malformed, format!("policy: {d}"));
        let mut p = Policy::default();
        let mut quorum = None;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.split_once(' ') {
                Some(("cosigner", vkey)) => {
                    let v = Verifier::from_vkey(vkey)
                        .map_err(|e| bad(format!("line {}: {e}", i + 1)))?;
                    if v.alg != ALG_COSIGNATURE_V1 {
                        return Err(bad(format!("line {}: not a cosignature/v1 key", i + 1)));
                    }
                    p.cosigners.push(v);
                }
                Some(("quorum", k)) => {
                    quorum = Some(
                        k.trim()
                            .parse()
                            .map_err(|_| bad(format!("line {}: bad quorum", i + 1)))?,
                    )
                }
                _ => {
                    return Err(bad(format!(
                        "line {}: expected `cosigner VKEY` or `quorum K`",
                        i + 1
                    )))
                }
            }
        }
        p.quorum = quorum.unwrap_or(p.cosigners.len());
        if p.quorum > p.cosigners.len() {
            return Err(bad(format!(
                "quorum {} but only {} cosigners",
                p.quorum,
                p.cosigners.len()
            )));
        }
        Ok(p)
    }

    /// How many listed cosigners validly cosigned `note`.
    pub fn count(&self, note: &Note) -> usize {
        self.cosigners
            .iter()
            .filter(|c| note.verify_by(c).is_ok())
            .count()
    }

    pub fn check(&self, note: &Note) -> Result<usize, Reject> {
        let n = self.count(note);
        if n < self.quorum {
            return Err(Reject::new(
                RejectReason::BadSignature,
                format!("{n} of the required {} cosignatures verify", self.quorum),
            ));
        }
        Ok(n)
    }
}

/// An offline proof that a release is in the publisher's ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProofBundle {
    pub release: Release,
    pub index: u64,
    pub proof: Vec<Hash>,
    pub checkpoint: Note,
}

impl ProofBundle {
    pub fn encode(&self) -> String {
        let mut out = format!(
            "{MAGIC}\nextra {}\nindex {}\n",
            B64.encode(self.release.encode()),
            self.index
        );
        for h in &self.proof {
            out.push_str(&B64.encode(h));
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&self.checkpoint.encode());
        out
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, Reject> {
        let bad = |d: &str| Reject::new(RejectReason::Malformed, format!("proof bundle: {d}"));
        if bytes.len() > 128 * 1024 {
            return Err(Reject::new(
                RejectReason::TooLarge,
                "proof bundle is larger than 128 KiB",
            ));
        }
        let s = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8"))?;
        let (head, note) = s
            .split_once("\n\n")
            .ok_or_else(|| bad("no blank line before the checkpoint"))?;
        let mut lines = head.split('\n');
        if lines.next() != Some(MAGIC) {
            return Err(bad("first line is not c2sp.org/tlog-proof@v1"));
        }
        let extra = lines
            .next()
            .and_then(|l| l.strip_prefix("extra "))
            .ok_or_else(|| bad("no extra line with the release"))?;
        let raw = B64.decode(extra).map_err(|_| bad("extra is not base64"))?;
        let release = Release::decode(&raw)?;
        let index = lines
            .next()
            .and_then(|l| l.strip_prefix("index "))
            .ok_or_else(|| bad("no index line"))?;
        if index.len() > 1 && index.starts_with('0') {
            return Err(bad("index has leading zeroes"));
        }
        let index: u64 = index.parse().map_err(|_| bad("index is not a number"))?;
        let mut proof = Vec::new();
        for l in lines {
            if proof.len() == MAX_PROOF_HASHES {
                return Err(Reject::new(
                    RejectReason::BadProof,
                    "proof has more than 64 hashes",
                ));
            }
            let h = B64.decode(l).map_err(|_| bad("proof hash is not base64"))?;
            proof.push(
                h.try_into().map_err(|_| {
                    Reject::new(RejectReason::BadProof, "proof hash is not 32 bytes")
                })?,
            );
        }
        let checkpoint = Note::parse(note.as_bytes()).map_err(|e| bad(&e.to_string()))?;
        Ok(Self {
            release,
            index,
            proof,
            checkpoint,
        })
    }

    /// Check the publisher signature, the policy's quorum of cosignatures
    /// and the inclusion proof. Returns the tree size and cosignature count.
    pub fn verify(&self, publisher: &Verifier, policy: &Policy) -> Result<(u64, usize), Reject> {
        let (_, cp) = verified_header(&self.checkpoint, publisher)?;
        let cosigned = policy.check(&self.checkpoint)?;
        merkle::verify_inclusion(
            &self.release.leaf_hash(),
            self.index,
            cp.size,
            &self.proof,
            &cp.root,
        )
        .map_err(|e| Reject::new(RejectReason::BadProof, e.to_string()))?;
        Ok((cp.size, cosigned))
    }
}
