//! The agent's part of a job's trace: a `job` span that continues the
//! trace the server started when the job was queued (the sealed job's
//! `traceparent`), and a `step` span per step with its exit code. Every
//! call the agent makes for the job (step reports, lease renewals, the log
//! stream, uploads, completion) carries the current span's context.
//!
//! Names are masked with the job's secrets; values of variables, secrets
//! and tokens are never recorded.

use ferry_observability::SPAN_TARGET;
use ferry_observability::metrics::attributes;
use ferry_proto::v1::{AgentJob, JobResult, StepState};
use tracing::Span;
use tracing::field::Empty;

use crate::masking::Masker;

/// The job's span, a child of the context the server handed over (a new
/// trace when it handed none).
pub fn job_span(job: &AgentJob, masker: &Masker) -> Span {
    let span = tracing::info_span!(
        target: SPAN_TARGET,
        parent: None,
        "job",
        otel.kind = "consumer",
        ferry.job.id = %job.job_id,
        ferry.job.name = %masker.mask(&job.name),
        ferry.job.attempt = job.attempt,
        ferry.job.result = Empty,
        otel.status_code = Empty,
    );
    ferry_observability::propagation::continue_from(&span, &job.traceparent);
    span
}

/// Records how the job ended on its span.
pub fn job_ended(span: &Span, result: JobResult, lease_lost: bool) {
    let name = if lease_lost {
        "lease_lost"
    } else {
        match result {
            JobResult::Succeeded => "succeeded",
            JobResult::Canceled => "canceled",
            _ => "failed",
        }
    };
    span.record(attributes::JOB_RESULT, name);
    if name == "failed" || name == "lease_lost" {
        span.record("otel.status_code", "ERROR");
    }
}

/// A step's span, a child of the current (job) span; `name` is masked.
pub fn step_span(index: u32, name: &str) -> Span {
    tracing::info_span!(
        target: SPAN_TARGET,
        "step",
        ferry.step.index = index,
        ferry.step.name = %name,
        ferry.step.exit_code = Empty,
        ferry.step.state = Empty,
        otel.status_code = Empty,
    )
}

/// Records how a step ended on its span.
pub fn step_ended(span: &Span, state: StepState, exit_code: Option<i32>) {
    if let Some(code) = exit_code {
        span.record(attributes::STEP_EXIT_CODE, i64::from(code));
    }
    span.record("ferry.step.state", state.as_str_name());
    if state == StepState::Failed {
        span.record("otel.status_code", "ERROR");
    }
}
