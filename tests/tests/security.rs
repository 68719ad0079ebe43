//! Credentials and bad input against a real `ferryd all`: every refusal has
//! the right gRPC status, and nothing sealed opens with another key.

use anyhow::Context;
use ferry_auth::token::{Audience, Claims, TokenSigner, generate_signing_key, scope};
use ferry_client::Bearer;
use ferry_e2e::Server;
use ferry_envelope::{Opener, PublicKey, SecretKey};
use ferry_proto::v1::log_service_client::LogServiceClient;
use ferry_proto::v1::{
    AgentJob, CompleteJobRequest, CreateAdministratorRequest, GetJobRequest,
    GetListenerTokenRequest, JobEnd, JobResult, JobSpec, JobState, ListenerToken, LogLine,
    PollJobRequest, QueueJobRequest, RegisterRequest, ReportStepRequest, SealedEnvelope, StepSpec,
    StepState, StepUpdate, StreamLogsRequest, StreamLogsResponse,
};
use prost::Message;
use tonic::Code;
use tonic::transport::Channel;

fn envelope(sealed: Option<SealedEnvelope>) -> anyhow::Result<ferry_envelope::Envelope> {
    let sealed = sealed.context("nothing sealed")?;
    Ok(ferry_envelope::Envelope::from_parts(
        sealed.version,
        &sealed.ephemeral_public_key,
        &sealed.nonce,
        sealed.ciphertext,
    )?)
}

/// An agent played by the test: registered with its own key.
struct TestAgent {
    id: String,
    opener: Opener,
    channel: Channel,
}

impl TestAgent {
    async fn register(server: &Server, name: &str) -> anyhow::Result<TestAgent> {
        let channel = server.channel().await?;
        let secret = SecretKey::generate()?;
        let response = ferry_client::registration(channel.clone(), server.owner())
            .register(RegisterRequest {
                pool: "default".to_owned(),
                name: name.to_owned(),
                public_key: secret.public_key().as_bytes().to_vec(),
                ..Default::default()
            })
            .await?
            .into_inner();
        let server_key = PublicKey::from_slice(&response.server_public_key)?;
        Ok(TestAgent {
            id: response.agent_id,
            opener: Opener::new(secret, &server_key)?,
            channel,
        })
    }

    async fn sealed_listener_token(&self) -> anyhow::Result<ferry_envelope::Envelope> {
        let response = ferry_client::tokens(self.channel.clone())
            .get_listener_token(GetListenerTokenRequest {
                agent_id: self.id.clone(),
            })
            .await?
            .into_inner();
        envelope(response.sealed_token)
    }

    async fn listener_token(&self) -> anyhow::Result<String> {
        let sealed = self.sealed_listener_token().await?;
        let plaintext = self
            .opener
            .open(&ferry_envelope::listener_token_context(&self.id), &sealed)?;
        Ok(ListenerToken::decode(plaintext.as_slice())?.access_token)
    }

    async fn poll(&self, token: &str) -> Result<ferry_proto::v1::PollJobResponse, tonic::Status> {
        ferry_client::jobs(self.channel.clone(), Bearer::new(token)?)
            .poll_job(PollJobRequest {
                wait: Some(prost_types::Duration {
                    seconds: 5,
                    nanos: 0,
                }),
            })
            .await
            .map(tonic::Response::into_inner)
    }
}

fn job_spec(script: &str) -> JobSpec {
    JobSpec {
        name: "security".to_owned(),
        pool: "default".to_owned(),
        secrets: [("TOKEN".to_owned(), "do-not-leak".to_owned())].into(),
        steps: vec![StepSpec {
            name: "one".to_owned(),
            script: script.to_owned(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

async fn queue(server: &Server, spec: JobSpec) -> Result<String, tonic::Status> {
    let channel = server
        .channel()
        .await
        .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
    ferry_client::jobs(channel, server.owner())
        .queue_job(QueueJobRequest { spec: Some(spec) })
        .await
        .map(|response| {
            response
                .into_inner()
                .job
                .map(|job| job.id)
                .unwrap_or_default()
        })
}

fn code<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> Code {
    result.expect_err("the call must be refused").code()
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_and_envelopes_are_for_their_holder_only() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    let channel = server.channel().await?;
    let agent = TestAgent::register(&server, "player").await?;

    // The listener token opens with the agent's key, and with no other.
    let sealed = agent.sealed_listener_token().await?;
    let context = ferry_envelope::listener_token_context(&agent.id);
    let server_key = *agent.opener.server_public_key();
    let stranger = Opener::new(SecretKey::generate()?, &server_key)?;
    assert!(
        stranger.open(&context, &sealed).is_err(),
        "another key opened the listener token"
    );
    assert!(
        agent
            .opener
            .open(b"ferry/v1/listener-token/other", &sealed)
            .is_err(),
        "wrong context opened"
    );
    let listener = agent.listener_token().await?;

    // A non-admin PAT cannot register; no or unknown credentials are unauthenticated.
    let outsider = ferry_client::registration(channel.clone(), server.owner())
        .create_administrator(CreateAdministratorRequest {
            name: "outsider".to_owned(),
            pools: vec![],
            owner: false,
        })
        .await?
        .into_inner()
        .token;
    let register = |bearer: Bearer| {
        let channel = channel.clone();
        async move {
            ferry_client::registration(channel, bearer)
                .register(RegisterRequest {
                    pool: "default".to_owned(),
                    name: "intruder".to_owned(),
                    public_key: SecretKey::generate()
                        .map_err(|_| tonic::Status::internal("key"))?
                        .public_key()
                        .as_bytes()
                        .to_vec(),
                    ..Default::default()
                })
                .await
        }
    };
    assert_eq!(
        code(register(Bearer::new(&outsider)?).await),
        Code::PermissionDenied
    );
    assert_eq!(code(register(Bearer::none()).await), Code::Unauthenticated);
    let unknown = format!("ferry_pat_{}", "A".repeat(43));
    assert_eq!(
        code(register(Bearer::new(&unknown)?).await),
        Code::Unauthenticated
    );
    assert_eq!(
        code(register(Bearer::new(&listener)?).await),
        Code::Unauthenticated,
        "a listener token is not a PAT"
    );

    // Poll: no token, a foreign token, an expired token are all unauthenticated.
    assert_eq!(code(agent.poll("").await), Code::Unauthenticated);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let claims = |exp: i64| Claims {
        iss: String::new(),
        sub: format!("agent:{}", agent.id),
        aud: Audience::Listener.as_str().to_owned(),
        exp,
        iat: exp - 600,
        jti: "forged".to_owned(),
        client_id: agent.id.clone(),
        scope: scope::AGENT_LISTEN.to_owned(),
        pool_id: None,
        agent_id: Some(agent.id.clone()),
        job_id: None,
        project: None,
        pipeline: None,
        attempt: None,
    };
    let foreign =
        TokenSigner::from_pkcs8(&generate_signing_key()?, "ferry")?.sign(&claims(now + 600))?;
    assert_eq!(
        code(agent.poll(&foreign).await),
        Code::Unauthenticated,
        "a token signed by another key"
    );
    let server_key_pkcs8 = std::fs::read(server.data_dir.join("keys/signing.pk8"))?;
    let expired = TokenSigner::from_pkcs8(&server_key_pkcs8, "ferry")?.sign(&claims(now - 3600))?;
    let refused = agent.poll(&expired).await.expect_err("expired");
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert!(
        refused.message().contains("expired"),
        "{}",
        refused.message()
    );

    // A queued job comes sealed to the agent; another key cannot open it.
    let job_a = queue(&server, job_spec("echo a")).await?;
    let polled = agent.poll(&listener).await?;
    assert_eq!(polled.job_id, job_a);
    let sealed_job = envelope(polled.sealed_job)?;
    let job_context = ferry_envelope::job_context(&job_a, &agent.id);
    assert!(
        stranger.open(&job_context, &sealed_job).is_err(),
        "another key opened the job"
    );
    assert!(
        agent
            .opener
            .open(
                &ferry_envelope::job_context(&job_a, "other-agent"),
                &sealed_job
            )
            .is_err()
    );
    let job = AgentJob::decode(agent.opener.open(&job_context, &sealed_job)?.as_slice())?;
    assert_eq!(
        job.secrets.get("TOKEN").map(String::as_str),
        Some("do-not-leak")
    );
    let job_token = job.job_token;

    // Tokens are not interchangeable.
    assert_eq!(
        code(agent.poll(&job_token).await),
        Code::Unauthenticated,
        "a job token cannot poll"
    );
    let report = |token: String, job_id: String| {
        let channel = channel.clone();
        async move {
            ferry_client::jobs(channel, Bearer::new(&token)?)
                .report_step(ReportStepRequest {
                    job_id,
                    index: 0,
                    state: StepState::Running.into(),
                    ..Default::default()
                })
                .await
        }
    };
    assert_eq!(
        code(report(listener.clone(), job_a.clone()).await),
        Code::Unauthenticated,
        "a listener token cannot report"
    );
    assert_eq!(
        code(report(server.owner_token.clone(), job_a.clone()).await),
        Code::Unauthenticated,
        "a PAT is not a job token"
    );

    // Job A's token does not work on job B.
    let job_b = queue(&server, job_spec("echo b")).await?;
    assert_eq!(
        code(report(job_token.clone(), job_b.clone()).await),
        Code::PermissionDenied
    );
    report(job_token.clone(), job_a.clone()).await?;

    // Logs: stream with the job token; a gap is refused.
    let mut logs = ferry_client::logs(channel.clone(), Bearer::new(&job_token)?);
    let line = |sequence: u64| LogLine {
        sequence,
        text: format!("line {sequence}"),
        ..Default::default()
    };
    let batch = StreamLogsRequest {
        job_id: job_a.clone(),
        lines: vec![line(1), line(2)],
        end: None,
    };
    let mut acks = stream_one(&mut logs, batch).await?;
    assert_eq!(acks.message().await?.map(|ack| ack.acked_sequence), Some(2));
    let gap = StreamLogsRequest {
        job_id: job_a.clone(),
        lines: vec![line(5)],
        end: None,
    };
    let mut acks = stream_one(&mut logs, gap).await?;
    assert_eq!(
        acks.message().await.expect_err("a gap").code(),
        Code::FailedPrecondition
    );
    // A step update on a line must name a step of the job and a state a
    // step can move to; a refused line is not stored.
    let reporting = |index: u32, state: StepState, exit_code: Option<i32>| StreamLogsRequest {
        job_id: job_a.clone(),
        lines: vec![LogLine {
            step_index: index,
            step_update: Some(StepUpdate {
                state: state.into(),
                exit_code,
            }),
            ..line(3)
        }],
        end: None,
    };
    for (bad, why) in [
        (reporting(7, StepState::Succeeded, Some(0)), "no such step"),
        (
            reporting(0, StepState::Pending, None),
            "not a state to move to",
        ),
        (reporting(0, StepState::Succeeded, None), "no exit code"),
    ] {
        let mut acks = stream_one(&mut logs, bad).await?;
        assert_eq!(
            acks.message().await.expect_err(why).code(),
            Code::InvalidArgument,
            "{why}"
        );
    }
    let mut acks = stream_one(&mut logs, reporting(0, StepState::Succeeded, Some(0))).await?;
    assert_eq!(acks.message().await?.map(|ack| ack.acked_sequence), Some(3));
    let stored = ferry_client::jobs(channel.clone(), server.owner())
        .get_job(GetJobRequest {
            job_id: job_a.clone(),
        })
        .await?
        .into_inner()
        .job
        .context("job")?;
    assert_eq!(
        stored.log_line_count, 3,
        "the refused lines were not stored"
    );
    assert_eq!(stored.steps[0].state, i32::from(StepState::Succeeded));
    assert_eq!(stored.steps[0].exit_code, Some(0));

    let other_job = StreamLogsRequest {
        job_id: job_b.clone(),
        lines: vec![line(1)],
        end: None,
    };
    assert_eq!(
        code(
            logs.stream_logs(futures::stream::iter(vec![other_job]))
                .await
        ),
        Code::PermissionDenied
    );

    // The job's end on the log stream: a result must be given, and the
    // end cannot skip lines; a refused end completes nothing.
    let ending = |lines: Vec<LogLine>, result: JobResult| StreamLogsRequest {
        job_id: job_a.clone(),
        lines,
        end: Some(JobEnd {
            result: result.into(),
            message: "ended on the stream".to_owned(),
        }),
    };
    for (bad, expected, why) in [
        (
            ending(vec![line(4)], JobResult::Unspecified),
            Code::InvalidArgument,
            "no result",
        ),
        (
            ending(vec![line(6)], JobResult::Succeeded),
            Code::FailedPrecondition,
            "lines missing before the end",
        ),
        (
            StreamLogsRequest {
                end: Some(JobEnd {
                    result: JobResult::Succeeded.into(),
                    message: "x".repeat(5000),
                }),
                ..ending(vec![line(4)], JobResult::Succeeded)
            },
            Code::InvalidArgument,
            "a message over 4096 bytes",
        ),
    ] {
        let mut acks = stream_one(&mut logs, bad).await?;
        assert_eq!(
            acks.message().await.expect_err(why).code(),
            expected,
            "{why}"
        );
    }
    let job_state = |job_id: String| {
        let channel = channel.clone();
        let owner = server.owner();
        async move {
            ferry_client::jobs(channel, owner)
                .get_job(GetJobRequest { job_id })
                .await?
                .into_inner()
                .job
                .context("job")
        }
    };
    assert_eq!(
        job_state(job_a.clone()).await?.state,
        i32::from(JobState::Running)
    );
    // A job token without the job:status scope (the server's own key, the
    // same claims) may stream lines but not end the job.
    let payload = job_token.split('.').nth(1).context("a JWT")?;
    let mut claims: Claims = serde_json::from_slice(&base64::Engine::decode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        payload,
    )?)?;
    claims.scope = scope::JOB_LOGS.to_owned();
    let logs_only = TokenSigner::from_pkcs8(&server_key_pkcs8, "ferry")?.sign(&claims)?;
    let mut logs_only = ferry_client::logs(channel.clone(), Bearer::new(&logs_only)?);
    let mut acks = stream_one(&mut logs_only, ending(vec![line(4)], JobResult::Succeeded)).await?;
    assert_eq!(
        acks.message().await.expect_err("no job:status").code(),
        Code::PermissionDenied
    );
    // The last line, then the end alone: the answer says the job
    // completed, and the server ends the stream.
    let mut acks = stream_one(
        &mut logs,
        StreamLogsRequest {
            job_id: job_a.clone(),
            lines: vec![line(4)],
            end: None,
        },
    )
    .await?;
    assert_eq!(acks.message().await?.map(|ack| ack.acked_sequence), Some(4));
    let mut acks = stream_one(&mut logs, ending(Vec::new(), JobResult::Succeeded)).await?;
    let last = acks.message().await?.context("the final ack")?;
    assert_eq!(
        (last.acked_sequence, last.final_state),
        (4, i32::from(JobState::Succeeded))
    );
    assert!(acks.message().await?.is_none(), "the stream ends");
    let ended = job_state(job_a.clone()).await?;
    assert_eq!(ended.state, i32::from(JobState::Succeeded));
    assert_eq!(ended.message, "ended on the stream");
    assert_eq!(ended.log_line_count, 4);

    // After completion the job token is dead: completing again is refused
    // as from an agent that no longer holds the job.
    assert_eq!(
        code(
            ferry_client::jobs(channel.clone(), Bearer::new(&job_token)?)
                .complete_job(CompleteJobRequest {
                    job_id: job_a.clone(),
                    result: JobResult::Succeeded.into(),
                    message: String::new(),
                })
                .await
        ),
        Code::FailedPrecondition
    );
    assert_ne!(
        report(job_token.clone(), job_a.clone())
            .await
            .map(|_| ())
            .err()
            .map(|status| status.code()),
        None
    );
    let late = StreamLogsRequest {
        job_id: job_a.clone(),
        lines: vec![line(5)],
        end: None,
    };
    // A stream opened after the job ended stores nothing: it only says how
    // the job ended and how far its log goes (so an agent whose final ack
    // was lost learns that its end was stored).
    let mut answers = stream_one(&mut logs, late).await?;
    let answer = answers.message().await?.context("the answer")?;
    assert_eq!(
        (answer.acked_sequence, answer.final_state),
        (4, i32::from(JobState::Succeeded))
    );
    assert!(answers.message().await?.is_none(), "the stream ends");
    assert_eq!(job_state(job_a.clone()).await?.log_line_count, 4);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_and_oversized_requests_get_clear_statuses() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    let channel = server.channel().await?;
    let mut registration = ferry_client::registration(channel.clone(), server.owner());
    let register = |public_key: Vec<u8>, name: &str| RegisterRequest {
        pool: "default".to_owned(),
        name: name.to_owned(),
        public_key,
        ..Default::default()
    };
    assert_eq!(
        code(
            registration
                .register(register(vec![1; 5], "short-key"))
                .await
        ),
        Code::InvalidArgument
    );
    assert_eq!(
        code(
            registration
                .register(register(vec![0; 32], "zero-key"))
                .await
        ),
        Code::InvalidArgument
    );
    assert_eq!(
        code(
            registration
                .register(register(vec![7; 32], "bad name"))
                .await
        ),
        Code::InvalidArgument
    );
    let mut missing_pool = register(vec![7; 32], "ok");
    missing_pool.pool = "nope".to_owned();
    assert_eq!(
        code(registration.register(missing_pool).await),
        Code::NotFound
    );

    let mut tokens = ferry_client::tokens(channel.clone());
    assert_eq!(
        code(
            tokens
                .get_listener_token(GetListenerTokenRequest {
                    agent_id: "../../etc".to_owned()
                })
                .await
        ),
        Code::InvalidArgument
    );
    let unknown = uuid::Uuid::new_v4().to_string();
    assert_eq!(
        code(
            tokens
                .get_listener_token(GetListenerTokenRequest { agent_id: unknown })
                .await
        ),
        Code::NotFound
    );

    let mut jobs = ferry_client::jobs(channel.clone(), server.owner());
    assert_eq!(
        code(
            jobs.get_job(GetJobRequest {
                job_id: "not-an-id".to_owned()
            })
            .await
        ),
        Code::InvalidArgument
    );
    assert_eq!(
        code(jobs.queue_job(QueueJobRequest { spec: None }).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(queue(&server, job_spec("")).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(queue(&server, job_spec(&"x".repeat(300 * 1024))).await),
        Code::ResourceExhausted
    );
    assert_eq!(
        code(queue(&server, job_spec(&"x".repeat(3 * 1024 * 1024))).await),
        Code::ResourceExhausted,
        "a request above the decoding limit"
    );
    let mut no_steps = job_spec("echo");
    no_steps.steps.clear();
    assert_eq!(code(queue(&server, no_steps).await), Code::InvalidArgument);

    // The server is still healthy after all that.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "ferry.v1.JobService".to_owned(),
        })
        .await?
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn health_and_reflection_answer_on_the_public_port() -> anyhow::Result<()> {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    let channel = server.channel().await?;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    for service in ferry_proto::service_names::ALL {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: (*service).to_owned(),
            })
            .await?
            .into_inner()
            .status;
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service}"
        );
    }
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = ServerReflectionClient::new(channel)
        .server_reflection_info(futures::stream::iter(vec![request]))
        .await?
        .into_inner();
    let response = responses.message().await?.context("no reflection answer")?;
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        anyhow::bail!("unexpected reflection answer");
    };
    let names: Vec<String> = list
        .service
        .into_iter()
        .map(|service| service.name)
        .collect();
    for expected in ferry_proto::service_names::ALL
        .iter()
        .chain(&["grpc.health.v1.Health"])
    {
        assert!(
            names.iter().any(|name| name == expected),
            "{expected} missing from {names:?}"
        );
    }
    Ok(())
}

/// A log stream that sends `request` alone, and its answers.
async fn stream_one(
    logs: &mut LogServiceClient<ferry_client::Authorized>,
    request: StreamLogsRequest,
) -> Result<tonic::Streaming<StreamLogsResponse>, tonic::Status> {
    Ok(logs
        .stream_logs(futures::stream::iter(vec![request]))
        .await?
        .into_inner())
}
