//! Running one job: its lease, its workspace, its source, its steps in
//! order, their reports, the test results and artifacts, the log upload and
//! the completion. The job token lives only in memory, for the duration of
//! the job, and is replaced by each lease renewal.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_client::{Authorized, Bearer};
use ferry_envelope::Opener;
use ferry_proto::time::duration_from_proto;
use ferry_proto::v1::job_service_client::JobServiceClient;
use ferry_proto::v1::resource_service_client::ResourceServiceClient;
use ferry_proto::v1::{AgentJob, CompleteJobRequest, JobResult, JobState, StepState};
use tonic::transport::Channel;
use tracing::Instrument as _;

use crate::backoff::seconds;
use crate::joblog::JobLog;
use crate::lease::{self, DEFAULT_LEASE, Lease};
use crate::logs;
use crate::masking::Masker;
use crate::rpc::{describe, with_retries};
use crate::settings::Settings;
use crate::source;
use crate::spool;
use crate::step::{StepCommand, run_step};
use crate::stop::{Stop, StopSignal};
use crate::telemetry;
use crate::upload;
use crate::workspace::{cleanup, prepare_workspace, step_env};

/// A job's timeout when it names none.
pub const DEFAULT_JOB_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// The source archive's file name, in the job's scripts directory.
const SOURCE_FILE: &str = "source.tar.gz";
/// A step timeout long enough never to fire (the job's timeout applies).
const NO_STEP_TIMEOUT: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
/// How long the job's first step waits for the server to store the line
/// that reports it started: until then the server may give the job to
/// another agent should this one vanish, so the step does not run before
/// (unless the server stays silent this long).
const START_CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// What every job of this agent shares.
#[derive(Clone)]
pub struct JobContext {
    /// The connection to the server.
    pub channel: Channel,
    /// The agent's settings.
    pub settings: Settings,
    /// Opens the renewed job tokens.
    pub opener: Opener,
    /// Where log spool files go; `None` for none.
    pub spool_dir: Option<PathBuf>,
    /// Most unacknowledged log lines held in memory per job.
    pub log_memory_lines: usize,
    /// How long a finished job waits for its last log acknowledgements.
    pub final_ack_timeout: Duration,
}

impl std::fmt::Debug for JobContext {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("JobContext")
            .field("agent", &self.settings.name)
            .field("spool_dir", &self.spool_dir)
            .finish_non_exhaustive()
    }
}

/// How a job ended, as reported to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobReport {
    /// Job id.
    pub job_id: String,
    /// Display name.
    pub name: String,
    /// The result.
    pub result: JobResult,
    /// A short explanation.
    pub message: String,
    /// Whether the server took the job's completion.
    pub completed: bool,
    /// Whether the lease was lost: the job was stopped and not completed.
    pub lease_lost: bool,
}

impl JobReport {
    /// `succeeded`, `failed`, `canceled`, or `lease lost`.
    pub fn result_name(&self) -> &'static str {
        if self.lease_lost {
            return "lease lost";
        }
        result_name(self.result)
    }
}

/// The job's clients, all sharing its (renewed) token.
struct Calls {
    jobs: JobServiceClient<Authorized>,
    resources: ResourceServiceClient<Authorized>,
    stop: StopSignal,
}

/// Runs `job` to its end and completes it (unless its lease is lost); never
/// fails: whatever goes wrong is the job's result or a log line. Setting
/// `stop` interrupts it. All of it happens in the job's span, which joins
/// the trace the server started when the job was queued.
pub async fn run(context: &JobContext, job: AgentJob, stop: StopSignal) -> JobReport {
    let span = span(&job);
    run_in(context, job, stop, &span).await
}

/// The job's span: a child of the trace context the server handed over.
pub fn span(job: &AgentJob) -> tracing::Span {
    telemetry::job_span(job, &Masker::new(job.secrets.values()))
}

/// [`run`] in `span` (from [`span`]), which records the job's result and
/// stays open for what the caller does next for the job.
pub async fn run_in(
    context: &JobContext,
    job: AgentJob,
    stop: StopSignal,
    span: &tracing::Span,
) -> JobReport {
    let report = run_job(context, job, stop).instrument(span.clone()).await;
    telemetry::job_ended(span, report.result, report.lease_lost);
    report
}

async fn run_job(context: &JobContext, job: AgentJob, stop: StopSignal) -> JobReport {
    let job_id = job.job_id.clone();
    tracing::info!(job_id = %job_id, name = %job.name, steps = job.steps.len(), attempt = job.attempt, "job started");
    let bearer = match Bearer::new(&job.job_token) {
        Ok(bearer) => bearer,
        Err(_) => {
            tracing::error!(job_id = %job_id, "the job token cannot be sent as a header; the job cannot be run or completed");
            return JobReport {
                job_id,
                name: job.name,
                result: JobResult::Failed,
                message: "the job token is unusable".into(),
                completed: false,
                lease_lost: false,
            };
        }
    };
    let channel = context.channel.clone();
    let calls = Calls {
        jobs: ferry_client::jobs(channel.clone(), bearer.clone()),
        resources: ferry_client::resources(channel.clone(), bearer.clone()),
        stop: stop.clone(),
    };
    let lease_duration = job
        .lease_duration
        .as_ref()
        .map(duration_from_proto)
        .filter(|duration| !duration.is_zero())
        .unwrap_or(DEFAULT_LEASE);
    let renewer = lease::spawn(
        calls.jobs.clone(),
        bearer.clone(),
        Lease {
            job_id: job_id.clone(),
            agent_id: context.settings.agent_id.clone(),
            duration: lease_duration,
            opener: context.opener.clone(),
        },
        stop.clone(),
    );
    let job_timeout = job
        .timeout
        .as_ref()
        .map(duration_from_proto)
        .filter(|timeout| !timeout.is_zero())
        .unwrap_or(DEFAULT_JOB_TIMEOUT);
    let timer = tokio::spawn({
        let stop = stop.clone();
        async move {
            tokio::time::sleep(job_timeout).await;
            stop.trigger(Stop::TimedOut(job_timeout));
        }
    });
    let (sender, upload) = logs::start(
        ferry_client::logs(channel, bearer.clone()),
        job_id.clone(),
        logs::Options {
            final_timeout: context.final_ack_timeout,
            memory_lines: context.log_memory_lines,
            spool_dir: context.spool_dir.clone(),
        },
        stop.clone(),
    );
    let mut log = JobLog::uploading(Masker::new(job.secrets.values()), sender);

    let (mut result, mut message) = run_steps(&calls, &context.settings, &job, &mut log).await;
    timer.abort();

    if let Some(Stop::LeaseLost(reason)) = stop.get() {
        drop(log);
        upload.abort();
        renewer.abort();
        bearer.clear();
        if let Some(dir) = &context.spool_dir {
            let _ = std::fs::remove_file(spool::spool_path(dir, &job_id));
        }
        tracing::error!(
            job_id = %job_id,
            name = %job.name,
            error = %reason,
            "lease lost: the server gave the job to another agent or ended it; stopped it without completing it"
        );
        return JobReport {
            job_id,
            name: job.name,
            result: JobResult::Unspecified,
            message: format!("lease lost: {reason}"),
            completed: false,
            lease_lost: true,
        };
    }

    log.finish(result, &fit_message(&message));
    let (mut completed, mut moved) = (false, false);
    match upload.await {
        Ok(summary) => {
            if summary.lost > 0 {
                tracing::warn!(job_id = %job_id, lost = summary.lost, lines = summary.lines, "log lines were never acknowledged and are lost");
                message.push_str(&format!(
                    "; {} of {} log lines lost",
                    summary.lost, summary.lines
                ));
            } else {
                tracing::debug!(job_id = %job_id, lines = summary.lines, "log uploaded");
            }
            if let Some(state) = summary.completed {
                completed = true;
                if state_result(state) != result {
                    // The server ended it first (its timeout, a lapsed
                    // lease): report what the job is.
                    tracing::warn!(job_id = %job_id, server_state = state.as_str_name(), "the server had ended the job otherwise");
                    result = state_result(state);
                    message.push_str(&format!(
                        "; the server ended the job as {}",
                        result_name(result)
                    ));
                }
            }
            moved = summary.moved;
        }
        Err(error) => tracing::error!(job_id = %job_id, %error, "the log uploader failed"),
    }
    // The log stream completes the job; CompleteJob when it could not (and
    // the job is still this agent's).
    if moved {
        tracing::error!(job_id = %job_id, "the job moved to another agent or attempt: not completed");
    } else if !completed && !stop.lease_lost() {
        completed = complete(&calls.jobs, &job_id, result, &message).await;
    }
    renewer.abort();
    bearer.clear();
    let report = JobReport {
        job_id,
        name: job.name,
        result,
        message,
        completed,
        lease_lost: stop.lease_lost(),
    };
    tracing::info!(job_id = %report.job_id, name = %report.name, result = report.result_name(), message = %report.message, "job finished");
    report
}

/// How one step ended.
struct StepEnd {
    state: StepState,
    exit_code: Option<i32>,
    problem: Option<String>,
}

/// Prepares the workspace, fetches the source, runs the steps and uploads
/// the results; returns the result and message.
async fn run_steps(
    calls: &Calls,
    settings: &Settings,
    job: &AgentJob,
    log: &mut JobLog,
) -> (JobResult, String) {
    let (workspace, script_dir) = match prepare_workspace(&settings.work_dir, &job.job_id) {
        Ok(paths) => paths,
        Err(error) => {
            let message = format!("cannot prepare the workspace: {error:#}");
            tracing::error!(job_id = %job.job_id, error = format!("{error:#}"), "cannot prepare the workspace");
            log.system(0, &message).await;
            skip_all(job, log).await;
            return (JobResult::Failed, message);
        }
    };

    let mut failure: Option<String> = None;
    if !job.source_id.is_empty() {
        let fetched = tokio::select! {
            fetched = fetch_source(calls, job, &workspace, &script_dir, log) => Some(fetched),
            _ = calls.stop.wait() => None,
        };
        if let Some(Err(message)) = fetched {
            log.system(0, &message).await;
            failure = Some(message);
        }
    }
    let source_ok = failure.is_none();

    let mut tolerated = 0usize;
    for (index, spec) in job.steps.iter().enumerate() {
        let step_index = u32::try_from(index).unwrap_or(u32::MAX);
        let span = telemetry::step_span(step_index, &log.mask(&spec.name));
        if failure.is_some() || calls.stop.is_set() {
            skip(log, step_index, &spec.name)
                .instrument(span.clone())
                .await;
            telemetry::step_ended(&span, StepState::Skipped, None);
            continue;
        }
        let step = Step {
            index,
            spec,
            workspace: &workspace,
            script_dir: &script_dir,
            // Steps run as a prefix (after a failure every step is
            // skipped), so the first to run is step 0.
            confirm_start: index == 0,
        };
        let end = run_one_step(calls, job, step, log)
            .instrument(span.clone())
            .await;
        telemetry::step_ended(&span, end.state, end.exit_code);
        drop(span);
        if let Some(problem) = end.problem {
            if spec.continue_on_error && end.state == StepState::Failed && !calls.stop.is_set() {
                tolerated += 1;
                log.system(
                    step_index,
                    "continuing: the step may fail (continue_on_error)",
                )
                .await;
            } else {
                failure = Some(problem);
            }
        }
    }
    finish_steps(
        calls,
        job,
        log,
        &workspace,
        &script_dir,
        source_ok,
        failure,
        tolerated,
    )
    .await
}

/// A step to run, and where.
struct Step<'a> {
    index: usize,
    spec: &'a ferry_proto::v1::StepSpec,
    workspace: &'a Path,
    script_dir: &'a Path,
    /// Whether this is the job's first step to start: it waits until the
    /// server knows the job started (see [`START_CONFIRM_TIMEOUT`]).
    confirm_start: bool,
}

/// Runs one step in the current (step) span: reports it running (on its
/// first log line), runs it, reports how it ended (on its last).
async fn run_one_step(calls: &Calls, job: &AgentJob, step: Step<'_>, log: &mut JobLog) -> StepEnd {
    let Step {
        index,
        spec,
        workspace,
        script_dir,
        confirm_start,
    } = step;
    let total = job.steps.len();
    let step_index = u32::try_from(index).unwrap_or(u32::MAX);
    let announced = log
        .step(
            step_index,
            &format!("▶ step {}/{}: {}", index + 1, total, spec.name),
            StepState::Running,
            None,
        )
        .await;
    if confirm_start {
        tokio::select! {
            stored = log.stored(announced, START_CONFIRM_TIMEOUT) => if !stored {
                tracing::warn!(job_id = %job.job_id, waited = %seconds(START_CONFIRM_TIMEOUT), "the server has not confirmed the job's start; running the step anyway");
            },
            _ = calls.stop.wait() => {}
        }
        // Stopped while waiting (canceled, lease lost, timed out): the step
        // does not start at all.
        if let Some(stop) = calls.stop.get() {
            let end = StepEnd {
                state: match stop {
                    Stop::Canceled(_) => StepState::Canceled,
                    _ => StepState::Failed,
                },
                exit_code: None,
                problem: Some(stop.describe()),
            };
            if !calls.stop.lease_lost() {
                let text = format!("step {} not started: {}", spec.name, stop.describe());
                log.step(step_index, &text, end.state, None).await;
            }
            return end;
        }
    }
    let timeout = spec
        .timeout
        .as_ref()
        .map(duration_from_proto)
        .filter(|timeout| !timeout.is_zero())
        .unwrap_or(NO_STEP_TIMEOUT);
    let command = StepCommand {
        index: step_index,
        name: spec.name.clone(),
        script: spec.script.clone(),
        shell: spec.shell.clone(),
        workspace: workspace.to_path_buf(),
        script_dir: script_dir.to_path_buf(),
        env: step_env(job, spec, workspace),
        timeout,
    };
    let (end, last_line) = match run_step(&command, log, &calls.stop).await {
        Ok(outcome) => {
            let exited = format!(
                "step {} exited with code {} ({})",
                spec.name,
                outcome.exit_code,
                seconds(outcome.elapsed)
            );
            let stopped = if outcome.interrupted {
                calls.stop.get()
            } else {
                None
            };
            let exit_code = Some(outcome.exit_code);
            let end = match stopped {
                Some(Stop::Canceled(reason)) => StepEnd {
                    state: StepState::Canceled,
                    exit_code,
                    problem: Some(reason),
                },
                Some(stop) => StepEnd {
                    state: StepState::Failed,
                    exit_code,
                    problem: Some(stop.describe()),
                },
                None if outcome.timed_out => StepEnd {
                    state: StepState::Failed,
                    exit_code,
                    problem: Some(format!(
                        "step {} timed out after {}",
                        spec.name,
                        seconds(timeout)
                    )),
                },
                None if outcome.exit_code != 0 => StepEnd {
                    state: StepState::Failed,
                    exit_code,
                    problem: Some(format!(
                        "step {} failed with exit code {}",
                        spec.name, outcome.exit_code
                    )),
                },
                None => StepEnd {
                    state: StepState::Succeeded,
                    exit_code,
                    problem: None,
                },
            };
            (end, exited)
        }
        Err(error) => {
            let message = format!("step {} could not start: {error:#}", spec.name);
            let end = StepEnd {
                state: StepState::Failed,
                exit_code: None,
                problem: Some(message.clone()),
            };
            (end, message)
        }
    };
    log.step(step_index, &last_line, end.state, end.exit_code)
        .await;
    tracing::info!(job_id = %job.job_id, step = index + 1, name = %log.mask(&spec.name), exit_code = end.exit_code, state = end.state.as_str_name(), "step finished");
    end
}

/// After the steps: uploads, clean-up, and the job's result and message.
#[allow(clippy::too_many_arguments)]
async fn finish_steps(
    calls: &Calls,
    job: &AgentJob,
    log: &mut JobLog,
    workspace: &Path,
    script_dir: &Path,
    source_ok: bool,
    failure: Option<String>,
    tolerated: usize,
) -> (JobResult, String) {
    let total = job.steps.len();
    let last_index = u32::try_from(total.saturating_sub(1)).unwrap_or(u32::MAX);
    let uploads_follow = calls.stop.get().is_none_or(|stop| stop.uploads_follow());
    if source_ok && uploads_follow && (!job.test_results.is_empty() || !job.artifacts.is_empty()) {
        let publish = upload::publish(
            &calls.resources,
            &job.job_id,
            workspace,
            &job.test_results,
            &job.artifacts,
            log,
            last_index,
        );
        tokio::select! {
            () = publish => {}
            stop = calls.stop.wait(), if !calls.stop.is_set() => {
                tracing::info!(job_id = %job.job_id, reason = %stop.describe(), "uploads interrupted");
            }
        }
    }
    cleanup(&job.job_id, workspace, script_dir);
    let (result, message) = match calls.stop.get() {
        Some(Stop::Canceled(reason)) => (JobResult::Canceled, reason),
        Some(stop) => (JobResult::Failed, stop.describe()),
        None => match failure {
            Some(message) => (JobResult::Failed, message),
            None if tolerated > 0 => (
                JobResult::Succeeded,
                format!(
                    "{} of {total} steps succeeded, {tolerated} failed with continue_on_error",
                    total - tolerated
                ),
            ),
            None => (JobResult::Succeeded, format!("all {total} steps succeeded")),
        },
    };
    (result, log.mask(&message))
}

/// Downloads, verifies and unpacks the job's source; `Err` is the job's
/// failure message.
async fn fetch_source(
    calls: &Calls,
    job: &AgentJob,
    workspace: &Path,
    script_dir: &Path,
    log: &mut JobLog,
) -> Result<(), String> {
    log.system(0, &format!("downloading source {}", job.source_id))
        .await;
    let archive = script_dir.join(SOURCE_FILE);
    let downloaded = source::download(&calls.resources, &job.job_id, &archive)
        .await
        .map_err(|error| format!("{error:#}"))?;
    log.system(
        0,
        &format!(
            "source verified: {} bytes, sha256 {}",
            downloaded.size, downloaded.sha256
        ),
    )
    .await;
    let unpack_archive = archive.clone();
    let unpack_workspace = workspace.to_path_buf();
    let unpacked =
        tokio::task::spawn_blocking(move || source::unpack(&unpack_archive, &unpack_workspace))
            .await
            .map_err(|error| format!("the source could not be unpacked: {error}"))
            .and_then(|result| result.map_err(|error| format!("{error:#}")));
    let _ = std::fs::remove_file(&archive);
    let unpacked = unpacked?;
    log.system(
        0,
        &format!(
            "source unpacked: {} files, {} directories, {} links",
            unpacked.files, unpacked.directories, unpacked.links
        ),
    )
    .await;
    Ok(())
}

/// Reports every step skipped (the job could not start).
async fn skip_all(job: &AgentJob, log: &mut JobLog) {
    for (index, spec) in job.steps.iter().enumerate() {
        skip(log, u32::try_from(index).unwrap_or(u32::MAX), &spec.name).await;
    }
}

/// Reports a step skipped, on its log line.
async fn skip(log: &mut JobLog, step_index: u32, name: &str) {
    log.step(
        step_index,
        &format!("step {name} skipped"),
        StepState::Skipped,
        None,
    )
    .await;
}

/// The result a final job state stands for.
fn state_result(state: JobState) -> JobResult {
    match state {
        JobState::Succeeded => JobResult::Succeeded,
        JobState::Canceled => JobResult::Canceled,
        _ => JobResult::Failed,
    }
}

/// A result in words, as the job's message says it.
fn result_name(result: JobResult) -> &'static str {
    match result {
        JobResult::Succeeded => "succeeded",
        JobResult::Canceled => "canceled",
        JobResult::Failed | JobResult::Unspecified => "failed",
    }
}

/// Longest job message the server takes, in bytes.
const MAX_MESSAGE: usize = 4096;

/// `message` cut to what the server takes (at a character boundary, marked
/// with "…"): a long step name must not make the job's end refused.
fn fit_message(message: &str) -> String {
    if message.len() <= MAX_MESSAGE {
        return message.to_owned();
    }
    let mut cut = MAX_MESSAGE - '…'.len_utf8();
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &message[..cut])
}

/// Completes the job; returns whether the server took it.
async fn complete(
    jobs: &JobServiceClient<Authorized>,
    job_id: &str,
    result: JobResult,
    message: &str,
) -> bool {
    let request = CompleteJobRequest {
        job_id: job_id.to_owned(),
        result: result as i32,
        message: fit_message(message),
    };
    let outcome = with_retries("CompleteJob", 5, || {
        let mut jobs = jobs.clone();
        let request = request.clone();
        async move { jobs.complete_job(request).await }
    })
    .await;
    match outcome {
        Ok(_) => true,
        Err(status) => {
            tracing::error!(job_id = %job_id, error = %describe(&status), "cannot complete the job");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_message_is_cut_to_what_the_server_takes() {
        assert_eq!(
            fit_message("all 2 steps succeeded"),
            "all 2 steps succeeded"
        );
        let long = format!("step {} failed", "é".repeat(3000));
        let cut = fit_message(&long);
        assert!(cut.len() <= MAX_MESSAGE, "{}", cut.len());
        assert!(cut.ends_with('…') && long.starts_with(cut.trim_end_matches('…')));
        assert_eq!(fit_message(&"x".repeat(MAX_MESSAGE)).len(), MAX_MESSAGE);
    }
}
