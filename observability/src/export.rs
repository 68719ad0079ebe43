//! OTLP/gRPC export of traces and metrics, configured by the standard
//! `OTEL_*` environment variables and off unless an endpoint is set.
//!
//! The exporters run on a small Tokio runtime of their own (one worker
//! thread), so exporting never depends on the program's runtime: it works
//! from `current_thread` programs, before the program's runtime exists, and
//! while shutting down.

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry_otlp::{MetricExporter, SpanExporter, WithTonicConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tonic::transport::{Certificate, ClientTlsConfig};

/// The variables that turn export on: any OTLP endpoint.
pub const ENDPOINT_VARIABLES: [&str; 3] = [
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
];

/// How long shutting down may wait for the last batches to be exported.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// What the environment asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// Export spans.
    pub traces: bool,
    /// Export metrics.
    pub metrics: bool,
    /// PEM file of the CA that signed the collector's certificate
    /// (`OTEL_EXPORTER_OTLP_CERTIFICATE`), for `https://` endpoints.
    pub certificate: Option<String>,
    /// Whether the endpoint is `https://`.
    pub https: bool,
}

impl Settings {
    /// Reads the environment through `var` (`std::env::var` in programs).
    pub fn from_lookup(var: &dyn Fn(&str) -> Option<String>) -> Settings {
        let set = |name: &str| var(name).is_some_and(|value| !value.trim().is_empty());
        let disabled = var("OTEL_SDK_DISABLED").is_some_and(|value| value.trim() == "true");
        let exporter_on = |name: &str| {
            var(name).is_none_or(|value| {
                let value = value.trim();
                value.is_empty() || value.split(',').any(|part| part.trim() == "otlp")
            })
        };
        let traces_endpoint =
            set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        let metrics_endpoint =
            set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT");
        let https = ENDPOINT_VARIABLES
            .iter()
            .filter_map(|name| var(name))
            .any(|value| value.trim().starts_with("https://"));
        Settings {
            traces: !disabled && traces_endpoint && exporter_on("OTEL_TRACES_EXPORTER"),
            metrics: !disabled && metrics_endpoint && exporter_on("OTEL_METRICS_EXPORTER"),
            certificate: var("OTEL_EXPORTER_OTLP_CERTIFICATE").filter(|path| !path.is_empty()),
            https,
        }
    }

    /// Whether anything is exported.
    pub fn any(&self) -> bool {
        self.traces || self.metrics
    }
}

/// The providers set up for export, with the runtime their exporters use.
pub(crate) struct Exporters {
    pub(crate) tracer: Option<SdkTracerProvider>,
    pub(crate) meter: Option<SdkMeterProvider>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Exporters {
    /// Flushes and stops the providers (waiting up to [`SHUTDOWN_TIMEOUT`]
    /// for each), then the exporters' runtime.
    pub(crate) fn shutdown(&mut self) {
        if let Some(meter) = self.meter.take()
            && let Err(error) = meter.shutdown_with_timeout(SHUTDOWN_TIMEOUT)
        {
            eprintln!("telemetry: the last metrics were not exported: {error}");
        }
        if let Some(tracer) = self.tracer.take()
            && let Err(error) = tracer.shutdown_with_timeout(SHUTDOWN_TIMEOUT)
        {
            eprintln!("telemetry: the last spans were not exported: {error}");
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The resource every span and metric carries: `service.name` from
/// `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES`, else `service_name`;
/// the version; an id of this process; and `OTEL_RESOURCE_ATTRIBUTES`.
pub fn resource(service_name: &str) -> Resource {
    let detected = Resource::builder().build();
    let named = detected
        .get(&opentelemetry::Key::from_static_str("service.name"))
        .is_some_and(|name| !name.as_str().starts_with("unknown_service"));
    let mut builder = Resource::builder().with_attributes([
        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        KeyValue::new("service.instance.id", instance_id()),
        KeyValue::new("service.namespace", "ferry"),
    ]);
    if !named {
        builder = builder.with_service_name(service_name.to_owned());
    }
    builder.build()
}

/// A random id for this process (hex), without a dependency on a UUID crate.
fn instance_id() -> String {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    let high = hasher.finish();
    hasher.write_u64(high);
    format!("{high:016x}{:016x}", hasher.finish())
}

fn tls(settings: &Settings) -> Result<Option<ClientTlsConfig>, String> {
    if !settings.https {
        return Ok(None);
    }
    let mut config = ClientTlsConfig::new().with_enabled_roots();
    if let Some(path) = &settings.certificate {
        let pem = std::fs::read_to_string(path).map_err(|error| {
            format!("cannot read OTEL_EXPORTER_OTLP_CERTIFICATE {path}: {error}")
        })?;
        config = config.ca_certificate(Certificate::from_pem(pem));
    }
    Ok(Some(config))
}

/// Builds the exporters and providers the settings ask for. Errors are
/// reported on stderr and leave that signal off: telemetry never stops a
/// program from running.
pub(crate) fn start(settings: &Settings, service_name: &str) -> Exporters {
    let mut exporters = Exporters {
        tracer: None,
        meter: None,
        runtime: None,
    };
    if !settings.any() {
        return exporters;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("ferry-telemetry")
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("telemetry: export is off: cannot start its runtime: {error}");
            return exporters;
        }
    };
    let tls = match tls(settings) {
        Ok(tls) => tls,
        Err(error) => {
            eprintln!("telemetry: export is off: {error}");
            return exporters;
        }
    };
    let resource = resource(service_name);
    // tonic's lazy channels need a runtime to be created in.
    let entered = runtime.enter();
    if settings.traces {
        let mut builder = SpanExporter::builder().with_tonic();
        if let Some(tls) = tls.clone() {
            builder = builder.with_tls_config(tls);
        }
        match builder.build() {
            Ok(exporter) => {
                exporters.tracer = Some(
                    SdkTracerProvider::builder()
                        .with_batch_exporter(exporter)
                        .with_resource(resource.clone())
                        .build(),
                );
            }
            Err(error) => eprintln!("telemetry: traces are not exported: {error}"),
        }
    }
    if settings.metrics {
        let mut builder = MetricExporter::builder().with_tonic();
        if let Some(tls) = tls {
            builder = builder.with_tls_config(tls);
        }
        match builder.build() {
            Ok(exporter) => {
                exporters.meter = Some(
                    SdkMeterProvider::builder()
                        .with_reader(PeriodicReader::builder(exporter).build())
                        .with_resource(resource)
                        .build(),
                );
            }
            Err(error) => eprintln!("telemetry: metrics are not exported: {error}"),
        }
    }
    drop(entered);
    exporters.runtime = Some(runtime);
    exporters
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect();
        Settings::from_lookup(&|name| {
            pairs
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        })
    }

    #[test]
    fn export_is_off_without_an_endpoint() {
        assert!(!settings(&[]).any());
        assert!(!settings(&[("OTEL_SERVICE_NAME", "x")]).any());
        assert!(!settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]).any());
    }

    #[test]
    fn an_endpoint_turns_both_signals_on_unless_told_otherwise() {
        let on = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")]);
        assert!(on.traces && on.metrics && !on.https);
        let traces_only = settings(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "https://collector:4317",
        )]);
        assert!(traces_only.traces && !traces_only.metrics && traces_only.https);
        let no_metrics = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_METRICS_EXPORTER", "none"),
        ]);
        assert!(no_metrics.traces && !no_metrics.metrics);
        let disabled = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_SDK_DISABLED", "true"),
        ]);
        assert!(!disabled.any());
    }

    #[test]
    fn the_service_name_defaults_to_the_programs() {
        // OTEL_SERVICE_NAME is not set in the unit tests' environment.
        if std::env::var_os("OTEL_SERVICE_NAME").is_some()
            || std::env::var_os("OTEL_RESOURCE_ATTRIBUTES").is_some()
        {
            return;
        }
        let resource = resource("ferry-test");
        let name = resource.get(&opentelemetry::Key::from_static_str("service.name"));
        assert_eq!(
            name.map(|name| name.as_str().into_owned()),
            Some("ferry-test".to_owned())
        );
        assert!(
            resource
                .get(&opentelemetry::Key::from_static_str("service.instance.id"))
                .is_some()
        );
    }
}
