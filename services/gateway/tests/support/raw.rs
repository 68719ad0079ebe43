//! gRPC with hyper alone.

use std::sync::Arc;

use ferry_gateway::RunningGateway;

use super::Mesh;

/// A gRPC call made with hyper alone (no tonic client, which would enforce
/// `grpc-timeout` itself): the answer's headers and trailers.
pub async fn raw_call(
    mesh: &Mesh,
    gateway: &RunningGateway,
    path: &str,
    headers: &[(&str, &str)],
    message: &[u8],
) -> (http::HeaderMap, Option<http::HeaderMap>) {
    use http_body_util::BodyExt;
    let mut roots = rustls::RootCertStore::empty();
    let certificate =
        rustls::pki_types::CertificateDer::from(ferry_tls_pem_der(&mesh.public.certificate_pem));
    roots.add(certificate).expect("root");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(gateway.address)
        .await
        .expect("tcp");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("tls");
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .expect("h2");
    tokio::spawn(connection);
    let mut framed = vec![0];
    framed.extend_from_slice(&u32::try_from(message.len()).expect("len").to_be_bytes());
    framed.extend_from_slice(message);
    let mut request = http::Request::post(format!("https://localhost{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let body = http_body_util::Full::new(tonic::codegen::Bytes::from(framed));
    let response = sender
        .send_request(request.body(body).expect("request"))
        .await
        .expect("response");
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.expect("body");
    (parts.headers, collected.trailers().cloned())
}

fn ferry_tls_pem_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("pem")
        .to_vec()
}

/// `grpc-status` and `grpc-message` of an answer, from its trailers or, for
/// a trailers-only answer, its headers.
pub fn grpc_outcome(
    headers: &http::HeaderMap,
    trailers: Option<&http::HeaderMap>,
) -> (String, String) {
    let source = trailers
        .filter(|map| map.contains_key("grpc-status"))
        .unwrap_or(headers);
    let get = |key: &str| {
        source
            .get(key)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    (get("grpc-status"), get("grpc-message"))
}
