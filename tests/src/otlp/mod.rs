//! An OTLP/gRPC receiver of our own (the collector's TraceService and
//! MetricsService from the `opentelemetry-proto` definitions) that keeps
//! everything it is sent, for tests that check what ferry exports; and, in
//! [`checks`], what a job's trace and the fleet's metrics must look like.

pub mod checks;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use opentelemetry_proto::tonic::trace::v1::Span;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

/// One span as received, with the `service.name` of its resource.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// `service.name` of the process that sent it.
    pub service: String,
    /// The span.
    pub span: Span,
}

impl ReceivedSpan {
    /// The trace id, lowercase hex.
    pub fn trace_id(&self) -> String {
        hex::encode(&self.span.trace_id)
    }

    /// The span id, lowercase hex.
    pub fn span_id(&self) -> String {
        hex::encode(&self.span.span_id)
    }

    /// The parent span id, lowercase hex (empty for a root).
    pub fn parent_id(&self) -> String {
        hex::encode(&self.span.parent_span_id)
    }

    /// An attribute's value.
    pub fn attribute(&self, key: &str) -> Option<&any_value::Value> {
        find(&self.span.attributes, key)
    }

    /// A string attribute.
    pub fn string(&self, key: &str) -> Option<&str> {
        match self.attribute(key)? {
            any_value::Value::StringValue(value) => Some(value),
            _ => None,
        }
    }

    /// An integer attribute.
    pub fn int(&self, key: &str) -> Option<i64> {
        match self.attribute(key)? {
            any_value::Value::IntValue(value) => Some(*value),
            _ => None,
        }
    }

    /// Every piece of text the span carries: its name, attribute keys and
    /// values, its events' names and attributes, its links' attributes.
    pub fn texts(&self) -> Vec<String> {
        let mut texts = vec![self.span.name.clone()];
        let mut add = |attributes: &[KeyValue]| {
            for attribute in attributes {
                texts.push(attribute.key.clone());
                if let Some(value) = &attribute.value {
                    texts.push(value_text(value));
                }
            }
        };
        add(&self.span.attributes);
        for event in &self.span.events {
            add(&event.attributes);
        }
        for link in &self.span.links {
            add(&link.attributes);
        }
        texts.extend(self.span.events.iter().map(|event| event.name.clone()));
        if let Some(status) = &self.span.status {
            texts.push(status.message.clone());
        }
        texts
    }
}

fn find<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attributes
        .iter()
        .find(|attribute| attribute.key == key)
        .and_then(|attribute| attribute.value.as_ref())
        .and_then(|value| value.value.as_ref())
}

fn value_text(value: &AnyValue) -> String {
    match &value.value {
        Some(any_value::Value::StringValue(text)) => text.clone(),
        Some(any_value::Value::BytesValue(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
        Some(any_value::Value::IntValue(value)) => value.to_string(),
        Some(any_value::Value::DoubleValue(value)) => value.to_string(),
        Some(any_value::Value::BoolValue(value)) => value.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attributes_map(attributes: &[KeyValue]) -> BTreeMap<String, String> {
    attributes
        .iter()
        .map(|attribute| {
            (
                attribute.key.clone(),
                attribute.value.as_ref().map(value_text).unwrap_or_default(),
            )
        })
        .collect()
}

/// A metric data point's value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PointValue {
    /// A sum (counter, up-down counter) or gauge value.
    Number(f64),
    /// A histogram's count and sum.
    Histogram {
        /// Measurements.
        count: u64,
        /// Their sum.
        sum: f64,
    },
}

/// One data point as received.
#[derive(Debug, Clone)]
pub struct Point {
    /// `service.name` of the process that sent it.
    pub service: String,
    /// The metric's name.
    pub name: String,
    /// The point's attributes, values as text.
    pub attributes: BTreeMap<String, String>,
    /// When it was taken (ns since the epoch).
    pub time: u64,
    /// The value.
    pub value: PointValue,
}

#[derive(Default)]
struct Received {
    spans: Vec<ReceivedSpan>,
    points: Vec<Point>,
}

#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Received>>);

impl Sink {
    fn with<T>(&self, f: impl FnOnce(&mut Received) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

fn service_of(resource: Option<&opentelemetry_proto::tonic::resource::v1::Resource>) -> String {
    resource
        .and_then(|resource| find(&resource.attributes, "service.name"))
        .map(|value| match value {
            any_value::Value::StringValue(name) => name.clone(),
            other => format!("{other:?}"),
        })
        .unwrap_or_default()
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut spans = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let service = service_of(resource_spans.resource.as_ref());
            for scope in resource_spans.scope_spans {
                spans.extend(scope.spans.into_iter().map(|span| ReceivedSpan {
                    service: service.clone(),
                    span,
                }));
            }
        }
        self.with(|received| received.spans.extend(spans));
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Sink {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let mut points = Vec::new();
        for resource_metrics in request.into_inner().resource_metrics {
            let service = service_of(resource_metrics.resource.as_ref());
            for scope in resource_metrics.scope_metrics {
                for metric in scope.metrics {
                    let point = |attributes: &[KeyValue], time: u64, value: PointValue| Point {
                        service: service.clone(),
                        name: metric.name.clone(),
                        attributes: attributes_map(attributes),
                        time,
                        value,
                    };
                    let number = |value: &Option<number_data_point::Value>| match value {
                        Some(number_data_point::Value::AsDouble(value)) => *value,
                        Some(number_data_point::Value::AsInt(value)) => *value as f64,
                        None => f64::NAN,
                    };
                    match &metric.data {
                        Some(metric::Data::Sum(sum)) => {
                            points.extend(sum.data_points.iter().map(|p| {
                                point(
                                    &p.attributes,
                                    p.time_unix_nano,
                                    PointValue::Number(number(&p.value)),
                                )
                            }))
                        }
                        Some(metric::Data::Gauge(gauge)) => {
                            points.extend(gauge.data_points.iter().map(|p| {
                                point(
                                    &p.attributes,
                                    p.time_unix_nano,
                                    PointValue::Number(number(&p.value)),
                                )
                            }))
                        }
                        Some(metric::Data::Histogram(histogram)) => {
                            points.extend(histogram.data_points.iter().map(|p| {
                                point(
                                    &p.attributes,
                                    p.time_unix_nano,
                                    PointValue::Histogram {
                                        count: p.count,
                                        sum: p.sum.unwrap_or_default(),
                                    },
                                )
                            }))
                        }
                        _ => {}
                    }
                }
            }
        }
        self.with(|received| received.points.extend(points));
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// A running receiver; it stops when dropped.
pub struct Receiver {
    /// Where it listens.
    pub address: SocketAddr,
    sink: Sink,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    /// Starts listening on a free loopback port (plaintext gRPC).
    pub async fn start() -> anyhow::Result<Receiver> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let sink = Sink::default();
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(sink.clone()))
            .add_service(MetricsServiceServer::new(sink.clone()))
            .serve_with_incoming(TcpListenerStream::new(listener));
        let task = tokio::spawn(async move {
            let _ = server.await;
        });
        Ok(Receiver {
            address,
            sink,
            task,
        })
    }

    /// The environment that makes a ferry process export here, quickly:
    /// spans every 200 ms, metrics every second.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://{}", self.address),
            ),
            ("OTEL_BSP_SCHEDULE_DELAY", "200".to_owned()),
            ("OTEL_METRIC_EXPORT_INTERVAL", "1000".to_owned()),
            ("OTEL_TRACES_SAMPLER", "parentbased_always_on".to_owned()),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect()
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.sink.with(|received| received.spans.clone())
    }

    /// Every data point received so far.
    pub fn points(&self) -> Vec<Point> {
        self.sink.with(|received| received.points.clone())
    }

    /// The latest value of each series (service and attributes) of the
    /// metric `name` whose attributes include `with`.
    pub fn latest(&self, name: &str, with: &[(&str, &str)]) -> Vec<Point> {
        let mut latest: BTreeMap<(String, BTreeMap<String, String>), Point> = BTreeMap::new();
        for point in self.points() {
            let matches = point.name == name
                && with.iter().all(|(key, value)| {
                    point.attributes.get(*key).map(String::as_str) == Some(value)
                });
            if !matches {
                continue;
            }
            let key = (point.service.clone(), point.attributes.clone());
            if latest.get(&key).is_none_or(|seen| seen.time <= point.time) {
                latest.insert(key, point);
            }
        }
        latest.into_values().collect()
    }

    /// The sum of the latest values of the number series of `name` with
    /// `with` (counters are cumulative), if any series exists.
    pub fn total(&self, name: &str, with: &[(&str, &str)]) -> Option<f64> {
        let series = self.latest(name, with);
        (!series.is_empty()).then(|| {
            series
                .iter()
                .map(|point| match point.value {
                    PointValue::Number(value) => value,
                    PointValue::Histogram { count, .. } => count as f64,
                })
                .sum()
        })
    }
}
