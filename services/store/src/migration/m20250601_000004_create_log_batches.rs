//! log_batches.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum Jobs {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum LogBatches {
    Table,
    Id,
    JobId,
    FirstSequence,
    LastSequence,
    Lines,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(LogBatches::Table)
                    .col(big_pk_auto(LogBatches::Id))
                    .col(text(LogBatches::JobId))
                    .col(big_integer(LogBatches::FirstSequence))
                    .col(big_integer(LogBatches::LastSequence))
                    .col(blob(LogBatches::Lines))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_log_batches_job")
                            .from(LogBatches::Table, LogBatches::JobId)
                            .to(Jobs::Table, Jobs::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // also serves "batches of a job in order": WHERE job_id = ? ORDER BY first_sequence
        manager
            .create_index(
                Index::create()
                    .name("idx_log_batches_job_first")
                    .table(LogBatches::Table)
                    .col(LogBatches::JobId)
                    .col(LogBatches::FirstSequence)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(LogBatches::Table).to_owned())
            .await
    }
}
