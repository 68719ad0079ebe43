//! Replicas that die: ejection, retries of idempotent calls, UNAVAILABLE
//! when none is left, and re-admission when one comes back.

mod support;

use std::time::Duration;

use ferry_proto::v1::job_service_client::JobServiceClient;
use ferry_proto::v1::token_service_client::TokenServiceClient;
use ferry_proto::v1::{GetListenerTokenRequest, QueueJobRequest};
use support::*;
use tonic::Code;
use tonic::transport::Channel;

async fn token(channel: &Channel) -> Result<String, tonic::Status> {
    TokenServiceClient::new(channel.clone())
        .get_listener_token(GetListenerTokenRequest::default())
        .await
        .map(|response| replica_of(&response))
}

async fn queue(channel: &Channel) -> Result<String, tonic::Status> {
    JobServiceClient::new(channel.clone())
        .queue_job(QueueJobRequest::default())
        .await
        .map(|response| replica_of(&response))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_calls_are_retried_at_once_on_another_replica() {
    let mesh = Mesh::new();
    let mut tokens = replicas(&mesh, "tokens", 2).await;
    let mut config = mesh.gateway_config().route(TOKEN, urls(&tokens));
    // Health checks too slow to matter: only the failed calls eject.
    config.health_interval = Duration::from_secs(600);
    let gateway = ferry_gateway::start(config).await.expect("gateway");
    let channel = connect(&mesh, &gateway).await;
    for _ in 0..10 {
        token(&channel).await.expect("both up");
    }
    assert!(tokens[0].calls() > 0 && tokens[1].calls() > 0);

    tokens[0].kill().await;
    // Every call succeeds at once: one that lands on the dead replica is
    // sent again to the live one.
    for call in 0..20 {
        let replica = token(&channel).await.unwrap_or_else(|status| {
            panic!("call {call} failed: {status:?}");
        });
        assert_eq!(replica, "tokens-1");
    }
    gateway.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_replicas_are_ejected_and_readmitted_when_they_answer_again() {
    let mesh = Mesh::new();
    let mut jobs = replicas(&mesh, "dispatch", 2).await;
    let gateway = ferry_gateway::start(mesh.gateway_config().route(JOB, urls(&jobs)))
        .await
        .expect("gateway");
    let channel = connect(&mesh, &gateway).await;
    for _ in 0..10 {
        queue(&channel).await.expect("both up");
    }

    let address = jobs[0].address;
    jobs[0].kill().await;
    // Once the health checks (every 200 ms) eject it, non-idempotent calls
    // all go to the survivor.
    tokio::time::sleep(Duration::from_millis(800)).await;
    for call in 0..20 {
        let replica = queue(&channel).await.unwrap_or_else(|status| {
            panic!("call {call} failed: {status:?}");
        });
        assert_eq!(replica, "dispatch-1");
    }

    // Back on the same port: re-admitted, and sees calls again.
    let back = Replica::start(&mesh, "dispatch", "dispatch-0-again", address).await;
    eventually("the replica is re-admitted", async || {
        for _ in 0..10 {
            if queue(&channel).await.ok().as_deref() == Some("dispatch-0-again") {
                return true;
            }
        }
        false
    })
    .await;
    assert!(back.calls() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_healthy_replica_is_unavailable_with_a_clear_message() {
    let mesh = Mesh::new();
    let mut tokens = replicas(&mesh, "tokens", 2).await;
    let mut jobs = replicas(&mesh, "dispatch", 1).await;
    let config = mesh
        .gateway_config()
        .route(TOKEN, urls(&tokens))
        .route(JOB, urls(&jobs));
    let gateway = ferry_gateway::start(config).await.expect("gateway");
    let channel = connect(&mesh, &gateway).await;
    token(&channel).await.expect("up");
    queue(&channel).await.expect("up");

    for replica in tokens.iter_mut().chain(jobs.iter_mut()) {
        replica.kill().await;
    }
    // Whether a call finds the replicas ejected already or is the one that
    // finds them dead, it ends UNAVAILABLE; once they are ejected, with the
    // message.
    eventually("both routes answer no healthy replica", async || {
        let tokens = token(&channel).await.expect_err("all down");
        let jobs = queue(&channel).await.expect_err("all down");
        assert_eq!(tokens.code(), Code::Unavailable, "{tokens:?}");
        assert_eq!(jobs.code(), Code::Unavailable, "{jobs:?}");
        tokens.message() == "no healthy replica of ferry.v1.TokenService"
            && jobs.message() == "no healthy replica of ferry.v1.JobService"
    })
    .await;
}

#[tokio::test]
async fn a_gateway_started_before_its_replicas_answers_unavailable_at_once() {
    let mesh = Mesh::new();
    // A port nothing listens on.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address")
    };
    let config = mesh
        .gateway_config()
        .route(TOKEN, vec![format!("https://{closed}")]);
    let gateway = ferry_gateway::start(config).await.expect("gateway");
    let channel = connect(&mesh, &gateway).await;
    let started = std::time::Instant::now();
    let status = token(&channel).await.expect_err("nothing up");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(
        status.message(),
        "no healthy replica of ferry.v1.TokenService"
    );
    assert!(started.elapsed() < Duration::from_secs(1));

    // The replica starts: admitted by the next health check.
    let replica = Replica::start(&mesh, "tokens", "late", closed).await;
    eventually("the late replica is admitted", async || {
        token(&channel).await.is_ok()
    })
    .await;
    assert!(replica.calls() > 0);
}
