//! ferry-store owns ferry's persistent state and the only code that touches
//! the database: the schema (sea-orm entities and sea-orm-migration
//! migrations, identical on SQLite and PostgreSQL) and every query the
//! services run against it — pools, administrators and their personal
//! access tokens (hashes only), agents, the job queue with its atomic
//! claim, leases fenced by attempt, cancellation, the reapers that take back
//! lost, timed-out and unconfirmed jobs, step progress, job logs as gap-free
//! sequences of line batches, and the records of sources, artifacts and
//! test results.
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
mod gauges;
mod handouts;
mod hold;
mod job_progress;
mod jobs;
mod leases;
mod logs;
mod migration;
mod notify;
mod pools;
mod reapers;
mod resources;
mod store;
pub mod testing;
mod together;
mod types;
mod writer;

pub use error::{Error, Result};
pub use gauges::{CONNECTED_WITHIN_MICROS, PoolGauges};
pub use notify::{Listener, MAX_PAYLOAD};
pub use store::Store;
pub use types::{
    Administrator, Agent, AgentSeen, AgentStatus, Artifact, CancelOutcome, Holder, Job, JobEnd,
    JobFilter, JobState, JobStep, LeaseRenewal, LogBatch, LogHolder, NewAgent, NewJob, NewLogBatch,
    ParseStateError, Pool, ReapOutcome, Reaped, Source, StepReport, StepState, TestSummary,
    demands_met,
};
