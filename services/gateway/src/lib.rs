//! The edge gateway: the mesh's only public port.
//!
//! Agents and `ferryctl` speak gRPC over TLS to the gateway; it routes each
//! call by the service name in its path to that service's replicas over
//! mutual TLS, balancing with power of two choices over the replicas' open
//! calls, ejecting replicas that fail their `grpc.health.v1` checks, retrying
//! idempotent calls on another replica when one fails before answering, and
//! passing streams through frame by frame. It answers `grpc.health.v1` and
//! server reflection itself. See `docs/gateway.md`.

mod body;
mod grpc;
mod proxy;
mod server;
mod upstream;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferry_tls::CertificateAndKey;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use grpc::is_idempotent;
pub use upstream::upstream_server_name;

/// How often each replica's health is checked, by default.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(1);
/// Concurrent streams (calls) per client connection, by default.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 1024;
/// The largest gRPC request message the gateway forwards, by default.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;
/// HTTP/2 flow-control window of one stream, on every hop (ferryd's public
/// port, the gateway's both sides): HTTP/2's default 64 KiB caps an upload
/// (logs, artifacts) at 64 KiB per round trip, 1.3 MB/s at 50 ms. Windows
/// are credit, not buffers an idle connection holds.
pub const STREAM_WINDOW: u32 = 1024 * 1024;
/// HTTP/2 flow-control window of a whole connection.
pub const CONNECTION_WINDOW: u32 = 4 * 1024 * 1024;

/// What the gateway serves and where it sends calls.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// The public address, e.g. `0.0.0.0:7443` (port 0 picks one).
    pub listen: SocketAddr,
    /// What agents and ferryctl see: the public certificate and key.
    pub public_tls: CertificateAndKey,
    /// The gateway's client certificate for upstreams (SAN
    /// `gateway.ferry.internal`).
    pub mesh_identity: CertificateAndKey,
    /// The mesh CA that signed every service's certificate, PEM.
    pub mesh_ca_pem: String,
    /// gRPC service name ("ferry.v1.JobService") → replica URLs
    /// ("https://127.0.0.1:7601"). Each replica is expected to present the
    /// certificate of [`upstream_server_name`] of its service.
    pub routes: BTreeMap<String, Vec<String>>,
    /// How often each replica's `grpc.health.v1.Health/Check` is called.
    /// A check may take max(this, 2 s). Default 1 s.
    pub health_interval: Duration,
    /// Concurrent streams per client connection (HTTP/2
    /// `SETTINGS_MAX_CONCURRENT_STREAMS`). Default 1024.
    pub max_concurrent_streams: u32,
    /// The largest request message forwarded: a gRPC message whose
    /// length prefix says more is refused with `RESOURCE_EXHAUSTED` as soon
    /// as its 5-byte prefix arrives, and the upstream stream is reset. Nothing
    /// is buffered to check it. Default 16 MiB.
    pub max_request_bytes: usize,
}

impl GatewayConfig {
    /// A configuration with no routes and the default limits.
    pub fn new(
        listen: SocketAddr,
        public_tls: CertificateAndKey,
        mesh_identity: CertificateAndKey,
        mesh_ca_pem: String,
    ) -> Self {
        Self {
            listen,
            public_tls,
            mesh_identity,
            mesh_ca_pem,
            routes: BTreeMap::new(),
            health_interval: DEFAULT_HEALTH_INTERVAL,
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
        }
    }

    /// Adds (or replaces) the replicas of a service.
    pub fn route(mut self, service: impl Into<String>, replicas: Vec<String>) -> Self {
        self.routes.insert(service.into(), replicas);
        self
    }

    /// Explains what is wrong with this configuration, if anything.
    pub fn validate(&self) -> Result<()> {
        let invalid = |message: String| Err(Error::Config(message));
        if self.health_interval.is_zero() {
            return invalid("health_interval must be more than zero".to_owned());
        }
        if self.max_concurrent_streams == 0 {
            return invalid("max_concurrent_streams must be at least 1".to_owned());
        }
        if self.max_request_bytes == 0 || u32::try_from(self.max_request_bytes).is_err() {
            return invalid("max_request_bytes must be between 1 and 4 GiB".to_owned());
        }
        for (service, replicas) in &self.routes {
            if !grpc::is_service_name(service) {
                return invalid(format!(
                    "{service:?} is not a gRPC service name (like ferry.v1.JobService)"
                ));
            }
            if grpc::is_local_service(service) {
                return invalid(format!("{service} is answered by the gateway itself"));
            }
            if replicas.is_empty() {
                return invalid(format!("{service} has no replica"));
            }
            let mut seen = BTreeSet::new();
            for url in replicas {
                upstream::validate_url(url)
                    .map_err(|why| Error::Config(format!("{service}: replica {url:?} {why}")))?;
                if !seen.insert(url) {
                    return invalid(format!("{service}: replica {url} is listed twice"));
                }
            }
        }
        Ok(())
    }
}

/// What can go wrong starting the gateway.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid.
    #[error("invalid gateway configuration: {0}")]
    Config(String),
    /// The public certificate or key is invalid.
    #[error("invalid public TLS material: {0}")]
    Tls(#[from] ferry_tls::Error),
    /// An upstream could not be set up.
    #[error("cannot set up the upstream {url}: {source}")]
    Upstream {
        /// The replica URL.
        url: String,
        /// Why.
        source: tonic::transport::Error,
    },
    /// The public port could not be opened.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        /// The configured address.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The reflection service could not be built.
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The server task ended badly.
    #[error("the gateway task failed: {0}")]
    Task(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// A running gateway. Dropping it stops accepting connections too, without
/// waiting; [`RunningGateway::stop`] also waits for open calls (up to 10 s).
pub struct RunningGateway {
    /// Where the public port listens.
    pub address: SocketAddr,
    shutdown: watch::Sender<bool>,
    server: Option<JoinHandle<()>>,
    health: JoinHandle<()>,
}

impl std::fmt::Debug for RunningGateway {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("RunningGateway")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl RunningGateway {
    /// Stops accepting connections, asks open ones to finish (HTTP/2
    /// GOAWAY), waits for them up to 10 s, then closes what is left.
    pub async fn stop(mut self) -> Result<()> {
        let _ = self.shutdown.send(true);
        self.health.abort();
        if let Some(server) = self.server.take() {
            server
                .await
                .map_err(|error| Error::Task(error.to_string()))?;
        }
        Ok(())
    }
}

impl Drop for RunningGateway {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        self.health.abort();
    }
}

/// Starts the gateway: binds the public port, checks every replica's health
/// once (so calls made right after this returns find the healthy ones), and
/// serves until stopped.
pub async fn start(config: GatewayConfig) -> Result<RunningGateway> {
    ferry_tls::install_crypto_provider();
    config.validate()?;
    let tls = ferry_tls::rustls_server_config(&config.public_tls, &[b"h2"])?;
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(ferry_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let local = tonic::service::Routes::new(health_service).add_service(reflection);

    let upstreams = Arc::new(upstream::Upstreams::new(&config)?);
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| Error::Listen {
            address: config.listen,
            source,
        })?;
    let address = listener.local_addr().map_err(|source| Error::Listen {
        address: config.listen,
        source,
    })?;

    upstreams
        .check_all(upstream::check_timeout(config.health_interval))
        .await;
    upstreams.report(&reporter).await;
    let health = tokio::spawn(upstream::health_loop(
        upstreams.clone(),
        reporter,
        config.health_interval,
    ));

    let gateway = Arc::new(proxy::Gateway::new(
        upstreams,
        local,
        config.max_request_bytes,
    ));
    let (shutdown, shutdown_signal) = watch::channel(false);
    let settings = server::Settings {
        max_concurrent_streams: config.max_concurrent_streams,
    };
    let server = tokio::spawn(server::accept_loop(
        listener,
        tokio_rustls::TlsAcceptor::from(tls),
        gateway,
        shutdown_signal,
        settings,
    ));
    tracing::info!(%address, "gateway listening");
    Ok(RunningGateway {
        address,
        shutdown,
        server: Some(server),
        health,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> GatewayConfig {
        let material = ferry_tls::self_signed(&["localhost".to_owned()]).expect("certificate");
        GatewayConfig::new(
            "127.0.0.1:0".parse().expect("address"),
            material.clone(),
            material.clone(),
            material.certificate_pem,
        )
    }

    fn refused(config: GatewayConfig) -> String {
        config.validate().expect_err("must be refused").to_string()
    }

    #[test]
    fn defaults_are_documented_values_and_valid() {
        let config = config().route("ferry.v1.JobService", vec!["https://127.0.0.1:7601".into()]);
        assert_eq!(config.health_interval, Duration::from_secs(1));
        assert_eq!(config.max_concurrent_streams, 1024);
        assert_eq!(config.max_request_bytes, 16 * 1024 * 1024);
        config.validate().expect("valid");
    }

    #[test]
    fn bad_configurations_are_explained() {
        let job = "ferry.v1.JobService";
        let url = || vec!["https://127.0.0.1:7601".to_owned()];
        let message = refused(config().route(job, vec![]));
        assert!(
            message.contains("ferry.v1.JobService has no replica"),
            "{message}"
        );
        let message = refused(config().route(job, vec!["http://127.0.0.1:7601".into()]));
        assert!(message.contains("must be https://"), "{message}");
        let twice = vec!["https://a:1".to_owned(), "https://a:1".to_owned()];
        let message = refused(config().route(job, twice));
        assert!(message.contains("listed twice"), "{message}");
        let message = refused(config().route("ferry/v1", url()));
        assert!(message.contains("is not a gRPC service name"), "{message}");
        let message = refused(config().route("grpc.health.v1.Health", url()));
        assert!(
            message.contains("answered by the gateway itself"),
            "{message}"
        );
        let mut zero = config().route(job, url());
        zero.health_interval = Duration::ZERO;
        assert!(refused(zero).contains("health_interval"));
        let mut zero = config().route(job, url());
        zero.max_concurrent_streams = 0;
        assert!(refused(zero).contains("max_concurrent_streams"));
        let mut zero = config().route(job, url());
        zero.max_request_bytes = 0;
        assert!(refused(zero).contains("max_request_bytes"));
    }

    #[tokio::test]
    async fn start_refuses_an_invalid_configuration_and_bad_tls_material() {
        let error = start(config().route("ferry.v1.JobService", vec![]))
            .await
            .expect_err("invalid");
        assert!(
            error
                .to_string()
                .starts_with("invalid gateway configuration"),
            "{error}"
        );
        let mut broken = config();
        broken.public_tls.private_key_pem = "not a key".to_owned();
        let error = start(broken).await.expect_err("bad key");
        assert!(
            error.to_string().starts_with("invalid public TLS material"),
            "{error}"
        );
    }
}
