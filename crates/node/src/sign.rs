//! A sign request, from its bytes to a verified signature.
//!
//! The pipeline only goes down, and every step can only refuse:
//!
//! 1. **parse**: the request signature over the exact body bytes (and the clock), then the
//!    body;
//! 2. **check** against this party's own signed public record, read without unsealing: the
//!    epoch, the requester and every signer in the committee, this party among the signers,
//!    the payload decoded and hashed here (never taken from the request), the expected
//!    hashes, the key the signature must verify under;
//! 3. **decide**: the policy, on facts built by [`crate::facts::sign`] (the dry run uses the
//!    same builder);
//! 4. **admit**: the journal's gate (fresh nonce and session, a free slot, STARTED or DENIED
//!    recorded);
//! 5. **unseal**: only now;
//! 6. **run**: HELLO and the engine over the relay ([`take_part`]);
//! 7. **verify** the signature under the vault key, independently of the engine;
//! 8. **record** the outcome; only then does the answer leave.
//!
//! The device party runs the same [`parse`], [`check`] and [`take_part`] (its owner decides
//! instead of a policy, and it refuses raw hashes it cannot show).

use cosigner_api::v1::{SignBody, SignRequest};
use cosigner_party::{Held, VaultRecord};
use cosigner_policy::Decoded;
use cosigner_relay::roster::{self, SignPlan};
use cosigner_relay::{DriveError, Driver, Hello};
use cosigner_tss::{DerivationPath, PartyId, PointBytes, Sign, SignParams, Signature};

use crate::error::NodeError;
use crate::facts::{self, Asker};
use crate::payload;
use crate::ports::{
    Admission, Clock, Decider, Journal, Kind, Observer, Relays, Shares, SignatureOut,
};
pub use crate::server::Server;

/// The gRPC method a sign request is signed for.
pub const METHOD: &str = "/cosigner.v1.Cosigner/Sign";

/// What a party accepts beyond the common checks.
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    /// Sign a bare 32-byte hash. A daemon may, when its policy allows it; a device never
    /// does (it cannot show its owner what the hash stands for).
    pub raw_hash: bool,
}

/// A sign request whose signature holds: the requester and the body.
pub type Parsed = crate::request::Parsed<SignBody>;

/// Step 1: the request's signature over the exact body bytes, within `max_skew_ms` of
/// `now_ms`, then the body.
pub fn parse(req: &SignRequest, now_ms: i64, max_skew_ms: i64) -> Result<Parsed, NodeError> {
    let requester =
        crate::request::requester(req.auth.as_ref(), METHOD, &req.body, now_ms, max_skew_ms)?;
    Ok(Parsed {
        requester,
        body: parse_body(&req.body)?,
    })
}

/// The body alone (for a dry run, which carries no request signature).
pub fn parse_body(bytes: &[u8]) -> Result<SignBody, NodeError> {
    crate::request::body(bytes, "SignBody", |b: &SignBody| &b.vault_id)
}

/// A request checked against this party's public record: everything the ceremony needs.
#[derive(Debug)]
pub struct Checked {
    pub requester: [u8; 32],
    pub body: SignBody,
    pub record: VaultRecord,
    pub path: DerivationPath,
    pub plan: SignPlan,
    pub decoded: Decoded,
    pub message_hash: [u8; 32],
    /// The key the signature must verify under (the vault key, derived along the path).
    pub public_key: PointBytes,
}

impl Checked {
    pub fn signer_ids(&self) -> Vec<[u8; 32]> {
        self.plan.signers.iter().map(|m| m.id).collect()
    }
}

/// Step 2: the request against `record` (this party's own, read without unsealing), as
/// party `me`. `body_bytes` are the signed bytes (the roster binds them).
pub fn check(
    body_bytes: &[u8],
    parsed: Parsed,
    record: VaultRecord,
    me: [u8; 32],
    rules: Rules,
) -> Result<Checked, NodeError> {
    let Parsed { requester, body } = parsed;
    let path = DerivationPath::parse(&body.derivation_path)
        .map_err(|e| NodeError::invalid("derivation_path", e))?;
    let relay = body
        .relay
        .as_ref()
        .ok_or_else(|| NodeError::invalid("relay", "missing"))?;
    let epoch = record.epoch();
    if body.epoch != epoch {
        return Err(NodeError::precondition(format!(
            "the request is for epoch {}, this party holds epoch {epoch} of vault {:?}: {}",
            body.epoch,
            body.vault_id,
            if body.epoch < epoch {
                "the requester missed a reshare and must be reshared in (its old share is useless now)"
            } else {
                "this party missed the end of a reshare: resolve it with the other parties' reports (`cosignerctl vault resolve`)"
            }
        )));
    }
    let plan = roster::sign(
        body_bytes,
        &record,
        &relay.session_id,
        &body.signers,
        requester,
        me,
    )?;
    if !rules.raw_hash && payload::is_raw_hash(body.payload.as_ref()) {
        return Err(NodeError::not_allowed(
            "a raw hash: this party never signs what it cannot show its owner",
        ));
    }
    let decoded = payload::decode(body.payload.as_ref(), Some(&payload::vault_key(&record)))?;
    let computed: Vec<Vec<u8>> = decoded.hashes.iter().map(|h| h.to_vec()).collect();
    if !body.expected_hashes.is_empty() && body.expected_hashes != computed {
        return Err(NodeError::precondition(
            "expected_hashes differ from the hashes this party computed from the payload; refusing to sign",
        ));
    }
    let message_hash = decoded.single_hash(&path.0)?;
    let public_key = record.public.derive(&path)?;
    Ok(Checked {
        requester,
        body,
        record,
        path,
        plan,
        decoded,
        message_hash,
        public_key,
    })
}

/// The signers a request names, as [`check`] reads them (32 bytes each, none twice, every
/// one in `record`'s committee), sorted: what the policy sees as `request.parties`, in the
/// real gate and in the dry run alike.
pub fn signers(record: &VaultRecord, listed: &[Vec<u8>]) -> Result<Vec<[u8; 32]>, NodeError> {
    let ids = roster::ids("signers", listed)?;
    if let Some(stranger) = ids.iter().find(|id| record.member(id).is_none()) {
        return Err(NodeError::invalid(
            "signers",
            format!(
                "{} is not in the vault's committee",
                cosigner_party::keys::short(stranger)
            ),
        ));
    }
    Ok(ids)
}

/// Step 6: this party's part, HELLO at its epoch then the engine's rounds. The share is
/// dropped as soon as the engine holds its own copy.
pub async fn take_part(
    d: &mut Driver,
    held: Held,
    c: &Checked,
    pending: Option<u64>,
) -> Result<Signature, DriveError> {
    let epoch = c.record.epoch();
    d.hello(
        Hello {
            epoch: Some(epoch),
            pending,
        },
        &|_| Some(epoch),
    )
    .await?;
    let params = SignParams {
        signers: c.plan.signers.iter().map(|m| PartyId(m.id)).collect(),
        message_hash: c.message_hash,
        path: c.path.clone(),
        nonce: d.engine_nonce()?,
    };
    let ceremony = Sign::new(&held.share, params)?;
    drop(held);
    d.run(ceremony).await
}

/// Step 7: the signature verifies under the vault key, checked here, apart from the
/// engine's own check, before it leaves.
pub fn verify(c: &Checked, sig: &Signature) -> Result<(), NodeError> {
    if sig.public_key != c.public_key
        || !cosigner_tss::verify_ecdsa(&c.public_key, &c.message_hash, &sig.r, &sig.s)
    {
        return Err(NodeError::internal(
            "the ceremony's signature does not verify under the vault key",
        ));
    }
    Ok(())
}

/// A signature, verified and recorded.
#[derive(Debug)]
pub struct Signed {
    pub checked: Checked,
    pub signature: Signature,
    /// The journal entry of the outcome.
    pub seq: u64,
}

impl<S, J, D, R, C, O> Server<'_, S, J, D, R, C, O>
where
    S: Shares,
    J: Journal,
    D: Decider,
    R: Relays,
    C: Clock,
    O: Observer,
{
    /// Serves one sign request through the whole pipeline (module docs).
    pub async fn sign(&self, req: &SignRequest, tls_identity: &str) -> Result<Signed, NodeError> {
        let now = self.clock.now_ms();
        let parsed = parse(req, now, self.max_clock_skew_ms)?;
        let record = self.shares.signing_record(&parsed.body.vault_id).await?;
        let c = check(&req.body, parsed, record, self.me(), self.rules)?;
        self.networks.check(&c.body.vault_id, &c.decoded)?;
        let asker = Asker {
            requester: c.requester,
            tls_identity: tls_identity.to_string(),
        };
        let windows = self.journal.windows(&c.body.vault_id, now).await?;
        let decision = self
            .decider
            .decide(cosigner_policy::input::document(&facts::sign(
                &c.record,
                &c.path,
                &c.signer_ids(),
                &c.decoded,
                &asker,
                windows,
                now,
            )));
        self.observer.decided(Kind::Sign, &decision);
        let relay = c
            .body
            .relay
            .clone()
            .ok_or_else(|| NodeError::invalid("relay", "missing"))?;
        let admitted = self
            .journal
            .admit(
                Admission {
                    kind: Kind::Sign,
                    vault_id: &c.body.vault_id,
                    epoch: c.record.epoch(),
                    committee: Some(&c.record.public.committee),
                    payload: c.body.payload.as_ref(),
                    decoded: Some(&c.decoded),
                    requester: c.requester,
                    nonce: crate::request::nonce(req.auth.as_ref()),
                    tls_identity,
                    relay: &relay,
                },
                &decision,
            )
            .await?;
        // Unsealed last: every cheap check has passed and the request is on record.
        let run = async {
            let held = self.shares.unseal(&c.body.vault_id).await?;
            let pending = self.shares.pending(&c.body.vault_id).await?;
            let mut d = self
                .relays
                .open(Kind::Sign, &relay, c.plan.roster.clone())
                .await?;
            let sig = take_part(&mut d, held, &c, pending).await?;
            verify(&c, &sig)?;
            Ok::<_, NodeError>(sig)
        };
        let signature = match run.await {
            Ok(s) => s,
            Err(e) => return Err(self.journal.failed(&admitted, e).await),
        };
        let seq = self
            .journal
            .signed(
                &admitted,
                &[SignatureOut {
                    hash: c.message_hash,
                    r: signature.r,
                    s: signature.s,
                    recovery_id: signature.recovery_id,
                }],
            )
            .await?;
        Ok(Signed {
            checked: c,
            signature,
            seq,
        })
    }
}
