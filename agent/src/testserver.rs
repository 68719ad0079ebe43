//! A fake ferry server for the agent's tests: just enough of the four
//! services, over plaintext HTTP/2 on localhost, recording what it is sent.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ferry_envelope::{Envelope, PublicKey, Sealer, SecretKey, job_context, listener_token_context};
use ferry_proto::v1::job_service_server::{JobService, JobServiceServer};
use ferry_proto::v1::log_service_server::{LogService, LogServiceServer};
use ferry_proto::v1::registration_service_server::{
    RegistrationService, RegistrationServiceServer,
};
use ferry_proto::v1::token_service_server::{TokenService, TokenServiceServer};
use ferry_proto::v1::*;
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

pub const AGENT_ID: &str = "0190f0a0-aaaa-7000-8000-000000000001";
pub const PAT: &str = "pat-good-0123456789";
pub const LISTENER_TOKEN: &str = "listener-token-abc";
pub const JOB_TOKEN: &str = "job-token-xyz";

/// What the fake was sent, and how it should misbehave.
#[derive(Default)]
pub struct State {
    pub agent_public_key: Option<PublicKey>,
    pub registrations: Vec<RegisterRequest>,
    /// (method, authorization header or "").
    pub authorizations: Vec<(&'static str, String)>,
    pub queue: VecDeque<AgentJob>,
    pub reports: Vec<ReportStepRequest>,
    pub completions: Vec<CompleteJobRequest>,
    /// Stored log lines, deduplicated by sequence.
    pub lines: Vec<LogLine>,
    pub batch_sizes: Vec<usize>,
    pub batch_job_ids: Vec<String>,
    /// Batches whose first line left a gap after the stored lines.
    pub gaps: u32,
    pub log_streams: u32,
    /// How many log streams fail after their first batch, half stored, unacked.
    pub fail_streams: u32,
    /// Listener tokens handed out.
    pub token_fetches: u32,
    /// Lifetime of listener tokens (default one hour).
    pub token_life: Option<Duration>,
    /// How many of the next polls are refused as unauthenticated.
    pub reject_polls: u32,
}

#[derive(Clone)]
pub struct Fake {
    pub state: Arc<Mutex<State>>,
    server_secret: SecretKey,
}

impl Fake {
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("state lock")
    }

    fn seal(&self, context: &[u8], plaintext: &[u8]) -> Result<SealedEnvelope, Status> {
        let agent = self
            .state()
            .agent_public_key
            .ok_or_else(|| Status::failed_precondition("no agent registered"))?;
        let sealer = Sealer::new(self.server_secret.clone());
        let envelope: Envelope = sealer
            .sealer_for(&agent)
            .and_then(|to_agent| to_agent.seal(context, plaintext))
            .map_err(|error| Status::internal(error.to_string()))?;
        Ok(SealedEnvelope {
            version: envelope.version,
            ephemeral_public_key: envelope.ephemeral_public_key.to_vec(),
            nonce: envelope.nonce.to_vec(),
            ciphertext: envelope.ciphertext,
        })
    }

    fn authorize<T>(
        &self,
        method: &'static str,
        request: &Request<T>,
        expected: &str,
    ) -> Result<(), Status> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let ok = header == format!("Bearer {expected}");
        self.state().authorizations.push((method, header));
        if ok {
            Ok(())
        } else {
            Err(Status::unauthenticated("bad token"))
        }
    }

    fn store(&self, lines: Vec<LogLine>) -> u64 {
        let mut state = self.state();
        if let Some(first) = lines.first()
            && first.sequence > state.lines.len() as u64 + 1
        {
            state.gaps += 1;
        }
        for line in lines {
            if line.sequence == state.lines.len() as u64 + 1 {
                state.lines.push(line);
            }
        }
        state.lines.len() as u64
    }
}

/// Starts the fake; returns it and its `http://127.0.0.1:PORT` URL.
pub async fn start() -> (Fake, String) {
    let fake = Fake {
        state: Arc::default(),
        server_secret: SecretKey::generate().expect("server key"),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let router = tonic::transport::Server::builder()
        .add_service(RegistrationServiceServer::new(fake.clone()))
        .add_service(TokenServiceServer::new(fake.clone()))
        .add_service(JobServiceServer::new(fake.clone()))
        .add_service(LogServiceServer::new(fake.clone()));
    tokio::spawn(router.serve_with_incoming(TcpListenerStream::new(listener)));
    (fake, url)
}

/// A URL where nothing listens.
pub async fn closed_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    drop(listener);
    url
}

#[tonic::async_trait]
impl RegistrationService for Fake {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        self.authorize("Register", &request, PAT)?;
        let request = request.into_inner();
        if request.pool == "forbidden" {
            return Err(Status::permission_denied("not an administrator"));
        }
        let key = PublicKey::from_slice(&request.public_key)
            .map_err(|_| Status::invalid_argument("key"))?;
        let mut state = self.state();
        state.agent_public_key = Some(key);
        state.registrations.push(request.clone());
        Ok(Response::new(RegisterResponse {
            agent_id: AGENT_ID.into(),
            server_public_key: self.server_secret.public_key().as_bytes().to_vec(),
            pool: Some(Pool {
                id: "pool-1".into(),
                name: request.pool,
                create_time: None,
            }),
        }))
    }
    async fn create_pool(
        &self,
        _: Request<CreatePoolRequest>,
    ) -> Result<Response<CreatePoolResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn list_pools(
        &self,
        _: Request<ListPoolsRequest>,
    ) -> Result<Response<ListPoolsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn list_agents(
        &self,
        _: Request<ListAgentsRequest>,
    ) -> Result<Response<ListAgentsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn remove_agent(
        &self,
        _: Request<RemoveAgentRequest>,
    ) -> Result<Response<RemoveAgentResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn create_administrator(
        &self,
        _: Request<CreateAdministratorRequest>,
    ) -> Result<Response<CreateAdministratorResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn list_administrators(
        &self,
        _: Request<ListAdministratorsRequest>,
    ) -> Result<Response<ListAdministratorsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn remove_administrator(
        &self,
        _: Request<RemoveAdministratorRequest>,
    ) -> Result<Response<RemoveAdministratorResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

#[tonic::async_trait]
impl TokenService for Fake {
    async fn get_listener_token(
        &self,
        request: Request<GetListenerTokenRequest>,
    ) -> Result<Response<GetListenerTokenResponse>, Status> {
        let agent_id = request.into_inner().agent_id;
        if agent_id != AGENT_ID {
            return Err(Status::not_found("no such agent"));
        }
        let life = {
            let mut state = self.state();
            state.token_fetches += 1;
            state.token_life.unwrap_or(Duration::from_secs(3600))
        };
        let life = i64::try_from(life.as_micros()).expect("life");
        let token = ListenerToken {
            access_token: LISTENER_TOKEN.into(),
            expire_time: Some(ferry_proto::time::timestamp_from_micros(
                ferry_proto::time::now_micros() + life,
            )),
        };
        let sealed = self.seal(&listener_token_context(&agent_id), &token.encode_to_vec())?;
        Ok(Response::new(GetListenerTokenResponse {
            sealed_token: Some(sealed),
        }))
    }
}

#[tonic::async_trait]
impl JobService for Fake {
    async fn poll_job(
        &self,
        request: Request<PollJobRequest>,
    ) -> Result<Response<PollJobResponse>, Status> {
        self.authorize("PollJob", &request, LISTENER_TOKEN)?;
        {
            let mut state = self.state();
            if state.reject_polls > 0 {
                state.reject_polls -= 1;
                return Err(Status::unauthenticated("token expired"));
            }
        }
        let job = self.state().queue.pop_front();
        let Some(job) = job else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            return Ok(Response::new(PollJobResponse::default()));
        };
        let sealed = self.seal(&job_context(&job.job_id, AGENT_ID), &job.encode_to_vec())?;
        Ok(Response::new(PollJobResponse {
            job_id: job.job_id,
            sealed_job: Some(sealed),
        }))
    }
    async fn report_step(
        &self,
        request: Request<ReportStepRequest>,
    ) -> Result<Response<ReportStepResponse>, Status> {
        self.authorize("ReportStep", &request, JOB_TOKEN)?;
        self.state().reports.push(request.into_inner());
        Ok(Response::new(ReportStepResponse {}))
    }
    async fn complete_job(
        &self,
        request: Request<CompleteJobRequest>,
    ) -> Result<Response<CompleteJobResponse>, Status> {
        self.authorize("CompleteJob", &request, JOB_TOKEN)?;
        self.state().completions.push(request.into_inner());
        Ok(Response::new(CompleteJobResponse {
            state: JobState::Succeeded as i32,
        }))
    }
    async fn queue_job(
        &self,
        _: Request<QueueJobRequest>,
    ) -> Result<Response<QueueJobResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn get_job(&self, _: Request<GetJobRequest>) -> Result<Response<GetJobResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn list_jobs(
        &self,
        _: Request<ListJobsRequest>,
    ) -> Result<Response<ListJobsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

#[tonic::async_trait]
impl LogService for Fake {
    type StreamLogsStream = ReceiverStream<Result<StreamLogsResponse, Status>>;
    type FollowLogsStream = ReceiverStream<Result<FollowLogsResponse, Status>>;

    async fn stream_logs(
        &self,
        request: Request<Streaming<StreamLogsRequest>>,
    ) -> Result<Response<Self::StreamLogsStream>, Status> {
        self.authorize("StreamLogs", &request, JOB_TOKEN)?;
        let mut inbound = request.into_inner();
        let fail = {
            let mut state = self.state();
            state.log_streams += 1;
            let fail = state.fail_streams > 0;
            state.fail_streams = state.fail_streams.saturating_sub(1);
            fail
        };
        // Like a real server, read the first message (it names the job)
        // before answering with headers.
        let first = inbound.message().await?;
        let (sender, receiver) = mpsc::channel(16);
        let fake = self.clone();
        tokio::spawn(async move {
            let mut next = first;
            while let Some(batch) = next {
                {
                    let mut state = fake.state();
                    state.batch_sizes.push(batch.lines.len());
                    state.batch_job_ids.push(batch.job_id.clone());
                }
                if fail {
                    let half = batch.lines.len() / 2;
                    fake.store(batch.lines.into_iter().take(half).collect());
                    let _ = sender
                        .send(Err(Status::unavailable("injected failure")))
                        .await;
                    return;
                }
                let acked_sequence = fake.store(batch.lines);
                if sender
                    .send(Ok(StreamLogsResponse { acked_sequence }))
                    .await
                    .is_err()
                {
                    return;
                }
                next = inbound.message().await.ok().flatten();
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    async fn follow_logs(
        &self,
        _: Request<FollowLogsRequest>,
    ) -> Result<Response<Self::FollowLogsStream>, Status> {
        Err(Status::unimplemented("fake"))
    }
}
