//! The `cosigner.v1.Relay` service. Its behaviour (sessions, mailboxes, limits) arrives with
//! issue #6; until then every RPC answers UNIMPLEMENTED and says so.

use cosigner_api::v1::relay_server::Relay;
use cosigner_api::v1::*;
use tonic::{Request, Response, Status};

fn not_yet(method: &str) -> Status {
    Status::unimplemented(format!(
        "cosigner.v1.Relay/{method} is not implemented in this build of cosignerd; it arrives with the relay (issue #6)"
    ))
}

pub struct RelayService;

type Stream<T> = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Relay for RelayService {
    async fn create_session(
        &self,
        _: Request<CreateSessionRequest>,
    ) -> Result<Response<CreateSessionResponse>, Status> {
        Err(not_yet("CreateSession"))
    }

    async fn post(&self, _: Request<PostRequest>) -> Result<Response<PostResponse>, Status> {
        Err(not_yet("Post"))
    }

    type SubscribeStream = Stream<Delivery>;

    async fn subscribe(
        &self,
        _: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        Err(not_yet("Subscribe"))
    }

    async fn close_session(
        &self,
        _: Request<CloseSessionRequest>,
    ) -> Result<Response<CloseSessionResponse>, Status> {
        Err(not_yet("CloseSession"))
    }
}
