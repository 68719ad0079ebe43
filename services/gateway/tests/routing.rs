//! Routing through the gateway: balancing, metadata, unknown services,
//! health and reflection at the gateway, and service ports closed to
//! everyone but the gateway.

mod support;

use std::collections::BTreeSet;

use ferry_proto::v1::job_service_client::JobServiceClient;
use ferry_proto::v1::token_service_client::TokenServiceClient;
use ferry_proto::v1::{GetListenerTokenRequest, QueueJobRequest};
use support::*;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_calls_balance_across_replicas_with_metadata_forwarded() {
    let mesh = Mesh::new();
    let tokens = replicas(&mesh, "tokens", 2).await;
    let jobs = replicas(&mesh, "dispatch", 2).await;
    let config = mesh
        .gateway_config()
        .route(TOKEN, urls(&tokens))
        .route(JOB, urls(&jobs));
    let gateway = ferry_gateway::start(config).await.expect("gateway");
    let channel = connect(&mesh, &gateway).await;

    let mut token_client = TokenServiceClient::new(channel.clone());
    let mut job_client = JobServiceClient::new(channel);
    let mut answered_by = BTreeSet::new();
    for _ in 0..40 {
        let mut request = tonic::Request::new(GetListenerTokenRequest::default());
        request.metadata_mut().insert(
            "authorization",
            "Bearer secret-token".parse().expect("value"),
        );
        request
            .metadata_mut()
            .insert("x-custom", "kept".parse().expect("value"));
        request.set_timeout(std::time::Duration::from_secs(7));
        let response = token_client
            .get_listener_token(request)
            .await
            .expect("token call");
        let seen = |key: &str| {
            response
                .metadata()
                .get(key)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        };
        assert_eq!(
            seen("x-seen-authorization").as_deref(),
            Some("Bearer secret-token")
        );
        assert_eq!(seen("x-seen-custom").as_deref(), Some("kept"));
        assert_eq!(seen("x-seen-forwarded-for").as_deref(), Some("127.0.0.1"));
        assert_eq!(seen("x-seen-grpc-timeout").as_deref(), Some("7000000u"));
        answered_by.insert(replica_of(&response));

        let response = job_client
            .queue_job(QueueJobRequest::default())
            .await
            .expect("job call");
        answered_by.insert(replica_of(&response));
    }
    let expected: BTreeSet<String> = ["tokens-0", "tokens-1", "dispatch-0", "dispatch-1"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(answered_by, expected, "every replica sees calls");
    for replica in tokens.iter().chain(&jobs) {
        assert!(
            replica.calls() >= 5,
            "{} saw {} calls",
            replica.label,
            replica.calls()
        );
    }
    gateway.stop().await.expect("stop");
}

#[tokio::test]
async fn unknown_services_are_unimplemented() {
    let mesh = Mesh::new();
    let tokens = replicas(&mesh, "tokens", 1).await;
    let gateway = ferry_gateway::start(mesh.gateway_config().route(TOKEN, urls(&tokens)))
        .await
        .expect("gateway");
    let channel = connect(&mesh, &gateway).await;
    // JobService exists in ferry but has no route on this gateway.
    let status = JobServiceClient::new(channel)
        .queue_job(QueueJobRequest::default())
        .await
        .expect_err("no route");
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    assert!(
        status
            .message()
            .contains("unknown service ferry.v1.JobService"),
        "{status:?}"
    );
    assert_eq!(tokens[0].calls(), 0);
}

#[tokio::test]
async fn health_and_reflection_answer_at_the_gateway() {
    let mesh = Mesh::new();
    let tokens = replicas(&mesh, "tokens", 1).await;
    let mut jobs = replicas(&mesh, "dispatch", 1).await;
    let config = mesh
        .gateway_config()
        .route(TOKEN, urls(&tokens))
        .route(JOB, urls(&jobs));
    let gateway = ferry_gateway::start(config).await.expect("gateway");
    let channel = connect(&mesh, &gateway).await;

    let mut health = HealthClient::new(channel.clone());
    let status = async |health: &mut HealthClient<_>, service: &str| {
        let request = HealthCheckRequest {
            service: service.to_owned(),
        };
        health
            .check(request)
            .await
            .map(|answer| answer.into_inner().status())
    };
    for service in ["", TOKEN, JOB] {
        assert_eq!(
            status(&mut health, service).await.expect("check"),
            ServingStatus::Serving,
            "{service:?}"
        );
    }
    let unknown = status(&mut health, "acme.v1.Nothing")
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);

    // With its only replica gone, JobService is NOT_SERVING, and so is "".
    jobs[0].kill().await;
    eventually("JobService reported down", async || {
        status(&mut health, JOB).await.ok() == Some(ServingStatus::NotServing)
    })
    .await;
    assert_eq!(
        status(&mut health, "").await.ok(),
        Some(ServingStatus::NotServing)
    );
    assert_eq!(
        status(&mut health, TOKEN).await.ok(),
        Some(ServingStatus::Serving)
    );

    // grpcurl's `list`: reflection names every service.
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection")
        .into_inner();
    let answer = answers.next().await.expect("an answer").expect("no error");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("unexpected reflection answer {answer:?}");
    };
    let names: BTreeSet<String> = list
        .service
        .into_iter()
        .map(|service| service.name)
        .collect();
    for name in [
        TOKEN,
        JOB,
        LOG,
        "ferry.v1.RegistrationService",
        "grpc.health.v1.Health",
    ] {
        assert!(names.contains(name), "{name} missing from {names:?}");
    }
}

#[tokio::test]
async fn service_ports_refuse_everyone_but_the_gateway() {
    let mesh = Mesh::new();
    let tokens = replicas(&mesh, "tokens", 1).await;
    let ca = &mesh.certificates.ca_pem;
    let server_name = ferry_gateway::upstream_server_name(TOKEN);
    assert_eq!(server_name, "tokens.ferry.internal");

    // No client certificate: the handshake fails, no call gets through.
    let plain = ferry_tls::client_config(Some(ca), Some(&server_name));
    let outcome: Result<(), (Code, String)> = match connect_with(tokens[0].address, plain).await {
        Err(error) => Err((Code::Unavailable, error.to_string())),
        Ok(channel) => TokenServiceClient::new(channel)
            .get_listener_token(GetListenerTokenRequest::default())
            .await
            .map(|_| ())
            .map_err(|status| (status.code(), status.message().to_owned())),
    };
    let (code, message) = outcome.expect_err("refused without a mesh certificate");
    assert!(
        !matches!(code, Code::PermissionDenied | Code::Unauthenticated),
        "the handshake completed: {code:?} {message}"
    );

    // Another mesh process's valid certificate: refused by the SAN check.
    let dispatch = ferry_tls::mesh_client_config(mesh.identity("dispatch"), ca, &server_name);
    let channel = connect_with(tokens[0].address, dispatch)
        .await
        .expect("handshake");
    let status = TokenServiceClient::new(channel)
        .get_listener_token(GetListenerTokenRequest::default())
        .await
        .expect_err("dispatch may not call tokens");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    // The gateway's certificate is served.
    let gateway = ferry_tls::mesh_client_config(mesh.identity("gateway"), ca, &server_name);
    let channel = connect_with(tokens[0].address, gateway)
        .await
        .expect("handshake");
    TokenServiceClient::new(channel)
        .get_listener_token(GetListenerTokenRequest::default())
        .await
        .expect("the gateway is served");
    assert_eq!(tokens[0].calls(), 1);
}
