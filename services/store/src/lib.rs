//! ferry-store owns ferry's persistent state and the only code that touches
//! the database: the schema (sea-orm entities and sea-orm-migration
//! migrations, identical on SQLite and PostgreSQL) and every query the
//! services run against it — pools, administrators and their personal
//! access tokens (hashes only), agents, the job queue with its atomic
//! claim, step progress, and job logs as gap-free sequences of line batches.
//! Job specs are encrypted at rest with a 32-byte data key
//! (XChaCha20-Poly1305).
//!
//! Conventions: timestamps are `i64` microseconds since the Unix epoch; ids
//! are UUID strings, and job ids are UUID v7 so that ordering by id orders by
//! queue time. Capabilities and demands are string maps stored as JSON text.
//!
//! [`testing`] starts throwaway PostgreSQL clusters for tests.

mod administrators;
mod agents;
mod crypto;
mod entity;
mod error;
mod job_progress;
mod jobs;
mod logs;
mod migration;
mod pools;
mod store;
pub mod testing;
mod types;

pub use error::{Error, Result};
pub use store::Store;
pub use types::{
    Administrator, Agent, AgentStatus, Job, JobFilter, JobState, JobStep, LogBatch, NewAgent,
    NewJob, ParseStateError, Pool, StepState, demands_met,
};
