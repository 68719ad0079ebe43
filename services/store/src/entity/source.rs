//! `sources`: records of source archives uploaded for a pool's jobs (the
//! bytes live in a blob store).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "sources")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub pool_id: String,
    pub name: String,
    pub size: i64,
    /// Lowercase hex.
    pub sha256: String,
    pub created_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::pool::Entity",
        from = "Column::PoolId",
        to = "super::pool::Column::Id",
        on_delete = "Cascade"
    )]
    Pool,
}

impl ActiveModelBehavior for ActiveModel {}
