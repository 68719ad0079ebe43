//! Pools.

use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

use crate::entity::pool;
use crate::error::{Result, insert_error};
use crate::store::{Store, new_id, now_micros};
use crate::types::Pool;

impl From<pool::Model> for Pool {
    fn from(m: pool::Model) -> Self {
        Pool {
            id: m.id,
            name: m.name,
            created_at: m.created_at,
        }
    }
}

impl Store {
    /// Creates a pool. `AlreadyExists` when the name is taken.
    pub async fn create_pool(&self, name: &str) -> Result<Pool> {
        let model = pool::Model {
            id: new_id(),
            name: name.to_owned(),
            created_at: now_micros(),
        };
        let txn = self.begin_write().await?;
        pool::Entity::insert(pool::ActiveModel {
            id: Set(model.id.clone()),
            name: Set(model.name.clone()),
            created_at: Set(model.created_at),
        })
        .exec_without_returning(&txn)
        .await
        .map_err(|e| insert_error(e, "pool", "pool"))?;
        txn.commit().await?;
        Ok(model.into())
    }

    /// The pool with this name, if any.
    pub async fn pool_by_name(&self, name: &str) -> Result<Option<Pool>> {
        Ok(pool::Entity::find()
            .filter(pool::Column::Name.eq(name))
            .all(self.db())
            .await?
            .pop()
            .map(Pool::from))
    }

    /// The pool with this id, if any.
    pub async fn pool_by_id(&self, id: &str) -> Result<Option<Pool>> {
        Ok(pool::Entity::find_by_id(id.to_owned())
            .all(self.db())
            .await?
            .pop()
            .map(Pool::from))
    }

    /// Every pool, by name.
    pub async fn list_pools(&self) -> Result<Vec<Pool>> {
        Ok(pool::Entity::find()
            .order_by_asc(pool::Column::Name)
            .all(self.db())
            .await?
            .into_iter()
            .map(Pool::from)
            .collect())
    }
}
