//! pools, administrators, pool_administrators, personal_access_tokens.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum Pools {
    Table,
    Id,
    Name,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Administrators {
    Table,
    Id,
    Name,
    Owner,
    CreatedAt,
}

#[derive(DeriveIden)]
enum PoolAdministrators {
    Table,
    PoolId,
    AdministratorId,
}

#[derive(DeriveIden)]
enum PersonalAccessTokens {
    Table,
    Id,
    AdministratorId,
    TokenHash,
    CreatedAt,
    LastUsedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Pools::Table)
                    .col(text(Pools::Id).primary_key())
                    .col(text_uniq(Pools::Name))
                    .col(big_integer(Pools::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Administrators::Table)
                    .col(text(Administrators::Id).primary_key())
                    .col(text_uniq(Administrators::Name))
                    .col(boolean(Administrators::Owner))
                    .col(big_integer(Administrators::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(PoolAdministrators::Table)
                    .col(text(PoolAdministrators::PoolId))
                    .col(text(PoolAdministrators::AdministratorId))
                    .primary_key(
                        Index::create()
                            .col(PoolAdministrators::PoolId)
                            .col(PoolAdministrators::AdministratorId),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_pool_administrators_pool")
                            .from(PoolAdministrators::Table, PoolAdministrators::PoolId)
                            .to(Pools::Table, Pools::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_pool_administrators_administrator")
                            .from(
                                PoolAdministrators::Table,
                                PoolAdministrators::AdministratorId,
                            )
                            .to(Administrators::Table, Administrators::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_pool_administrators_administrator")
                    .table(PoolAdministrators::Table)
                    .col(PoolAdministrators::AdministratorId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(PersonalAccessTokens::Table)
                    .col(text(PersonalAccessTokens::Id).primary_key())
                    .col(text(PersonalAccessTokens::AdministratorId))
                    .col(text_uniq(PersonalAccessTokens::TokenHash))
                    .col(big_integer(PersonalAccessTokens::CreatedAt))
                    .col(big_integer_null(PersonalAccessTokens::LastUsedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_personal_access_tokens_administrator")
                            .from(
                                PersonalAccessTokens::Table,
                                PersonalAccessTokens::AdministratorId,
                            )
                            .to(Administrators::Table, Administrators::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_personal_access_tokens_administrator")
                    .table(PersonalAccessTokens::Table)
                    .col(PersonalAccessTokens::AdministratorId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            PersonalAccessTokens::Table.into_iden(),
            PoolAdministrators::Table.into_iden(),
            Administrators::Table.into_iden(),
            Pools::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
