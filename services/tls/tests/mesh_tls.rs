//! A tonic service behind the mesh's mutual TLS and SAN allow-list, called
//! with certificates made at test time.

use std::net::SocketAddr;
use std::sync::Arc;

use ferry_tls::{CertificateAndKey, MeshCertificates, SanAllowLayer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tonic::Code;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint, Server};
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus as Served;
use tonic_health::pb::health_client::HealthClient;

const SERVER_NAME: &str = "tokens.ferry.internal";

struct Service {
    address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A health service on 127.0.0.1:0 that only the gateway may call.
async fn start_service(mesh: &MeshCertificates) -> Service {
    ferry_tls::install_crypto_provider();
    let identity = mesh.identity("tokens").expect("tokens identity");
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let (stop, stopped) = oneshot::channel::<()>();
    let router = Server::builder()
        .tls_config(ferry_tls::mesh_server_config(identity, &mesh.ca_pem))
        .expect("tls config")
        .layer(SanAllowLayer::new(vec![
            "gateway.ferry.internal".to_owned(),
            "not a dns name".to_owned(),
        ]))
        .add_service(health);
    tokio::spawn(async move {
        let _keep = reporter;
        router
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                let _ = stopped.await;
            })
            .await
    });
    Service {
        address,
        stop: Some(stop),
    }
}

async fn check(address: SocketAddr, tls: ClientTlsConfig) -> Result<Served, tonic::Status> {
    let endpoint = Endpoint::from_shared(format!("https://{address}"))
        .expect("url")
        .tls_config(tls)
        .expect("client tls");
    let channel: Channel = endpoint
        .connect()
        .await
        .map_err(|error| tonic::Status::unavailable(format!("connect: {error:?}")))?;
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?;
    Ok(answer.into_inner().status())
}

fn client(mesh: &MeshCertificates, name: &str) -> ClientTlsConfig {
    let identity = mesh.identity(name).expect("identity");
    ferry_tls::mesh_client_config(identity, &mesh.ca_pem, SERVER_NAME)
}

fn issue(dir: &tempfile::TempDir) -> MeshCertificates {
    ferry_tls::issue_mesh(dir.path(), &["gateway", "tokens", "dispatch"]).expect("issue")
}

#[tokio::test]
async fn the_allowed_peer_is_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mesh = issue(&dir);
    let service = start_service(&mesh).await;
    let status = check(service.address, client(&mesh, "gateway"))
        .await
        .expect("the gateway is served");
    assert_eq!(status, Served::Serving);
}

#[tokio::test]
async fn a_valid_certificate_with_the_wrong_san_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mesh = issue(&dir);
    let service = start_service(&mesh).await;
    let status = check(service.address, client(&mesh, "dispatch"))
        .await
        .expect_err("dispatch may not call");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("no peer allowed"), "{status:?}");
}

#[tokio::test]
async fn a_client_without_a_certificate_does_not_get_through_the_handshake() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mesh = issue(&dir);
    let service = start_service(&mesh).await;

    // Through tonic: the call fails in transport, never reaching the layer.
    let no_identity = ferry_tls::client_config(Some(&mesh.ca_pem), Some(SERVER_NAME));
    let status = check(service.address, no_identity)
        .await
        .expect_err("no client certificate");
    assert!(
        !matches!(
            status.code(),
            Code::PermissionDenied | Code::Unauthenticated
        ),
        "the handshake completed: {status:?}"
    );

    // Raw: the server aborts the handshake with a TLS alert.
    let error = raw_handshake(service.address, &mesh.ca_pem, None)
        .await
        .expect_err("handshake must fail");
    assert!(error.contains("alert"), "{error}");
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_in_the_handshake() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mesh = issue(&dir);
    let other_dir = tempfile::tempdir().expect("tempdir");
    let other = issue(&other_dir);
    let service = start_service(&mesh).await;

    // The other mesh's gateway, trusting our CA so that only its own
    // certificate is wrong.
    let foreign = other.identity("gateway").expect("gateway");
    let tls = ferry_tls::mesh_client_config(foreign, &mesh.ca_pem, SERVER_NAME);
    let status = check(service.address, tls).await.expect_err("foreign CA");
    assert!(
        !matches!(
            status.code(),
            Code::PermissionDenied | Code::Unauthenticated
        ),
        "the handshake completed: {status:?}"
    );
    let error = raw_handshake(service.address, &mesh.ca_pem, Some(foreign))
        .await
        .expect_err("handshake must fail");
    assert!(error.contains("alert"), "{error}");

    // Sanity: the same raw client with the right certificate gets through.
    raw_handshake(
        service.address,
        &mesh.ca_pem,
        Some(mesh.identity("gateway").expect("gateway")),
    )
    .await
    .expect("the right certificate completes the handshake");
}

/// A TLS 1.3 handshake and one round trip: the client only learns that the
/// server refused its certificate from the alert that follows its Finished.
async fn raw_handshake(
    address: SocketAddr,
    ca_pem: &str,
    identity: Option<&CertificateAndKey>,
) -> Result<(), String> {
    let mut roots = rustls::RootCertStore::empty();
    let ca = CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("ca");
    roots.add(ca).expect("root");
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots);
    let mut config = match identity {
        Some(identity) => {
            let chain = CertificateDer::pem_slice_iter(identity.certificate_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .expect("chain");
            let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(
                identity.private_key_pem.as_bytes(),
            )
            .expect("key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client auth")
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(address).await.expect("connect");
    let name = ServerName::try_from(SERVER_NAME).expect("name");
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|error| error.to_string())?;
    // The HTTP/2 preface; a server that accepted us answers with SETTINGS.
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .map_err(|error| error.to_string())?;
    let mut buffer = [0_u8; 9];
    tls.read_exact(&mut buffer)
        .await
        .map_err(|error| error.to_string())?;
    Ok(())
}
