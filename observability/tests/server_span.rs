//! The gRPC server layer: a span per call that continues the caller's
//! trace, with the RPC semantic conventions and the call's status, and no
//! span for health checks.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use ferry_observability::GrpcServerLayer;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::BodyExt as _;
use opentelemetry::trace::{SpanKind, Status, TracerProvider as _};
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tonic::body::Body;
use tonic::codegen::Bytes;
use tower::{Layer as _, Service as _, ServiceExt as _};
use tracing_subscriber::layer::SubscriberExt as _;

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// Answers with `grpc-status` in the trailers (or, for `trailers_only`, in
/// the headers), noting the trace context its handler ran in.
fn answering(
    status: &'static str,
    trailers_only: bool,
    seen: Arc<Mutex<Vec<Option<String>>>>,
) -> impl tower::Service<
    Request<Body>,
    Response = Response<Body>,
    Error = Infallible,
    Future: Send + 'static,
> + Clone {
    tower::service_fn(move |_request: Request<Body>| {
        let seen = seen.clone();
        async move {
            if let Ok(mut seen) = seen.lock() {
                seen.push(ferry_observability::propagation::current_traceparent());
            }
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static(status));
            let response = if trailers_only {
                let mut response = Response::new(Body::empty());
                *response.headers_mut() = trailers;
                response
            } else {
                let frames = vec![
                    Ok::<_, Infallible>(http_body::Frame::data(Bytes::from_static(b"\0\0\0\0\0"))),
                    Ok(http_body::Frame::trailers(trailers)),
                ];
                Response::new(Body::new(http_body_util::StreamBody::new(
                    futures::stream::iter(frames),
                )))
            };
            Ok::<_, Infallible>(response)
        }
    })
}

async fn call(
    path: &str,
    traceparent: Option<&str>,
    status: &'static str,
    trailers_only: bool,
    seen: Arc<Mutex<Vec<Option<String>>>>,
) -> Option<HeaderMap> {
    let mut service = GrpcServerLayer.layer(answering(status, trailers_only, seen));
    let mut request = Request::builder().uri(path);
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    let request = request.body(Body::empty()).expect("request");
    let response = service
        .ready()
        .await
        .expect("ready")
        .call(request)
        .await
        .expect("infallible");
    let collected = response.into_body().collect().await.expect("body");
    collected.trailers().cloned()
}

fn attribute<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|attribute: &&KeyValue| attribute.key.as_str() == key)
        .map(|attribute| &attribute.value)
}

#[tokio::test(flavor = "current_thread")]
async fn every_call_is_a_server_span_in_the_callers_trace() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let _default = tracing::subscriber::set_default(subscriber);
    let seen = Arc::new(Mutex::new(Vec::new()));

    let trailers = call(
        "/ferry.v1.JobService/QueueJob",
        Some(PARENT),
        "0",
        false,
        seen.clone(),
    )
    .await;
    assert_eq!(
        trailers.and_then(|t| t.get("grpc-status").cloned()),
        Some(HeaderValue::from_static("0")),
        "the trailers pass through"
    );
    call(
        "/grpc.health.v1.Health/Check",
        None,
        "0",
        true,
        seen.clone(),
    )
    .await;
    call(
        "/ferry.v1.LogService/StreamLogs",
        None,
        "14",
        true,
        seen.clone(),
    )
    .await;
    provider.force_flush().expect("flush");

    let spans = exporter.get_finished_spans().expect("spans");
    assert_eq!(spans.len(), 2, "no span for the health check: {spans:#?}");
    let queue = spans
        .iter()
        .find(|span| span.name == "ferry.v1.JobService/QueueJob")
        .expect("the QueueJob span");
    assert_eq!(queue.span_kind, SpanKind::Server);
    assert_eq!(
        queue.span_context.trace_id().to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(queue.parent_span_id.to_string(), "00f067aa0ba902b7");
    assert_eq!(attribute(queue, "rpc.system"), Some(&Value::from("grpc")));
    assert_eq!(
        attribute(queue, "rpc.service"),
        Some(&Value::from("ferry.v1.JobService"))
    );
    assert_eq!(
        attribute(queue, "rpc.method"),
        Some(&Value::from("QueueJob"))
    );
    assert_eq!(
        attribute(queue, "rpc.grpc.status_code"),
        Some(&Value::I64(0))
    );
    assert_eq!(queue.status, Status::Unset);

    let logs = spans
        .iter()
        .find(|span| span.name == "ferry.v1.LogService/StreamLogs")
        .expect("the StreamLogs span");
    assert_eq!(
        attribute(logs, "rpc.grpc.status_code"),
        Some(&Value::I64(14))
    );
    assert!(
        matches!(logs.status, Status::Error { .. }),
        "{:?}",
        logs.status
    );
    assert_ne!(
        logs.span_context.trace_id(),
        queue.span_context.trace_id(),
        "no traceparent: a new trace"
    );

    // The handler ran in the call's span: what it sends on continues it.
    let seen = seen.lock().map(|seen| seen.clone()).unwrap_or_default();
    let handler = seen[0].clone().expect("a traced handler");
    assert!(handler.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
    assert!(!handler.contains("00f067aa0ba902b7"), "the span's own id");
    assert_eq!(seen[1], None, "health checks are not traced");
}
