//! jobs and job_steps.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum Pools {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Jobs {
    Table,
    Id,
    PoolId,
    Name,
    Project,
    Pipeline,
    State,
    Demands,
    SecretNames,
    Spec,
    Attempt,
    AgentId,
    Message,
    TimeoutSeconds,
    QueuedAt,
    AssignedAt,
    StartedAt,
    FinishedAt,
    LogSequence,
}

#[derive(DeriveIden)]
enum JobSteps {
    Table,
    JobId,
    Idx,
    Name,
    State,
    ExitCode,
    StartedAt,
    FinishedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Jobs::Table)
                    .col(text(Jobs::Id).primary_key())
                    .col(text(Jobs::PoolId))
                    .col(text(Jobs::Name))
                    .col(text(Jobs::Project))
                    .col(text(Jobs::Pipeline))
                    .col(text(Jobs::State))
                    .col(text(Jobs::Demands))
                    .col(text(Jobs::SecretNames))
                    .col(blob(Jobs::Spec))
                    .col(integer(Jobs::Attempt))
                    // no foreign key: a job's history outlives its agent
                    .col(text_null(Jobs::AgentId))
                    .col(text(Jobs::Message))
                    .col(big_integer(Jobs::TimeoutSeconds))
                    .col(big_integer(Jobs::QueuedAt))
                    .col(big_integer_null(Jobs::AssignedAt))
                    .col(big_integer_null(Jobs::StartedAt))
                    .col(big_integer_null(Jobs::FinishedAt))
                    .col(big_integer(Jobs::LogSequence).default(0))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_jobs_pool")
                            .from(Jobs::Table, Jobs::PoolId)
                            .to(Pools::Table, Pools::Id),
                    )
                    .to_owned(),
            )
            .await?;
        // the dispatcher's queue scan: WHERE pool_id = ? AND state = 'queued' ORDER BY id
        manager
            .create_index(
                Index::create()
                    .name("idx_jobs_pool_state_id")
                    .table(Jobs::Table)
                    .col(Jobs::PoolId)
                    .col(Jobs::State)
                    .col(Jobs::Id)
                    .to_owned(),
            )
            .await?;
        // listings and reapers across pools: WHERE state = ? ORDER BY id
        manager
            .create_index(
                Index::create()
                    .name("idx_jobs_state_id")
                    .table(Jobs::Table)
                    .col(Jobs::State)
                    .col(Jobs::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(JobSteps::Table)
                    .col(text(JobSteps::JobId))
                    .col(integer(JobSteps::Idx))
                    .col(text(JobSteps::Name))
                    .col(text(JobSteps::State))
                    .col(integer_null(JobSteps::ExitCode))
                    .col(big_integer_null(JobSteps::StartedAt))
                    .col(big_integer_null(JobSteps::FinishedAt))
                    .primary_key(Index::create().col(JobSteps::JobId).col(JobSteps::Idx))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_job_steps_job")
                            .from(JobSteps::Table, JobSteps::JobId)
                            .to(Jobs::Table, Jobs::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(JobSteps::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Jobs::Table).to_owned())
            .await
    }
}
