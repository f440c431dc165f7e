//! GetVaultRecord: this party's public record of a vault, its endorsement and its signed
//! commit report. Coordinators ask it for endorsements before a reshare, parties ask it
//! for the reports a resolve decides on, and a restored backup asks it whether its epoch
//! is still the newest. All of it is read without unsealing.

use cosigner_api::v1::{VaultRecordBody, VaultRecordRequest, VaultRecordResponse};
use cosigner_relay::commit::{Holding, Report};
use cosigner_relay::keys::short;
use cosigner_relay::roster;

use crate::error::{Code, NodeError};
use crate::ports::{Clock, Journal, Shares};
use crate::request::{self, GET_VAULT_RECORD};
use crate::server::Server;
use crate::standing::Standing;

impl<S: Shares, J: Journal, D, R, C: Clock, O> Server<'_, S, J, D, R, C, O> {
    /// Answers a GetVaultRecord request. A caller that is a party (`party_caller`, from its
    /// certificate) must sign the request and be a member of the vault as this party's own
    /// record says; an operator's certificate is enough for the rest. A party that holds
    /// nothing of the vault answers with a report that says so, so a keygen or reshare
    /// that never reached this party's commit does not wait for its report forever.
    pub async fn vault_record(
        &self,
        req: &VaultRecordRequest,
        party_caller: bool,
    ) -> Result<VaultRecordResponse, NodeError> {
        let now = self.clock.now_ms();
        let requester = if party_caller {
            Some(request::requester(
                req.auth.as_ref(),
                GET_VAULT_RECORD,
                &req.body,
                now,
                self.max_clock_skew_ms,
            )?)
        } else {
            None
        };
        let body: VaultRecordBody =
            request::body(&req.body, "VaultRecordBody", |b: &VaultRecordBody| {
                &b.vault_id
            })?;
        let vault = body.vault_id.as_str();
        // A ceremony in progress here would make the report stale at once. (Only checked,
        // not held: a caller asking in a loop must not keep ceremonies from starting.)
        if self.journal.changing(vault) {
            return Err(NodeError::new(
                Code::Unavailable,
                format!(
                    "a keygen, reshare or resolve of vault {vault:?} is running here; ask again when it has ended"
                ),
            ));
        }
        let about = match body.about.len() {
            0 => None,
            32 => body.about.as_slice().try_into().ok(),
            n => {
                return Err(NodeError::invalid(
                    "about",
                    format!("{n} bytes; 32 or none"),
                ));
            }
        };
        let Some(view) = self.shares.view(vault).await? else {
            let commit = self.shares.commit_state(vault).await?;
            let report = Report::answer(
                self.keys,
                vault,
                commit.as_ref(),
                Holding::default(),
                about,
                now,
            );
            return Ok(VaultRecordResponse {
                party_id: self.me().to_vec(),
                record: Vec::new(),
                endorsement: None,
                commit_report: report.encode(),
                state: "none".into(),
                epoch: 0,
            });
        };
        if let Some(r) = requester
            && view.record.member(&r).is_none()
        {
            return Err(NodeError::new(
                Code::PermissionDenied,
                format!(
                    "party {} is not in the committee of vault {vault:?}",
                    short(&r)
                ),
            ));
        }
        let epoch = match view.standing {
            Standing::Retired(e) => e,
            _ => view.record.epoch(),
        };
        let report = Report::answer(
            self.keys,
            vault,
            view.commit.as_ref(),
            Holding {
                current_epoch: view.slots.current,
                pending_epoch: view.slots.pending,
            },
            about,
            now,
        );
        Ok(VaultRecordResponse {
            party_id: self.me().to_vec(),
            record: view.record.encode(),
            // Only a record in use is endorsed.
            endorsement: (view.standing == Standing::Active)
                .then(|| roster::endorse(self.keys, &view.record)),
            commit_report: report.encode(),
            state: view.standing.as_str().to_string(),
            epoch,
        })
    }
}
