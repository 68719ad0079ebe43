//! Holding a job: the guard every write by an agent passes, why it failed,
//! and closing a job's steps when the job ends.
//!
//! A holder is an agent and an attempt. The guard is part of a conditional
//! `UPDATE jobs ... WHERE id = ? AND agent_id = ? AND attempt = ? AND state
//! IN ('assigned', 'running')`, which both checks the precondition and locks
//! the job row for the rest of the transaction (PostgreSQL row lock;
//! SQLite's write lock is taken by `BEGIN IMMEDIATE`). A requeue adds one to
//! the attempt, so an agent that lost its job cannot write to the next
//! attempt even when it is handed the job again.

use sea_orm::sea_query::{CaseStatement, Expr, ExprTrait};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect, UpdateMany,
};

use crate::entity::{job, job_step};
use crate::error::{Error, Result};
use crate::store::parse_state;
use crate::types::{Holder, JobState, StepState};

/// The states in which an agent holds a job.
pub(crate) const ACTIVE: [&str; 2] = ["assigned", "running"];

/// The job row `holder` may write: this job, active, held by this agent in
/// this attempt.
pub(crate) fn held_by(job_id: &str, holder: Holder<'_>) -> Condition {
    Condition::all()
        .add(job::Column::Id.eq(job_id))
        .add(job::Column::AgentId.eq(holder.agent_id))
        .add(job::Column::Attempt.eq(i64::from(holder.attempt)))
        .add(job::Column::State.is_in(ACTIVE))
}

/// Checks that `holder` holds the job and locks its row for the rest of
/// the transaction (a no-op update matched by the guard).
pub(crate) async fn hold_job(
    txn: &impl ConnectionTrait,
    job_id: &str,
    holder: Holder<'_>,
) -> Result<()> {
    let held = job::Entity::update_many()
        .col_expr(job::Column::AgentId, Expr::col(job::Column::AgentId))
        .filter(held_by(job_id, holder))
        .exec(txn)
        .await?;
    if held.rows_affected == 0 {
        return Err(not_held(txn, job_id, holder).await);
    }
    Ok(())
}

/// The parts of a job row that say who holds it.
pub(crate) struct Holding {
    pub(crate) state: JobState,
    pub(crate) agent_id: Option<String>,
    pub(crate) attempt: i32,
}

impl Holding {
    /// Why `holder` does not hold the job, or `None` when it does.
    pub(crate) fn refuse(&self, holder: Holder<'_>) -> Option<Error> {
        if !self.state.is_active() {
            Some(Error::Conflict(format!(
                "job is {}, not assigned or running",
                self.state
            )))
        } else if self.agent_id.as_deref() != Some(holder.agent_id) {
            Some(Error::Conflict(
                "job is assigned to another agent".to_owned(),
            ))
        } else if i64::from(self.attempt) != i64::from(holder.attempt) {
            Some(Error::Conflict(format!(
                "attempt {} of the job is over; the job is on attempt {}",
                holder.attempt, self.attempt
            )))
        } else {
            None
        }
    }
}

/// Who holds the job now; `None` when there is no such job.
pub(crate) async fn holding(db: &impl ConnectionTrait, job_id: &str) -> Result<Option<Holding>> {
    let row: Option<(String, Option<String>, i32)> = job::Entity::find_by_id(job_id.to_owned())
        .select_only()
        .column(job::Column::State)
        .column(job::Column::AgentId)
        .column(job::Column::Attempt)
        .into_tuple()
        .all(db)
        .await?
        .pop();
    row.map(|(state, agent_id, attempt)| {
        Ok(Holding {
            state: parse_state(&state)?,
            agent_id,
            attempt,
        })
    })
    .transpose()
}

/// Why the guard matched nothing: the job is missing, not active, held by
/// another agent, or on another attempt.
pub(crate) async fn not_held(db: &impl ConnectionTrait, job_id: &str, holder: Holder<'_>) -> Error {
    match holding(db, job_id).await {
        Err(err) => err,
        Ok(None) => Error::NotFound("job".to_owned()),
        Ok(Some(now)) => now.refuse(holder).unwrap_or_else(|| {
            // it changed between the guard and this read
            Error::Conflict("the job changed; try again".to_owned())
        }),
    }
}

/// Ends a job's steps: those still `Pending` become `Skipped`, those still
/// `Running` become `running_become` with `finished_at = now`.
pub(crate) async fn close_steps(
    txn: &impl ConnectionTrait,
    job_id: &str,
    running_become: StepState,
    now: i64,
) -> Result<()> {
    close_steps_update(job_id, running_become, now)
        .exec(txn)
        .await?;
    Ok(())
}

/// The statement of [`close_steps`].
pub(crate) fn close_steps_update(
    job_id: &str,
    running_become: StepState,
    now: i64,
) -> UpdateMany<job_step::Entity> {
    // One statement for both: pending → skipped, running → running_become
    // (finished now).
    let running = Expr::col(job_step::Column::State).eq(StepState::Running.as_str());
    job_step::Entity::update_many()
        .col_expr(
            job_step::Column::State,
            CaseStatement::new()
                .case(running.clone(), Expr::value(running_become.as_str()))
                .finally(Expr::value(StepState::Skipped.as_str()))
                .into(),
        )
        .col_expr(
            job_step::Column::FinishedAt,
            CaseStatement::new()
                .case(running, Expr::value(Some(now)))
                .finally(Expr::col(job_step::Column::FinishedAt))
                .into(),
        )
        .filter(job_step::Column::JobId.eq(job_id))
        .filter(
            job_step::Column::State
                .is_in([StepState::Pending.as_str(), StepState::Running.as_str()]),
        )
}
