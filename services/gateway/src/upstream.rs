//! The replicas behind each route: one tonic channel per replica over the
//! mesh's mutual TLS, a power-of-two-choices balancer over the healthy ones
//! (load = calls open on the replica), and the health checks that eject and
//! re-admit replicas.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::body::Body;
use tonic::transport::{Channel, Endpoint};
use tower::Service;
use tower::balance::p2c::Balance;
use tower::discover::Change;
use tower::load::PendingRequests;

mod health;

pub(crate) use health::{check_timeout, health_loop};

use crate::body::{CallFault, CompleteOnBodyEnd};
use crate::{Error, GatewayConfig, Result};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Member = PendingRequests<ReplicaService, CompleteOnBodyEnd>;
type Changes = mpsc::UnboundedSender<std::result::Result<Change<usize, Member>, Infallible>>;
type Discovered = UnboundedReceiverStream<std::result::Result<Change<usize, Member>, Infallible>>;
type Balancer = Balance<Discovered, http::Request<Body>>;

/// How long connecting to a replica may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// HTTP/2 pings on idle upstream connections, and how long an answer may take.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// The TLS server name the gateway expects from the replicas of `service`:
/// `<name>.ferry.internal`, with the mesh names of ferry's services
/// (`ferry.v1.JobService` → `dispatch.ferry.internal`,
/// `ferry.v1.TokenService` → `tokens…`, `RegistrationService` → `registry…`,
/// `LogService` → `logs…`, `ResourceService` → `resources…`); for any other
/// service, the last part of its name, lowercased, without a `Service`
/// suffix (`acme.v1.WidgetService` → `widget.ferry.internal`). The name
/// comes from the route, never from the URL, so replicas can be dialled by
/// IP address or any host name.
pub fn upstream_server_name(service: &str) -> String {
    use ferry_proto::service_names::{JOB, LOG, REGISTRATION, RESOURCE, TOKEN};
    let name = match service {
        REGISTRATION => "registry".to_owned(),
        TOKEN => "tokens".to_owned(),
        JOB => "dispatch".to_owned(),
        LOG => "logs".to_owned(),
        RESOURCE => "resources".to_owned(),
        other => {
            let last = other.rsplit('.').next().unwrap_or(other);
            let stem = last.strip_suffix("Service").filter(|stem| !stem.is_empty());
            stem.unwrap_or(last).to_ascii_lowercase()
        }
    };
    ferry_tls::mesh_dns_name(&name)
}

/// Why a replica URL is not usable, if it is not.
pub(crate) fn validate_url(url: &str) -> std::result::Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|_| "is not a URL".to_owned())?;
    if uri.scheme_str() != Some("https") {
        return Err("must be https:// (the mesh speaks mutual TLS)".to_owned());
    }
    if uri.authority().is_none() {
        return Err("has no host".to_owned());
    }
    if !matches!(uri.path(), "" | "/") {
        return Err("must not have a path".to_owned());
    }
    Ok(())
}

/// Every route of the gateway.
pub(crate) struct Upstreams {
    routes: BTreeMap<String, Arc<Route>>,
}

impl Upstreams {
    pub(crate) fn new(config: &GatewayConfig) -> Result<Self> {
        let mut routes = BTreeMap::new();
        for (service, urls) in &config.routes {
            let server_name = upstream_server_name(service);
            let mut replicas = Vec::with_capacity(urls.len());
            for url in urls {
                let tls = ferry_tls::mesh_client_config(
                    &config.mesh_identity,
                    &config.mesh_ca_pem,
                    &server_name,
                );
                let upstream_error = |source| Error::Upstream {
                    url: url.clone(),
                    source,
                };
                let channel = Endpoint::from_shared(url.clone())
                    .map_err(upstream_error)?
                    .tls_config(tls)
                    .map_err(upstream_error)?
                    .connect_timeout(CONNECT_TIMEOUT)
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
                    .keep_alive_timeout(KEEPALIVE_TIMEOUT)
                    .keep_alive_while_idle(true)
                    .initial_stream_window_size(crate::STREAM_WINDOW)
                    .initial_connection_window_size(crate::CONNECTION_WINDOW)
                    .connect_lazy();
                replicas.push(Replica {
                    url: url.clone(),
                    channel,
                });
            }
            routes.insert(service.clone(), Arc::new(Route::new(service, replicas)));
        }
        Ok(Self { routes })
    }

    pub(crate) fn route(&self, service: &str) -> Option<&Arc<Route>> {
        self.routes.get(service)
    }
}

struct Replica {
    url: String,
    channel: Channel,
}

/// The replicas of one route and which of them are in the balancer.
struct RouteHealth {
    service: Arc<str>,
    replicas: Vec<Replica>,
    healthy: Mutex<Vec<bool>>,
    changes: Changes,
}

impl RouteHealth {
    fn healthy_count(&self) -> usize {
        let healthy = self.healthy.lock().unwrap_or_else(PoisonError::into_inner);
        healthy.iter().filter(|up| **up).count()
    }

    /// Ejects a replica from the balancer or re-admits it.
    fn set_health(self: &Arc<Self>, index: usize, up: bool, reason: &str) {
        let mut healthy = self.healthy.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(state) = healthy.get_mut(index) else {
            return;
        };
        if *state == up {
            return;
        }
        *state = up;
        let change = if up {
            Change::Insert(index, self.member(index))
        } else {
            Change::Remove(index)
        };
        // The receiver lives as long as the route.
        let _ = self.changes.send(Ok(change));
        drop(healthy);
        let url = &self.replicas[index].url;
        if up {
            tracing::info!(service = %self.service, replica = %url, reason, "replica admitted");
        } else {
            tracing::warn!(service = %self.service, replica = %url, reason, "replica ejected");
        }
    }

    fn member(self: &Arc<Self>, index: usize) -> Member {
        let service = ReplicaService {
            channel: self.replicas[index].channel.clone(),
            health: self.clone(),
            index,
        };
        PendingRequests::new(service, CompleteOnBodyEnd)
    }
}

/// Why a call through a route did not get an answer.
#[derive(Debug)]
pub(crate) enum CallError {
    /// No replica is healthy, or none became ready in time.
    NoReplica,
    /// The chosen replica failed before answering (and was ejected).
    ReplicaFailed(ReplicaFailure),
    /// The call's deadline passed first.
    DeadlineExceeded,
    /// The balancer itself failed.
    Balancer(String),
}

/// A replica that failed before answering: connection refused or reset,
/// TLS refused, stream reset.
#[derive(Debug, thiserror::Error)]
#[error("replica {url} failed: {detail}")]
pub(crate) struct ReplicaFailure {
    pub(crate) url: String,
    pub(crate) detail: String,
}

/// One route: a service's replicas behind a balancer.
pub(crate) struct Route {
    health: Arc<RouteHealth>,
    balancer: tokio::sync::Mutex<Balancer>,
}

impl Route {
    fn new(service: &str, replicas: Vec<Replica>) -> Self {
        let (changes, discovered) = mpsc::unbounded_channel();
        let health = Arc::new(RouteHealth {
            service: Arc::from(service),
            healthy: Mutex::new(vec![false; replicas.len()]),
            replicas,
            changes,
        });
        let balancer = Balance::new(UnboundedReceiverStream::new(discovered));
        Self {
            health,
            balancer: tokio::sync::Mutex::new(balancer),
        }
    }

    pub(crate) fn service(&self) -> &Arc<str> {
        &self.health.service
    }

    pub(crate) fn replica_count(&self) -> usize {
        self.health.replicas.len()
    }

    pub(crate) fn healthy_count(&self) -> usize {
        self.health.healthy_count()
    }

    /// Sends a call to one healthy replica (power of two choices) and waits
    /// for its answer's headers. Waiting for a replica to be ready ends at
    /// `ready_by`.
    pub(crate) async fn call(
        &self,
        request: http::Request<Body>,
        ready_by: Instant,
    ) -> std::result::Result<http::Response<Body>, CallError> {
        if self.healthy_count() == 0 {
            return Err(CallError::NoReplica);
        }
        let ready = async {
            let mut balancer = self.balancer.lock().await;
            std::future::poll_fn(|context| balancer.poll_ready(context)).await?;
            Ok::<_, BoxError>(balancer.call(request))
        };
        let answer = match tokio::time::timeout_at(ready_by, ready).await {
            Err(_) => return Err(CallError::NoReplica),
            Ok(Err(error)) => return Err(CallError::Balancer(error.to_string())),
            Ok(Ok(answer)) => answer,
        };
        answer.await.map_err(|error| {
            if error.is::<tonic::TimeoutExpired>() {
                return CallError::DeadlineExceeded;
            }
            match error.downcast::<ReplicaFailure>() {
                Ok(failure) => CallError::ReplicaFailed(*failure),
                Err(other) => CallError::Balancer(other.to_string()),
            }
        })
    }
}

/// A replica's channel as a balancer member: a call that fails before an
/// answer (not because of the client) ejects the replica at once.
#[derive(Clone)]
struct ReplicaService {
    channel: Channel,
    health: Arc<RouteHealth>,
    index: usize,
}

impl Service<http::Request<Body>> for ReplicaService {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, std::result::Result<http::Response<Body>, BoxError>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<std::result::Result<(), BoxError>> {
        self.channel.poll_ready(context).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let fault = request.extensions().get::<Arc<CallFault>>().cloned();
        let answer = self.channel.call(request);
        let health = self.health.clone();
        let index = self.index;
        Box::pin(async move {
            answer.await.map_err(|error| {
                // The channel enforces `grpc-timeout` too: the call's deadline
                // passing is no fault of the replica's.
                if caused_by::<tonic::TimeoutExpired>(&error) {
                    return Box::new(tonic::TimeoutExpired(())) as BoxError;
                }
                let detail = error_chain(&error);
                if !fault.as_deref().is_some_and(CallFault::is_client_fault) {
                    health.set_health(index, false, &detail);
                }
                let url = health.replicas[index].url.clone();
                Box::new(ReplicaFailure { url, detail }) as BoxError
            })
        })
    }
}

/// Whether `error` or one of its sources is an `E`.
fn caused_by<E: std::error::Error + 'static>(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(cause) = source {
        if cause.is::<E>() {
            return true;
        }
        source = cause.source();
    }
    false
}

/// An error and its sources, joined with ": ".
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_come_from_the_route() {
        assert_eq!(
            upstream_server_name("ferry.v1.JobService"),
            "dispatch.ferry.internal"
        );
        assert_eq!(
            upstream_server_name("ferry.v1.TokenService"),
            "tokens.ferry.internal"
        );
        assert_eq!(
            upstream_server_name("ferry.v1.RegistrationService"),
            "registry.ferry.internal"
        );
        assert_eq!(
            upstream_server_name("ferry.v1.LogService"),
            "logs.ferry.internal"
        );
        assert_eq!(
            upstream_server_name("ferry.v1.ResourceService"),
            "resources.ferry.internal"
        );
        assert_eq!(
            upstream_server_name("acme.v1.WidgetService"),
            "widget.ferry.internal"
        );
        assert_eq!(upstream_server_name("Service"), "service.ferry.internal");
    }

    #[test]
    fn replica_urls_must_be_https_origins() {
        assert!(validate_url("https://127.0.0.1:7601").is_ok());
        assert!(validate_url("https://dispatch-0.ferry.svc:7601/").is_ok());
        for bad in [
            "http://127.0.0.1:7601",
            "127.0.0.1:7601",
            "https://x/api",
            "not a url",
        ] {
            assert!(validate_url(bad).is_err(), "{bad}");
        }
    }
}
