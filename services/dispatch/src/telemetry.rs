//! What dispatch tells SREs: the `dispatch` span that joins a job's trace
//! when the job is handed to an agent, the trace context handed on in the
//! sealed job, and the job, queue, poll and lease metrics.

use std::time::Duration;

use ferry_observability::metrics::{self, attributes};
use ferry_observability::propagation;
use ferry_proto::time::now_micros;
use ferry_store::Store;
use opentelemetry::KeyValue;
use opentelemetry::trace::TraceContextExt as _;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The span of a job's hand-off to an agent: a child of the job's stored
/// context (the span that queued it, however long ago and on whichever
/// replica), linked to the poll that took it.
pub(crate) fn dispatch_span(job: &ferry_store::Job, agent_id: &str) -> Span {
    let poll = Span::current().context().span().span_context().clone();
    let span = tracing::info_span!(
        target: ferry_observability::SPAN_TARGET,
        parent: None,
        "dispatch",
        otel.kind = "internal",
        ferry.job.id = %job.id,
        ferry.job.attempt = job.attempt,
        ferry.agent.id = %agent_id,
    );
    match job
        .trace_context
        .as_deref()
        .and_then(propagation::from_traceparent)
    {
        Some(parent) => {
            let _ = span.set_parent(parent);
        }
        // An untraced job: the hand-off belongs to the poll's trace.
        None => {
            let _ = span.set_parent(Span::current().context());
        }
    }
    span.add_link(poll);
    span
}

/// The trace context the agent continues: the dispatch span's, or the one
/// stored with the job when this replica does not trace.
pub(crate) fn handed_traceparent(span: &Span, job: &ferry_store::Job) -> String {
    propagation::traceparent(&span.context())
        .or_else(|| job.trace_context.clone())
        .unwrap_or_default()
}

/// Records a job's hand-off: the time it waited since it was queued.
pub(crate) fn dispatched(job: &ferry_store::Job) {
    let waited = now_micros().saturating_sub(job.queued_at).max(0);
    metrics::get()
        .dispatch_latency
        .record(waited as f64 / 1_000_000.0, &[]);
}

/// Counts a job queued (or requeued) in `pool_id`.
pub(crate) fn queued(pool: &str) {
    metrics::get()
        .jobs_queued
        .add(1, &[KeyValue::new(attributes::POOL, pool.to_owned())]);
}

/// Counts a lapsed lease and what became of its job.
pub(crate) fn lease_expired(outcome: &ferry_store::ReapOutcome) {
    let outcome = match outcome {
        ferry_store::ReapOutcome::Requeued { .. } => "requeued",
        ferry_store::ReapOutcome::Failed => "failed",
        ferry_store::ReapOutcome::Canceled => "canceled",
    };
    metrics::get()
        .leases_expired
        .add(1, &[KeyValue::new(attributes::LEASE_OUTCOME, outcome)]);
}

/// Counts a long poll as waiting on this replica for as long as it lives.
pub(crate) struct WaitingPoll(());

impl WaitingPoll {
    pub(crate) fn start() -> WaitingPoll {
        metrics::get().polls_waiting.add(1, &[]);
        WaitingPoll(())
    }
}

impl Drop for WaitingPoll {
    fn drop(&mut self) {
        metrics::get().polls_waiting.add(-1, &[]);
    }
}

/// Every `interval`, while metrics are exported, reads the per-pool gauges
/// from the store (the truth across replicas). Ends when `alive` fails.
pub(crate) fn spawn_gauges(store: Store, alive: impl Fn() -> bool + Send + 'static) {
    if !metrics::enabled() {
        return;
    }
    let interval = gauge_interval();
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if !alive() {
                return;
            }
            let now = now_micros();
            match store.pool_gauges(now).await {
                Ok(pools) => {
                    let instruments = metrics::get();
                    for gauges in pools.into_values() {
                        let pool = [KeyValue::new(attributes::POOL, gauges.pool)];
                        instruments.queue_depth.record(gauges.queued, &pool);
                        instruments.jobs_running.record(gauges.active, &pool);
                        instruments
                            .agents_connected
                            .record(gauges.connected_agents, &pool);
                        let age = gauges
                            .oldest_queued_at
                            .map_or(0.0, |at| now.saturating_sub(at).max(0) as f64 / 1e6);
                        instruments.queue_oldest_age.record(age, &pool);
                    }
                }
                Err(error) => tracing::debug!(%error, "cannot read the gauges"),
            }
        }
    });
}

/// How often the gauges are read: as often as metrics are exported
/// (`OTEL_METRIC_EXPORT_INTERVAL`, ms), between 1 s and 60 s.
fn gauge_interval() -> Duration {
    std::env::var("OTEL_METRIC_EXPORT_INTERVAL")
        .ok()
        .and_then(|value| value.trim().parse::<u64>().ok())
        .map_or(Duration::from_secs(60), Duration::from_millis)
        .clamp(Duration::from_secs(1), Duration::from_secs(60))
}
