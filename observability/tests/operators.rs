//! The files operators use stay in step with the metrics: the dashboard
//! charts every metric, the collector takes OTLP and feeds Prometheus and
//! a trace backend.

use ferry_observability::metrics::names;

const DASHBOARD: &str = include_str!("../dashboards/ferry.json");
const COLLECTOR: &str = include_str!("../otel-collector.yaml");

#[test]
fn the_dashboard_charts_every_metric() {
    let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).expect("valid JSON");
    let expressions: Vec<String> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|panel| panel["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|target| target["expr"].as_str().map(str::to_owned))
        .collect();
    for name in names::ALL {
        // The Collector's Prometheus exporter turns dots into underscores.
        let prometheus = name.replace('.', "_");
        assert!(
            expressions.iter().any(|expr| expr.contains(&prometheus)),
            "no panel charts {name} ({prometheus})"
        );
    }
}

#[test]
fn the_collector_takes_otlp_and_feeds_prometheus_and_traces() {
    for needed in [
        "otlp:",
        "0.0.0.0:4317",
        "prometheus:",
        "otlp/traces:",
        "exporters: [otlp/traces]",
        "exporters: [prometheus]",
    ] {
        assert!(
            COLLECTOR.contains(needed),
            "otel-collector.yaml lacks {needed}"
        );
    }
}
