//! The mesh: every service its own process (2 replicas each, 3 of
//! dispatch where it matters), the gateway as the only public port, mutual
//! TLS inside, PostgreSQL started by the test.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use ferry_e2e::mesh::Mesh;
use ferry_e2e::sim::SimAgent;
use ferry_proto::v1::{JobSpec, JobState, ListJobsRequest, QueueJobRequest, StepSpec};

/// Leases short enough that jobs claimed by a killed replica come back
/// quickly, long enough that a loaded 2-core machine never lets one lapse
/// under a live agent.
const LEASES: &str = "[dispatch]\nlease = \"20s\"\nreap-interval = \"500ms\"\n";

fn empty_job(index: usize) -> JobSpec {
    JobSpec {
        name: format!("job {index}"),
        pool: "default".to_owned(),
        steps: vec![StepSpec {
            name: "noop".to_owned(),
            script: "true".to_owned(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_end_to_end_flow_passes_through_the_gateway() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mesh = Mesh::start(dir.path(), 2, 2, "").await?;
    ferry_e2e::scenarios::multi_step_job_with_a_secret(&mesh.as_server(), dir.path()).await
}

/// Runs `jobs` empty jobs through `agents` simulated agents; with `kill`,
/// SIGKILLs one dispatch replica once a quarter of them completed. Returns
/// how many times each job was handed to an agent.
async fn run_jobs(
    mesh: &mut Mesh,
    agents: usize,
    jobs: usize,
    kill: bool,
) -> anyhow::Result<HashMap<String, usize>> {
    let received: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let completed: Arc<Mutex<usize>> = Arc::default();
    let stop = Arc::new(tokio::sync::Notify::new());
    let mut workers = Vec::new();
    for index in 0..agents {
        let channel = mesh.channel().await?;
        let agent =
            SimAgent::register(channel, &mesh.owner(), "default", &format!("sim-{index}")).await?;
        let (received, completed, stop) = (received.clone(), completed.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let polled = tokio::select! {
                    polled = agent.poll(5) => polled,
                    () = stop.notified() => return,
                };
                match polled {
                    Ok(Some(job)) => {
                        if let Ok(mut seen) = received.lock() {
                            *seen.entry(job.job_id.clone()).or_default() += 1;
                        }
                        // A replica may die under the call: retry on another
                        // (well within the lease).
                        for _ in 0..60 {
                            if agent.complete(&job).await.is_ok() {
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        if let Ok(mut done) = completed.lock() {
                            *done += 1;
                        }
                    }
                    Ok(None) => {}
                    Err(status) if status.code() == tonic::Code::Unauthenticated => {
                        let _ = agent.refresh().await;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }));
    }

    let mut queuers = Vec::new();
    for queuer in 0..4 {
        let mut client = ferry_client::jobs(mesh.channel().await?, mesh.owner());
        queuers.push(tokio::spawn(async move {
            for index in (queuer..jobs).step_by(4) {
                let mut tries = 0;
                while client
                    .queue_job(QueueJobRequest {
                        spec: Some(empty_job(index)),
                    })
                    .await
                    .is_err()
                {
                    tries += 1;
                    anyhow::ensure!(tries < 50, "queueing keeps failing");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            Ok(())
        }));
    }
    let mut killed = !kill;
    let done = || completed.lock().map(|done| *done).unwrap_or_default();
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    let mut jobs_client = ferry_client::jobs(mesh.channel().await?, mesh.owner());
    loop {
        if !killed && done() >= jobs / 4 {
            let replica = mesh
                .replicas
                .iter_mut()
                .find(|(service, _, _)| service == "dispatch")
                .context("a dispatch replica")?;
            replica.2.kill();
            killed = true;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "only {} of {jobs} jobs completed",
            done()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        // Done when every stored job has ended: a QueueJob retried after a
        // replica died under it may have stored one more job than asked.
        if done() >= jobs && queuers.iter().all(|queuer| queuer.is_finished()) {
            let (finished, total) = count_finished(&mut jobs_client).await?;
            if finished == total {
                break;
            }
        }
    }
    for queuer in queuers {
        queuer.await??;
    }
    stop.notify_waiters();
    for worker in workers {
        worker.abort();
    }
    let received = received.lock().map(|seen| seen.clone()).unwrap_or_default();
    Ok(received)
}

/// How many stored jobs have ended, of how many.
async fn count_finished(
    client: &mut ferry_proto::v1::job_service_client::JobServiceClient<ferry_client::Authorized>,
) -> anyhow::Result<(usize, usize)> {
    let (mut finished, mut total) = (0, 0);
    let mut page_token = String::new();
    loop {
        let page = client
            .list_jobs(ListJobsRequest {
                page_size: 1000,
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        for job in &page.jobs {
            total += 1;
            if matches!(
                JobState::try_from(job.state)?,
                JobState::Succeeded | JobState::Failed | JobState::Canceled
            ) {
                finished += 1;
            }
        }
        if page.next_page_token.is_empty() {
            return Ok((finished, total));
        }
        page_token = page.next_page_token;
    }
}

async fn all_jobs_succeeded(mesh: &Mesh, expected: usize) -> anyhow::Result<()> {
    let mut client = ferry_client::jobs(mesh.channel().await?, mesh.owner());
    let mut succeeded = 0;
    let mut page_token = String::new();
    loop {
        let page = client
            .list_jobs(ListJobsRequest {
                page_size: 1000,
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        for job in &page.jobs {
            anyhow::ensure!(
                JobState::try_from(job.state)? == JobState::Succeeded,
                "job {} is {:?}: {}",
                job.id,
                job.state,
                job.message
            );
            succeeded += 1;
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(succeeded, expected, "every job is stored and succeeded");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_agents_on_three_dispatch_replicas_run_every_job_exactly_once() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let mut mesh = Mesh::start(dir.path(), 1, 3, LEASES).await?;
    let received = run_jobs(&mut mesh, 50, 2000, false).await?;
    assert_eq!(received.len(), 2000, "every job reached an agent");
    let twice: Vec<_> = received.iter().filter(|(_, count)| **count != 1).collect();
    assert!(
        twice.is_empty(),
        "jobs handed out more than once: {twice:?}"
    );
    all_jobs_succeeded(&mesh, 2000).await
}

#[tokio::test(flavor = "multi_thread")]
async fn losing_a_dispatch_replica_loses_and_repeats_no_job() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut mesh = Mesh::start(dir.path(), 1, 3, LEASES).await?;
    let received = run_jobs(&mut mesh, 20, 400, true).await?;
    // A QueueJob retried after the replica died under it may have stored a
    // job more than asked (queueing is not idempotent); every stored job must
    // still reach exactly one agent and succeed.
    assert!(
        received.len() >= 400,
        "only {} jobs reached an agent",
        received.len()
    );
    let twice: Vec<_> = received.iter().filter(|(_, count)| **count != 1).collect();
    assert!(
        twice.is_empty(),
        "jobs handed out more than once: {twice:?}"
    );
    all_jobs_succeeded(&mesh, received.len()).await
}

#[tokio::test(flavor = "multi_thread")]
async fn service_ports_admit_only_the_gateway_and_the_gateway_only_ferry() -> anyhow::Result<()> {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let dir = tempfile::tempdir()?;
    let mesh = Mesh::start(dir.path(), 1, 1, "").await?;
    let (_, registry_address, _) = mesh
        .replicas
        .iter()
        .find(|(service, _, _)| service == "registry")
        .context("a registry replica")?;
    let ca = std::fs::read_to_string(mesh.mesh_dir.join("ca.crt"))?;
    let identity = |name: &str| -> anyhow::Result<ferry_tls::CertificateAndKey> {
        Ok(ferry_tls::CertificateAndKey {
            certificate_pem: std::fs::read_to_string(mesh.mesh_dir.join(format!("{name}.crt")))?,
            private_key_pem: std::fs::read_to_string(mesh.mesh_dir.join(format!("{name}.key")))?,
        })
    };
    let check = |tls: tonic::transport::ClientTlsConfig| {
        let url = format!("https://{registry_address}");
        async move {
            let endpoint = tonic::transport::Endpoint::from_shared(url)
                .map_err(|error| tonic::Status::internal(error.to_string()))?
                .tls_config(tls)
                .map_err(|error| tonic::Status::internal(error.to_string()))?;
            let channel = endpoint
                .connect()
                .await
                .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
            HealthClient::new(channel)
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .map(|_| ())
        }
    };
    ferry_tls::install_crypto_provider();
    let no_certificate = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&ca))
        .domain_name("registry.ferry.internal");
    assert!(
        check(no_certificate).await.is_err(),
        "a client without a certificate got in"
    );
    let wrong_san =
        ferry_tls::mesh_client_config(&identity("dispatch")?, &ca, "registry.ferry.internal");
    let refused = check(wrong_san)
        .await
        .expect_err("a certificate with a SAN not allowed got in");
    assert!(
        matches!(
            refused.code(),
            tonic::Code::PermissionDenied | tonic::Code::Unauthenticated
        ),
        "{refused:?}"
    );
    let gateway =
        ferry_tls::mesh_client_config(&identity("gateway")?, &ca, "registry.ferry.internal");
    check(gateway).await?;

    // Through the public port: ferry's services, health and reflection only.
    let channel = mesh.channel().await?;
    // v1alpha reflection is not a route: the gateway answers UNIMPLEMENTED.
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let refused = match ServerReflectionClient::new(channel.clone())
        .server_reflection_info(futures::stream::iter(vec![request]))
        .await
    {
        Err(status) => status,
        Ok(response) => response
            .into_inner()
            .message()
            .await
            .expect_err("an unknown service answered"),
    };
    assert_eq!(refused.code(), tonic::Code::Unimplemented);

    // v1 reflection answers at the gateway and lists every ferry service.
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient as Reflection;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest as Request;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(Request::ListServices(String::new())),
    };
    let answer = Reflection::new(channel)
        .server_reflection_info(futures::stream::iter(vec![request]))
        .await?
        .into_inner()
        .message()
        .await?
        .context("no reflection answer")?;
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        anyhow::bail!("unexpected reflection answer");
    };
    for (_, service) in ferry_e2e::mesh::SERVICES {
        assert!(
            list.service.iter().any(|listed| listed.name == service),
            "{service} not listed"
        );
    }
    Ok(())
}
