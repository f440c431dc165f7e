//! A bad configuration stops cosignerd before it serves: exit code 78 (EX_CONFIG) and one
//! line on stderr naming the key or file. `--check-config` says the same without starting.

use std::path::Path;
use std::process::Command;

use cosigner_tests::{Pki, bin, test_dir, write_config};

/// Runs cosignerd both ways on `config` and returns the one-line error.
fn refused(config: &Path) -> String {
    let mut lines = Vec::new();
    for args in [vec!["--check-config"], vec!["--config"]] {
        let out = Command::new(bin("cosignerd"))
            .args(&args)
            .arg(config)
            .env_remove("COSIGNER_SERVER__LISTEN")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(78), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err:?}");
        lines.push(err.trim_end().to_string());
    }
    assert_eq!(lines[0], lines[1]);
    lines.remove(0)
}

fn good_config(dir: &Path, pki: &Pki) -> String {
    let path = write_config(
        dir,
        pki,
        "127.0.0.1:1".parse().unwrap(),
        &dir.join("data"),
        "",
        &cosigner_tests::tpm_seal("swtpm:host=127.0.0.1,port=2321"),
        "",
    )
    .unwrap();
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn check_config_accepts_a_good_file() {
    let tmp = test_dir();
    let pki = Pki::init(tmp.path(), "certs").unwrap();
    let _ = good_config(tmp.path(), &pki);
    let out = Command::new(bin("cosignerd"))
        .arg("--check-config")
        .arg(tmp.path().join("cosignerd.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));
    // Checking starts nothing: no data directory appears.
    assert!(!tmp.path().join("data").exists());
}

#[test]
fn missing_file() {
    let tmp = test_dir();
    let err = refused(&tmp.path().join("nope.toml"));
    assert!(
        err.contains("nope.toml") && err.contains("not found"),
        "{err}"
    );
}

#[test]
fn unknown_key() {
    let tmp = test_dir();
    let pki = Pki::init(tmp.path(), "certs").unwrap();
    let text = good_config(tmp.path(), &pki).replace("[data]", "[data]\ndirectory = \"x\"");
    let path = tmp.path().join("cosignerd.toml");
    std::fs::write(&path, text).unwrap();
    let err = refused(&path);
    assert!(err.contains("directory"), "{err}");
}

#[test]
fn malformed_address() {
    let tmp = test_dir();
    let pki = Pki::init(tmp.path(), "certs").unwrap();
    let text = good_config(tmp.path(), &pki).replace("127.0.0.1:1", "localhost-7443");
    let path = tmp.path().join("cosignerd.toml");
    std::fs::write(&path, text).unwrap();
    let err = refused(&path);
    assert!(
        err.contains("server.listen") && err.contains("localhost-7443"),
        "{err}"
    );
}

#[test]
fn unreadable_and_unparseable_certificates() {
    let tmp = test_dir();
    let pki = Pki::init(tmp.path(), "certs").unwrap();
    let good = good_config(tmp.path(), &pki);
    let path = tmp.path().join("cosignerd.toml");

    let missing = pki.file("nobody.pem");
    std::fs::write(
        &path,
        good.replace(
            pki.file("cosignerd.pem").to_str().unwrap(),
            missing.to_str().unwrap(),
        ),
    )
    .unwrap();
    let err = refused(&path);
    assert!(
        err.contains("tls.cert") && err.contains("nobody.pem"),
        "{err}"
    );

    let garbage = tmp.path().join("garbage.pem");
    std::fs::write(&garbage, "this is not a certificate\n").unwrap();
    std::fs::write(
        &path,
        good.replace(
            pki.file("ca.pem").to_str().unwrap(),
            garbage.to_str().unwrap(),
        ),
    )
    .unwrap();
    let err = refused(&path);
    assert!(
        err.contains("tls.ca") && err.contains("garbage.pem"),
        "{err}"
    );

    // A certificate in place of the key: named, and the file's content is not echoed.
    std::fs::write(
        &path,
        good.replace(
            pki.file("cosignerd.key").to_str().unwrap(),
            pki.file("admin.pem").to_str().unwrap(),
        ),
    )
    .unwrap();
    let err = refused(&path);
    assert!(err.contains("tls.key"), "{err}");
    assert!(!err.contains("BEGIN"), "{err}");
}

#[test]
fn bad_environment_override_is_named() {
    let tmp = test_dir();
    let pki = Pki::init(tmp.path(), "certs").unwrap();
    let _ = good_config(tmp.path(), &pki);
    let out = Command::new(bin("cosignerd"))
        .arg("--check-config")
        .arg(tmp.path().join("cosignerd.toml"))
        .env("COSIGNER_SERVER__LISTEN", "not-an-address")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("server.listen") && err.contains("not-an-address"),
        "{err}"
    );
}

/// The commented example in deploy/ stays a valid config: every key it shows exists.
/// Its paths point at /etc, so the test points them at dev certificates through the
/// environment, which also exercises the override path operators use.
#[test]
fn deploy_example_config_is_valid() {
    let tmp = test_dir();
    let pki = Pki::init(tmp.path(), "certs").unwrap();
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/cosignerd.example.toml"
    );
    let out = Command::new(bin("cosignerd"))
        .arg("--check-config")
        .arg(example)
        .env("COSIGNER_TLS__CA", pki.file("ca.pem"))
        .env("COSIGNER_TLS__CERT", pki.file("cosignerd.pem"))
        .env("COSIGNER_TLS__KEY", pki.file("cosignerd.key"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without the overrides it fails on the first missing file, by name.
    let out = Command::new(bin("cosignerd"))
        .arg("--check-config")
        .arg(example)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/etc/cosigner/tls/ca.pem"));
}
