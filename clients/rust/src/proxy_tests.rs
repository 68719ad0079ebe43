//! The proxy support against a real local CONNECT proxy and real gRPC
//! servers, plaintext and TLS.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;

use ferry_proto::v1::token_service_server::{TokenService, TokenServiceServer};
use ferry_proto::v1::{GetListenerTokenRequest, GetListenerTokenResponse};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

use super::*;

/// A gRPC server that answers GetListenerToken and counts the calls.
#[derive(Clone, Default)]
struct Tokens {
    calls: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl TokenService for Tokens {
    async fn get_listener_token(
        &self,
        _: Request<GetListenerTokenRequest>,
    ) -> std::result::Result<Response<GetListenerTokenResponse>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(GetListenerTokenResponse::default()))
    }
}

/// Serves `Tokens` on 127.0.0.1, with TLS when a certificate is given;
/// returns the port.
async fn serve(tokens: Tokens, tls: Option<&ferry_tls::CertificateAndKey>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    let mut builder = tonic::transport::Server::builder();
    if let Some(material) = tls {
        builder = builder
            .tls_config(ferry_tls::server_config(material))
            .expect("tls");
    }
    let router = builder.add_service(TokenServiceServer::new(tokens));
    tokio::spawn(router.serve_with_incoming(TcpListenerStream::new(listener)));
    port
}

/// What a CONNECT asked for: the target and the Proxy-Authorization.
type Connect = (String, Option<String>);

/// A small CONNECT proxy: counts tunnels, remembers the requests' target
/// and Proxy-Authorization, and refuses with 407 when `required_auth` is set
/// and not matched.
#[derive(Clone, Default)]
struct TestProxy {
    tunnels: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Connect>>>,
    required_auth: Option<String>,
}

impl TestProxy {
    async fn start(self) -> (TestProxy, u16) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let proxy = self.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(proxy.clone().handle(client));
            }
        });
        (self, port)
    }

    async fn handle(self, mut client: TcpStream) {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match client.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
        }
        let text = String::from_utf8_lossy(&head).into_owned();
        let mut lines = text.lines();
        let request_line = lines.next().unwrap_or("");
        let mut parts = request_line.split_whitespace();
        let (Some("CONNECT"), Some(target)) = (parts.next(), parts.next()) else {
            let _ = client
                .write_all(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
                .await;
            return;
        };
        let authorization = lines
            .filter_map(|line| line.split_once(':'))
            .find(|(name, _)| name.eq_ignore_ascii_case("proxy-authorization"))
            .map(|(_, value)| value.trim().to_owned());
        self.seen
            .lock()
            .expect("lock")
            .push((target.to_owned(), authorization.clone()));
        if self.required_auth.is_some() && authorization != self.required_auth {
            let _ = client
                .write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n")
                .await;
            return;
        }
        let Ok(mut server) = TcpStream::connect(target).await else {
            let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
            return;
        };
        self.tunnels.fetch_add(1, Ordering::SeqCst);
        if client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
    }
}

fn settings(pairs: &[(&str, String)]) -> ProxySettings {
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|(key, value)| ((*key).to_owned(), value.clone()))
        .collect();
    ProxySettings::from_lookup(|name| {
        pairs
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    })
    .expect("settings")
}

async fn call(address: &ServerAddress) -> std::result::Result<(), Status> {
    let channel = address
        .connect_lazy()
        .map_err(|error| Status::internal(error.to_string()))?;
    let mut client = tokens(channel);
    client
        .get_listener_token(GetListenerTokenRequest::default())
        .await
        .map(|_| ())
}

#[tokio::test]
async fn plaintext_calls_go_through_the_http_proxy_unless_no_proxy_says_otherwise() {
    let server = Tokens::default();
    let port = serve(server.clone(), None).await;
    let (proxy, proxy_port) = TestProxy::default().start().await;
    let url = format!("http://127.0.0.1:{port}");

    let through = settings(&[("HTTP_PROXY", format!("http://127.0.0.1:{proxy_port}"))]);
    let address = ServerAddress::new(url.clone(), None).with_proxy(through);
    assert_eq!(
        address.proxy().expect("proxy").map(|proxy| proxy.port()),
        Some(proxy_port)
    );
    call(&address).await.expect("call through the proxy");
    assert_eq!(proxy.tunnels.load(Ordering::SeqCst), 1);
    assert_eq!(server.calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        proxy.seen.lock().expect("lock").clone(),
        [(format!("127.0.0.1:{port}"), None)]
    );

    let bypass = settings(&[
        ("http_proxy", format!("http://127.0.0.1:{proxy_port}")),
        ("NO_PROXY", "localhost, 127.0.0.1".into()),
    ]);
    let address = ServerAddress::new(url.clone(), None).with_proxy(bypass);
    assert!(address.proxy().expect("proxy").is_none());
    call(&address).await.expect("direct call");
    assert_eq!(
        proxy.tunnels.load(Ordering::SeqCst),
        1,
        "NO_PROXY bypasses it"
    );
    assert_eq!(server.calls.load(Ordering::SeqCst), 2);

    // An https-only proxy setting leaves http URLs alone.
    let https_only = settings(&[("HTTPS_PROXY", format!("127.0.0.1:{proxy_port}"))]);
    call(&ServerAddress::new(url, None).with_proxy(https_only))
        .await
        .expect("direct call");
    assert_eq!(proxy.tunnels.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn tls_runs_end_to_end_through_an_authenticating_proxy() {
    let material = ferry_tls::self_signed(&["localhost".to_owned()]).expect("certificate");
    let server = Tokens::default();
    let port = serve(server.clone(), Some(&material)).await;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("agent:s3cret pass")
    );
    let (proxy, proxy_port) = TestProxy {
        required_auth: Some(expected.clone()),
        ..TestProxy::default()
    }
    .start()
    .await;
    let url = format!("https://localhost:{port}");
    let proxy_url = format!("http://agent:s3cret%20pass@127.0.0.1:{proxy_port}");
    let address = ServerAddress::new(url.clone(), Some(material.certificate_pem.clone()))
        .with_proxy(settings(&[("HTTPS_PROXY", proxy_url)]));
    let shown = address
        .proxy()
        .expect("proxy")
        .expect("a proxy")
        .to_string();
    assert_eq!(shown, format!("127.0.0.1:{proxy_port}"));
    call(&address).await.expect("call through the proxy");
    assert_eq!(proxy.tunnels.load(Ordering::SeqCst), 1);
    assert_eq!(server.calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        proxy.seen.lock().expect("lock").clone(),
        [(format!("localhost:{port}"), Some(expected))]
    );

    // Wrong credentials: the proxy answers 407 and the call fails, saying so,
    // without showing the password.
    let wrong = format!("http://agent:wrong-pass@127.0.0.1:{proxy_port}");
    let address = ServerAddress::new(url.clone(), Some(material.certificate_pem.clone()))
        .with_proxy(settings(&[("HTTPS_PROXY", wrong)]));
    let status = call(&address).await.expect_err("refused");
    let mut text = status.to_string();
    let mut source = std::error::Error::source(&status);
    while let Some(error) = source {
        text.push_str(&format!(": {error}"));
        source = error.source();
    }
    assert!(text.contains("407"), "{text}");
    assert!(!text.contains("wrong-pass"), "{text}");
    assert_eq!(proxy.tunnels.load(Ordering::SeqCst), 1);

    // NO_PROXY with a host suffix bypasses it for TLS too.
    let bypass = settings(&[
        ("HTTPS_PROXY", format!("127.0.0.1:{proxy_port}")),
        ("NO_PROXY", ".localhost,localhost".into()),
    ]);
    call(&ServerAddress::new(url, Some(material.certificate_pem.clone())).with_proxy(bypass))
        .await
        .expect("direct call");
    assert_eq!(proxy.tunnels.load(Ordering::SeqCst), 1);
    assert_eq!(server.calls.load(Ordering::SeqCst), 2);
}
