//! W3C trace context (`traceparent`, `tracestate`) in HTTP/2 headers and
//! gRPC metadata: extracting a caller's context, injecting the current
//! span's, and the `traceparent` strings stored with jobs.
//!
//! Only ids and flags travel: never a header's other contents.

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::{SpanContext, TraceContextExt as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::metadata::MetadataMap;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The W3C header that carries the trace id and the parent span id.
pub const TRACEPARENT: &str = "traceparent";

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::AsciiMetadataKey::from_bytes(key.as_bytes()),
            value.parse::<tonic::metadata::AsciiMetadataValue>(),
        ) {
            self.0.insert(key, value);
        }
    }
}

struct OneHeader<'a>(&'a str);

impl Extractor for OneHeader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == TRACEPARENT).then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

struct OneValue(Option<String>);

impl Injector for OneValue {
    fn set(&mut self, key: &str, value: String) {
        if key == TRACEPARENT {
            self.0 = Some(value);
        }
    }
}

/// The caller's context from the request headers (an empty context when
/// they carry none or a malformed one).
pub fn extract(headers: &HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// Writes `cx`'s span (when it has a valid one) into the headers, replacing
/// any `traceparent` they had.
pub fn inject(cx: &Context, headers: &mut HeaderMap) {
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(cx, &mut HeaderInjector(headers));
    }
}

/// The OpenTelemetry context of the current `tracing` span (empty when
/// tracing export is off or the span is not traced).
pub fn current() -> Context {
    let cx = tracing::Span::current().context();
    if cx.span().span_context().is_valid() {
        cx
    } else {
        Context::current()
    }
}

/// Writes the current span's context into the headers (nothing when there
/// is none: headers passed through keep the caller's).
pub fn inject_current(headers: &mut HeaderMap) {
    inject(&current(), headers);
}

/// Writes the current span's context into a gRPC request's metadata.
pub fn inject_metadata(metadata: &mut MetadataMap) {
    let cx = current();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&cx, &mut MetadataInjector(metadata));
    }
}

/// A tonic interceptor that sends the current span's context with every
/// call: `Client::with_interceptor(channel, TraceContextInterceptor)`.
/// `ferry-client`'s credentials do the same for ferry's own clients.
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceContextInterceptor;

impl tonic::service::Interceptor for TraceContextInterceptor {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        inject_metadata(request.metadata_mut());
        Ok(request)
    }
}

/// The `traceparent` value of `cx`'s span, if it has a valid one.
pub fn traceparent(cx: &Context) -> Option<String> {
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut value = OneValue(None);
    TraceContextPropagator::new().inject_context(cx, &mut value);
    value.0
}

/// The current span's `traceparent`, if it is traced.
pub fn current_traceparent() -> Option<String> {
    traceparent(&current())
}

/// A remote parent context from a stored `traceparent` (`None` when the
/// value is empty or malformed).
pub fn from_traceparent(value: &str) -> Option<Context> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    let cx = TraceContextPropagator::new().extract(&OneHeader(value));
    cx.span().span_context().is_valid().then_some(cx)
}

/// The span context a stored `traceparent` names, for links.
pub fn span_context(value: &str) -> Option<SpanContext> {
    from_traceparent(value).map(|cx| cx.span().span_context().clone())
}

/// The trace id (32 lowercase hex digits) of a `traceparent`, if valid.
pub fn trace_id(value: &str) -> Option<String> {
    span_context(value).map(|context| context.trace_id().to_string())
}

/// The `traceparent` a call's headers carry, if valid: what a process
/// that does not trace itself still passes on.
pub fn header_traceparent(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(TRACEPARENT)?.to_str().ok()?;
    from_traceparent(value).map(|_| value.trim().to_owned())
}

/// Makes `span` (not yet entered) a child of the span a stored
/// `traceparent` names; false when the value is empty or malformed, or the
/// span is not traced.
pub fn continue_from(span: &tracing::Span, traceparent: &str) -> bool {
    from_traceparent(traceparent).is_some_and(|cx| span.set_parent(cx).is_ok())
}

/// The `traceparent` a gRPC request's metadata carries, if valid.
pub fn metadata_traceparent(metadata: &MetadataMap) -> Option<String> {
    let value = metadata.get(TRACEPARENT)?.to_str().ok()?;
    from_traceparent(value).map(|_| value.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparents_round_trip_and_garbage_is_refused() {
        let cx = from_traceparent(PARENT).expect("valid");
        assert_eq!(traceparent(&cx).as_deref(), Some(PARENT));
        assert_eq!(
            trace_id(PARENT).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        for bad in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "xx-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "Bearer abc",
        ] {
            assert!(from_traceparent(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn headers_carry_the_context_both_ways() {
        let cx = from_traceparent(PARENT).expect("valid");
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("Bearer secret"));
        inject(&cx, &mut headers);
        assert_eq!(
            headers.get(TRACEPARENT).and_then(|v| v.to_str().ok()),
            Some(PARENT)
        );
        let back = extract(&headers);
        assert_eq!(
            back.span().span_context().trace_id(),
            cx.span().span_context().trace_id()
        );
        assert_eq!(header_traceparent(&headers).as_deref(), Some(PARENT));
        // An empty context leaves what the headers had.
        inject(&Context::new(), &mut headers);
        assert_eq!(header_traceparent(&headers).as_deref(), Some(PARENT));
    }

    #[test]
    fn without_a_traced_span_nothing_is_injected() {
        let mut metadata = MetadataMap::new();
        inject_metadata(&mut metadata);
        assert!(metadata.get(TRACEPARENT).is_none());
        assert!(current_traceparent().is_none());
    }
}
