//! `personal_access_tokens`: an administrator's tokens, stored only as the
//! hex SHA-256 of the token.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "personal_access_tokens")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub administrator_id: String,
    #[sea_orm(unique)]
    pub token_hash: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::administrator::Entity",
        from = "Column::AdministratorId",
        to = "super::administrator::Column::Id",
        on_delete = "Cascade"
    )]
    Administrator,
}

impl ActiveModelBehavior for ActiveModel {}
