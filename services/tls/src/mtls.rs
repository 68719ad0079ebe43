//! Mutual TLS inside the mesh: a service port accepts only clients whose
//! certificate the mesh CA signed ([`mesh_server_config`]), and of those only
//! the peers whose certificate names an allowed DNS SAN ([`SanAllowLayer`]).

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::{Either, Ready, ready};
use rustls::pki_types::ServerName;
use tonic::Status;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::CertificateAndKey;

/// How long a TLS handshake on a mesh port may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The server side of a mesh service port: present `identity`, and require
/// a client certificate signed by the CA in `ca_pem`. A client without one
/// does not complete the handshake. Add [`SanAllowLayer`] to choose which of
/// the mesh's peers may call.
pub fn mesh_server_config(identity: &CertificateAndKey, ca_pem: &str) -> ServerTlsConfig {
    ServerTlsConfig::new()
        .identity(Identity::from_pem(
            &identity.certificate_pem,
            &identity.private_key_pem,
        ))
        .client_ca_root(Certificate::from_pem(ca_pem))
        .client_auth_optional(false)
        .timeout(HANDSHAKE_TIMEOUT)
}

/// The client side of a mesh connection: present `identity`, trust only the
/// CA in `ca_pem`, and expect the server to be `server_name` (e.g.
/// `dispatch.ferry.internal`, whatever address the URL dials).
pub fn mesh_client_config(
    identity: &CertificateAndKey,
    ca_pem: &str,
    server_name: &str,
) -> ClientTlsConfig {
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .identity(Identity::from_pem(
            &identity.certificate_pem,
            &identity.private_key_pem,
        ))
        .domain_name(server_name)
        .timeout(HANDSHAKE_TIMEOUT)
}

/// A tower layer for a tonic server configured with [`mesh_server_config`]:
/// every call whose verified client certificate has no DNS SAN in the
/// allow-list is refused before any handler runs, as a trailers-only gRPC
/// response — `UNAUTHENTICATED` when there is no client certificate at all
/// (a server without client authentication), `PERMISSION_DENIED` when there
/// is one that names no allowed peer.
///
/// The names are DNS names such as `gateway.ferry.internal`; a name that is
/// not a valid DNS name (an IP address, say) never matches. Every mesh
/// certificate also carries `localhost`, so allowing `localhost` allows every
/// peer of the mesh.
#[derive(Clone, Debug)]
pub struct SanAllowLayer {
    allowed: Arc<Vec<ServerName<'static>>>,
}

impl SanAllowLayer {
    /// Allows the peers whose certificate names one of `allowed`.
    pub fn new(allowed: Vec<String>) -> Self {
        let allowed = allowed
            .into_iter()
            .filter_map(|name| ServerName::try_from(name).ok())
            .filter(|name| matches!(name, ServerName::DnsName(_)))
            .collect();
        Self {
            allowed: Arc::new(allowed),
        }
    }
}

impl<S> tower::Layer<S> for SanAllowLayer {
    type Service = SanAllow<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SanAllow {
            inner,
            allowed: self.allowed.clone(),
        }
    }
}

/// The service [`SanAllowLayer`] makes.
#[derive(Clone, Debug)]
pub struct SanAllow<S> {
    inner: S,
    allowed: Arc<Vec<ServerName<'static>>>,
}

impl<S> SanAllow<S> {
    fn authorize(&self, extensions: &http::Extensions) -> Result<(), Status> {
        let certificates = extensions
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(TlsConnectInfo::peer_certs)
            .ok_or_else(|| Status::unauthenticated("a mesh client certificate is required"))?;
        let leaf = certificates
            .first()
            .ok_or_else(|| Status::unauthenticated("a mesh client certificate is required"))?;
        let certificate = webpki::EndEntityCert::try_from(leaf)
            .map_err(|_| Status::unauthenticated("the client certificate cannot be parsed"))?;
        let allowed = self
            .allowed
            .iter()
            .any(|name| certificate.verify_is_valid_for_subject_name(name).is_ok());
        if allowed {
            Ok(())
        } else {
            Err(Status::permission_denied(
                "the client certificate names no peer allowed to call this service",
            ))
        }
    }
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for SanAllow<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    ResBody: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<S::Response, S::Error>>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        match self.authorize(request.extensions()) {
            Ok(()) => Either::Left(self.inner.call(request)),
            Err(status) => Either::Right(ready(Ok(status.into_http()))),
        }
    }
}
