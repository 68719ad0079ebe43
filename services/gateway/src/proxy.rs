//! One call through the gateway: answered here (health, reflection,
//! unknown services) or forwarded to a route, with the deadline, the size
//! limit, `x-forwarded-for` and, for idempotent calls, retries.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Instant;
use tonic::Status;
use tonic::body::Body;
use tonic::service::Routes;
use tower::ServiceExt;

use crate::body::{CallFault, LimitedBody, MessageTooLarge, ResponseBody};
use crate::grpc::{self, status_response};
use crate::upstream::{CallError, Route, Upstreams};

/// How long a call waits for a replica to be ready to take it when no
/// deadline says otherwise (normally none waits: channels are always ready).
const READY_WAIT: Duration = Duration::from_secs(5);
/// At most this many replicas are tried for an idempotent call.
const MAX_ATTEMPTS: usize = 3;

/// Everything a call needs, shared by every connection.
pub(crate) struct Gateway {
    upstreams: Arc<Upstreams>,
    local: Routes,
    max_request_bytes: usize,
}

impl Gateway {
    pub(crate) fn new(upstreams: Arc<Upstreams>, local: Routes, max_request_bytes: usize) -> Self {
        Self {
            upstreams,
            local,
            max_request_bytes,
        }
    }

    /// Answers one call from a client at `peer`.
    pub(crate) async fn handle(&self, request: Request<Incoming>, peer: IpAddr) -> Response<Body> {
        let path = request.uri().path().to_owned();
        let Some((service, method)) = grpc::split_path(&path) else {
            return status_response(Status::unimplemented(format!(
                "{path} is not a gRPC method"
            )));
        };
        if grpc::is_local_service(service) {
            let local = self.local.clone();
            return match local.oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
        }
        let Some(route) = self.upstreams.route(service) else {
            return status_response(Status::unimplemented(format!("unknown service {service}")));
        };
        let started = Instant::now();
        let deadline = grpc::grpc_timeout(request.headers()).map(|timeout| started + timeout);
        let (mut parts, body) = request.into_parts();
        add_forwarded_for(&mut parts.headers, peer);
        parts.extensions = http::Extensions::new();
        let fault = Arc::new(CallFault::default());
        let body = LimitedBody::new(body, self.max_request_bytes, fault.clone());
        let call = Call {
            route,
            parts,
            fault,
            deadline,
            ready_by: deadline
                .unwrap_or(started + READY_WAIT)
                .min(started + READY_WAIT),
        };
        if grpc::is_idempotent(service, method) {
            call.with_retries(body).await
        } else {
            call.once(Body::new(body)).await
        }
    }
}

/// Adds the client's address to `x-forwarded-for` (after any addresses the
/// client sent: the last one is the gateway's word).
fn add_forwarded_for(headers: &mut HeaderMap, peer: IpAddr) {
    let mut value = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .collect::<Vec<_>>()
        .join(", ");
    if !value.is_empty() {
        value.push_str(", ");
    }
    value.push_str(&peer.to_canonical().to_string());
    headers.remove("x-forwarded-for");
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert("x-forwarded-for", value);
    }
}

struct Call<'a> {
    route: &'a Arc<Route>,
    parts: http::request::Parts,
    fault: Arc<CallFault>,
    deadline: Option<Instant>,
    ready_by: Instant,
}

impl Call<'_> {
    fn request(&self, body: Body) -> Request<Body> {
        let mut request = Request::new(body);
        *request.method_mut() = self.parts.method.clone();
        *request.uri_mut() = self.parts.uri.clone();
        *request.version_mut() = self.parts.version;
        *request.headers_mut() = self.parts.headers.clone();
        // The upstream's span is a child of the gateway's (when the gateway
        // traces; otherwise the client's traceparent passes through).
        ferry_observability::propagation::inject_current(request.headers_mut());
        request.extensions_mut().insert(self.fault.clone());
        request
    }

    /// Sends the call once, its body streamed as it comes.
    async fn once(self, body: Body) -> Response<Body> {
        let request = self.request(body);
        let answer = self.route.call(request, self.ready_by);
        let outcome = tokio::select! {
            outcome = answer => outcome,
            length = self.fault.wait_oversized() => return self.too_large(length),
            () = sleep_until(self.deadline) => return self.deadline_exceeded(),
        };
        self.answer(outcome)
    }

    /// Holds the request (one message) and sends it again to another replica
    /// when the chosen one fails before answering.
    async fn with_retries(self, body: LimitedBody<Incoming>) -> Response<Body> {
        let collected = tokio::select! {
            collected = body.collect() => collected,
            () = sleep_until(self.deadline) => return self.deadline_exceeded(),
        };
        let bytes = match collected {
            Ok(collected) => collected.to_bytes(),
            Err(error) => {
                return match error.downcast_ref::<MessageTooLarge>() {
                    Some(too_large) => self.too_large(too_large.length),
                    None => status_response(Status::cancelled(format!(
                        "the request body broke off: {error}"
                    ))),
                };
            }
        };
        let attempts = self.route.replica_count().clamp(1, MAX_ATTEMPTS);
        for attempt in 1..=attempts {
            let body = Body::new(http_body_util::Full::new(bytes.clone()));
            let answer = self.route.call(self.request(body), self.ready_by);
            let outcome = tokio::select! {
                outcome = answer => outcome,
                () = sleep_until(self.deadline) => return self.deadline_exceeded(),
            };
            match outcome {
                Err(CallError::ReplicaFailed(failure)) if attempt < attempts => {
                    tracing::debug!(%failure, attempt, "retrying an idempotent call");
                }
                outcome => return self.answer(outcome),
            }
        }
        self.answer(Err(CallError::NoReplica))
    }

    fn answer(&self, outcome: Result<Response<Body>, CallError>) -> Response<Body> {
        let service = self.route.service();
        match outcome {
            Ok(response) => {
                let fault = self.fault.clone();
                response.map(|body| Body::new(ResponseBody::new(body, fault, service.clone())))
            }
            Err(_) if self.fault.oversized().is_some() => {
                self.too_large(self.fault.oversized().unwrap_or_default())
            }
            Err(CallError::NoReplica) if self.deadline_passed() => self.deadline_exceeded(),
            Err(CallError::NoReplica) => no_replica(service),
            Err(CallError::DeadlineExceeded) => self.deadline_exceeded(),
            Err(CallError::ReplicaFailed(_)) if self.route.healthy_count() == 0 => {
                no_replica(service)
            }
            Err(CallError::ReplicaFailed(failure)) => {
                status_response(Status::unavailable(format!(
                    "a replica of {service} failed before answering: {}",
                    failure.detail
                )))
            }
            Err(CallError::Balancer(error)) => status_response(Status::unavailable(format!(
                "cannot reach {service}: {error}"
            ))),
        }
    }

    fn deadline_passed(&self) -> bool {
        self.deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
    }

    fn too_large(&self, length: u64) -> Response<Body> {
        status_response(Status::resource_exhausted(format!(
            "request message of {length} bytes is larger than the gateway's limit"
        )))
    }

    fn deadline_exceeded(&self) -> Response<Body> {
        status_response(Status::deadline_exceeded(format!(
            "deadline exceeded waiting for {}",
            self.route.service()
        )))
    }
}

fn no_replica(service: &str) -> Response<Body> {
    status_response(Status::unavailable(format!(
        "no healthy replica of {service}"
    )))
}

/// Sleeps until the deadline, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_appends_the_peer() {
        let mut headers = HeaderMap::new();
        add_forwarded_for(&mut headers, "192.0.2.7".parse().expect("ip"));
        assert_eq!(
            headers.get("x-forwarded-for").map(|v| v.as_bytes()),
            Some(&b"192.0.2.7"[..])
        );
        let mut headers = HeaderMap::new();
        headers.append("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        headers.append("x-forwarded-for", HeaderValue::from_static("10.0.0.2"));
        add_forwarded_for(&mut headers, "::1".parse().expect("ip"));
        let values: Vec<_> = headers.get_all("x-forwarded-for").iter().collect();
        assert_eq!(
            values,
            vec![HeaderValue::from_static("10.0.0.1, 10.0.0.2, ::1")]
        );
    }
}
