//! A development CA and certificates for a local set-up (`cosignerctl certs init`).
//!
//! Production deployments bring their own PKI; they only need to put the identity URI of
//! [`crate::spiffe_uri`] into each certificate. This module exists so that a newcomer, the
//! quickstart and the tests get a working mutual-TLS set-up with one command.

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use crate::{PkiError, Role, spiffe_uri, validate_name};

/// What to issue. Daemon certificates are server *and* client certificates with the `party`
/// role, because a daemon also calls its peers as a vault party.
#[derive(Debug, Clone)]
pub struct DevPkiSpec {
    pub trust_domain: String,
    pub daemons: Vec<String>,
    pub admins: Vec<String>,
    pub parties: Vec<String>,
    /// DNS names and IP addresses the daemons answer on.
    pub hosts: Vec<String>,
    pub validity_days: i64,
}

impl Default for DevPkiSpec {
    fn default() -> Self {
        DevPkiSpec {
            trust_domain: "cosigner".into(),
            daemons: vec!["cosignerd".into()],
            admins: vec!["admin".into()],
            parties: vec!["device-1".into()],
            hosts: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            validity_days: 365,
        }
    }
}

/// The files `init` wrote, for printing.
#[derive(Debug)]
pub struct Issued {
    pub ca_cert: PathBuf,
    pub files: Vec<PathBuf>,
}

/// Creates `dir` (mode 0700) with `ca.pem`, `ca.key` and `<name>.pem`/`<name>.key` for every
/// identity of `spec`. Keys are written with mode 0600. Refuses to overwrite an existing CA
/// unless `force`, because replacing it silently would lock every existing client out.
pub fn init(dir: &Path, spec: &DevPkiSpec, force: bool) -> Result<Issued, PkiError> {
    validate_name("trust domain", &spec.trust_domain)?;
    let mut seen = HashSet::new();
    let all = spec
        .daemons
        .iter()
        .chain(&spec.admins)
        .chain(&spec.parties)
        .map(String::as_str);
    for name in all.chain(["ca"]) {
        validate_name("identity name", name)?;
        if !seen.insert(name) {
            return Err(PkiError::InvalidName {
                what: "identity name",
                value: name.to_string(),
                why: "is used twice (names are file names; 'ca' is reserved)",
            });
        }
    }
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| PkiError::Io { path, source }
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))?;
    let ca_cert = dir.join("ca.pem");
    if ca_cert.exists() && !force {
        return Err(PkiError::Exists(ca_cert.display().to_string()));
    }

    let now = OffsetDateTime::now_utc();
    let not_before = now - Duration::hours(1);
    let not_after = now + Duration::days(spec.validity_days.max(1));

    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = dn(&format!("cosigner dev CA ({})", spec.trust_domain));
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.not_before = not_before;
    ca_params.not_after = not_after + Duration::days(1);
    let ca_key = KeyPair::generate()?;
    let ca_key_pem = ca_key.serialize_pem();
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key)?;

    let mut files = Vec::new();
    write_file(&ca_cert, ca.pem().as_bytes(), 0o644).map_err(io(&ca_cert))?;
    let ca_key_path = dir.join("ca.key");
    write_file(&ca_key_path, ca_key_pem.as_bytes(), 0o600).map_err(io(&ca_key_path))?;
    files.push(ca_cert.clone());
    files.push(ca_key_path);

    let leaves = spec
        .daemons
        .iter()
        .map(|n| (n, true))
        .chain(spec.admins.iter().map(|n| (n, false)))
        .chain(spec.parties.iter().map(|n| (n, false)));
    for (name, is_daemon) in leaves {
        let role = if spec.admins.contains(name) {
            Role::Admin
        } else {
            Role::Party
        };
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(name);
        params.not_before = not_before;
        params.not_after = not_after;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.subject_alt_names = vec![SanType::URI(
            spiffe_uri(&spec.trust_domain, role, name).try_into()?,
        )];
        if is_daemon {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
            for host in &spec.hosts {
                params.subject_alt_names.push(match host.parse::<IpAddr>() {
                    Ok(ip) => SanType::IpAddress(ip),
                    Err(_) => SanType::DnsName(host.clone().try_into()?),
                });
            }
        }
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &ca)?;
        let cert_path = dir.join(format!("{name}.pem"));
        let key_path = dir.join(format!("{name}.key"));
        write_file(&cert_path, cert.pem().as_bytes(), 0o644).map_err(io(&cert_path))?;
        write_file(&key_path, key.serialize_pem().as_bytes(), 0o600).map_err(io(&key_path))?;
        files.push(cert_path);
        files.push(key_path);
    }
    Ok(Issued { ca_cert, files })
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

/// Replaces `path` with `data`, created with `mode` from the start so a key is never
/// readable by others, not even for an instant.
fn write_file(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity_from_der;
    use std::os::unix::fs::PermissionsExt;

    fn der_of(pem_path: &Path) -> Vec<u8> {
        let pem = fs::read_to_string(pem_path).unwrap();
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        base64_decode(&b64)
    }

    // Tiny decoder so the test needs no extra crate.
    fn base64_decode(s: &str) -> Vec<u8> {
        const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = Vec::new();
        let mut buf = 0u32;
        let mut bits = 0;
        for c in s.bytes().filter(|&c| c != b'=') {
            let v = T.iter().position(|&t| t == c).unwrap() as u32;
            buf = (buf << 6) | v;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((buf >> bits) as u8);
            }
        }
        out
    }

    #[test]
    fn issues_roles_and_private_keys() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("certs");
        let spec = DevPkiSpec {
            parties: vec!["alice".into(), "bob".into()],
            ..DevPkiSpec::default()
        };
        let issued = init(&dir, &spec, false).unwrap();
        assert_eq!(issued.files.len(), 2 + 2 * 4);
        let admin = identity_from_der(&der_of(&dir.join("admin.pem")), "cosigner").unwrap();
        assert_eq!(admin.role, Role::Admin);
        let daemon = identity_from_der(&der_of(&dir.join("cosignerd.pem")), "cosigner").unwrap();
        assert_eq!(daemon.role, Role::Party);
        let bob = identity_from_der(&der_of(&dir.join("bob.pem")), "cosigner").unwrap();
        assert_eq!((bob.role, bob.name.as_str()), (Role::Party, "bob"));
        for key in ["ca.key", "admin.key", "alice.key"] {
            let mode = fs::metadata(dir.join(key)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{key}");
        }
        let dir_mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);

        // A second run must not silently replace the CA.
        let err = init(&dir, &spec, false).unwrap_err();
        assert!(matches!(err, PkiError::Exists(_)), "{err}");
        init(&dir, &spec, true).unwrap();
    }

    #[test]
    fn duplicate_and_reserved_names_refused() {
        let tmp = tempfile::tempdir().unwrap();
        for spec in [
            DevPkiSpec {
                parties: vec!["admin".into()],
                ..DevPkiSpec::default()
            },
            DevPkiSpec {
                parties: vec!["ca".into()],
                ..DevPkiSpec::default()
            },
            DevPkiSpec {
                parties: vec!["../evil".into()],
                ..DevPkiSpec::default()
            },
        ] {
            let err = init(tmp.path(), &spec, false).unwrap_err();
            assert!(matches!(err, PkiError::InvalidName { .. }), "{err}");
        }
        assert!(!tmp.path().join("ca.pem").exists());
    }
}
