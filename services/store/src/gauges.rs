//! What the fleet looks like now, per pool: the numbers behind ferry's
//! gauges (queue depth, oldest queued job, jobs in flight, connected
//! agents). Two grouped queries; the services call it every few seconds
//! only while metrics are exported.

use std::collections::BTreeMap;

use sea_orm::sea_query::{Expr, ExprTrait as _, Func};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};

use crate::entity::{agent, job, pool};
use crate::error::Result;
use crate::store::Store;
use crate::types::{AgentStatus, JobState};

/// An agent whose status was written this recently (it polls at least
/// every 50 s and dispatch writes its status at least once a minute) is
/// counted as connected; a busy agent is, whatever its last poll.
pub const CONNECTED_WITHIN_MICROS: i64 = 150 * 1_000_000;

/// One pool's gauges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolGauges {
    /// The pool's name.
    pub pool: String,
    /// Jobs waiting for an agent.
    pub queued: u64,
    /// Jobs handed to an agent and not finished (assigned or running).
    pub active: u64,
    /// When the oldest queued job was queued (µs), if one waits.
    pub oldest_queued_at: Option<i64>,
    /// Agents online or busy (see [`CONNECTED_WITHIN_MICROS`]).
    pub connected_agents: u64,
}

impl Store {
    /// Every pool's gauges at `now` (µs), by pool id.
    pub async fn pool_gauges(&self, now: i64) -> Result<BTreeMap<String, PoolGauges>> {
        let mut gauges: BTreeMap<String, PoolGauges> = pool::Entity::find()
            .select_only()
            .column(pool::Column::Id)
            .column(pool::Column::Name)
            .into_tuple::<(String, String)>()
            .all(self.db())
            .await?
            .into_iter()
            .map(|(id, name)| {
                (
                    id,
                    PoolGauges {
                        pool: name,
                        ..PoolGauges::default()
                    },
                )
            })
            .collect();
        let jobs: Vec<(String, String, i64, Option<i64>)> = job::Entity::find()
            .select_only()
            .column(job::Column::PoolId)
            .column(job::Column::State)
            .column_as(Expr::from(Func::count(Expr::col(job::Column::Id))), "count")
            .column_as(
                Expr::from(Func::min(Expr::col(job::Column::QueuedAt))),
                "oldest",
            )
            .filter(job::Column::State.is_in([
                JobState::Queued.as_str(),
                JobState::Assigned.as_str(),
                JobState::Running.as_str(),
            ]))
            .group_by(job::Column::PoolId)
            .group_by(job::Column::State)
            .into_tuple()
            .all(self.db())
            .await?;
        for (pool_id, state, count, oldest) in jobs {
            let Some(entry) = gauges.get_mut(&pool_id) else {
                continue;
            };
            let count = u64::try_from(count).unwrap_or(0);
            if state == JobState::Queued.as_str() {
                entry.queued += count;
                entry.oldest_queued_at = oldest;
            } else {
                entry.active += count;
            }
        }
        let recent = now.saturating_sub(CONNECTED_WITHIN_MICROS);
        let agents: Vec<(String, i64)> = agent::Entity::find()
            .select_only()
            .column(agent::Column::PoolId)
            .column_as(
                Expr::from(Func::count(Expr::col(agent::Column::Id))),
                "count",
            )
            .filter(agent::Column::Disabled.eq(false))
            .filter(
                agent::Column::Status
                    .eq(AgentStatus::Busy.as_str())
                    .or(agent::Column::Status
                        .eq(AgentStatus::Online.as_str())
                        .and(agent::Column::LastSeenAt.gte(recent))),
            )
            .group_by(agent::Column::PoolId)
            .into_tuple()
            .all(self.db())
            .await?;
        for (pool_id, count) in agents {
            if let Some(entry) = gauges.get_mut(&pool_id) {
                entry.connected_agents = u64::try_from(count).unwrap_or(0);
            }
        }
        Ok(gauges)
    }
}
