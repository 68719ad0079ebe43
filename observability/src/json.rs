//! JSON log lines that name the trace and span they belong to, so a log
//! line leads to its trace in Jaeger or Tempo and back.
//!
//! One object per event on stderr: `timestamp`, `level`, `target`, the
//! event's fields flattened (`message` among them), `span` (the current
//! span's name) and, when the span is traced, `trace_id` and `span_id`.

use std::io::Write as _;
use std::sync::OnceLock;

use opentelemetry::trace::TraceContextExt as _;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Dispatch, Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime as _, SystemTime};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

type MakeWriter = Box<dyn Fn() -> Box<dyn std::io::Write> + Send + Sync>;

/// The layer; see the module documentation.
pub(crate) struct JsonLayer {
    dispatch: OnceLock<tracing::dispatcher::WeakDispatch>,
    writer: MakeWriter,
}

impl Default for JsonLayer {
    fn default() -> Self {
        JsonLayer::writing_to(Box::new(|| Box::new(std::io::stderr())))
    }
}

impl JsonLayer {
    /// A layer writing each line to what `writer` returns.
    pub(crate) fn writing_to(writer: MakeWriter) -> JsonLayer {
        JsonLayer {
            dispatch: OnceLock::new(),
            writer,
        }
    }
}

struct Fields<'a>(&'a mut Map<String, Value>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().to_owned(), Value::from(value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), Value::from(format!("{value:?}")));
    }
}

impl JsonLayer {
    /// The trace and span ids of the span with `id`, when it is traced.
    fn ids(&self, id: &tracing::span::Id) -> Option<(String, String)> {
        let dispatch: Dispatch = self.dispatch.get()?.upgrade()?;
        let cx = tracing_opentelemetry::get_otel_context(id, &dispatch)?;
        let span = cx.span();
        let context = span.span_context();
        context.is_valid().then(|| {
            (
                context.trace_id().to_string(),
                context.span_id().to_string(),
            )
        })
    }
}

impl<S> Layer<S> for JsonLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        let _ = self.dispatch.set(subscriber.downgrade());
    }

    fn on_event(&self, event: &Event<'_>, context: Context<'_, S>) {
        let mut object = Map::new();
        let mut timestamp = String::new();
        if SystemTime
            .format_time(&mut Writer::new(&mut timestamp))
            .is_ok()
        {
            object.insert("timestamp".to_owned(), Value::from(timestamp));
        }
        let metadata = event.metadata();
        object.insert("level".to_owned(), Value::from(metadata.level().as_str()));
        object.insert("target".to_owned(), Value::from(metadata.target()));
        event.record(&mut Fields(&mut object));
        let span_id = event
            .parent()
            .cloned()
            .or_else(|| context.current_span().id().cloned());
        if let Some(id) = span_id {
            if let Some(span) = context.span(&id) {
                object.insert("span".to_owned(), Value::from(span.name()));
            }
            if let Some((trace_id, span_id)) = self.ids(&id) {
                object.insert("trace_id".to_owned(), Value::from(trace_id));
                object.insert("span_id".to_owned(), Value::from(span_id));
            }
        }
        let mut line = Value::Object(object).to_string();
        line.push('\n');
        let _ = (self.writer)().write_all(line.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut buffer) = self.0.lock() {
                buffer.extend_from_slice(bytes);
            }
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_name_their_trace_and_span() {
        let buffer = Buffer::default();
        let sink = buffer.clone();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
            .with(
                JsonLayer::writing_to(Box::new(move || Box::new(sink.clone())))
                    .with_filter(crate::log_filter("info")),
            );
        let expected = tracing::subscriber::with_default(subscriber, || {
            tracing::info!(outside = true, "no span");
            // A span kept out of the logs still names its lines' trace.
            let call = tracing::info_span!(target: crate::SPAN_TARGET, "call");
            let _call = call.enter();
            let span = tracing::info_span!("work");
            let entered = span.enter();
            tracing::info!(count = 3_u64, "inside");
            drop(entered);
            tracing::info!("in the call only");
            let cx = tracing_opentelemetry::OpenTelemetrySpanExt::context(&span);
            let context = opentelemetry::trace::TraceContextExt::span(&cx)
                .span_context()
                .clone();
            (
                context.trace_id().to_string(),
                context.span_id().to_string(),
            )
        });
        let text = String::from_utf8(buffer.0.lock().map(|b| b.clone()).unwrap_or_default())
            .expect("utf-8");
        let lines: Vec<Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON line"))
            .collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0]["message"], "no span");
        assert_eq!(lines[0]["outside"], true);
        assert!(lines[0].get("trace_id").is_none());
        assert_eq!(lines[1]["message"], "inside");
        assert_eq!(lines[1]["count"], 3);
        assert_eq!(lines[1]["level"], "INFO");
        assert_eq!(lines[1]["span"], "work");
        assert_eq!(lines[1]["trace_id"], expected.0.as_str());
        assert_eq!(lines[1]["span_id"], expected.1.as_str());
        assert_eq!(expected.0.len(), 32);
        assert_eq!(lines[2]["trace_id"], expected.0.as_str(), "the same trace");
        assert_ne!(lines[2]["span_id"], expected.1.as_str(), "the call's span");
        assert!(
            lines[2].get("span").is_none(),
            "the call's span is not logged"
        );
    }
}
