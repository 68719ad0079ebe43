//! sources.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum Pools {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Sources {
    Table,
    Id,
    PoolId,
    Name,
    Size,
    Sha256,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Sources::Table)
                    .col(text(Sources::Id).primary_key())
                    .col(text(Sources::PoolId))
                    .col(text(Sources::Name))
                    .col(big_integer(Sources::Size))
                    .col(text(Sources::Sha256))
                    .col(big_integer(Sources::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_sources_pool")
                            .from(Sources::Table, Sources::PoolId)
                            .to(Pools::Table, Pools::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_sources_pool")
                    .table(Sources::Table)
                    .col(Sources::PoolId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Sources::Table).to_owned())
            .await
    }
}
