//! Device parties end to end over a real relay (gRPC with mutual TLS on loopback): keygen,
//! sign and reshare with a coordinator and devices that join from request files, the
//! replay refusal, a leaving dealer's retirement, and resolve from evidence files.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use cosigner_api::v1::relay_server::RelayServer;
use cosigner_pki::devca::{self, DevPkiSpec};
use cosigner_relay::commit::Phase;
use cosigner_relay::keys::hex;
use cosigner_relay::mailbox::{Limits, Relay};
use cosigner_relay::service::RelayService;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use super::file::{PartyFile, epoch_of};
use super::{PartyArgs, run};
use crate::connect::ConnectArgs;

const PASS: &str = "a long test passphrase";

#[derive(Parser)]
struct Cmd {
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(flatten)]
    party: PartyArgs,
}

struct World {
    dir: tempfile::TempDir,
    relay: String,
}

impl World {
    fn certs(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    fn file(&self, who: &str) -> PathBuf {
        self.dir.path().join(format!("{who}.party"))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `cosignerctl --certs DIR --as WHO party --file WHO.party ... ARGS`.
    /// One `cosignerctl party` command, boxed: a whole command's future is large, and the
    /// test's own future holds several at once.
    fn party(
        &self,
        who: &str,
        args: &[&str],
    ) -> std::pin::Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>> {
        let certs = self.certs();
        let file = self.file(who);
        let pass = self.path("pass");
        let mut argv: Vec<String> = vec![
            "cosignerctl".into(),
            "--certs".into(),
            certs.display().to_string(),
            "--as".into(),
            who.into(),
            "--addr".into(),
            self.relay.clone(),
            "--file".into(),
            file.display().to_string(),
            "--passphrase-file".into(),
            pass.display().to_string(),
            "--round-timeout".into(),
            "10".into(),
        ];
        argv.extend(args.iter().map(|s| s.to_string()));
        Box::pin(async move {
            let cmd = Cmd::try_parse_from(argv)?;
            run(&cmd.connect, cmd.party).await
        })
    }

    /// Joins from a request file once the coordinator has written it.
    async fn join(&self, who: &str, request: &Path) -> anyhow::Result<()> {
        for _ in 0..400 {
            if request.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        self.party(who, &["join", "--request", request.to_str().unwrap()])
            .await
    }

    /// d1 signs `message` in vault "v" with d2, which joins from d1's request file.
    async fn sign_d1_d2(&self, message: &str) {
        let req = self.path(&format!("sign-{}.req", message.replace(' ', "-")));
        let reqs = req.to_str().unwrap();
        let (a, b) = tokio::join!(
            self.party(
                "d1",
                &[
                    "sign",
                    "--vault",
                    "v",
                    "--message",
                    message,
                    "--signer",
                    "d1",
                    "--signer",
                    "d2",
                    "--relay",
                    &self.relay,
                    "--request-out",
                    reqs,
                    "--json",
                ],
            ),
            self.join("d2", &req),
        );
        a.unwrap();
        b.unwrap();
    }

    fn open(&self, who: &str) -> PartyFile {
        PartyFile::open(&self.file(who), PASS.as_bytes()).unwrap()
    }

    fn spec(&self, who: &str) -> String {
        let f = self.open(who);
        format!(
            "{who}:{}:{}",
            hex(&f.keys.party_id()),
            hex(&f.keys.encryption_public())
        )
    }
}

async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    devca::init(
        &certs,
        &DevPkiSpec {
            trust_domain: "cosigner".into(),
            daemons: vec!["relay".into()],
            admins: vec!["admin".into()],
            parties: vec!["d1".into(), "d2".into(), "d3".into()],
            hosts: vec!["127.0.0.1".into(), "localhost".into()],
            validity_days: 1,
        },
        false,
    )
    .unwrap();
    std::fs::write(dir.path().join("pass"), PASS).unwrap();
    let read = |n: &str| std::fs::read(certs.join(n)).unwrap();
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(read("relay.pem"), read("relay.key")))
        .client_ca_root(Certificate::from_pem(read("ca.pem")));
    let relay = Arc::new(Relay::new(Limits::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::builder()
        .tls_config(tls)
        .unwrap()
        .add_service(RelayServer::new(RelayService::new(relay, |_| None)))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    tokio::spawn(server);
    World {
        dir,
        relay: format!("https://{addr}"),
    }
}

fn phase(f: &PartyFile, vault: &str) -> Option<Phase> {
    f.commit_state(vault).unwrap().map(|s| s.phase)
}

/// Puts a party back to the moment its commit ended without a certificate: the new share
/// pending, the old one current, its own READY only.
fn make_in_doubt(w: &World, who: &str) {
    let mut f = w.open(who);
    let s = f.slots_mut("v");
    let mut state = s.commit_state().unwrap().unwrap();
    state.phase = Phase::InDoubt;
    state.received.clear();
    s.commit = Some(state.encode());
    s.pending = s.current.take();
    s.current = s.previous.take();
    f.save(&w.file(who), PASS.as_bytes()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_keygen_sign_reshare_and_resolve_over_a_relay() {
    let w = world().await;
    for who in ["d1", "d2", "d3"] {
        w.party(who, &["init", "--name", who]).await.unwrap();
    }
    let (s2, s3) = (w.spec("d2"), w.spec("d3"));
    let k4 = cosigner_relay::PartyKeys::generate();
    let s4 = format!(
        "d4:{}:{}",
        hex(&k4.party_id()),
        hex(&k4.encryption_public())
    );

    // Keygen: d1 coordinates, d2 and d3 join from its request file.
    let req = w.path("keygen.req");
    let reqs = req.to_str().unwrap();
    let (a, b, c) = tokio::join!(
        w.party(
            "d1",
            &[
                "keygen",
                "--vault",
                "v",
                "--threshold",
                "2",
                "--member",
                &s2,
                "--member",
                &s3,
                "--relay",
                &w.relay,
                "--request-out",
                reqs,
                "--json",
            ],
        ),
        w.join("d2", &req),
        w.join("d3", &req),
    );
    a.unwrap();
    b.unwrap();
    c.unwrap();
    for who in ["d1", "d2", "d3"] {
        let f = w.open(who);
        let s = f.slots("v").unwrap();
        assert_eq!(epoch_of(&s.current), Some(0), "{who}");
        assert!(s.pending.is_none(), "{who}");
        assert_eq!(phase(&f, "v"), Some(Phase::Committed), "{who}");
    }
    // The same request again: the session was taken part in already.
    let again = w.join("d2", &req).await.unwrap_err();
    assert!(format!("{again:#}").contains("already"), "{again:#}");

    // Sign: d1 and d2.
    w.sign_d1_d2("hello").await;

    // A joiner that holds nothing needs endorsements by 2 old members; devices alone
    // cannot collect them (only daemons answer GetVaultRecord).
    let e = w
        .party(
            "d1",
            &[
                "reshare", "--vault", "v", "--add", &s4, "--dealer", "d1", "--dealer", "d2",
                "--relay", &w.relay,
            ],
        )
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("endorsements"), "{e:#}");

    // Reshare: d3 leaves (it deals), d1 and d2 stay.
    let req = w.path("reshare.req");
    let reqs = req.to_str().unwrap();
    let (a, b, c) = tokio::join!(
        w.party(
            "d1",
            &[
                "reshare",
                "--vault",
                "v",
                "--remove",
                "d3",
                "--dealer",
                "d1",
                "--dealer",
                "d3",
                "--relay",
                &w.relay,
                "--request-out",
                reqs,
                "--json",
            ],
        ),
        w.join("d2", &req),
        w.join("d3", &req),
    );
    a.unwrap();
    b.unwrap();
    c.unwrap();
    for who in ["d1", "d2"] {
        let f = w.open(who);
        let s = f.slots("v").unwrap();
        assert_eq!(
            (epoch_of(&s.current), epoch_of(&s.previous)),
            (Some(1), Some(0)),
            "{who}"
        );
        assert_eq!(phase(&f, "v"), Some(Phase::Committed), "{who}");
    }
    let f3 = w.open("d3");
    let s3slots = f3.slots("v").unwrap();
    assert!(s3slots.current.is_none());
    assert_eq!(epoch_of(&s3slots.previous), Some(0));
    assert_eq!(phase(&f3, "v"), Some(Phase::Retired));
    let e = w
        .party(
            "d3",
            &[
                "sign",
                "--vault",
                "v",
                "--message",
                "x",
                "--signer",
                "d1",
                "--signer",
                "d3",
                "--relay",
                &w.relay,
            ],
        )
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("retired"), "{e:#}");

    // A verified signature at epoch 1 destroys each signer's epoch-0 share, on the
    // coordinating device and the joining one alike. (d2's file from before is put back
    // for the repairs below, which need its old share.)
    let d2_before = std::fs::read(w.file("d2")).unwrap();
    w.sign_d1_d2("epoch one").await;
    for who in ["d1", "d2"] {
        let f = w.open(who);
        let s = f.slots("v").unwrap();
        assert_eq!(
            (epoch_of(&s.current), s.previous.is_none()),
            (Some(1), true),
            "{who}"
        );
    }
    std::fs::write(w.file("d2"), d2_before).unwrap();

    // d2's commit in doubt: it refuses to sign, waits for d1's report, then promotes on
    // the certificate d1's evidence shows.
    make_in_doubt(&w, "d2");
    let e = w
        .party(
            "d2",
            &[
                "sign",
                "--vault",
                "v",
                "--message",
                "x",
                "--signer",
                "d1",
                "--signer",
                "d2",
                "--relay",
                &w.relay,
            ],
        )
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("party resolve"), "{e:#}");
    let e = w
        .party("d2", &["resolve", "--vault", "v"])
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("undecided"), "{e:#}");
    let ev = w.path("d1.report");
    w.party(
        "d1",
        &["evidence", "--vault", "v", "--out", ev.to_str().unwrap()],
    )
    .await
    .unwrap();
    w.party(
        "d2",
        &[
            "resolve",
            "--vault",
            "v",
            "--evidence",
            ev.to_str().unwrap(),
        ],
    )
    .await
    .unwrap();
    let f2 = w.open("d2");
    assert_eq!(epoch_of(&f2.slots("v").unwrap().current), Some(1));
    assert_eq!(phase(&f2, "v"), Some(Phase::Committed));

    // In doubt again, and d1 declared lost: no certificate can exist, the pending share
    // is discarded and the old one stays current.
    make_in_doubt(&w, "d2");
    w.party("d2", &["resolve", "--vault", "v", "--lost", "d1"])
        .await
        .unwrap();
    let f2 = w.open("d2");
    let s = f2.slots("v").unwrap();
    assert_eq!((epoch_of(&s.current), s.pending.is_none()), (Some(0), true));
    assert_eq!(phase(&f2, "v"), Some(Phase::Discarded));
}
