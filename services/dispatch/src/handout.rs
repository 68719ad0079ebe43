//! What a poll hands the agent: the job's spec and secrets with a fresh
//! job token, sealed to the agent's key in the job's context.

use std::time::Duration;

use ferry_auth::token::{Audience, Claims, scope};
use ferry_envelope::job_context;
use ferry_proto::time::{duration_to_proto, now_micros, timestamp_from_micros};
use ferry_proto::v1::{AgentJob, JobSpec, PollJobResponse};
use ferry_service::{Error, Result, sealed};
use prost::Message;
use tracing::Instrument as _;

use crate::polling::PollingAgent;
use crate::queue::QueuedJob;
use crate::{Dispatcher, telemetry};

impl Dispatcher {
    /// Builds the job for the agent: spec, secrets and a fresh job token,
    /// sealed to the agent's key in the job's context.
    pub(crate) async fn seal_job(
        &self,
        agent: &PollingAgent,
        queued: &QueuedJob,
    ) -> Result<PollJobResponse> {
        let (job, spec) = match &queued.prepared {
            Some(prepared) => (prepared.job.clone(), prepared.spec.clone()),
            None => self.stored_job(&queued.id).await?,
        };
        let span = telemetry::dispatch_span(&job, &agent.id);
        self.seal_claimed_job(agent, job, spec)
            .instrument(span.clone())
            .await
    }

    /// A claimed job's row and spec, read from the store.
    async fn stored_job(&self, job_id: &str) -> Result<(ferry_store::Job, JobSpec)> {
        let job = self
            .store()
            .job(job_id)
            .await?
            .ok_or_else(|| Error::Internal(format!("claimed job {job_id} vanished")))?;
        let spec = JobSpec::decode(self.store().job_spec(job_id).await?.as_slice())
            .map_err(|_| Error::Internal(format!("stored spec of job {job_id} does not decode")))?;
        Ok((job, spec))
    }

    async fn seal_claimed_job(
        &self,
        agent: &PollingAgent,
        job: ferry_store::Job,
        spec: JobSpec,
    ) -> Result<PollJobResponse> {
        let job_id = job.id.as_str();
        let traceparent = telemetry::handed_traceparent(&tracing::Span::current(), &job);
        let timeout = Duration::from_secs(job.timeout_seconds.max(0) as u64);
        let (job_token, expires) = self.sign_job_token(
            job_id,
            &agent.id,
            &agent.pool_id,
            &job.project,
            &job.pipeline,
            job.attempt,
        )?;
        let payload = AgentJob {
            job_id: job_id.to_owned(),
            name: spec.name,
            project: job.project.clone(),
            pipeline: job.pipeline.clone(),
            attempt: job.attempt,
            steps: spec.steps,
            variables: spec.variables,
            secrets: spec.secrets,
            job_token,
            job_token_expire_time: Some(timestamp_from_micros(expires * 1_000_000)),
            timeout: Some(duration_to_proto(timeout)),
            source_id: job.source_id.clone().unwrap_or_default(),
            test_results: spec.test_results,
            artifacts: spec.artifacts,
            lease_duration: Some(duration_to_proto(self.inner.config.lease_duration)),
            traceparent,
        };
        let envelope = self.inner.sealers.seal(
            &agent.public_key,
            &job_context(job_id, &agent.id),
            &payload.encode_to_vec(),
        )?;
        self.store().handed_out_to(&job, &agent.id);
        tracing::info!(job_id, agent_id = %agent.id, "job dispatched");
        telemetry::dispatched(&job);
        self.set_agent_status(&agent.id, ferry_store::AgentStatus::Busy, Some(job_id));
        Ok(PollJobResponse {
            job_id: job_id.to_owned(),
            sealed_job: Some(sealed::to_proto(envelope)),
        })
    }

    /// Signs a job token for one attempt of a job; it lives two leases and
    /// is renewed with the lease. Returns it with its expiry (seconds).
    pub(crate) fn sign_job_token(
        &self,
        job_id: &str,
        agent_id: &str,
        pool_id: &str,
        project: &str,
        pipeline: &str,
        attempt: u32,
    ) -> Result<(String, i64)> {
        let now = now_micros() / 1_000_000;
        let expires = now + 2 * self.inner.config.lease_duration.as_secs().max(1) as i64;
        let claims = Claims {
            iss: String::new(),
            sub: format!("job:{job_id}"),
            aud: Audience::Job.as_str().to_owned(),
            exp: expires,
            iat: now,
            jti: uuid::Uuid::new_v4().to_string(),
            client_id: agent_id.to_owned(),
            scope: [scope::JOB_LOGS, scope::JOB_STATUS, scope::JOB_RESOURCES].join(" "),
            pool_id: Some(pool_id.to_owned()),
            agent_id: Some(agent_id.to_owned()),
            job_id: Some(job_id.to_owned()),
            project: Some(project.to_owned()),
            pipeline: Some(pipeline.to_owned()),
            attempt: Some(attempt),
        };
        let token = self
            .inner
            .signer
            .sign(&claims)
            .map_err(|error| Error::Internal(error.to_string()))?;
        ferry_observability::metrics::token_issued("job");
        Ok((token, expires))
    }
}
