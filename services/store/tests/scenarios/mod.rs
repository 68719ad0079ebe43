//! The scenarios, grouped by area.

mod at_rest;
mod directory;
mod jobs;
mod listing;
mod logs;

pub use at_rest::spec_encrypted_at_rest;
pub use directory::{administrators, agents, pools, reconnect_keeps_data};
pub use jobs::{concurrent_claims, job_lifecycle};
pub use listing::list_jobs_pagination;
pub use logs::{concurrent_duplicate_log_appends, logs};
