//! Test replicas behind the mesh's mutual TLS and a gateway in front of
//! them, all on 127.0.0.1 with certificates made at test time.

#![allow(dead_code, unused_imports)]

mod raw;
mod stub;

pub use raw::{grpc_outcome, raw_call};
pub use stub::{Seen, Stub};

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ferry_gateway::{GatewayConfig, RunningGateway};
use ferry_proto::v1::job_service_server::JobServiceServer;
use ferry_proto::v1::log_service_server::LogServiceServer;
use ferry_proto::v1::token_service_server::TokenServiceServer;
use ferry_tls::{CertificateAndKey, MeshCertificates, SanAllowLayer};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::Response;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint, Server};

pub const TOKEN: &str = "ferry.v1.TokenService";
pub const JOB: &str = "ferry.v1.JobService";
pub const LOG: &str = "ferry.v1.LogService";

/// The mesh's CA and certificates, and the gateway's public certificate.
pub struct Mesh {
    _dir: tempfile::TempDir,
    pub certificates: MeshCertificates,
    pub public: CertificateAndKey,
}

impl Mesh {
    pub fn new() -> Self {
        ferry_tls::install_crypto_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        let certificates = ferry_tls::issue_mesh(dir.path(), ferry_tls::MESH_NAMES).expect("mesh");
        let public = ferry_tls::self_signed(&["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("cert");
        Self {
            _dir: dir,
            certificates,
            public,
        }
    }

    pub fn identity(&self, name: &str) -> &CertificateAndKey {
        self.certificates.identity(name).expect("identity")
    }

    /// A gateway configuration with fast health checks and no routes.
    pub fn gateway_config(&self) -> GatewayConfig {
        let mut config = GatewayConfig::new(
            "127.0.0.1:0".parse().expect("address"),
            self.public.clone(),
            self.identity("gateway").clone(),
            self.certificates.ca_pem.clone(),
        );
        config.health_interval = Duration::from_millis(200);
        config
    }
}

/// One replica: the stub's services behind mesh TLS, allowing only the
/// gateway.
pub struct Replica {
    pub label: String,
    pub address: SocketAddr,
    pub seen: Arc<Seen>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Replica {
    /// Starts a replica presenting `mesh_name`'s certificate, on `address`
    /// (`127.0.0.1:0` for any port).
    pub async fn start(mesh: &Mesh, mesh_name: &str, label: &str, address: SocketAddr) -> Self {
        let seen = Arc::new(Seen::default());
        let stub = Stub {
            label: label.to_owned(),
            seen: seen.clone(),
        };
        let (reporter, health) = tonic_health::server::health_reporter();
        for service in [TOKEN, JOB, LOG] {
            reporter
                .set_service_status(service, tonic_health::ServingStatus::Serving)
                .await;
        }
        let listener = TcpListener::bind(address).await.expect("bind replica");
        let address = listener.local_addr().expect("address");
        let (stop, stopped) = oneshot::channel::<()>();
        let router = Server::builder()
            .tls_config(ferry_tls::mesh_server_config(
                mesh.identity(mesh_name),
                &mesh.certificates.ca_pem,
            ))
            .expect("tls")
            .layer(SanAllowLayer::new(vec![
                "gateway.ferry.internal".to_owned(),
            ]))
            .add_service(health)
            .add_service(TokenServiceServer::new(stub.clone()))
            .add_service(JobServiceServer::new(stub.clone()))
            .add_service(LogServiceServer::new(stub));
        let task = tokio::spawn(async move {
            let _reporter = reporter;
            let _ = router
                .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                    let _ = stopped.await;
                })
                .await;
        });
        Self {
            label: label.to_owned(),
            address,
            seen,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.address)
    }

    pub fn calls(&self) -> usize {
        self.seen.calls.load(Ordering::SeqCst)
    }

    /// Stops the replica: its port closes, its connections end.
    pub async fn kill(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Starts `count` replicas presenting `mesh_name`'s certificate.
pub async fn replicas(mesh: &Mesh, mesh_name: &str, count: usize) -> Vec<Replica> {
    let mut replicas = Vec::new();
    for index in 0..count {
        let label = format!("{mesh_name}-{index}");
        let any_port = "127.0.0.1:0".parse().expect("address");
        replicas.push(Replica::start(mesh, mesh_name, &label, any_port).await);
    }
    replicas
}

pub fn urls(replicas: &[Replica]) -> Vec<String> {
    replicas.iter().map(Replica::url).collect()
}

/// A channel to the gateway's public port, trusting its certificate.
pub async fn connect(mesh: &Mesh, gateway: &RunningGateway) -> Channel {
    let tls = ferry_tls::client_config(Some(&mesh.public.certificate_pem), Some("localhost"));
    connect_with(gateway.address, tls)
        .await
        .expect("connect to the gateway")
}

pub async fn connect_with(
    address: SocketAddr,
    tls: ClientTlsConfig,
) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_shared(format!("https://{address}"))
        .expect("url")
        .tls_config(tls)?
        .connect()
        .await
}

/// The `x-replica` header of an answer.
pub fn replica_of<T>(response: &Response<T>) -> String {
    response
        .metadata()
        .get("x-replica")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Waits (up to 10 s) until `condition` holds.
pub async fn eventually(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
