//! The JSON shapes `--output json` prints, documented in `docs/ferryctl.md`.
//! Times are RFC 3339 UTC strings with milliseconds, or `null` when unset;
//! enums are lowercase words; maps are sorted by key.

use std::collections::{BTreeMap, HashMap};

use ferry_proto::v1::{
    Administrator, Agent, BlobInfo, Job, LogLine, Pool, StepStatus, TestSummary,
};
use serde::Serialize;

use crate::format;

fn time(timestamp: Option<&prost_types::Timestamp>) -> Option<String> {
    format::micros(timestamp).map(format::rfc3339)
}

fn sorted(map: &HashMap<String, String>) -> BTreeMap<String, String> {
    map.iter()
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_owned())
}

fn millis(micros: Option<i64>) -> Option<i64> {
    micros.map(|micros| micros / 1000)
}

/// A pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolView {
    /// Pool id.
    pub id: String,
    /// Pool name.
    pub name: String,
    /// When it was created.
    pub create_time: Option<String>,
}

impl From<&Pool> for PoolView {
    fn from(pool: &Pool) -> Self {
        Self {
            id: pool.id.clone(),
            name: pool.name.clone(),
            create_time: time(pool.create_time.as_ref()),
        }
    }
}

/// An agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentView {
    /// Agent id.
    pub id: String,
    /// Agent name.
    pub name: String,
    /// Pool name.
    pub pool: String,
    /// `offline`, `online`, `busy` or `unknown`: the connection, whether or
    /// not the agent is disabled.
    pub status: String,
    /// Whether it is disabled (gets no listener token and no job).
    pub disabled: bool,
    /// Capabilities it offers.
    pub capabilities: BTreeMap<String, String>,
    /// When it last called the server.
    pub last_seen_time: Option<String>,
    /// When it was registered.
    pub create_time: Option<String>,
    /// The job it runs, if any.
    pub current_job_id: Option<String>,
}

impl From<&Agent> for AgentView {
    fn from(agent: &Agent) -> Self {
        Self {
            id: agent.id.clone(),
            name: agent.name.clone(),
            pool: agent.pool.clone(),
            status: format::agent_status(agent.status()).to_owned(),
            disabled: agent.disabled,
            capabilities: sorted(&agent.capabilities),
            last_seen_time: time(agent.last_seen_time.as_ref()),
            create_time: time(agent.create_time.as_ref()),
            current_job_id: non_empty(&agent.current_job_id),
        }
    }
}

/// An administrator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdministratorView {
    /// Administrator id.
    pub id: String,
    /// Administrator name.
    pub name: String,
    /// Whether it is a server owner.
    pub owner: bool,
    /// Pools it administers.
    pub pools: Vec<String>,
    /// When it was created.
    pub create_time: Option<String>,
}

impl From<&Administrator> for AdministratorView {
    fn from(administrator: &Administrator) -> Self {
        Self {
            id: administrator.id.clone(),
            name: administrator.name.clone(),
            owner: administrator.owner,
            pools: administrator.pools.clone(),
            create_time: time(administrator.create_time.as_ref()),
        }
    }
}

/// `admin create`'s answer: the administrator and its PAT, shown once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CreatedAdministratorView {
    /// The new administrator.
    pub administrator: AdministratorView,
    /// Its personal access token.
    pub token: String,
}

/// The answer of a `remove` command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RemovedView {
    /// What was removed: `agent` or `administrator`.
    pub removed: &'static str,
    /// Its id.
    pub id: String,
}

/// One step of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepView {
    /// Position, from 0.
    pub index: u32,
    /// Display name.
    pub name: String,
    /// `pending`, `running`, `succeeded`, `failed`, `skipped`, `canceled`.
    pub state: String,
    /// Exit code, once it ended.
    pub exit_code: Option<i32>,
    /// When it started.
    pub start_time: Option<String>,
    /// When it ended.
    pub finish_time: Option<String>,
    /// Finish minus start, once it ended.
    pub duration_ms: Option<i64>,
}

impl From<&StepStatus> for StepView {
    fn from(step: &StepStatus) -> Self {
        let start = format::micros(step.start_time.as_ref());
        let finish = format::micros(step.finish_time.as_ref());
        Self {
            index: step.index,
            name: step.name.clone(),
            state: format::step_state(step.state()).to_owned(),
            exit_code: step.exit_code,
            start_time: time(step.start_time.as_ref()),
            finish_time: time(step.finish_time.as_ref()),
            duration_ms: millis(format::between(start, finish)),
        }
    }
}

/// A job. Secrets appear by name only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobView {
    /// Job id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Project.
    pub project: String,
    /// Pipeline.
    pub pipeline: String,
    /// Pool.
    pub pool: String,
    /// `queued`, `assigned`, `running`, `succeeded`, `failed`, `canceled`.
    pub state: String,
    /// Why the job is in its state; `null` when the server gave no reason.
    pub message: Option<String>,
    /// Capabilities an agent must offer.
    pub demands: BTreeMap<String, String>,
    /// The agent it was handed to.
    pub agent_id: Option<String>,
    /// That agent's name.
    pub agent_name: Option<String>,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// How many attempts it may take; `null` when the server does not say.
    pub max_attempts: Option<u32>,
    /// The uploaded source archive's id, if any.
    pub source_id: Option<String>,
    /// Its OpenTelemetry trace id, when the server traced it.
    pub trace_id: Option<String>,
    /// When it was queued.
    pub queue_time: Option<String>,
    /// When it was handed to an agent.
    pub assign_time: Option<String>,
    /// When its first step started.
    pub start_time: Option<String>,
    /// When it ended.
    pub finish_time: Option<String>,
    /// When a cancellation was asked for.
    pub cancel_time: Option<String>,
    /// When the agent's lease ends unless renewed (running jobs).
    pub lease_expire_time: Option<String>,
    /// Assign time minus queue time.
    pub dispatch_latency_ms: Option<i64>,
    /// Finish time minus start time.
    pub duration_ms: Option<i64>,
    /// Names of its secrets.
    pub secret_names: Vec<String>,
    /// Number of log lines stored.
    pub log_line_count: u64,
    /// The JUnit results its agent uploaded; `null` when none.
    pub test_summary: Option<TestSummaryView>,
    /// Its steps.
    pub steps: Vec<StepView>,
}

/// A job's JUnit test results, summed over its files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TestSummaryView {
    /// Test cases.
    pub total: u32,
    /// Passed.
    pub passed: u32,
    /// Failed or errored.
    pub failed: u32,
    /// Skipped.
    pub skipped: u32,
    /// Files parsed.
    pub files: u32,
    /// `suite.name` of each failed case (at most 100).
    pub failed_tests: Vec<String>,
}

impl From<&TestSummary> for TestSummaryView {
    fn from(summary: &TestSummary) -> Self {
        Self {
            total: summary.total,
            passed: summary.passed,
            failed: summary.failed,
            skipped: summary.skipped,
            files: summary.files,
            failed_tests: summary.failed_tests.clone(),
        }
    }
}

impl From<&Job> for JobView {
    fn from(job: &Job) -> Self {
        let queued = format::micros(job.queue_time.as_ref());
        let assigned = format::micros(job.assign_time.as_ref());
        let started = format::micros(job.start_time.as_ref());
        let finished = format::micros(job.finish_time.as_ref());
        let mut secret_names = job.secret_names.clone();
        secret_names.sort();
        Self {
            id: job.id.clone(),
            name: job.name.clone(),
            project: job.project.clone(),
            pipeline: job.pipeline.clone(),
            pool: job.pool.clone(),
            state: format::job_state(job.state()).to_owned(),
            message: non_empty(&job.message),
            demands: sorted(&job.demands),
            agent_id: non_empty(&job.agent_id),
            agent_name: non_empty(&job.agent_name),
            attempt: job.attempt,
            max_attempts: (job.max_attempts > 0).then_some(job.max_attempts),
            source_id: non_empty(&job.source_id),
            trace_id: non_empty(&job.trace_id),
            queue_time: time(job.queue_time.as_ref()),
            assign_time: time(job.assign_time.as_ref()),
            start_time: time(job.start_time.as_ref()),
            finish_time: time(job.finish_time.as_ref()),
            cancel_time: time(job.cancel_time.as_ref()),
            lease_expire_time: time(job.lease_expire_time.as_ref()),
            dispatch_latency_ms: millis(format::between(queued, assigned)),
            duration_ms: millis(format::between(started, finished)),
            secret_names,
            log_line_count: job.log_line_count,
            test_summary: job.test_summary.as_ref().map(TestSummaryView::from),
            steps: job.steps.iter().map(StepView::from).collect(),
        }
    }
}

/// `job cancel`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CanceledView {
    /// Job id.
    pub job_id: String,
    /// The job's state after the request: `canceled` at once for a job that
    /// had not started, else still `assigned` or `running` while its agent
    /// stops it.
    pub state: String,
}

/// An artifact (or any stored blob).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArtifactView {
    /// Its name: a `/`-separated path relative to the job's workspace.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, lowercase hex.
    pub sha256: String,
    /// When it was stored.
    pub create_time: Option<String>,
}

impl From<&BlobInfo> for ArtifactView {
    fn from(info: &BlobInfo) -> Self {
        Self {
            name: info.name.clone(),
            size: info.size,
            sha256: info.sha256.clone(),
            create_time: time(info.create_time.as_ref()),
        }
    }
}

/// `artifact list`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArtifactListView {
    /// Job id.
    pub job_id: String,
    /// The job's state: until it ends, more artifacts may come.
    pub job_state: String,
    /// The artifacts, by name.
    pub artifacts: Vec<ArtifactView>,
}

/// `artifact download`'s answer when it wrote a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DownloadedView {
    /// Job id.
    pub job_id: String,
    /// The artifact's name.
    pub name: String,
    /// The file written.
    pub path: String,
    /// Size in bytes, verified.
    pub size: u64,
    /// SHA-256, lowercase hex, verified.
    pub sha256: String,
}

/// One log line (`logs --output json` prints one per line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLineView {
    /// Position in the job's log, from 1.
    pub sequence: u64,
    /// The step's index, from 0.
    pub step_index: u32,
    /// The step's name.
    pub step: String,
    /// `stdout`, `stderr` or `system`.
    pub stream: String,
    /// When the agent read it.
    pub time: Option<String>,
    /// The text, without the line break.
    pub text: String,
}

impl LogLineView {
    /// A line, with its step's name.
    pub fn new(line: &LogLine, step: &str) -> Self {
        Self {
            sequence: line.sequence,
            step_index: line.step_index,
            step: step.to_owned(),
            stream: format::log_stream(line.stream()).to_owned(),
            time: time(line.time.as_ref()),
            text: line.text.clone(),
        }
    }
}

/// The last object `logs --follow --output json` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FinalStateView {
    /// Job id.
    pub job_id: String,
    /// `succeeded`, `failed` or `canceled`.
    pub final_state: String,
}

#[cfg(test)]
mod tests {
    use ferry_proto::time::timestamp_from_micros;
    use ferry_proto::v1::{JobState, StepState};

    use super::*;

    #[test]
    fn a_job_has_a_stable_json_shape() {
        let job = Job {
            id: "j1".into(),
            name: "build".into(),
            project: "p".into(),
            pipeline: "ci".into(),
            pool: "default".into(),
            state: JobState::Succeeded as i32,
            demands: [("os".to_owned(), "linux".to_owned())].into(),
            agent_id: "a1".into(),
            agent_name: "runner".into(),
            attempt: 1,
            steps: vec![StepStatus {
                index: 0,
                name: "greet".into(),
                state: StepState::Succeeded as i32,
                exit_code: Some(0),
                start_time: Some(timestamp_from_micros(3_000_000)),
                finish_time: Some(timestamp_from_micros(4_500_000)),
            }],
            message: String::new(),
            queue_time: Some(timestamp_from_micros(1_000_000)),
            assign_time: Some(timestamp_from_micros(1_012_000)),
            start_time: Some(timestamp_from_micros(3_000_000)),
            finish_time: Some(timestamp_from_micros(4_500_000)),
            secret_names: vec!["B".into(), "A".into()],
            log_line_count: 7,
            cancel_time: Some(timestamp_from_micros(4_000_000)),
            lease_expire_time: None,
            test_summary: Some(TestSummary {
                total: 3,
                passed: 1,
                failed: 1,
                skipped: 1,
                failed_tests: vec!["suite.broken".into()],
                files: 1,
            }),
            source_id: "src-9".into(),
            max_attempts: 3,
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        };
        let json = serde_json::to_value(JobView::from(&job)).expect("json");
        let expected = serde_json::json!({
            "id": "j1", "name": "build", "project": "p", "pipeline": "ci", "pool": "default",
            "state": "succeeded", "message": null, "demands": {"os": "linux"},
            "agent_id": "a1", "agent_name": "runner", "attempt": 1, "max_attempts": 3,
            "source_id": "src-9", "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
            "queue_time": "1970-01-01T00:00:01.000Z", "assign_time": "1970-01-01T00:00:01.012Z",
            "start_time": "1970-01-01T00:00:03.000Z", "finish_time": "1970-01-01T00:00:04.500Z",
            "cancel_time": "1970-01-01T00:00:04.000Z", "lease_expire_time": null,
            "dispatch_latency_ms": 12, "duration_ms": 1500,
            "secret_names": ["A", "B"], "log_line_count": 7,
            "test_summary": {
                "total": 3, "passed": 1, "failed": 1, "skipped": 1, "files": 1,
                "failed_tests": ["suite.broken"]
            },
            "steps": [{
                "index": 0, "name": "greet", "state": "succeeded", "exit_code": 0,
                "start_time": "1970-01-01T00:00:03.000Z", "finish_time": "1970-01-01T00:00:04.500Z",
                "duration_ms": 1500
            }]
        });
        assert_eq!(json, expected);
    }

    #[test]
    fn unset_fields_are_null() {
        let view = JobView::from(&Job::default());
        assert_eq!(view.state, "unknown");
        assert_eq!(
            (view.queue_time, view.dispatch_latency_ms, view.agent_id),
            (None, None, None)
        );
        assert_eq!(
            (view.max_attempts, view.source_id, view.test_summary),
            (None, None, None)
        );
        assert_eq!(view.trace_id, None);
        assert_eq!((view.cancel_time, view.lease_expire_time), (None, None));
        let agent = AgentView::from(&Agent::default());
        assert_eq!(
            (agent.current_job_id, agent.status.as_str(), agent.disabled),
            (None, "unknown", false)
        );
    }

    #[test]
    fn agents_artifacts_and_cancels_have_stable_json_shapes() {
        let agent = Agent {
            id: "a1".into(),
            name: "runner".into(),
            pool: "linux".into(),
            status: ferry_proto::v1::AgentStatus::Online as i32,
            disabled: true,
            ..Agent::default()
        };
        assert_eq!(
            serde_json::to_value(AgentView::from(&agent)).expect("json"),
            serde_json::json!({
                "id": "a1", "name": "runner", "pool": "linux", "status": "online",
                "disabled": true, "capabilities": {}, "last_seen_time": null,
                "create_time": null, "current_job_id": null
            })
        );
        let list = ArtifactListView {
            job_id: "j1".into(),
            job_state: "running".into(),
            artifacts: vec![ArtifactView::from(&BlobInfo {
                name: "dist/app".into(),
                size: 5,
                sha256: "ab".repeat(32),
                create_time: Some(timestamp_from_micros(2_000_000)),
            })],
        };
        assert_eq!(
            serde_json::to_value(&list).expect("json"),
            serde_json::json!({
                "job_id": "j1", "job_state": "running",
                "artifacts": [{
                    "name": "dist/app", "size": 5, "sha256": "ab".repeat(32),
                    "create_time": "1970-01-01T00:00:02.000Z"
                }]
            })
        );
        let canceled = CanceledView {
            job_id: "j1".into(),
            state: "canceled".into(),
        };
        assert_eq!(
            serde_json::to_value(&canceled).expect("json"),
            serde_json::json!({"job_id": "j1", "state": "canceled"})
        );
        let downloaded = DownloadedView {
            job_id: "j1".into(),
            name: "dist/app".into(),
            path: "app".into(),
            size: 5,
            sha256: "cd".repeat(32),
        };
        assert_eq!(
            serde_json::to_value(&downloaded).expect("json"),
            serde_json::json!({
                "job_id": "j1", "name": "dist/app", "path": "app", "size": 5,
                "sha256": "cd".repeat(32)
            })
        );
    }
}
