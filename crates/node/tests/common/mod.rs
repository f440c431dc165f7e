//! What the in-process tests of the ceremony layer share: a real relay on loopback and a
//! party's driver into it.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use cosigner_api::v1::relay_client::RelayClient;
use cosigner_api::v1::relay_server::RelayServer;
use cosigner_party::PartyKeys;
use cosigner_relay::mailbox::{Limits, Relay};
use cosigner_relay::roster::Roster;
use cosigner_relay::service::RelayService;
use cosigner_relay::{DriveError, Driver, SessionSpec};
use tonic::transport::{Channel, Server};

/// A relay served on a free loopback port: the relay (to create sessions) and its address.
pub async fn serve_relay() -> (Arc<Relay>, String) {
    let relay = Arc::new(Relay::new(Limits::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        Server::builder()
            .add_service(RelayServer::new(RelayService::new(relay.clone(), |_| None)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (relay, addr)
}

/// `keys`' driver in the session `roster` names, on the relay at `addr`.
pub async fn open_driver(
    addr: &str,
    keys: &PartyKeys,
    roster: Roster,
) -> Result<Driver, DriveError> {
    let ch = Channel::from_shared(addr.to_string())
        .map_err(|e| DriveError::Relay(e.to_string()))?
        .connect()
        .await
        .map_err(|e| DriveError::Relay(e.to_string()))?;
    Driver::open(
        RelayClient::new(ch),
        keys.clone(),
        SessionSpec {
            roster,
            round_timeout: Duration::from_secs(10),
            fault: None,
        },
    )
    .await
}
