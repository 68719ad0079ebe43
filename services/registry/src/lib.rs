//! RegistrationService: pools, their administrators, and agent registration.
//!
//! [`Registry`] is the domain: it takes the authenticated caller and a
//! request and returns a response or a [`ferry_service::Error`]. [`grpc`]
//! is the thin tonic adapter around it.

pub mod grpc;

use std::collections::BTreeMap;

use ferry_auth::{AdministratorIdentity, AgentIdentity};
use ferry_envelope::{PublicKey, Sealer};
use ferry_proto::time::{now_micros, timestamp_from_micros};
use ferry_proto::v1::{
    Administrator, Agent, AgentStatus, CreateAdministratorRequest, CreateAdministratorResponse,
    CreatePoolRequest, CreatePoolResponse, ListAdministratorsResponse, ListAgentsRequest,
    ListAgentsResponse, ListPoolsResponse, Pool, RegisterRequest, RegisterResponse,
    UpdateAgentRequest, UpdateAgentResponse,
};
use ferry_service::{Error, Event, Events, Result, validate};
use ferry_store::Store;

/// An agent not seen for this long is shown offline (a long poll lasts at
/// most two minutes, and the dispatcher refreshes last-seen on each).
pub const OFFLINE_AFTER_MICROS: i64 = 3 * 60 * 1_000_000;

/// Most capabilities an agent may declare.
pub const MAX_CAPABILITIES: usize = 64;

/// The registry's domain.
#[derive(Debug, Clone)]
pub struct Registry {
    store: Store,
    server_public_key: PublicKey,
    events: Events,
}

fn pool_to_proto(pool: ferry_store::Pool) -> Pool {
    Pool {
        id: pool.id,
        name: pool.name,
        create_time: Some(timestamp_from_micros(pool.created_at)),
    }
}

fn require_owner(caller: &AdministratorIdentity) -> Result<()> {
    if caller.owner {
        Ok(())
    } else {
        Err(Error::PermissionDenied(
            "this call needs a server owner's PAT".to_owned(),
        ))
    }
}

impl Registry {
    /// A registry over `store`, handing out `server_public_key` at
    /// registration and raising agent revocations on `events`.
    pub fn new(store: Store, server_public_key: PublicKey, events: Events) -> Self {
        Self {
            store,
            server_public_key,
            events,
        }
    }

    fn revoke(&self, agent_id: &str) {
        self.events.publish(Event::AgentRevoked {
            agent_id: agent_id.into(),
        });
    }

    async fn pool_administered(
        &self,
        caller: &AdministratorIdentity,
        pool_name: &str,
    ) -> Result<ferry_store::Pool> {
        validate::name("pool", pool_name)?;
        let pool = self
            .store
            .pool_by_name(pool_name)
            .await?
            .ok_or_else(|| Error::NotFound(format!("pool {pool_name:?} not found")))?;
        if !caller.administers(&pool.id) {
            return Err(Error::PermissionDenied(format!(
                "{} is not an administrator of pool {pool_name:?}",
                caller.name
            )));
        }
        Ok(pool)
    }

    /// Pool names by id.
    async fn pool_names(&self) -> Result<BTreeMap<String, String>> {
        Ok(self
            .store
            .list_pools()
            .await?
            .into_iter()
            .map(|pool| (pool.id, pool.name))
            .collect())
    }

    /// Registers an agent in a pool the caller administers.
    pub async fn register(
        &self,
        caller: &AdministratorIdentity,
        request: RegisterRequest,
    ) -> Result<RegisterResponse> {
        validate::name("name", &request.name)?;
        validate::map(
            "capabilities",
            request.capabilities.iter(),
            MAX_CAPABILITIES,
            256,
            validate::label_key,
        )?;
        let public_key = PublicKey::from_slice(&request.public_key)
            .map_err(|_| Error::InvalidArgument("public_key must be 32 bytes".to_owned()))?;
        // Refuses low-order keys, with which no envelope would be secret.
        Sealer::new(ferry_envelope::SecretKey::generate()?)
            .sealer_for(&public_key)
            .map_err(|_| {
                Error::InvalidArgument("public_key is not a usable X25519 key".to_owned())
            })?;
        let pool = self.pool_administered(caller, &request.pool).await?;
        let (agent, replaced) = self
            .store
            .register_agent(
                ferry_store::NewAgent {
                    pool_id: pool.id.clone(),
                    name: request.name,
                    public_key: public_key.as_bytes().to_vec(),
                    capabilities: validate::ordered(request.capabilities),
                },
                request.replace,
            )
            .await?;
        // The replaced agent's polls and tokens end now, everywhere.
        for old in &replaced {
            self.revoke(old);
        }
        tracing::info!(agent_id = %agent.id, agent = %agent.name, pool = %pool.name, administrator = %caller.name, "agent registered");
        Ok(RegisterResponse {
            agent_id: agent.id,
            server_public_key: self.server_public_key.as_bytes().to_vec(),
            pool: Some(pool_to_proto(pool)),
        })
    }

    /// Creates a pool; the caller becomes one of its administrators.
    pub async fn create_pool(
        &self,
        caller: &AdministratorIdentity,
        request: CreatePoolRequest,
    ) -> Result<CreatePoolResponse> {
        require_owner(caller)?;
        validate::name("name", &request.name)?;
        let pool = self.store.create_pool(&request.name).await?;
        self.store
            .add_pool_administrator(&pool.id, &caller.id)
            .await?;
        self.events.publish(Event::AdministratorsChanged);
        tracing::info!(pool = %pool.name, administrator = %caller.name, "pool created");
        Ok(CreatePoolResponse {
            pool: Some(pool_to_proto(pool)),
        })
    }

    /// The pools the caller administers.
    pub async fn list_pools(&self, caller: &AdministratorIdentity) -> Result<ListPoolsResponse> {
        let pools = self.store.list_pools().await?;
        Ok(ListPoolsResponse {
            pools: pools
                .into_iter()
                .filter(|pool| caller.administers(&pool.id))
                .map(pool_to_proto)
                .collect(),
        })
    }

    /// The agents of the pools the caller administers.
    pub async fn list_agents(
        &self,
        caller: &AdministratorIdentity,
        request: ListAgentsRequest,
    ) -> Result<ListAgentsResponse> {
        let only_pool = if request.pool.is_empty() {
            None
        } else {
            Some(self.pool_administered(caller, &request.pool).await?.id)
        };
        let pools = self.pool_names().await?;
        let now = now_micros();
        let mut agents: Vec<Agent> = self
            .store
            .list_agents(only_pool.as_deref())
            .await?
            .into_iter()
            .filter(|agent| caller.administers(&agent.pool_id))
            .map(|agent| agent_to_proto(agent, &pools, now))
            .collect();
        agents.sort_by(|left, right| (&left.pool, &left.name).cmp(&(&right.pool, &right.name)));
        Ok(ListAgentsResponse { agents })
    }

    /// Removes an agent of a pool the caller administers.
    pub async fn remove_agent(&self, caller: &AdministratorIdentity, agent_id: &str) -> Result<()> {
        validate::id("agent_id", agent_id)?;
        let agent = self
            .store
            .agent(agent_id)
            .await?
            .filter(|agent| caller.administers(&agent.pool_id))
            .ok_or_else(|| Error::NotFound(format!("agent {agent_id} not found")))?;
        self.store.remove_agent(&agent.id).await?;
        self.revoke(&agent.id);
        tracing::info!(agent_id = %agent.id, agent = %agent.name, administrator = %caller.name, "agent removed");
        Ok(())
    }

    /// Enables or disables an agent of a pool the caller administers; a
    /// disabled agent's waiting polls end at once.
    pub async fn update_agent(
        &self,
        caller: &AdministratorIdentity,
        request: UpdateAgentRequest,
    ) -> Result<UpdateAgentResponse> {
        validate::id("agent_id", &request.agent_id)?;
        let agent = self
            .store
            .agent(&request.agent_id)
            .await?
            .filter(|agent| caller.administers(&agent.pool_id))
            .ok_or_else(|| Error::NotFound(format!("agent {} not found", request.agent_id)))?;
        let agent = self
            .store
            .set_agent_disabled(&agent.id, request.disabled)
            .await?;
        if agent.disabled {
            self.revoke(&agent.id);
        }
        tracing::info!(agent_id = %agent.id, disabled = agent.disabled, administrator = %caller.name, "agent updated");
        let pools = self.pool_names().await?;
        Ok(UpdateAgentResponse {
            agent: Some(agent_to_proto(agent, &pools, now_micros())),
        })
    }

    /// Removes the calling agent itself (an ephemeral agent after its job).
    pub async fn deregister(&self, caller: &AgentIdentity) -> Result<()> {
        self.store.remove_agent(&caller.agent_id).await?;
        self.revoke(&caller.agent_id);
        tracing::info!(agent_id = %caller.agent_id, "agent deregistered itself");
        Ok(())
    }

    /// Creates an administrator and its PAT (returned once).
    pub async fn create_administrator(
        &self,
        caller: &AdministratorIdentity,
        request: CreateAdministratorRequest,
    ) -> Result<CreateAdministratorResponse> {
        require_owner(caller)?;
        validate::name("name", &request.name)?;
        let mut pool_ids = Vec::with_capacity(request.pools.len());
        for pool in &request.pools {
            validate::name("pools", pool)?;
            let found = self
                .store
                .pool_by_name(pool)
                .await?
                .ok_or_else(|| Error::NotFound(format!("pool {pool:?} not found")))?;
            pool_ids.push(found.id);
        }
        let token = ferry_auth::pat::generate()
            .map_err(|_| Error::Internal("no randomness for a new PAT".to_owned()))?;
        let administrator = self
            .store
            .create_administrator(
                &request.name,
                request.owner,
                &pool_ids,
                &ferry_auth::pat::hash(&token),
            )
            .await?;
        tracing::info!(administrator = %administrator.name, owner = administrator.owner, by = %caller.name, "administrator created");
        Ok(CreateAdministratorResponse {
            administrator: Some(Self::administrator_to_proto(
                administrator,
                &self.pool_names().await?,
            )),
            token,
        })
    }

    fn administrator_to_proto(
        administrator: ferry_store::Administrator,
        pools: &BTreeMap<String, String>,
    ) -> Administrator {
        Administrator {
            id: administrator.id,
            name: administrator.name,
            owner: administrator.owner,
            pools: administrator
                .pool_ids
                .iter()
                .filter_map(|id| pools.get(id).cloned())
                .collect(),
            create_time: Some(timestamp_from_micros(administrator.created_at)),
        }
    }

    /// Every administrator.
    pub async fn list_administrators(
        &self,
        caller: &AdministratorIdentity,
    ) -> Result<ListAdministratorsResponse> {
        require_owner(caller)?;
        let pools = self.pool_names().await?;
        let administrators = self
            .store
            .list_administrators()
            .await?
            .into_iter()
            .map(|administrator| Self::administrator_to_proto(administrator, &pools))
            .collect();
        Ok(ListAdministratorsResponse { administrators })
    }

    /// Removes an administrator and its PATs; agents it registered stay.
    pub async fn remove_administrator(
        &self,
        caller: &AdministratorIdentity,
        administrator_id: &str,
    ) -> Result<()> {
        require_owner(caller)?;
        validate::id("administrator_id", administrator_id)?;
        let administrators = self.store.list_administrators().await?;
        let Some(target) = administrators
            .iter()
            .find(|admin| admin.id == administrator_id)
        else {
            return Err(Error::NotFound(format!(
                "administrator {administrator_id} not found"
            )));
        };
        let owners = administrators.iter().filter(|admin| admin.owner).count();
        if target.owner && owners == 1 {
            return Err(Error::FailedPrecondition(
                "cannot remove the last server owner".to_owned(),
            ));
        }
        self.store.remove_administrator(administrator_id).await?;
        self.events.publish(Event::AdministratorsChanged);
        tracing::info!(administrator = %target.name, by = %caller.name, "administrator removed");
        Ok(())
    }
}

fn agent_to_proto(agent: ferry_store::Agent, pools: &BTreeMap<String, String>, now: i64) -> Agent {
    let status = if now - agent.last_seen_at > OFFLINE_AFTER_MICROS {
        AgentStatus::Offline
    } else {
        match agent.status {
            ferry_store::AgentStatus::Offline => AgentStatus::Offline,
            ferry_store::AgentStatus::Online => AgentStatus::Online,
            ferry_store::AgentStatus::Busy => AgentStatus::Busy,
        }
    };
    Agent {
        pool: pools.get(&agent.pool_id).cloned().unwrap_or_default(),
        id: agent.id,
        name: agent.name,
        capabilities: agent.capabilities.into_iter().collect(),
        status: status.into(),
        last_seen_time: Some(timestamp_from_micros(agent.last_seen_at)),
        create_time: Some(timestamp_from_micros(agent.created_at)),
        current_job_id: agent.current_job_id.unwrap_or_default(),
        disabled: agent.disabled,
    }
}
