//! The ledger a box holds: the chain of verified blocks, the leaf hashes of
//! the release tree, cosignatures, and the equivocations it has seen.
//!
//! Sans-IO: bytes in, verdicts out; the clock is passed in (`now`, seconds
//! since the epoch). Call order: [`Ledger::new`] -> [`Ledger::offer_block`] /
//! [`Ledger::offer_checkpoint`] / [`Ledger::offer_equivocation`] for whatever
//! arrives (disk, peers, the publisher) -> read the head, proofs and
//! counters. Every refusal is a [`Reject`] with a reason that is counted;
//! nothing is stored for a refused input. A ledger never rolls back: blocks
//! are only appended, and after an equivocation it accepts no further block.

use super::block::{Block, BlockHeader, Checkpoint, FormatError, Release, MAX_RELEASES_PER_BLOCK};
use super::merkle::{self, Hash};
use super::note::{Note, NoteError, NoteSignature, Signer, Verifier};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

/// Why an input was refused; `as_str` is the metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    Malformed,
    TooLarge,
    UnknownKey,
    BadSignature,
    WrongOrigin,
    NotExtendingHead,
    Gap,
    RootMismatch,
    Rollback,
    Frozen,
    BadProof,
    Flood,
}

impl RejectReason {
    pub const ALL: [RejectReason; 12] = [
        Self::Malformed,
        Self::TooLarge,
        Self::UnknownKey,
        Self::BadSignature,
        Self::WrongOrigin,
        Self::NotExtendingHead,
        Self::Gap,
        Self::RootMismatch,
        Self::Rollback,
        Self::Frozen,
        Self::BadProof,
        Self::Flood,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::TooLarge => "too_large",
            Self::UnknownKey => "unknown_key",
            Self::BadSignature => "bad_signature",
            Self::WrongOrigin => "wrong_origin",
            Self::NotExtendingHead => "not_extending_head",
            Self::Gap => "gap",
            Self::RootMismatch => "root_mismatch",
            Self::Rollback => "rollback",
            Self::Frozen => "frozen",
            Self::BadProof => "bad_proof",
            Self::Flood => "flood",
        }
    }
}

/// A refusal: its reason and a sentence for the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct Reject {
    pub reason: RejectReason,
    pub detail: String,
}

impl Reject {
    pub fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

impl From<FormatError> for Reject {
    fn from(e: FormatError) -> Self {
        let reason = match &e {
            FormatError::TooLarge | FormatError::Note(NoteError::TooLarge) => {
                RejectReason::TooLarge
            }
            _ => RejectReason::Malformed,
        };
        Self::new(reason, e.to_string())
    }
}

fn sig_reject(e: NoteError) -> Reject {
    let reason = match e {
        NoteError::MissingSignature(_) => RejectReason::UnknownKey,
        NoteError::BadSignature(_) => RejectReason::BadSignature,
        NoteError::TooLarge => RejectReason::TooLarge,
        _ => RejectReason::Malformed,
    };
    Reject::new(reason, e.to_string())
}

/// Two checkpoints validly signed by the publisher that cannot both be true:
/// the same block height (or tree size) with different contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Equivocation {
    pub height: u64,
    pub a: Note,
    pub b: Note,
}

impl Equivocation {
    /// `ringseed-equivocation/v1`, then each signed note in base64 on a line.
    pub fn encode(&self) -> String {
        format!(
            "ringseed-equivocation/v1\n{}\n{}\n",
            B64.encode(self.a.encode()),
            B64.encode(self.b.encode())
        )
    }

    /// Parse and check both signatures and that they conflict.
    pub fn parse_verified(bytes: &[u8], publisher: &Verifier) -> Result<Self, Reject> {
        let bad =
            |d: &str| Reject::new(RejectReason::Malformed, format!("equivocation proof: {d}"));
        let s = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8"))?;
        let mut lines = s
            .strip_suffix('\n')
            .ok_or_else(|| bad("no final newline"))?
            .split('\n');
        if lines.next() != Some("ringseed-equivocation/v1") {
            return Err(bad("missing ringseed-equivocation/v1 line"));
        }
        let mut notes = Vec::with_capacity(2);
        for _ in 0..2 {
            let raw = lines
                .next()
                .and_then(|l| B64.decode(l).ok())
                .ok_or_else(|| bad("note is not base64"))?;
            notes.push(Note::parse(&raw).map_err(sig_reject)?);
        }
        if lines.next().is_some() {
            return Err(bad("trailing lines"));
        }
        let b = notes.pop().ok_or_else(|| bad("missing note"))?;
        let a = notes.pop().ok_or_else(|| bad("missing note"))?;
        let (ha, ca) = verified_header(&a, publisher)?;
        let (hb, cb) = verified_header(&b, publisher)?;
        let conflict = a.text != b.text && (ha.height == hb.height || ca.size == cb.size);
        if !conflict {
            return Err(Reject::new(
                RejectReason::BadProof,
                "the two checkpoints do not conflict",
            ));
        }
        Ok(Self {
            height: ha.height.min(hb.height),
            a,
            b,
        })
    }
}

/// Check a checkpoint note's origin and publisher signature; return its
/// block header and checkpoint.
pub fn verified_header(
    note: &Note,
    publisher: &Verifier,
) -> Result<(BlockHeader, Checkpoint), Reject> {
    let cp = Checkpoint::parse(&note.text)?;
    if cp.origin != publisher.name {
        return Err(Reject::new(
            RejectReason::WrongOrigin,
            format!(
                "checkpoint origin {:?} is not the publisher's {:?}",
                cp.origin, publisher.name
            ),
        ));
    }
    note.verify_by(publisher).map_err(sig_reject)?;
    let first = cp
        .extensions
        .first()
        .ok_or(FormatError::Block("checkpoint has no ringseed-block line"))?;
    let header = BlockHeader::parse(first)?;
    Ok((header, cp))
}

/// What an accepted input did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A new head at this height.
    Appended { height: u64 },
    /// Nothing new (a block or checkpoint we hold; new cosignatures kept).
    Known { new_cosignatures: usize },
    /// The peer is ahead: fetch blocks `from..=to`.
    Behind { from: u64, to: u64 },
    /// A fork was found (or learnt) and recorded; the ledger is frozen.
    Equivocation(Box<Equivocation>),
}

/// A box's ledger.
#[derive(Debug)]
pub struct Ledger {
    publisher: Verifier,
    witnesses: Vec<Verifier>,
    blocks: Vec<Block>,
    hashes: Vec<Hash>,
    leaves: Vec<Hash>,
    frontier: merkle::Frontier,
    releases: Vec<Release>,
    cosignatures: Vec<Vec<NoteSignature>>,
    equivocations: Vec<Equivocation>,
    rejects: [u64; RejectReason::ALL.len()],
}

impl Ledger {
    /// `witnesses`: the cosigner keys whose cosignatures this box keeps.
    pub fn new(publisher: Verifier, witnesses: Vec<Verifier>) -> Self {
        Self {
            publisher,
            witnesses,
            blocks: Vec::new(),
            hashes: Vec::new(),
            leaves: Vec::new(),
            frontier: merkle::Frontier::default(),
            releases: Vec::new(),
            cosignatures: Vec::new(),
            equivocations: Vec::new(),
            rejects: [0; RejectReason::ALL.len()],
        }
    }

    pub fn publisher(&self) -> &Verifier {
        &self.publisher
    }
    pub fn height(&self) -> u64 {
        self.blocks.len() as u64
    }
    pub fn size(&self) -> u64 {
        self.leaves.len() as u64
    }
    pub fn block(&self, height: u64) -> Option<&Block> {
        self.blocks
            .get(usize::try_from(height).ok()?.checked_sub(1)?)
    }
    pub fn head(&self) -> Option<&Block> {
        self.blocks.last()
    }
    pub fn releases(&self) -> &[Release] {
        &self.releases
    }
    pub fn leaves(&self) -> &[Hash] {
        &self.leaves
    }
    pub fn equivocations(&self) -> &[Equivocation] {
        &self.equivocations
    }
    pub fn is_frozen(&self) -> bool {
        !self.equivocations.is_empty()
    }
    pub fn rejects(&self) -> impl Iterator<Item = (RejectReason, u64)> + '_ {
        RejectReason::ALL
            .iter()
            .copied()
            .zip(self.rejects.iter().copied())
    }
    pub fn reject_count(&self, reason: RejectReason) -> u64 {
        self.rejects[reason as usize]
    }

    /// Count a refusal made outside the ledger (e.g. by the gossip flood limit).
    pub fn count(&mut self, r: Reject) -> Reject {
        self.rejects[r.reason as usize] += 1;
        r
    }

    /// The head checkpoint with the publisher's signature and every
    /// cosignature kept for it.
    pub fn checkpoint_note(&self) -> Option<Note> {
        let head = self.head()?;
        let mut note = head.note.clone();
        for c in self.cosignatures.last().into_iter().flatten() {
            note.add_signature(c.clone());
        }
        Some(note)
    }

    /// Cosign the head (tlog-cosignature/v1) with this box's key.
    pub fn cosign_head(&mut self, key: &Signer, now: u64) -> Option<NoteSignature> {
        let head = self.blocks.last()?;
        let sig = key.sign(&head.note.text, now);
        let list = self.cosignatures.last_mut()?;
        list.retain(|s| !(s.name == sig.name && s.id == sig.id));
        list.push(sig.clone());
        Some(sig)
    }

    /// A block from disk, a peer or the publisher.
    pub fn offer_block(&mut self, bytes: &[u8]) -> Result<Outcome, Reject> {
        let r = self.offer_block_inner(bytes);
        r.map_err(|e| self.count(e))
    }

    fn offer_block_inner(&mut self, bytes: &[u8]) -> Result<Outcome, Reject> {
        let block = Block::parse(bytes)?;
        if block.releases.len() > MAX_RELEASES_PER_BLOCK {
            return Err(Reject::new(
                RejectReason::TooLarge,
                "block adds too many releases",
            ));
        }
        if block.releases.is_empty() {
            return Err(Reject::new(
                RejectReason::Malformed,
                "block adds no release",
            ));
        }
        if let Some(ours) = self.block(block.header.height) {
            if ours.note.text == block.note.text && ours.releases != block.releases {
                return Err(Reject::new(
                    RejectReason::RootMismatch,
                    format!(
                        "block {}: its releases were rewritten (they do not match the signed root)",
                        block.header.height
                    ),
                ));
            }
        }
        if let Some(o) = self.known_text(&block.note, block.header.height) {
            return Ok(o);
        }
        let (header, cp) = verified_header(&block.note, &self.publisher)?;
        if let Some(o) = self.compare_known(&block.note, header.height, cp.size)? {
            return Ok(o);
        }
        if self.is_frozen() {
            return Err(Reject::new(
                RejectReason::Frozen,
                "ledger is frozen by an equivocation",
            ));
        }
        let next = self.height() + 1;
        if header.height > next {
            return Err(Reject::new(
                RejectReason::Gap,
                format!(
                    "block {} does not follow the head {}: blocks missing",
                    header.height,
                    self.height()
                ),
            ));
        }
        let head_hash = self.hashes.last().copied().unwrap_or([0; 32]);
        if header.prev != head_hash {
            return Err(Reject::new(
                RejectReason::NotExtendingHead,
                format!(
                    "block {} does not link to our block {}",
                    header.height,
                    self.height()
                ),
            ));
        }
        if let Some(h) = self.head() {
            if header.timestamp < h.header.timestamp {
                return Err(Reject::new(
                    RejectReason::Rollback,
                    "block timestamp is older than the head's",
                ));
            }
        }
        let want_size = self.size() + block.releases.len() as u64;
        if cp.size != want_size {
            return Err(Reject::new(
                RejectReason::RootMismatch,
                format!(
                    "block {} claims tree size {}, its releases make {}",
                    header.height, cp.size, want_size
                ),
            ));
        }
        let new_leaves: Vec<Hash> = block.releases.iter().map(Release::leaf_hash).collect();
        let mut frontier = self.frontier.clone();
        new_leaves.iter().for_each(|l| frontier.push(*l));
        if frontier.root() != cp.root {
            return Err(Reject::new(
                RejectReason::RootMismatch,
                format!("block {}: root does not match its releases", header.height),
            ));
        }
        let cosigs = self.verified_cosignatures(&block.note);
        self.leaves.extend(new_leaves);
        self.frontier = frontier;
        self.releases.extend(block.releases.iter().cloned());
        self.hashes.push(block.hash());
        self.blocks.push(block);
        self.cosignatures.push(cosigs);
        Ok(Outcome::Appended {
            height: header.height,
        })
    }

    /// A signed checkpoint from a peer (gossip).
    pub fn offer_checkpoint(&mut self, bytes: &[u8]) -> Result<Outcome, Reject> {
        let r = (|| {
            let note = Note::parse(bytes).map_err(sig_reject)?;
            let cp = Checkpoint::parse(&note.text)?;
            let height = cp
                .extensions
                .first()
                .map(|l| BlockHeader::parse(l))
                .transpose()?;
            if let Some(o) = height.and_then(|h| self.known_text(&note, h.height)) {
                return Ok(o);
            }
            let (header, cp) = verified_header(&note, &self.publisher)?;
            if let Some(o) = self.compare_known(&note, header.height, cp.size)? {
                return Ok(o);
            }
            if self.is_frozen() {
                return Err(Reject::new(
                    RejectReason::Frozen,
                    "ledger is frozen by an equivocation",
                ));
            }
            if cp.size < self.size() {
                return Err(Reject::new(
                    RejectReason::Rollback,
                    "checkpoint is older than the head",
                ));
            }
            Ok(Outcome::Behind {
                from: self.height() + 1,
                to: header.height,
            })
        })();
        r.map_err(|e| self.count(e))
    }

    /// An equivocation proof from a peer.
    pub fn offer_equivocation(&mut self, bytes: &[u8]) -> Result<Outcome, Reject> {
        // One we already hold (the usual case in gossip): no signature work.
        if self
            .equivocations
            .iter()
            .any(|e| e.encode().as_bytes() == bytes)
        {
            return Ok(Outcome::Known {
                new_cosignatures: 0,
            });
        }
        let r = Equivocation::parse_verified(bytes, &self.publisher);
        match r {
            Ok(e) => Ok(self.record(e)),
            Err(e) => Err(self.count(e)),
        }
    }

    /// Fast path: the very text of a block we hold (already verified), so
    /// only its cosignatures are new.
    fn known_text(&mut self, note: &Note, height: u64) -> Option<Outcome> {
        if self.block(height)?.note.text != note.text {
            return None;
        }
        self.compare_known(note, height, 0).ok().flatten()
    }

    /// For a note at or below the head: known (merge cosignatures) or an
    /// equivocation. `None` when it is above the head.
    fn compare_known(
        &mut self,
        note: &Note,
        height: u64,
        size: u64,
    ) -> Result<Option<Outcome>, Reject> {
        if let Some(ours) = self.block(height) {
            if ours.note.text == note.text {
                let idx = (height - 1) as usize;
                let cosigs = self.verified_cosignatures(note);
                let list = &mut self.cosignatures[idx];
                let mut added = 0;
                for c in cosigs {
                    if !list.iter().any(|s| s.name == c.name && s.id == c.id) {
                        list.push(c);
                        added += 1;
                    }
                }
                return Ok(Some(Outcome::Known {
                    new_cosignatures: added,
                }));
            }
            let e = Equivocation {
                height,
                a: strip_cosignatures(&ours.note, &self.publisher),
                b: strip_cosignatures(note, &self.publisher),
            };
            return Ok(Some(self.record(e)));
        }
        // Same tree size as one of our blocks but a different height.
        if let Some(ours) = self
            .blocks
            .iter()
            .find(|b| b.checkpoint.size == size && size > 0)
        {
            let e = Equivocation {
                height: ours.header.height.min(height),
                a: strip_cosignatures(&ours.note, &self.publisher),
                b: strip_cosignatures(note, &self.publisher),
            };
            return Ok(Some(self.record(e)));
        }
        Ok(None)
    }

    fn record(&mut self, e: Equivocation) -> Outcome {
        let same = |x: &Equivocation| {
            (x.a.text == e.a.text && x.b.text == e.b.text)
                || (x.a.text == e.b.text && x.b.text == e.a.text)
        };
        if self.equivocations.iter().any(same) {
            return Outcome::Known {
                new_cosignatures: 0,
            };
        }
        self.equivocations.push(e.clone());
        Outcome::Equivocation(Box::new(e))
    }

    fn verified_cosignatures(&self, note: &Note) -> Vec<NoteSignature> {
        note.signatures
            .iter()
            .filter(|s| {
                self.witnesses
                    .iter()
                    .any(|w| s.is_by(w) && w.verify(&note.text, &s.sig).is_ok())
            })
            .cloned()
            .collect()
    }

    /// Inclusion proof of release `index` in the head tree.
    pub fn inclusion_proof(&self, index: u64) -> Result<Vec<Hash>, merkle::ProofError> {
        merkle::inclusion_proof(&self.leaves, index)
    }

    /// Consistency proof from the tree of block `old` to the head.
    pub fn consistency_proof(&self, old_height: u64) -> Option<Vec<Hash>> {
        let old = if old_height == 0 {
            0
        } else {
            self.block(old_height)?.checkpoint.size
        };
        merkle::consistency_proof(&self.leaves, old).ok()
    }

    /// Build and sign the next block (publisher side).
    pub fn make_block(
        &self,
        key: &Signer,
        releases: Vec<Release>,
        now: u64,
    ) -> Result<Block, Reject> {
        if releases.is_empty() || releases.len() > MAX_RELEASES_PER_BLOCK {
            return Err(Reject::new(
                RejectReason::TooLarge,
                "a block adds 1 to 1024 releases",
            ));
        }
        if key.verifier != self.publisher {
            return Err(Reject::new(
                RejectReason::UnknownKey,
                "this key is not the ledger's publisher key",
            ));
        }
        let mut frontier = self.frontier.clone();
        releases.iter().for_each(|r| frontier.push(r.leaf_hash()));
        let header = BlockHeader {
            height: self.height() + 1,
            prev: self.hashes.last().copied().unwrap_or([0; 32]),
            timestamp: now.max(self.head().map_or(0, |h| h.header.timestamp)),
        };
        let checkpoint = Checkpoint {
            origin: self.publisher.name.clone(),
            size: frontier.size(),
            root: frontier.root(),
            extensions: vec![header.line()],
        };
        let text = checkpoint.text();
        let sig = key.sign(&text, now);
        let note = Note {
            text,
            signatures: vec![sig],
        };
        Ok(Block {
            releases,
            note,
            checkpoint,
            header,
        })
    }
}

/// Only the publisher's signature (cosignatures are not part of a proof).
fn strip_cosignatures(note: &Note, publisher: &Verifier) -> Note {
    Note {
        text: note.text.clone(),
        signatures: note
            .signatures
            .iter()
            .filter(|s| s.is_by(publisher))
            .cloned()
            .collect(),
    }
}
