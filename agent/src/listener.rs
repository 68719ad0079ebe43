//! `ferry-agent run`: the listener token, the long-poll loop with its
//! reconnect backoff, and shutdown on SIGINT/SIGTERM.

use std::time::Duration;

use anyhow::Context as _;
use ferry_client::{Authorized, Bearer, ServerAddress};
use ferry_envelope::{Envelope, Opener, job_context, listener_token_context};
use ferry_proto::v1::job_service_client::JobServiceClient;
use ferry_proto::v1::{
    AgentJob, GetListenerTokenRequest, ListenerToken, PollJobRequest, SealedEnvelope,
};
use prost::Message as _;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::Code;
use tonic::transport::Channel;

use crate::backoff::{Backoff, seconds};
use crate::cli::RunArgs;
use crate::job::{self, JobReport};
use crate::rpc::describe;
use crate::settings::{AgentDir, Settings};

/// How long the server may hold one poll.
pub const POLL_WAIT: Duration = Duration::from_secs(50);
/// Extra time the client gives a poll beyond `POLL_WAIT`.
pub const POLL_SLACK: Duration = Duration::from_secs(15);
/// How long a listener token call may take.
const TOKEN_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a poll failed.
enum PollError {
    /// The server could not be reached or failed; try again later.
    Transient(String),
    /// The listener token was refused; get a new one.
    Unauthenticated(String),
    /// Trying again cannot help.
    Fatal(anyhow::Error),
}

/// The agent's connection to the server while idle.
struct Listener {
    settings: Settings,
    opener: Opener,
    channel: Channel,
    bearer: Bearer,
    jobs: JobServiceClient<Authorized>,
    refresh_at: Option<Instant>,
}

impl Listener {
    /// Fetches and opens a new listener token.
    async fn refresh_token(&mut self) -> Result<(), PollError> {
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
                        "the server refused agent {} ({}) a listener token ({}): it may have been removed; \
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
        let plaintext = open(&self.opener, &listener_token_context(&agent_id), sealed).map_err(|error| {
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
        self.refresh_at = Some(Instant::now() + refresh_in);
        tracing::debug!(refresh_in = %seconds(refresh_in), "listener token refreshed");
        Ok(())
    }

    /// One long poll: a job, or `None` when the wait ended.
    async fn next_job(&mut self) -> Result<Option<AgentJob>, PollError> {
        if self
            .refresh_at
            .is_none_or(|refresh_at| Instant::now() >= refresh_at)
        {
            self.refresh_token().await?;
        }
        let mut request = tonic::Request::new(PollJobRequest {
            wait: Some(ferry_proto::time::duration_to_proto(POLL_WAIT)),
        });
        request.set_timeout(POLL_WAIT + POLL_SLACK);
        let response =
            match tokio::time::timeout(POLL_WAIT + POLL_SLACK, self.jobs.poll_job(request)).await {
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
                open(
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
}

/// Opens a sealed envelope.
fn open(
    opener: &Opener,
    context: &[u8],
    sealed: SealedEnvelope,
) -> anyhow::Result<zeroize::Zeroizing<Vec<u8>>> {
    let envelope = Envelope::from_parts(
        sealed.version,
        &sealed.ephemeral_public_key,
        &sealed.nonce,
        sealed.ciphertext,
    )
    .context("malformed envelope")?;
    opener
        .open(context, &envelope)
        .context("the envelope does not open")
}

/// SIGINT or SIGTERM received.
#[derive(Clone, Debug)]
struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    fn install() -> Shutdown {
        let (sender, receiver) = watch::channel(false);
        tokio::spawn(async move {
            tokio::select! {
                () = wait_for_signal() => {
                    let _ = sender.send(true);
                    // Keep the sender until the agent is done with it.
                    sender.closed().await;
                }
                () = sender.closed() => {}
            }
        });
        Shutdown(receiver)
    }

    fn requested(&self) -> bool {
        *self.0.borrow()
    }

    async fn wait(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
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

/// Runs the agent: polls for jobs and runs them until a signal (or after one
/// job with `--once`).
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let dir = AgentDir::new(&args.dir.dir);
    let configuration = dir.load()?;
    let settings = configuration.settings;
    let server_public_key = settings.server_public_key()?;
    let opener = Opener::new(configuration.secret_key, &server_public_key)
        .context("the server public key in the settings is not usable")?;
    let address = ServerAddress::new(settings.url.clone(), configuration.ca_pem);
    let channel = address.connect_lazy()?;
    let bearer = Bearer::none();
    let mut listener = Listener {
        jobs: ferry_client::jobs(channel.clone(), bearer.clone()),
        settings,
        opener,
        channel,
        bearer,
        refresh_at: None,
    };
    let mut shutdown = Shutdown::install();
    let mut backoff = Backoff::default();
    let mut connected = false;
    let mut refused_in_a_row = 0u32;
    let settings = listener.settings.clone();
    tracing::info!(url = %settings.url, agent = %settings.name, pool = %settings.pool, "connecting");
    loop {
        if shutdown.requested() {
            tracing::info!("stopping");
            return Ok(());
        }
        let outcome = tokio::select! {
            () = shutdown.wait() => {
                tracing::info!("signal received while idle, stopping");
                return Ok(());
            }
            outcome = listener.next_job() => outcome,
        };
        let delay = match outcome {
            Ok(job) => {
                if !connected {
                    connected = true;
                    tracing::info!(url = %settings.url, agent = %settings.name, pool = %settings.pool, "connected, listening for jobs");
                }
                backoff.reset();
                refused_in_a_row = 0;
                let Some(job) = job else { continue };
                let report = run_job(&listener, &mut shutdown, job).await;
                if args.once {
                    println!(
                        "job {} ({}): {} - {}",
                        report.job_id,
                        report.name,
                        report.result_name(),
                        report.message
                    );
                    return Ok(());
                }
                continue;
            }
            Err(PollError::Fatal(error)) => return Err(error),
            Err(PollError::Unauthenticated(error)) => {
                listener.refresh_at = None;
                refused_in_a_row += 1;
                tracing::warn!(error = %error, "the listener token was refused; getting a new one");
                if refused_in_a_row < 2 {
                    continue;
                }
                backoff.next_delay()
            }
            Err(PollError::Transient(error)) => {
                connected = false;
                let delay = backoff.next_delay();
                tracing::warn!(url = %settings.url, error = %error, retry_in = %seconds(delay), "cannot reach the server, retrying");
                delay
            }
        };
        tokio::select! {
            () = shutdown.wait() => {
                tracing::info!("signal received while idle, stopping");
                return Ok(());
            }
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// Runs one job; a stop request meanwhile is noted and honoured afterwards.
async fn run_job(listener: &Listener, shutdown: &mut Shutdown, job: AgentJob) -> JobReport {
    let run = job::run(listener.channel.clone(), &listener.settings, job);
    tokio::pin!(run);
    let mut noted = shutdown.requested();
    loop {
        tokio::select! {
            report = &mut run => return report,
            () = shutdown.wait(), if !noted => {
                noted = true;
                tracing::info!("stop requested: finishing the current job first");
            }
        }
    }
}
