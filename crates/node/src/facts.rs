//! The facts a policy decides on, built in one place for each ceremony kind, so the real
//! gate and the dry run (`EvaluatePolicy`) show the policy the same input: the epoch from
//! this party's record (never the request's), the requester's name from the committee, the
//! same windows.

use cosigner_party::keys::hex;
use cosigner_party::{Member, VaultRecord};
use cosigner_policy::Decoded;
use cosigner_policy::input::{self, Facts, Request, VaultFacts, WindowFacts};
use cosigner_tss::Committee;
use cosigner_tss::DerivationPath;

/// Who asks: the party that signed the request, and the TLS identity it came through.
#[derive(Clone, Debug)]
pub struct Asker {
    pub requester: [u8; 32],
    pub tls_identity: String,
}

/// What the journal knows of a vault's recent use.
#[derive(Clone, Debug, Default)]
pub struct Windows {
    /// 1h, 24h, 7d.
    pub windows: Vec<(&'static str, WindowFacts)>,
    pub last_reshare_at_ms: Option<i64>,
}

pub fn vault(r: &VaultRecord) -> VaultFacts {
    VaultFacts {
        vault_id: r.vault_id().to_string(),
        public_key: hex(&r.public.public_key.0),
        epoch: r.epoch(),
        threshold: u32::from(r.public.committee.threshold()),
        members: members(&r.members),
        created_at_ms: r.created_at_ms,
        last_reshare_at_ms: r.last_reshare_at_ms,
    }
}

fn members(m: &[Member]) -> Vec<input::Member> {
    m.iter()
        .map(|m| input::Member {
            name: m.name.clone(),
            party_id: hex(&m.id),
        })
        .collect()
}

fn name_in(members: &[Member], id: &[u8; 32]) -> String {
    members
        .iter()
        .find(|m| m.id == *id)
        .map(|m| m.name.clone())
        .unwrap_or_default()
}

/// A keygen: no vault yet; the committee as the request names it.
pub fn keygen(
    vault_id: &str,
    committee: &Committee,
    committee_members: &[Member],
    asker: &Asker,
    now_ms: i64,
) -> Facts<'static> {
    Facts {
        request: Request {
            kind: "keygen".into(),
            refresh: false,
            scheduled: false,
            vault_id: vault_id.to_string(),
            epoch: 0,
            derivation_path: String::new(),
            parties: Vec::new(),
            committee: Some((u32::from(committee.threshold()), members(committee_members))),
        },
        requester_id: asker.requester,
        requester_name: name_in(committee_members, &asker.requester),
        tls_identity: asker.tls_identity.clone(),
        vault: None,
        payload: None,
        windows: Vec::new(),
        last_reshare_at_ms: None,
        now_ms,
    }
}

/// A signature: the vault as this party holds it, the path as parsed, the signers the
/// request names, the payload as this party decoded it.
pub fn sign<'a>(
    record: &VaultRecord,
    derivation_path: &DerivationPath,
    signers: &[[u8; 32]],
    decoded: &'a Decoded,
    asker: &Asker,
    windows: Windows,
    now_ms: i64,
) -> Facts<'a> {
    Facts {
        request: Request {
            kind: "sign".into(),
            refresh: false,
            scheduled: false,
            vault_id: record.vault_id().to_string(),
            epoch: record.epoch(),
            // The canonical form (`m/44/60/0/0/1`): `44/60/0/0/1` and `m/044/...` name
            // the same key, and a rule on the path must not be escaped by spelling it
            // another way.
            derivation_path: derivation_path.to_string(),
            parties: signers.iter().map(|s| hex(s)).collect(),
            committee: None,
        },
        requester_id: asker.requester,
        requester_name: name_in(&record.members, &asker.requester),
        tls_identity: asker.tls_identity.clone(),
        vault: Some(vault(record)),
        payload: Some(decoded),
        windows: windows.windows,
        last_reshare_at_ms: windows.last_reshare_at_ms,
        now_ms,
    }
}

/// What a reshare changes, as the roster plan worked it out.
pub struct ReshareChange<'a> {
    pub old: &'a VaultRecord,
    pub dealers: &'a [[u8; 32]],
    pub new_committee: &'a Committee,
    pub new_members: &'a [Member],
    pub refresh: bool,
    pub scheduled: bool,
}

/// A reshare: the old vault as this party relies on it, the dealers and the new committee.
pub fn reshare(
    change: &ReshareChange<'_>,
    asker: &Asker,
    windows: Windows,
    now_ms: i64,
) -> Facts<'static> {
    let old = change.old;
    let requester_name = match name_in(&old.members, &asker.requester) {
        n if n.is_empty() => name_in(change.new_members, &asker.requester),
        n => n,
    };
    Facts {
        request: Request {
            kind: "reshare".into(),
            refresh: change.refresh,
            scheduled: change.scheduled,
            vault_id: old.vault_id().to_string(),
            epoch: old.epoch(),
            derivation_path: String::new(),
            parties: change.dealers.iter().map(|d| hex(d)).collect(),
            committee: Some((
                u32::from(change.new_committee.threshold()),
                members(change.new_members),
            )),
        },
        requester_id: asker.requester,
        requester_name,
        tls_identity: asker.tls_identity.clone(),
        vault: Some(vault(old)),
        payload: None,
        windows: windows.windows,
        last_reshare_at_ms: windows.last_reshare_at_ms,
        now_ms,
    }
}
