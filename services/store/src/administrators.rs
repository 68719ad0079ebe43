//! Administrators, their pools, and their personal access tokens.
//!
//! Only the SHA-256 of a token (hex) is stored; callers hash before they
//! call.

use std::collections::{BTreeMap, BTreeSet};

use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder,
};

use crate::entity::{administrator, personal_access_token as token, pool, pool_administrator};
use crate::error::{Error, Result, insert_error};
use crate::store::{Store, new_id, now_micros};
use crate::types::Administrator;

/// `last_used_at` is refreshed at most this often (microseconds), so
/// authenticating is not a write on every request.
const TOKEN_TOUCH_INTERVAL: i64 = 60_000_000;

impl Store {
    /// Creates an administrator who may manage `pool_ids` (owners manage
    /// everything), with one personal access token whose hash is
    /// `token_hash`. `AlreadyExists` when the name or the token is taken;
    /// `NotFound` when a pool does not exist.
    pub async fn create_administrator(
        &self,
        name: &str,
        owner: bool,
        pool_ids: &[String],
        token_hash: &str,
    ) -> Result<Administrator> {
        let id = new_id();
        let now = now_micros();
        let pool_ids: Vec<String> = pool_ids
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let txn = self.begin_write().await?;
        administrator::Entity::insert(administrator::ActiveModel {
            id: Set(id.clone()),
            name: Set(name.to_owned()),
            owner: Set(owner),
            created_at: Set(now),
        })
        .exec_without_returning(&txn)
        .await
        .map_err(|e| insert_error(e, "administrator", "administrator"))?;
        if !pool_ids.is_empty() {
            pool_administrator::Entity::insert_many(pool_ids.iter().map(|pool_id| {
                pool_administrator::ActiveModel {
                    pool_id: Set(pool_id.clone()),
                    administrator_id: Set(id.clone()),
                }
            }))
            .exec_without_returning(&txn)
            .await
            .map_err(|e| insert_error(e, "pool administrator", "pool"))?;
        }
        token::Entity::insert(token::ActiveModel {
            id: Set(new_id()),
            administrator_id: Set(id.clone()),
            token_hash: Set(token_hash.to_owned()),
            created_at: Set(now),
            last_used_at: Set(None),
        })
        .exec_without_returning(&txn)
        .await
        .map_err(|e| insert_error(e, "personal access token", "administrator"))?;
        txn.commit().await?;
        Ok(Administrator {
            id,
            name: name.to_owned(),
            owner,
            pool_ids,
            created_at: now,
        })
    }

    /// The administrator holding the token with this hash, if any. Also
    /// records the token's use (`last_used_at`, refreshed at most once a
    /// minute; a failure to record it is logged, not returned).
    pub async fn administrator_by_token_hash(
        &self,
        token_hash: &str,
    ) -> Result<Option<Administrator>> {
        let Some(found) = token::Entity::find()
            .filter(token::Column::TokenHash.eq(token_hash))
            .all(self.db())
            .await?
            .pop()
        else {
            return Ok(None);
        };
        let Some(admin) = administrator::Entity::find_by_id(found.administrator_id.clone())
            .all(self.db())
            .await?
            .pop()
        else {
            return Ok(None);
        };
        let now = now_micros();
        if found
            .last_used_at
            .is_none_or(|last| now.saturating_sub(last) >= TOKEN_TOUCH_INTERVAL)
            && let Err(err) = self.touch_token(&found.id, now).await
        {
            tracing::warn!(error = %err, "could not record personal access token use");
        }
        let pool_ids = pool_ids_of(self.db(), &admin.id).await?;
        Ok(Some(to_administrator(admin, pool_ids)))
    }

    /// Every administrator, by name.
    pub async fn list_administrators(&self) -> Result<Vec<Administrator>> {
        let admins = administrator::Entity::find()
            .order_by_asc(administrator::Column::Name)
            .all(self.db())
            .await?;
        let mut links: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for link in pool_administrator::Entity::find()
            .order_by_asc(pool_administrator::Column::PoolId)
            .all(self.db())
            .await?
        {
            links
                .entry(link.administrator_id)
                .or_default()
                .push(link.pool_id);
        }
        Ok(admins
            .into_iter()
            .map(|admin| {
                let pool_ids = links.remove(&admin.id).unwrap_or_default();
                to_administrator(admin, pool_ids)
            })
            .collect())
    }

    /// Removes an administrator with their tokens and pool links.
    /// `NotFound` when there is no such administrator.
    pub async fn remove_administrator(&self, id: &str) -> Result<()> {
        let txn = self.begin_write().await?;
        // the foreign keys cascade too; deleting explicitly does not depend on it
        token::Entity::delete_many()
            .filter(token::Column::AdministratorId.eq(id))
            .exec(&txn)
            .await?;
        pool_administrator::Entity::delete_many()
            .filter(pool_administrator::Column::AdministratorId.eq(id))
            .exec(&txn)
            .await?;
        let deleted = administrator::Entity::delete_many()
            .filter(administrator::Column::Id.eq(id))
            .exec(&txn)
            .await?;
        if deleted.rows_affected == 0 {
            return Err(Error::NotFound("administrator".to_owned()));
        }
        txn.commit().await?;
        Ok(())
    }

    /// How many administrators exist (0 means ferry is not bootstrapped).
    pub async fn count_administrators(&self) -> Result<u64> {
        Ok(administrator::Entity::find().count(self.db()).await?)
    }

    /// Lets an administrator manage a pool. Idempotent; `NotFound` when the
    /// pool or the administrator does not exist.
    pub async fn add_pool_administrator(
        &self,
        pool_id: &str,
        administrator_id: &str,
    ) -> Result<()> {
        if pool::Entity::find_by_id(pool_id.to_owned())
            .all(self.db())
            .await?
            .pop()
            .is_none()
        {
            return Err(Error::NotFound("pool".to_owned()));
        }
        let txn = self.begin_write().await?;
        pool_administrator::Entity::insert(pool_administrator::ActiveModel {
            pool_id: Set(pool_id.to_owned()),
            administrator_id: Set(administrator_id.to_owned()),
        })
        .on_conflict(
            OnConflict::columns([
                pool_administrator::Column::PoolId,
                pool_administrator::Column::AdministratorId,
            ])
            .do_nothing()
            .to_owned(),
        )
        .exec_without_returning(&txn)
        .await
        .map_err(|e| insert_error(e, "pool administrator", "administrator"))?;
        txn.commit().await?;
        Ok(())
    }

    /// Records that a personal access token was used `now`.
    async fn touch_token(&self, id: &str, now: i64) -> Result<()> {
        let txn = self.begin_write().await?;
        token::Entity::update_many()
            .col_expr(token::Column::LastUsedAt, Expr::value(now))
            .filter(token::Column::Id.eq(id))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(())
    }
}

async fn pool_ids_of(db: &impl ConnectionTrait, administrator_id: &str) -> Result<Vec<String>> {
    Ok(pool_administrator::Entity::find()
        .filter(pool_administrator::Column::AdministratorId.eq(administrator_id))
        .order_by_asc(pool_administrator::Column::PoolId)
        .all(db)
        .await?
        .into_iter()
        .map(|link| link.pool_id)
        .collect())
}

fn to_administrator(admin: administrator::Model, pool_ids: Vec<String>) -> Administrator {
    Administrator {
        id: admin.id,
        name: admin.name,
        owner: admin.owner,
        pool_ids,
        created_at: admin.created_at,
    }
}
