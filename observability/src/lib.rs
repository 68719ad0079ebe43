//! Telemetry for every ferry binary.
//!
//! [`init`] installs, once per process:
//! - logs on stderr, human-readable or JSON ([`LogFormat`]), filtered by
//!   `FERRY_LOG` (same syntax as `RUST_LOG`); JSON lines carry the
//!   `trace_id` and `span_id` of the span they were written in;
//! - when an OTLP endpoint is configured (`OTEL_EXPORTER_OTLP_ENDPOINT`, or
//!   the per-signal `…_TRACES_ENDPOINT` / `…_METRICS_ENDPOINT`), OTLP/gRPC
//!   export of traces and metrics, configured by the standard `OTEL_*`
//!   variables (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
//!   `OTEL_TRACES_SAMPLER[_ARG]`, `OTEL_BSP_*`, `OTEL_METRIC_EXPORT_INTERVAL`,
//!   `OTEL_EXPORTER_OTLP_HEADERS`, `…_CERTIFICATE`, `…_TIMEOUT`). With no
//!   endpoint nothing is exported and nothing is set up: no exporter, no
//!   span bookkeeping. `FERRY_TRACE` (filter syntax, default `info`) picks
//!   what becomes spans and span events.
//!
//! The returned [`Guard`] flushes and stops export when dropped.
//!
//! [`propagation`] carries W3C trace context through gRPC metadata, [`grpc`]
//! gives every served call a span and a duration, [`metrics`] names ferry's
//! metrics. See `docs/observability.md`.

pub mod export;
pub mod grpc;
mod json;
pub mod metrics;
pub mod propagation;

use std::io::IsTerminal as _;
use std::sync::OnceLock;

use opentelemetry::trace::TracerProvider as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

pub use grpc::{GrpcServerLayer, ServerCall};
pub use propagation::TraceContextInterceptor;

/// The target of the spans ferry makes for tracing (calls, jobs, steps):
/// kept out of the human logs, whose lines stay as they were.
pub const SPAN_TARGET: &str = "ferry_telemetry";

/// The variable that filters what is traced (default [`DEFAULT_TRACE_FILTER`]).
pub const TRACE_FILTER_VARIABLE: &str = "FERRY_TRACE";

/// What is traced unless `FERRY_TRACE` says otherwise: ferry's spans and
/// its info events (as span events), nothing of the transport crates.
pub const DEFAULT_TRACE_FILTER: &str = "info,h2=off,hyper=off,hyper_util=off,tower=off,tonic=warn,rustls=off,opentelemetry=off,opentelemetry_sdk=off,opentelemetry_otlp=off";

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Human,
    /// One JSON object per event, with the trace and span ids.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "human" | "text" => Ok(LogFormat::Human),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?}: use human or json")),
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct State {
    pub(crate) metrics: bool,
}

static STATE: OnceLock<State> = OnceLock::new();

pub(crate) fn state() -> State {
    STATE.get().copied().unwrap_or_default()
}

/// Flushes telemetry when dropped; keep it alive for the program's life.
#[must_use = "telemetry stops when the guard is dropped"]
pub struct Guard {
    exporters: Option<export::Exporters>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Guard")
            .field("exporting", &self.exporters.is_some())
            .finish()
    }
}

impl Guard {
    /// Exports what is buffered and stops exporting (what dropping does).
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(mut exporters) = self.exporters.take() {
            exporters.shutdown();
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop();
    }
}

fn log_filter(default_filter: &str) -> EnvFilter {
    let filter =
        EnvFilter::try_from_env("FERRY_LOG").unwrap_or_else(|_| EnvFilter::new(default_filter));
    match format!("{SPAN_TARGET}=off").parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    }
}

/// Installs logging and, when configured, export; `service_name` is the
/// `service.name` unless `OTEL_SERVICE_NAME` (or `service.name` in
/// `OTEL_RESOURCE_ATTRIBUTES`) names another; `default_filter` applies
/// when `FERRY_LOG` is unset. Installing twice is harmless: the second
/// call changes nothing and its guard exports nothing.
pub fn init(service_name: &str, format: LogFormat, default_filter: &str) -> Guard {
    let settings = export::Settings::from_lookup(&|name| std::env::var(name).ok());
    if STATE.get().is_some() {
        return Guard { exporters: None };
    }
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let exporters = export::start(&settings, service_name);

    let logs = match format {
        LogFormat::Human => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .with_filter(log_filter(default_filter))
            .boxed(),
        LogFormat::Json => json::JsonLayer::default()
            .with_filter(log_filter(default_filter))
            .boxed(),
    };
    let traces = exporters.tracer.as_ref().map(|provider| {
        let filter = EnvFilter::try_from_env(TRACE_FILTER_VARIABLE)
            .unwrap_or_else(|_| EnvFilter::new(DEFAULT_TRACE_FILTER));
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("ferry"))
            .with_threads(false)
            .with_filter(filter)
    });
    // A second init (tests in one process) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init();
    if let Some(provider) = &exporters.tracer {
        opentelemetry::global::set_tracer_provider(provider.clone());
    }
    if let Some(provider) = &exporters.meter {
        opentelemetry::global::set_meter_provider(provider.clone());
    }
    let _ = STATE.set(State {
        metrics: exporters.meter.is_some(),
    });
    Guard {
        exporters: Some(exporters),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse() {
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!("human".parse::<LogFormat>(), Ok(LogFormat::Human));
        assert!("xml".parse::<LogFormat>().is_err());
    }

    #[test]
    fn the_default_trace_filter_parses() {
        EnvFilter::try_new(DEFAULT_TRACE_FILTER).expect("valid filter");
        let _ = log_filter("info");
    }
}
