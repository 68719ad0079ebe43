//! A server span and an `rpc.server.duration` measurement for every gRPC
//! call, as a tower layer for tonic servers ([`GrpcServerLayer`]) and as
//! the [`ServerCall`] pieces the gateway's own HTTP/2 server uses.
//!
//! The span continues the caller's trace (its W3C `traceparent`), follows
//! the semantic conventions (`rpc.system`, `rpc.service`, `rpc.method`,
//! `rpc.grpc.status_code`, kind server, named `service/method`) and ends
//! when the response's last frame is sent, so streams and long polls are
//! measured whole. The status comes from `grpc-status` in the headers
//! (trailers-only answers) or the trailers. Nothing else of the request —
//! no header, no credential, no message — is recorded.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use http::{HeaderMap, Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use opentelemetry::KeyValue;
use tonic::body::Body;
use tonic::codegen::Bytes;
use tracing::Span;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::metrics::{self, attributes};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Services whose calls are measured but get no span: the gateway's
/// health checks would otherwise make a trace every second per replica.
pub const UNTRACED_SERVICES: [&str; 3] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// `grpc-status` values that mark a server span as an error (semantic
/// conventions: the server's fault, not the caller's).
const SERVER_ERRORS: [i64; 6] = [2, 4, 12, 13, 14, 15];
const UNIMPLEMENTED: i64 = 12;
const CANCELLED: i64 = 1;
const UNKNOWN: i64 = 2;

/// One call being served: its span and what its measurement needs.
#[derive(Debug)]
pub struct ServerCall {
    span: Span,
    started: Instant,
    service: String,
    method: String,
}

impl ServerCall {
    /// Opens the call's span as a child of the caller's context (from the
    /// request's `traceparent`), or a new trace when there is none.
    pub fn start<B>(request: &Request<B>) -> ServerCall {
        let path = request.uri().path();
        let (service, method) = path
            .strip_prefix('/')
            .and_then(|rest| rest.split_once('/'))
            .unwrap_or(("", path));
        let span = if UNTRACED_SERVICES.contains(&service) {
            Span::none()
        } else {
            let span = tracing::info_span!(
                target: crate::SPAN_TARGET,
                parent: None,
                "grpc.server",
                otel.name = %format_args!("{service}/{method}"),
                otel.kind = "server",
                rpc.system = "grpc",
                rpc.service = %service,
                rpc.method = %method,
                rpc.grpc.status_code = Empty,
                otel.status_code = Empty,
            );
            if !span.is_disabled() {
                let parent = crate::propagation::extract(request.headers());
                let _ = span.set_parent(parent);
            }
            span
        };
        ServerCall {
            span,
            started: Instant::now(),
            service: service.to_owned(),
            method: method.to_owned(),
        }
    }

    /// The call's span (disabled when tracing is off: the callsite is then
    /// never enabled, so it costs nothing): run the handler in it.
    pub fn span(&self) -> &Span {
        &self.span
    }

    /// Watches the response: the span ends and the duration is recorded
    /// when its status is known (its headers or its trailers).
    pub fn finish<B>(self, response: Response<B>) -> Response<Body>
    where
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        match status_of(response.headers()) {
            Some(code) => {
                self.record(code);
                response.map(Body::new)
            }
            None => response.map(|body| {
                Body::new(TracedBody {
                    inner: body,
                    call: Some(self),
                })
            }),
        }
    }

    /// Ends the call with `code` (a gRPC status code).
    pub fn record(self, code: i64) {
        self.span.record("rpc.grpc.status_code", code);
        if SERVER_ERRORS.contains(&code) {
            self.span.record("otel.status_code", "ERROR");
        }
        if !metrics::enabled() {
            return;
        }
        // Unknown methods would give attackers unbounded label values.
        let (service, method) = if code == UNIMPLEMENTED {
            ("_OTHER".to_owned(), "_OTHER".to_owned())
        } else {
            (self.service.clone(), self.method.clone())
        };
        let elapsed = self.started.elapsed().as_secs_f64() * 1000.0;
        metrics::get().rpc_server_duration.record(
            elapsed,
            &[
                KeyValue::new(attributes::RPC_SYSTEM, "grpc"),
                KeyValue::new(attributes::RPC_SERVICE, service),
                KeyValue::new(attributes::RPC_METHOD, method),
                KeyValue::new(attributes::RPC_GRPC_STATUS_CODE, code),
            ],
        );
    }
}

/// The numeric `grpc-status` in headers or trailers.
pub fn status_of(headers: &HeaderMap) -> Option<i64> {
    headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

pin_project_lite::pin_project! {
    /// A response body that ends its call when its trailers (or its end,
    /// or an error, or the client going away) come.
    struct TracedBody<B> {
        #[pin]
        inner: B,
        call: Option<ServerCall>,
    }

    impl<B> PinnedDrop for TracedBody<B> {
        fn drop(this: Pin<&mut Self>) {
            // Dropped before its end: the client cancelled the call.
            if let Some(call) = this.project().call.take() {
                call.record(CANCELLED);
            }
        }
    }
}

impl<B> HttpBody for TracedBody<B>
where
    B: HttpBody<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(context));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(trailers) = frame.trailers_ref()
                    && let Some(call) = this.call.take()
                {
                    call.record(status_of(trailers).unwrap_or(UNKNOWN));
                }
            }
            Some(Err(_)) => {
                if let Some(call) = this.call.take() {
                    call.record(UNKNOWN);
                }
            }
            None => {
                if let Some(call) = this.call.take() {
                    call.record(UNKNOWN);
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The tower layer for tonic servers: `Server::builder().layer(GrpcServerLayer)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcServerLayer;

impl<S> tower::Layer<S> for GrpcServerLayer {
    type Service = GrpcServerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcServerService { inner }
    }
}

/// The service [`GrpcServerLayer`] makes.
#[derive(Debug, Clone)]
pub struct GrpcServerService<S> {
    inner: S,
}

impl<S, RequestBody, ResponseBody> tower::Service<Request<RequestBody>> for GrpcServerService<S>
where
    S: tower::Service<Request<RequestBody>, Response = Response<ResponseBody>>,
    S::Future: Send + 'static,
    ResponseBody: HttpBody<Data = Bytes> + Send + 'static,
    ResponseBody::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: Request<RequestBody>) -> Self::Future {
        use tracing::Instrument as _;
        let call = ServerCall::start(&request);
        let span = call.span().clone();
        let future = span.in_scope(|| self.inner.call(request));
        Box::pin(async move {
            let response = future.instrument(span).await?;
            Ok(call.finish(response))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    #[test]
    fn statuses_are_read_from_headers() {
        let mut headers = HeaderMap::new();
        assert_eq!(status_of(&headers), None);
        headers.insert("grpc-status", http::HeaderValue::from_static("14"));
        assert_eq!(status_of(&headers), Some(14));
        headers.insert("grpc-status", http::HeaderValue::from_static("x"));
        assert_eq!(status_of(&headers), None);
    }

    #[tokio::test]
    async fn a_streamed_answer_ends_its_call_at_the_trailers() {
        let request = Request::builder()
            .uri("/ferry.v1.JobService/PollJob")
            .body(())
            .expect("request");
        let call = ServerCall::start(&request);
        assert_eq!(
            (call.service.as_str(), call.method.as_str()),
            ("ferry.v1.JobService", "PollJob")
        );
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let body = http_body_util::StreamBody::new(futures_stream(trailers));
        let response = call.finish(Response::new(body));
        let collected = response.into_body().collect().await.expect("body");
        assert_eq!(
            collected.trailers().and_then(status_of),
            Some(0),
            "the trailers pass through"
        );
    }

    fn futures_stream(
        trailers: HeaderMap,
    ) -> impl futures::Stream<Item = Result<Frame<Bytes>, std::convert::Infallible>> {
        futures::stream::iter(vec![
            Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\0"))),
            Ok(Frame::trailers(trailers)),
        ])
    }
}
