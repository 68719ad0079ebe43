//! artifacts.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum Jobs {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Artifacts {
    Table,
    JobId,
    Name,
    Size,
    Sha256,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // the primary key also serves "artifacts of a job by name"
        manager
            .create_table(
                Table::create()
                    .table(Artifacts::Table)
                    .col(text(Artifacts::JobId))
                    .col(text(Artifacts::Name))
                    .col(big_integer(Artifacts::Size))
                    .col(text(Artifacts::Sha256))
                    .col(big_integer(Artifacts::CreatedAt))
                    .primary_key(Index::create().col(Artifacts::JobId).col(Artifacts::Name))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_artifacts_job")
                            .from(Artifacts::Table, Artifacts::JobId)
                            .to(Jobs::Table, Jobs::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Artifacts::Table).to_owned())
            .await
    }
}
