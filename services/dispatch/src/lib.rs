//! JobService: queueing, long-poll dispatch, and job status.
//!
//! [`Dispatcher`] is the domain. A new job goes to the longest-waiting long
//! poll whose agent meets its demands ([`queue::HandOff`], in memory): when
//! one waits, the job is written to the store already assigned to it (one
//! write; nobody else can claim a row that did not exist), otherwise it is
//! written queued and the store's conditional claim makes every later
//! hand-off race-free, across replicas too. The job reaches the agent sealed
//! to its key (envelope v1) with a job token scoped to the job and its
//! pipeline (`handout`). Polling agents and pools are read once and kept
//! (`polling`); agent statuses are written in batches (`status`). [`grpc`]
//! is the thin tonic adapter.

pub mod grpc;
pub mod lifecycle;
pub mod queue;
pub mod spec;

mod convert;
mod handout;
mod listing;
mod polling;
mod status;
mod telemetry;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_auth::token::TokenSigner;
use ferry_auth::{AdministratorIdentity, AgentIdentity};
use ferry_envelope::SealerCache;
use ferry_proto::time::now_micros;
use ferry_proto::v1::{Job, JobSpec, PollJobResponse};
use ferry_service::{Error, Event, Events, Result, validate};
use ferry_store::Store;
use prost::Message;
use tracing::Instrument as _;

use crate::polling::PollingAgents;
use crate::queue::{Found, HandOff, Offer, QueuedJob};

/// Dispatch settings.
#[derive(Debug, Clone)]
pub struct DispatchConfig {
    /// Wait of a poll that asks for none.
    pub default_wait: Duration,
    /// Longest wait a poll may ask for.
    pub max_wait: Duration,
    /// How long an agent holds a job without renewing; its job token lives
    /// twice as long and is renewed with the lease.
    pub lease_duration: Duration,
    /// How often the reaper looks for lapsed leases, timeouts and
    /// unconfirmed cancels.
    pub reap_interval: Duration,
    /// How long past its timeout a job may run before the server fails it
    /// (the agent enforces the timeout itself; this is the backstop).
    pub timeout_grace: Duration,
    /// How long an agent has to confirm a cancel before the server ends the job.
    pub cancel_grace: Duration,
    /// Attempts a job may take when agents vanish before it starts.
    pub max_attempts: u32,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Self {
            default_wait: Duration::from_secs(50),
            max_wait: Duration::from_secs(120),
            lease_duration: Duration::from_secs(30),
            reap_interval: Duration::from_secs(1),
            timeout_grace: Duration::from_secs(120),
            cancel_grace: Duration::from_secs(60),
            max_attempts: 3,
        }
    }
}

/// A job this replica handed to an agent.
pub(crate) struct Claim {
    agent_id: String,
    /// When (µs).
    at: i64,
    lease_expires_at: i64,
}

/// The job service's domain.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    signer: Arc<TokenSigner>,
    sealers: Arc<SealerCache>,
    events: Events,
    hand_off: HandOff,
    config: DispatchConfig,
    /// Each agent's status as this replica last saw it; written to the
    /// store in batches (see [`Dispatcher::spawn_status_writer`]).
    agent_status: Mutex<HashMap<String, status::SeenStatus>>,
    /// Pools by name, as read once from the store.
    pools: Mutex<HashMap<String, ferry_store::Pool>>,
    /// Agents that poll, as last read from the store.
    agents: PollingAgents,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Dispatcher")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Dispatcher {
    /// A dispatcher over `store`; loads the jobs already queued there.
    pub async fn start(
        store: Store,
        signer: Arc<TokenSigner>,
        sealers: Arc<SealerCache>,
        events: Events,
        config: DispatchConfig,
    ) -> Result<Self> {
        let (returns_sender, mut returns) = tokio::sync::mpsc::unbounded_channel();
        let dispatcher = Self {
            inner: Arc::new(Inner {
                store,
                signer,
                sealers,
                events,
                hand_off: HandOff::new(returns_sender),
                config,
                agent_status: Mutex::new(HashMap::new()),
                pools: Mutex::new(HashMap::new()),
                agents: PollingAgents::default(),
            }),
        };
        let returner = dispatcher.clone();
        tokio::spawn(async move {
            while let Some(returned) = returns.recv().await {
                returner.give_back(returned).await;
            }
        });
        // Subscribe before loading, so a job queued meanwhile is not missed.
        dispatcher.spawn_event_handler();
        let loaded = dispatcher.load_queued().await?;
        if loaded > 0 {
            tracing::info!(jobs = loaded, "queued jobs loaded");
        }
        dispatcher.spawn_reaper();
        dispatcher.spawn_status_writer();
        let weak = Arc::downgrade(&dispatcher.inner);
        telemetry::spawn_gauges(dispatcher.store().clone(), move || weak.strong_count() > 0);
        Ok(dispatcher)
    }

    /// Follows the events other services and replicas raise: revoked
    /// agents lose their waiting polls at once; in the mesh, jobs queued or
    /// claimed on other replicas keep this replica's hand-off in step, and a
    /// resync (events may have been lost) reloads the queue from the store.
    fn spawn_event_handler(&self) {
        let mut events = self.inner.events.subscribe();
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                let event = match events.recv().await {
                    Ok(event) => event,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => Event::Resync,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                let Some(inner) = weak.upgrade() else { return };
                let dispatcher = Dispatcher { inner };
                if let Err(error) = dispatcher.on_event(event).await {
                    tracing::warn!(error = %error, "could not apply an event");
                }
            }
        });
    }

    async fn on_event(&self, event: Event) -> Result<()> {
        let mine = self.inner.events.origin();
        match event {
            Event::AgentRevoked { agent_id } => {
                // Forget it first: its withdrawn polls look it up again.
                self.inner.agents.forget(&agent_id);
                self.forget_status(&agent_id);
                self.inner.hand_off.withdraw_agent(&agent_id);
            }
            Event::JobQueued {
                job_id,
                pool_id,
                origin,
            } if origin != mine => {
                if let Some(job) = self.store().job(&job_id).await?
                    && job.state == ferry_store::JobState::Queued
                {
                    self.offer(&pool_id, QueuedJob::stored(job.id, job.demands))
                        .await?;
                }
            }
            Event::JobClaimed {
                job_id,
                pool_id,
                origin,
            } if origin != mine => {
                self.inner.hand_off.remove(&pool_id, &job_id);
            }
            Event::JobFinished {
                job_id,
                agent_id: Some(agent_id),
            } => {
                // Completed on its log stream (the log service): the agent
                // is idle now, if this replica saw it busy with the job.
                self.job_done(&agent_id, &job_id);
            }
            Event::Resync => {
                self.inner.agents.forget_all();
                let loaded = self.load_queued().await?;
                tracing::info!(jobs = loaded, "queue reloaded after a resync");
            }
            _ => {}
        }
        Ok(())
    }

    /// Offers every job queued in the store (start-up, resync).
    async fn load_queued(&self) -> Result<usize> {
        self.load_queued_before(i64::MAX).await
    }

    /// Offers every job queued in the store before `queued_before` (µs).
    pub(crate) async fn load_queued_before(&self, queued_before: i64) -> Result<usize> {
        let mut loaded = 0;
        for pool in self.store().list_pools().await? {
            for job in self.store().queued_jobs(&pool.id, u64::MAX >> 1).await? {
                if job.queued_at >= queued_before {
                    continue;
                }
                self.inner.hand_off.remove(&pool.id, &job.id);
                self.offer(&pool.id, QueuedJob::stored(job.id, job.demands))
                    .await?;
                loaded += 1;
            }
        }
        Ok(loaded)
    }

    /// Offers a job queued (or requeued) here, and tells the other
    /// replicas. Returns the claim when a waiting poll of this replica took
    /// it at once.
    pub(crate) async fn enqueue(&self, pool_id: &str, job: QueuedJob) -> Result<Option<Claim>> {
        let job_id = job.id.clone();
        let claim = self.offer(pool_id, job).await?;
        if claim.is_none() && self.inner.events.is_shared() {
            self.inner.events.publish(Event::JobQueued {
                job_id: job_id.as_str().into(),
                pool_id: pool_id.into(),
                origin: self.inner.events.origin(),
            });
        }
        Ok(claim)
    }

    /// Releases a job handed to a poll that vanished, and offers it again.
    async fn give_back(&self, returned: queue::Returned) {
        let job_id = returned.job.id.clone();
        let result = async {
            self.store()
                .release_job(&returned.job.id, &returned.agent_id)
                .await?;
            self.enqueue(&returned.pool_id, returned.job).await?;
            Ok::<_, Error>(())
        }
        .await;
        match result {
            Ok(()) => tracing::debug!(job_id, "job handed to a vanished poll was requeued"),
            Err(error) => tracing::error!(job_id, error = %error, "could not requeue a job"),
        }
    }

    fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Queues a job in a pool the caller administers and offers it at once,
    /// with the job's trace context (a W3C `traceparent`): every later span
    /// of the job joins that trace.
    pub async fn queue_job(
        &self,
        caller: &AdministratorIdentity,
        mut spec: JobSpec,
        trace_context: Option<String>,
    ) -> Result<Job> {
        let timeout = spec::normalize(&mut spec)?;
        let pool = self.pool_named(&spec.pool).await?;
        if !caller.administers(&pool.id) {
            return Err(Error::PermissionDenied(format!(
                "{} is not an administrator of pool {:?}",
                caller.name, pool.name
            )));
        }
        let source_id = if spec.source_id.is_empty() {
            None
        } else {
            validate::id("source_id", &spec.source_id)?;
            let source = self
                .store()
                .source(&spec.source_id)
                .await?
                .filter(|source| source.pool_id == pool.id)
                .ok_or_else(|| {
                    Error::NotFound(format!("source {} not found in this pool", spec.source_id))
                })?;
            Some(source.id)
        };
        let demands = validate::ordered(spec.demands.clone());
        let mut secret_names: Vec<String> = spec.secrets.keys().cloned().collect();
        secret_names.sort();
        let new_job = ferry_store::NewJob {
            id: uuid::Uuid::now_v7().to_string(),
            pool_id: pool.id.clone(),
            name: spec.name.clone(),
            project: spec.project.clone(),
            pipeline: spec.pipeline.clone(),
            demands,
            secret_names,
            step_names: spec.steps.iter().map(|step| step.name.clone()).collect(),
            spec: spec.encode_to_vec(),
            timeout_seconds: timeout.as_secs() as i64,
            queued_at: now_micros(),
            source_id: source_id.clone(),
            max_attempts: self.inner.config.max_attempts,
        };
        // On its own task: a caller that goes away (a client disconnect, a
        // deadline) drops this future, and a job stored but not yet handed
        // over or offered would wait for its lease or a restart.
        let dispatcher = self.clone();
        let job = tokio::spawn(
            async move {
                dispatcher
                    .store_and_hand_off(new_job, spec, trace_context)
                    .await
            }
            .instrument(tracing::Span::current()),
        )
        .await
        .map_err(|error| Error::Internal(format!("queueing the job failed: {error}")))??;
        tracing::info!(job_id = %job.id, pool = %pool.name, name = %job.name, by = %caller.name, "job queued");
        telemetry::queued(&pool.name);
        // The answer to QueueJob keeps to the stored message: explaining why
        // a job waits lists the pool's agents, too costly for every queue.
        // A job handed out at once went to an agent that just polled, whose
        // name dispatch holds.
        match job
            .agent_id
            .as_deref()
            .and_then(|id| self.inner.agents.name(id))
        {
            Some(agent_name) => Ok(convert::wire(job, &pool.name, agent_name)),
            None => convert::job(self.store(), job, &pool.name, convert::Waiting::Stored).await,
        }
    }

    /// Stores a new job and hands it out. When a poller that can run it is
    /// waiting here, the job is stored already assigned to it — queueing and
    /// claiming in one write — and handed over; otherwise it is stored
    /// queued and offered. Returns the job as it stands after that (as
    /// written: nothing is read back).
    async fn store_and_hand_off(
        &self,
        new_job: ferry_store::NewJob,
        spec: JobSpec,
        trace_context: Option<String>,
    ) -> Result<ferry_store::Job> {
        let pool_id = new_job.pool_id.clone();
        let demands = Arc::new(new_job.demands.clone());
        let taken = self.inner.hand_off.take_waiter(&pool_id, &demands);
        let mut job = match &taken {
            Some(taken) => {
                let now = now_micros();
                let lease = self.inner.config.lease_duration.as_micros() as i64;
                self.store()
                    .insert_assigned_job(new_job, trace_context, &taken.agent_id, now, now + lease)
                    .await?
            }
            None => {
                self.store()
                    .insert_traced_job(new_job, trace_context)
                    .await?
            }
        };
        let queued = QueuedJob {
            id: job.id.clone(),
            demands,
            prepared: Some(Arc::new(queue::Prepared {
                job: job.clone(),
                spec,
            })),
        };
        let queued = match taken {
            Some(taken) => {
                let agent_id = taken.agent_id.clone();
                let Err(queued) = taken.send(queued) else {
                    return Ok(job);
                };
                // The poll ended while the job was stored: queue it.
                if let Err(error) = self.store().release_job(&job.id, &agent_id).await {
                    // The job exists: answer with it rather than an error a
                    // client would retry into a duplicate. Its lease lapses
                    // and the reaper queues it again.
                    tracing::warn!(job_id = %job.id, %error, "could not release a job whose poll ended");
                    return Ok(job);
                }
                job.state = ferry_store::JobState::Queued;
                job.agent_id = None;
                job.assigned_at = None;
                job.lease_expires_at = None;
                queued
            }
            None => queued,
        };
        if let Some(claim) = self.enqueue(&pool_id, queued).await? {
            job.state = ferry_store::JobState::Assigned;
            job.agent_id = Some(claim.agent_id);
            job.assigned_at = Some(claim.at);
            job.lease_expires_at = Some(claim.lease_expires_at);
        }
        Ok(job)
    }

    /// The pool with this name. Pools are never renamed or removed, so
    /// each is read from the store once.
    async fn pool_named(&self, name: &str) -> Result<ferry_store::Pool> {
        let cached = self
            .inner
            .pools
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(name)
            .cloned();
        if let Some(pool) = cached {
            return Ok(pool);
        }
        let pool = self
            .store()
            .pool_by_name(name)
            .await?
            .ok_or_else(|| Error::NotFound(format!("pool {name:?} not found")))?;
        self.inner
            .pools
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(name.to_owned(), pool.clone());
        Ok(pool)
    }

    /// Offers a job to the pool's waiting polls until one takes it (its
    /// claim is returned) or it waits in the queue.
    async fn offer(&self, pool_id: &str, job: QueuedJob) -> Result<Option<Claim>> {
        loop {
            let Offer::Taken(taken) = self.inner.hand_off.offer(pool_id, job.clone()) else {
                return Ok(None);
            };
            let agent_id = taken.agent_id.clone();
            let Some(claim) = self.claim(&job.id, pool_id, &agent_id).await? else {
                return Ok(None); // another replica's agent has it
            };
            match taken.send(job.clone()) {
                Ok(()) => return Ok(Some(claim)),
                Err(_) => {
                    // The poll ended between the pick and the claim.
                    self.store().release_job(&job.id, &agent_id).await?;
                }
            }
        }
    }

    /// The long poll: a job sealed to the agent, or nothing after `wait`.
    pub async fn poll_job(
        &self,
        caller: &AgentIdentity,
        wait: Option<Duration>,
    ) -> Result<PollJobResponse> {
        let wait = wait
            .unwrap_or(self.inner.config.default_wait)
            .min(self.inner.config.max_wait);
        let agent = self.inner.agents.get(self.store(), caller).await?;
        self.set_agent_status(&agent.id, ferry_store::AgentStatus::Online, None);
        let deadline = tokio::time::Instant::now() + wait;
        let job = loop {
            match self
                .inner
                .hand_off
                .poll(&agent.pool_id, &agent.id, agent.capabilities.clone())
            {
                Found::Job(job) => {
                    if self
                        .claim(&job.id, &agent.pool_id, &agent.id)
                        .await?
                        .is_some()
                    {
                        break job;
                    }
                    // Claimed by another replica's agent: look again.
                }
                Found::Waiting(mut registration) => {
                    let _waiting = telemetry::WaitingPoll::start();
                    match tokio::time::timeout_at(deadline, &mut registration.receiver).await {
                        Ok(Ok(job)) => break job,
                        // Picked but the claim went elsewhere, or the agent
                        // was revoked: check the agent and look again.
                        Ok(Err(_)) => {
                            self.inner.agents.get(self.store(), caller).await?;
                            continue;
                        }
                        // A job may have been handed over just as the wait ended.
                        Err(_elapsed) => match registration.withdraw() {
                            Some(job) => break job,
                            None => return Ok(PollJobResponse::default()),
                        },
                    }
                }
            }
        };
        match self.seal_job(&agent, &job).await {
            Ok(response) => Ok(response),
            Err(error) => {
                // Nothing reached the agent: give the job back.
                self.store().release_job(&job.id, &agent.id).await?;
                self.inner.hand_off.requeue_front(&agent.pool_id, job);
                Err(error)
            }
        }
    }

    /// Claims a queued job for an agent, with a fresh lease; `None` when
    /// it is no longer queued.
    async fn claim(&self, job_id: &str, pool_id: &str, agent_id: &str) -> Result<Option<Claim>> {
        let now = now_micros();
        let lease = self.inner.config.lease_duration.as_micros() as i64;
        let claimed = self
            .store()
            .claim_job(job_id, agent_id, now, now + lease)
            .await?;
        if !claimed {
            return Ok(None);
        }
        if self.inner.events.is_shared() {
            // Other replicas drop the job from their hand-off.
            self.inner.events.publish(Event::JobClaimed {
                job_id: job_id.into(),
                pool_id: pool_id.into(),
                origin: self.inner.events.origin(),
            });
        }
        Ok(Some(Claim {
            agent_id: agent_id.to_owned(),
            at: now,
            lease_expires_at: now + lease,
        }))
    }
}
