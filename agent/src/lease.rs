//! Keeping a running job's lease: `JobService.RenewLease` every third of the
//! lease, switching the job's credential to the fresh job token each answer
//! carries (a job token lives only as long as the lease).
//!
//! Transient failures are retried with a short backoff. `FAILED_PRECONDITION`
//! or `UNAUTHENTICATED` means the lease is lost (the server gave the job to
//! another agent, or ended it): the job is stopped and not completed.

use std::time::Duration;

use ferry_client::{Authorized, Bearer};
use ferry_envelope::Opener;
use ferry_proto::v1::job_service_client::JobServiceClient;
use ferry_proto::v1::{AgentJobToken, RenewLeaseRequest};
use prost::Message as _;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};
use tonic::Code;
use tracing::Instrument as _;

use crate::backoff::{Backoff, seconds};
use crate::rpc::{describe, job_token_context, open_sealed};
use crate::stop::{Stop, StopSignal};

/// The lease when the job names none.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// The shortest renewal interval, whatever the lease.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// What the renewer needs.
#[derive(Clone)]
pub struct Lease {
    /// The job.
    pub job_id: String,
    /// This agent (part of the sealed token's context).
    pub agent_id: String,
    /// How long the lease lasts; renewed at a third of it.
    pub duration: Duration,
    /// Opens the sealed tokens.
    pub opener: Opener,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Lease")
            .field("job_id", &self.job_id)
            .field("duration", &self.duration)
            .finish_non_exhaustive()
    }
}

impl Lease {
    /// How often the lease is renewed.
    pub fn interval(&self) -> Duration {
        (self.duration / 3).max(MIN_INTERVAL)
    }
}

/// Why one renewal failed.
enum Failure {
    /// Try again soon.
    Retry(String),
    /// The lease is gone.
    Lost(String),
    /// The server does not renew leases at all.
    Unsupported(String),
}

/// Starts renewing; the task runs until aborted or the lease is lost.
/// `bearer` is the job's credential, switched to every renewed token.
pub fn spawn(
    jobs: JobServiceClient<Authorized>,
    bearer: Bearer,
    lease: Lease,
    stop: StopSignal,
) -> JoinHandle<()> {
    tokio::spawn(renew(jobs, bearer, lease, stop).in_current_span())
}

async fn renew(jobs: JobServiceClient<Authorized>, bearer: Bearer, lease: Lease, stop: StopSignal) {
    let interval = lease.interval();
    let mut backoff = Backoff::new(Duration::from_millis(200).min(interval), interval);
    let mut next = Instant::now() + interval;
    loop {
        sleep_until(next).await;
        match renew_once(&jobs, &bearer, &lease, interval).await {
            Ok(cancel_requested) => {
                backoff.reset();
                next = Instant::now() + interval;
                if cancel_requested
                    && stop.trigger(Stop::Canceled("the job was canceled on the server".into()))
                {
                    tracing::info!(job_id = %lease.job_id, "the server asked to cancel the job");
                }
            }
            Err(Failure::Lost(reason)) => {
                stop.trigger(Stop::LeaseLost(reason));
                return;
            }
            Err(Failure::Unsupported(reason)) => {
                tracing::warn!(job_id = %lease.job_id, error = %reason, "the server does not renew leases; running the job on its first token");
                return;
            }
            Err(Failure::Retry(reason)) => {
                let delay = backoff.next_delay();
                tracing::warn!(job_id = %lease.job_id, error = %reason, retry_in = %seconds(delay), "cannot renew the job's lease, retrying");
                next = Instant::now() + delay;
            }
        }
    }
}

/// One renewal; `Ok(cancel_requested)`.
async fn renew_once(
    jobs: &JobServiceClient<Authorized>,
    bearer: &Bearer,
    lease: &Lease,
    timeout: Duration,
) -> Result<bool, Failure> {
    let timeout = timeout.max(Duration::from_secs(1));
    let mut request = tonic::Request::new(RenewLeaseRequest {
        job_id: lease.job_id.clone(),
    });
    request.set_timeout(timeout);
    let mut jobs = jobs.clone();
    let response = match tokio::time::timeout(timeout, jobs.renew_lease(request)).await {
        Err(_) => return Err(Failure::Retry("the call timed out".into())),
        Ok(Err(status)) => {
            return Err(match status.code() {
                Code::FailedPrecondition | Code::Unauthenticated => {
                    Failure::Lost(describe(&status))
                }
                Code::Unimplemented => Failure::Unsupported(describe(&status)),
                // Transient or not, another try may do: only the two codes
                // above end the lease.
                _ => Failure::Retry(describe(&status)),
            });
        }
        Ok(Ok(response)) => response.into_inner(),
    };
    if let Some(sealed) = response.sealed_job_token {
        let context = job_token_context(&lease.job_id, &lease.agent_id);
        let plaintext = open_sealed(&lease.opener, &context, sealed).map_err(|error| {
            Failure::Retry(format!("the renewed job token does not open: {error:#}"))
        })?;
        let token = AgentJobToken::decode(plaintext.as_slice())
            .map_err(|_| Failure::Retry("the renewed job token does not decode".into()))?;
        if !token.job_token.is_empty() {
            bearer.set(&token.job_token).map_err(|_| {
                Failure::Retry("the renewed job token has characters a header cannot carry".into())
            })?;
            tracing::debug!(job_id = %lease.job_id, "lease renewed, job token switched");
        }
    }
    Ok(response.cancel_requested)
}
