//! `agents`: registered agents; `(pool_id, name)` is unique.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "agents")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub pool_id: String,
    pub name: String,
    pub public_key: Vec<u8>,
    /// JSON object of string to string.
    pub capabilities: String,
    /// `AgentStatus::as_str`.
    pub status: String,
    pub current_job_id: Option<String>,
    pub disabled: bool,
    pub created_at: i64,
    pub last_seen_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::pool::Entity",
        from = "Column::PoolId",
        to = "super::pool::Column::Id"
    )]
    Pool,
}

impl ActiveModelBehavior for ActiveModel {}
