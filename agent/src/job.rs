//! Running one job: its workspace, its steps in order, their reports, the
//! log upload and the completion. The job token lives only in memory, for
//! the duration of the job.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_client::{Authorized, Bearer};
use ferry_proto::time::duration_from_proto;
use ferry_proto::v1::job_service_client::JobServiceClient;
use ferry_proto::v1::{AgentJob, CompleteJobRequest, JobResult, ReportStepRequest, StepState};
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::backoff::seconds;
use crate::joblog::JobLog;
use crate::logs;
use crate::masking::Masker;
use crate::rpc::{describe, with_retries};
use crate::settings::Settings;
use crate::step::{StepCommand, run_step};

/// A job's timeout when it names none.
pub const DEFAULT_JOB_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// Set to 1 to keep job workspaces after the job, for debugging.
pub const KEEP_WORKSPACE_ENV: &str = "FERRY_KEEP_WORKSPACE";
/// Where step scripts are written, inside the work directory.
pub const SCRIPTS_DIR: &str = "_temp";

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
}

impl JobReport {
    /// `succeeded` or `failed`.
    pub fn result_name(&self) -> &'static str {
        match self.result {
            JobResult::Succeeded => "succeeded",
            JobResult::Canceled => "canceled",
            _ => "failed",
        }
    }
}

/// Runs `job` to its end and completes it; never fails: whatever goes wrong
/// is the job's result or a log line.
pub async fn run(channel: Channel, settings: &Settings, job: AgentJob) -> JobReport {
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
            };
        }
    };
    let jobs = ferry_client::jobs(channel.clone(), bearer.clone());
    let (sender, upload) = logs::start(
        ferry_client::logs(channel, bearer.clone()),
        job_id.clone(),
        logs::FINAL_ACK_TIMEOUT,
    );
    let mut log = JobLog::new(Masker::new(job.secrets.values()), sender);

    let (result, mut message) = run_steps(&jobs, settings, &job, &mut log).await;

    drop(log);
    match upload.await {
        Ok(summary) if summary.lost > 0 => {
            tracing::warn!(job_id = %job_id, lost = summary.lost, lines = summary.lines, "log lines were never acknowledged and are lost");
            message.push_str(&format!(
                "; {} of {} log lines lost",
                summary.lost, summary.lines
            ));
        }
        Ok(summary) => tracing::debug!(job_id = %job_id, lines = summary.lines, "log uploaded"),
        Err(error) => tracing::error!(job_id = %job_id, %error, "the log uploader failed"),
    }
    complete(&jobs, &job_id, result, &message).await;
    bearer.clear();
    let report = JobReport {
        job_id,
        name: job.name,
        result,
        message,
    };
    tracing::info!(job_id = %report.job_id, name = %report.name, result = report.result_name(), message = %report.message, "job finished");
    report
}

/// Prepares the workspace and runs the steps; returns the result and message.
async fn run_steps(
    jobs: &JobServiceClient<Authorized>,
    settings: &Settings,
    job: &AgentJob,
    log: &mut JobLog,
) -> (JobResult, String) {
    let job_timeout = job
        .timeout
        .as_ref()
        .map(duration_from_proto)
        .filter(|timeout| !timeout.is_zero())
        .unwrap_or(DEFAULT_JOB_TIMEOUT);
    let job_deadline = Instant::now() + job_timeout;
    let (workspace, script_dir) = match prepare_workspace(&settings.work_dir, &job.job_id) {
        Ok(paths) => paths,
        Err(error) => {
            let message = format!("cannot prepare the workspace: {error:#}");
            tracing::error!(job_id = %job.job_id, error = format!("{error:#}"), "cannot prepare the workspace");
            log.system(0, &message).await;
            for index in 0..job.steps.len() {
                report_step(jobs, &job.job_id, index, StepState::Skipped, None).await;
            }
            return (JobResult::Failed, message);
        }
    };

    let total = job.steps.len();
    let mut failure: Option<String> = None;
    let mut tolerated = 0usize;
    for (index, spec) in job.steps.iter().enumerate() {
        let step_index = u32::try_from(index).unwrap_or(u32::MAX);
        if failure.is_some() {
            log.system(step_index, &format!("step {} skipped", spec.name))
                .await;
            report_step(jobs, &job.job_id, index, StepState::Skipped, None).await;
            continue;
        }
        let remaining = job_deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            let message = format!("the job timed out after {}", seconds(job_timeout));
            log.system(step_index, &message).await;
            report_step(jobs, &job.job_id, index, StepState::Skipped, None).await;
            failure = Some(message);
            continue;
        }
        let timeout = spec
            .timeout
            .as_ref()
            .map(duration_from_proto)
            .filter(|timeout| !timeout.is_zero())
            .unwrap_or(job_timeout)
            .min(remaining);
        report_step(jobs, &job.job_id, index, StepState::Running, None).await;
        log.system(
            step_index,
            &format!("▶ step {}/{}: {}", index + 1, total, spec.name),
        )
        .await;
        let command = StepCommand {
            index: step_index,
            name: spec.name.clone(),
            script: spec.script.clone(),
            shell: spec.shell.clone(),
            workspace: workspace.clone(),
            script_dir: script_dir.clone(),
            env: step_env(job, spec, &workspace),
            timeout,
        };
        let (state, exit_code, problem) = match run_step(&command, log).await {
            Ok(outcome) => {
                log.system(
                    step_index,
                    &format!(
                        "step {} exited with code {} ({})",
                        spec.name,
                        outcome.exit_code,
                        seconds(outcome.elapsed)
                    ),
                )
                .await;
                let problem = if outcome.timed_out {
                    Some(format!(
                        "step {} timed out after {}",
                        spec.name,
                        seconds(timeout)
                    ))
                } else if outcome.exit_code != 0 {
                    Some(format!(
                        "step {} failed with exit code {}",
                        spec.name, outcome.exit_code
                    ))
                } else {
                    None
                };
                let state = if problem.is_some() {
                    StepState::Failed
                } else {
                    StepState::Succeeded
                };
                (state, Some(outcome.exit_code), problem)
            }
            Err(error) => {
                let message = format!("step {} could not start: {error:#}", spec.name);
                log.system(step_index, &message).await;
                (StepState::Failed, None, Some(message))
            }
        };
        tracing::info!(job_id = %job.job_id, step = index + 1, name = %log.mask(&spec.name), exit_code, state = state.as_str_name(), "step finished");
        report_step(jobs, &job.job_id, index, state, exit_code).await;
        if let Some(problem) = problem {
            if spec.continue_on_error {
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
    cleanup(&job.job_id, &workspace, &script_dir);
    let (result, message) = match failure {
        Some(message) => (JobResult::Failed, message),
        None if tolerated > 0 => (
            JobResult::Succeeded,
            format!(
                "{} of {total} steps succeeded, {tolerated} failed with continue_on_error",
                total - tolerated
            ),
        ),
        None => (JobResult::Succeeded, format!("all {total} steps succeeded")),
    };
    (result, log.mask(&message))
}

/// The environment a step adds to the agent's: variables, secrets, the
/// step's own, then ferry's (which win).
fn step_env(
    job: &AgentJob,
    spec: &ferry_proto::v1::StepSpec,
    workspace: &Path,
) -> Vec<(String, String)> {
    let sorted = |map: &std::collections::HashMap<String, String>| -> BTreeMap<String, String> {
        map.iter()
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect()
    };
    let mut env: Vec<(String, String)> = Vec::new();
    env.extend(sorted(&job.variables));
    env.extend(sorted(&job.secrets));
    env.extend(sorted(&spec.env));
    env.push(("FERRY_JOB_ID".into(), job.job_id.clone()));
    env.push(("FERRY_WORKSPACE".into(), workspace.display().to_string()));
    env.push(("FERRY_STEP_NAME".into(), spec.name.clone()));
    env.push(("CI".into(), "true".into()));
    env
}

/// Creates a fresh `work_dir/<job_id>` and `work_dir/_temp/<job_id>`.
fn prepare_workspace(work_dir: &Path, job_id: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    let safe = !job_id.is_empty()
        && job_id.len() <= 64
        && job_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-');
    if !safe {
        anyhow::bail!("the job id {job_id:?} is not usable as a directory name");
    }
    let workspace = work_dir.join(job_id);
    let script_dir = work_dir.join(SCRIPTS_DIR).join(job_id);
    for dir in [&workspace, &script_dir] {
        if dir.exists() {
            std::fs::remove_dir_all(dir)
                .map_err(|error| anyhow::anyhow!("cannot empty {}: {error}", dir.display()))?;
        }
        std::fs::create_dir_all(dir)
            .map_err(|error| anyhow::anyhow!("cannot create {}: {error}", dir.display()))?;
    }
    Ok((workspace, script_dir))
}

/// Removes the job's directories unless FERRY_KEEP_WORKSPACE=1.
fn cleanup(job_id: &str, workspace: &Path, script_dir: &Path) {
    if std::env::var(KEEP_WORKSPACE_ENV).is_ok_and(|keep| keep == "1") {
        tracing::info!(job_id = %job_id, workspace = %workspace.display(), "keeping the workspace");
        return;
    }
    for dir in [workspace, script_dir] {
        if let Err(error) = std::fs::remove_dir_all(dir) {
            tracing::warn!(job_id = %job_id, dir = %dir.display(), %error, "cannot remove the job's directory");
        }
    }
}

async fn report_step(
    jobs: &JobServiceClient<Authorized>,
    job_id: &str,
    index: usize,
    state: StepState,
    exit_code: Option<i32>,
) {
    let request = ReportStepRequest {
        job_id: job_id.to_owned(),
        index: u32::try_from(index).unwrap_or(u32::MAX),
        state: state as i32,
        exit_code,
        time: Some(ferry_proto::time::now()),
    };
    let result = with_retries("ReportStep", 3, || {
        let mut jobs = jobs.clone();
        let request = request.clone();
        async move { jobs.report_step(request).await }
    })
    .await;
    if let Err(status) = result {
        tracing::warn!(job_id = %job_id, step = index + 1, state = state.as_str_name(), error = %describe(&status), "cannot report the step");
    }
}

async fn complete(
    jobs: &JobServiceClient<Authorized>,
    job_id: &str,
    result: JobResult,
    message: &str,
) {
    let request = CompleteJobRequest {
        job_id: job_id.to_owned(),
        result: result as i32,
        message: message.to_owned(),
    };
    let outcome = with_retries("CompleteJob", 5, || {
        let mut jobs = jobs.clone();
        let request = request.clone();
        async move { jobs.complete_job(request).await }
    })
    .await;
    if let Err(status) = outcome {
        tracing::error!(job_id = %job_id, error = %describe(&status), "cannot complete the job");
    }
}

#[cfg(test)]
#[path = "job_tests.rs"]
mod tests;
