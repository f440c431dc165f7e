//! The `cosigner.v1.Relay` gRPC service over [`Relay`]: maps errors to status codes and
//! turns a mailbox into a server stream.

use std::sync::Arc;

use cosigner_api::v1::relay_server::Relay as RelayApi;
use cosigner_api::v1::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::mailbox::{Relay, RelayError};

/// Finds the caller's identity (its TLS identity URI) in the request extensions; the
/// per-client session limit counts by it.
pub type ClientKey = fn(&tonic::Extensions) -> Option<String>;

pub struct RelayService {
    relay: Arc<Relay>,
    client_key: ClientKey,
}

impl RelayService {
    pub fn new(relay: Arc<Relay>, client_key: ClientKey) -> Self {
        RelayService { relay, client_key }
    }
}

fn status(e: RelayError) -> Status {
    let msg = e.to_string();
    match e {
        RelayError::Invalid(_) => Status::invalid_argument(msg),
        RelayError::NoSession(_) => Status::not_found(msg),
        RelayError::Conflict(_) => Status::already_exists(msg),
        RelayError::NotParticipant(_) => Status::permission_denied(msg),
        RelayError::Limit(_) => Status::resource_exhausted(msg),
        RelayError::Closed(_) => Status::failed_precondition(msg),
    }
}

type Stream<T> = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl RelayApi for RelayService {
    async fn create_session(
        &self,
        req: Request<CreateSessionRequest>,
    ) -> Result<Response<CreateSessionResponse>, Status> {
        let owner = (self.client_key)(req.extensions()).unwrap_or_default();
        let r = req.into_inner();
        let expires_at_ms = self
            .relay
            .create(&owner, &r.session_id, &r.participants, r.ttl_seconds)
            .map_err(status)?;
        Ok(Response::new(CreateSessionResponse { expires_at_ms }))
    }

    async fn post(&self, req: Request<PostRequest>) -> Result<Response<PostResponse>, Status> {
        let env = req
            .into_inner()
            .envelope
            .ok_or_else(|| Status::invalid_argument("envelope is missing"))?;
        let seq = self.relay.post(env).map_err(status)?;
        Ok(Response::new(PostResponse { seq }))
    }

    type SubscribeStream = Stream<Delivery>;

    async fn subscribe(
        &self,
        req: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let r = req.into_inner();
        let mut watch = self
            .relay
            .subscribe(
                &r.session_id,
                &r.party_id,
                r.after_seq,
                r.timestamp_ms,
                &r.nonce,
                &r.signature,
            )
            .map_err(status)?;
        let party: [u8; 32] = r
            .party_id
            .as_slice()
            .try_into()
            .map_err(|_| Status::invalid_argument("party_id is not 32 bytes"))?;
        let relay = self.relay.clone();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            let mut cursor = r.after_seq;
            loop {
                let state = *watch.borrow_and_update();
                while cursor < state.len {
                    let batch = relay.read(&r.session_id, &party, cursor, 64);
                    if batch.is_empty() {
                        break;
                    }
                    for d in batch {
                        cursor = d.seq;
                        if tx.send(Ok(d)).await.is_err() {
                            return; // the subscriber went away
                        }
                    }
                }
                if !state.open && cursor >= state.len {
                    return; // session ended and the mailbox is drained
                }
                if watch.changed().await.is_err() {
                    return; // session forgotten
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn close_session(
        &self,
        req: Request<CloseSessionRequest>,
    ) -> Result<Response<CloseSessionResponse>, Status> {
        let caller = (self.client_key)(req.extensions()).unwrap_or_default();
        let r = req.into_inner();
        self.relay
            .close(
                &caller,
                &r.session_id,
                &r.party_id,
                r.timestamp_ms,
                &r.signature,
            )
            .map_err(status)?;
        Ok(Response::new(CloseSessionResponse {}))
    }
}
