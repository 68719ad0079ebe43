//! Leases and cancellation.
//!
//! An agent holds a claimed job under a lease it renews while it works; a
//! lapsed lease lets the reapers (`crate::reapers`) take the job back. A
//! cancel ends a queued job at once and only marks an active one: its agent
//! learns of it (from `renew_lease`) and completes the job itself.

use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter, QuerySelect};

use crate::entity::job;
use crate::error::{Error, Result};
use crate::hold::{close_steps, held_by, holding};
use crate::store::{Store, parse_state};
use crate::types::{CancelOutcome, Holder, JobState, LeaseRenewal, StepState};

/// The message of a job canceled without a reason.
const CANCELED: &str = "canceled";

impl Store {
    /// Extends the lease of an active job held by `holder` to
    /// `lease_expires_at` (one conditional UPDATE) and says whether a cancel
    /// was requested. `Conflict` when the holder is stale or the lease
    /// already lapsed (`lease_expires_at < now`): the agent must stop.
    /// `NotFound` when the job does not exist.
    pub async fn renew_lease(
        &self,
        job_id: &str,
        holder: Holder<'_>,
        now: i64,
        lease_expires_at: i64,
    ) -> Result<LeaseRenewal> {
        let txn = self.begin_write().await?;
        let renewed = job::Entity::update_many()
            .col_expr(
                job::Column::LeaseExpiresAt,
                Expr::value(Some(lease_expires_at)),
            )
            .filter(held_by(job_id, holder))
            // a job claimed before leases existed has none yet
            .filter(
                Condition::any()
                    .add(job::Column::LeaseExpiresAt.is_null())
                    .add(job::Column::LeaseExpiresAt.gte(now)),
            )
            .exec(&txn)
            .await?;
        if renewed.rows_affected == 0 {
            let err = match holding(&txn, job_id).await? {
                None => Error::NotFound("job".to_owned()),
                Some(current) => current.refuse(holder).unwrap_or_else(|| {
                    Error::Conflict("the job's lease lapsed: stop the job".to_owned())
                }),
            };
            txn.rollback().await?;
            return Err(err);
        }
        let cancel_requested_at: Option<Option<i64>> = job::Entity::find_by_id(job_id.to_owned())
            .select_only()
            .column(job::Column::CancelRequestedAt)
            .into_tuple()
            .all(&txn)
            .await?
            .pop();
        txn.commit().await?;
        Ok(LeaseRenewal {
            lease_expires_at,
            cancel_requested: cancel_requested_at.flatten().is_some(),
        })
    }

    /// Cancels a job. A queued job becomes `Canceled` at once (`finished_at
    /// = now`, `message` = `reason` or "canceled", steps `Skipped`). An
    /// assigned or running job gets `cancel_requested_at = now` and `message
    /// = reason` (or "canceled"); the first request wins, later ones change
    /// nothing. A finished job is left alone. `NotFound` when the job does
    /// not exist.
    pub async fn request_cancel(
        &self,
        job_id: &str,
        reason: &str,
        now: i64,
    ) -> Result<CancelOutcome> {
        let message = if reason.is_empty() { CANCELED } else { reason };
        let txn = self.begin_write().await?;
        // lock the row so its state cannot change under the decision below
        let locked = job::Entity::update_many()
            .col_expr(job::Column::AgentId, Expr::col(job::Column::AgentId))
            .filter(job::Column::Id.eq(job_id))
            .exec(&txn)
            .await?;
        if locked.rows_affected == 0 {
            return Err(Error::NotFound("job".to_owned()));
        }
        let state: Option<String> = job::Entity::find_by_id(job_id.to_owned())
            .select_only()
            .column(job::Column::State)
            .into_tuple()
            .all(&txn)
            .await?
            .pop();
        let state: JobState =
            parse_state(&state.ok_or_else(|| Error::NotFound("job".to_owned()))?)?;
        let outcome = match state {
            JobState::Queued => {
                job::Entity::update_many()
                    .col_expr(job::Column::State, Expr::value(JobState::Canceled.as_str()))
                    .col_expr(job::Column::Message, Expr::value(message))
                    .col_expr(job::Column::FinishedAt, Expr::value(Some(now)))
                    .col_expr(job::Column::CancelRequestedAt, Expr::value(Some(now)))
                    .filter(job::Column::Id.eq(job_id))
                    .filter(job::Column::State.eq(JobState::Queued.as_str()))
                    .exec(&txn)
                    .await?;
                close_steps(&txn, job_id, StepState::Canceled, now).await?;
                CancelOutcome::Canceled
            }
            JobState::Assigned | JobState::Running => {
                job::Entity::update_many()
                    .col_expr(job::Column::CancelRequestedAt, Expr::value(Some(now)))
                    .col_expr(job::Column::Message, Expr::value(message))
                    .filter(job::Column::Id.eq(job_id))
                    .filter(job::Column::CancelRequestedAt.is_null())
                    .exec(&txn)
                    .await?;
                CancelOutcome::Requested
            }
            JobState::Succeeded | JobState::Failed | JobState::Canceled => {
                CancelOutcome::AlreadyFinished(state)
            }
        };
        txn.commit().await?;
        self.forget_hand_out(job_id);
        Ok(outcome)
    }
}
