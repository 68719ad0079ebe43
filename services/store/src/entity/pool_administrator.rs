//! `pool_administrators`: which administrator may manage which pool.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "pool_administrators")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub pool_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub administrator_id: String,
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
    #[sea_orm(
        belongs_to = "super::administrator::Entity",
        from = "Column::AdministratorId",
        to = "super::administrator::Column::Id",
        on_delete = "Cascade"
    )]
    Administrator,
}

impl ActiveModelBehavior for ActiveModel {}
