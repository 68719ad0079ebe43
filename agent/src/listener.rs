//! `ferry-agent run`: the listener token, the poll slots (one per job the
//! agent may run at once) with their reconnect backoff, graceful drain on
//! SIGINT/SIGTERM, and the ephemeral `--once` mode.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use ferry_client::{Authorized, Bearer, ServerAddress};
use ferry_envelope::{Opener, job_context, listener_token_context};
use ferry_proto::v1::job_service_client::JobServiceClient;
use ferry_proto::v1::{
    AgentJob, DeregisterRequest, GetListenerTokenRequest, ListenerToken, PollJobRequest,
};
use prost::Message as _;
use tokio::sync::{Mutex, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::Code;
use tonic::transport::Channel;
use tracing::Instrument as _;

use crate::backoff::{Backoff, seconds};
use crate::cli::RunArgs;
use crate::job::{self, JobContext, JobReport};
use crate::logs;
use crate::rpc::{describe, open_sealed, with_retries};
use crate::settings::{AgentDir, Settings};
use crate::spool::{self, SPOOL_DIR};
use crate::stop::{Stop, StopSignal};

/// How long the server may hold one poll.
pub const POLL_WAIT: Duration = Duration::from_secs(50);
/// Extra time the client gives a poll beyond `POLL_WAIT`.
pub const POLL_SLACK: Duration = Duration::from_secs(15);
/// How long a listener token call may take.
const TOKEN_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The most jobs an agent runs at once.
pub const MAX_JOBS_LIMIT: u32 = 64;

/// Why a poll failed.
enum PollError {
    /// The server could not be reached or failed; try again later.
    Transient(String),
    /// The listener token was refused; get a new one.
    Unauthenticated(String),
    /// Trying again cannot help.
    Fatal(anyhow::Error),
}

/// How far the agent is in stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ShutdownState {
    /// Polling and running jobs.
    Running,
    /// No new jobs; running ones finish (first SIGINT/SIGTERM).
    Draining,
    /// Running jobs are canceled (second SIGINT/SIGTERM).
    Canceling,
}

/// The agent's stop switch: each [`ShutdownHandle::request`] (a signal)
/// moves it one state further.
#[derive(Debug, Clone)]
pub struct ShutdownHandle(Arc<watch::Sender<ShutdownState>>);

impl Default for ShutdownHandle {
    fn default() -> ShutdownHandle {
        ShutdownHandle::new()
    }
}

impl ShutdownHandle {
    /// Running.
    pub fn new() -> ShutdownHandle {
        ShutdownHandle(Arc::new(watch::channel(ShutdownState::Running).0))
    }

    /// One stop request: Running → Draining → Canceling. Returns the new
    /// state.
    pub fn request(&self) -> ShutdownState {
        let mut state = ShutdownState::Canceling;
        self.0.send_modify(|current| {
            *current = match *current {
                ShutdownState::Running => ShutdownState::Draining,
                _ => ShutdownState::Canceling,
            };
            state = *current;
        });
        state
    }

    /// Stops polling without a signal (a fatal error in one slot).
    fn drain(&self) {
        self.0.send_if_modified(|current| {
            let change = *current == ShutdownState::Running;
            if change {
                *current = ShutdownState::Draining;
            }
            change
        });
    }

    /// The current state.
    pub fn state(&self) -> ShutdownState {
        *self.0.borrow()
    }

    /// Resolves once the state is at least `state`.
    async fn reached(&self, state: ShutdownState) {
        let mut receiver = self.0.subscribe();
        let _ = receiver.wait_for(|current| *current >= state).await;
    }

    /// Moves the switch on every SIGINT and SIGTERM, logging what each does.
    fn listen_for_signals(&self) -> tokio::task::JoinHandle<()> {
        let handle = self.clone();
        tokio::spawn(async move {
            loop {
                wait_for_signal().await;
                match handle.request() {
                    ShutdownState::Running => {}
                    ShutdownState::Draining => tracing::info!(
                        "signal received: no new jobs; running jobs finish first (signal again to cancel them)"
                    ),
                    ShutdownState::Canceling => {
                        tracing::warn!("second signal received: canceling the running jobs");
                        return;
                    }
                }
            }
        })
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        }
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGTERM; only SIGINT stops the agent");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The agent's connection to the server for polling, shared by the slots.
struct Listener {
    settings: Settings,
    opener: Opener,
    channel: Channel,
    bearer: Bearer,
    jobs: JobServiceClient<Authorized>,
    /// When to fetch a new listener token; `None` for now.
    refresh_at: Mutex<Option<TokenSchedule>>,
}

/// When the listener token in use is due for a refresh.
#[derive(Debug, Clone, Copy)]
struct TokenSchedule {
    /// Before a poll: at 80 % of its life.
    refresh_at: Instant,
    /// After a job: past half its life.
    renew_after_job_at: Instant,
}

impl Listener {
    /// Makes sure a listener token is in place, fetching one when none is
    /// or it is due (one slot fetches, the others wait for it).
    async fn ensure_token(&self) -> Result<(), PollError> {
        let mut schedule = self.refresh_at.lock().await;
        if schedule.is_some_and(|schedule| Instant::now() < schedule.refresh_at) {
            return Ok(());
        }
        *schedule = Some(self.refresh_token().await?);
        Ok(())
    }

    /// Forgets the token's schedule: the next poll fetches a new one.
    async fn invalidate(&self) {
        *self.refresh_at.lock().await = None;
    }

    /// Fetches and opens a new listener token; returns when to refresh it.
    async fn refresh_token(&self) -> Result<TokenSchedule, PollError> {
        let agent_id = self.settings.agent_id.clone();
        let mut request = tonic::Request::new(GetListenerTokenRequest {
            agent_id: agent_id.clone(),
        });
        request.set_timeout(TOKEN_CALL_TIMEOUT);
        let mut client = ferry_client::tokens(self.channel.clone());
        let call = client.get_listener_token(request);
        let response = match tokio::time::timeout(TOKEN_CALL_TIMEOUT, call).await {
            Err(_) => {
                return Err(PollError::Transient(
                    "the listener token call timed out".into(),
                ));
            }
            Ok(Err(status)) => {
                return Err(match status.code() {
                    Code::NotFound
                    | Code::PermissionDenied
                    | Code::Unauthenticated
                    | Code::FailedPrecondition => PollError::Fatal(anyhow::anyhow!(
                        "the server refused agent {} ({}) a listener token ({}): it may have been removed or disabled; \
                             configure it again with --replace",
                        self.settings.name,
                        agent_id,
                        describe(&status)
                    )),
                    _ => PollError::Transient(describe(&status)),
                });
            }
            Ok(Ok(response)) => response.into_inner(),
        };
        let sealed = response
            .sealed_token
            .ok_or_else(|| PollError::Transient("the server sent no listener token".into()))?;
        let plaintext = open_sealed(&self.opener, &listener_token_context(&agent_id), sealed).map_err(|error| {
            PollError::Fatal(error.context(
                "cannot open the listener token: the server's key does not match this agent's configuration; \
                 configure it again with --replace",
            ))
        })?;
        let token = ListenerToken::decode(plaintext.as_slice())
            .map_err(|_| PollError::Transient("the listener token does not decode".into()))?;
        self.bearer.set(&token.access_token).map_err(|_| {
            PollError::Transient("the listener token has characters a header cannot carry".into())
        })?;
        let now = ferry_proto::time::now_micros();
        let expires = token
            .expire_time
            .as_ref()
            .map_or(now, ferry_proto::time::micros_from_timestamp);
        let life = Duration::from_micros(u64::try_from(expires.saturating_sub(now)).unwrap_or(0));
        // Refresh at 80% of its life, but not in a tight loop if clocks disagree.
        let refresh_in = life.mul_f64(0.8).max(Duration::from_secs(1));
        tracing::debug!(refresh_in = %seconds(refresh_in), "listener token refreshed");
        let now = Instant::now();
        Ok(TokenSchedule {
            refresh_at: now + refresh_in,
            renew_after_job_at: now + life / 2,
        })
    }

    /// After a job, a fresh listener token when the one in use is past half
    /// its life (10 minutes by default): a long job may have outlived it,
    /// and the agent goes back to polling with a token that has most of its
    /// life ahead instead of learning it from a refused poll. After a short
    /// job the token stays (no call). Called in the job's span, so the call
    /// belongs to the job's trace. Failures are left to the next poll.
    async fn renew_after_job(&self) {
        let mut schedule = self.refresh_at.lock().await;
        if schedule.is_some_and(|schedule| Instant::now() < schedule.renew_after_job_at) {
            return;
        }
        match self.refresh_token().await {
            Ok(renewed) => *schedule = Some(renewed),
            Err(PollError::Fatal(error)) => {
                tracing::debug!(
                    error = format!("{error:#}"),
                    "cannot renew the listener token after the job"
                );
                *schedule = None;
            }
            Err(PollError::Transient(error) | PollError::Unauthenticated(error)) => {
                tracing::debug!(%error, "cannot renew the listener token after the job");
                *schedule = None;
            }
        }
    }

    /// One long poll: a job, or `None` when the wait ended.
    async fn next_job(&self) -> Result<Option<AgentJob>, PollError> {
        self.ensure_token().await?;
        let mut request = tonic::Request::new(PollJobRequest {
            wait: Some(ferry_proto::time::duration_to_proto(POLL_WAIT)),
        });
        request.set_timeout(POLL_WAIT + POLL_SLACK);
        let mut jobs = self.jobs.clone();
        let response =
            match tokio::time::timeout(POLL_WAIT + POLL_SLACK, jobs.poll_job(request)).await {
                Err(_) => return Err(PollError::Transient("the poll timed out".into())),
                Ok(Err(status)) => {
                    return Err(match status.code() {
                        Code::Unauthenticated | Code::PermissionDenied => {
                            PollError::Unauthenticated(describe(&status))
                        }
                        _ => PollError::Transient(describe(&status)),
                    });
                }
                Ok(Ok(response)) => response.into_inner(),
            };
        if response.job_id.is_empty() {
            return Ok(None);
        }
        let job_id = response.job_id;
        let opened = response
            .sealed_job
            .ok_or_else(|| anyhow::anyhow!("the server sent no sealed job"))
            .and_then(|sealed| {
                open_sealed(
                    &self.opener,
                    &job_context(&job_id, &self.settings.agent_id),
                    sealed,
                )
            })
            .and_then(|plaintext| {
                AgentJob::decode(plaintext.as_slice()).context("the job does not decode")
            });
        match opened {
            Ok(job) if job.job_id == job_id => Ok(Some(job)),
            Ok(job) => {
                tracing::error!(job_id = %job_id, sealed_job_id = %job.job_id, "the sealed job names another job; ignoring it");
                Ok(None)
            }
            Err(error) => {
                tracing::error!(job_id = %job_id, error = format!("{error:#}"), "cannot open the job; ignoring it");
                Ok(None)
            }
        }
    }

    /// Removes this agent on the server (its listener token authenticates).
    async fn deregister(&self) -> anyhow::Result<()> {
        match self.ensure_token().await {
            Ok(()) => {}
            Err(PollError::Fatal(error)) => return Err(error),
            Err(PollError::Transient(error) | PollError::Unauthenticated(error)) => {
                bail!("cannot get a listener token to deregister: {error}")
            }
        }
        let result = with_retries("Deregister", 5, || {
            let mut client = ferry_client::registration(self.channel.clone(), self.bearer.clone());
            async move { client.deregister(DeregisterRequest {}).await }
        })
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(status) if status.code() == Code::NotFound => Ok(()),
            Err(status) => bail!(
                "the server refused to deregister the agent: {}",
                describe(&status)
            ),
        }
    }
}

/// What the slots share.
struct Shared {
    listener: Listener,
    context: JobContext,
    shutdown: ShutdownHandle,
    once: bool,
    connected: AtomicBool,
}

/// Runs the agent: polls for jobs and runs them until a signal (or after one
/// job with `--once`).
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let shutdown = ShutdownHandle::new();
    let signals = shutdown.listen_for_signals();
    let result = run_until(args, shutdown).await;
    signals.abort();
    result
}

/// [`run`] with the stop switch in the caller's hands instead of signals.
pub async fn run_until(args: RunArgs, shutdown: ShutdownHandle) -> anyhow::Result<()> {
    if args.max_jobs == 0 || args.max_jobs > MAX_JOBS_LIMIT {
        bail!("--max-jobs must be between 1 and {MAX_JOBS_LIMIT}");
    }
    if args.once && args.max_jobs > 1 {
        bail!("--once runs a single job: it cannot be combined with --max-jobs above 1");
    }
    let dir = AgentDir::new(&args.dir.dir);
    let configuration = dir.load()?;
    let settings = configuration.settings;
    let server_public_key = settings.server_public_key()?;
    let opener = Opener::new(configuration.secret_key, &server_public_key)
        .context("the server public key in the settings is not usable")?;
    let address = ServerAddress::new(settings.url.clone(), configuration.ca_pem);
    let proxy = address.proxy()?;
    let channel = address.connect_lazy()?;

    let spool_dir = dir.path().join(SPOOL_DIR);
    spool::discard_leftovers(&spool_dir);
    let spool_dir = match spool::create_dir(&spool_dir) {
        Ok(()) => Some(spool_dir),
        Err(error) => {
            tracing::warn!(dir = %spool_dir.display(), %error, "cannot create the log spool directory; unacknowledged log lines stay in memory");
            None
        }
    };

    let bearer = Bearer::none();
    let shared = Arc::new(Shared {
        listener: Listener {
            jobs: ferry_client::jobs(channel.clone(), bearer.clone()),
            settings: settings.clone(),
            opener: opener.clone(),
            channel: channel.clone(),
            bearer,
            refresh_at: Mutex::new(None),
        },
        context: JobContext {
            channel,
            settings: settings.clone(),
            opener,
            spool_dir,
            log_memory_lines: logs::MAX_UNACKED,
            final_ack_timeout: logs::FINAL_ACK_TIMEOUT,
        },
        shutdown,
        once: args.once,
        connected: AtomicBool::new(false),
    });
    match &proxy {
        Some(proxy) => {
            tracing::info!(url = %settings.url, proxy = %proxy, agent = %settings.name, pool = %settings.pool, max_jobs = args.max_jobs, "connecting through a proxy");
        }
        None => {
            tracing::info!(url = %settings.url, agent = %settings.name, pool = %settings.pool, max_jobs = args.max_jobs, "connecting");
        }
    }

    let mut slots = JoinSet::new();
    for slot_index in 0..args.max_jobs {
        slots.spawn(slot(slot_index, shared.clone()));
    }
    let mut first_error: Option<anyhow::Error> = None;
    let mut reports: Vec<JobReport> = Vec::new();
    while let Some(joined) = slots.join_next().await {
        match joined {
            Ok(Ok(Some(report))) => reports.push(report),
            Ok(Ok(None)) => {}
            Ok(Err(error)) => {
                shared.shutdown.drain();
                first_error.get_or_insert(error);
            }
            Err(error) => {
                shared.shutdown.drain();
                first_error.get_or_insert(anyhow::anyhow!("a poll slot failed: {error}"));
            }
        }
    }
    if let Some(error) = first_error {
        return Err(error);
    }
    if args.once {
        let Some(report) = reports.pop() else {
            tracing::info!("stopped before a job arrived; the agent stays registered");
            return Ok(());
        };
        println!(
            "job {} ({}): {} - {}",
            report.job_id,
            report.name,
            report.result_name(),
            report.message
        );
        let deregistered = shared.listener.deregister().await;
        remove_configuration(&dir);
        return match deregistered {
            Ok(()) => {
                tracing::info!(agent = %settings.name, agent_id = %settings.agent_id, "deregistered and removed the agent's configuration");
                Ok(())
            }
            Err(error) => Err(error.context(format!(
                "the job ran, but agent {} ({}) could not deregister; its key is deleted, remove it on the server",
                settings.name, settings.agent_id
            ))),
        };
    }
    tracing::info!("stopped");
    Ok(())
}

/// Deletes agent.key, agent.toml and ca.pem (an ephemeral agent is done).
fn remove_configuration(dir: &AgentDir) {
    for path in [dir.key_path(), dir.settings_path(), dir.ca_path()] {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::error!(path = %path.display(), %error, "cannot delete a configuration file");
            }
        }
    }
    let _ = std::fs::remove_dir(dir.path().join(SPOOL_DIR));
}

/// One poll slot: polls, runs the job it gets, polls again, until the agent
/// stops. Returns the report of its job with `--once`.
async fn slot(slot_index: u32, shared: Arc<Shared>) -> anyhow::Result<Option<JobReport>> {
    let settings = &shared.context.settings;
    let mut backoff = Backoff::default();
    let mut refused_in_a_row = 0u32;
    loop {
        if shared.shutdown.state() != ShutdownState::Running {
            return Ok(None);
        }
        let outcome = tokio::select! {
            () = shared.shutdown.reached(ShutdownState::Draining) => return Ok(None),
            outcome = shared.listener.next_job() => outcome,
        };
        let delay = match outcome {
            Ok(job) => {
                if !shared.connected.swap(true, Ordering::SeqCst) {
                    tracing::info!(url = %settings.url, agent = %settings.name, pool = %settings.pool, "connected, listening for jobs");
                }
                backoff.reset();
                refused_in_a_row = 0;
                let Some(job) = job else { continue };
                tracing::debug!(slot = slot_index, job_id = %job.job_id, "slot took a job");
                let report = run_job(&shared, job).await;
                if shared.once {
                    return Ok(Some(report));
                }
                continue;
            }
            Err(PollError::Fatal(error)) => return Err(error),
            Err(PollError::Unauthenticated(error)) => {
                shared.listener.invalidate().await;
                refused_in_a_row += 1;
                tracing::warn!(error = %error, "the listener token was refused; getting a new one");
                if refused_in_a_row < 2 {
                    continue;
                }
                backoff.next_delay()
            }
            Err(PollError::Transient(error)) => {
                shared.connected.store(false, Ordering::SeqCst);
                let delay = backoff.next_delay();
                tracing::warn!(url = %settings.url, error = %error, retry_in = %seconds(delay), "cannot reach the server, retrying");
                delay
            }
        };
        tokio::select! {
            () = shared.shutdown.reached(ShutdownState::Draining) => return Ok(None),
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// Runs one job; a drain request meanwhile lets it finish, a cancel request
/// cancels it.
async fn run_job(shared: &Shared, job: AgentJob) -> JobReport {
    let span = job::span(&job);
    let report = supervise_job(shared, job, &span).await;
    if shared.shutdown.state() != ShutdownState::Canceling {
        shared.listener.renew_after_job().instrument(span).await;
    }
    report
}

/// Runs the job in `span`, stopping it when the agent is.
async fn supervise_job(shared: &Shared, job: AgentJob, span: &tracing::Span) -> JobReport {
    let stop = StopSignal::new();
    let run = job::run_in(&shared.context, job, stop.clone(), span);
    tokio::pin!(run);
    let mut noted = false;
    loop {
        tokio::select! {
            report = &mut run => return report,
            () = shared.shutdown.reached(ShutdownState::Draining), if !noted => {
                noted = true;
                if shared.shutdown.state() == ShutdownState::Draining {
                    tracing::info!("stop requested: finishing the running job first");
                }
            }
            () = shared.shutdown.reached(ShutdownState::Canceling) => {
                stop.trigger(Stop::Canceled("the agent was stopped".into()));
                return (&mut run).await;
            }
        }
    }
}
