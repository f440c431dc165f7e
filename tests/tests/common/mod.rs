//! Shared set-up for the ceremony tests: two daemons and two device parties.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Output;
use std::time::Duration;

use cosigner_tests::{Daemon, Party, Pki, test_dir};
use serde_json::Value;

pub struct Setup {
    pub _tmp: tempfile::TempDir,
    pub pki: Pki,
    pub a: Daemon,
    pub b: Daemon,
    pub d1: Party,
    pub d2: Party,
    /// The policy bundle both daemons load (a copy of deploy/policies/development).
    pub bundle: std::path::PathBuf,
}

pub fn ok(o: &Output) -> Value {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let out = String::from_utf8_lossy(&o.stdout);
    serde_json::from_str(out.lines().last().unwrap_or("null")).unwrap_or(Value::Null)
}

pub fn err(o: &Output) -> String {
    assert!(
        !o.status.success(),
        "expected failure, got {}",
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub async fn setup() -> Setup {
    setup_allowing(&[]).await
}

/// As `setup`, with more party ids (hex) on the daemons' allow lists.
pub async fn setup_allowing(extra: &[String]) -> Setup {
    setup_configured(extra, |_| String::new()).await
}

/// As `setup_allowing`, with more config for each daemon (`"a"`, `"b"`) appended.
pub async fn setup_configured(extra: &[String], config: impl Fn(&str) -> String) -> Setup {
    let tmp = test_dir();
    let pki = Pki::init(tmp.path(), "certs").unwrap();
    let d1 = Party::init(&tmp.path().join("devices"), "device-1").unwrap();
    let d2 = Party::init(&tmp.path().join("devices"), "device-2").unwrap();
    let mut ids = vec![
        d1.show().unwrap()["party_id"].as_str().unwrap().to_string(),
        d2.show().unwrap()["party_id"].as_str().unwrap().to_string(),
    ];
    ids.extend(extra.iter().cloned());
    let list: Vec<String> = ids.iter().map(|i| format!("\"{i}\"")).collect();
    // The development bundle: committee members sign messages and Ethereum transactions;
    // the listed parties may run keygen and reshare.
    let operators: Vec<String> = ids.iter().map(|i| format!("\"{i}\": true")).collect();
    let bundle = cosigner_tests::policy_bundle(tmp.path(), "development", |d| {
        d.replace(
            "\"operators\": {}",
            &format!("\"operators\": {{{}}}", operators.join(", ")),
        )
    })
    .unwrap();
    let allowed = format!(
        "[ceremonies]\nallowed_requesters = [{}]\nround_timeout_secs = 10\n\n[policy]\nbundle = \"{}\"\n",
        list.join(", "),
        bundle.display()
    );
    let a = Daemon::start_with(
        &tmp.path().join("a"),
        &pki,
        "",
        &format!("{allowed}{}", config("a")),
    )
    .await
    .unwrap();
    let b = Daemon::start_with(
        &tmp.path().join("b"),
        &pki,
        "",
        &format!("{allowed}{}", config("b")),
    )
    .await
    .unwrap();
    Setup {
        bundle,
        _tmp: tmp,
        pki,
        a,
        b,
        d1,
        d2,
    }
}

pub fn keygen(s: &Setup) -> Value {
    ok(&keygen_named(s, "v1"))
}

/// Device-1 starts a 2-of-3 keygen of `vault` with server-a and server-b.
pub fn keygen_named(s: &Setup, vault: &str) -> Output {
    let a = s.a.member_spec(&s.pki, "server-a").unwrap();
    let b = s.b.member_spec(&s.pki, "server-b").unwrap();
    let da = s.a.daemon_spec("server-a");
    let db = s.b.daemon_spec("server-b");
    s.d1.run(
        &s.pki,
        &[
            "keygen",
            "--vault",
            vault,
            "--threshold",
            "2",
            "--member",
            &a,
            "--member",
            &b,
            "--daemon",
            &da,
            "--daemon",
            &db,
            "--json",
        ],
    )
}

/// `party sign` of vault v1 by `who`, with both daemons reachable.
pub fn sign(s: &Setup, who: &Party, signers: &[&str], message: &str) -> Output {
    let da = s.a.daemon_spec("server-a");
    let db = s.b.daemon_spec("server-b");
    let mut args = vec![
        "sign",
        "--vault",
        "v1",
        "--message",
        message,
        "--daemon",
        &da,
        "--daemon",
        &db,
        "--json",
    ];
    for x in signers {
        args.push("--signer");
        args.push(x);
    }
    who.run(&s.pki, &args)
}

/// Checks a `party sign --json` output with libsecp256k1: the signature verifies under the
/// printed key for the EIP-191 hash of `message`, and recovers that key.
pub fn verify_independently(out: &Value, message: &str, expected_key: &str) {
    use secp256k1::ecdsa::{RecoverableSignature, RecoveryId, Signature};
    use secp256k1::{Message, PublicKey, Secp256k1};
    assert_eq!(out["public_key"].as_str().unwrap(), expected_key);
    // The hash is recomputed here, not taken from the output.
    use sha3::Digest;
    let mut h = sha3::Keccak256::new();
    h.update(format!("\x19Ethereum Signed Message:\n{}", message.len()).as_bytes());
    h.update(message.as_bytes());
    let hash: [u8; 32] = h.finalize().into();
    assert_eq!(out["hash"].as_str().unwrap(), hex(&hash));
    let mut rs = unhex(out["r"].as_str().unwrap());
    rs.extend(unhex(out["s"].as_str().unwrap()));
    let secp = Secp256k1::verification_only();
    let msg = Message::from_digest(hash);
    let key = PublicKey::from_slice(&unhex(expected_key)).unwrap();
    let sig = Signature::from_compact(&rs).unwrap();
    let der = Signature::from_der(&unhex(out["der"].as_str().unwrap())).expect("DER parses");
    assert_eq!(der, sig, "the DER form is the same signature");
    secp.verify_ecdsa(&msg, &sig, &key)
        .expect("libsecp256k1 verifies the signature");
    let mut normalized = sig;
    normalized.normalize_s();
    assert_eq!(normalized, sig, "s is low");
    let rec = RecoverableSignature::from_compact(
        &rs,
        RecoveryId::from_i32(out["recovery_id"].as_i64().unwrap() as i32).unwrap(),
    )
    .unwrap();
    assert_eq!(secp.recover_ecdsa(&msg, &rec).unwrap(), key);
}

pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn history_kinds(d: &Daemon, pki: &Pki) -> Vec<(String, String)> {
    let o = d.ctl(
        pki,
        "admin",
        &["history", "list", "--json", "--limit", "1000"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["kind"].as_str().unwrap_or("").to_string(),
                v["outcome"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Starts `party reshare` on d1 (2-of-3 -> 3-of-4 adding device-2) and lets device-2 join
/// from the request file. Returns both outputs.
pub async fn reshare_adding_device_2(s: &Setup) -> (Output, Output) {
    let add = s.d2.member_spec().unwrap();
    let da = s.a.daemon_spec("server-a");
    let db = s.b.daemon_spec("server-b");
    let args = [
        "reshare",
        "--vault",
        "v1",
        "--threshold",
        "3",
        "--dealer",
        "device-1",
        "--dealer",
        "server-a",
        "--add",
        &add,
        "--daemon",
        &da,
        "--daemon",
        &db,
        "--json",
    ];
    with_joiner(s, &s.d1, &args, &s.d2).await
}

/// Runs `coordinator` with `args` plus `--request-out FILE`, and `joiner` with
/// `join --request FILE` once the file exists. Returns both outputs.
pub async fn with_joiner(
    s: &Setup,
    coordinator: &Party,
    args: &[&str],
    joiner: &Party,
) -> (Output, Output) {
    let req = coordinator.file.with_extension("request.json");
    let _ = std::fs::remove_file(&req);
    let reqs = req.to_string_lossy().into_owned();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--request-out", &reqs]);
    let c = coordinator.spawn(&s.pki, &all).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !req.exists() {
        assert!(std::time::Instant::now() < deadline, "no request file");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Let the writer finish the file.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let j = joiner
        .spawn(&s.pki, &["join", "--request", &reqs, "--json"])
        .unwrap();
    tokio::task::block_in_place(|| (c.wait_with_output().unwrap(), j.wait_with_output().unwrap()))
}

/// A daemon's slots of `vault` (None: it holds nothing of it).
pub fn slots(d: &Daemon, pki: &Pki, vault: &str) -> Option<Value> {
    let o = d.ctl(pki, "admin", &["vault", "show", vault]);
    o.status.success().then(|| ok(&o)["slots"].clone())
}

/// Where a party stands with `vault`: "active", "in_doubt", "retired", or None.
pub fn daemon_state(d: &Daemon, pki: &Pki, vault: &str) -> Option<String> {
    let o = d.ctl(pki, "admin", &["vault", "show", vault]);
    o.status
        .success()
        .then(|| ok(&o)["state"].as_str().unwrap_or("").to_string())
}

pub fn device_state(p: &Party, vault: &str) -> Option<String> {
    let show = p.show().unwrap();
    show["vaults"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["vault_id"] == vault)
        .and_then(|v| v["state"].as_str().map(str::to_string))
}

/// Every party in doubt about `vault` resolves from the others' signed reports (the
/// daemons answer for themselves; device-1 hands over its report as a file). Returns
/// whether anyone was in doubt.
pub fn repair_all(s: &Setup, vault: &str) -> bool {
    let mut repaired = false;
    let ev = s.d1.file.with_extension("evidence");
    let pa = format!("https://{}", s.a.addr);
    let pb = format!("https://{}", s.b.addr);
    for d in [&s.a, &s.b] {
        if daemon_state(d, &s.pki, vault).as_deref() == Some("in_doubt") {
            // device-1 answers about the ceremony this daemon is resolving (it may have
            // stopped before its own commit, so its record is of another ceremony).
            let rec = ok(&d.ctl(&s.pki, "admin", &["vault", "record", "--vault", vault]));
            let context = rec["commit_report"]["context"]
                .as_str()
                .unwrap()
                .to_string();
            ok(&s.d1.run(
                &s.pki,
                &[
                    "evidence",
                    "--vault",
                    vault,
                    "--out",
                    ev.to_str().unwrap(),
                    "--about",
                    &context,
                ],
            ));
            let v = ok(&d.ctl(
                &s.pki,
                "admin",
                &[
                    "vault",
                    "resolve",
                    vault,
                    "--peer",
                    &pa,
                    "--peer",
                    &pb,
                    "--evidence",
                    ev.to_str().unwrap(),
                ],
            ));
            assert!(
                matches!(v["decision"].as_str(), Some("promoted" | "discarded")),
                "{v}"
            );
            repaired = true;
        }
    }
    if device_state(&s.d1, vault).as_deref() == Some("in_doubt") {
        ok(&s.d1.run(
            &s.pki,
            &["resolve", "--vault", vault, "--peer", &pa, "--peer", &pb],
        ));
        repaired = true;
    }
    repaired
}

/// The epoch each of device-1, server-a and server-b holds `vault` at (None: nothing).
pub fn epochs(s: &Setup, vault: &str) -> [Option<u64>; 3] {
    let dev = s.d1.show().unwrap()["vaults"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["vault_id"] == vault)
        .and_then(|v| v["epoch"].as_u64());
    let d = |x: &Daemon| slots(x, &s.pki, vault).and_then(|sl| sl["current_epoch"].as_u64());
    [dev, d(&s.a), d(&s.b)]
}

/// Device-1 refreshes vault v1 (dealers device-1 and server-a, same committee).
pub fn refresh(s: &Setup) -> Output {
    refresh_via(s, None)
}

/// As `refresh`, over the relay at `relay` (default: server-a's).
pub fn refresh_via(s: &Setup, relay: Option<&str>) -> Output {
    let da = s.a.daemon_spec("server-a");
    let db = s.b.daemon_spec("server-b");
    let mut args = vec![
        "reshare", "--vault", "v1", "--dealer", "device-1", "--dealer", "server-a", "--daemon",
        &da, "--daemon", &db, "--json",
    ];
    if let Some(r) = relay {
        args.extend(["--relay", r]);
    }
    s.d1.run(&s.pki, &args)
}

/// A sign request body for `vault` at epoch 0 over a personal message, on session 7...7 of
/// the daemon's own relay.
pub fn personal_sign_body(vault: &str, signers: Vec<Vec<u8>>) -> Vec<u8> {
    use prost::Message as _;
    let api_body = cosigner_api::v1::SignBody {
        vault_id: vault.into(),
        epoch: 0,
        signers,
        payload: Some(cosigner_api::v1::Payload {
            kind: Some(cosigner_api::v1::payload::Kind::PersonalMessage(
                cosigner_api::v1::PersonalMessage {
                    message: b"x".to_vec(),
                },
            )),
        }),
        derivation_path: String::new(),
        expected_hashes: vec![],
        relay: Some(cosigner_api::v1::RelayRef {
            address: String::new(),
            session_id: vec![7; 32],
        }),
    };
    api_body.encode_to_vec()
}

// ---- the metrics endpoint ----

/// One HTTP/1.1 request on a fresh connection; the status code and the body.
pub fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    // Bodies are small and sent with a content-length or chunked; undo chunking if used.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((len, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.push_str(&tail[..n]);
            rest = &tail[n + 2..];
        }
        out
    } else {
        body.to_string()
    };
    (code, body)
}

/// The value of the sample `name` (with its labels exactly as exported), 0 if absent.
pub fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

pub fn scrape(addr: SocketAddr) -> String {
    let (code, body) = http(addr, "GET", "/metrics");
    assert_eq!(code, 200, "{body}");
    assert!(
        body.ends_with("# EOF\n"),
        "not a complete exposition:\n{body}"
    );
    body
}

// ---- shared steps ----

/// EIP-155's example transaction: 1 ether to 0x3535...35 on chain 1.
pub const ONE_ETHER_TX: &str =
    "ec098504a817c800825208943535353535353535353535353535353535353535880de0b6b3a764000080018080";

/// Sets a daily limit of 1 wei on server-a's bundle, reloads it, and has device-1 ask
/// device-1 + server-a to sign a 1 ETH transaction; returns the refused output.
pub fn deny_by_daily_limit(s: &Setup) -> Output {
    let data = s.bundle.join("data.json");
    let text = std::fs::read_to_string(&data).unwrap();
    std::fs::write(
        &data,
        text.replacen(
            "\"operators\": {",
            "\"daily_limit\": {\"ethereum:1:native\": \"1\"}, \"operators\": {",
            1,
        ),
    )
    .unwrap();
    ok(&s.a.ctl(&s.pki, "admin", &["policy", "reload"]));
    let da = s.a.daemon_spec("server-a");
    let denied = s.d1.run(
        &s.pki,
        &[
            "sign",
            "--vault",
            "v1",
            "--eth-tx",
            ONE_ETHER_TX,
            "--signer",
            "device-1",
            "--signer",
            "server-a",
            "--daemon",
            &da,
        ],
    );
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("daily limit"),
        "{denied:?}"
    );
    denied
}

/// A daemon's answer to an admin's GetVaultRecord of `vault`.
pub async fn record_answer(
    d: &Daemon,
    pki: &Pki,
    vault: &str,
) -> cosigner_api::v1::VaultRecordResponse {
    use prost::Message as _;
    let ch = pki.channel(d.addr, Some("admin")).await.unwrap();
    cosigner_api::v1::cosigner_client::CosignerClient::new(ch)
        .get_vault_record(cosigner_api::v1::VaultRecordRequest {
            body: cosigner_api::v1::VaultRecordBody {
                vault_id: vault.into(),
                about: Vec::new(),
            }
            .encode_to_vec(),
            auth: None,
        })
        .await
        .unwrap()
        .into_inner()
}

/// A daemon's signed public record of `vault`, read as the admin.
pub async fn record_of(d: &Daemon, pki: &Pki, vault: &str) -> cosigner_relay::VaultRecord {
    cosigner_relay::VaultRecord::decode(&record_answer(d, pki, vault).await.record).unwrap()
}
