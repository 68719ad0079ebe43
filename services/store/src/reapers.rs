//! The server's reapers: jobs whose agent was lost (lease lapsed), ran past
//! their timeout, or did not confirm a cancel.
//!
//! A reaper reads its candidates, then changes each job in a transaction of
//! its own that starts with a conditional `UPDATE jobs ... WHERE id = ? AND
//! state = ? AND attempt = ? AND agent_id = ?` plus the reaper's own
//! condition, all as read. Only one writer can match that row: when two
//! reapers (on two replicas) race, or the agent reports at the same moment,
//! the loser's update matches nothing and it leaves the job alone.

use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder};

use crate::entity::job::{self, JobRow};
use crate::entity::{job_step, log_batch};
use crate::error::{Error, Result};
use crate::hold::ACTIVE;
use crate::job_progress::{close_steps_at, end_job};
use crate::store::{Store, parse_state, to_u32};
use crate::types::{JobEnd, JobState, ReapOutcome, Reaped, StepState};

const LOST: &str = "agent lost: its lease lapsed";
const UNCONFIRMED: &str = "canceled; the agent did not confirm";
const MICROS_PER_SECOND: i64 = 1_000_000;

impl Store {
    /// Takes back jobs whose lease lapsed (active, `lease_expires_at <
    /// now`). A job still `Assigned` (no step started) below its
    /// `max_attempts` goes back to the queue as the next attempt: agent,
    /// assignment, lease and test summary cleared, steps `Pending`, its log
    /// emptied (the next attempt writes lines from 1), message "agent lost
    /// before the job started; requeued (attempt N of M)". Any other job
    /// fails: `finished_at = now`, message "agent lost: its lease lapsed",
    /// `Running` steps `Failed`, `Pending` steps `Skipped`. A job whose
    /// cancel was requested is canceled instead (message "canceled; the
    /// agent did not confirm"). Returns what changed.
    pub async fn reap_lapsed_leases(&self, now: i64) -> Result<Vec<Reaped>> {
        let rows = active_jobs()
            .filter(job::Column::LeaseExpiresAt.lt(now))
            .into_partial_model::<JobRow>()
            .all(self.db())
            .await?;
        let mut reaped = Vec::new();
        for row in rows {
            let state: JobState = parse_state(&row.state)?;
            let attempt = to_u32(row.attempt, "attempt")?;
            let max_attempts = to_u32(row.max_attempts, "max attempts")?;
            let cancel_requested = row.cancel_requested_at.is_some();
            let guard =
                as_read(&row)
                    .add(job::Column::LeaseExpiresAt.lt(now))
                    .add(if cancel_requested {
                        job::Column::CancelRequestedAt.is_not_null()
                    } else {
                        job::Column::CancelRequestedAt.is_null()
                    });
            let outcome = if cancel_requested {
                self.end_job_for_server(&row.id, guard, JobState::Canceled, UNCONFIRMED, now)
                    .await?
                    .then_some(ReapOutcome::Canceled)
            } else if state == JobState::Assigned && attempt < max_attempts {
                let next = attempt.saturating_add(1);
                self.requeue(&row.id, guard, next, max_attempts)
                    .await?
                    .then_some(ReapOutcome::Requeued { attempt: next })
            } else {
                self.end_job_for_server(&row.id, guard, JobState::Failed, LOST, now)
                    .await?
                    .then_some(ReapOutcome::Failed)
            };
            if let Some(outcome) = outcome {
                tracing::info!(job_id = %row.id, ?outcome, "reaped a job whose lease lapsed");
                reaped.push(reaped_from(row, outcome));
            }
        }
        Ok(reaped)
    }

    /// Fails active jobs past their timeout, the server's backstop for an
    /// agent that does not enforce it: `(started_at or assigned_at) +
    /// timeout_seconds + grace < now` → `Failed`, message "timed out after
    /// {timeout}" (e.g. "1h 30m"), `Running` steps `Failed`, `Pending` steps
    /// `Skipped`. Jobs with `timeout_seconds <= 0` have no timeout. Returns
    /// what changed.
    pub async fn reap_timed_out(&self, now: i64, grace_micros: i64) -> Result<Vec<Reaped>> {
        let rows = active_jobs()
            .into_partial_model::<JobRow>()
            .all(self.db())
            .await?;
        let mut reaped = Vec::new();
        for row in rows {
            let Some(start) = row.started_at.or(row.assigned_at) else {
                continue;
            };
            if row.timeout_seconds <= 0 {
                continue;
            }
            let deadline = start
                .saturating_add(row.timeout_seconds.saturating_mul(MICROS_PER_SECOND))
                .saturating_add(grace_micros);
            if deadline >= now {
                continue;
            }
            let message = format!("timed out after {}", format_seconds(row.timeout_seconds));
            if self
                .end_job_for_server(&row.id, as_read(&row), JobState::Failed, &message, now)
                .await?
            {
                tracing::info!(job_id = %row.id, "reaped a job past its timeout");
                reaped.push(reaped_from(row, ReapOutcome::Failed));
            }
        }
        Ok(reaped)
    }

    /// Cancels active jobs whose cancel was requested more than
    /// `grace_micros` before `now` and that their agent has not completed:
    /// `Canceled`, message "canceled; the agent did not confirm", `Running`
    /// steps `Canceled`, `Pending` steps `Skipped`. Returns what changed.
    pub async fn reap_unconfirmed_cancels(
        &self,
        now: i64,
        grace_micros: i64,
    ) -> Result<Vec<Reaped>> {
        let rows = active_jobs()
            .filter(job::Column::CancelRequestedAt.lt(now.saturating_sub(grace_micros)))
            .into_partial_model::<JobRow>()
            .all(self.db())
            .await?;
        let mut reaped = Vec::new();
        for row in rows {
            let guard = as_read(&row).add(job::Column::CancelRequestedAt.is_not_null());
            if self
                .end_job_for_server(&row.id, guard, JobState::Canceled, UNCONFIRMED, now)
                .await?
            {
                tracing::info!(job_id = %row.id, "reaped a job that did not confirm its cancel");
                reaped.push(reaped_from(row, ReapOutcome::Canceled));
            }
        }
        Ok(reaped)
    }

    /// Ends a job for the server in one transaction: when `guard` still
    /// matches, sets the final state, message, `finished_at` and clears the
    /// lease, then closes the steps. False when the guard matched nothing.
    async fn end_job_for_server(
        &self,
        job_id: &str,
        guard: Condition,
        state: JobState,
        message: &str,
        now: i64,
    ) -> Result<bool> {
        let end = JobEnd {
            state,
            message: message.to_owned(),
            at: now,
        };
        let end_update = end_job(job::Entity::update_many(), &end, &[])?;
        let txn = self.begin_write().await?;
        let ended = end_update.filter(guard).exec(&txn).await?;
        if ended.rows_affected == 0 {
            txn.rollback().await?;
            return Ok(false);
        }
        close_steps_at(&txn, job_id, &end).await?;
        txn.commit().await?;
        self.forget_hand_out(job_id);
        Ok(true)
    }

    /// Puts a job back in the queue as attempt `next` in one transaction,
    /// when `guard` still matches. False when it matched nothing.
    async fn requeue(
        &self,
        job_id: &str,
        guard: Condition,
        next: u32,
        max_attempts: u32,
    ) -> Result<bool> {
        let message = format!(
            "agent lost before the job started; requeued (attempt {next} of {max_attempts})"
        );
        let next_i = i32::try_from(next)
            .map_err(|_| Error::Corrupt("stored attempt is too large".to_owned()))?;
        let txn = self.begin_write().await?;
        let requeued = job::Entity::update_many()
            .col_expr(job::Column::State, Expr::value(JobState::Queued.as_str()))
            .col_expr(job::Column::Attempt, Expr::value(next_i))
            .col_expr(job::Column::AgentId, Expr::value(None::<String>))
            .col_expr(job::Column::AssignedAt, Expr::value(None::<i64>))
            .col_expr(job::Column::StartedAt, Expr::value(None::<i64>))
            .col_expr(job::Column::LeaseExpiresAt, Expr::value(None::<i64>))
            .col_expr(job::Column::CancelRequestedAt, Expr::value(None::<i64>))
            .col_expr(job::Column::TestSummary, Expr::value(None::<String>))
            .col_expr(job::Column::LogSequence, Expr::value(0i64))
            .col_expr(job::Column::Message, Expr::value(message))
            .filter(guard)
            .exec(&txn)
            .await?;
        if requeued.rows_affected == 0 {
            txn.rollback().await?;
            return Ok(false);
        }
        job_step::Entity::update_many()
            .col_expr(
                job_step::Column::State,
                Expr::value(StepState::Pending.as_str()),
            )
            .col_expr(job_step::Column::ExitCode, Expr::value(None::<i32>))
            .col_expr(job_step::Column::StartedAt, Expr::value(None::<i64>))
            .col_expr(job_step::Column::FinishedAt, Expr::value(None::<i64>))
            .filter(job_step::Column::JobId.eq(job_id))
            .exec(&txn)
            .await?;
        log_batch::Entity::delete_many()
            .filter(log_batch::Column::JobId.eq(job_id))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        self.forget_hand_out(job_id);
        Ok(true)
    }
}

/// Active jobs, oldest first.
fn active_jobs() -> sea_orm::Select<job::Entity> {
    job::Entity::find()
        .filter(job::Column::State.is_in(ACTIVE))
        .order_by_asc(job::Column::Id)
}

/// Matches the job only while it is as `row` read it: same state, attempt
/// and agent.
fn as_read(row: &JobRow) -> Condition {
    Condition::all()
        .add(job::Column::Id.eq(row.id.as_str()))
        .add(job::Column::State.eq(row.state.as_str()))
        .add(job::Column::Attempt.eq(row.attempt))
        .add(match &row.agent_id {
            Some(agent_id) => job::Column::AgentId.eq(agent_id.as_str()),
            None => job::Column::AgentId.is_null(),
        })
}

fn reaped_from(row: JobRow, outcome: ReapOutcome) -> Reaped {
    Reaped {
        job_id: row.id,
        pool_id: row.pool_id,
        agent_id: row.agent_id,
        outcome,
    }
}

/// `5400` → `"1h 30m"`, `45` → `"45s"`, `0` → `"0s"`.
fn format_seconds(seconds: i64) -> String {
    let seconds = seconds.max(0);
    let parts: Vec<String> = [
        (seconds / 3600, "h"),
        (seconds / 60 % 60, "m"),
        (seconds % 60, "s"),
    ]
    .into_iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, unit)| format!("{n}{unit}"))
    .collect();
    if parts.is_empty() {
        "0s".to_owned()
    } else {
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::format_seconds;

    #[test]
    fn formats_timeouts() {
        assert_eq!(format_seconds(3600), "1h");
        assert_eq!(format_seconds(5400), "1h 30m");
        assert_eq!(format_seconds(45), "45s");
        assert_eq!(format_seconds(3661), "1h 1m 1s");
        assert_eq!(format_seconds(0), "0s");
        assert_eq!(format_seconds(-5), "0s");
    }
}
