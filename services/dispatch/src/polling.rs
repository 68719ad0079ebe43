//! The agents that poll, as dispatch needs them: id, pool, public key and
//! capabilities, checked (not removed, not disabled, same pool) and cached.
//!
//! A poll normally costs no store read: the agent is read on its first
//! poll and kept for `CACHE_FOR`. Removing or disabling an agent raises
//! `Event::AgentRevoked`, which drops it at once (a lost event: `Resync`
//! drops all). Reads after a start-up or reconnect storm are limited to
//! `CONCURRENT_READS` at a time, so thousands of first polls wait as small
//! futures instead of each holding a store query's buffers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ferry_auth::AgentIdentity;
use ferry_envelope::PublicKey;
use ferry_service::memo::Memo;
use ferry_service::{Error, Result};
use ferry_store::Store;
use tokio::sync::Semaphore;

/// How long a checked agent is trusted without reading it again.
const CACHE_FOR: Duration = Duration::from_secs(30);
/// Agents kept; the cache starts over when full.
const CACHE_CAPACITY: usize = 100_000;
/// Store reads of polling agents at once (the SQLite pool holds 8).
const CONCURRENT_READS: usize = 8;

/// The agent as dispatch needs it.
pub(crate) struct PollingAgent {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) pool_id: String,
    pub(crate) public_key: PublicKey,
    pub(crate) capabilities: Arc<BTreeMap<String, String>>,
}

/// The cache of checked agents.
pub(crate) struct PollingAgents {
    cached: Memo<Arc<PollingAgent>>,
    reads: Semaphore,
}

impl Default for PollingAgents {
    fn default() -> Self {
        Self {
            cached: Memo::new(CACHE_FOR, CACHE_CAPACITY),
            reads: Semaphore::new(CONCURRENT_READS),
        }
    }
}

impl PollingAgents {
    /// The caller's agent, if it may poll: `Unauthenticated` when it was
    /// removed, disabled or moved to another pool.
    pub(crate) async fn get(
        &self,
        store: &Store,
        caller: &AgentIdentity,
    ) -> Result<Arc<PollingAgent>> {
        if let Some(agent) = self.cached.get(&caller.agent_id)
            && agent.pool_id == caller.pool_id
        {
            return Ok(agent);
        }
        let _permit = self
            .reads
            .acquire()
            .await
            .map_err(|_| Error::Internal("agent reads are closed".to_owned()))?;
        let ticket = self.cached.ticket();
        let agent = store
            .agent(&caller.agent_id)
            .await?
            .ok_or_else(|| Error::Unauthenticated("this agent was removed".to_owned()))?;
        if agent.pool_id != caller.pool_id {
            return Err(Error::Unauthenticated(
                "this agent moved to another pool".to_owned(),
            ));
        }
        if agent.disabled {
            return Err(Error::Unauthenticated("this agent is disabled".to_owned()));
        }
        let agent = Arc::new(PollingAgent {
            public_key: PublicKey::from_slice(&agent.public_key)?,
            capabilities: Arc::new(agent.capabilities),
            pool_id: agent.pool_id,
            id: agent.id,
            name: agent.name,
        });
        self.cached
            .insert(ticket, caller.agent_id.clone(), agent.clone());
        Ok(agent)
    }

    /// The name of an agent that polled lately, without a store read.
    pub(crate) fn name(&self, agent_id: &str) -> Option<String> {
        self.cached.get(agent_id).map(|agent| agent.name.clone())
    }

    /// Drops an agent that was removed or disabled.
    pub(crate) fn forget(&self, agent_id: &str) {
        self.cached.forget(agent_id);
    }

    /// Drops every agent (events may have been lost).
    pub(crate) fn forget_all(&self) {
        self.cached.forget_all();
    }
}
