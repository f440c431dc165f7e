//! The participant list of one ceremony (its *roster*), built only from authenticated
//! sources, and the hash every participant signs into its HELLO.
//!
//! Whom a party encrypts to decides who can read its dealt fragments, so the list must not
//! come from whoever sends the request. The rules, the same for the daemon and the device:
//!
//! - a member this party already knows (it holds the vault) is taken, name and keys, from
//!   its own record, never from the request; a request that lists a known member with other
//!   keys or another name is refused, naming the member;
//! - a party joining the committee is known only from the signed request, and is checked
//!   again by its own signed HELLO (which names its encryption key);
//! - a party that holds nothing of the vault and joins only as a new member takes the old
//!   record from the request, and only with endorsements by at least t old members over
//!   its public hash ([`VaultRecord::public_hash`]).
//!
//! [`Roster::hash`] covers the ceremony kind, vault, epoch, thresholds, dealers, the new
//! committee, every participant's id and encryption key, the relay session and the SHA-256
//! of the request body. Every participant signs it into its HELLO; one party that was shown
//! another request, or another key for anyone, sees a different hash and the ceremony stops
//! before round one.

use std::collections::BTreeSet;

use cosigner_api::v1 as api;
use cosigner_tss::{Committee, PartyId};
use sha2::{Digest, Sha256};

use crate::keys::{Member, short, verify};
use crate::record::{VaultRecord, committee_from_api};

const ROSTER_TAG: &[u8] = b"cosigner/v1/roster";
const ENDORSE_TAG: &[u8] = b"cosigner/v1/endorse-record";

/// Why a request cannot be taken part in. Each names the party or field at fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RosterError {
    /// The request is malformed.
    #[error("{field}: {detail}")]
    Invalid { field: &'static str, detail: String },
    /// The request contradicts this party's own record of the vault.
    #[error("{0}")]
    Conflict(String),
    /// The requester may not ask for this.
    #[error("{0}")]
    NotAllowed(String),
}

fn invalid(field: &'static str, detail: impl Into<String>) -> RosterError {
    RosterError::Invalid {
        field,
        detail: detail.into(),
    }
}

/// Which ceremony a roster is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RosterKind {
    Keygen,
    Sign,
    Reshare,
}

impl RosterKind {
    fn tag(self) -> &'static [u8] {
        match self {
            RosterKind::Keygen => b"keygen",
            RosterKind::Sign => b"sign",
            RosterKind::Reshare => b"reshare",
        }
    }
}

/// Everything a ceremony is about that decides whom a party talks to.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Roster {
    pub kind: RosterKind,
    pub vault_id: String,
    pub relay_session: Vec<u8>,
    /// SHA-256 of the request body every participant was given.
    pub request_digest: [u8; 32],
    /// Sign: the vault's epoch; reshare: the old epoch; keygen: 0.
    pub epoch: u64,
    /// The threshold the ceremony uses (sign) or makes (keygen, reshare).
    pub threshold: u8,
    /// Reshare: the old threshold; otherwise 0.
    pub old_threshold: u8,
    /// Reshare: the dealers; sign: the signers; keygen: empty. Sorted.
    pub dealers: Vec<[u8; 32]>,
    /// Keygen: the committee; reshare: the new committee; sign: the signers. Sorted.
    pub committee: Vec<[u8; 32]>,
    /// Everyone who takes part, sorted by id, as this party knows them.
    pub participants: Vec<Member>,
}

impl Roster {
    pub fn hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        let mut lp = |b: &[u8]| {
            h.update((b.len() as u64).to_be_bytes());
            h.update(b);
        };
        lp(ROSTER_TAG);
        lp(self.kind.tag());
        lp(self.vault_id.as_bytes());
        lp(&self.relay_session);
        lp(&self.request_digest);
        lp(&self.epoch.to_be_bytes());
        lp(&[self.threshold, self.old_threshold]);
        lp(&(self.dealers.len() as u64).to_be_bytes());
        for d in &self.dealers {
            lp(d);
        }
        lp(&(self.committee.len() as u64).to_be_bytes());
        for c in &self.committee {
            lp(c);
        }
        lp(&(self.participants.len() as u64).to_be_bytes());
        for m in &self.participants {
            lp(&m.id);
            lp(&m.encryption_key);
        }
        h.finalize().into()
    }

    pub fn member(&self, id: &[u8; 32]) -> Option<&Member> {
        self.participants.iter().find(|m| &m.id == id)
    }
}

/// SHA-256 of a request body, as the roster binds it.
pub fn request_digest(body: &[u8]) -> [u8; 32] {
    Sha256::digest(body).into()
}

/// Party ids from a request field: 32 bytes each, none twice, sorted.
pub fn ids(field: &'static str, v: &[Vec<u8>]) -> Result<Vec<[u8; 32]>, RosterError> {
    let mut out = Vec::with_capacity(v.len());
    let mut seen = BTreeSet::new();
    for (i, p) in v.iter().enumerate() {
        let id: [u8; 32] = p.as_slice().try_into().map_err(|_| {
            invalid(
                field,
                format!("entry {i} is {} bytes; a party id is 32", p.len()),
            )
        })?;
        if !seen.insert(id) {
            return Err(invalid(field, format!("{} is listed twice", short(&id))));
        }
        out.push(id);
    }
    out.sort();
    Ok(out)
}

fn same_member(known: &Member, listed: &Member) -> bool {
    known.id == listed.id
        && known.encryption_key == listed.encryption_key
        && known.name == listed.name
}

fn who(m: &Member) -> String {
    if m.name.is_empty() {
        short(&m.id)
    } else {
        format!("{} ({})", m.name, short(&m.id))
    }
}

/// This party's own public facts, checked against what a request says of it.
fn check_me(me: &Member, listed: &[Member]) -> Result<bool, RosterError> {
    match listed.iter().find(|m| m.id == me.id) {
        None => Ok(false),
        Some(m) if m.encryption_key != me.encryption_key => Err(RosterError::Conflict(format!(
            "the request lists this party ({}) with another encryption key than its own; take the key from `cosignerctl status` (or `party show`)",
            short(&me.id)
        ))),
        Some(_) => Ok(true),
    }
}

/// A checked keygen request.
#[derive(Debug)]
pub struct KeygenPlan {
    pub roster: Roster,
    pub committee: Committee,
    pub members: Vec<Member>,
}

/// Keygen: nobody holds a record yet, so the committee comes from the request; each
/// member's key is then confirmed by its own signed HELLO, and the roster hash makes every
/// participant agree on the whole list.
pub fn keygen(
    body: &[u8],
    vault_id: &str,
    relay_session: &[u8],
    committee: Option<&api::Committee>,
    requester: [u8; 32],
    me: &Member,
) -> Result<KeygenPlan, RosterError> {
    let committee = committee.ok_or_else(|| invalid("committee", "missing"))?;
    let (committee, members) =
        committee_from_api(committee).map_err(|e| invalid("committee", e.to_string()))?;
    if !check_me(me, &members)? {
        return Err(RosterError::Conflict(format!(
            "this party ({}) is not in the committee",
            short(&me.id)
        )));
    }
    if !members.iter().any(|m| m.id == requester) {
        return Err(RosterError::NotAllowed(format!(
            "the request was signed by {}, who is not in the committee",
            short(&requester)
        )));
    }
    let ids: Vec<[u8; 32]> = members.iter().map(|m| m.id).collect();
    Ok(KeygenPlan {
        roster: Roster {
            kind: RosterKind::Keygen,
            vault_id: vault_id.to_string(),
            relay_session: relay_session.to_vec(),
            request_digest: request_digest(body),
            epoch: 0,
            threshold: committee.threshold(),
            old_threshold: 0,
            dealers: Vec::new(),
            committee: ids,
            participants: members.clone(),
        },
        committee,
        members,
    })
}

/// A checked sign request.
#[derive(Debug)]
pub struct SignPlan {
    pub roster: Roster,
    pub signers: Vec<Member>,
}

/// Sign: every signer comes from this party's own record of the vault.
pub fn sign(
    body: &[u8],
    record: &VaultRecord,
    relay_session: &[u8],
    signers: &[Vec<u8>],
    requester: [u8; 32],
    me: [u8; 32],
) -> Result<SignPlan, RosterError> {
    if record.member(&requester).is_none() {
        return Err(RosterError::NotAllowed(format!(
            "party {} is not in the committee of vault {:?}",
            short(&requester),
            record.vault_id()
        )));
    }
    let signer_ids = ids("signers", signers)?;
    let mut members = Vec::with_capacity(signer_ids.len());
    for s in &signer_ids {
        members.push(record.member(s).cloned().ok_or_else(|| {
            invalid(
                "signers",
                format!("{} is not in the vault's committee", short(s)),
            )
        })?);
    }
    if !signer_ids.contains(&me) {
        return Err(RosterError::Conflict(format!(
            "this party ({}) is not one of the signers",
            short(&me)
        )));
    }
    let t = record.public.committee.threshold();
    if members.len() != usize::from(t) {
        return Err(invalid(
            "signers",
            format!(
                "{} signers; vault {:?} at epoch {} needs exactly {t}",
                members.len(),
                record.vault_id(),
                record.epoch()
            ),
        ));
    }
    Ok(SignPlan {
        roster: Roster {
            kind: RosterKind::Sign,
            vault_id: record.vault_id().to_string(),
            relay_session: relay_session.to_vec(),
            request_digest: request_digest(body),
            epoch: record.epoch(),
            threshold: t,
            old_threshold: 0,
            dealers: signer_ids.clone(),
            committee: signer_ids,
            participants: members.clone(),
        },
        signers: members,
    })
}

/// What a reshare request says, before it is checked.
pub struct ReshareRequest<'a> {
    pub body: &'a [u8],
    pub vault_id: &'a str,
    pub old_epoch: u64,
    /// The request's `old_vault`.
    pub old_vault: &'a [u8],
    pub endorsements: &'a [api::Endorsement],
    pub dealers: &'a [Vec<u8>],
    pub new_committee: Option<&'a api::Committee>,
    pub relay_session: &'a [u8],
    pub requester: [u8; 32],
}

/// A checked reshare request.
#[derive(Debug)]
pub struct ResharePlan {
    pub roster: Roster,
    /// The old record this party relies on: its own if it holds the vault.
    pub old: VaultRecord,
    pub new_committee: Committee,
    /// The new committee's members: known ones from the old record, joiners from the request.
    pub new_members: Vec<Member>,
    pub dealers: Vec<[u8; 32]>,
    /// This party holds nothing of the vault and joins only as a new member.
    pub joins_only: bool,
    pub is_dealer: bool,
    pub in_new_committee: bool,
    /// Same committee, same keys, same threshold: a refresh.
    pub refresh: bool,
}

/// Reshare: see the module docs. `held` is this party's own record of the vault at its
/// current epoch (None: it holds no share of it).
pub fn reshare(
    req: &ReshareRequest<'_>,
    held: Option<&VaultRecord>,
    me: &Member,
) -> Result<ResharePlan, RosterError> {
    let claimed =
        VaultRecord::decode(req.old_vault).map_err(|e| invalid("old_vault", e.to_string()))?;
    if claimed.vault_id() != req.vault_id || claimed.epoch() != req.old_epoch {
        return Err(invalid(
            "old_vault",
            format!(
                "describes vault {:?} epoch {}, the request vault {:?} epoch {}",
                claimed.vault_id(),
                claimed.epoch(),
                req.vault_id,
                req.old_epoch
            ),
        ));
    }
    let old = match held {
        Some(h) => {
            if h.public != claimed.public {
                return Err(RosterError::Conflict(format!(
                    "the request's old vault record (epoch {}) differs from this party's (epoch {}): {}",
                    claimed.epoch(),
                    h.epoch(),
                    if claimed.epoch() > h.epoch() {
                        "this party missed a reshare; resolve it (`cosignerctl vault resolve`) or reshare it back in"
                    } else if claimed.epoch() < h.epoch() {
                        "the requester's record is stale"
                    } else {
                        "same epoch, other public shares or key: one of the two records is not the vault's"
                    }
                )));
            }
            for m in &claimed.members {
                match h.member(&m.id) {
                    Some(k) if same_member(k, m) => {}
                    _ => {
                        return Err(RosterError::Conflict(format!(
                            "the request's old vault record lists member {} with other keys or another name than this party's record of vault {:?}; refusing (a request must not choose whom a party encrypts to)",
                            who(m),
                            req.vault_id
                        )));
                    }
                }
            }
            h.clone()
        }
        None => {
            let n = check_endorsements(&claimed, req.endorsements)?;
            let t = usize::from(claimed.public.committee.threshold());
            if n < t {
                return Err(RosterError::NotAllowed(format!(
                    "this party holds no share of vault {:?} and joins only as a new member, so the old record must be endorsed by at least {t} of its members; {n} valid endorsement(s) came with the request",
                    req.vault_id
                )));
            }
            claimed
        }
    };
    let dealers = ids("dealers", req.dealers)?;
    for d in &dealers {
        if old.member(d).is_none() {
            return Err(invalid(
                "dealers",
                format!("{} is not in the old committee", short(d)),
            ));
        }
    }
    let api_new = req
        .new_committee
        .ok_or_else(|| invalid("new_committee", "missing"))?;
    let (new_committee, listed) =
        committee_from_api(api_new).map_err(|e| invalid("new_committee", e.to_string()))?;
    let mut new_members = Vec::with_capacity(listed.len());
    for m in listed {
        match old.member(&m.id) {
            Some(k) if same_member(k, &m) => new_members.push(k.clone()),
            Some(_) => {
                return Err(RosterError::Conflict(format!(
                    "the new committee lists member {} with other keys or another name than this party's record of vault {:?}; refusing (a request must not choose whom a party encrypts to)",
                    who(&m),
                    req.vault_id
                )));
            }
            None => new_members.push(m),
        }
    }
    let in_new_committee = check_me(me, &new_members)?;
    let is_dealer = dealers.contains(&me.id);
    if is_dealer && held.is_none() {
        return Err(RosterError::Conflict(format!(
            "this party is named as a dealer but holds no share of vault {:?}",
            req.vault_id
        )));
    }
    if !in_new_committee && !is_dealer {
        return Err(RosterError::Conflict(format!(
            "this party ({}) is neither a dealer nor in the new committee",
            short(&me.id)
        )));
    }
    if old.member(&req.requester).is_none() && !new_members.iter().any(|m| m.id == req.requester) {
        return Err(RosterError::NotAllowed(format!(
            "party {} is in neither the old nor the new committee of vault {:?}",
            short(&req.requester),
            req.vault_id
        )));
    }
    // Everyone who takes part: the new committee and the dealers, all as known here.
    let mut participants = new_members.clone();
    for d in &dealers {
        if !participants.iter().any(|p| p.id == *d)
            && let Some(m) = old.member(d)
        {
            participants.push(m.clone());
        }
    }
    participants.sort_by_key(|m| m.id);
    let refresh = new_committee == old.public.committee && new_members == old.members;
    let committee: Vec<[u8; 32]> = new_committee.parties().iter().map(|p| p.0).collect();
    Ok(ResharePlan {
        roster: Roster {
            kind: RosterKind::Reshare,
            vault_id: req.vault_id.to_string(),
            relay_session: req.relay_session.to_vec(),
            request_digest: request_digest(req.body),
            epoch: old.epoch(),
            threshold: new_committee.threshold(),
            old_threshold: old.public.committee.threshold(),
            dealers: dealers.clone(),
            committee,
            participants,
        },
        joins_only: held.is_none(),
        old,
        new_committee,
        new_members,
        dealers,
        is_dealer,
        in_new_committee,
        refresh,
    })
}

/// The bytes an old member signs to endorse a record.
fn endorse_bytes(public_hash: &[u8; 32]) -> Vec<u8> {
    let mut out = ENDORSE_TAG.to_vec();
    out.extend_from_slice(public_hash);
    out
}

/// An old member's endorsement of its record (sent to a coordinator that asks).
pub fn endorse(keys: &crate::PartyKeys, record: &VaultRecord) -> api::Endorsement {
    api::Endorsement {
        party_id: keys.party_id().to_vec(),
        signature: keys.sign(&endorse_bytes(&record.public_hash())).to_vec(),
    }
}

/// How many distinct members of `record` endorsed it with a valid signature.
pub fn check_endorsements(
    record: &VaultRecord,
    endorsements: &[api::Endorsement],
) -> Result<usize, RosterError> {
    let msg = endorse_bytes(&record.public_hash());
    let mut good = BTreeSet::new();
    for e in endorsements {
        let Ok(id) = <[u8; 32]>::try_from(e.party_id.as_slice()) else {
            return Err(invalid(
                "old_vault_endorsements",
                "a party id is not 32 bytes",
            ));
        };
        if record.member(&id).is_none() {
            return Err(RosterError::NotAllowed(format!(
                "old_vault_endorsements: {} is not a member of the old record",
                short(&id)
            )));
        }
        if !verify(&id, &msg, &e.signature) {
            return Err(RosterError::NotAllowed(format!(
                "old_vault_endorsements: the endorsement by {} does not verify over this record",
                short(&id)
            )));
        }
        good.insert(id);
    }
    Ok(good.len())
}

/// The committee members as the engine names them.
pub fn party_ids(members: &[Member]) -> Vec<PartyId> {
    members.iter().map(|m| PartyId(m.id)).collect()
}
