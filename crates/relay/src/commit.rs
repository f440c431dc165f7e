//! The commit of a keygen or reshare: signed READY statements, the certificate they make,
//! the signed reports parties exchange afterwards, and the one decision rule every party
//! (daemon or device) applies to them.
//!
//! The rule, and why it never strands a vault (docs/ceremonies.md has the full argument):
//!
//! - A new party seals its new share as *pending*, then signs a READY statement (vault,
//!   ceremony context, new epoch, public key, hash of the new public record). From the moment
//!   it has signed one it never deletes that pending share by itself.
//! - A *certificate* is one valid READY from every party of the new committee, all naming
//!   the same record. It proves that every new party holds the new share as pending. A
//!   party promotes pending to current only with a certificate in hand, and a dealer that
//!   leaves the committee retires only with one.
//! - A ceremony that ends without a certificate leaves the party *in doubt*. It then
//!   gathers signed [`Report`]s: if the READYs in them (and its own) make a certificate, it
//!   promotes (or retires); if every new party (but those an operator declares lost) has
//!   reported and they do not, no party can ever hold a certificate, so nobody promoted
//!   and the pending share is discarded. Otherwise it stays in doubt and says who it
//!   waits for.
//!
//! Reports describe ended ceremonies only (a party answers for a vault only while no
//! ceremony of it runs there), so the READYs a report lists never change afterwards: any
//! two parties deciding from reports decide the same way.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::keys::{PartyKeys, short, verify};

const READY_TAG: &[u8] = b"cosigner/v1/ready";
const REPORT_TAG: &[u8] = b"cosigner/v1/commit-report";
const STATE_MAGIC: &[u8; 4] = b"CCMT";
const REPORT_MAGIC: &[u8; 4] = b"CRPT";
const VERSION: u8 = 1;
/// Larger than any real statement set (255 parties).
const MAX_BYTES: usize = 256 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CommitError {
    #[error("READY from {party}: {detail}")]
    BadReady { party: String, detail: String },
    #[error("report from {party}: {detail}")]
    BadReport { party: String, detail: String },
    #[error("commit record: {0}")]
    Format(String),
}

fn lp(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u64).to_be_bytes());
    out.extend_from_slice(b);
}

/// A new party's signed statement that it sealed its new share of `epoch` as pending.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyStatement {
    pub vault_id: String,
    /// The ceremony context: the participant list's hash and every participant's fresh
    /// HELLO value (see the driver). Names one ceremony, even on a reused relay session.
    pub context: [u8; 32],
    pub epoch: u64,
    pub public_key: Vec<u8>,
    /// [`crate::VaultRecord::public_hash`] of the new record (public shares and members).
    pub record_hash: [u8; 32],
    pub party: [u8; 32],
    pub signature: Vec<u8>,
}

impl ReadyStatement {
    fn signed_bytes(&self) -> Vec<u8> {
        let mut out = READY_TAG.to_vec();
        lp(&mut out, self.vault_id.as_bytes());
        out.extend_from_slice(&self.context);
        out.extend_from_slice(&self.epoch.to_be_bytes());
        lp(&mut out, &self.public_key);
        out.extend_from_slice(&self.record_hash);
        out.extend_from_slice(&self.party);
        out
    }

    pub fn sign(
        keys: &PartyKeys,
        vault_id: &str,
        context: [u8; 32],
        epoch: u64,
        public_key: &[u8],
        record_hash: [u8; 32],
    ) -> ReadyStatement {
        let mut r = ReadyStatement {
            vault_id: vault_id.to_string(),
            context,
            epoch,
            public_key: public_key.to_vec(),
            record_hash,
            party: keys.party_id(),
            signature: Vec::new(),
        };
        r.signature = keys.sign(&r.signed_bytes()).to_vec();
        r
    }

    pub fn verify(&self) -> bool {
        verify(&self.party, &self.signed_bytes(), &self.signature)
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    pub fn decode(b: &[u8]) -> Result<ReadyStatement, CommitError> {
        if b.len() > MAX_BYTES {
            return Err(CommitError::Format("READY too large".into()));
        }
        postcard::from_bytes(b).map_err(|e| CommitError::Format(format!("READY: {e}")))
    }
}

/// What a ceremony's commit is about, as this party knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitTarget {
    pub vault_id: String,
    pub context: [u8; 32],
    pub epoch: u64,
    pub public_key: Vec<u8>,
    /// The new record's public hash. None for a dealer that leaves: it never sees the new
    /// public shares, and takes the one every new party confirms.
    pub record_hash: Option<[u8; 32]>,
    /// The new committee (sorted).
    pub new_parties: Vec<[u8; 32]>,
}

impl CommitTarget {
    /// Checks one READY: signed by a new party, for this ceremony, key and epoch.
    pub fn check(&self, r: &ReadyStatement) -> Result<(), CommitError> {
        let bad = |detail: &str| CommitError::BadReady {
            party: short(&r.party),
            detail: detail.to_string(),
        };
        if !self.new_parties.contains(&r.party) {
            return Err(bad("the sender is not in the new committee"));
        }
        if !r.verify() {
            return Err(bad("the signature does not verify"));
        }
        if r.vault_id != self.vault_id || r.context != self.context {
            return Err(bad("it is for another vault or ceremony"));
        }
        if r.epoch != self.epoch || r.public_key != self.public_key {
            return Err(bad(&format!(
                "it confirms epoch {} with {} public key; this ceremony makes epoch {} with the vault's key",
                r.epoch,
                if r.public_key == self.public_key {
                    "the same"
                } else {
                    "another"
                },
                self.epoch
            )));
        }
        if let Some(h) = self.record_hash
            && h != r.record_hash
        {
            return Err(bad(
                "it confirms another new record (other public shares or members) than this party's",
            ));
        }
        Ok(())
    }

    /// One valid READY per new party, all naming the same record, if `pool` holds them.
    pub fn certificate<'a>(
        &self,
        pool: impl IntoIterator<Item = &'a ReadyStatement>,
    ) -> Option<Vec<ReadyStatement>> {
        // Group valid statements by the record they confirm; a certificate is a full group.
        let mut groups: BTreeMap<[u8; 32], BTreeMap<[u8; 32], ReadyStatement>> = BTreeMap::new();
        for r in pool {
            if self.check(r).is_ok() {
                groups
                    .entry(r.record_hash)
                    .or_default()
                    .entry(r.party)
                    .or_insert_with(|| r.clone());
            }
        }
        groups
            .into_values()
            .find(|g| g.len() == self.new_parties.len())
            .map(|g| g.into_values().collect())
    }
}

/// This party's part in the commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// In the new committee: it holds a pending share.
    NewParty,
    /// A dealer that is not in the new committee: it keeps its old share until it sees a
    /// certificate, then retires from the vault.
    LeavingDealer,
}

/// Where a party's commit stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// The new share is sealed as pending; no READY signed yet.
    Sealed,
    /// This party's READY is signed (and perhaps sent): pending is never deleted by itself.
    ReadySent,
    /// A dealer that leaves is waiting for the certificate.
    Dealt,
    /// The ceremony ended without a certificate: needs resolve.
    InDoubt,
    /// A certificate is held: pending is (or, after a crash, will be) current.
    Committed,
    /// A dealer that left the committee saw the certificate: its old share is retired.
    Retired,
    /// Resolved without a certificate: every new party's report showed none.
    Discarded,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Sealed => "sealed",
            Phase::ReadySent => "ready_sent",
            Phase::Dealt => "dealt",
            Phase::InDoubt => "in_doubt",
            Phase::Committed => "committed",
            Phase::Retired => "retired",
            Phase::Discarded => "discarded",
        }
    }

    /// Still to be decided: the ceremony ended (or crashed) before a certificate.
    pub fn needs_resolve(self) -> bool {
        matches!(
            self,
            Phase::Sealed | Phase::ReadySent | Phase::Dealt | Phase::InDoubt
        )
    }
}

/// What a party keeps about the commit of its latest keygen or reshare of a vault.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitState {
    pub target: CommitTarget,
    pub role: Role,
    pub phase: Phase,
    /// The epoch this party held before (None for a keygen or a party joining).
    pub old_epoch: Option<u64>,
    pub own_ready: Option<ReadyStatement>,
    /// Valid READYs received (a certificate once Committed or Retired).
    pub received: Vec<ReadyStatement>,
    pub updated_at_ms: i64,
}

impl CommitState {
    pub fn new(target: CommitTarget, role: Role, old_epoch: Option<u64>, now_ms: i64) -> Self {
        CommitState {
            target,
            role,
            phase: match role {
                Role::NewParty => Phase::Sealed,
                Role::LeavingDealer => Phase::Dealt,
            },
            old_epoch,
            own_ready: None,
            received: Vec::new(),
            updated_at_ms: now_ms,
        }
    }

    /// Adds valid statements to `received` (invalid ones are ignored: the caller checked
    /// what it wants to report).
    pub fn absorb<'a>(&mut self, statements: impl IntoIterator<Item = &'a ReadyStatement>) {
        for r in statements {
            if self.target.check(r).is_ok() && !self.received.iter().any(|x| x == r) {
                self.received.push(r.clone());
            }
        }
    }

    /// A state read back after a restart: a ceremony no longer runs, so an unfinished
    /// phase is in doubt.
    pub fn ended(mut self) -> Self {
        if matches!(self.phase, Phase::Sealed | Phase::ReadySent | Phase::Dealt) {
            self.phase = Phase::InDoubt;
        }
        self
    }

    /// The encoding kept on disk; the daemon signs it with its identity key.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = STATE_MAGIC.to_vec();
        out.push(VERSION);
        out.extend(postcard::to_allocvec(self).unwrap_or_default());
        out
    }

    pub fn decode(b: &[u8]) -> Result<CommitState, CommitError> {
        if b.len() > MAX_BYTES {
            return Err(CommitError::Format("too large".into()));
        }
        let rest = b
            .strip_prefix(STATE_MAGIC.as_slice())
            .ok_or_else(|| CommitError::Format("not a commit record (bad magic)".into()))?;
        match rest.split_first() {
            Some((&VERSION, body)) => {
                postcard::from_bytes(body).map_err(|e| CommitError::Format(e.to_string()))
            }
            Some((v, _)) => Err(CommitError::Format(format!(
                "version {v}; this build reads {VERSION}"
            ))),
            None => Err(CommitError::Format("truncated".into())),
        }
    }
}

/// The shares a reporting party holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Holding {
    pub current_epoch: Option<u64>,
    pub pending_epoch: Option<u64>,
}

/// A party's signed account of its latest commit of a vault, given only when no ceremony
/// of the vault runs there (so it describes an ended ceremony and never changes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub vault_id: String,
    pub party: [u8; 32],
    /// The ceremony this report is about (None: the party has no commit record).
    pub context: Option<[u8; 32]>,
    pub phase: Option<Phase>,
    /// The epoch of its current share (None: it holds none), whatever its state.
    pub current_epoch: Option<u64>,
    /// The epoch of a pending share it holds (None: none).
    pub pending_epoch: Option<u64>,
    /// The ceremony (context) or challenge the asker named: a report about another
    /// ceremony counts in a decision only when it was made in answer to a question about
    /// this one, which proves it was signed after this ceremony began (its context hashes
    /// every participant's fresh HELLO value). A stale report cannot stand in for it.
    pub about: Option<[u8; 32]>,
    /// The newest epoch this party has seen the vault at (current, pending, or the epoch
    /// it retired at): what a stale-backup check compares with.
    pub epoch_seen: Option<u64>,
    /// Every READY it holds for that ceremony, its own included.
    pub readies: Vec<ReadyStatement>,
    pub at_ms: i64,
    pub signature: Vec<u8>,
}

impl Report {
    fn signed_bytes(&self) -> Vec<u8> {
        let mut out = REPORT_TAG.to_vec();
        let mut body = self.clone();
        body.signature.clear();
        out.extend(postcard::to_allocvec(&body).unwrap_or_default());
        out
    }

    pub fn sign(
        keys: &PartyKeys,
        vault_id: &str,
        state: Option<&CommitState>,
        current_epoch: Option<u64>,
        at_ms: i64,
    ) -> Report {
        Report::answer(
            keys,
            vault_id,
            state,
            Holding {
                current_epoch,
                pending_epoch: None,
            },
            None,
            at_ms,
        )
    }

    /// A report in answer to a question `about` a ceremony (its context) or a challenge.
    pub fn answer(
        keys: &PartyKeys,
        vault_id: &str,
        state: Option<&CommitState>,
        holding: Holding,
        about: Option<[u8; 32]>,
        at_ms: i64,
    ) -> Report {
        let Holding {
            current_epoch,
            pending_epoch,
        } = holding;
        let target_epoch = state.and_then(|s| match s.phase {
            // Only a certificate shows the new epoch exists; an open commit may still be
            // discarded.
            Phase::Committed | Phase::Retired => Some(s.target.epoch),
            _ => None,
        });
        let mut readies: Vec<ReadyStatement> = Vec::new();
        if let Some(s) = state {
            for r in s.own_ready.iter().chain(s.received.iter()) {
                if !readies.contains(r) {
                    readies.push(r.clone());
                }
            }
        }
        let mut r = Report {
            vault_id: vault_id.to_string(),
            party: keys.party_id(),
            context: state.map(|s| s.target.context),
            phase: state.map(|s| s.phase),
            current_epoch,
            pending_epoch,
            about,
            epoch_seen: current_epoch.max(target_epoch),
            readies,
            at_ms,
            signature: Vec::new(),
        };
        r.signature = keys.sign(&r.signed_bytes()).to_vec();
        r
    }

    pub fn verify(&self) -> bool {
        verify(&self.party, &self.signed_bytes(), &self.signature)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = REPORT_MAGIC.to_vec();
        out.push(VERSION);
        out.extend(postcard::to_allocvec(self).unwrap_or_default());
        out
    }

    pub fn decode(b: &[u8]) -> Result<Report, CommitError> {
        if b.len() > MAX_BYTES {
            return Err(CommitError::Format("report too large".into()));
        }
        let rest = b
            .strip_prefix(REPORT_MAGIC.as_slice())
            .ok_or_else(|| CommitError::Format("not a commit report (bad magic)".into()))?;
        match rest.split_first() {
            Some((&VERSION, body)) => {
                postcard::from_bytes(body).map_err(|e| CommitError::Format(format!("report: {e}")))
            }
            Some((v, _)) => Err(CommitError::Format(format!(
                "report version {v}; this build reads {VERSION}"
            ))),
            None => Err(CommitError::Format("truncated report".into())),
        }
    }

    /// A hash of the signed content, so an operator can tell reports apart in logs.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.signed_bytes()).into()
    }
}

/// What a party in doubt does with the evidence it has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// A certificate: promote pending (a new party) or retire (a dealer that left).
    Promote(Vec<ReadyStatement>),
    /// Every new party reported and no certificate exists anywhere: discard pending (a new
    /// party) or go back to the old share (a dealer that left).
    Discard,
    /// Not enough evidence yet; the reason names whom it waits for.
    Undecided(String),
}

/// The decision rule (see the module docs). `reports` may come from anyone and in any
/// number; unsigned, foreign or irrelevant ones are ignored, and a report that contradicts
/// itself stops the decision with its sender named. `lost` are new parties an operator
/// declares gone for good: their reports are not waited for (a lost party that did hold a
/// certificate is left alone at the new epoch, which the others can reshare away).
pub fn decide(
    state: &CommitState,
    reports: &[Report],
    lost: &[[u8; 32]],
    me: [u8; 32],
) -> Decision {
    let t = &state.target;
    let mut pool: Vec<&ReadyStatement> = state.received.iter().collect();
    pool.extend(state.own_ready.iter());
    let mut reported: BTreeSet<[u8; 32]> = BTreeSet::new();
    let mut problems = Vec::new();
    for r in reports {
        if r.vault_id != t.vault_id || !r.verify() {
            continue;
        }
        // READYs are signed by their parties, so whoever holds them (a dealer that retired
        // with the certificate, say) can show them.
        if !t.new_parties.contains(&r.party) {
            if r.context == Some(t.context) {
                pool.extend(r.readies.iter());
            }
            continue;
        }
        if r.context == Some(t.context) {
            pool.extend(r.readies.iter());
            if matches!(r.phase, Some(Phase::Committed)) && t.certificate(&r.readies).is_none() {
                problems.push(format!(
                    "{} says it committed but shows no certificate",
                    short(&r.party)
                ));
            }
        } else {
            // About another ceremony (or none): it says nothing of this one unless it was
            // made in answer to a question about this one (so after it began).
            if r.about != Some(t.context) {
                continue;
            }
            let newest = r.current_epoch.max(r.pending_epoch).max(r.epoch_seen);
            if newest.is_some_and(|e| e >= t.epoch) {
                // It holds this epoch or a later one by another route: this ceremony may
                // have committed there. Never discard on such a report.
                problems.push(format!(
                    "{} reports another ceremony and holds epoch {}",
                    short(&r.party),
                    newest.unwrap_or(0)
                ));
                continue;
            }
        }
        reported.insert(r.party);
    }
    if let Some(cert) = t.certificate(pool) {
        return Decision::Promote(cert);
    }
    if !problems.is_empty() {
        return Decision::Undecided(problems.join("; "));
    }
    let missing: Vec<String> = t
        .new_parties
        .iter()
        .filter(|p| **p != me && !reported.contains(*p) && !lost.contains(p))
        .map(|p| short(p))
        .collect();
    if missing.is_empty() {
        return Decision::Discard;
    }
    Decision::Undecided(format!(
        "no certificate in the evidence; waiting for reports from {} (or declare them lost)",
        missing.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(n: usize) -> (Vec<PartyKeys>, CommitTarget) {
        let keys: Vec<PartyKeys> = (0..n).map(|_| PartyKeys::generate()).collect();
        let mut ids: Vec<[u8; 32]> = keys.iter().map(|k| k.party_id()).collect();
        ids.sort();
        let t = CommitTarget {
            vault_id: "v".into(),
            context: [9; 32],
            epoch: 3,
            public_key: vec![2; 33],
            record_hash: Some([5; 32]),
            new_parties: ids,
        };
        (keys, t)
    }

    fn ready(k: &PartyKeys, t: &CommitTarget) -> ReadyStatement {
        ReadyStatement::sign(
            k,
            &t.vault_id,
            t.context,
            t.epoch,
            &t.public_key,
            t.record_hash.unwrap_or([0; 32]),
        )
    }

    #[test]
    fn a_certificate_needs_every_new_party_and_one_record() {
        let (keys, t) = setup(3);
        let all: Vec<_> = keys.iter().map(|k| ready(k, &t)).collect();
        assert!(t.certificate(&all[..2]).is_none());
        assert_eq!(t.certificate(&all).map(|c| c.len()), Some(3));
        // A statement for another record (other public shares) does not count.
        let mut other = t.clone();
        other.record_hash = Some([6; 32]);
        let odd = ready(&keys[2], &other);
        assert!(t.certificate([&all[0], &all[1], &odd]).is_none());
        // An outsider, or an altered statement, does not count either.
        let outsider = ready(&PartyKeys::generate(), &t);
        assert!(t.check(&outsider).is_err());
        let mut forged = all[0].clone();
        forged.epoch += 1;
        assert!(t.check(&forged).is_err());
    }

    #[test]
    fn a_certificate_held_by_a_retired_dealer_is_evidence() {
        let (keys, t) = setup(2);
        let me = keys[0].party_id();
        let mut mine = CommitState::new(t.clone(), Role::NewParty, None, 0);
        mine.own_ready = Some(ready(&keys[0], &t));
        mine.phase = Phase::InDoubt;
        // A dealer outside the new committee saw both READYs and retired.
        let dealer = PartyKeys::generate();
        let mut d = CommitState::new(
            CommitTarget {
                record_hash: None,
                ..t.clone()
            },
            Role::LeavingDealer,
            Some(2),
            0,
        );
        d.absorb([&ready(&keys[0], &t), &ready(&keys[1], &t)]);
        d.phase = Phase::Retired;
        let r = Report::sign(&dealer, "v", Some(&d), None, 0);
        // Even with party 1 declared lost, the certificate wins over a discard.
        assert!(matches!(
            decide(&mine, &[r], &[keys[1].party_id()], me),
            Decision::Promote(_)
        ));
    }

    #[test]
    fn reports_decide_promote_discard_or_wait() {
        let (keys, t) = setup(3);
        let me = keys[0].party_id();
        let mut mine = CommitState::new(t.clone(), Role::NewParty, Some(2), 0);
        mine.own_ready = Some(ready(&keys[0], &t));
        mine.phase = Phase::InDoubt;
        // Nobody answered yet.
        assert!(matches!(
            decide(&mine, &[], &[], me),
            Decision::Undecided(_)
        ));
        // Party 1 sent READY and got nothing; party 2 never sent one.
        let mut s1 = CommitState::new(t.clone(), Role::NewParty, Some(2), 0);
        s1.own_ready = Some(ready(&keys[1], &t));
        s1.phase = Phase::InDoubt;
        let r1 = Report::sign(&keys[1], "v", Some(&s1), Some(2), 0);
        // Party 2's report from before this ceremony (no commit record, asked about
        // nothing) does not count: it could be stale.
        let stale = Report::sign(&keys[2], "v", None, Some(2), 0);
        assert!(matches!(
            decide(&mine, &[r1.clone(), stale], &[], me),
            Decision::Undecided(_)
        ));
        let held = |current, pending| Holding {
            current_epoch: current,
            pending_epoch: pending,
        };
        let r2 = Report::answer(&keys[2], "v", None, held(Some(2), None), Some(t.context), 0);
        assert_eq!(decide(&mine, &[r1.clone(), r2], &[], me), Decision::Discard);
        // A party that holds this epoch (or a later one) by another route blocks a discard,
        // as current or as pending.
        for (c, p) in [(Some(3), None), (Some(2), Some(4))] {
            let moved = Report::answer(&keys[2], "v", None, held(c, p), Some(t.context), 0);
            assert!(matches!(
                decide(&mine, &[r1.clone(), moved], &[], me),
                Decision::Undecided(_)
            ));
        }
        // Party 2 did send READY and party 1 received it: a certificate.
        s1.absorb([&ready(&keys[2], &t)]);
        let r1 = Report::sign(&keys[1], "v", Some(&s1), Some(2), 0);
        assert!(matches!(
            decide(&mine, std::slice::from_ref(&r1), &[], me),
            Decision::Promote(_)
        ));
        // Without party 2's report and without the certificate: wait, unless declared lost.
        let mut s1b = CommitState::new(t.clone(), Role::NewParty, Some(2), 0);
        s1b.own_ready = Some(ready(&keys[1], &t));
        let r1b = Report::sign(&keys[1], "v", Some(&s1b), Some(2), 0);
        assert!(matches!(
            decide(&mine, std::slice::from_ref(&r1b), &[], me),
            Decision::Undecided(_)
        ));
        assert_eq!(
            decide(&mine, &[r1b], &[keys[2].party_id()], me),
            Decision::Discard
        );
        // A report altered after signing is ignored.
        let mut bad = r1.clone();
        bad.current_epoch = Some(9);
        assert!(matches!(
            decide(&mine, &[bad], &[], me),
            Decision::Undecided(_)
        ));
    }

    #[test]
    fn encodings_round_trip_and_refuse_junk() {
        let (keys, t) = setup(2);
        let mut s = CommitState::new(t.clone(), Role::NewParty, None, 7);
        s.own_ready = Some(ready(&keys[0], &t));
        assert_eq!(CommitState::decode(&s.encode()).unwrap(), s);
        let r = Report::sign(&keys[0], "v", Some(&s), None, 1);
        assert_eq!(Report::decode(&r.encode()).unwrap(), r);
        assert!(Report::decode(b"junk").is_err());
        assert!(CommitState::decode(&[b'C', b'C', b'M', b'T', 9]).is_err());
        let rs = ready(&keys[1], &t);
        assert_eq!(ReadyStatement::decode(&rs.encode()).unwrap(), rs);
    }
}
