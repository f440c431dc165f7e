//! Certificate conventions of cosigner.
//!
//! A caller's role is carried by its certificate, not by configuration lists, so adding a
//! party is issuing a certificate and nothing else. Every certificate names exactly one
//! identity as a SPIFFE-style URI subject alternative name:
//!
//! ```text
//! spiffe://<trust-domain>/<role>/<name>      role = admin | party
//! ```
//!
//! The TLS layer has already checked that the certificate chains to the configured CA; this
//! crate only reads the identity out of it ([`identity_from_der`]) and, for local set-ups and
//! tests, makes a development CA with certificates in that shape ([`devca`]).

pub mod devca;

use std::fmt;

use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// What a caller may do. Operator-only RPCs need `Admin`; ceremony RPCs accept `Party`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// An operator: status, history, policy, backups.
    Admin,
    /// Another party of a vault: a user's device or a peer daemon.
    Party,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Party => "party",
        }
    }

    fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "party" => Some(Role::Party),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The authenticated identity of a TLS peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub role: Role,
    pub name: String,
}

impl Identity {
    /// The identity's URI in `trust_domain`, as written into certificates and the history.
    pub fn uri(&self, trust_domain: &str) -> String {
        spiffe_uri(trust_domain, self.role, &self.name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate is not valid DER X.509: {0}")]
    BadCertificate(String),
    #[error(
        "certificate carries no spiffe://{trust_domain}/<admin|party>/<name> URI SAN, so it has no cosigner role"
    )]
    NoIdentity { trust_domain: String },
    #[error(
        "certificate carries more than one cosigner identity URI ({0}); refusing an ambiguous role"
    )]
    AmbiguousIdentity(String),
    #[error("invalid {what} {value:?}: {why}")]
    InvalidName {
        what: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{0} already exists; pass --force to replace the whole set (the old CA stops being trusted)"
    )]
    Exists(String),
}

/// `spiffe://<trust_domain>/<role>/<name>`.
pub fn spiffe_uri(trust_domain: &str, role: Role, name: &str) -> String {
    format!("spiffe://{trust_domain}/{}/{name}", role.as_str())
}

/// Names of identities and trust domains: 1-64 characters of `[A-Za-z0-9._-]`, not starting
/// with a dot. Kept narrow so a name can be a file name, a URI path segment and a log field
/// without escaping.
pub fn validate_name(what: &'static str, value: &str) -> Result<(), PkiError> {
    let bad = |why| PkiError::InvalidName {
        what,
        value: value.to_string(),
        why,
    };
    if value.is_empty() || value.len() > 64 {
        return Err(bad("must be 1 to 64 characters"));
    }
    if value.starts_with('.') {
        return Err(bad("must not start with '.'"));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(bad("may contain only A-Z, a-z, 0-9, '.', '_' and '-'"));
    }
    Ok(())
}

/// Reads the cosigner identity out of a DER certificate (the TLS peer's leaf certificate).
///
/// URIs of other trust domains or other schemes are ignored (a certificate may serve other
/// systems too); exactly one identity URI in our trust domain must remain.
pub fn identity_from_der(der: &[u8], trust_domain: &str) -> Result<Identity, PkiError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| PkiError::BadCertificate(e.to_string()))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| PkiError::BadCertificate(e.to_string()))?;
    let prefix = format!("spiffe://{trust_domain}/");
    let mut found: Option<Identity> = None;
    let names = san.map(|s| s.value.general_names.as_slice()).unwrap_or(&[]);
    for gn in names {
        let GeneralName::URI(uri) = gn else { continue };
        let Some(rest) = uri.strip_prefix(&prefix) else {
            continue;
        };
        let Some((role, name)) = rest.split_once('/') else {
            continue;
        };
        let (Some(role), Ok(())) = (Role::parse(role), validate_name("identity name", name)) else {
            continue;
        };
        if found.is_some() {
            return Err(PkiError::AmbiguousIdentity(uri.to_string()));
        }
        found = Some(Identity {
            role,
            name: name.to_string(),
        });
    }
    found.ok_or_else(|| PkiError::NoIdentity {
        trust_domain: trust_domain.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_with_uris(uris: &[&str]) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        for u in uris {
            params
                .subject_alt_names
                .push(rcgen::SanType::URI(u.to_string().try_into().unwrap()));
        }
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn reads_role_and_name() {
        let der = cert_with_uris(&[
            "https://example.com/x",
            "spiffe://cosigner/party/alice-phone",
        ]);
        let id = identity_from_der(&der, "cosigner").unwrap();
        assert_eq!(id.role, Role::Party);
        assert_eq!(id.name, "alice-phone");
        assert_eq!(id.uri("cosigner"), "spiffe://cosigner/party/alice-phone");
    }

    #[test]
    fn other_trust_domain_is_no_identity() {
        let der = cert_with_uris(&["spiffe://other/admin/root"]);
        let err = identity_from_der(&der, "cosigner").unwrap_err();
        assert!(matches!(err, PkiError::NoIdentity { .. }), "{err}");
    }

    #[test]
    fn unknown_role_and_bad_names_are_ignored() {
        let der = cert_with_uris(&[
            "spiffe://cosigner/root/x",
            "spiffe://cosigner/admin/",
            "spiffe://cosigner/admin/a/b",
        ]);
        assert!(identity_from_der(&der, "cosigner").is_err());
    }

    #[test]
    fn two_identities_are_refused() {
        let der = cert_with_uris(&["spiffe://cosigner/party/a", "spiffe://cosigner/admin/a"]);
        let err = identity_from_der(&der, "cosigner").unwrap_err();
        assert!(matches!(err, PkiError::AmbiguousIdentity(_)), "{err}");
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let err = identity_from_der(b"\x30\x03\x02\x01", "cosigner").unwrap_err();
        assert!(matches!(err, PkiError::BadCertificate(_)), "{err}");
    }

    #[test]
    fn name_rules() {
        assert!(validate_name("n", "server-eu.1_a").is_ok());
        for bad in ["", ".hidden", "a/b", "a b", &"x".repeat(65)] {
            assert!(validate_name("n", bad).is_err(), "{bad:?} accepted");
        }
    }
}
