//! A simulated agent speaking the real protocol with ferry's client code:
//! registers its own key, opens its sealed listener token and jobs, reports
//! and completes. For tests that need many agents or agents that misbehave.

use anyhow::Context;
use ferry_client::Bearer;
use ferry_envelope::{Envelope, Opener, PublicKey, SecretKey};
use ferry_proto::v1::{
    AgentJob, CompleteJobRequest, GetListenerTokenRequest, JobResult, ListenerToken,
    PollJobRequest, RegisterRequest, ReportStepRequest, SealedEnvelope, StepState,
};
use prost::Message;
use tonic::transport::Channel;

/// One simulated agent.
pub struct SimAgent {
    /// Its id.
    pub id: String,
    opener: Opener,
    channel: Channel,
    listener: Bearer,
}

fn envelope(sealed: Option<SealedEnvelope>) -> anyhow::Result<Envelope> {
    let sealed = sealed.context("nothing sealed")?;
    Ok(Envelope::from_parts(
        sealed.version,
        &sealed.ephemeral_public_key,
        &sealed.nonce,
        sealed.ciphertext,
    )?)
}

impl SimAgent {
    /// Registers in `pool` through `channel` with an administrator's PAT and
    /// fetches a listener token.
    pub async fn register(
        channel: Channel,
        pat: &Bearer,
        pool: &str,
        name: &str,
    ) -> anyhow::Result<SimAgent> {
        Self::register_with(channel, pat, pool, name, &[]).await
    }

    /// Like [`SimAgent::register`], offering `capabilities`.
    pub async fn register_with(
        channel: Channel,
        pat: &Bearer,
        pool: &str,
        name: &str,
        capabilities: &[(&str, &str)],
    ) -> anyhow::Result<SimAgent> {
        let secret = SecretKey::generate()?;
        let registered = ferry_client::registration(channel.clone(), pat.clone())
            .register(RegisterRequest {
                pool: pool.to_owned(),
                name: name.to_owned(),
                public_key: secret.public_key().as_bytes().to_vec(),
                capabilities: capabilities
                    .iter()
                    .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                    .collect(),
                ..Default::default()
            })
            .await?
            .into_inner();
        let opener = Opener::new(
            secret,
            &PublicKey::from_slice(&registered.server_public_key)?,
        )?;
        let agent = SimAgent {
            id: registered.agent_id,
            opener,
            channel,
            listener: Bearer::none(),
        };
        agent.refresh().await?;
        Ok(agent)
    }

    /// Fetches and opens a new listener token.
    pub async fn refresh(&self) -> anyhow::Result<()> {
        let sealed = ferry_client::tokens(self.channel.clone())
            .get_listener_token(GetListenerTokenRequest {
                agent_id: self.id.clone(),
            })
            .await?
            .into_inner()
            .sealed_token;
        let plaintext = self.opener.open(
            &ferry_envelope::listener_token_context(&self.id),
            &envelope(sealed)?,
        )?;
        self.listener
            .set(&ListenerToken::decode(plaintext.as_slice())?.access_token)?;
        Ok(())
    }

    /// The listener token it holds now.
    pub fn listener(&self) -> Bearer {
        self.listener.clone()
    }

    /// One long poll of up to `wait_seconds`: the opened job, if any.
    pub async fn poll(&self, wait_seconds: i64) -> Result<Option<AgentJob>, tonic::Status> {
        let response = ferry_client::jobs(self.channel.clone(), self.listener.clone())
            .poll_job(PollJobRequest {
                wait: Some(prost_types::Duration {
                    seconds: wait_seconds,
                    nanos: 0,
                }),
            })
            .await?
            .into_inner();
        if response.job_id.is_empty() {
            return Ok(None);
        }
        let opened = envelope(response.sealed_job)
            .and_then(|sealed| {
                Ok(self.opener.open(
                    &ferry_envelope::job_context(&response.job_id, &self.id),
                    &sealed,
                )?)
            })
            .map_err(|error| tonic::Status::internal(format!("cannot open the job: {error}")))?;
        AgentJob::decode(opened.as_slice())
            .map(Some)
            .map_err(|error| tonic::Status::internal(format!("cannot decode the job: {error}")))
    }

    /// Runs a job without running anything: every step reported succeeded,
    /// then the job completed.
    pub async fn complete(&self, job: &AgentJob) -> Result<(), tonic::Status> {
        let bearer = Bearer::new(&job.job_token)?;
        let mut jobs = ferry_client::jobs(self.channel.clone(), bearer);
        for index in 0..job.steps.len() as u32 {
            jobs.report_step(ReportStepRequest {
                job_id: job.job_id.clone(),
                index,
                state: StepState::Running.into(),
                ..Default::default()
            })
            .await?;
            jobs.report_step(ReportStepRequest {
                job_id: job.job_id.clone(),
                index,
                state: StepState::Succeeded.into(),
                exit_code: Some(0),
                ..Default::default()
            })
            .await?;
        }
        jobs.complete_job(CompleteJobRequest {
            job_id: job.job_id.clone(),
            result: JobResult::Succeeded.into(),
            message: String::new(),
        })
        .await?;
        Ok(())
    }
}
