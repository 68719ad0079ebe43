//! jobs: leases, cancellation, attempts, source and test summary.
//!
//! SQLite's `ALTER TABLE` adds one column per statement, and only with a
//! constant default, so each column is its own statement.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum Jobs {
    Table,
    State,
    LeaseExpiresAt,
    CancelRequestedAt,
    MaxAttempts,
    SourceId,
    TestSummary,
}

const INDEX: &str = "idx_jobs_state_lease";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            big_integer_null(Jobs::LeaseExpiresAt),
            big_integer_null(Jobs::CancelRequestedAt),
            integer(Jobs::MaxAttempts).default(3).to_owned(),
            // no foreign key: the source's record may go before the job's
            text_null(Jobs::SourceId),
            // JSON TestSummary
            text_null(Jobs::TestSummary),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Jobs::Table)
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        // the lease reaper: WHERE state IN ('assigned', 'running') AND lease_expires_at < ?
        manager
            .create_index(
                Index::create()
                    .name(INDEX)
                    .table(Jobs::Table)
                    .col(Jobs::State)
                    .col(Jobs::LeaseExpiresAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(Index::drop().name(INDEX).table(Jobs::Table).to_owned())
            .await?;
        for column in [
            Jobs::TestSummary,
            Jobs::SourceId,
            Jobs::MaxAttempts,
            Jobs::CancelRequestedAt,
            Jobs::LeaseExpiresAt,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Jobs::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
