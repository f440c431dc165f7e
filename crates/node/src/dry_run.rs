//! The policy dry run (`EvaluatePolicy`): the input document a real request would get,
//! built by the same builders as the gate ([`crate::facts`]) from this party's own record,
//! and the policy's answer. It signs nothing, records nothing and unseals nothing.

use cosigner_party::record::committee_from_api;
use cosigner_policy::{Decision, Decoded};

use crate::error::NodeError;
use crate::facts::{self, Asker};
use crate::ports::{Clock, Decider, Journal, Shares};
use crate::server::Server;

/// Which request a dry run is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DryRun {
    Sign,
    Keygen,
}

/// What the policy would see and say.
pub struct Evaluated {
    pub document: serde_json::Value,
    pub decision: Decision,
    /// The payload as decoded here (a sign request only).
    pub decoded: Option<Decoded>,
}

impl<S, J, D, R, C, O> Server<'_, S, J, D, R, C, O>
where
    S: Shares,
    J: Journal,
    D: Decider,
    C: Clock,
{
    /// The policy's answer to `body` as `requester` would send it: for a sign request, from
    /// this party's record (its epoch, the requester's name in its committee, the payload
    /// decoded here, its windows); for a keygen, from the committee the body names.
    pub async fn evaluate(
        &self,
        kind: DryRun,
        body: &[u8],
        requester: [u8; 32],
        tls_identity: &str,
    ) -> Result<Evaluated, NodeError> {
        let asker = Asker {
            requester,
            tls_identity: tls_identity.to_string(),
        };
        let now = self.clock.now_ms();
        let (document, decoded) = match kind {
            DryRun::Sign => {
                let body = crate::sign::parse_body(body)?;
                let path = cosigner_tss::DerivationPath::parse(&body.derivation_path)
                    .map_err(|e| NodeError::invalid("derivation_path", e))?;
                let record = self.shares.signing_record(&body.vault_id).await?;
                let decoded = crate::payload::decode(
                    body.payload.as_ref(),
                    Some(&crate::payload::vault_key(&record)),
                )?;
                self.networks.check(&body.vault_id, &decoded)?;
                let signers = crate::sign::signers(&record, &body.signers)?;
                let windows = self.journal.windows(&body.vault_id, now).await?;
                let doc = cosigner_policy::input::document(&facts::sign(
                    &record, &path, &signers, &decoded, &asker, windows, now,
                ));
                (doc, Some(decoded))
            }
            DryRun::Keygen => {
                let body = crate::keygen::parse_body(body)?;
                let (committee, members) = committee_from_api(
                    body.committee
                        .as_ref()
                        .ok_or_else(|| NodeError::invalid("committee", "missing"))?,
                )
                .map_err(|e| NodeError::invalid("committee", e))?;
                let doc = cosigner_policy::input::document(&facts::keygen(
                    &body.vault_id,
                    &committee,
                    &members,
                    &asker,
                    now,
                ));
                (doc, None)
            }
        };
        let decision = self.decider.decide(document.clone());
        Ok(Evaluated {
            document,
            decision,
            decoded,
        })
    }
}
