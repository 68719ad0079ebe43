//! Job logs: a gap-free sequence of lines `1..=n`, stored as batches of
//! lines the caller has already encoded into one blob.

use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};

use crate::entity::{job, job_step, log_batch};
use crate::error::{Error, Result};
use crate::hold::{close_steps_update, held_by, holding, not_held};
use crate::job_progress::{
    close_steps_at, end_job, start_job, step_updates, steps_become, steps_found,
};
use crate::store::{Store, parse_state, to_i64, to_u32, to_u64};
use crate::together::Together;
use crate::types::{Holder, Job, JobEnd, JobState, LogBatch, LogHolder, NewLogBatch};
use crate::writer::Write;

const DEFAULT_BATCHES: u64 = 100;
const MAX_BATCHES: u64 = 1000;

impl Store {
    /// Appends lines `first..=last` (one opaque blob) from the agent
    /// holding the job and returns the job's log sequence after the call.
    ///
    /// Stored iff `first == log_sequence + 1` and `holder` holds the job,
    /// with `log_sequence = last` in the same transaction (a conditional
    /// `UPDATE jobs ... WHERE log_sequence = first - 1 AND` the holder's
    /// guard, then the insert only if it matched). When `last <=
    /// log_sequence` the batch is a duplicate: nothing is stored and the
    /// current sequence is returned. `Conflict` when the holder is stale
    /// (another agent, an earlier attempt, or a job no longer assigned or
    /// running: a finished job's log is final), when the batch leaves a gap
    /// or partially overlaps stored lines (trimming is the caller's job);
    /// `Invalid` when `first` is 0 or `last < first`; `NotFound` when the
    /// job does not exist.
    pub async fn append_log_batch(
        &self,
        job_id: &str,
        holder: Holder<'_>,
        first: u64,
        last: u64,
        lines: Vec<u8>,
    ) -> Result<u64> {
        let batch = NewLogBatch {
            job_id,
            holder,
            first,
            last,
            lines,
            steps: Vec::new(),
            end: None,
        };
        self.append_log_batches(vec![batch])
            .await?
            .pop()
            .unwrap_or_else(|| Err(Error::Invalid("no log batch".to_owned())))
    }

    /// Appends several batches (of one or many jobs) in one transaction —
    /// group commit: the log service gathers the batches that arrive while
    /// the previous group commits. Each batch gets the answer
    /// [`Store::append_log_batch`] would give it, in order; batches of one
    /// job apply in the order given. A batch's step reports are recorded
    /// with its lines, as [`Store::update_step`] records them, and only
    /// when its lines are new. The outer error is the transaction's, and a
    /// report naming a step the job does not have (`NotFound`: callers
    /// check reports against [`LogHolder::steps`] first).
    pub async fn append_log_batches(
        &self,
        batches: Vec<NewLogBatch<'_>>,
    ) -> Result<Vec<Result<u64>>> {
        // Jobs' rows are locked in one order, by id, whoever writes (a
        // stable sort: a job's batches keep theirs): two groups on
        // PostgreSQL (another replica's, after an agent reconnected there)
        // then never wait on each other. Answers go back in the given order.
        let mut order: Vec<(usize, NewLogBatch<'_>)> = batches.into_iter().enumerate().collect();
        order.sort_by(|(_, one), (_, other)| one.job_id.cmp(other.job_id));
        let mut answers: Vec<Option<Result<u64>>> = order.iter().map(|_| None).collect();
        let txn = self.begin_write().await?;
        for (position, batch) in order {
            answers[position] = Some(append_in(&txn, batch).await?);
        }
        txn.commit().await?;
        Ok(answers
            .into_iter()
            .map(|answer| answer.unwrap_or_else(|| Err(Error::Invalid("no log batch".to_owned()))))
            .collect())
    }

    /// The last log line stored for a job (0 when none). `NotFound` when the
    /// job does not exist.
    pub async fn log_sequence(&self, job_id: &str) -> Result<u64> {
        log_sequence_in(self.db(), job_id).await
    }

    /// Who holds the job and the last log line stored for it; `None` when
    /// there is no such job.
    pub async fn log_holder(&self, job_id: &str) -> Result<Option<LogHolder>> {
        // state, agent id, attempt, log sequence, cancel requested at, steps
        type Row = (String, Option<String>, i32, i64, Option<i64>, i64);
        let steps = Query::select()
            .expr(Expr::col(job_step::Column::Idx).count())
            .from(job_step::Entity)
            .and_where(Expr::col(job_step::Column::JobId).eq(job_id))
            .to_owned();
        let row: Option<Row> = job::Entity::find_by_id(job_id.to_owned())
            .select_only()
            .column(job::Column::State)
            .column(job::Column::AgentId)
            .column(job::Column::Attempt)
            .column(job::Column::LogSequence)
            .column(job::Column::CancelRequestedAt)
            .expr(Expr::SubQuery(None, Box::new(steps.into())))
            .into_tuple()
            .all(self.db())
            .await?
            .pop();
        row.map(
            |(state, agent_id, attempt, log_sequence, cancel_requested_at, steps)| {
                Ok(LogHolder {
                    state: parse_state(&state)?,
                    agent_id,
                    attempt: to_u32(attempt, "attempt")?,
                    log_sequence: to_u64(log_sequence, "log sequence")?,
                    cancel_requested: cancel_requested_at.is_some(),
                    steps: u32::try_from(steps).map_err(|_| {
                        Error::Corrupt("stored step count is out of range".to_owned())
                    })?,
                })
            },
        )
        .transpose()
    }

    /// Remembers that `job` was just handed to `agent_id`, so that the
    /// job's first log stream opens without a read (see
    /// [`Store::log_stream_holder`]): fills the slot its claim reserved,
    /// unless a change to the job since dropped it. Does nothing unless
    /// [`Store::remember_hand_outs`].
    pub fn handed_out_to(&self, job: &Job, agent_id: &str) {
        let Some(handed_out) = self.handed_out() else {
            return;
        };
        let Ok(steps) = u32::try_from(job.steps.len()) else {
            return;
        };
        handed_out.fill(
            &job.id,
            LogHolder {
                state: JobState::Assigned,
                agent_id: Some(agent_id.to_owned()),
                attempt: job.attempt,
                log_sequence: job.log_sequence,
                cancel_requested: job.cancel_requested_at.is_some(),
                steps,
            },
        );
    }

    /// What a log stream checks when it opens: as [`Store::log_holder`],
    /// but the first stream after a hand-out takes what dispatch left
    /// ([`Store::handed_out_to`]) instead of reading. A change to the job
    /// since drops that; the stream's writes are guarded anyway. Set the
    /// stream's cancel watch first.
    pub async fn log_stream_holder(&self, job_id: &str) -> Result<Option<LogHolder>> {
        if let Some(holder) = self.handed_out().and_then(|handed| handed.take(job_id)) {
            return Ok(Some(holder));
        }
        self.log_holder(job_id).await
    }

    /// The batches holding lines `from` and later (those whose last line is
    /// `>= from`), in order, at most `limit` of them (0 means 100, at most
    /// 1000). Empty for a job without logs, or no such job.
    pub async fn log_batches(&self, job_id: &str, from: u64, limit: u64) -> Result<Vec<LogBatch>> {
        let limit = match limit {
            0 => DEFAULT_BATCHES,
            n => Ord::min(n, MAX_BATCHES),
        };
        let from = i64::try_from(from).unwrap_or(i64::MAX);
        log_batch::Entity::find()
            .filter(log_batch::Column::JobId.eq(job_id))
            .filter(log_batch::Column::LastSequence.gte(from))
            .order_by_asc(log_batch::Column::FirstSequence)
            .limit(limit)
            .all(self.db())
            .await?
            .into_iter()
            .map(|batch| {
                Ok(LogBatch {
                    first: to_u64(batch.first_sequence, "log sequence")?,
                    last: to_u64(batch.last_sequence, "log sequence")?,
                    lines: batch.lines,
                })
            })
            .collect()
    }
}

/// The last log line stored for a job. `NotFound` when it does not exist.
async fn log_sequence_in(db: &impl ConnectionTrait, job_id: &str) -> Result<u64> {
    let sequence: i64 = job::Entity::find_by_id(job_id.to_owned())
        .select_only()
        .column(job::Column::LogSequence)
        .into_tuple()
        .all(db)
        .await?
        .pop()
        .ok_or_else(|| Error::NotFound("job".to_owned()))?;
    to_u64(sequence, "log sequence")
}

/// One batch's append inside a group's transaction. The inner result is
/// the batch's answer (a refusal writes nothing); the outer one is a
/// database failure that ends the whole group.
///
/// The guarded `UPDATE jobs` that advances the log sequence also records
/// what the batch's reports and its end say of the job, so a batch that
/// ends the job costs no statement more than one that does not (but
/// closing the steps).
async fn append_in(txn: &Write, batch: NewLogBatch<'_>) -> Result<Result<u64>> {
    let NewLogBatch {
        job_id,
        holder,
        first,
        last,
        lines,
        steps,
        end,
    } = batch;
    // Only an end may come without lines: `last = first - 1`.
    let empty = end.is_some() && first > 0 && last == first - 1;
    if first == 0 || (last < first && !empty) {
        return Ok(Err(Error::Invalid(format!(
            "log batch range {first}..={last} is empty or starts at 0"
        ))));
    }
    let (first_i, last_i) = match (to_i64(first, "log sequence"), to_i64(last, "log sequence")) {
        (Ok(first_i), Ok(last_i)) => (first_i, last_i),
        (Err(err), _) | (_, Err(err)) => return Ok(Err(err)),
    };
    let advance =
        job::Entity::update_many().col_expr(job::Column::LogSequence, Expr::value(last_i));
    let advance = match &end {
        Some(end) => match end_job(advance, end, &steps) {
            Ok(advance) => advance,
            Err(err) => return Ok(Err(err)),
        },
        None => start_job(advance, &steps),
    };
    let advanced = advance
        .filter(held_by(job_id, holder))
        .filter(job::Column::LogSequence.eq(first_i - 1))
        .exec(txn)
        .await?;
    if advanced.rows_affected == 1 {
        // The rest follows in one trip: the lines, the steps' reports, and
        // the steps the end closes.
        let mut then = Together::new(txn.get_database_backend());
        if !empty {
            then.push(&log_batch::Entity::insert(log_batch::ActiveModel {
                id: NotSet,
                job_id: Set(job_id.to_owned()),
                first_sequence: Set(first_i),
                last_sequence: Set(last_i),
                lines: Set(lines),
            }));
        }
        step_updates(&mut then, job_id, &steps)?;
        if let Some(end) = &end {
            then.push(&close_steps_update(job_id, steps_become(end), end.at));
        }
        steps_found(&then.run(txn).await?)?;
        return Ok(Ok(last));
    }
    let refused = match holding(txn, job_id).await? {
        None => Some(Error::NotFound("job".to_owned())),
        Some(now) => now.refuse(holder),
    };
    let current = match log_sequence_in(txn, job_id).await {
        Ok(current) => current,
        Err(Error::NotFound(what)) => return Ok(Err(Error::NotFound(what))),
        Err(err) => return Err(err),
    };
    Ok(if let Some(err) = refused {
        Err(err)
    } else if last <= current {
        match end {
            // Resent lines (stored before, their ack lost) and the end.
            Some(end) if last == current => end_after_stored(txn, job_id, holder, &end)
                .await?
                .map(|()| current),
            Some(_) => Err(Error::Conflict(format!(
                "the job's end follows line {last}, but lines up to {current} are stored"
            ))),
            None => Ok(current),
        }
    } else if first > current + 1 {
        Err(Error::Conflict(format!(
            "log batch starts at line {first} but the next line is {}",
            current + 1
        )))
    } else {
        Err(Error::Conflict(format!(
            "log batch {first}..={last} overlaps stored lines up to {current}"
        )))
    })
}

/// Ends a job whose every line up to the end was already stored; the inner
/// error says why the holder cannot end it.
async fn end_after_stored(
    txn: &Write,
    job_id: &str,
    holder: Holder<'_>,
    end: &JobEnd,
) -> Result<Result<()>> {
    let update = match end_job(job::Entity::update_many(), end, &[]) {
        Ok(update) => update,
        Err(err) => return Ok(Err(err)),
    };
    let ended = update.filter(held_by(job_id, holder)).exec(txn).await?;
    if ended.rows_affected == 0 {
        return Ok(Err(not_held(txn, job_id, holder).await));
    }
    close_steps_at(txn, job_id, end).await?;
    Ok(Ok(()))
}
