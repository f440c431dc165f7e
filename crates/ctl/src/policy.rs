//! `cosignerctl policy ...`: test a bundle locally, dry-run a request on a daemon, reload.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use clap::Subcommand;
use cosigner_api::v1 as pb;
use cosigner_api::v1::cosigner_client::CosignerClient;
use cosigner_policy::{Bundle, Verdict};
use prost::Message as _;
use serde_json::json;

use crate::connect::ConnectArgs;
use crate::payload::{NetworkArg, PayloadArgs};

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Load a bundle (it must compile and pass its own test_ rules) and decide one input
    /// document (JSON, as docs/policy.md describes). Exit 0 when allowed, 1 otherwise.
    Test {
        #[arg(long, value_name = "DIR")]
        bundle: PathBuf,
        #[arg(long, value_name = "FILE")]
        input: PathBuf,
    },
    /// Ask a daemon what its policy would decide for a sign request (admin); signs nothing.
    Evaluate {
        #[arg(long)]
        vault: String,
        /// The requesting party (hex party id).
        #[arg(long)]
        requester: String,
        #[command(flatten)]
        payload: PayloadArgs,
        #[command(flatten)]
        network: NetworkArg,
        /// BIP-32 non-hardened path the request would sign at.
        #[arg(long, default_value = "")]
        path: String,
        /// Print the input document the policy saw.
        #[arg(long)]
        show_input: bool,
    },
    /// Make the daemon load its bundle again (admin); the old one stays if the new is bad.
    Reload,
}

fn unhex(s: &str) -> Result<Vec<u8>> {
    cosigner_relay::keys::unhex(s).ok_or_else(|| anyhow!("not hex"))
}

pub async fn run(connect: &ConnectArgs, cmd: PolicyCommand) -> Result<ExitCode> {
    match cmd {
        PolicyCommand::Test { bundle, input } => {
            let b = Bundle::load(&bundle)?;
            let doc: serde_json::Value = serde_json::from_slice(
                &std::fs::read(&input)
                    .with_context(|| format!("cannot read {}", input.display()))?,
            )
            .with_context(|| format!("{} is not JSON", input.display()))?;
            let d = b.decide(doc);
            let allowed = d.verdict == Verdict::Allow;
            println!(
                "{}",
                json!({
                    "bundle_hash": b.hash(),
                    "bundle_tests_passed": b.tests(),
                    "decision": match d.verdict { Verdict::Allow => "allow", Verdict::Deny(_) => "deny", Verdict::NeedsApproval(_) => "needs_approval" },
                    "reasons": d.reasons(),
                })
            );
            Ok(if allowed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        PolicyCommand::Evaluate {
            vault,
            requester,
            payload,
            network,
            path,
            show_input,
        } => {
            let body = pb::SignBody {
                vault_id: vault,
                payload: Some(payload.to_api(&network)?),
                derivation_path: path,
                ..Default::default()
            }
            .encode_to_vec();
            let r = CosignerClient::new(connect.channel().await?)
                .evaluate_policy(pb::EvaluatePolicyRequest {
                    kind: pb::CeremonyKind::Sign as i32,
                    body,
                    requester: unhex(&requester).context("--requester")?,
                })
                .await?
                .into_inner();
            let d = r.decision.unwrap_or_default();
            let mut out = json!({
                "decision": match pb::Decision::try_from(d.decision) { Ok(pb::Decision::Allow) => "allow", Ok(pb::Decision::NeedsApproval) => "needs_approval", _ => "deny" },
                "reasons": d.reasons,
                "policy_hash": d.policy_hash,
                "decoded": r.decoded.map(|x| serde_json::from_str::<serde_json::Value>(&x.json).unwrap_or_default()),
            });
            if show_input {
                out["input"] = serde_json::from_str(&r.input_json).unwrap_or_default();
            }
            println!("{out}");
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Reload => {
            let r = CosignerClient::new(connect.channel().await?)
                .reload_policy(pb::ReloadPolicyRequest {})
                .await?
                .into_inner();
            println!(
                "{}",
                json!({"replaced": r.replaced, "policy_hash": r.policy_hash, "error": r.error})
            );
            Ok(if r.error.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}
