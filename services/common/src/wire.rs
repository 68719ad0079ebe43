//! Store values in their wire form, shared by the services that answer
//! with them.

use ferry_proto::time::micros_from_timestamp;
use ferry_proto::v1::{JobResult, JobState, StepState, TestSummary};

use crate::{Error, Result};

/// The wire form of a job state.
pub fn job_state(state: ferry_store::JobState) -> JobState {
    match state {
        ferry_store::JobState::Queued => JobState::Queued,
        ferry_store::JobState::Assigned => JobState::Assigned,
        ferry_store::JobState::Running => JobState::Running,
        ferry_store::JobState::Succeeded => JobState::Succeeded,
        ferry_store::JobState::Failed => JobState::Failed,
        ferry_store::JobState::Canceled => JobState::Canceled,
    }
}

/// The store form of a (specified) wire job state.
pub fn store_job_state(state: JobState) -> ferry_store::JobState {
    match state {
        JobState::Queued | JobState::Unspecified => ferry_store::JobState::Queued,
        JobState::Assigned => ferry_store::JobState::Assigned,
        JobState::Running => ferry_store::JobState::Running,
        JobState::Succeeded => ferry_store::JobState::Succeeded,
        JobState::Failed => ferry_store::JobState::Failed,
        JobState::Canceled => ferry_store::JobState::Canceled,
    }
}

/// Longest message an agent may give a job it completes, in bytes.
pub const MAX_END_MESSAGE: usize = 4096;

/// How a job ended, from the agent holding it (`CompleteJob`, or the log
/// stream's `JobEnd`), checked: the result must be succeeded, failed or
/// canceled, the message at most [`MAX_END_MESSAGE`] bytes. It ended `now`.
pub fn job_end(result: i32, message: &str, now: i64) -> Result<ferry_store::JobEnd> {
    let state = match JobResult::try_from(result).unwrap_or_default() {
        JobResult::Succeeded => ferry_store::JobState::Succeeded,
        JobResult::Failed => ferry_store::JobState::Failed,
        JobResult::Canceled => ferry_store::JobState::Canceled,
        JobResult::Unspecified => {
            return Err(Error::InvalidArgument(
                "result must be succeeded, failed or canceled".to_owned(),
            ));
        }
    };
    if message.len() > MAX_END_MESSAGE {
        // The agent's own report, not a payload: a request to fix, not to
        // retry.
        return Err(Error::InvalidArgument(format!(
            "message is {} bytes, the limit is {MAX_END_MESSAGE}",
            message.len()
        )));
    }
    Ok(ferry_store::JobEnd {
        state,
        message: message.to_owned(),
        at: now,
    })
}

/// The wire form of a test-results summary.
pub fn test_summary(summary: ferry_store::TestSummary) -> TestSummary {
    TestSummary {
        total: summary.total,
        passed: summary.passed,
        failed: summary.failed,
        skipped: summary.skipped,
        failed_tests: summary.failed_tests,
        files: summary.files,
    }
}

/// A step report from the agent holding a job (`ReportStep`, or a log
/// line's `step_update`), checked: the state must be one a step can move to,
/// and a step that succeeded needs its exit code (one that failed may have
/// none: it could not start). It happened at
/// `time` by the agent's clock, or `now` when unset or later.
pub fn step_report(
    index: u32,
    state: i32,
    exit_code: Option<i32>,
    time: Option<&prost_types::Timestamp>,
    now: i64,
) -> Result<ferry_store::StepReport> {
    let state = match StepState::try_from(state).unwrap_or_default() {
        StepState::Running => ferry_store::StepState::Running,
        StepState::Succeeded => ferry_store::StepState::Succeeded,
        StepState::Failed => ferry_store::StepState::Failed,
        StepState::Skipped => ferry_store::StepState::Skipped,
        StepState::Canceled => ferry_store::StepState::Canceled,
        StepState::Pending | StepState::Unspecified => {
            return Err(Error::InvalidArgument(
                "a step's state must be running, succeeded, failed, skipped or canceled".to_owned(),
            ));
        }
    };
    if exit_code.is_none() && state == ferry_store::StepState::Succeeded {
        return Err(Error::InvalidArgument(
            "a step that succeeded needs its exit_code".to_owned(),
        ));
    }
    let at = time.map_or(now, |time| micros_from_timestamp(time).min(now));
    Ok(ferry_store::StepReport {
        index,
        state,
        exit_code,
        at,
    })
}
