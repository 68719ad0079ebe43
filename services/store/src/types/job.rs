//! Jobs, their steps and logs, and the outcomes of leases, cancels and
//! reapers.

use std::collections::BTreeMap;
use std::fmt;

use super::{JobState, StepState, TestSummary};

/// How many attempts a job may take when `NewJob::max_attempts` is 0.
pub(crate) const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// A job to queue. `spec` is plaintext here; the store encrypts it before
/// writing, and `Debug` shows only its length.
#[derive(Clone, PartialEq, Eq)]
pub struct NewJob {
    /// UUID v7 chosen by the caller (time-ordered: the queue is FIFO by id).
    pub id: String,
    pub pool_id: String,
    pub name: String,
    pub project: String,
    pub pipeline: String,
    pub demands: BTreeMap<String, String>,
    pub secret_names: Vec<String>,
    pub step_names: Vec<String>,
    pub spec: Vec<u8>,
    pub timeout_seconds: i64,
    pub queued_at: i64,
    /// The source archive to unpack before the first step, if any.
    pub source_id: Option<String>,
    /// How many attempts the job may take (an agent lost before a step
    /// started); 0 means the default, 3.
    pub max_attempts: u32,
}

impl fmt::Debug for NewJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewJob")
            .field("id", &self.id)
            .field("pool_id", &self.pool_id)
            .field("name", &self.name)
            .field("project", &self.project)
            .field("pipeline", &self.pipeline)
            .field("demands", &self.demands)
            .field("secret_names", &self.secret_names)
            .field("step_names", &self.step_names)
            .field("spec", &format_args!("<{} bytes>", self.spec.len()))
            .field("timeout_seconds", &self.timeout_seconds)
            .field("queued_at", &self.queued_at)
            .field("source_id", &self.source_id)
            .field("max_attempts", &self.max_attempts)
            .finish()
    }
}

/// A job without its spec (read that with `Store::job_spec`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: String,
    pub pool_id: String,
    pub name: String,
    pub project: String,
    pub pipeline: String,
    pub state: JobState,
    pub demands: BTreeMap<String, String>,
    pub secret_names: Vec<String>,
    /// Starts at 1; a requeue after a lost agent adds one. With `agent_id`
    /// it names the job's [`Holder`].
    pub attempt: u32,
    pub agent_id: Option<String>,
    pub message: String,
    pub timeout_seconds: i64,
    pub queued_at: i64,
    pub assigned_at: Option<i64>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// The last log line stored (0 when there is none).
    pub log_sequence: u64,
    /// When the holder's lease ends unless renewed (active jobs only).
    pub lease_expires_at: Option<i64>,
    /// When a cancel was first requested, if ever.
    pub cancel_requested_at: Option<i64>,
    pub max_attempts: u32,
    pub source_id: Option<String>,
    /// The sum of the JUnit files uploaded so far; `None` before the first.
    pub test_summary: Option<TestSummary>,
    /// The W3C `traceparent` of the span that queued the job, if traced.
    pub trace_context: Option<String>,
    /// By index. Empty where a method says it omits steps.
    pub steps: Vec<JobStep>,
}

/// One step of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobStep {
    pub index: u32,
    pub name: String,
    pub state: StepState,
    pub exit_code: Option<i32>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// Which jobs `Store::list_jobs` returns, one page at a time.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JobFilter {
    /// Only jobs in these pools; `None` means every pool, an empty list
    /// means none.
    pub pool_ids: Option<Vec<String>>,
    pub state: Option<JobState>,
    /// Page size; 0 means the default (100), larger than 1000 means 1000.
    pub limit: u64,
    /// The page token from the previous page: only jobs older than this id.
    pub after_id: Option<String>,
}

/// Who holds a job and how far its log goes: what opening a log stream
/// checks, read without the rest of the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogHolder {
    pub state: JobState,
    pub agent_id: Option<String>,
    pub attempt: u32,
    /// The last log line stored (0 when there is none).
    pub log_sequence: u64,
    /// Whether a cancel was requested.
    pub cancel_requested: bool,
    /// How many steps the job has.
    pub steps: u32,
}

/// Log lines `first..=last` of a job, as the blob the caller appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogBatch {
    pub first: u64,
    pub last: u64,
    pub lines: Vec<u8>,
}

/// A batch of log lines `first..=last` (one opaque blob) to append for the
/// agent holding the job.
#[derive(Debug, Clone)]
pub struct NewLogBatch<'a> {
    pub job_id: &'a str,
    pub holder: Holder<'a>,
    pub first: u64,
    pub last: u64,
    pub lines: Vec<u8>,
    /// Step reports carried by the batch's lines, in line order: recorded
    /// with the lines, in the same transaction, and only if the lines are
    /// new (a resent batch's reports were recorded the first time).
    pub steps: Vec<StepReport>,
    /// The job's end, on the agent's last batch: the job completes in the
    /// same transaction, once every line up to `last` is stored. Such a
    /// batch may hold no lines (`last = first - 1`).
    pub end: Option<JobEnd>,
}

/// How a job ended, reported by the agent holding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobEnd {
    /// Succeeded, failed or canceled.
    pub state: JobState,
    /// The job's message; empty keeps a cancel's reason.
    pub message: String,
    /// When (Unix microseconds, the server's clock).
    pub at: i64,
}

/// A step's new state, reported by the agent holding the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepReport {
    /// The step's position, from 0.
    pub index: u32,
    pub state: StepState,
    /// The exit code, for a step that ended.
    pub exit_code: Option<i32>,
    /// When it happened (Unix microseconds).
    pub at: i64,
}

/// Who holds a job: its agent and the attempt (the fencing token). Every write
/// by an agent names its holder; a write by a stale holder (another agent, or an
/// earlier attempt, or a job no longer Assigned/Running) is `Error::Conflict`.
#[derive(Debug, Clone, Copy)]
pub struct Holder<'a> {
    pub agent_id: &'a str,
    pub attempt: u32,
}

/// A renewed lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseRenewal {
    pub lease_expires_at: i64,
    /// Someone asked to cancel the job: the agent stops it and completes it
    /// as canceled.
    pub cancel_requested: bool,
}

/// What `Store::request_cancel` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The job was queued: it is now canceled and finished.
    Canceled,
    /// The job is active: the cancel is recorded and its agent will stop it.
    Requested,
    /// The job had already finished, in this state.
    AlreadyFinished(JobState),
}

/// A job a reaper changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reaped {
    pub job_id: String,
    pub pool_id: String,
    /// The agent that held the job.
    pub agent_id: Option<String>,
    pub outcome: ReapOutcome,
}

/// What a reaper did to a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReapOutcome {
    /// Back in the queue, as this attempt.
    Requeued { attempt: u32 },
    /// Finished as failed.
    Failed,
    /// Finished as canceled.
    Canceled,
}
