//! The agent's side of a running job — step reports, lease renewal,
//! completion — and what ends jobs without their agent: cancellation and
//! the reaper (lapsed leases, server-side timeouts, unconfirmed cancels).

use std::sync::Arc;
use std::time::Duration;

use ferry_auth::{AdministratorIdentity, JobIdentity};
use ferry_envelope::PublicKey;
use ferry_proto::time::{now_micros, timestamp_from_micros};
use ferry_proto::v1::{
    AgentJobToken, CancelJobRequest, CancelJobResponse, CompleteJobRequest, CompleteJobResponse,
    JobState, RenewLeaseResponse, ReportStepRequest,
};
use ferry_service::{Error, Event, Result, sealed, validate, wire};
use ferry_store::{CancelOutcome, Holder, ReapOutcome, Reaped};
use prost::Message;

use crate::queue::QueuedJob;
use crate::{Dispatcher, convert, telemetry};

/// How often the mesh's safety sweep looks for queued jobs no replica knows.
const STALE_SWEEP: Duration = Duration::from_secs(5);
/// How long a job waits in the queue before the sweep offers it again.
const STALE_QUEUED: Duration = Duration::from_secs(5);

/// Envelope context of a renewed job token.
pub fn job_token_context(job_id: &str, agent_id: &str) -> Vec<u8> {
    format!("ferry/v1/job-token/{job_id}/{agent_id}").into_bytes()
}

fn holder(caller: &JobIdentity) -> Holder<'_> {
    Holder {
        agent_id: &caller.agent_id,
        attempt: caller.attempt,
    }
}

fn require_job(caller: &JobIdentity, job_id: &str) -> Result<()> {
    caller
        .require_job(job_id)
        .map_err(|status| Error::PermissionDenied(status.message().to_owned()))
}

fn lost_lease(error: ferry_store::Error) -> Error {
    match error {
        ferry_store::Error::Conflict(_) => Error::FailedPrecondition(
            "this agent no longer holds the job (lease lost, job ended or given to another agent): stop it".to_owned(),
        ),
        other => Error::Store(other),
    }
}

impl Dispatcher {
    /// Records a step's progress reported by the agent running the job.
    pub async fn report_step(
        &self,
        caller: &JobIdentity,
        request: ReportStepRequest,
    ) -> Result<()> {
        require_job(caller, &request.job_id)?;
        let report = wire::step_report(
            request.index,
            request.state,
            request.exit_code,
            request.time.as_ref(),
            now_micros(),
        )?;
        self.store()
            .update_step(
                &request.job_id,
                holder(caller),
                report.index,
                report.state,
                report.exit_code,
                report.at,
            )
            .await
            .map_err(lost_lease)?;
        Ok(())
    }

    /// Records the job's result; its token is dead from now on (every
    /// service refuses a job token whose job has ended).
    pub async fn complete_job(
        &self,
        caller: &JobIdentity,
        request: CompleteJobRequest,
    ) -> Result<CompleteJobResponse> {
        require_job(caller, &request.job_id)?;
        let end = wire::job_end(request.result, &request.message, now_micros())?;
        let state = end.state;
        self.store()
            .complete_job(&request.job_id, holder(caller), state, &end.message, end.at)
            .await
            .map_err(lost_lease)?;
        tracing::info!(job_id = %request.job_id, agent_id = %caller.agent_id, %state, "job completed");
        ferry_observability::metrics::job_finished(state.as_str());
        // Every dispatch replica hears it, this one too, and shows the agent
        // idle if it saw it busy with this job (`Dispatcher::job_done`), as
        // for a job completed on its log stream.
        self.inner.events.publish(Event::JobFinished {
            job_id: request.job_id.as_str().into(),
            agent_id: Some(caller.agent_id.as_str().into()),
        });
        Ok(CompleteJobResponse {
            state: convert::job_state(state).into(),
        })
    }

    /// Extends the caller's lease and hands it a fresh job token.
    pub async fn renew_lease(
        &self,
        caller: &JobIdentity,
        job_id: &str,
    ) -> Result<RenewLeaseResponse> {
        require_job(caller, job_id)?;
        let now = now_micros();
        let lease = self.inner.config.lease_duration;
        let renewal = self
            .store()
            .renew_lease(job_id, holder(caller), now, now + lease.as_micros() as i64)
            .await
            .map_err(lost_lease)?;
        let agent = self
            .store()
            .agent(&caller.agent_id)
            .await?
            .ok_or_else(|| Error::Unauthenticated("this agent was removed".to_owned()))?;
        let (job_token, expires) = self.sign_job_token(
            job_id,
            &caller.agent_id,
            &agent.pool_id,
            &caller.project,
            &caller.pipeline,
            caller.attempt,
        )?;
        let plaintext = AgentJobToken {
            job_token,
            expire_time: Some(timestamp_from_micros(expires * 1_000_000)),
        }
        .encode_to_vec();
        let envelope = self.inner.sealers.seal(
            &PublicKey::from_slice(&agent.public_key)?,
            &job_token_context(job_id, &caller.agent_id),
            &plaintext,
        )?;
        Ok(RenewLeaseResponse {
            lease_expire_time: Some(timestamp_from_micros(renewal.lease_expires_at)),
            sealed_job_token: Some(sealed::to_proto(envelope)),
            cancel_requested: renewal.cancel_requested,
        })
    }

    /// Cancels a job of a pool the caller administers.
    pub async fn cancel_job(
        &self,
        caller: &AdministratorIdentity,
        request: CancelJobRequest,
    ) -> Result<CancelJobResponse> {
        validate::id("job_id", &request.job_id)?;
        validate::max_len("reason", &request.reason, 1024)?;
        let job = self
            .store()
            .job(&request.job_id)
            .await?
            .filter(|job| caller.administers(&job.pool_id))
            .ok_or_else(|| Error::NotFound(format!("job {} not found", request.job_id)))?;
        let reason = if request.reason.is_empty() {
            format!("canceled by {}", caller.name)
        } else {
            format!("canceled by {}: {}", caller.name, request.reason)
        };
        let state = match self
            .store()
            .request_cancel(&job.id, &reason, now_micros())
            .await?
        {
            CancelOutcome::Canceled => {
                ferry_observability::metrics::job_finished("canceled");
                self.inner.hand_off.remove(&job.pool_id, &job.id);
                self.inner.events.publish(Event::JobFinished {
                    job_id: job.id.as_str().into(),
                    agent_id: None,
                });
                JobState::Canceled
            }
            CancelOutcome::Requested => {
                self.inner.events.publish(Event::CancelRequested {
                    job_id: job.id.as_str().into(),
                });
                convert::job_state(job.state)
            }
            CancelOutcome::AlreadyFinished(state) => convert::job_state(state),
        };
        tracing::info!(job_id = %job.id, by = %caller.name, state = state.as_str_name(), "job cancel requested");
        Ok(CancelJobResponse {
            state: state.into(),
        })
    }

    /// Runs the reaper until the dispatcher is dropped: every `interval`,
    /// ends or requeues jobs whose agent's lease lapsed, that ran past their
    /// timeout, or whose cancel the agent never confirmed.
    pub(crate) fn spawn_reaper(&self) {
        let weak = Arc::downgrade(&self.inner);
        let interval = self.inner.config.reap_interval;
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_sweep = tokio::time::Instant::now();
            loop {
                ticker.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let dispatcher = Dispatcher { inner };
                if let Err(error) = dispatcher.reap().await {
                    tracing::warn!(error = %error, "reaper pass failed");
                }
                // In the mesh, a replica that dies between storing a job and
                // notifying the others leaves it known to none of them: a
                // slow sweep offers jobs that have waited past STALE_QUEUED.
                // (Hand-off itself never waits for this: it is event-driven.)
                if dispatcher.inner.events.is_shared() && last_sweep.elapsed() >= STALE_SWEEP {
                    last_sweep = tokio::time::Instant::now();
                    let before = now_micros() - micros(STALE_QUEUED);
                    match dispatcher.load_queued_before(before).await {
                        Ok(0) => {}
                        Ok(offered) => {
                            tracing::info!(jobs = offered, "stale queued jobs offered again")
                        }
                        Err(error) => tracing::warn!(error = %error, "stale-queue sweep failed"),
                    }
                }
            }
        });
    }

    async fn reap(&self) -> Result<()> {
        let now = now_micros();
        let config = &self.inner.config;
        let mut reaped = self.store().reap_lapsed_leases(now).await?;
        for lapsed in &reaped {
            telemetry::lease_expired(&lapsed.outcome);
        }
        reaped.extend(
            self.store()
                .reap_timed_out(now, micros(config.timeout_grace))
                .await?,
        );
        reaped.extend(
            self.store()
                .reap_unconfirmed_cancels(now, micros(config.cancel_grace))
                .await?,
        );
        for job in reaped {
            self.after_reap(job).await?;
        }
        Ok(())
    }

    async fn after_reap(&self, reaped: Reaped) -> Result<()> {
        match reaped.outcome {
            ReapOutcome::Requeued { attempt } => {
                tracing::warn!(job_id = %reaped.job_id, agent_id = ?reaped.agent_id, attempt, "agent lost before the job started; requeued");
                if let Some(job) = self.store().job(&reaped.job_id).await? {
                    if let Some(pool) = self.store().pool_by_id(&reaped.pool_id).await? {
                        telemetry::queued(&pool.name);
                    }
                    self.enqueue(&reaped.pool_id, QueuedJob::stored(job.id, job.demands))
                        .await?;
                }
            }
            ReapOutcome::Failed | ReapOutcome::Canceled => {
                ferry_observability::metrics::job_finished(match reaped.outcome {
                    ReapOutcome::Canceled => "canceled",
                    _ => "failed",
                });
                tracing::warn!(job_id = %reaped.job_id, agent_id = ?reaped.agent_id, outcome = ?reaped.outcome, "job ended by the server");
                self.inner.events.publish(Event::JobFinished {
                    job_id: reaped.job_id.as_str().into(),
                    agent_id: None,
                });
            }
        }
        Ok(())
    }
}

fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}
