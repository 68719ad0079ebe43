//! The public port: TLS (ALPN h2) and HTTP/2 connections served by hyper,
//! each call handed to the proxy with the client's address.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferry_observability::ServerCall;
use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument as _;

use crate::proxy::Gateway;

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 pings on every client connection, so idle long polls survive
/// NATs and load balancers, and how long the client may take to answer one.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long stopping waits for open calls.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// The largest header block a client may send.
const MAX_HEADER_LIST_BYTES: u32 = 64 * 1024;

/// Per-connection settings.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Settings {
    pub(crate) max_concurrent_streams: u32,
}

/// Accepts connections until `shutdown` turns true, then lets them finish
/// (up to [`STOP_GRACE`]).
pub(crate) async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    gateway: Arc<Gateway>,
    shutdown: watch::Receiver<bool>,
    settings: Settings,
) {
    let mut connections = JoinSet::new();
    let mut stop = shutdown.clone();
    loop {
        tokio::select! {
            () = stopped(&mut stop) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(serve_connection(
                        stream,
                        peer,
                        acceptor.clone(),
                        gateway.clone(),
                        shutdown.clone(),
                        settings,
                    ));
                }
                Err(error) => {
                    // Out of file descriptors and the like: wait a little.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(STOP_GRACE, drain).await.is_err() {
        tracing::info!(
            open = connections.len(),
            "closing connections still open after the grace period"
        );
        connections.shutdown().await;
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    gateway: Arc<Gateway>,
    mut shutdown: watch::Receiver<bool>,
    settings: Settings,
) {
    let _ = stream.set_nodelay(true);
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let client = peer.ip();
    let service = hyper::service::service_fn(move |request| {
        let gateway = gateway.clone();
        // The gateway's span continues the client's trace; the upstream
        // call carries it on (see `proxy`).
        let call = ServerCall::start(&request);
        let span = call.span().clone();
        async move {
            let response = gateway.handle(request, client).instrument(span).await;
            Ok::<_, Infallible>(call.finish(response))
        }
    });
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .max_concurrent_streams(settings.max_concurrent_streams)
        .max_header_list_size(MAX_HEADER_LIST_BYTES)
        .initial_stream_window_size(crate::STREAM_WINDOW)
        .initial_connection_window_size(crate::CONNECTION_WINDOW);
    let connection = builder.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(connection);
    let stopping = stopped(&mut shutdown);
    tokio::pin!(stopping);
    let finished = tokio::select! {
        result = &mut connection => Some(result),
        () = &mut stopping => None,
    };
    let result = match finished {
        Some(result) => result,
        None => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
}

/// Resolves once the gateway is stopping (or its handle is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stopped| *stopped).await;
}
