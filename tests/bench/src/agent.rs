//! A simulated agent: what `ferry-agent` does on the wire, without running
//! scripts. It registers (with the administrator's PAT, as `ferry-agent
//! configure` does), holds its own TLS connection, fetches and opens its
//! listener token, long-polls, opens each sealed job with its own key, and
//! reports, logs and completes it with the job token from inside the job.

use std::time::Duration;

use anyhow::{Context, bail};
use ferry_agent::rpc::open_sealed;
use ferry_client::{Authorized, Bearer, ServerAddress};
use ferry_envelope::{Opener, PublicKey, SecretKey, job_context, listener_token_context};
use ferry_proto::v1::job_service_client::JobServiceClient;
use ferry_proto::v1::registration_service_client::RegistrationServiceClient;
use ferry_proto::v1::{
    AgentJob, CompleteJobRequest, GetListenerTokenRequest, JobResult, ListenerToken,
    PollJobRequest, RegisterRequest, ReportStepRequest, StepState,
};
use prost::Message as _;
use tokio::time::Instant;
use tonic::Code;
use tonic::transport::Channel;

/// The capability every simulated agent of a run offers (`KEY=<run id>`),
/// and every job of the run demands, so runs against a shared server never
/// take each other's jobs.
pub const RUN_LABEL: &str = "ferry-bench.run";

/// How long a poll may be held (ferry-agent asks for 50 s).
pub const POLL_WAIT: Duration = Duration::from_secs(50);
/// Client deadline beyond the wait (docs/protocol.md: wait + 15 s).
pub const POLL_SLACK: Duration = Duration::from_secs(15);
/// Deadline of every other call.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A registered agent: its id and the keys to open what is sealed to it.
#[derive(Debug)]
pub struct Identity {
    /// Its name in the pool.
    pub name: String,
    /// The id the server gave it.
    pub agent_id: String,
    /// Its private key and the server's public key.
    pub opener: Opener,
}

/// Registers one agent with a fresh key, offering `run_label`.
pub async fn register(
    registration: &mut RegistrationServiceClient<Authorized>,
    pool: &str,
    name: String,
    run_label: &str,
) -> anyhow::Result<Identity> {
    let secret = SecretKey::generate().context("cannot make a key")?;
    let request = RegisterRequest {
        pool: pool.to_owned(),
        name: name.clone(),
        public_key: secret.public_key().to_bytes().to_vec(),
        capabilities: [
            ("os".to_owned(), std::env::consts::OS.to_owned()),
            ("arch".to_owned(), std::env::consts::ARCH.to_owned()),
            (RUN_LABEL.to_owned(), run_label.to_owned()),
        ]
        .into_iter()
        .collect(),
        replace: true,
    };
    let response = registration
        .register(with_timeout(request, CALL_TIMEOUT))
        .await
        .with_context(|| format!("cannot register agent {name}"))?
        .into_inner();
    let server_public = PublicKey::from_slice(&response.server_public_key)
        .context("the server public key is not 32 bytes")?;
    let opener = Opener::new(secret, &server_public).context("unusable server key")?;
    Ok(Identity {
        name,
        agent_id: response.agent_id,
        opener,
    })
}

/// A job the agent holds, opened.
#[derive(Debug)]
pub struct Opened {
    /// The decrypted job.
    pub job: AgentJob,
    /// When it was opened (after decrypting and decoding).
    pub at: Instant,
}

/// An agent on its own connection, holding a listener token.
#[derive(Debug)]
pub struct Connected {
    /// Who it is.
    pub identity: Identity,
    channel: Channel,
    jobs: JobServiceClient<Authorized>,
    listener: Bearer,
}

impl Connected {
    /// Opens the agent's own connection (TCP + TLS + HTTP/2) and gets its
    /// first listener token.
    pub async fn connect(address: &ServerAddress, identity: Identity) -> anyhow::Result<Self> {
        let channel = address.connect().await?;
        let listener = Bearer::none();
        let mut agent = Connected {
            identity,
            jobs: ferry_client::jobs(channel.clone(), listener.clone()),
            channel,
            listener,
        };
        agent.refresh_listener_token().await?;
        Ok(agent)
    }

    /// GetListenerToken, opened with the agent's key.
    pub async fn refresh_listener_token(&mut self) -> anyhow::Result<()> {
        let agent_id = self.identity.agent_id.clone();
        let response = ferry_client::tokens(self.channel.clone())
            .get_listener_token(with_timeout(
                GetListenerTokenRequest {
                    agent_id: agent_id.clone(),
                },
                CALL_TIMEOUT,
            ))
            .await
            .context("GetListenerToken")?
            .into_inner();
        let sealed = response.sealed_token.context("no sealed listener token")?;
        let plaintext = open_sealed(
            &self.identity.opener,
            &listener_token_context(&agent_id),
            sealed,
        )?;
        let token = ListenerToken::decode(plaintext.as_slice())?;
        self.listener
            .set(&token.access_token)
            .map_err(|status| anyhow::anyhow!("{status}"))?;
        Ok(())
    }

    /// One long poll; `None` when the wait ended without a job. Gets a new
    /// listener token once if the old one was refused.
    pub async fn poll(&mut self, wait: Duration) -> anyhow::Result<Option<Opened>> {
        let mut refreshed = false;
        let response = loop {
            let request = with_timeout(
                PollJobRequest {
                    wait: Some(ferry_proto::time::duration_to_proto(wait)),
                },
                wait + POLL_SLACK,
            );
            match self.jobs.poll_job(request).await {
                Ok(response) => break response.into_inner(),
                Err(status) if status.code() == Code::Unauthenticated && !refreshed => {
                    refreshed = true;
                    self.refresh_listener_token().await?;
                }
                Err(status) => return Err(status).context("PollJob"),
            }
        };
        if response.job_id.is_empty() {
            return Ok(None);
        }
        let sealed = response.sealed_job.context("a job id but no sealed job")?;
        let context = job_context(&response.job_id, &self.identity.agent_id);
        let plaintext = open_sealed(&self.identity.opener, &context, sealed)?;
        let job = AgentJob::decode(plaintext.as_slice()).context("the job does not decode")?;
        let at = Instant::now();
        if job.job_id != response.job_id {
            bail!(
                "the sealed job names job {}, not {}",
                job.job_id,
                response.job_id
            );
        }
        Ok(Some(Opened { job, at }))
    }

    /// The job's clients, authorized with its job token.
    pub fn job_session(&self, job: &AgentJob) -> anyhow::Result<JobSession> {
        let bearer = Bearer::new(&job.job_token).map_err(|status| anyhow::anyhow!("{status}"))?;
        Ok(JobSession {
            job_id: job.job_id.clone(),
            jobs: ferry_client::jobs(self.channel.clone(), bearer.clone()),
            logs: ferry_client::logs(self.channel.clone(), bearer),
        })
    }
}

/// Calls made with one job's token.
#[derive(Debug, Clone)]
pub struct JobSession {
    /// The job.
    pub job_id: String,
    /// Job service with the job token.
    pub jobs: JobServiceClient<Authorized>,
    /// Log service with the job token.
    pub logs: ferry_proto::v1::log_service_client::LogServiceClient<Authorized>,
}

impl JobSession {
    /// ReportStep for step 0.
    pub async fn report_step(
        &self,
        state: StepState,
        exit_code: Option<i32>,
    ) -> anyhow::Result<()> {
        let request = ReportStepRequest {
            job_id: self.job_id.clone(),
            index: 0,
            state: state as i32,
            exit_code,
            time: Some(ferry_proto::time::now()),
        };
        self.jobs
            .clone()
            .report_step(with_timeout(request, CALL_TIMEOUT))
            .await
            .with_context(|| format!("ReportStep {state:?} of job {}", self.job_id))?;
        Ok(())
    }

    /// CompleteJob as succeeded.
    pub async fn complete(&self) -> anyhow::Result<()> {
        let request = CompleteJobRequest {
            job_id: self.job_id.clone(),
            result: JobResult::Succeeded as i32,
            message: String::new(),
        };
        self.jobs
            .clone()
            .complete_job(with_timeout(request, CALL_TIMEOUT))
            .await
            .with_context(|| format!("CompleteJob of job {}", self.job_id))?;
        Ok(())
    }
}

/// A request with a deadline (sent as `grpc-timeout`).
pub fn with_timeout<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}
