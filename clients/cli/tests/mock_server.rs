//! ferryctl against an in-process mock of the ferry services (plaintext
//! HTTP/2 on a loopback port): log following with a reconnect, `job queue
//! --follow` exit codes, `job list` paging, gRPC error messages, `job
//! cancel`, source uploads, artifact downloads and `agent disable`. The
//! end-to-end tests against the real server live in the `tests` crate.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::Parser;
use ferry_client::{Bearer, ServerAddress};
use ferry_proto::v1::job_service_server::{JobService, JobServiceServer};
use ferry_proto::v1::log_service_server::{LogService, LogServiceServer};
use ferry_proto::v1::registration_service_server::{
    RegistrationService, RegistrationServiceServer,
};
use ferry_proto::v1::resource_service_server::{ResourceService, ResourceServiceServer};
use ferry_proto::v1::*;
use futures::StreamExt;
use futures::stream::{self, BoxStream};
use sha2::{Digest, Sha256};
use tonic::codegen::async_trait;
use tonic::{Request, Response, Status};

const TOKEN: &str = "test-pat";

#[derive(Default)]
struct Recorded {
    follow_requests: Vec<(u64, bool)>,
    list_requests: Vec<(u32, String)>,
    queued: Vec<JobSpec>,
    cancels: Vec<(String, String)>,
    uploads: Vec<Upload>,
    agent_updates: Vec<(String, bool)>,
}

/// One `UploadSource` call as the mock received it.
#[derive(Clone)]
struct Upload {
    header: BlobHeader,
    pool: String,
    chunk_sizes: Vec<usize>,
    bytes: Vec<u8>,
}

/// The artifact `good.bin` of job j1.
fn artifact_bytes() -> Vec<u8> {
    (0..300_000u32).map(|n| (n % 251) as u8).collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[derive(Clone)]
struct Mock {
    final_state: JobState,
    recorded: Arc<Mutex<Recorded>>,
}

fn check_token<T>(request: &Request<T>) -> Result<(), Status> {
    let header = request
        .metadata()
        .get("authorization")
        .and_then(|value| value.to_str().ok());
    if header == Some(&format!("Bearer {TOKEN}")) {
        Ok(())
    } else {
        Err(Status::unauthenticated("bad or missing token"))
    }
}

fn line(sequence: u64, step_index: u32, stream: LogStream, text: &str) -> LogLine {
    LogLine {
        sequence,
        step_index,
        time: Some(ferry_proto::time::timestamp_from_micros(
            1_700_000_000_000_000,
        )),
        stream: stream as i32,
        text: text.to_owned(),
        step_update: None,
    }
}

fn job(id: &str, state: JobState) -> Job {
    Job {
        id: id.to_owned(),
        name: "build".to_owned(),
        pool: "default".to_owned(),
        state: state as i32,
        steps: vec![
            StepStatus {
                index: 0,
                name: "greet".to_owned(),
                ..StepStatus::default()
            },
            StepStatus {
                index: 1,
                name: "test".to_owned(),
                ..StepStatus::default()
            },
        ],
        ..Job::default()
    }
}

#[async_trait]
impl LogService for Mock {
    type StreamLogsStream = BoxStream<'static, Result<StreamLogsResponse, Status>>;
    type FollowLogsStream = BoxStream<'static, Result<FollowLogsResponse, Status>>;

    async fn stream_logs(
        &self,
        _: Request<tonic::Streaming<StreamLogsRequest>>,
    ) -> Result<Response<Self::StreamLogsStream>, Status> {
        Err(Status::unimplemented("not in the mock"))
    }

    /// The first call sends lines 1 and 2, then breaks; a resumed call sends
    /// line 2 again (which must be skipped), lines 3 and 4, and the end.
    async fn follow_logs(
        &self,
        request: Request<FollowLogsRequest>,
    ) -> Result<Response<Self::FollowLogsStream>, Status> {
        check_token(&request)?;
        let request = request.into_inner();
        let first = {
            let mut recorded = self
                .recorded
                .lock()
                .map_err(|_| Status::internal("poisoned"))?;
            recorded
                .follow_requests
                .push((request.from_sequence, request.follow));
            recorded.follow_requests.len() == 1
        };
        let messages: Vec<Result<FollowLogsResponse, Status>> = if first {
            vec![
                Ok(FollowLogsResponse {
                    lines: vec![
                        line(1, 0, LogStream::Stdout, "hello"),
                        line(2, 0, LogStream::Stderr, "warning"),
                    ],
                    final_state: 0,
                }),
                Err(Status::unavailable("connection reset")),
            ]
        } else {
            vec![
                Ok(FollowLogsResponse {
                    lines: vec![
                        line(2, 0, LogStream::Stderr, "warning"),
                        line(3, 1, LogStream::Stdout, "testing"),
                    ],
                    final_state: 0,
                }),
                Ok(FollowLogsResponse {
                    lines: vec![line(4, 1, LogStream::System, "step ended")],
                    final_state: self.final_state as i32,
                }),
            ]
        };
        Ok(Response::new(Box::pin(stream::iter(messages))))
    }
}

#[async_trait]
impl JobService for Mock {
    async fn poll_job(
        &self,
        _: Request<PollJobRequest>,
    ) -> Result<Response<PollJobResponse>, Status> {
        Err(Status::unimplemented("not in the mock"))
    }

    async fn report_step(
        &self,
        _: Request<ReportStepRequest>,
    ) -> Result<Response<ReportStepResponse>, Status> {
        Err(Status::unimplemented("not in the mock"))
    }

    async fn complete_job(
        &self,
        _: Request<CompleteJobRequest>,
    ) -> Result<Response<CompleteJobResponse>, Status> {
        Err(Status::unimplemented("not in the mock"))
    }

    async fn renew_lease(
        &self,
        _: Request<RenewLeaseRequest>,
    ) -> Result<Response<RenewLeaseResponse>, Status> {
        Err(Status::unimplemented("not in the mock"))
    }

    /// j1 is queued (canceled at once), j2 running (its agent stops it).
    async fn cancel_job(
        &self,
        request: Request<CancelJobRequest>,
    ) -> Result<Response<CancelJobResponse>, Status> {
        check_token(&request)?;
        let request = request.into_inner();
        let state = match request.job_id.as_str() {
            "j1" => JobState::Canceled,
            "j2" => JobState::Running,
            "j3" => {
                return Err(Status::failed_precondition("job j3 already ended"));
            }
            other => return Err(Status::not_found(format!("job {other}"))),
        };
        self.recorded
            .lock()
            .map_err(|_| Status::internal("poisoned"))?
            .cancels
            .push((request.job_id, request.reason));
        Ok(Response::new(CancelJobResponse {
            state: state as i32,
        }))
    }

    async fn queue_job(
        &self,
        request: Request<QueueJobRequest>,
    ) -> Result<Response<QueueJobResponse>, Status> {
        check_token(&request)?;
        let spec = request
            .into_inner()
            .spec
            .ok_or_else(|| Status::invalid_argument("no spec"))?;
        self.recorded
            .lock()
            .map_err(|_| Status::internal("poisoned"))?
            .queued
            .push(spec);
        Ok(Response::new(QueueJobResponse {
            job: Some(job("j1", JobState::Queued)),
        }))
    }

    async fn get_job(
        &self,
        request: Request<GetJobRequest>,
    ) -> Result<Response<GetJobResponse>, Status> {
        check_token(&request)?;
        let id = request.into_inner().job_id;
        if id != "j1" {
            return Err(Status::not_found(format!("job {id}")));
        }
        Ok(Response::new(GetJobResponse {
            job: Some(job("j1", self.final_state)),
        }))
    }

    /// Two jobs per page, seven in all.
    async fn list_jobs(
        &self,
        request: Request<ListJobsRequest>,
    ) -> Result<Response<ListJobsResponse>, Status> {
        check_token(&request)?;
        let request = request.into_inner();
        if request.pool == "forbidden" {
            return Err(Status::permission_denied(
                "not an administrator of pool forbidden",
            ));
        }
        self.recorded
            .lock()
            .map_err(|_| Status::internal("poisoned"))?
            .list_requests
            .push((request.page_size, request.page_token.clone()));
        let start: usize = request.page_token.parse().unwrap_or(0);
        let end = (start + 2).min(7).min(start + request.page_size as usize);
        let jobs = (start..end)
            .map(|n| job(&format!("j{n}"), JobState::Succeeded))
            .collect();
        let next_page_token = if end < 7 {
            end.to_string()
        } else {
            String::new()
        };
        Ok(Response::new(ListJobsResponse {
            jobs,
            next_page_token,
        }))
    }
}

#[async_trait]
impl ResourceService for Mock {
    type DownloadSourceStream = BoxStream<'static, Result<DownloadSourceResponse, Status>>;
    type DownloadArtifactStream = BoxStream<'static, Result<DownloadArtifactResponse, Status>>;

    /// Checks the header, the chunk sizes, the size and the hash like the
    /// server does, and keeps what it received.
    async fn upload_source(
        &self,
        request: Request<tonic::Streaming<UploadSourceRequest>>,
    ) -> Result<Response<UploadSourceResponse>, Status> {
        check_token(&request)?;
        let mut messages = request.into_inner();
        let first = messages
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty upload"))?;
        let Some(upload_source_request::Content::Header(header)) = first.content else {
            return Err(Status::invalid_argument(
                "the first message is not a header",
            ));
        };
        let mut upload = Upload {
            header: header.clone(),
            pool: first.pool,
            chunk_sizes: Vec::new(),
            bytes: Vec::new(),
        };
        while let Some(message) = messages.message().await? {
            match message.content {
                Some(upload_source_request::Content::Chunk(chunk)) => {
                    if chunk.len() > 1024 * 1024 {
                        return Err(Status::invalid_argument("chunk over 1 MiB"));
                    }
                    upload.chunk_sizes.push(chunk.len());
                    upload.bytes.extend_from_slice(&chunk);
                }
                _ => return Err(Status::invalid_argument("a second header")),
            }
        }
        if upload.bytes.len() as u64 != header.size {
            return Err(Status::invalid_argument("size mismatch"));
        }
        if sha256_hex(&upload.bytes) != header.sha256 {
            return Err(Status::invalid_argument("sha256 mismatch"));
        }
        self.recorded
            .lock()
            .map_err(|_| Status::internal("poisoned"))?
            .uploads
            .push(upload);
        Ok(Response::new(UploadSourceResponse {
            source_id: "src-1".to_owned(),
            info: Some(BlobInfo {
                name: header.name,
                size: header.size,
                sha256: header.sha256,
                create_time: None,
            }),
        }))
    }

    async fn download_source(
        &self,
        _: Request<DownloadSourceRequest>,
    ) -> Result<Response<Self::DownloadSourceStream>, Status> {
        Err(Status::unimplemented("not in the mock"))
    }

    async fn upload_test_results(
        &self,
        _: Request<tonic::Streaming<UploadTestResultsRequest>>,
    ) -> Result<Response<UploadTestResultsResponse>, Status> {
        Err(Status::unimplemented("not in the mock"))
    }

    async fn upload_artifact(
        &self,
        _: Request<tonic::Streaming<UploadArtifactRequest>>,
    ) -> Result<Response<UploadArtifactResponse>, Status> {
        Err(Status::unimplemented("not in the mock"))
    }

    /// `dist/good.bin` is served as announced; `dist/bad.bin` is announced
    /// with the hash of other bytes.
    async fn download_artifact(
        &self,
        request: Request<DownloadArtifactRequest>,
    ) -> Result<Response<Self::DownloadArtifactStream>, Status> {
        check_token(&request)?;
        let request = request.into_inner();
        let content = artifact_bytes();
        let sha256 = match request.name.as_str() {
            "dist/good.bin" => sha256_hex(&content),
            "dist/bad.bin" => sha256_hex(b"other bytes"),
            other => return Err(Status::not_found(format!("artifact {other}"))),
        };
        let info = DownloadArtifactResponse {
            content: Some(download_artifact_response::Content::Info(BlobInfo {
                name: request.name,
                size: content.len() as u64,
                sha256,
                create_time: None,
            })),
        };
        let chunks: Vec<Result<DownloadArtifactResponse, Status>> = content
            .chunks(64 * 1024)
            .map(|chunk| {
                Ok(DownloadArtifactResponse {
                    content: Some(download_artifact_response::Content::Chunk(chunk.to_vec())),
                })
            })
            .collect();
        let messages = stream::once(async { Ok(info) }).chain(stream::iter(chunks));
        Ok(Response::new(Box::pin(messages)))
    }

    async fn list_artifacts(
        &self,
        request: Request<ListArtifactsRequest>,
    ) -> Result<Response<ListArtifactsResponse>, Status> {
        check_token(&request)?;
        let content = artifact_bytes();
        Ok(Response::new(ListArtifactsResponse {
            artifacts: vec![BlobInfo {
                name: "dist/good.bin".to_owned(),
                size: content.len() as u64,
                sha256: sha256_hex(&content),
                create_time: None,
            }],
            job_state: JobState::Running as i32,
        }))
    }
}

/// Only `UpdateAgent`: the rest answers UNIMPLEMENTED.
#[async_trait]
impl RegistrationService for Mock {
    async fn register(
        &self,
        _: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        Err(Status::unimplemented("not in the mock"))
    }

    async fn create_pool(
        &self,
        _: Request<CreatePoolRequest>,
    ) -> Result<Response<CreatePoolResponse>, Status> {
        Err(Status::unimplemented("not in the mock"))
    }

    async fn list_pools(
        &self,
        _: Request<ListPoolsRequest>,
    ) -> Result<Response<ListPoolsResponse>, Status> {
        Err(Status::unimplemented("not in the mock"))
    }

    async fn list_agents(
        &self,
        _: Request<ListAgentsRequest>,
    ) -> Result<Response<ListAgentsResponse>, Status> {
        Err(Status::unimplemented("not in the mock"))
    }

    async fn remove_agent(
        &self,
        _: Request<RemoveAgentRequest>,
    ) -> Result<Response<RemoveAgentResponse>, Status> {
        Err(Status::unimplemented("not in the mock"))
    }

    async fn update_agent(
        &self,
        request: Request<UpdateAgentRequest>,
    ) -> Result<Response<UpdateAgentResponse>, Status> {
        check_token(&request)?;
        let request = request.into_inner();
        if request.agent_id != "a1" {
            return Err(Status::not_found(format!("agent {}", request.agent_id)));
        }
        self.recorded
            .lock()
            .map_err(|_| Status::internal("poisoned"))?
            .agent_updates
            .push((request.agent_id.clone(), request.disabled));
        Ok(Response::new(UpdateAgentResponse {
            agent: Some(Agent {
                id: request.agent_id,
                name: "runner".to_owned(),
                disabled: request.disabled,
                ..Agent::default()
            }),
        }))
    }

    async fn deregister(
        &self,
        _: Request<DeregisterRequest>,
    ) -> Result<Response<DeregisterResponse>, Status> {
        Err(Status::unimplemented("not in the mock"))
    }

    async fn create_administrator(
        &self,
        _: Request<CreateAdministratorRequest>,
    ) -> Result<Response<CreateAdministratorResponse>, Status> {
        Err(Status::unimplemented("not in the mock"))
    }

    async fn list_administrators(
        &self,
        _: Request<ListAdministratorsRequest>,
    ) -> Result<Response<ListAdministratorsResponse>, Status> {
        Err(Status::unimplemented("not in the mock"))
    }

    async fn remove_administrator(
        &self,
        _: Request<RemoveAdministratorRequest>,
    ) -> Result<Response<RemoveAdministratorResponse>, Status> {
        Err(Status::unimplemented("not in the mock"))
    }
}

async fn start(final_state: JobState) -> (SocketAddr, Arc<Mutex<Recorded>>) {
    let mock = Mock {
        final_state,
        recorded: Arc::default(),
    };
    let recorded = mock.recorded.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(JobServiceServer::new(mock.clone()))
            .add_service(ResourceServiceServer::new(mock.clone()))
            .add_service(RegistrationServiceServer::new(mock.clone()))
            .add_service(LogServiceServer::new(mock))
            .serve_with_incoming(incoming),
    );
    (address, recorded)
}

async fn client(address: SocketAddr) -> ferryctl::Client {
    let url = format!("http://{address}");
    let channel = ServerAddress::new(url.clone(), None)
        .connect()
        .await
        .expect("connect");
    ferryctl::Client::new(url, channel, Bearer::new(TOKEN).expect("bearer"))
}

/// Runs ferryctl's `run` with an empty config file so that no local
/// configuration leaks in.
async fn run(address: SocketAddr, token: &str, args: &[&str]) -> anyhow::Result<ExitCode> {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("ferryctl.toml");
    std::fs::write(&config, "").expect("config");
    let url = format!("http://{address}");
    let config = config.to_string_lossy().into_owned();
    let mut argv = vec![
        "ferryctl", "--url", &url, "--token", token, "--config", &config,
    ];
    argv.extend_from_slice(args);
    ferryctl::run(ferryctl::Cli::try_parse_from(argv)?).await
}

#[tokio::test]
async fn follow_logs_prints_every_line_once_across_a_reconnect() {
    let (address, recorded) = start(JobState::Succeeded).await;
    let mut client = client(address).await;
    let mut out = Vec::new();
    let state = ferryctl::follow_logs(&mut client, "j1", 0, &mut out, false)
        .await
        .expect("follow");
    assert_eq!(state, JobState::Succeeded);
    assert_eq!(
        String::from_utf8_lossy(&out),
        "[greet] hello\n[greet] warning\n[test] testing\n[test] step ended\n"
    );
    let requests = recorded.lock().expect("lock").follow_requests.clone();
    assert_eq!(requests, [(0, true), (3, true)]);

    let mut out = Vec::new();
    let error = ferryctl::follow_logs(&mut client, "nope", 0, &mut out, true)
        .await
        .expect_err("unknown job");
    assert_eq!(error.to_string(), "not found: job nope");
}

#[tokio::test]
async fn job_queue_follow_exits_with_the_job_result() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pipeline = dir.path().join("p.yaml");
    std::fs::write(&pipeline, "name: build\nsteps:\n  - run: make\n").expect("write");
    let pipeline = pipeline.to_string_lossy().into_owned();

    let (address, recorded) = start(JobState::Failed).await;
    let args = [
        "job", "queue", &pipeline, "--follow", "--pool", "linux", "--var", "A=1",
    ];
    let code = run(address, TOKEN, &args).await.expect("run");
    assert_eq!(code, ExitCode::FAILURE);
    let queued = recorded.lock().expect("lock").queued.clone();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].pool, "linux");
    assert_eq!(queued[0].variables.get("A").map(String::as_str), Some("1"));

    let (address, _) = start(JobState::Succeeded).await;
    let code = run(
        address,
        TOKEN,
        &["-o", "json", "job", "queue", &pipeline, "-f"],
    )
    .await
    .expect("run");
    assert_eq!(code, ExitCode::SUCCESS);
    let (address, _) = start(JobState::Canceled).await;
    let code = run(address, TOKEN, &["logs", "j1", "--follow", "--timestamps"])
        .await
        .expect("run");
    assert_eq!(code, ExitCode::FAILURE);
}

#[tokio::test]
async fn job_list_follows_pages_up_to_the_limit() {
    let (address, recorded) = start(JobState::Succeeded).await;
    let code = run(address, TOKEN, &["job", "list", "--limit", "5"])
        .await
        .expect("run");
    assert_eq!(code, ExitCode::SUCCESS);
    let requests = recorded.lock().expect("lock").list_requests.clone();
    let expected = [(5, String::new()), (3, "2".to_owned()), (1, "4".to_owned())];
    assert_eq!(requests, expected);
}

#[tokio::test]
async fn grpc_errors_become_one_readable_line() {
    let (address, _) = start(JobState::Succeeded).await;
    let error = run(address, "wrong-token", &["job", "get", "j1"])
        .await
        .expect_err("refused");
    assert_eq!(
        error.to_string(),
        "the server refused the token: bad or missing token"
    );
    assert!(!format!("{error:#}").contains("wrong-token"));
    let error = run(address, TOKEN, &["job", "list", "--pool", "forbidden"])
        .await
        .expect_err("denied");
    assert_eq!(
        error.to_string(),
        "permission denied: not an administrator of pool forbidden"
    );
    // The mock has no registration service.
    let error = run(address, TOKEN, &["pool", "list"])
        .await
        .expect_err("unimplemented");
    assert!(
        error.to_string().contains("does not support this call"),
        "{error}"
    );
    let error = run(address, TOKEN, &["job", "get", "j9"])
        .await
        .expect_err("missing");
    assert_eq!(error.to_string(), "not found: job j9");
}

#[tokio::test]
async fn job_cancel_sends_the_reason_and_reports_the_state() {
    let (address, recorded) = start(JobState::Succeeded).await;
    let code = run(
        address,
        TOKEN,
        &["job", "cancel", "j1", "--reason", "wrong branch"],
    )
    .await
    .expect("queued job");
    assert_eq!(code, ExitCode::SUCCESS);
    let code = run(address, TOKEN, &["-o", "json", "job", "cancel", "j2"])
        .await
        .expect("running job");
    assert_eq!(code, ExitCode::SUCCESS);
    let cancels = recorded.lock().expect("lock").cancels.clone();
    assert_eq!(
        cancels,
        [
            ("j1".to_owned(), "wrong branch".to_owned()),
            ("j2".to_owned(), String::new())
        ]
    );
    let error = run(address, TOKEN, &["job", "cancel", "j3"])
        .await
        .expect_err("ended");
    assert_eq!(error.to_string(), "not possible now: job j3 already ended");
    let error = run(address, TOKEN, &["job", "cancel", "j9"])
        .await
        .expect_err("missing");
    assert_eq!(error.to_string(), "not found: job j9");
}

/// Bytes gzip cannot shrink, so that the archive takes several chunks.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

#[cfg(unix)]
#[tokio::test]
async fn job_queue_uploads_the_source_in_chunks_then_queues_with_its_id() {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().expect("tempdir");
    let app = dir.path().join("app");
    std::fs::create_dir_all(app.join("src/nested")).expect("mkdir");
    std::fs::create_dir_all(app.join(".git")).expect("mkdir");
    let big = noise(2_500_000, 0x9e37_79b9_7f4a_7c15);
    std::fs::write(app.join("src/nested/blob.bin"), &big).expect("write");
    std::fs::write(app.join("build.sh"), "#!/bin/sh\nmake\n").expect("write");
    std::fs::set_permissions(app.join("build.sh"), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    std::fs::write(app.join(".git/HEAD"), "ref: refs/heads/main\n").expect("write");
    let ci = dir.path().join("ci");
    std::fs::create_dir_all(&ci).expect("mkdir");
    let pipeline = ci.join("p.yaml");
    std::fs::write(
        &pipeline,
        "name: build\npool: linux\nsource: ../app\n\
         test-results: [\"target/reports/*.xml\"]\nartifacts: [dist/*.tar.gz, \"logs/**\"]\n\
         steps:\n  - run: ./build.sh\n",
    )
    .expect("write");
    let pipeline = pipeline.to_string_lossy().into_owned();

    let (address, recorded) = start(JobState::Succeeded).await;
    let code = run(address, TOKEN, &["job", "queue", &pipeline])
        .await
        .expect("run");
    assert_eq!(code, ExitCode::SUCCESS);
    let (uploads, queued) = {
        let recorded = recorded.lock().expect("lock");
        (recorded.uploads.clone(), recorded.queued.clone())
    };
    assert_eq!(uploads.len(), 1);
    let upload = &uploads[0];
    assert_eq!(upload.pool, "linux");
    assert_eq!(upload.header.name, "app.tar.gz");
    // The chunks reassemble to the announced bytes and hash.
    assert_eq!(upload.bytes.len() as u64, upload.header.size);
    assert_eq!(sha256_hex(&upload.bytes), upload.header.sha256);
    assert!(upload.chunk_sizes.len() >= 3, "{:?}", upload.chunk_sizes);
    assert!(upload.chunk_sizes.iter().all(|&size| size <= 1024 * 1024));
    let (last, full) = upload.chunk_sizes.split_last().expect("chunks");
    assert!(full.iter().all(|&size| size == 1024 * 1024));
    assert!(*last > 0);
    // ... and unpack to the tree, without .git.
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&upload.bytes[..]));
    let mut files = std::collections::BTreeMap::new();
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let path = entry.path().expect("path").to_string_lossy().into_owned();
        let mode = entry.header().mode().expect("mode");
        let mut content = Vec::new();
        entry.read_to_end(&mut content).expect("read");
        files.insert(path.trim_end_matches('/').to_owned(), (mode, content));
    }
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["build.sh", "src", "src/nested", "src/nested/blob.bin"]
    );
    assert_eq!(files["src/nested/blob.bin"].1, big);
    assert_eq!(files["build.sh"].0, 0o755);

    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].source_id, "src-1");
    assert_eq!(queued[0].test_results, ["target/reports/*.xml"]);
    assert_eq!(queued[0].artifacts, ["dist/*.tar.gz", "logs/**"]);

    // --source wins over the pipeline's key, --source-include-git keeps .git.
    let other = dir.path().join("other");
    std::fs::create_dir_all(other.join(".git")).expect("mkdir");
    std::fs::write(other.join(".git/HEAD"), "x").expect("write");
    let other = other.to_string_lossy().into_owned();
    let code = run(
        address,
        TOKEN,
        &[
            "job",
            "queue",
            &pipeline,
            "--source",
            &other,
            "--source-include-git",
        ],
    )
    .await
    .expect("run");
    assert_eq!(code, ExitCode::SUCCESS);
    let upload = recorded.lock().expect("lock").uploads[1].clone();
    assert_eq!(upload.header.name, "other.tar.gz");
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&upload.bytes[..]));
    let names: Vec<String> = archive
        .entries()
        .expect("entries")
        .map(|entry| {
            entry
                .expect("entry")
                .path()
                .expect("path")
                .to_string_lossy()
                .trim_end_matches('/')
                .to_owned()
        })
        .collect();
    assert_eq!(names, [".git", ".git/HEAD"]);

    // A source that cannot be packed fails before anything is sent.
    std::os::unix::fs::symlink("/etc/passwd", app.join("escape")).expect("symlink");
    let error = run(address, TOKEN, &["job", "queue", &pipeline])
        .await
        .expect_err("escaping link");
    assert!(
        format!("{error:#}").contains("symbolic link escape points outside the source directory"),
        "{error:#}"
    );
    assert_eq!(recorded.lock().expect("lock").uploads.len(), 2);
    assert_eq!(recorded.lock().expect("lock").queued.len(), 2);
}

#[tokio::test]
async fn artifact_download_verifies_and_refuses_to_overwrite() {
    let (address, _) = start(JobState::Succeeded).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("good.bin");
    let target_arg = target.to_string_lossy().into_owned();
    let code = run(
        address,
        TOKEN,
        &[
            "artifact",
            "download",
            "j1",
            "dist/good.bin",
            "-O",
            &target_arg,
        ],
    )
    .await
    .expect("download");
    assert_eq!(code, ExitCode::SUCCESS);
    assert_eq!(std::fs::read(&target).expect("read"), artifact_bytes());

    // Into a directory, under the name's last part; not over a file.
    let dir_arg = dir.path().to_string_lossy().into_owned();
    let error = run(
        address,
        TOKEN,
        &[
            "artifact",
            "download",
            "j1",
            "dist/good.bin",
            "-O",
            &dir_arg,
        ],
    )
    .await
    .expect_err("exists");
    assert_eq!(
        error.to_string(),
        format!("{} exists: pass --force to replace it", target.display())
    );
    std::fs::write(&target, "old").expect("write");
    let code = run(
        address,
        TOKEN,
        &[
            "-o",
            "json",
            "artifact",
            "download",
            "j1",
            "dist/good.bin",
            "-O",
            &dir_arg,
            "--force",
        ],
    )
    .await
    .expect("forced");
    assert_eq!(code, ExitCode::SUCCESS);
    assert_eq!(std::fs::read(&target).expect("read"), artifact_bytes());

    // A bad checksum is refused and leaves nothing behind.
    let bad = dir.path().join("bad.bin");
    let bad_arg = bad.to_string_lossy().into_owned();
    let error = run(
        address,
        TOKEN,
        &["artifact", "download", "j1", "dist/bad.bin", "-O", &bad_arg],
    )
    .await
    .expect_err("bad checksum");
    assert!(
        error
            .to_string()
            .starts_with("artifact dist/bad.bin failed verification"),
        "{error}"
    );
    assert!(!bad.exists());
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|entry| entry.expect("entry").file_name())
        .collect();
    assert_eq!(left, [std::ffi::OsString::from("good.bin")]);
    let error = run(
        address,
        TOKEN,
        &["artifact", "download", "j1", "dist/bad.bin", "-O", "-"],
    )
    .await
    .expect_err("bad checksum to stdout");
    assert!(error.to_string().contains("failed verification"), "{error}");

    let error = run(
        address,
        TOKEN,
        &["artifact", "download", "j1", "dist/none", "-O", &bad_arg],
    )
    .await
    .expect_err("missing");
    assert_eq!(error.to_string(), "not found: artifact dist/none");
    let code = run(address, TOKEN, &["artifact", "list", "j1"])
        .await
        .expect("list");
    assert_eq!(code, ExitCode::SUCCESS);
}

#[tokio::test]
async fn agents_are_disabled_and_enabled() {
    let (address, recorded) = start(JobState::Succeeded).await;
    for args in [
        &["agent", "disable", "a1"][..],
        &["-o", "json", "agent", "enable", "a1"][..],
    ] {
        assert_eq!(
            run(address, TOKEN, args).await.expect("run"),
            ExitCode::SUCCESS
        );
    }
    let updates = recorded.lock().expect("lock").agent_updates.clone();
    assert_eq!(updates, [("a1".to_owned(), true), ("a1".to_owned(), false)]);
    let error = run(address, TOKEN, &["agent", "disable", "a9"])
        .await
        .expect_err("missing");
    assert_eq!(error.to_string(), "not found: agent a9");
}
