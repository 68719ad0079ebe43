//! `jobs`: one row per job. `spec` is `nonce || ciphertext` and is only
//! read by `Store::job_spec`; everything else reads [`JobRow`].

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "jobs")]
pub struct Model {
    /// UUID v7, so ordering by id is ordering by queue time.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub pool_id: String,
    pub name: String,
    pub project: String,
    pub pipeline: String,
    /// `JobState::as_str`.
    pub state: String,
    /// JSON object of string to string.
    pub demands: String,
    /// JSON array of strings.
    pub secret_names: String,
    pub spec: Vec<u8>,
    pub attempt: i32,
    /// No foreign key: a job's history outlives the agent that ran it.
    pub agent_id: Option<String>,
    pub message: String,
    pub timeout_seconds: i64,
    pub queued_at: i64,
    pub assigned_at: Option<i64>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub log_sequence: i64,
    pub lease_expires_at: Option<i64>,
    pub cancel_requested_at: Option<i64>,
    pub max_attempts: i32,
    /// No foreign key: the source's record may be collected before the job's.
    pub source_id: Option<String>,
    /// JSON `TestSummary`.
    pub test_summary: Option<String>,
    /// W3C `traceparent` of the span that queued the job.
    pub trace_context: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::pool::Entity",
        from = "Column::PoolId",
        to = "super::pool::Column::Id"
    )]
    Pool,
}

impl ActiveModelBehavior for ActiveModel {}

/// Every column but `spec`.
#[derive(Clone, Debug, PartialEq, Eq, DerivePartialModel)]
#[sea_orm(entity = "Entity")]
pub struct JobRow {
    pub id: String,
    pub pool_id: String,
    pub name: String,
    pub project: String,
    pub pipeline: String,
    pub state: String,
    pub demands: String,
    pub secret_names: String,
    pub attempt: i32,
    pub agent_id: Option<String>,
    pub message: String,
    pub timeout_seconds: i64,
    pub queued_at: i64,
    pub assigned_at: Option<i64>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub log_sequence: i64,
    pub lease_expires_at: Option<i64>,
    pub cancel_requested_at: Option<i64>,
    pub max_attempts: i32,
    /// No foreign key: the source's record may be collected before the job's.
    pub source_id: Option<String>,
    /// JSON `TestSummary`.
    pub test_summary: Option<String>,
    /// W3C `traceparent` of the span that queued the job.
    pub trace_context: Option<String>,
}
