//! LogService: a job's log, stored exactly once and in order, and served
//! live.
//!
//! The agent streams batches of sequenced lines ([`Logs::ingest`]); each
//! batch is one store transaction that appends only the lines above the
//! job's log sequence, so resent lines after a reconnect are dropped and a
//! gap is refused. The answer is a cumulative ack. Followers
//! ([`Logs::follow`]) read stored batches and wake on [`Events`] for new
//! lines and the job's end.

pub mod grpc;
pub mod raw;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ferry_auth::{AdministratorIdentity, JobIdentity};
use ferry_proto::v1::{FollowLogsResponse, JobState};
use ferry_service::{Error, Event, Events, Result, validate, wire};
use ferry_store::Store;
use prost::Message;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{mpsc, oneshot};

/// Longest line text, in bytes (the agent splits longer output).
pub const MAX_LINE_LEN: usize = 64 * 1024;
/// Most lines in one batch.
pub const MAX_LINES_PER_BATCH: usize = 10_000;
/// Longest encoded line: its text and room for its other fields (unknown
/// fields a newer client sends are stored with the line, within this).
const MAX_ENCODED_LINE: usize = MAX_LINE_LEN + 1024;
/// Stored batches read per follow step.
const FOLLOW_BATCHES: u64 = 64;
/// A follower re-reads the store at least this often, so a missed wake-up
/// (another process wrote the lines) costs at most this much latency.
const FOLLOW_BACKSTOP: Duration = Duration::from_secs(2);

use raw::StoredLines;

/// Most batches one group commit takes.
const MAX_GROUP: usize = 256;
/// Batches waiting for each writer, across its streams.
const WRITER_QUEUE: usize = 1024;
/// Group-commit writers on PostgreSQL, which takes concurrent writers; a
/// job's batches always go to the same one, in order. SQLite has one writer
/// at a time, so one.
const POSTGRES_WRITERS: usize = 4;

/// The log service's domain.
#[derive(Debug, Clone)]
pub struct Logs {
    store: Store,
    events: Events,
    writers: Arc<[mpsc::Sender<Append>]>,
    cancels: Arc<Cancels>,
}

/// The open log streams' jobs, each with a flag raised when someone cancels
/// it. One task reads the events and raises only the canceled job's flag:
/// an event costs one lookup however many streams are open, where each
/// stream listening to every event would wake them all for each one.
#[derive(Debug, Default)]
struct Cancels {
    jobs: std::sync::Mutex<HashMap<Arc<str>, Watched>>,
    /// Asks for the watched jobs' cancels to be read from the store (one
    /// request waits while a read runs: requests coalesce).
    recheck: tokio::sync::Notify,
}

/// A job some streams watch: how many, and its flag.
#[derive(Debug)]
struct Watched {
    streams: usize,
    canceled: tokio::sync::watch::Sender<bool>,
}

/// A stream's watch on its job's cancellation; dropping it ends the watch.
#[derive(Debug)]
pub struct CancelWatch {
    cancels: Arc<Cancels>,
    job_id: Arc<str>,
    canceled: tokio::sync::watch::Receiver<bool>,
}

impl CancelWatch {
    /// Resolves once the job is canceled (at once if it already was).
    pub async fn canceled(&mut self) {
        if self.canceled.wait_for(|canceled| *canceled).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for CancelWatch {
    fn drop(&mut self) {
        let mut jobs = self.cancels.lock();
        if let Some(watched) = jobs.get_mut(&self.job_id) {
            watched.streams -= 1;
            if watched.streams == 0 {
                jobs.remove(&self.job_id);
            }
        }
    }
}

impl Cancels {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Watched>> {
        self.jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn watch(self: &Arc<Self>, job_id: &Arc<str>) -> CancelWatch {
        let mut jobs = self.lock();
        let watched = jobs.entry(job_id.clone()).or_insert_with(|| Watched {
            streams: 0,
            canceled: tokio::sync::watch::Sender::new(false),
        });
        watched.streams += 1;
        CancelWatch {
            cancels: self.clone(),
            job_id: job_id.clone(),
            canceled: watched.canceled.subscribe(),
        }
    }

    /// Raises the flags of canceled jobs until the events end. When events
    /// may have been lost (this task fell behind, or the mesh's listener
    /// reconnected), every watched job's cancel is read from the store, by
    /// a task of its own so that this one keeps reading events.
    async fn listen(
        self: Arc<Self>,
        store: Store,
        mut events: tokio::sync::broadcast::Receiver<Event>,
    ) {
        let rechecks = tokio::spawn(self.clone().rechecks(store));
        loop {
            match events.recv().await {
                Ok(Event::CancelRequested { job_id }) => self.raise(&job_id),
                Ok(Event::Resync) | Err(RecvError::Lagged(_)) => self.recheck.notify_one(),
                Ok(_) => {}
                Err(RecvError::Closed) => {
                    rechecks.abort();
                    return;
                }
            }
        }
    }

    /// Reads the watched jobs' cancels each time a recheck is asked for.
    async fn rechecks(self: Arc<Self>, store: Store) {
        loop {
            self.recheck.notified().await;
            self.recheck_store(&store).await;
        }
    }

    /// Raises the job's flag, if a stream watches it.
    fn raise(&self, job_id: &str) {
        if let Some(watched) = self.lock().get(job_id) {
            watched.canceled.send_replace(true);
        }
    }

    /// Raises the flag of every watched job the store says was canceled.
    async fn recheck_store(&self, store: &Store) {
        let watched: Vec<Arc<str>> = self.lock().keys().cloned().collect();
        for job_id in watched {
            match store.log_holder(&job_id).await {
                Ok(Some(holder)) if holder.cancel_requested => self.raise(&job_id),
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(job_id = %job_id, error = %error, "cannot read whether a job was canceled");
                }
            }
        }
    }
}

/// A batch on its way to the group-commit writer.
struct Append {
    job_id: Arc<str>,
    agent_id: Arc<str>,
    attempt: u32,
    first: u64,
    last: u64,
    lines: u64,
    bytes: u64,
    blob: Vec<u8>,
    steps: Vec<ferry_store::StepReport>,
    /// The job's end, on the agent's last batch.
    end: Option<ferry_store::JobEnd>,
    done: oneshot::Sender<Result<u64>>,
}

impl std::fmt::Debug for Append {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Append")
            .field("job_id", &self.job_id)
            .field("first", &self.first)
            .field("last", &self.last)
            .finish_non_exhaustive()
    }
}

/// The stream of a job's log, from ingest's point of view.
#[derive(Debug)]
pub struct Ingest {
    logs: Logs,
    job_id: Arc<str>,
    agent_id: Arc<str>,
    attempt: u32,
    /// How many steps the job has (step updates must name one).
    steps: u32,
    /// Whether the token may report steps (`job:status`).
    reports_steps: bool,
    /// The last line handed to the writer.
    sent: u64,
    /// The last line the store acknowledged.
    acked: u64,
    cancel_requested: bool,
    /// The job's final state, when it had ended before the stream opened.
    ended: Option<JobState>,
}

/// A batch handed to the writer: resolves to the job's cumulative ack once
/// the batch is stored (or to why it was refused).
#[derive(Debug)]
pub struct Stored {
    answer: StoredInner,
    bytes: usize,
    ends: Option<JobState>,
}

impl Stored {
    /// The job's final state, when this batch ends the job (it did, once
    /// the batch resolves to an ack).
    pub fn ends(&self) -> Option<JobState> {
        self.ends
    }

    /// Bytes of encoded lines this batch hands to the store (0 when
    /// nothing was new): what a stream counts against its in-flight limit.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[derive(Debug)]
enum StoredInner {
    Ready(u64),
    Pending(oneshot::Receiver<Result<u64>>),
}

impl std::future::Future for Stored {
    type Output = Result<u64>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<u64>> {
        match &mut self.answer {
            StoredInner::Ready(acked) => std::task::Poll::Ready(Ok(*acked)),
            StoredInner::Pending(receiver) => {
                std::pin::Pin::new(receiver).poll(context).map(|answer| {
                    answer.unwrap_or_else(|_| {
                        Err(Error::Unavailable("the log writer stopped".to_owned()))
                    })
                })
            }
        }
    }
}

impl Logs {
    /// A log service over `store`, raising and awaiting `events`. Starts
    /// the group-commit writer (on the current tokio runtime), which runs
    /// while any clone of the service lives.
    pub fn new(store: Store, events: Events) -> Self {
        let count = if store.is_postgres() {
            POSTGRES_WRITERS
        } else {
            1
        };
        let writers = (0..count)
            .map(|_| {
                let (writer, queue) = mpsc::channel(WRITER_QUEUE);
                tokio::spawn(write_groups(store.clone(), events.clone(), queue));
                writer
            })
            .collect();
        let cancels = Arc::new(Cancels::default());
        tokio::spawn(cancels.clone().listen(store.clone(), events.subscribe()));
        Self {
            store,
            events,
            writers,
            cancels,
        }
    }

    /// Opens ingest for the caller's job: refused unless the job token is
    /// for `job_id` with the logs scope and the job is (or was, until it
    /// ended) held by the token's agent in the token's attempt. A job that
    /// ended takes nothing more: its stream only learns the final state
    /// ([`Ingest::ended`]), so an agent whose end committed but whose final
    /// ack was lost learns that its job completed.
    pub async fn ingest(&self, caller: &JobIdentity, job_id: &str) -> Result<Ingest> {
        validate::id("job_id", job_id)?;
        caller
            .require_job(job_id)
            .and_then(|()| caller.require_scope(ferry_auth::token::scope::JOB_LOGS))
            .map_err(|status| Error::PermissionDenied(status.message().to_owned()))?;
        let job = self
            .store
            .log_stream_holder(job_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("job {job_id} not found")))?;
        if job.agent_id.as_deref() != Some(caller.agent_id.as_str())
            || job.attempt != caller.attempt
        {
            return Err(Error::Unauthenticated(
                "the job moved to another agent or attempt: its token is revoked".to_owned(),
            ));
        }
        Ok(Ingest {
            logs: self.clone(),
            job_id: job_id.into(),
            agent_id: caller.agent_id.as_str().into(),
            attempt: caller.attempt,
            steps: job.steps,
            reports_steps: caller
                .require_scope(ferry_auth::token::scope::JOB_STATUS)
                .is_ok(),
            sent: job.log_sequence,
            acked: job.log_sequence,
            cancel_requested: job.cancel_requested,
            ended: job.state.is_terminal().then(|| wire::job_state(job.state)),
        })
    }

    /// The writer of a job's batches (always the same one: they commit in
    /// order).
    fn writer_of(&self, job_id: &str) -> &mpsc::Sender<Append> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(job_id, &mut hasher);
        let shard = std::hash::Hasher::finish(&hasher) as usize % self.writers.len();
        &self.writers[shard]
    }

    /// Watches the job for a cancel request (made from now on).
    pub fn watch_cancel(&self, job_id: &Arc<str>) -> CancelWatch {
        self.cancels.watch(job_id)
    }
}

impl Ingest {
    /// The job's stored sequence: what is acked so far.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Records an ack that [`Stored`] resolved to.
    pub fn stored(&mut self, acked: u64) {
        self.acked = self.acked.max(acked);
    }

    /// The job being ingested.
    pub fn job_id(&self) -> &Arc<str> {
        &self.job_id
    }

    /// Whether the job had a cancel request when the stream opened.
    pub fn cancel_requested(&self) -> bool {
        self.cancel_requested
    }

    /// The job's final state, when it had ended before the stream opened:
    /// the stream then takes nothing and answers with it.
    pub fn ended(&self) -> Option<JobState> {
        self.ended
    }

    /// Checks a batch and hands the lines above those already handed over
    /// to the group-commit writer, without waiting for the store: the
    /// stream reads its next batch while this one commits. The returned
    /// [`Stored`] resolves to the new cumulative ack; resolve them in
    /// order.
    ///
    /// A batch with an end also completes the job once it and every line
    /// before it are stored: hand nothing after it.
    pub async fn append(&mut self, batch: raw::RawBatch) -> Result<Stored> {
        let raw::RawBatch {
            mut lines,
            excess_lines,
            end,
            ..
        } = batch;
        let end = end.map(|end| self.job_end(&end)).transpose()?;
        if excess_lines > 0 {
            return Err(Error::TooLarge(format!(
                "a batch has {} lines, the limit is {MAX_LINES_PER_BATCH}",
                lines.len() + excess_lines
            )));
        }
        for (offset, line) in lines.iter().enumerate() {
            if line.text_len > MAX_LINE_LEN {
                return Err(Error::TooLarge(format!(
                    "line {} is {} bytes, the limit is {MAX_LINE_LEN}",
                    line.sequence, line.text_len
                )));
            }
            if line.bytes.len() > MAX_ENCODED_LINE {
                return Err(Error::TooLarge(format!(
                    "line {} is {} bytes encoded, the limit is {MAX_ENCODED_LINE}",
                    line.sequence,
                    line.bytes.len()
                )));
            }
            if offset > 0 && line.sequence != lines[offset - 1].sequence + 1 {
                return Err(Error::InvalidArgument(
                    "line sequences in a batch must be consecutive".to_owned(),
                ));
            }
        }
        lines.retain(|line| line.sequence > self.sent);
        let steps = self.step_reports(&lines)?;
        let (first, last) = match (lines.first(), lines.last()) {
            (Some(first), Some(last)) => (first.sequence, last.sequence),
            // Nothing new: an end still goes to the store, after the lines
            // handed over before it.
            _ if end.is_some() => (self.sent + 1, self.sent),
            _ => {
                return Ok(Stored {
                    answer: StoredInner::Ready(self.sent),
                    bytes: 0,
                    ends: None,
                });
            }
        };
        if first != self.sent + 1 {
            return Err(Error::FailedPrecondition(format!(
                "lines must continue from {}; got {first}",
                self.sent + 1
            )));
        }
        let text: usize = lines.iter().map(|line| line.text_len).sum();
        // What the stream holds in memory: the lines as encoded.
        let bytes: usize = lines.iter().map(|line| line.bytes.len()).sum();
        let (done, answer) = oneshot::channel();
        let append = Append {
            job_id: self.job_id.clone(),
            agent_id: self.agent_id.clone(),
            attempt: self.attempt,
            first,
            last,
            lines: lines.len() as u64,
            bytes: text as u64,
            blob: raw::stored_blob(&lines),
            steps,
            end: end.clone(),
            done,
        };
        self.logs
            .writer_of(&self.job_id)
            .send(append)
            .await
            .map_err(|_| Error::Unavailable("the log writer stopped".to_owned()))?;
        self.sent = last;
        Ok(Stored {
            answer: StoredInner::Pending(answer),
            bytes,
            ends: end.map(|end| wire::job_state(end.state)),
        })
    }
}

impl Ingest {
    /// The job's end as the agent sent it, checked as CompleteJob checks it;
    /// reporting it needs the `job:status` scope.
    fn job_end(&self, end: &ferry_proto::v1::JobEnd) -> Result<ferry_store::JobEnd> {
        if !self.reports_steps {
            return Err(Error::PermissionDenied(
                "the token may not complete the job (it lacks the job:status scope)".to_owned(),
            ));
        }
        wire::job_end(end.result, &end.message, ferry_proto::time::now_micros())
    }

    /// The step reports `lines` carry, checked, in line order.
    fn step_reports(&self, lines: &[raw::RawLine]) -> Result<Vec<ferry_store::StepReport>> {
        let now = ferry_proto::time::now_micros();
        lines
            .iter()
            .filter_map(|line| line.step_update.as_ref().map(|update| (line, update)))
            .map(|(line, update)| {
                if !self.reports_steps {
                    return Err(Error::PermissionDenied(
                        "the token may not report steps (it lacks the job:status scope)".to_owned(),
                    ));
                }
                if line.step_index >= self.steps {
                    return Err(Error::InvalidArgument(format!(
                        "line {} reports step {} but the job has {} steps",
                        line.sequence, line.step_index, self.steps
                    )));
                }
                wire::step_report(
                    line.step_index,
                    update.state,
                    update.exit_code,
                    line.time.as_ref(),
                    now,
                )
            })
            .collect()
    }
}

/// The group-commit writer: takes every batch waiting (up to `MAX_GROUP`)
/// and stores them in one transaction, then answers each and wakes the
/// followers. One commit serves many streams, and a stream's next batch
/// waits here while the previous group commits.
async fn write_groups(store: Store, events: Events, mut queue: mpsc::Receiver<Append>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while queue.recv_many(&mut group, MAX_GROUP).await > 0 {
        let batches = group
            .iter_mut()
            .map(|append| ferry_store::NewLogBatch {
                job_id: &append.job_id,
                holder: ferry_store::Holder {
                    agent_id: &append.agent_id,
                    attempt: append.attempt,
                },
                first: append.first,
                last: append.last,
                lines: std::mem::take(&mut append.blob),
                steps: std::mem::take(&mut append.steps),
                end: append.end.clone(),
            })
            .collect();
        let answers: Vec<Result<u64>> = match store.append_log_batches(batches).await {
            Ok(answers) => answers
                .into_iter()
                .map(|answer| answer.map_err(Error::from))
                .collect(),
            Err(error) => {
                tracing::error!(batches = group.len(), error = %error, "could not store log batches");
                group
                    .iter()
                    .map(|_| {
                        Err(Error::Unavailable(
                            "the store is unavailable; retry later".to_owned(),
                        ))
                    })
                    .collect()
            }
        };
        let metrics = ferry_observability::metrics::get();
        // Followers hear once per job per group, of its last stored line.
        let mut appended: HashMap<Arc<str>, u64> = HashMap::new();
        let mut finished = Vec::new();
        for (append, answer) in group.drain(..).zip(answers) {
            if answer.is_ok() {
                metrics.log_lines.add(append.lines, &[]);
                metrics.log_bytes.add(append.bytes, &[]);
                let last = appended.entry(append.job_id.clone()).or_default();
                *last = (*last).max(append.last);
                if let Some(end) = &append.end {
                    tracing::info!(job_id = %append.job_id, agent_id = %append.agent_id, state = %end.state, "job completed");
                    ferry_observability::metrics::job_finished(end.state.as_str());
                    finished.push((append.job_id.clone(), append.agent_id.clone()));
                }
            }
            // the stream may have ended meanwhile
            let _ = append.done.send(answer);
        }
        for (job_id, sequence) in appended {
            events.publish(Event::LogsAppended { job_id, sequence });
        }
        // After the lines: a follower that hears of the end finds them.
        for (job_id, agent_id) in finished {
            events.publish(Event::JobFinished {
                job_id,
                agent_id: Some(agent_id),
            });
        }
    }
}

impl Logs {
    /// Streams the job's lines from `from` into `sender`; with `follow`,
    /// keeps going until the job ends and every line was sent. Ends quietly
    /// when the receiver goes away.
    pub async fn follow(
        &self,
        caller: &AdministratorIdentity,
        job_id: &str,
        from: u64,
        follow: bool,
        sender: mpsc::Sender<std::result::Result<FollowLogsResponse, tonic::Status>>,
    ) -> Result<()> {
        validate::id("job_id", job_id)?;
        let job = self
            .store
            .job(job_id)
            .await?
            .filter(|job| caller.administers(&job.pool_id))
            .ok_or_else(|| Error::NotFound(format!("job {job_id} not found")))?;
        let mut events = self.events.subscribe();
        let logs = self.clone();
        let job_id = job.id;
        tokio::spawn(async move {
            if let Err(error) = logs
                .follow_loop(&job_id, from.max(1), follow, &sender, &mut events)
                .await
            {
                let _ = sender.send(Err(error.into())).await;
            }
        });
        Ok(())
    }

    async fn follow_loop(
        &self,
        job_id: &str,
        mut next: u64,
        follow: bool,
        sender: &mpsc::Sender<std::result::Result<FollowLogsResponse, tonic::Status>>,
        events: &mut tokio::sync::broadcast::Receiver<Event>,
    ) -> Result<()> {
        loop {
            // Read the state before the lines: if it is final, no line can
            // arrive after the read below, so the end is exact.
            let state = self
                .store
                .job(job_id)
                .await?
                .map(|job| job.state)
                .ok_or_else(|| Error::NotFound(format!("job {job_id} not found")))?;
            loop {
                let batches = self.store.log_batches(job_id, next, FOLLOW_BATCHES).await?;
                if batches.is_empty() {
                    break;
                }
                let mut lines = Vec::new();
                for batch in batches {
                    let stored = StoredLines::decode(batch.lines.as_slice()).map_err(|_| {
                        Error::Internal(format!("stored log batch of job {job_id} does not decode"))
                    })?;
                    lines.extend(
                        stored
                            .lines
                            .into_iter()
                            .filter(|line| line.sequence >= next),
                    );
                }
                if let Some(last) = lines.last() {
                    next = last.sequence + 1;
                }
                let response = FollowLogsResponse {
                    lines,
                    final_state: JobState::Unspecified.into(),
                };
                if sender.send(Ok(response)).await.is_err() {
                    return Ok(()); // the follower left
                }
            }
            if state.is_terminal() || !follow {
                let final_state = if state.is_terminal() {
                    ferry_service::wire::job_state(state)
                } else {
                    JobState::Unspecified
                };
                let _ = sender
                    .send(Ok(FollowLogsResponse {
                        lines: Vec::new(),
                        final_state: final_state.into(),
                    }))
                    .await;
                return Ok(());
            }
            // Wait for news of this job (or the backstop), then look again.
            let wait = async {
                loop {
                    match events.recv().await {
                        Ok(event) if event.job_id() == Some(job_id) => return,
                        Ok(_) => {}
                        Err(RecvError::Lagged(_)) => return,
                        Err(RecvError::Closed) => {
                            std::future::pending::<()>().await;
                        }
                    }
                }
            };
            tokio::select! {
                () = wait => {}
                () = tokio::time::sleep(FOLLOW_BACKSTOP) => {}
                () = sender.closed() => return Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store on a fresh SQLite file, and its directory.
    async fn store() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("ferry.db").display()
        );
        let store = Store::connect(&url, [7; 32]).await.expect("store");
        (store, dir)
    }

    #[tokio::test]
    async fn a_cancel_reaches_the_streams_of_its_job_only() {
        let events = Events::new();
        let cancels = Arc::new(Cancels::default());
        let (store, _dir) = store().await;
        tokio::spawn(cancels.clone().listen(store, events.subscribe()));
        let (canceled, other): (Arc<str>, Arc<str>) = ("job-a".into(), "job-b".into());
        let mut first = cancels.watch(&canceled);
        let mut second = cancels.watch(&canceled);
        let mut untouched = cancels.watch(&other);
        events.publish(Event::LogsAppended {
            job_id: canceled.clone(),
            sequence: 1,
        });
        events.publish(Event::CancelRequested {
            job_id: canceled.clone(),
        });
        let within = Duration::from_secs(5);
        tokio::time::timeout(within, first.canceled())
            .await
            .expect("the first stream hears of it");
        tokio::time::timeout(within, second.canceled())
            .await
            .expect("the second stream hears of it");
        assert!(
            tokio::time::timeout(Duration::from_millis(200), untouched.canceled())
                .await
                .is_err(),
            "another job's stream does not"
        );
        drop(first);
        assert_eq!(
            cancels.lock().get(&canceled).map(|watched| watched.streams),
            Some(1)
        );
        drop(second);
        drop(untouched);
        assert!(
            cancels.lock().is_empty(),
            "closed streams leave nothing behind"
        );
    }

    #[tokio::test]
    async fn after_a_resync_a_cancel_missed_is_read_from_the_store() {
        let events = Events::new();
        let cancels = Arc::new(Cancels::default());
        let (store, _dir) = store().await;
        let pool = store.create_pool("resync").await.expect("pool");
        let job = store
            .insert_job(ferry_store::NewJob {
                id: uuid::Uuid::now_v7().to_string(),
                pool_id: pool.id.clone(),
                name: "watched".to_owned(),
                project: "p".to_owned(),
                pipeline: "p".to_owned(),
                demands: Default::default(),
                secret_names: Vec::new(),
                step_names: vec!["one".to_owned()],
                spec: Vec::new(),
                timeout_seconds: 60,
                queued_at: 1,
                source_id: None,
                max_attempts: 0,
            })
            .await
            .expect("job");
        assert!(
            store
                .claim_job(&job.id, "agent-a", 2, i64::MAX)
                .await
                .expect("claim")
        );
        tokio::spawn(cancels.clone().listen(store.clone(), events.subscribe()));
        let mut watch = cancels.watch(&job.id.as_str().into());
        // Canceled while its event was lost (another replica's, say).
        store
            .request_cancel(&job.id, "stop", 3)
            .await
            .expect("cancel");
        let within = Duration::from_secs(5);
        assert!(
            tokio::time::timeout(Duration::from_millis(200), watch.canceled())
                .await
                .is_err(),
            "no event, no flag"
        );
        events.publish(Event::Resync);
        tokio::time::timeout(within, watch.canceled())
            .await
            .expect("the resync finds the cancel");
    }
}
