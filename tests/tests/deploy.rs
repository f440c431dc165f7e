//! The files an operator installs: the systemd unit and its sysusers/tmpfiles snippets,
//! the provisioning script and the quickstart. A config or script that no test runs rots,
//! so the last test fails when deploy/ gains a file that nothing here exercises.

use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cosigner_tests::{bin, test_dir};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// systemd's tools come with the `systemd` package, which scripts/setup.sh installs.
fn systemd_tool(name: &str) -> PathBuf {
    for dir in ["/usr/bin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} is missing: install the systemd package (scripts/setup.sh does)");
}

#[test]
fn systemd_unit_verifies_and_its_exposure_is_at_most_2() {
    let unit = std::fs::read_to_string(repo().join("systemd/cosignerd.service")).unwrap();
    // What the unit must say, whatever the score.
    let lines: Vec<&str> = unit.lines().map(str::trim).collect();
    for want in [
        "Type=notify",
        "User=cosigner",
        "SupplementaryGroups=tss",
        "DevicePolicy=closed",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "SystemCallFilter=@system-service",
        "MemoryDenyWriteExecute=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "WatchdogSec=30s",
        "StateDirectory=cosigner",
    ] {
        assert!(lines.contains(&want), "the unit lacks {want}");
    }
    let devices: Vec<&&str> = lines
        .iter()
        .filter(|l| l.starts_with("DeviceAllow="))
        .collect();
    assert_eq!(devices, [&"DeviceAllow=/dev/tpmrm0 rw"], "only the TPM");

    // `verify` checks that ExecStart exists: point it at the binary the tests built.
    let tmp = test_dir();
    let copy = tmp.path().join("cosignerd.service");
    std::fs::write(
        &copy,
        unit.replace(
            "/usr/bin/cosignerd",
            &bin("cosignerd").display().to_string(),
        ),
    )
    .unwrap();
    let o = Command::new(systemd_tool("systemd-analyze"))
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(o.stderr.is_empty(), "verify warns: {}", text(&o));

    let o = Command::new(systemd_tool("systemd-analyze"))
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&copy)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let line = out
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no overall exposure: {}", text(&o)));
    let score: f64 = line
        .split(':')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the exposure from {line:?}"));
    println!("systemd-analyze security --offline=true: {score} ({line})");
    assert!(score <= 2.0, "exposure {score} > 2.0:\n{out}");
}

#[test]
fn sysusers_and_tmpfiles_make_the_user_and_its_directories() {
    let tmp = test_dir();
    let root = tmp.path();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    let o = Command::new(systemd_tool("systemd-sysusers"))
        .arg(format!("--root={}", root.display()))
        .arg(repo().join("systemd/cosigner.sysusers"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    let group = std::fs::read_to_string(root.join("etc/group")).unwrap();
    let user: Vec<&str> = passwd
        .lines()
        .find(|l| l.starts_with("cosigner:"))
        .unwrap_or_else(|| panic!("no cosigner user: {passwd}"))
        .split(':')
        .collect();
    assert_eq!(user[5], "/var/lib/cosigner");
    assert_eq!(user[6], "/usr/sbin/nologin");
    let (uid, gid): (u32, u32) = (user[2].parse().unwrap(), user[3].parse().unwrap());
    let tss = group
        .lines()
        .find(|l| l.starts_with("tss:"))
        .unwrap_or_else(|| panic!("no tss group: {group}"));
    assert!(
        tss.rsplit(':')
            .next()
            .unwrap()
            .split(',')
            .any(|m| m == "cosigner"),
        "cosigner is not in tss: {tss}"
    );

    let o = Command::new(systemd_tool("systemd-tmpfiles"))
        .arg(format!("--root={}", root.display()))
        .arg("--create")
        .arg(repo().join("systemd/cosigner.tmpfiles"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    // Files this process creates are owned by its effective user.
    let running_as_root = std::fs::metadata(root).unwrap().uid() == 0;
    for (dir, mode, owner) in [
        ("etc/cosigner", 0o750, 0),
        ("etc/cosigner/tls", 0o750, 0),
        ("etc/cosigner/policy", 0o750, 0),
        ("var/lib/cosigner", 0o700, uid),
    ] {
        let m = std::fs::metadata(root.join(dir)).unwrap();
        assert!(m.is_dir(), "{dir}");
        assert_eq!(m.permissions().mode() & 0o7777, mode, "{dir}");
        if running_as_root {
            // Ownership can only be given away by root.
            assert_eq!((m.uid(), m.gid()), (owner, gid), "{dir}");
        }
    }
}

/// A free run of ports base..base+22 (the quickstart uses base+0..3, +10, +11, +20, +21).
fn free_port_block() -> u16 {
    for _ in 0..200 {
        let base = 20_000 + (rand_u16() % 20_000);
        let all_free = [0, 1, 2, 3, 10, 11, 20, 21]
            .iter()
            .all(|o| TcpListener::bind(("127.0.0.1", base + o)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no free block of ports");
}

fn rand_u16() -> u16 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (t.subsec_nanos() ^ std::process::id()) as u16
}

#[test]
fn quickstart_runs_from_start_to_end() {
    let tmp = test_dir();
    let started = std::time::Instant::now();
    let o = Command::new("bash")
        .arg(repo().join("deploy/quickstart.sh"))
        .env("QUICKSTART_BIN", bin("cosignerd").parent().unwrap())
        .env("QUICKSTART_DIR", tmp.path().join("qs"))
        .env("QUICKSTART_PORT", free_port_block().to_string())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    println!(
        "quickstart with prebuilt binaries: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let all = text(&o);
    assert!(o.status.success(), "{all}");
    for want in [
        "provision: every config passes cosignerd --check-config",
        "server-a serves on",
        "server-b serves on",
        "vault quickstart epoch 0: public key",
        "Signature Verified Successfully",
        "history OK",
        r#"cosigner_ceremonies_total{kind="keygen",outcome="succeeded"} 1"#,
        r#"cosigner_ceremonies_total{kind="sign",outcome="succeeded"} 1"#,
        "cosigner_vaults 1",
        "quickstart: done in",
    ] {
        assert!(
            all.contains(want),
            "quickstart output lacks {want:?}:\n{all}"
        );
    }
    // Both configs it ran were written by the provisioning script.
    for d in ["server-a", "server-b"] {
        let c =
            std::fs::read_to_string(tmp.path().join(format!("qs/etc/{d}/cosignerd.toml"))).unwrap();
        assert!(c.contains("written by deploy/provision.sh"));
    }
}

fn provision(args: &[&str]) -> Output {
    Command::new("bash")
        .arg(repo().join("deploy/provision.sh"))
        .args(args)
        .env("COSIGNERD", bin("cosignerd"))
        .output()
        .unwrap()
}

#[test]
fn provision_writes_checked_configs_and_refuses_bad_input() {
    let tmp = test_dir();
    let certs = tmp.path().join("certs");
    let o = Command::new(bin("cosignerctl"))
        .args(["certs", "init", "--dir"])
        .arg(&certs)
        .args([
            "--daemon", "server-a", "--daemon", "server-b", "--daemon", "server-c",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let out = tmp.path().join("out");
    let (c, o_) = (certs.to_str().unwrap(), out.to_str().unwrap());
    let requester = "ab".repeat(32);
    let o = provision(&[
        "--certs",
        c,
        "--out",
        o_,
        "--requester",
        &requester,
        "--daemon",
        "server-a",
        "--daemon",
        "server-b",
        "--listen",
        "10.0.0.2:7443",
        "--metrics",
        "off",
        "--daemon",
        "server-c",
        "--tcti",
        "swtpm:host=127.0.0.1,port=2321",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("every config passes"));
    for name in ["server-a", "server-b", "server-c"] {
        let dir = out.join(name);
        let config = std::fs::read_to_string(dir.join("cosignerd.toml")).unwrap();
        assert!(config.contains(&requester), "{name}");
        // Its own certificate, the CA, never the CA's key.
        assert_eq!(
            std::fs::read(dir.join("tls/cosignerd.pem")).unwrap(),
            std::fs::read(certs.join(format!("{name}.pem"))).unwrap()
        );
        assert!(!dir.join("tls/ca.key").exists());
        let key_mode = std::fs::metadata(dir.join("tls/cosignerd.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(key_mode & 0o077, 0, "{name}'s key is readable by others");
        assert!(dir.join("policy/policy.rego").exists());
        // The daemon itself accepts it.
        let o = Command::new(bin("cosignerd"))
            .arg("--check-config")
            .arg(dir.join("cosignerd.toml"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{name}: {}", text(&o));
    }
    let b = std::fs::read_to_string(out.join("server-b/cosignerd.toml")).unwrap();
    assert!(b.contains("listen = \"10.0.0.2:7443\"") && b.contains("listen = \"\""));
    let cc = std::fs::read_to_string(out.join("server-c/cosignerd.toml")).unwrap();
    assert!(cc.contains("tcti = \"swtpm:host=127.0.0.1,port=2321\""));

    // Refusals name the problem and write nothing.
    let fresh = tmp.path().join("fresh");
    let f = fresh.to_str().unwrap();
    for (args, want) in [
        (
            vec!["--certs", c, "--out", f, "--daemon", "nobody"],
            "nobody.pem is missing",
        ),
        (vec!["--certs", c, "--out", f], "at least one --daemon"),
        (
            vec![
                "--certs",
                c,
                "--out",
                f,
                "--requester",
                "xyz",
                "--daemon",
                "server-a",
            ],
            "64 lowercase hex",
        ),
        (
            vec!["--certs", c, "--out", f, "--listen", "1.2.3.4:1"],
            "comes after the --daemon",
        ),
        (
            vec![
                "--certs", c, "--out", f, "--daemon", "server-a", "--daemon", "server-a",
            ],
            "given twice",
        ),
        (
            vec!["--certs", c, "--out", f, "--bogus", "1"],
            "unknown option --bogus",
        ),
        (
            vec![
                "--certs", c, "--out", f, "--daemon", "server-a", "--listen", "nope",
            ],
            "server.listen",
        ),
    ] {
        let o = provision(&args);
        assert!(!o.status.success(), "{args:?} was accepted");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!fresh.exists(), "{args:?} wrote {}", fresh.display());
        let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains("provision-"))
            .collect();
        assert!(leftovers.is_empty(), "{args:?} left a staging folder");
    }
    // An existing configuration is never overwritten.
    let o = provision(&["--certs", c, "--out", o_, "--daemon", "server-a"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("exists"));
}

/// Every file in deploy/ is run or loaded by a test; this names which, and fails for a file
/// nothing covers (add its test, then add it here).
#[test]
fn every_deploy_file_is_exercised() {
    let covered = |rel: &str| -> Option<&'static str> {
        match rel {
            "cosignerd.example.toml" => Some("bad_config::deploy_example_config_is_valid"),
            "provision.sh" => {
                Some("deploy::provision_writes_checked_configs_and_refuses_bad_input")
            }
            "quickstart.sh" => Some("deploy::quickstart_runs_from_start_to_end"),
            // crates/policy/tests/bundle.rs loads every bundle folder and runs its tests.
            p if p.starts_with("policies/") && (p.ends_with(".rego") || p.ends_with(".json")) => {
                Some("cosigner-policy bundle::every_example_bundle_loads_and_passes_its_tests")
            }
            _ => None,
        }
    };
    let base = repo().join("deploy");
    let mut stack = vec![base.clone()];
    let mut seen = 0;
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let rel = p
                .strip_prefix(&base)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            assert!(
                covered(&rel).is_some(),
                "deploy/{rel} is exercised by no test: add one and list it here"
            );
            seen += 1;
        }
    }
    assert!(seen >= 15, "only {seen} files under deploy/");
}
