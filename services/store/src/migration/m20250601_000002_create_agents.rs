//! agents.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum Pools {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Agents {
    Table,
    Id,
    PoolId,
    Name,
    PublicKey,
    Capabilities,
    Status,
    CurrentJobId,
    CreatedAt,
    LastSeenAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Agents::Table)
                    .col(text(Agents::Id).primary_key())
                    .col(text(Agents::PoolId))
                    .col(text(Agents::Name))
                    .col(blob(Agents::PublicKey))
                    .col(text(Agents::Capabilities))
                    .col(text(Agents::Status))
                    .col(text_null(Agents::CurrentJobId))
                    .col(big_integer(Agents::CreatedAt))
                    .col(big_integer(Agents::LastSeenAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_agents_pool")
                            .from(Agents::Table, Agents::PoolId)
                            .to(Pools::Table, Pools::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_agents_pool_name")
                    .table(Agents::Table)
                    .col(Agents::PoolId)
                    .col(Agents::Name)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Agents::Table).to_owned())
            .await
    }
}
