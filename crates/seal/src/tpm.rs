//! The TPM 2.0 backend (tss-esapi 7 over the system's tpm2-tss).
//!
//! A TPM seals at most 128 bytes, so it seals a 32-byte data key; the share is encrypted
//! with that key in software (see `envelope.rs`). The storage parent is an ECC P-256 primary
//! re-created from a fixed template in the owner hierarchy: the same template gives the same
//! key on the same TPM, so nothing is persisted in the TPM. Every session is salted to that
//! primary, with parameter encryption, so the unsealed key crosses the bus encrypted.
//! Optionally the sealed key is bound to the current values of configured PCRs.
//!
//! Sessions: creating the sealed object sends the data key, and unsealing returns it, so
//! both run in a salted session with parameter encryption; loading the (TPM-encrypted)
//! blob sends nothing secret and uses a password session, which saves one ECDH.
//!
//! `Context` is blocking and not for concurrent use: the [`crate::actor`] owns one on a
//! dedicated thread. Every loaded object and session is flushed after use (swtpm has three
//! transient object slots and no resource manager).

use std::str::FromStr;

use tss_esapi::attributes::{ObjectAttributesBuilder, SessionAttributesBuilder};
use tss_esapi::constants::SessionType;
use tss_esapi::constants::response_code::Tss2ResponseCodeKind;
use tss_esapi::handles::{KeyHandle, ObjectHandle, PcrHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{
    Digest, DigestValues, EccPoint, KeyedHashScheme, PcrSelectionList, PcrSelectionListBuilder,
    PcrSlot, Private, Public, PublicBuilder, PublicEccParametersBuilder, PublicKeyedHashParameters,
    SensitiveData, SymmetricDefinition, SymmetricDefinitionObject,
};
use tss_esapi::traits::{Marshall, UnMarshall};
use tss_esapi::{Context, TctiNameConf};
use zeroize::Zeroizing;

use crate::error::SealError;

/// A data key sealed by the TPM: the TPM's private and public blobs for the sealed object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedKey {
    pub private: Vec<u8>,
    pub public: Vec<u8>,
}

pub struct TpmBackend {
    ctx: Context,
    primary: KeyHandle,
    /// The TPM name of the storage primary (a hash of its public area): the same TPM
    /// re-creates the same primary from the fixed template, another TPM (or one in the
    /// middle) cannot.
    primary_name: Vec<u8>,
    pcrs: Vec<u8>,
}

fn tpm_err(what: &str, e: tss_esapi::Error) -> SealError {
    let kind = match e {
        tss_esapi::Error::Tss2Error(rc) => rc.kind(),
        _ => None,
    };
    match kind {
        Some(Tss2ResponseCodeKind::PolicyFail) | Some(Tss2ResponseCodeKind::PcrChanged) => {
            SealError::PcrPolicyMismatch
        }
        Some(Tss2ResponseCodeKind::Integrity) => SealError::ForeignTpm,
        Some(Tss2ResponseCodeKind::ObjectMemory) | Some(Tss2ResponseCodeKind::SessionMemory) => {
            SealError::Tpm(format!(
                "{what}: the TPM is out of object or session slots ({e})"
            ))
        }
        _ => SealError::Tpm(format!("{what}: {e}")),
    }
}

fn primary_template() -> Result<Public, SealError> {
    let attrs = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_decrypt(true)
        .with_restricted(true)
        .with_no_da(true)
        .build()
        .map_err(|e| tpm_err("primary attributes", e))?;
    let params = PublicEccParametersBuilder::new_restricted_decryption_key(
        SymmetricDefinitionObject::AES_128_CFB,
        EccCurve::NistP256,
    )
    .build()
    .map_err(|e| tpm_err("primary parameters", e))?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attrs)
        .with_ecc_parameters(params)
        .with_ecc_unique_identifier(EccPoint::default())
        .build()
        .map_err(|e| tpm_err("primary template", e))
}

fn pcr_selection(pcrs: &[u8]) -> Result<PcrSelectionList, SealError> {
    let slots = pcrs
        .iter()
        .map(|&p| {
            PcrSlot::try_from(1u32 << u32::from(p))
                .map_err(|_| SealError::Config(format!("PCR {p} does not exist (0-23)")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    PcrSelectionListBuilder::new()
        .with_selection(HashingAlgorithm::Sha256, &slots)
        .build()
        .map_err(|e| tpm_err("PCR selection", e))
}

/// Flushes transient objects and loaded sessions a previous process left in the TPM.
///
/// Under the kernel's resource manager (/dev/tpmrm0) every connection sees only its own
/// handles, so this finds nothing. Without one (swtpm, /dev/tpm0), whatever is loaded was
/// left by a process that died holding it (cosignerd is the TPM's only user), and a few
/// such deaths fill the TPM's handful of slots (TPM_RC_OBJECT_MEMORY) until it restarts.
fn flush_leftovers(ctx: &mut Context) {
    use tss_esapi::constants::CapabilityType;
    use tss_esapi::constants::tss::{TPM2_LOADED_SESSION_FIRST, TPM2_TRANSIENT_FIRST};
    use tss_esapi::structures::CapabilityData;
    let mut flushed = 0;
    for first in [TPM2_TRANSIENT_FIRST, TPM2_LOADED_SESSION_FIRST] {
        let handles = match ctx.get_capability(CapabilityType::Handles, first, 64) {
            Ok((CapabilityData::Handles(list), _)) => list.to_vec(),
            _ => continue,
        };
        for h in handles {
            if let Ok(obj) = ctx.tr_from_tpm_public(h)
                && ctx.flush_context(obj).is_ok()
            {
                flushed += 1;
            }
        }
    }
    if flushed > 0 {
        tracing::warn!(
            flushed,
            "flushed TPM objects and sessions left by an earlier process"
        );
    }
}

impl TpmBackend {
    /// Connects through `tcti` ("device:/dev/tpmrm0", "swtpm:host=127.0.0.1,port=2321") and
    /// re-creates the storage primary. `pcrs` (indexes 0-23) bind new seals to the current
    /// values of those PCRs; empty means no PCR binding.
    pub fn connect(tcti: &str, pcrs: &[u8]) -> Result<TpmBackend, SealError> {
        if pcrs.iter().any(|&p| p > 23) {
            return Err(SealError::Config("PCR indexes are 0-23".into()));
        }
        let conf = TctiNameConf::from_str(tcti)
            .map_err(|e| SealError::Config(format!("TCTI {tcti:?}: {e}")))?;
        let mut ctx = Context::new(conf).map_err(|e| {
            SealError::Tpm(format!(
                "cannot open the TPM through {tcti:?}: {e} (libtss2 logs the cause on stderr)"
            ))
        })?;
        flush_leftovers(&mut ctx);
        let primary = ctx
            .execute_with_nullauth_session(|c| {
                c.create_primary(
                    Hierarchy::Owner,
                    primary_template()?,
                    None,
                    None,
                    None,
                    None,
                )
                .map_err(|e| tpm_err("create the storage primary", e))
            })?
            .key_handle;
        let primary_name = ctx
            .tr_get_name(primary.into())
            .map_err(|e| tpm_err("read the storage primary's name", e))?
            .value()
            .to_vec();
        Ok(TpmBackend {
            ctx,
            primary,
            primary_name,
            pcrs: pcrs.to_vec(),
        })
    }

    /// The storage primary's TPM name (see [`crate::identity::check_primary`]).
    pub fn primary_name(&self) -> &[u8] {
        &self.primary_name
    }

    /// A session salted to the primary, with parameter encryption both ways.
    fn salted_session(&mut self, kind: SessionType) -> Result<AuthSession, SealError> {
        let session = self
            .ctx
            .start_auth_session(
                Some(self.primary),
                None,
                None,
                kind,
                SymmetricDefinition::AES_128_CFB,
                HashingAlgorithm::Sha256,
            )
            .map_err(|e| tpm_err("start a salted session", e))?
            .ok_or_else(|| SealError::Tpm("the TPM returned no session".into()))?;
        let (attrs, mask) = SessionAttributesBuilder::new()
            .with_decrypt(true)
            .with_encrypt(true)
            .build();
        self.ctx
            .tr_sess_set_attributes(session, attrs, mask)
            .map_err(|e| tpm_err("set session attributes", e))?;
        Ok(session)
    }

    fn flush_session(&mut self, s: AuthSession) {
        let handle: tss_esapi::handles::SessionHandle = s.into();
        let _ = self.ctx.flush_context(ObjectHandle::from(handle));
    }

    /// The policy digest of "these PCRs have their current values".
    fn pcr_policy_digest(&mut self) -> Result<Digest, SealError> {
        let selection = pcr_selection(&self.pcrs)?;
        let trial = self.salted_session(SessionType::Trial)?;
        let result = (|| {
            let ps = PolicySession::try_from(trial).map_err(|e| tpm_err("trial session", e))?;
            self.ctx
                .policy_pcr(ps, Digest::default(), selection)
                .map_err(|e| tpm_err("PolicyPCR (trial)", e))?;
            self.ctx
                .policy_get_digest(ps)
                .map_err(|e| tpm_err("policy digest", e))
        })();
        self.flush_session(trial);
        result
    }

    /// Seals a 32-byte key to this TPM (and, if configured, to the current PCR values).
    pub fn seal_key(&mut self, key: &[u8; 32]) -> Result<SealedKey, SealError> {
        let policy = if self.pcrs.is_empty() {
            Digest::default()
        } else {
            self.pcr_policy_digest()?
        };
        let bound = !self.pcrs.is_empty();
        let attrs = ObjectAttributesBuilder::new()
            .with_fixed_tpm(true)
            .with_fixed_parent(true)
            .with_no_da(true)
            .with_admin_with_policy(true)
            // With a PCR policy, only the policy authorises unsealing.
            .with_user_with_auth(!bound)
            .build()
            .map_err(|e| tpm_err("sealed object attributes", e))?;
        let public = PublicBuilder::new()
            .with_public_algorithm(PublicAlgorithm::KeyedHash)
            .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
            .with_object_attributes(attrs)
            .with_auth_policy(policy)
            .with_keyed_hash_parameters(PublicKeyedHashParameters::new(KeyedHashScheme::Null))
            .with_keyed_hash_unique_identifier(Digest::default())
            .build()
            .map_err(|e| tpm_err("sealed object template", e))?;
        let data =
            SensitiveData::try_from(key.to_vec()).map_err(|e| tpm_err("sensitive data", e))?;
        let session = self.salted_session(SessionType::Hmac)?;
        let primary = self.primary;
        let created = self.ctx.execute_with_session(Some(session), |c| {
            c.create(primary, public, None, Some(data), None, None)
        });
        self.flush_session(session);
        let created = created.map_err(|e| tpm_err("seal", e))?;
        Ok(SealedKey {
            private: created.out_private.value().to_vec(),
            public: created
                .out_public
                .marshall()
                .map_err(|e| tpm_err("marshal the sealed object", e))?,
        })
    }

    /// Unseals a key sealed by [`TpmBackend::seal_key`] on this TPM.
    pub fn unseal_key(&mut self, sealed: &SealedKey) -> Result<Zeroizing<[u8; 32]>, SealError> {
        let private = Private::try_from(sealed.private.clone()).map_err(|_| {
            SealError::Format("the sealed key's TPM private blob is malformed".into())
        })?;
        let public = Public::unmarshall(&sealed.public).map_err(|_| {
            SealError::Format("the sealed key's TPM public blob is malformed".into())
        })?;
        let bound = !public.object_attributes().user_with_auth();
        let primary = self.primary;
        // Loading sends nothing secret (the private blob is already encrypted by the TPM),
        // so it needs no salted session; only the unseal's response does.
        let loaded = self
            .ctx
            .execute_with_session(Some(AuthSession::Password), |c| {
                c.load(primary, private, public)
            })
            .map_err(|e| tpm_err("load the sealed key", e))?;
        let result = self.unseal_loaded(loaded.into(), bound);
        let _ = self.ctx.flush_context(loaded.into());
        let data = result?;
        let bytes = Zeroizing::new(data.value().to_vec());
        let key: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| SealError::Format("the TPM returned a key of the wrong size".into()))?;
        Ok(Zeroizing::new(key))
    }

    fn unseal_loaded(
        &mut self,
        object: ObjectHandle,
        bound: bool,
    ) -> Result<SensitiveData, SealError> {
        let kind = if bound {
            SessionType::Policy
        } else {
            SessionType::Hmac
        };
        let session = self.salted_session(kind)?;
        let result = (|| {
            if bound {
                let ps =
                    PolicySession::try_from(session).map_err(|e| tpm_err("policy session", e))?;
                let selection = pcr_selection(&self.pcrs)?;
                self.ctx
                    .policy_pcr(ps, Digest::default(), selection)
                    .map_err(|e| tpm_err("PolicyPCR", e))?;
            }
            self.ctx
                .execute_with_session(Some(session), |c| c.unseal(object))
                .map_err(|e| tpm_err("unseal", e))
        })();
        self.flush_session(session);
        result
    }

    /// Extends a PCR with the SHA-256 of `data` (diagnostics and tests).
    pub fn pcr_extend(&mut self, pcr: u8, data: &[u8]) -> Result<(), SealError> {
        use tss_esapi::interface_types::algorithm::HashingAlgorithm as H;
        let handle = PcrHandle::try_from(u32::from(pcr))
            .map_err(|_| SealError::Config(format!("PCR {pcr} does not exist")))?;
        let digest = self
            .ctx
            .execute_without_session(|c| {
                c.hash(data.to_vec().try_into()?, H::Sha256, Hierarchy::Null)
            })
            .map_err(|e| tpm_err("hash", e))?
            .0;
        let mut values = DigestValues::new();
        values.set(H::Sha256, digest);
        self.ctx
            .execute_with_session(Some(AuthSession::Password), |c| {
                c.pcr_extend(handle, values)
            })
            .map_err(|e| tpm_err("PCR extend", e))
    }

    /// A liveness probe for the watchdog: asks the TPM for 8 random bytes (the cheapest
    /// command that needs the TPM itself, not only the library, to answer).
    pub fn probe(&mut self) -> Result<(), SealError> {
        self.ctx
            .execute_without_session(|c| c.get_random(8))
            .map(|_| ())
            .map_err(|e| tpm_err("get random", e))
    }

    /// Resets a resettable PCR (16 and 23 at locality 0; diagnostics and tests).
    pub fn pcr_reset(&mut self, pcr: u8) -> Result<(), SealError> {
        let handle = PcrHandle::try_from(u32::from(pcr))
            .map_err(|_| SealError::Config(format!("PCR {pcr} does not exist")))?;
        self.ctx
            .execute_with_session(Some(AuthSession::Password), |c| c.pcr_reset(handle))
            .map_err(|e| tpm_err("PCR reset", e))
    }
}

impl Drop for TpmBackend {
    fn drop(&mut self) {
        let _ = self.ctx.flush_context(self.primary.into());
    }
}

impl From<tss_esapi::Error> for SealError {
    fn from(e: tss_esapi::Error) -> Self {
        tpm_err("TPM", e)
    }
}
