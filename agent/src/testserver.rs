//! A fake ferry server for the agent's tests: just enough of the five
//! services, over plaintext HTTP/2 on localhost, recording what it is sent.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ferry_envelope::{Envelope, PublicKey, Sealer, SecretKey, job_context, listener_token_context};
use ferry_proto::v1::job_service_server::{JobService, JobServiceServer};
use ferry_proto::v1::log_service_server::{LogService, LogServiceServer};
use ferry_proto::v1::registration_service_server::{
    RegistrationService, RegistrationServiceServer,
};
use ferry_proto::v1::resource_service_server::{ResourceService, ResourceServiceServer};
use ferry_proto::v1::token_service_server::{TokenService, TokenServiceServer};
use ferry_proto::v1::*;
use prost::Message as _;
use sha2::{Digest as _, Sha256};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

use crate::rpc::job_token_context;

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
    /// Step reports: ReportStep calls, and the step updates of stored
    /// log lines.
    pub reports: Vec<ReportStepRequest>,
    /// Completions: CompleteJob calls, and ends sent on log streams.
    pub completions: Vec<CompleteJobRequest>,
    /// How many of the completions came as a log stream's end.
    pub stream_ends: u32,
    /// Refuse a log stream's end with this code (its lines not stored):
    /// INVALID_ARGUMENT as for an end the server cannot take,
    /// FAILED_PRECONDITION as when the job moved meanwhile (later streams
    /// of the job are then refused UNAUTHENTICATED, as the server does).
    pub refuse_ends: Option<tonic::Code>,
    /// Jobs that moved to another agent: their streams are refused.
    pub moved_jobs: HashSet<String>,
    /// Store the next end but drop the stream instead of its final ack.
    pub drop_final_ack: bool,
    /// Jobs ended on their log stream: a later stream of theirs is told
    /// the final state, as the server does.
    pub ended_jobs: HashSet<String>,
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
    /// Stored log lines per job.
    pub job_lines: HashMap<String, Vec<LogLine>>,
    /// Job tokens the fake accepts (JOB_TOKEN, then the renewed ones: the
    /// current and the previous one of each job).
    pub valid_job_tokens: HashSet<String>,
    /// Jobs handed out, by id.
    pub polled: HashMap<String, AgentJob>,
    pub polls: u32,
    /// (job id, token presented) of each RenewLease.
    pub renewals: Vec<(String, String)>,
    /// Renewed tokens issued, in order.
    pub issued_tokens: Vec<String>,
    /// RenewLease answers FAILED_PRECONDITION for these jobs.
    pub lost_leases: HashSet<String>,
    /// Jobs canceled.
    pub canceled: HashSet<String>,
    /// Do not push cancellation on the log stream (only on renewals).
    pub quiet_logs: bool,
    /// Refuse every new log stream (UNAVAILABLE).
    pub refuse_streams: bool,
    /// The final state an end on the log stream is answered with (the
    /// server's, when it had ended the job first); `None`: succeeded.
    pub end_state: Option<JobState>,
    /// Refuse a batch that leaves a gap with FAILED_PRECONDITION, as the
    /// server does (otherwise it is counted in `gaps` and not stored).
    pub refuse_gaps: bool,
    pub refused_streams: u32,
    /// End every open log stream with UNAVAILABLE at the next poke.
    pub drop_streams: bool,
    pub deregistrations: u32,
    /// Source archives by id.
    pub sources: HashMap<String, Vec<u8>>,
    /// Announce a wrong SHA-256 for sources.
    pub tamper_source: bool,
    /// (job id, header, content) of each test results upload.
    pub test_uploads: Vec<(String, BlobHeader, Vec<u8>)>,
    /// (job id, header, content) of each artifact upload.
    pub artifact_uploads: Vec<(String, BlobHeader, Vec<u8>)>,
    /// Sizes of every upload chunk.
    pub chunk_sizes: Vec<usize>,
    pub summaries: HashMap<String, TestSummary>,
}

impl State {
    /// Whether `method` was called.
    pub fn called(&self, method: &str) -> bool {
        self.authorizations.iter().any(|(name, _)| *name == method)
    }
}

#[derive(Clone)]
pub struct Fake {
    pub state: Arc<Mutex<State>>,
    server_secret: SecretKey,
    /// Bumped to wake the log streams (cancellation, dropping).
    pokes: Arc<watch::Sender<u64>>,
}

impl Fake {
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("state lock")
    }

    /// Cancels a job: pushed on its log stream at once (unless quiet_logs)
    /// and answered on its next renewal.
    pub fn cancel(&self, job_id: &str) {
        self.state().canceled.insert(job_id.to_owned());
        self.poke();
    }

    /// Wakes the log streams to look at the state.
    pub fn poke(&self) {
        self.pokes.send_modify(|count| *count += 1);
    }

    /// Queues a job and accepts its token.
    pub fn queue(&self, job: AgentJob) {
        let mut state = self.state();
        state.valid_job_tokens.insert(job.job_token.clone());
        state.queue.push_back(job);
    }

    /// The stored lines of a job.
    pub fn lines_of(&self, job_id: &str) -> Vec<LogLine> {
        self.state()
            .job_lines
            .get(job_id)
            .cloned()
            .unwrap_or_default()
    }

    /// Checks the job token; returns the one presented.
    fn authorize_job<T>(
        &self,
        method: &'static str,
        request: &Request<T>,
    ) -> Result<String, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let token = header.strip_prefix("Bearer ").unwrap_or("").to_owned();
        let mut state = self.state();
        state.authorizations.push((method, header));
        if state.valid_job_tokens.contains(&token) {
            Ok(token)
        } else {
            Err(Status::unauthenticated("bad job token"))
        }
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

    fn store(&self, job_id: &str, lines: Vec<LogLine>) -> u64 {
        let mut state = self.state();
        let stored = state.job_lines.get(job_id).map_or(0, Vec::len) as u64;
        if let Some(first) = lines.first()
            && first.sequence > stored + 1
        {
            state.gaps += 1;
        }
        let mut next = stored + 1;
        for line in lines {
            if line.sequence == next {
                next += 1;
                if let Some(update) = &line.step_update {
                    // Recorded as the server records it: once, with the line.
                    state.reports.push(ReportStepRequest {
                        job_id: job_id.to_owned(),
                        index: line.step_index,
                        state: update.state,
                        exit_code: update.exit_code,
                        time: line.time,
                    });
                }
                state.lines.push(line.clone());
                state
                    .job_lines
                    .entry(job_id.to_owned())
                    .or_default()
                    .push(line);
            }
        }
        next - 1
    }

    fn stored(&self, job_id: &str) -> u64 {
        self.state().job_lines.get(job_id).map_or(0, Vec::len) as u64
    }
}

/// Starts the fake; returns it and its `http://127.0.0.1:PORT` URL.
pub async fn start() -> (Fake, String) {
    let fake = Fake {
        state: Arc::default(),
        server_secret: SecretKey::generate().expect("server key"),
        pokes: Arc::new(watch::channel(0).0),
    };
    fake.state().valid_job_tokens.insert(JOB_TOKEN.into());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let router = tonic::transport::Server::builder()
        .add_service(RegistrationServiceServer::new(fake.clone()))
        .add_service(TokenServiceServer::new(fake.clone()))
        .add_service(JobServiceServer::new(fake.clone()))
        .add_service(LogServiceServer::new(fake.clone()))
        .add_service(ResourceServiceServer::new(fake.clone()));
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
    async fn update_agent(
        &self,
        _: Request<UpdateAgentRequest>,
    ) -> Result<Response<UpdateAgentResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn deregister(
        &self,
        request: Request<DeregisterRequest>,
    ) -> Result<Response<DeregisterResponse>, Status> {
        self.authorize("Deregister", &request, LISTENER_TOKEN)?;
        self.state().deregistrations += 1;
        Ok(Response::new(DeregisterResponse {}))
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
        let job = {
            let mut state = self.state();
            state.polls += 1;
            let job = state.queue.pop_front();
            if let Some(job) = &job {
                state.polled.insert(job.job_id.clone(), job.clone());
            }
            job
        };
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
        self.authorize_job("ReportStep", &request)?;
        self.state().reports.push(request.into_inner());
        Ok(Response::new(ReportStepResponse {}))
    }
    async fn complete_job(
        &self,
        request: Request<CompleteJobRequest>,
    ) -> Result<Response<CompleteJobResponse>, Status> {
        self.authorize_job("CompleteJob", &request)?;
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
    async fn renew_lease(
        &self,
        request: Request<RenewLeaseRequest>,
    ) -> Result<Response<RenewLeaseResponse>, Status> {
        let presented = self.authorize_job("RenewLease", &request)?;
        let job_id = request.into_inner().job_id;
        let (token, cancel_requested) = {
            let mut state = self.state();
            state.renewals.push((job_id.clone(), presented.clone()));
            if state.lost_leases.contains(&job_id) {
                return Err(Status::failed_precondition("the lease was lost"));
            }
            let token = format!("job-token-renewed-{}", state.issued_tokens.len() + 1);
            // The presented token stays valid for one more renewal; the one
            // before it is revoked.
            let previous: Vec<String> = state
                .issued_tokens
                .iter()
                .rev()
                .skip(1)
                .take(1)
                .cloned()
                .collect();
            for old in previous {
                if old != presented {
                    state.valid_job_tokens.remove(&old);
                }
            }
            if !state.issued_tokens.is_empty() {
                state.valid_job_tokens.remove(JOB_TOKEN);
            }
            state.valid_job_tokens.insert(token.clone());
            state.issued_tokens.push(token.clone());
            (token, state.canceled.contains(&job_id))
        };
        let plaintext = AgentJobToken {
            job_token: token,
            expire_time: Some(ferry_proto::time::timestamp_from_micros(
                ferry_proto::time::now_micros() + 60_000_000,
            )),
        };
        let sealed = self.seal(
            &job_token_context(&job_id, AGENT_ID),
            &plaintext.encode_to_vec(),
        )?;
        Ok(Response::new(RenewLeaseResponse {
            lease_expire_time: None,
            sealed_job_token: Some(sealed),
            cancel_requested,
        }))
    }
    async fn cancel_job(
        &self,
        _: Request<CancelJobRequest>,
    ) -> Result<Response<CancelJobResponse>, Status> {
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
        self.authorize_job("StreamLogs", &request)?;
        let mut inbound = request.into_inner();
        let fail = {
            let mut state = self.state();
            if state.refuse_streams {
                state.refused_streams += 1;
                return Err(Status::unavailable("injected refusal"));
            }
            state.log_streams += 1;
            let fail = state.fail_streams > 0;
            state.fail_streams = state.fail_streams.saturating_sub(1);
            fail
        };
        // Like a real server, read the first message (it names the job)
        // before answering with headers.
        let first = inbound.message().await?;
        let job_id = first
            .as_ref()
            .map(|batch| batch.job_id.clone())
            .unwrap_or_default();
        let (sender, receiver) = mpsc::channel(16);
        let (moved, ended) = {
            let state = self.state();
            (
                state.moved_jobs.contains(&job_id),
                state.ended_jobs.contains(&job_id),
            )
        };
        if moved {
            return Err(Status::unauthenticated("injected: the job moved"));
        }
        if ended {
            let answer = StreamLogsResponse {
                acked_sequence: self.stored(&job_id),
                cancel_requested: false,
                final_state: JobState::Succeeded.into(),
            };
            let _ = sender.send(Ok(answer)).await;
            return Ok(Response::new(ReceiverStream::new(receiver)));
        }
        let fake = self.clone();
        let mut pokes = self.pokes.subscribe();
        tokio::spawn(async move {
            let mut next = first;
            let mut cancel_sent = false;
            while let Some(batch) = next {
                {
                    let mut state = fake.state();
                    state.batch_sizes.push(batch.lines.len());
                    state.batch_job_ids.push(batch.job_id.clone());
                }
                if fail {
                    let half = batch.lines.len() / 2;
                    fake.store(&job_id, batch.lines.into_iter().take(half).collect());
                    let _ = sender
                        .send(Err(Status::unavailable("injected failure")))
                        .await;
                    return;
                }
                let gap = batch
                    .lines
                    .first()
                    .is_some_and(|line| line.sequence > fake.stored(&job_id) + 1);
                if gap && fake.state().refuse_gaps {
                    fake.state().gaps += 1;
                    let _ = sender
                        .send(Err(Status::failed_precondition("injected: a gap")))
                        .await;
                    return;
                }
                let refuse_end = fake.state().refuse_ends.filter(|_| batch.end.is_some());
                if let Some(code) = refuse_end {
                    if code == tonic::Code::FailedPrecondition {
                        fake.state().moved_jobs.insert(job_id.clone());
                    }
                    let _ = sender
                        .send(Err(Status::new(code, "injected: end refused")))
                        .await;
                    return;
                }
                let acked_sequence = fake.store(&job_id, batch.lines);
                let final_state = match &batch.end {
                    Some(end) => {
                        let (drop_ack, end_state) = {
                            let mut state = fake.state();
                            state.stream_ends += 1;
                            state.completions.push(CompleteJobRequest {
                                job_id: job_id.clone(),
                                result: end.result,
                                message: end.message.clone(),
                            });
                            state.ended_jobs.insert(job_id.clone());
                            (
                                std::mem::take(&mut state.drop_final_ack),
                                state.end_state.unwrap_or(JobState::Succeeded),
                            )
                        };
                        if drop_ack {
                            let _ = sender
                                .send(Err(Status::unavailable("injected: final ack lost")))
                                .await;
                            return;
                        }
                        end_state
                    }
                    None => JobState::Unspecified,
                };
                if sender
                    .send(Ok(StreamLogsResponse {
                        acked_sequence,
                        cancel_requested: false,
                        final_state: final_state.into(),
                    }))
                    .await
                    .is_err()
                    || batch.end.is_some()
                {
                    return;
                }
                next = loop {
                    let (canceled, drop_stream) = {
                        let state = fake.state();
                        (
                            !state.quiet_logs && state.canceled.contains(&job_id),
                            state.drop_streams,
                        )
                    };
                    if drop_stream {
                        let _ = sender.send(Err(Status::unavailable("injected drop"))).await;
                        return;
                    }
                    if canceled && !cancel_sent {
                        cancel_sent = true;
                        let response = StreamLogsResponse {
                            acked_sequence: fake.stored(&job_id),
                            cancel_requested: true,
                            final_state: JobState::Unspecified.into(),
                        };
                        if sender.send(Ok(response)).await.is_err() {
                            return;
                        }
                    }
                    tokio::select! {
                        message = inbound.message() => break message.ok().flatten(),
                        changed = pokes.changed() => {
                            if changed.is_err() {
                                return;
                            }
                        }
                    }
                };
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

/// Reads a header-then-chunks upload; checks size and checksum.
async fn receive_blob<T>(
    fake: &Fake,
    mut inbound: Streaming<T>,
    split: impl Fn(T) -> (String, Option<BlobHeader>, Option<Vec<u8>>),
) -> Result<(String, BlobHeader, Vec<u8>), Status>
where
    T: Send + 'static,
{
    let first = inbound
        .message()
        .await?
        .ok_or_else(|| Status::invalid_argument("empty upload"))?;
    let (job_id, header, _) = split(first);
    let header = header.ok_or_else(|| Status::invalid_argument("no header first"))?;
    let mut content = Vec::new();
    while let Some(message) = inbound.message().await? {
        let (_, header_again, chunk) = split(message);
        if header_again.is_some() {
            return Err(Status::invalid_argument("two headers"));
        }
        let chunk = chunk.ok_or_else(|| Status::invalid_argument("no chunk"))?;
        fake.state().chunk_sizes.push(chunk.len());
        content.extend_from_slice(&chunk);
    }
    if content.len() as u64 != header.size {
        return Err(Status::invalid_argument("size mismatch"));
    }
    if hex::encode(Sha256::digest(&content)) != header.sha256 {
        return Err(Status::invalid_argument("checksum mismatch"));
    }
    Ok((job_id, header, content))
}

#[tonic::async_trait]
impl ResourceService for Fake {
    type DownloadSourceStream = ReceiverStream<Result<DownloadSourceResponse, Status>>;
    type DownloadArtifactStream = ReceiverStream<Result<DownloadArtifactResponse, Status>>;

    async fn upload_source(
        &self,
        _: Request<Streaming<UploadSourceRequest>>,
    ) -> Result<Response<UploadSourceResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn download_source(
        &self,
        request: Request<DownloadSourceRequest>,
    ) -> Result<Response<Self::DownloadSourceStream>, Status> {
        self.authorize_job("DownloadSource", &request)?;
        let job_id = request.into_inner().job_id;
        let (content, tamper) = {
            let state = self.state();
            let source_id = state
                .polled
                .get(&job_id)
                .map(|job| job.source_id.clone())
                .ok_or_else(|| Status::not_found("no such job"))?;
            let content = state
                .sources
                .get(&source_id)
                .cloned()
                .ok_or_else(|| Status::not_found("no such source"))?;
            (content, state.tamper_source)
        };
        let mut sha256 = hex::encode(Sha256::digest(&content));
        if tamper {
            sha256 = hex::encode(Sha256::digest(b"something else"));
        }
        let (sender, receiver) = mpsc::channel(4);
        tokio::spawn(async move {
            let info = BlobInfo {
                name: "source.tar.gz".into(),
                size: content.len() as u64,
                sha256,
                create_time: None,
            };
            let message = DownloadSourceResponse {
                content: Some(download_source_response::Content::Info(info)),
            };
            if sender.send(Ok(message)).await.is_err() {
                return;
            }
            for chunk in content.chunks(64 * 1024) {
                let message = DownloadSourceResponse {
                    content: Some(download_source_response::Content::Chunk(chunk.to_vec())),
                };
                if sender.send(Ok(message)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    async fn upload_test_results(
        &self,
        request: Request<Streaming<UploadTestResultsRequest>>,
    ) -> Result<Response<UploadTestResultsResponse>, Status> {
        self.authorize_job("UploadTestResults", &request)?;
        let (job_id, header, content) = receive_blob(self, request.into_inner(), |message| {
            match message.content {
                Some(upload_test_results_request::Content::Header(header)) => {
                    (message.job_id, Some(header), None)
                }
                Some(upload_test_results_request::Content::Chunk(chunk)) => {
                    (message.job_id, None, Some(chunk))
                }
                None => (message.job_id, None, None),
            }
        })
        .await?;
        // A crude JUnit count: enough for the agent's tests.
        let text = String::from_utf8_lossy(&content);
        let total = text.matches("<testcase").count() as u32;
        let failed = (text.matches("<failure").count() + text.matches("<error").count()) as u32;
        let skipped = text.matches("<skipped").count() as u32;
        let mut state = self.state();
        let summary = state.summaries.entry(job_id.clone()).or_default();
        summary.total += total;
        summary.failed += failed;
        summary.skipped += skipped;
        summary.passed = summary.total - summary.failed - summary.skipped;
        summary.files += 1;
        let summary = summary.clone();
        state.test_uploads.push((job_id, header, content));
        Ok(Response::new(UploadTestResultsResponse {
            summary: Some(summary),
        }))
    }

    async fn upload_artifact(
        &self,
        request: Request<Streaming<UploadArtifactRequest>>,
    ) -> Result<Response<UploadArtifactResponse>, Status> {
        self.authorize_job("UploadArtifact", &request)?;
        let (job_id, header, content) = receive_blob(self, request.into_inner(), |message| {
            match message.content {
                Some(upload_artifact_request::Content::Header(header)) => {
                    (message.job_id, Some(header), None)
                }
                Some(upload_artifact_request::Content::Chunk(chunk)) => {
                    (message.job_id, None, Some(chunk))
                }
                None => (message.job_id, None, None),
            }
        })
        .await?;
        let info = BlobInfo {
            name: header.name.clone(),
            size: header.size,
            sha256: header.sha256.clone(),
            create_time: None,
        };
        self.state()
            .artifact_uploads
            .push((job_id, header, content));
        Ok(Response::new(UploadArtifactResponse { info: Some(info) }))
    }

    async fn download_artifact(
        &self,
        _: Request<DownloadArtifactRequest>,
    ) -> Result<Response<Self::DownloadArtifactStream>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn list_artifacts(
        &self,
        _: Request<ListArtifactsRequest>,
    ) -> Result<Response<ListArtifactsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
}
