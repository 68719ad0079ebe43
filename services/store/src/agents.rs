//! Agents.

use std::collections::BTreeMap;

use sea_orm::sea_query::Expr;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use crate::entity::agent;
use crate::error::{Error, Result, insert_error};
use crate::store::{Store, from_json, new_id, now_micros, parse_state, to_json};
use crate::types::{Agent, AgentSeen, AgentStatus, NewAgent};

impl TryFrom<agent::Model> for Agent {
    type Error = Error;

    fn try_from(m: agent::Model) -> Result<Self> {
        Ok(Agent {
            capabilities: from_json::<BTreeMap<String, String>>(&m.capabilities, "capabilities")?,
            status: parse_state(&m.status)?,
            id: m.id,
            pool_id: m.pool_id,
            name: m.name,
            public_key: m.public_key,
            current_job_id: m.current_job_id,
            disabled: m.disabled,
            created_at: m.created_at,
            last_seen_at: m.last_seen_at,
        })
    }
}

impl Store {
    /// Registers an agent, `Offline` until it connects. When its name is
    /// taken in the pool: `AlreadyExists`, or with `replace` the old agent
    /// is deleted first (in the same transaction). `NotFound` when the pool
    /// does not exist.
    pub async fn create_agent(&self, new: NewAgent, replace: bool) -> Result<Agent> {
        Ok(self.register_agent(new, replace).await?.0)
    }

    /// [`Store::create_agent`], also returning the ids of the agents it
    /// replaced (their credentials must be revoked).
    pub async fn register_agent(
        &self,
        new: NewAgent,
        replace: bool,
    ) -> Result<(Agent, Vec<String>)> {
        let now = now_micros();
        let created = Agent {
            id: new_id(),
            pool_id: new.pool_id,
            name: new.name,
            public_key: new.public_key,
            capabilities: new.capabilities,
            status: AgentStatus::Offline,
            current_job_id: None,
            disabled: false,
            created_at: now,
            last_seen_at: now,
        };
        let capabilities = to_json(&created.capabilities, "capabilities")?;
        let txn = self.begin_write().await?;
        let mut replaced = Vec::new();
        if replace {
            replaced = agent::Entity::find()
                .select_only()
                .column(agent::Column::Id)
                .filter(agent::Column::PoolId.eq(created.pool_id.clone()))
                .filter(agent::Column::Name.eq(created.name.clone()))
                .into_tuple()
                .all(&txn)
                .await?;
            if !replaced.is_empty() {
                agent::Entity::delete_many()
                    .filter(agent::Column::Id.is_in(replaced.clone()))
                    .exec(&txn)
                    .await?;
                tracing::info!(pool_id = %created.pool_id, name = %created.name, "replacing agent");
            }
        }
        agent::Entity::insert(agent::ActiveModel {
            id: Set(created.id.clone()),
            pool_id: Set(created.pool_id.clone()),
            name: Set(created.name.clone()),
            public_key: Set(created.public_key.clone()),
            capabilities: Set(capabilities),
            status: Set(created.status.as_str().to_owned()),
            current_job_id: Set(None),
            disabled: Set(false),
            created_at: Set(now),
            last_seen_at: Set(now),
        })
        .exec_without_returning(&txn)
        .await
        .map_err(|e| insert_error(e, "agent", "pool"))?;
        txn.commit().await?;
        Ok((created, replaced))
    }

    /// The agent with this id, if any.
    pub async fn agent(&self, id: &str) -> Result<Option<Agent>> {
        agent::Entity::find_by_id(id.to_owned())
            .all(self.db())
            .await?
            .pop()
            .map(Agent::try_from)
            .transpose()
    }

    /// The agents of one pool, or of every pool; by pool, then name.
    pub async fn list_agents(&self, pool_id: Option<&str>) -> Result<Vec<Agent>> {
        let mut query = agent::Entity::find();
        if let Some(pool_id) = pool_id {
            query = query.filter(agent::Column::PoolId.eq(pool_id));
        }
        query
            .order_by_asc(agent::Column::PoolId)
            .order_by_asc(agent::Column::Name)
            .all(self.db())
            .await?
            .into_iter()
            .map(Agent::try_from)
            .collect()
    }

    /// Removes an agent. `NotFound` when there is no such agent. Its jobs
    /// keep their `agent_id` as history.
    pub async fn remove_agent(&self, id: &str) -> Result<()> {
        let txn = self.begin_write().await?;
        let deleted = agent::Entity::delete_many()
            .filter(agent::Column::Id.eq(id))
            .exec(&txn)
            .await?;
        if deleted.rows_affected == 0 {
            return Err(Error::NotFound("agent".to_owned()));
        }
        txn.commit().await?;
        Ok(())
    }

    /// Sets an agent's status and current job, and `last_seen_at = now`.
    /// `NotFound` when there is no such agent.
    pub async fn set_agent_status(
        &self,
        id: &str,
        status: AgentStatus,
        current_job_id: Option<&str>,
        now: i64,
    ) -> Result<()> {
        let txn = self.begin_write().await?;
        let updated = agent::Entity::update_many()
            .col_expr(agent::Column::Status, Expr::value(status.as_str()))
            .col_expr(
                agent::Column::CurrentJobId,
                Expr::value(current_job_id.map(str::to_owned)),
            )
            .col_expr(agent::Column::LastSeenAt, Expr::value(now))
            .filter(agent::Column::Id.eq(id))
            .exec(&txn)
            .await?;
        if updated.rows_affected == 0 {
            return Err(Error::NotFound("agent".to_owned()));
        }
        txn.commit().await?;
        Ok(())
    }

    /// Records many agents' statuses, current jobs and `last_seen_at` in
    /// one transaction (the dispatcher batches them). Agents that no longer
    /// exist, or were seen later than `at` (by another replica), are
    /// skipped.
    pub async fn record_agent_statuses(&self, seen: &[AgentSeen]) -> Result<()> {
        if seen.is_empty() {
            return Ok(());
        }
        // Rows are locked in one order, by id, whoever writes: two replicas'
        // batches on PostgreSQL then never wait on each other (a deadlock).
        let mut ordered: Vec<&AgentSeen> = seen.iter().collect();
        ordered.sort_unstable_by(|one, other| one.id.cmp(&other.id));
        let txn = self.begin_write().await?;
        for agent in ordered {
            agent::Entity::update_many()
                .col_expr(agent::Column::Status, Expr::value(agent.status.as_str()))
                .col_expr(
                    agent::Column::CurrentJobId,
                    Expr::value(agent.current_job_id.clone()),
                )
                .col_expr(agent::Column::LastSeenAt, Expr::value(agent.at))
                .filter(agent::Column::Id.eq(agent.id.as_str()))
                // another replica may have recorded a later sighting
                .filter(agent::Column::LastSeenAt.lte(agent.at))
                .exec(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// Disables or enables an agent and returns it. A disabled agent gets
    /// no listener token and no job (the services enforce that). `NotFound`
    /// when there is no such agent.
    pub async fn set_agent_disabled(&self, id: &str, disabled: bool) -> Result<Agent> {
        let txn = self.begin_write().await?;
        let updated = agent::Entity::update_many()
            .col_expr(agent::Column::Disabled, Expr::value(disabled))
            .filter(agent::Column::Id.eq(id))
            .exec(&txn)
            .await?;
        if updated.rows_affected == 0 {
            return Err(Error::NotFound("agent".to_owned()));
        }
        txn.commit().await?;
        self.agent(id)
            .await?
            .ok_or_else(|| Error::NotFound("agent".to_owned()))
    }
}
