//! Store values in their wire form, shared by the services that answer
//! with them.

use ferry_proto::v1::{JobState, TestSummary};

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
