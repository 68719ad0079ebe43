//! The scenarios, grouped by area.

mod at_rest;
mod batches;
mod cancel;
mod directory;
mod jobs;
mod leases;
mod listing;
mod logs;
mod reaping;
mod resources;
mod telemetry;

pub use at_rest::spec_encrypted_at_rest;
pub use batches::{
    agent_statuses_in_batches, concurrent_writes_commit_alone, grouped_log_appends,
    job_ends_on_log_batches, job_stored_assigned, step_reports_on_log_batches,
};
pub use cancel::{cancel_jobs, timeouts, unconfirmed_cancels};
pub use directory::{administrators, agent_disabling, agents, pools, reconnect_keeps_data};
pub use jobs::{concurrent_claims, job_lifecycle};
pub use leases::{lapsed_assigned_job_requeues, lease_renewal};
pub use listing::list_jobs_pagination;
pub use logs::{concurrent_duplicate_log_appends, hand_out_holders, logs};
pub use reaping::{
    concurrent_reapers, lapsed_cancel_requested_job_cancels, lapsed_running_job_fails,
    max_attempts_exhausted,
};
pub use resources::{sources_and_artifacts, test_results};
pub use telemetry::trace_context_and_gauges;
