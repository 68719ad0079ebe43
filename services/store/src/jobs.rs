//! The job queue: inserting, reading, listing, claiming and releasing jobs.
//! Step progress and completion are in `job_progress`.

use std::collections::HashMap;

use sea_orm::sea_query::{Alias, CommonTableExpression, Expr, PostgresQueryBuilder, WithClause};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, QueryTrait as _, Statement,
};

use crate::entity::job::{self, JobRow};
use crate::entity::job_step;
use crate::error::{Error, Result, insert_error};
use crate::store::{Store, from_json, parse_state, to_json, to_u32, to_u64};
use crate::together::Together;
use crate::types::{DEFAULT_MAX_ATTEMPTS, Job, JobFilter, JobState, JobStep, NewJob, StepState};

const DEFAULT_PAGE: u64 = 100;
const MAX_PAGE: u64 = 1000;

impl Store {
    /// Queues a job: state `Queued`, attempt 1, every step `Pending`. The
    /// spec is encrypted before it is written. `AlreadyExists` when the id
    /// is taken, `NotFound` when the pool does not exist. `max_attempts` 0
    /// means 3.
    pub async fn insert_job(&self, new: NewJob) -> Result<Job> {
        self.insert_traced_job(new, None).await
    }

    /// [`Store::insert_job`], recording the W3C `traceparent` of the span
    /// that queued the job (ids and flags only) with it.
    pub async fn insert_traced_job(
        &self,
        new: NewJob,
        trace_context: Option<String>,
    ) -> Result<Job> {
        self.insert_job_as(new, trace_context, None).await
    }

    /// [`Store::insert_traced_job`] for a job handed at once to an agent
    /// that was waiting for one: stored `Assigned` to `agent_id` at `now`
    /// with a lease until `lease_expires_at` (attempt 1), so queueing and
    /// claiming are one write. Nobody else can claim a row that did not
    /// exist.
    pub async fn insert_assigned_job(
        &self,
        new: NewJob,
        trace_context: Option<String>,
        agent_id: &str,
        now: i64,
        lease_expires_at: i64,
    ) -> Result<Job> {
        self.insert_job_as(new, trace_context, Some((agent_id, now, lease_expires_at)))
            .await
    }

    async fn insert_job_as(
        &self,
        new: NewJob,
        trace_context: Option<String>,
        assigned: Option<(&str, i64, i64)>,
    ) -> Result<Job> {
        let sealed = self.cipher().seal(&new.id, &new.spec)?;
        let max_attempts = match new.max_attempts {
            0 => DEFAULT_MAX_ATTEMPTS,
            n => n,
        };
        let max_attempts_i = i32::try_from(max_attempts)
            .map_err(|_| Error::Invalid("max attempts is too large".to_owned()))?;
        let steps: Vec<JobStep> = new
            .step_names
            .into_iter()
            .enumerate()
            .map(|(index, name)| {
                let index = u32::try_from(index)
                    .map_err(|_| Error::Invalid("too many steps".to_owned()))?;
                Ok(JobStep {
                    index,
                    name,
                    state: StepState::Pending,
                    exit_code: None,
                    started_at: None,
                    finished_at: None,
                })
            })
            .collect::<Result<_>>()?;
        let job = Job {
            id: new.id,
            pool_id: new.pool_id,
            name: new.name,
            project: new.project,
            pipeline: new.pipeline,
            state: if assigned.is_some() {
                JobState::Assigned
            } else {
                JobState::Queued
            },
            demands: new.demands,
            secret_names: new.secret_names,
            attempt: 1,
            agent_id: assigned.map(|(agent_id, _, _)| agent_id.to_owned()),
            message: String::new(),
            timeout_seconds: new.timeout_seconds,
            queued_at: new.queued_at,
            assigned_at: assigned.map(|(_, at, _)| at),
            started_at: None,
            finished_at: None,
            log_sequence: 0,
            lease_expires_at: assigned.map(|(_, _, lease)| lease),
            cancel_requested_at: None,
            max_attempts,
            source_id: new.source_id,
            test_summary: None,
            trace_context,
            steps,
        };
        let step_models = job
            .steps
            .iter()
            .map(|step| {
                Ok(job_step::ActiveModel {
                    job_id: Set(job.id.clone()),
                    idx: Set(i32::try_from(step.index)
                        .map_err(|_| Error::Invalid("too many steps".to_owned()))?),
                    name: Set(step.name.clone()),
                    state: Set(step.state.as_str().to_owned()),
                    exit_code: Set(None),
                    started_at: Set(None),
                    finished_at: Set(None),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let row = job::ActiveModel {
            id: Set(job.id.clone()),
            pool_id: Set(job.pool_id.clone()),
            name: Set(job.name.clone()),
            project: Set(job.project.clone()),
            pipeline: Set(job.pipeline.clone()),
            state: Set(job.state.as_str().to_owned()),
            demands: Set(to_json(&job.demands, "demands")?),
            secret_names: Set(to_json(&job.secret_names, "secret names")?),
            spec: Set(sealed),
            attempt: Set(1),
            agent_id: Set(job.agent_id.clone()),
            message: Set(String::new()),
            timeout_seconds: Set(job.timeout_seconds),
            queued_at: Set(job.queued_at),
            assigned_at: Set(job.assigned_at),
            started_at: Set(None),
            finished_at: Set(None),
            log_sequence: Set(0),
            lease_expires_at: Set(job.lease_expires_at),
            cancel_requested_at: Set(None),
            max_attempts: Set(max_attempts_i),
            source_id: Set(job.source_id.clone()),
            test_summary: Set(None),
            trace_context: Set(job.trace_context.clone()),
        };
        // The job and its steps in one trip (the steps cannot fail on their
        // own: their job is the row just inserted).
        let job_insert = job::Entity::insert(row);
        let steps_insert =
            (!step_models.is_empty()).then(|| job_step::Entity::insert_many(step_models));
        if assigned.is_some() {
            self.reserve_hand_out(&job.id);
        }
        if self.backend() == DbBackend::Postgres {
            // One statement, in autocommit: the steps' insert with the
            // job's as its CTE (their foreign key is checked at its end).
            let statement = match steps_insert {
                Some(steps) => {
                    let new_job = CommonTableExpression::new()
                        .query(job_insert.into_query())
                        .table_name(Alias::new("new_job"))
                        .to_owned();
                    let (sql, values) = WithClause::new()
                        .cte(new_job)
                        .to_owned()
                        .query(steps.into_query())
                        .build(PostgresQueryBuilder);
                    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
                }
                None => job_insert.build(DbBackend::Postgres),
            };
            self.db()
                .execute_raw(statement)
                .await
                .map_err(|e| insert_error(e, "job", "pool"))?;
            return Ok(job);
        }
        let mut rows = Together::new(self.backend());
        rows.push(&job_insert);
        if let Some(steps) = &steps_insert {
            rows.push(steps);
        }
        let txn = self.begin_write().await?;
        rows.run(&txn)
            .await
            .map_err(|e| insert_error(e, "job", "pool"))?;
        txn.commit().await?;
        Ok(job)
    }

    /// The job with this id, with its steps and without its spec.
    pub async fn job(&self, id: &str) -> Result<Option<Job>> {
        load_job(self.db(), id).await
    }

    /// The decrypted spec of a job. `NotFound` when there is no such job,
    /// `Corrupt` when it does not decrypt (wrong data key, tampering).
    pub async fn job_spec(&self, id: &str) -> Result<Vec<u8>> {
        let sealed: Vec<u8> = job::Entity::find_by_id(id.to_owned())
            .select_only()
            .column(job::Column::Spec)
            .into_tuple()
            .all(self.db())
            .await?
            .pop()
            .ok_or_else(|| Error::NotFound("job".to_owned()))?;
        self.cipher().open(id, &sealed)
    }

    /// Jobs matching `filter`, newest first, with their steps, and the page
    /// token for the next page (`None` on the last page). Pass the token
    /// back as `filter.after_id`.
    pub async fn list_jobs(&self, filter: JobFilter) -> Result<(Vec<Job>, Option<String>)> {
        let limit = match filter.limit {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let mut query = job::Entity::find();
        if let Some(pool_ids) = filter.pool_ids {
            if pool_ids.is_empty() {
                return Ok((Vec::new(), None));
            }
            query = query.filter(job::Column::PoolId.is_in(pool_ids));
        }
        if let Some(state) = filter.state {
            query = query.filter(job::Column::State.eq(state.as_str()));
        }
        if let Some(after_id) = filter.after_id {
            query = query.filter(job::Column::Id.lt(after_id));
        }
        let mut rows = query
            .order_by_desc(job::Column::Id)
            .limit(limit + 1)
            .into_partial_model::<JobRow>()
            .all(self.db())
            .await?;
        let more = rows.len() as u64 > limit;
        rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let jobs = with_steps(self.db(), rows).await?;
        let next = if more {
            jobs.last().map(|job| job.id.clone())
        } else {
            None
        };
        Ok((jobs, next))
    }

    /// Up to `limit` queued jobs of a pool, oldest first. Steps are omitted
    /// (empty): this is the dispatcher's hot path; read a job's steps with
    /// [`Store::job`].
    pub async fn queued_jobs(&self, pool_id: &str, limit: u64) -> Result<Vec<Job>> {
        job::Entity::find()
            .filter(job::Column::PoolId.eq(pool_id))
            .filter(job::Column::State.eq(JobState::Queued.as_str()))
            .order_by_asc(job::Column::Id)
            .limit(limit)
            .into_partial_model::<JobRow>()
            .all(self.db())
            .await?
            .into_iter()
            .map(|row| job_from_row(row, Vec::new()))
            .collect()
    }

    /// Atomically hands a queued job to an agent, with a lease until
    /// `lease_expires_at`, with one `UPDATE ... WHERE id = ? AND state =
    /// 'queued'`. False when the job is not queued (another agent got it
    /// first, or it does not exist). The agent holds the job as the job's
    /// current attempt (see `Holder`).
    pub async fn claim_job(
        &self,
        job_id: &str,
        agent_id: &str,
        now: i64,
        lease_expires_at: i64,
    ) -> Result<bool> {
        let claim = job::Entity::update_many()
            .col_expr(job::Column::State, Expr::value(JobState::Assigned.as_str()))
            .col_expr(job::Column::AgentId, Expr::value(Some(agent_id.to_owned())))
            .col_expr(job::Column::AssignedAt, Expr::value(Some(now)))
            .col_expr(
                job::Column::LeaseExpiresAt,
                Expr::value(Some(lease_expires_at)),
            )
            .filter(job::Column::Id.eq(job_id))
            .filter(job::Column::State.eq(JobState::Queued.as_str()));
        self.reserve_hand_out(job_id);
        let claimed = self.update_alone(claim).await?.rows_affected == 1;
        if !claimed {
            self.forget_hand_out(job_id);
        }
        Ok(claimed)
    }

    /// Puts a job whose hand-off failed back in the queue (same attempt, no
    /// lease), if it is still `Assigned` to `agent_id`; otherwise does
    /// nothing.
    pub async fn release_job(&self, job_id: &str, agent_id: &str) -> Result<()> {
        let release = job::Entity::update_many()
            .col_expr(job::Column::State, Expr::value(JobState::Queued.as_str()))
            .col_expr(job::Column::AgentId, Expr::value(None::<String>))
            .col_expr(job::Column::AssignedAt, Expr::value(None::<i64>))
            .col_expr(job::Column::LeaseExpiresAt, Expr::value(None::<i64>))
            .filter(job::Column::Id.eq(job_id))
            .filter(job::Column::State.eq(JobState::Assigned.as_str()))
            .filter(job::Column::AgentId.eq(agent_id));
        let released = self.update_alone(release).await?;
        self.forget_hand_out(job_id);
        if released.rows_affected == 0 {
            tracing::debug!(job_id, "release ignored: job is not assigned to the agent");
        }
        Ok(())
    }
}

/// One job with its steps.
pub(crate) async fn load_job(db: &impl ConnectionTrait, id: &str) -> Result<Option<Job>> {
    let Some(row) = job::Entity::find_by_id(id.to_owned())
        .into_partial_model::<JobRow>()
        .all(db)
        .await?
        .pop()
    else {
        return Ok(None);
    };
    let steps = job_step::Entity::find()
        .filter(job_step::Column::JobId.eq(id))
        .order_by_asc(job_step::Column::Idx)
        .all(db)
        .await?
        .into_iter()
        .map(step_from_model)
        .collect::<Result<Vec<_>>>()?;
    job_from_row(row, steps).map(Some)
}

/// Jobs with their steps, loaded with one query for all of them.
async fn with_steps(db: &impl ConnectionTrait, rows: Vec<JobRow>) -> Result<Vec<Job>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = rows.iter().map(|row| row.id.clone()).collect();
    let mut steps: HashMap<String, Vec<JobStep>> = HashMap::new();
    for model in job_step::Entity::find()
        .filter(job_step::Column::JobId.is_in(ids))
        .order_by_asc(job_step::Column::JobId)
        .order_by_asc(job_step::Column::Idx)
        .all(db)
        .await?
    {
        let job_id = model.job_id.clone();
        steps
            .entry(job_id)
            .or_default()
            .push(step_from_model(model)?);
    }
    rows.into_iter()
        .map(|row| {
            let job_steps = steps.remove(&row.id).unwrap_or_default();
            job_from_row(row, job_steps)
        })
        .collect()
}

pub(crate) fn job_from_row(row: JobRow, steps: Vec<JobStep>) -> Result<Job> {
    Ok(Job {
        state: parse_state(&row.state)?,
        demands: from_json(&row.demands, "demands")?,
        secret_names: from_json(&row.secret_names, "secret names")?,
        attempt: to_u32(row.attempt, "attempt")?,
        log_sequence: to_u64(row.log_sequence, "log sequence")?,
        max_attempts: to_u32(row.max_attempts, "max attempts")?,
        test_summary: row
            .test_summary
            .as_deref()
            .map(|text| from_json(text, "test summary"))
            .transpose()?,
        lease_expires_at: row.lease_expires_at,
        cancel_requested_at: row.cancel_requested_at,
        source_id: row.source_id,
        trace_context: row.trace_context,
        id: row.id,
        pool_id: row.pool_id,
        name: row.name,
        project: row.project,
        pipeline: row.pipeline,
        agent_id: row.agent_id,
        message: row.message,
        timeout_seconds: row.timeout_seconds,
        queued_at: row.queued_at,
        assigned_at: row.assigned_at,
        started_at: row.started_at,
        finished_at: row.finished_at,
        steps,
    })
}

fn step_from_model(m: job_step::Model) -> Result<JobStep> {
    Ok(JobStep {
        index: to_u32(m.idx, "step index")?,
        state: parse_state(&m.state)?,
        name: m.name,
        exit_code: m.exit_code,
        started_at: m.started_at,
        finished_at: m.finished_at,
    })
}
