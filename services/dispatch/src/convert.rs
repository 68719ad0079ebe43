//! Store values to their wire form.

use ferry_proto::time::timestamp_from_micros;
use ferry_proto::v1::{Job, StepState, StepStatus};
use ferry_service::Result;
pub use ferry_service::wire::{job_state, store_job_state};
use ferry_store::Store;

fn step_state(state: ferry_store::StepState) -> StepState {
    match state {
        ferry_store::StepState::Pending => StepState::Pending,
        ferry_store::StepState::Running => StepState::Running,
        ferry_store::StepState::Succeeded => StepState::Succeeded,
        ferry_store::StepState::Failed => StepState::Failed,
        ferry_store::StepState::Skipped => StepState::Skipped,
        ferry_store::StepState::Canceled => StepState::Canceled,
    }
}

/// How much a queued job's message should explain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    /// Say why it waits: looks at the pool's agents (one job, `GetJob`).
    Explain,
    /// Keep the stored message (answers that list or just queued jobs).
    Stored,
}

/// The wire form of a job; looks up its agent's name.
pub async fn job(
    store: &Store,
    job: ferry_store::Job,
    pool: &str,
    waiting: Waiting,
) -> Result<Job> {
    let agent_name = match &job.agent_id {
        Some(agent_id) => store
            .agent(agent_id)
            .await?
            .map(|agent| agent.name)
            .unwrap_or_default(),
        None => String::new(),
    };
    let mut job = job;
    if job.state == ferry_store::JobState::Queued && waiting == Waiting::Explain {
        job.message = waiting_reason(store, &job, pool).await?;
    }
    Ok(wire(job, pool, agent_name))
}

/// The wire form of a job whose agent's name is known, with its stored
/// message.
pub fn wire(job: ferry_store::Job, pool: &str, agent_name: String) -> Job {
    Job {
        id: job.id,
        name: job.name,
        project: job.project,
        pipeline: job.pipeline,
        pool: pool.to_owned(),
        state: job_state(job.state).into(),
        demands: job.demands.into_iter().collect(),
        agent_id: job.agent_id.unwrap_or_default(),
        agent_name,
        attempt: job.attempt,
        steps: job
            .steps
            .into_iter()
            .map(|step| StepStatus {
                index: step.index,
                name: step.name,
                state: step_state(step.state).into(),
                exit_code: step.exit_code,
                start_time: step.started_at.map(timestamp_from_micros),
                finish_time: step.finished_at.map(timestamp_from_micros),
            })
            .collect(),
        message: job.message,
        queue_time: Some(timestamp_from_micros(job.queued_at)),
        assign_time: job.assigned_at.map(timestamp_from_micros),
        start_time: job.started_at.map(timestamp_from_micros),
        finish_time: job.finished_at.map(timestamp_from_micros),
        secret_names: job.secret_names,
        log_line_count: job.log_sequence,
        cancel_time: job.cancel_requested_at.map(timestamp_from_micros),
        lease_expire_time: job.lease_expires_at.map(timestamp_from_micros),
        test_summary: job.test_summary.map(ferry_service::wire::test_summary),
        source_id: job.source_id.unwrap_or_default(),
        max_attempts: job.max_attempts,
        trace_id: job
            .trace_context
            .as_deref()
            .and_then(ferry_observability::propagation::trace_id)
            .unwrap_or_default(),
    }
}

/// Why a queued job waits: no agent of the pool can ever run it, or all
/// that can are busy or offline.
async fn waiting_reason(store: &Store, job: &ferry_store::Job, pool: &str) -> Result<String> {
    let prefix = if job.message.is_empty() {
        String::new()
    } else {
        format!("{}; ", job.message)
    };
    let capable = store
        .list_agents(Some(&job.pool_id))
        .await?
        .into_iter()
        .filter(|agent| {
            !agent.disabled && ferry_store::demands_met(&job.demands, &agent.capabilities)
        })
        .count();
    let demands = if job.demands.is_empty() {
        "no demands".to_owned()
    } else {
        job.demands
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Ok(if capable == 0 {
        format!("{prefix}no enabled agent in pool {pool:?} offers what the job demands ({demands})")
    } else {
        format!("{prefix}waiting for one of {capable} capable agents to be free ({demands})")
    })
}
