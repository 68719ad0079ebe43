//! Schema migrations (sea-orm-migration), applied by `Store::connect`.
//!
//! Each migration is written against sea-query's schema builder only, so
//! the same code produces the same schema on SQLite and PostgreSQL. Never
//! edit a migration that has shipped; add a new one.

use sea_orm_migration::prelude::*;

mod m20250601_000001_create_pools_and_administrators;
mod m20250601_000002_create_agents;
mod m20250601_000003_create_jobs;
mod m20250601_000004_create_log_batches;
mod m20250601_000005_add_job_leases;
mod m20250601_000006_add_agent_disabled;
mod m20250601_000007_create_sources;
mod m20250601_000008_create_artifacts;
mod m20250601_000009_add_job_trace_context;
#[cfg(test)]
mod upgrade_tests;

/// All of ferry's migrations, oldest first.
pub(crate) struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20250601_000001_create_pools_and_administrators::Migration),
            Box::new(m20250601_000002_create_agents::Migration),
            Box::new(m20250601_000003_create_jobs::Migration),
            Box::new(m20250601_000004_create_log_batches::Migration),
            Box::new(m20250601_000005_add_job_leases::Migration),
            Box::new(m20250601_000006_add_agent_disabled::Migration),
            Box::new(m20250601_000007_create_sources::Migration),
            Box::new(m20250601_000008_create_artifacts::Migration),
            Box::new(m20250601_000009_add_job_trace_context::Migration),
        ]
    }
}
