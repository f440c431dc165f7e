//! The journal a party's pipelines record through, made of the [`Gate`] (replay and
//! session memory, ceremony slots), a [`Ledger`] (where entries are written) and the
//! per-vault claims. How each ending is recorded and answered is decided here once: a
//! signature, a commit with its certificate, a commit in doubt, a failure with its blame
//! evidence. A party supplies only the ledger.

use cosigner_relay::finish::CommitEnd;

use crate::error::{Code, NodeError};
use crate::facts::Windows;
use crate::gate::{Changing, Claim, End, Ending, Gate, Ledger, Outcome, Ticket};
use crate::ports::{Admission, Journal, SignatureOut};

/// A gate and a ledger, as the pipelines' journal.
pub struct Gated<'a, L> {
    pub gate: &'a Gate,
    pub ledger: &'a L,
    pub changing: &'a Changing,
}

impl<L: Ledger> Journal for Gated<'_, L> {
    type Admitted = Ticket<L::Entry>;

    async fn windows(&self, vault: &str, now_ms: i64) -> Result<Windows, NodeError> {
        self.ledger.windows(vault, now_ms).await
    }

    async fn admit(
        &self,
        admission: Admission<'_>,
        decision: &cosigner_policy::Decision,
    ) -> Result<Self::Admitted, NodeError> {
        self.gate.admit(self.ledger, admission, decision).await
    }

    async fn signed(
        &self,
        admitted: &Self::Admitted,
        signatures: &[SignatureOut],
    ) -> Result<u64, NodeError> {
        let end = End {
            outcome: Outcome::Succeeded,
            ending: Ending::Signatures(signatures.to_vec()),
            epoch: None,
        };
        self.ledger.ended(admitted, end).await
    }

    async fn failed(&self, admitted: &Self::Admitted, error: NodeError) -> NodeError {
        match self.ledger.ended(admitted, End::failed(&error)).await {
            Ok(_) => error,
            // Not recorded: the answer says so rather than the failure it could not keep.
            Err(e) => e,
        }
    }

    async fn committed(
        &self,
        admitted: &Self::Admitted,
        end: CommitEnd,
        new_epoch: u64,
        public_key: &[u8],
    ) -> Result<u64, NodeError> {
        match end {
            CommitEnd::Committed | CommitEnd::Retired => {
                let end = End {
                    outcome: Outcome::Succeeded,
                    ending: Ending::PublicKey(public_key.to_vec()),
                    epoch: Some(new_epoch),
                };
                self.ledger.ended(admitted, end).await
            }
            CommitEnd::InDoubt(why) => {
                let message = format!(
                    "the {} of vault {:?} (epoch {new_epoch}) is in doubt: {why}. This party keeps what it holds (a new party its new share as pending, a leaving dealer its old share) and signs nothing for the vault until a resolve (`cosignerctl vault resolve`; on a device `party resolve`) decides from the other parties' reports",
                    admitted.kind.as_str(),
                    admitted.vault_id
                );
                let end = End {
                    outcome: Outcome::InDoubt,
                    ending: Ending::Error(message.clone()),
                    epoch: Some(new_epoch),
                };
                self.ledger.ended(admitted, end).await?;
                Err(NodeError::new(Code::Unavailable, message))
            }
            CommitEnd::Failed(why) => {
                let end = End {
                    outcome: Outcome::Failed,
                    ending: Ending::Error(why.clone()),
                    epoch: None,
                };
                self.ledger.ended(admitted, end).await?;
                Err(NodeError::new(Code::Aborted, why))
            }
        }
    }

    type Exclusive = Claim;

    fn exclusive(&self, vault: &str) -> Result<Claim, NodeError> {
        self.changing.claim(vault)
    }

    fn changing(&self, vault: &str) -> bool {
        self.changing.is_claimed(vault)
    }
}
