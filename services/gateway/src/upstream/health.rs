//! Health: every replica's `grpc.health.v1.Health/Check` for its route's
//! service, every interval; a replica that does not answer SERVING is
//! ejected from the balancer, one that does is (re-)admitted. The gateway's
//! own health service reports what is up.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};
use tonic::transport::Channel;
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus as Answer;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::server::HealthReporter;

use super::Upstreams;

impl Upstreams {
    /// Checks every replica once, concurrently, each within `timeout`.
    pub(crate) async fn check_all(&self, timeout: Duration) {
        let checks = self.routes.values().flat_map(|route| {
            let health = route.health.clone();
            (0..health.replicas.len()).map(move |index| {
                let health = health.clone();
                async move {
                    let channel = health.replicas[index].channel.clone();
                    let outcome = check_replica(&health.service, channel, timeout).await;
                    match outcome {
                        Ok(()) => health.set_health(index, true, "it answers SERVING"),
                        Err(reason) => health.set_health(index, false, &reason),
                    }
                }
            })
        });
        futures::future::join_all(checks).await;
    }

    /// Tells the gateway's own health service what is up: a service is
    /// SERVING while one of its replicas is healthy, "" while every route
    /// has one.
    pub(crate) async fn report(&self, reporter: &HealthReporter) {
        let mut all = true;
        for (service, route) in &self.routes {
            let up = route.health.healthy_count() > 0;
            all &= up;
            reporter.set_service_status(service, serving(up)).await;
        }
        reporter.set_service_status("", serving(all)).await;
    }
}

fn serving(up: bool) -> ServingStatus {
    if up {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    }
}

/// The least time a health check may take: a first check includes the TCP
/// and TLS handshakes, which a busy machine can make slow.
const MIN_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// How long one health check may take: max(interval, 2 s).
pub(crate) fn check_timeout(interval: Duration) -> Duration {
    interval.max(MIN_CHECK_TIMEOUT)
}

/// Checks replicas every `interval` until aborted.
pub(crate) async fn health_loop(
    upstreams: Arc<Upstreams>,
    reporter: HealthReporter,
    interval: Duration,
) {
    let mut ticker = tokio::time::interval_at(Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        upstreams.check_all(check_timeout(interval)).await;
        upstreams.report(&reporter).await;
    }
}

async fn check_replica(
    service: &str,
    channel: Channel,
    timeout: Duration,
) -> std::result::Result<(), String> {
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: service.to_owned(),
    });
    request.set_timeout(timeout);
    let answer = tokio::time::timeout(timeout, HealthClient::new(channel).check(request)).await;
    match answer {
        Err(_) => Err(format!("no health answer within {timeout:?}")),
        Ok(Err(status)) => Err(format!(
            "health check failed: {:?} {}",
            status.code(),
            status.message()
        )),
        Ok(Ok(response)) => match response.into_inner().status() {
            Answer::Serving => Ok(()),
            other => Err(format!("it answers {}", other.as_str_name())),
        },
    }
}
