//! Progress reports from the agent holding a job: step updates and the
//! final state.
//!
//! Each call is one short write transaction that starts with the holder's
//! guarded `UPDATE jobs` (see `crate::hold`), so nothing can change the job
//! between the check and the writes that follow.

use sea_orm::sea_query::{CaseStatement, Expr, ExprTrait, Func};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, UpdateMany};

use crate::entity::{job, job_step};
use crate::error::{Error, Result};
use crate::hold::{close_steps, held_by, hold_job, not_held};
use crate::store::Store;
use crate::together::Together;
use crate::types::{Holder, JobEnd, JobState, StepReport, StepState};

impl Store {
    /// Records step progress from the agent holding the job. The job must
    /// be `Assigned` or `Running` and held by `holder`, else `Conflict`
    /// (`NotFound` when the job or the step does not exist).
    ///
    /// `Running` sets the step's `started_at` (first report wins) and moves
    /// an `Assigned` job to `Running` with `started_at = now` (or its
    /// `assigned_at`, if later). Final step
    /// states set `finished_at` and `exit_code`. (Reports carried by log
    /// lines are recorded the same way by `append_log_batches`.)
    pub async fn update_step(
        &self,
        job_id: &str,
        holder: Holder<'_>,
        index: u32,
        state: StepState,
        exit_code: Option<i32>,
        now: i64,
    ) -> Result<()> {
        let reports = [StepReport {
            index,
            state,
            exit_code,
            at: now,
        }];
        let txn = self.begin_write().await?;
        if state == StepState::Running {
            // The guard and the move to `Running` in one statement.
            let held = start_job(job::Entity::update_many(), &reports)
                .filter(held_by(job_id, holder))
                .exec(&txn)
                .await?;
            if held.rows_affected == 0 {
                return Err(not_held(&txn, job_id, holder).await);
            }
        } else {
            hold_job(&txn, job_id, holder).await?;
        }
        write_steps(&txn, job_id, &reports).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Records the final state from the agent holding the job. The job must
    /// be `Assigned` or `Running` and held by `holder`, else `Conflict`
    /// (`NotFound` when it does not exist); `state` must be final, else
    /// `Invalid`.
    ///
    /// Sets `finished_at` and `message` and clears the lease; steps still
    /// `Pending` become `Skipped`, steps still `Running` take the job's
    /// final state (succeeded, failed or canceled) with `finished_at = now`.
    /// The agent's state stands even when a cancel was requested; an empty
    /// `message` then keeps the cancel's reason.
    pub async fn complete_job(
        &self,
        job_id: &str,
        holder: Holder<'_>,
        state: JobState,
        message: &str,
        now: i64,
    ) -> Result<()> {
        let end = JobEnd {
            state,
            message: message.to_owned(),
            at: now,
        };
        let finish = end_job(job::Entity::update_many(), &end, &[])?;
        let txn = self.begin_write().await?;
        let finished = finish.filter(held_by(job_id, holder)).exec(&txn).await?;
        if finished.rows_affected == 0 {
            return Err(not_held(&txn, job_id, holder).await);
        }
        close_steps_at(&txn, job_id, &end).await?;
        txn.commit().await?;
        self.forget_hand_out(job_id);
        Ok(())
    }
}

/// Closes the steps of a job that ended (see [`close_steps`]): steps still
/// running take the job's final state (failed, for a job that did not
/// succeed and was not canceled).
pub(crate) async fn close_steps_at(
    txn: &impl ConnectionTrait,
    job_id: &str,
    end: &JobEnd,
) -> Result<()> {
    close_steps(txn, job_id, steps_become(end), end.at).await
}

/// What a job's end makes of its steps still running.
pub(crate) fn steps_become(end: &JobEnd) -> StepState {
    match end.state {
        JobState::Succeeded => StepState::Succeeded,
        JobState::Canceled => StepState::Canceled,
        _ => StepState::Failed,
    }
}

/// Adds to an `UPDATE jobs` the job's end: its final state, `finished_at`
/// and `message` (an empty one keeps a cancel's reason), no lease; and the
/// start a `Running` report among `reports` gives it (see [`start_job`]).
/// `Invalid` when the state is not final.
pub(crate) fn end_job(
    update: UpdateMany<job::Entity>,
    end: &JobEnd,
    reports: &[StepReport],
) -> Result<UpdateMany<job::Entity>> {
    if !end.state.is_terminal() {
        return Err(Error::Invalid(format!(
            "a job cannot complete as {}",
            end.state
        )));
    }
    let message: Expr = if end.message.is_empty() {
        CaseStatement::new()
            .case(
                Expr::col(job::Column::CancelRequestedAt).is_not_null(),
                Expr::col(job::Column::Message),
            )
            .finally(Expr::value(""))
            .into()
    } else {
        Expr::value(end.message.as_str())
    };
    let mut update = update
        .col_expr(job::Column::State, Expr::value(end.state.as_str()))
        .col_expr(job::Column::Message, message)
        .col_expr(job::Column::FinishedAt, Expr::value(Some(end.at)))
        .col_expr(job::Column::LeaseExpiresAt, Expr::value(None::<i64>));
    if let Some(started_at) = started_at(reports) {
        update = update.col_expr(job::Column::StartedAt, started_at);
    }
    Ok(update)
}

/// Adds to an `UPDATE jobs` what `reports` say of the job itself: the first
/// `Running` report starts an `Assigned` job at its time, or when the job was
/// assigned if that is later (a report's time comes from the agent's clock,
/// and the server's timeout counts from the start); a `Running` job stays as
/// it is. Unchanged when no report is `Running`.
pub(crate) fn start_job(
    update: UpdateMany<job::Entity>,
    reports: &[StepReport],
) -> UpdateMany<job::Entity> {
    let Some(started_at) = started_at(reports) else {
        return update;
    };
    update
        .col_expr(
            job::Column::State,
            CaseStatement::new()
                .case(
                    Expr::col(job::Column::State).eq(JobState::Assigned.as_str()),
                    Expr::value(JobState::Running.as_str()),
                )
                .finally(Expr::col(job::Column::State))
                .into(),
        )
        .col_expr(job::Column::StartedAt, started_at)
}

/// The `started_at` the first `Running` report among `reports` gives an
/// `Assigned` job (a started job keeps its own); `None` without one.
fn started_at(reports: &[StepReport]) -> Option<Expr> {
    let started = reports
        .iter()
        .find(|report| report.state == StepState::Running)?;
    Some(
        CaseStatement::new()
            .case(
                Expr::col(job::Column::State).eq(JobState::Assigned.as_str()),
                Func::greatest([
                    Func::coalesce([Expr::col(job::Column::AssignedAt), Expr::value(started.at)])
                        .into(),
                    Expr::value(started.at),
                ]),
            )
            .finally(Expr::col(job::Column::StartedAt))
            .into(),
    )
}

/// What a run of reports leaves on one step.
struct StepChange {
    index: u32,
    state: StepState,
    started_at: Option<i64>,
    finished: Option<(i64, Option<i32>)>,
}

/// Records `reports`, in order, on the job's steps (see [`step_updates`]).
/// `NotFound` when a step does not exist. The caller holds the job's row.
pub(crate) async fn write_steps(
    txn: &impl ConnectionTrait,
    job_id: &str,
    reports: &[StepReport],
) -> Result<()> {
    let mut together = Together::new(txn.get_database_backend());
    step_updates(&mut together, job_id, reports)?;
    steps_found(&together.run(txn).await?)
}

/// `NotFound` unless each step update (counted, in a [`Together`]) found
/// its step.
pub(crate) fn steps_found(counts: &[u64]) -> Result<()> {
    if counts.iter().all(|&count| count == 1) {
        Ok(())
    } else {
        Err(Error::NotFound("job step".to_owned()))
    }
}

/// Adds to `together` what `reports` say, in order, of the job's steps: one
/// counted statement per step they name (a step that started and ended in
/// the same run of reports is written once). `Running` sets `started_at`
/// (the first report wins), final states `finished_at` and `exit_code`.
pub(crate) fn step_updates(
    together: &mut Together,
    job_id: &str,
    reports: &[StepReport],
) -> Result<()> {
    let mut changes: Vec<StepChange> = Vec::new();
    for report in reports {
        let position = match changes
            .iter()
            .position(|change| change.index == report.index)
        {
            Some(position) => position,
            None => {
                changes.push(StepChange {
                    index: report.index,
                    state: report.state,
                    started_at: None,
                    finished: None,
                });
                changes.len() - 1
            }
        };
        let change = &mut changes[position];
        change.state = report.state;
        if report.state == StepState::Running {
            change.started_at.get_or_insert(report.at);
            change.finished = None;
        } else if report.state.is_terminal() {
            change.finished = Some((report.at, report.exit_code));
        }
    }
    for change in changes {
        let idx =
            i32::try_from(change.index).map_err(|_| Error::NotFound("job step".to_owned()))?;
        let mut update = job_step::Entity::update_many()
            .col_expr(job_step::Column::State, Expr::value(change.state.as_str()));
        if let Some(at) = change.started_at {
            update = update.col_expr(
                job_step::Column::StartedAt,
                Func::coalesce([Expr::col(job_step::Column::StartedAt), Expr::value(at)]).into(),
            );
        }
        if let Some((at, exit_code)) = change.finished {
            update = update
                .col_expr(job_step::Column::FinishedAt, Expr::value(Some(at)))
                .col_expr(job_step::Column::ExitCode, Expr::value(exit_code));
        }
        together.push_counted(
            &update
                .filter(job_step::Column::JobId.eq(job_id))
                .filter(job_step::Column::Idx.eq(idx)),
        );
    }
    Ok(())
}
