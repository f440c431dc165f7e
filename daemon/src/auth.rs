//! Caller authentication and role checks, in front of every gRPC service.
//!
//! rustls has already verified that the client certificate chains to the configured CA; this
//! layer reads the caller's identity out of that certificate and checks it against one table
//! of which roles may call which method. Keeping the table here, rather than a check in each
//! handler, means a new RPC is refused until someone decides who may call it (default deny).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use cosigner_pki::{Identity, Role};
use tonic::Status;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

/// The authenticated caller of the current request, for handlers and the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub identity: Identity,
    /// `spiffe://...` URI, as recorded in the history.
    pub uri: String,
}

/// Which roles may call a method. `Anonymous` means no certificate is needed at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Anonymous,
    Roles(&'static [Role]),
}

const ADMIN: Access = Access::Roles(&[Role::Admin]);
const PARTY: Access = Access::Roles(&[Role::Party]);
const ANY: Access = Access::Roles(&[Role::Admin, Role::Party]);

/// The access table. Methods not listed here are refused.
fn access(path: &str) -> Option<Access> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    Some(match (service, method) {
        ("grpc.health.v1.Health", _) => Access::Anonymous,
        ("grpc.reflection.v1.ServerReflection", _) => ANY,
        ("grpc.reflection.v1alpha.ServerReflection", _) => ANY,
        ("cosigner.v1.Relay", _) => ANY,
        ("cosigner.v1.Cosigner", m) => match m {
            "GetVault" | "Keygen" | "Reshare" | "Refresh" | "GetVaultRecord" => ANY,
            "Sign" => PARTY,
            "GetStatus" | "ListVaults" | "DropPreviousShare" | "ListHistory"
            | "GetHistoryEntry" | "VerifyHistory" | "ExportHistory" | "EvaluatePolicy"
            | "ReloadPolicy" | "ExportBackup" | "ImportBackup" | "ResolvePending" => ADMIN,
            _ => return None,
        },
        _ => return None,
    })
}

/// Decides one request from its path and the peer's certificate chain.
#[derive(Debug)]
pub struct Authorizer {
    trust_domain: String,
}

impl Authorizer {
    pub fn new(trust_domain: String) -> Self {
        Authorizer { trust_domain }
    }

    /// `peer_leaf` is the DER of the client's leaf certificate, if it presented one.
    pub fn authorize(
        &self,
        path: &str,
        peer_leaf: Option<&[u8]>,
    ) -> Result<Option<Caller>, Status> {
        let Some(access) = access(path) else {
            return Err(Status::permission_denied(format!(
                "{path} is not open to any caller"
            )));
        };
        let caller = match peer_leaf {
            None => None,
            Some(der) => {
                let identity = cosigner_pki::identity_from_der(der, &self.trust_domain)
                    .map_err(|e| Status::unauthenticated(e.to_string()))?;
                let uri = identity.uri(&self.trust_domain);
                Some(Caller { identity, uri })
            }
        };
        match (access, &caller) {
            (Access::Anonymous, _) => Ok(caller),
            (Access::Roles(_), None) => Err(Status::unauthenticated(format!(
                "{path} needs a client certificate"
            ))),
            (Access::Roles(roles), Some(c)) if roles.contains(&c.identity.role) => Ok(caller),
            (Access::Roles(roles), Some(c)) => Err(Status::permission_denied(format!(
                "{} has role {}; {path} needs {}",
                c.uri,
                c.identity.role,
                roles
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(" or ")
            ))),
        }
    }
}

/// Tower layer applying an [`Authorizer`] to every request of the server.
#[derive(Clone)]
pub struct AuthLayer {
    authorizer: Arc<Authorizer>,
}

impl AuthLayer {
    pub fn new(authorizer: Authorizer) -> Self {
        AuthLayer {
            authorizer: Arc::new(authorizer),
        }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            authorizer: self.authorizer.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    authorizer: Arc<Authorizer>,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B, RB> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: Default + Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let certs = req
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(|info| info.peer_certs());
        let leaf = certs.as_ref().and_then(|c| c.first()).map(|c| c.as_ref());
        match self.authorizer.authorize(req.uri().path(), leaf) {
            Ok(caller) => {
                if let Some(caller) = caller {
                    req.extensions_mut().insert(caller);
                }
                // The clone that was polled ready is the one to call.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                Box::pin(inner.call(req))
            }
            Err(status) => {
                tracing::warn!(path = req.uri().path(), code = ?status.code(), reason = status.message(), "request refused");
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

/// The caller a handler runs for. The layer guarantees it for every non-anonymous method,
/// so its absence is an internal error, not a client one.
pub fn caller<T>(req: &tonic::Request<T>) -> Result<Caller, Status> {
    req.extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::internal("no authenticated caller on an authenticated method"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cosigner_method_in_the_proto_has_an_entry() {
        // Parse the service block of the proto so a new RPC cannot slip past the table.
        let proto = include_str!("../../proto/cosigner/v1/cosigner.proto");
        let rpcs: Vec<&str> = proto
            .lines()
            .filter_map(|l| l.trim().strip_prefix("rpc "))
            .filter_map(|l| l.split('(').next())
            .collect();
        assert!(rpcs.len() >= 16, "found only {rpcs:?}");
        for rpc in rpcs {
            let path = format!("/cosigner.v1.Cosigner/{rpc}");
            assert!(
                access(&path).is_some(),
                "{path} missing from the access table"
            );
        }
        assert!(access("/cosigner.v1.Cosigner/Nope").is_none());
        assert!(access("/other.Service/X").is_none());
        assert!(access("garbage").is_none());
    }

    #[test]
    fn anonymous_only_for_health() {
        let a = Authorizer::new("cosigner".into());
        assert!(a.authorize("/grpc.health.v1.Health/Check", None).is_ok());
        let err = a
            .authorize("/cosigner.v1.Cosigner/GetStatus", None)
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        let err = a.authorize("/cosigner.v1.Cosigner/Nope", None).unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
    }
}
