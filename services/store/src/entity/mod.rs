//! sea-orm entities, one per table. The schema itself is owned by the
//! migrations in `crate::migration`; these mirror it.

pub(crate) mod administrator;
pub(crate) mod agent;
pub(crate) mod artifact;
pub(crate) mod job;
pub(crate) mod job_step;
pub(crate) mod log_batch;
pub(crate) mod personal_access_token;
pub(crate) mod pool;
pub(crate) mod pool_administrator;
pub(crate) mod source;
