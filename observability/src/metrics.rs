//! ferry's metrics: their names (following the OpenTelemetry semantic
//! conventions where one exists), their attributes, and the instruments.
//!
//! The instruments come from the global meter provider that
//! [`crate::init`] installs; when metrics export is off they are no-ops
//! that cost an atomic load. In Prometheus (through the Collector), dots
//! become underscores, counters get `_total` and units a suffix:
//! `ferry.jobs.finished` is `ferry_jobs_finished_total`,
//! `ferry.dispatch.latency` is `ferry_dispatch_latency_seconds_bucket`.

use std::sync::OnceLock;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, UpDownCounter};

/// Metric names.
pub mod names {
    /// Histogram (ms) of every gRPC call a server answered, by
    /// `rpc.system`, `rpc.service`, `rpc.method`, `rpc.grpc.status_code`
    /// (semantic conventions, RPC metrics).
    pub const RPC_SERVER_DURATION: &str = "rpc.server.duration";
    /// Counter of jobs queued (requeues included), by `ferry.pool`.
    pub const JOBS_QUEUED: &str = "ferry.jobs.queued";
    /// Gauge of jobs handed to an agent and not finished (assigned or
    /// running), by `ferry.pool`. Read from the database: every dispatch
    /// replica reports the same value (use `max` across replicas).
    pub const JOBS_RUNNING: &str = "ferry.jobs.running";
    /// Counter of jobs that ended, by `ferry.job.result` (succeeded,
    /// failed, canceled).
    pub const JOBS_FINISHED: &str = "ferry.jobs.finished";
    /// Gauge of jobs waiting in the queue, by `ferry.pool` (database).
    pub const QUEUE_DEPTH: &str = "ferry.queue.depth";
    /// Gauge (s) of how long the oldest queued job has waited, by
    /// `ferry.pool` (database; 0 when none waits).
    pub const QUEUE_OLDEST_AGE: &str = "ferry.queue.oldest_age";
    /// Histogram (s) from a job's queueing to its hand-off to an agent.
    pub const DISPATCH_LATENCY: &str = "ferry.dispatch.latency";
    /// Gauge of agents online or busy, by `ferry.pool` (database).
    pub const AGENTS_CONNECTED: &str = "ferry.agents.connected";
    /// Up-down counter of long polls waiting for a job on this replica
    /// (sum across replicas).
    pub const POLLS_WAITING: &str = "ferry.polls.waiting";
    /// Counter of leases that lapsed (the agent vanished), by
    /// `ferry.lease.outcome` (requeued, failed, canceled).
    pub const LEASES_EXPIRED: &str = "ferry.leases.expired";
    /// Counter of log lines stored.
    pub const LOG_LINES: &str = "ferry.log.lines";
    /// Counter (By) of log text stored.
    pub const LOG_BYTES: &str = "ferry.log.bytes";
    /// Counter of tokens issued, by `ferry.token.kind` (listener, job).
    pub const TOKENS_ISSUED: &str = "ferry.tokens.issued";
    /// Counter of credentials refused, by `ferry.token.reason`.
    pub const TOKENS_REJECTED: &str = "ferry.tokens.rejected";

    /// Every metric name.
    pub const ALL: [&str; 14] = [
        RPC_SERVER_DURATION,
        JOBS_QUEUED,
        JOBS_RUNNING,
        JOBS_FINISHED,
        QUEUE_DEPTH,
        QUEUE_OLDEST_AGE,
        DISPATCH_LATENCY,
        AGENTS_CONNECTED,
        POLLS_WAITING,
        LEASES_EXPIRED,
        LOG_LINES,
        LOG_BYTES,
        TOKENS_ISSUED,
        TOKENS_REJECTED,
    ];
}

/// Attribute keys of spans and metrics.
pub mod attributes {
    /// `grpc` (semantic conventions).
    pub const RPC_SYSTEM: &str = "rpc.system";
    /// The full gRPC service name, e.g. `ferry.v1.JobService`.
    pub const RPC_SERVICE: &str = "rpc.service";
    /// The method, e.g. `PollJob`.
    pub const RPC_METHOD: &str = "rpc.method";
    /// The numeric gRPC status code of the answer.
    pub const RPC_GRPC_STATUS_CODE: &str = "rpc.grpc.status_code";
    /// A pool's name.
    pub const POOL: &str = "ferry.pool";
    /// A job's id.
    pub const JOB_ID: &str = "ferry.job.id";
    /// A job's attempt.
    pub const JOB_ATTEMPT: &str = "ferry.job.attempt";
    /// How a job ended: succeeded, failed, canceled.
    pub const JOB_RESULT: &str = "ferry.job.result";
    /// An agent's id.
    pub const AGENT_ID: &str = "ferry.agent.id";
    /// A step's index, from 0.
    pub const STEP_INDEX: &str = "ferry.step.index";
    /// A step's (masked) name.
    pub const STEP_NAME: &str = "ferry.step.name";
    /// A step's exit code.
    pub const STEP_EXIT_CODE: &str = "ferry.step.exit_code";
    /// listener or job.
    pub const TOKEN_KIND: &str = "ferry.token.kind";
    /// Why a credential was refused: missing, malformed, expired,
    /// bad_signature, wrong_audience, unknown_pat, not_a_pat, invalid.
    pub const TOKEN_REASON: &str = "ferry.token.reason";
    /// What the reaper did with a job whose lease lapsed.
    pub const LEASE_OUTCOME: &str = "ferry.lease.outcome";
}

/// Every instrument, from the global meter provider.
#[derive(Debug)]
pub struct Metrics {
    /// [`names::RPC_SERVER_DURATION`].
    pub rpc_server_duration: Histogram<f64>,
    /// [`names::JOBS_QUEUED`].
    pub jobs_queued: Counter<u64>,
    /// [`names::JOBS_RUNNING`].
    pub jobs_running: Gauge<u64>,
    /// [`names::JOBS_FINISHED`].
    pub jobs_finished: Counter<u64>,
    /// [`names::QUEUE_DEPTH`].
    pub queue_depth: Gauge<u64>,
    /// [`names::QUEUE_OLDEST_AGE`].
    pub queue_oldest_age: Gauge<f64>,
    /// [`names::DISPATCH_LATENCY`].
    pub dispatch_latency: Histogram<f64>,
    /// [`names::AGENTS_CONNECTED`].
    pub agents_connected: Gauge<u64>,
    /// [`names::POLLS_WAITING`].
    pub polls_waiting: UpDownCounter<i64>,
    /// [`names::LEASES_EXPIRED`].
    pub leases_expired: Counter<u64>,
    /// [`names::LOG_LINES`].
    pub log_lines: Counter<u64>,
    /// [`names::LOG_BYTES`].
    pub log_bytes: Counter<u64>,
    /// [`names::TOKENS_ISSUED`].
    pub tokens_issued: Counter<u64>,
    /// [`names::TOKENS_REJECTED`].
    pub tokens_rejected: Counter<u64>,
}

/// Bucket bounds (s) of the dispatch latency: 1 ms to 10 min.
const LATENCY_BOUNDS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0,
    600.0,
];

/// Bucket bounds (ms) of RPC durations: 0.1 ms to 2 min (long polls).
const RPC_BOUNDS: [f64; 17] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 10_000.0,
    60_000.0, 120_000.0,
];

impl Metrics {
    fn new() -> Metrics {
        let meter = opentelemetry::global::meter("ferry");
        Metrics {
            rpc_server_duration: meter
                .f64_histogram(names::RPC_SERVER_DURATION)
                .with_unit("ms")
                .with_description("Duration of gRPC calls answered by this server")
                .with_boundaries(RPC_BOUNDS.to_vec())
                .build(),
            jobs_queued: meter
                .u64_counter(names::JOBS_QUEUED)
                .with_unit("{job}")
                .with_description("Jobs queued, requeues included")
                .build(),
            jobs_running: meter
                .u64_gauge(names::JOBS_RUNNING)
                .with_unit("{job}")
                .with_description("Jobs handed to an agent and not finished")
                .build(),
            jobs_finished: meter
                .u64_counter(names::JOBS_FINISHED)
                .with_unit("{job}")
                .with_description("Jobs that ended, by result")
                .build(),
            queue_depth: meter
                .u64_gauge(names::QUEUE_DEPTH)
                .with_unit("{job}")
                .with_description("Jobs waiting for an agent")
                .build(),
            queue_oldest_age: meter
                .f64_gauge(names::QUEUE_OLDEST_AGE)
                .with_unit("s")
                .with_description("How long the oldest queued job has waited")
                .build(),
            dispatch_latency: meter
                .f64_histogram(names::DISPATCH_LATENCY)
                .with_unit("s")
                .with_description("Time from queueing to the hand-off to an agent")
                .with_boundaries(LATENCY_BOUNDS.to_vec())
                .build(),
            agents_connected: meter
                .u64_gauge(names::AGENTS_CONNECTED)
                .with_unit("{agent}")
                .with_description("Agents online or busy")
                .build(),
            polls_waiting: meter
                .i64_up_down_counter(names::POLLS_WAITING)
                .with_unit("{poll}")
                .with_description("Long polls waiting for a job on this replica")
                .build(),
            leases_expired: meter
                .u64_counter(names::LEASES_EXPIRED)
                .with_unit("{lease}")
                .with_description("Leases that lapsed because the agent vanished")
                .build(),
            log_lines: meter
                .u64_counter(names::LOG_LINES)
                .with_unit("{line}")
                .with_description("Log lines stored")
                .build(),
            log_bytes: meter
                .u64_counter(names::LOG_BYTES)
                .with_unit("By")
                .with_description("Log text stored")
                .build(),
            tokens_issued: meter
                .u64_counter(names::TOKENS_ISSUED)
                .with_unit("{token}")
                .with_description("Tokens issued, by kind")
                .build(),
            tokens_rejected: meter
                .u64_counter(names::TOKENS_REJECTED)
                .with_unit("{token}")
                .with_description("Credentials refused, by reason")
                .build(),
        }
    }
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// The instruments. The first call binds them to the global meter
/// provider, so it must come after [`crate::init`] (services are built
/// after it in every binary).
pub fn get() -> &'static Metrics {
    METRICS.get_or_init(Metrics::new)
}

/// Whether metrics are exported (worth computing gauges that cost a query).
pub fn enabled() -> bool {
    crate::state().metrics
}

/// Counts a token issued: `kind` is `listener` or `job`.
pub fn token_issued(kind: &'static str) {
    get()
        .tokens_issued
        .add(1, &[KeyValue::new(attributes::TOKEN_KIND, kind)]);
}

/// Counts a refused credential; `reason` is one of
/// [`attributes::TOKEN_REASON`]'s values, never the credential.
pub fn token_rejected(reason: &'static str) {
    get()
        .tokens_rejected
        .add(1, &[KeyValue::new(attributes::TOKEN_REASON, reason)]);
}

/// Counts a finished job.
pub fn job_finished(result: &'static str) {
    get()
        .jobs_finished
        .add(1, &[KeyValue::new(attributes::JOB_RESULT, result)]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_dotted_and_lowercase() {
        let mut seen = std::collections::BTreeSet::new();
        for name in names::ALL {
            assert!(seen.insert(name), "{name} twice");
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'.' || b == b'_'),
                "{name}"
            );
        }
        assert!(LATENCY_BOUNDS.windows(2).all(|pair| pair[0] < pair[1]));
        assert!(RPC_BOUNDS.windows(2).all(|pair| pair[0] < pair[1]));
    }

    #[test]
    fn instruments_work_without_a_provider() {
        token_issued("job");
        token_rejected("expired");
        job_finished("succeeded");
        get().rpc_server_duration.record(1.0, &[]);
    }
}
