//! Progress reports from the agent holding a job: step updates and the
//! final state.
//!
//! Each call is one short write transaction that starts with a guarded
//! `UPDATE jobs ... WHERE id = ? AND agent_id = ? AND state IN ('assigned',
//! 'running')`. That update both checks the precondition and locks the job
//! row (PostgreSQL row lock; SQLite's write lock is taken by `BEGIN
//! IMMEDIATE`), so nothing can change the job between the check and the
//! writes that follow.

use sea_orm::sea_query::{Expr, Func};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect};

use crate::entity::{job, job_step};
use crate::error::{Error, Result};
use crate::jobs::load_job;
use crate::store::{Store, parse_state};
use crate::types::{Job, JobState, StepState};

const ACTIVE: [&str; 2] = ["assigned", "running"];

impl Store {
    /// Records step progress from the agent holding the job. The job must
    /// be `Assigned` or `Running` and assigned to `agent_id`, else
    /// `Conflict` (`NotFound` when the job or the step does not exist).
    ///
    /// `Running` sets the step's `started_at` (first report wins) and moves
    /// an `Assigned` job to `Running` with `started_at = now`. Final step
    /// states set `finished_at` and `exit_code`.
    pub async fn update_step(
        &self,
        job_id: &str,
        agent_id: &str,
        index: u32,
        state: StepState,
        exit_code: Option<i32>,
        now: i64,
    ) -> Result<()> {
        let idx = i32::try_from(index).map_err(|_| Error::NotFound("job step".to_owned()))?;
        let txn = self.begin_write().await?;
        if state == StepState::Running {
            job::Entity::update_many()
                .col_expr(job::Column::State, Expr::value(JobState::Running.as_str()))
                .col_expr(job::Column::StartedAt, Expr::value(Some(now)))
                .filter(job::Column::Id.eq(job_id))
                .filter(job::Column::AgentId.eq(agent_id))
                .filter(job::Column::State.eq(JobState::Assigned.as_str()))
                .exec(&txn)
                .await?;
        }
        hold_job(&txn, job_id, agent_id).await?;

        let mut update = job_step::Entity::update_many()
            .col_expr(job_step::Column::State, Expr::value(state.as_str()));
        if state == StepState::Running {
            update = update.col_expr(
                job_step::Column::StartedAt,
                Func::coalesce([Expr::col(job_step::Column::StartedAt), Expr::value(now)]).into(),
            );
        } else if state.is_terminal() {
            update = update
                .col_expr(job_step::Column::FinishedAt, Expr::value(Some(now)))
                .col_expr(job_step::Column::ExitCode, Expr::value(exit_code));
        }
        let updated = update
            .filter(job_step::Column::JobId.eq(job_id))
            .filter(job_step::Column::Idx.eq(idx))
            .exec(&txn)
            .await?;
        if updated.rows_affected == 0 {
            return Err(Error::NotFound("job step".to_owned()));
        }
        txn.commit().await?;
        Ok(())
    }

    /// Records the final state from the agent holding the job and returns
    /// the finished job. The job must be `Assigned` or `Running` and
    /// assigned to `agent_id`, else `Conflict` (`NotFound` when it does not
    /// exist); `state` must be final, else `Invalid`.
    ///
    /// Sets `finished_at` and `message`; steps still `Pending` become
    /// `Skipped`, steps still `Running` take the job's final state
    /// (succeeded, failed or canceled) with `finished_at = now`.
    pub async fn complete_job(
        &self,
        job_id: &str,
        agent_id: &str,
        state: JobState,
        message: &str,
        now: i64,
    ) -> Result<Job> {
        let running_steps_become = match state {
            JobState::Succeeded => StepState::Succeeded,
            JobState::Failed => StepState::Failed,
            JobState::Canceled => StepState::Canceled,
            JobState::Queued | JobState::Assigned | JobState::Running => {
                return Err(Error::Invalid(format!("a job cannot complete as {state}")));
            }
        };
        let txn = self.begin_write().await?;
        let finished = job::Entity::update_many()
            .col_expr(job::Column::State, Expr::value(state.as_str()))
            .col_expr(job::Column::Message, Expr::value(message))
            .col_expr(job::Column::FinishedAt, Expr::value(Some(now)))
            .filter(job::Column::Id.eq(job_id))
            .filter(job::Column::AgentId.eq(agent_id))
            .filter(job::Column::State.is_in(ACTIVE))
            .exec(&txn)
            .await?;
        if finished.rows_affected == 0 {
            return Err(not_held(&txn, job_id).await);
        }
        job_step::Entity::update_many()
            .col_expr(
                job_step::Column::State,
                Expr::value(StepState::Skipped.as_str()),
            )
            .filter(job_step::Column::JobId.eq(job_id))
            .filter(job_step::Column::State.eq(StepState::Pending.as_str()))
            .exec(&txn)
            .await?;
        job_step::Entity::update_many()
            .col_expr(
                job_step::Column::State,
                Expr::value(running_steps_become.as_str()),
            )
            .col_expr(job_step::Column::FinishedAt, Expr::value(Some(now)))
            .filter(job_step::Column::JobId.eq(job_id))
            .filter(job_step::Column::State.eq(StepState::Running.as_str()))
            .exec(&txn)
            .await?;
        let job = load_job(&txn, job_id)
            .await?
            .ok_or_else(|| Error::NotFound("job".to_owned()))?;
        txn.commit().await?;
        Ok(job)
    }
}

/// Checks that `agent_id` holds the job and locks its row for the rest of
/// the transaction (a no-op update matched by the guard).
async fn hold_job(txn: &impl ConnectionTrait, job_id: &str, agent_id: &str) -> Result<()> {
    let held = job::Entity::update_many()
        .col_expr(job::Column::AgentId, Expr::col(job::Column::AgentId))
        .filter(job::Column::Id.eq(job_id))
        .filter(job::Column::AgentId.eq(agent_id))
        .filter(job::Column::State.is_in(ACTIVE))
        .exec(txn)
        .await?;
    if held.rows_affected == 0 {
        return Err(not_held(txn, job_id).await);
    }
    Ok(())
}

/// Why the guard matched nothing: the job is missing, finished, queued, or
/// held by another agent.
async fn not_held(db: &impl ConnectionTrait, job_id: &str) -> Error {
    let state: Result<Option<String>, _> = job::Entity::find_by_id(job_id.to_owned())
        .select_only()
        .column(job::Column::State)
        .into_tuple()
        .one(db)
        .await;
    match state {
        Err(err) => Error::Database(err),
        Ok(None) => Error::NotFound("job".to_owned()),
        Ok(Some(state)) => match parse_state::<JobState>(&state) {
            Ok(state) if state.is_active() => {
                Error::Conflict("job is assigned to another agent".to_owned())
            }
            Ok(state) => Error::Conflict(format!("job is {state}, not assigned or running")),
            Err(err) => err,
        },
    }
}
