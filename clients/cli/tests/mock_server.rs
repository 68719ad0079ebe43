//! ferryctl against an in-process mock of the ferry services (plaintext
//! HTTP/2 on a loopback port): log following with a reconnect, `job queue
//! --follow` exit codes, `job list` paging and gRPC error messages. The
//! end-to-end tests against the real server live in the `tests` crate.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::Parser;
use ferry_client::{Bearer, ServerAddress};
use ferry_proto::v1::job_service_server::{JobService, JobServiceServer};
use ferry_proto::v1::log_service_server::{LogService, LogServiceServer};
use ferry_proto::v1::*;
use futures::stream::{self, BoxStream};
use tonic::codegen::async_trait;
use tonic::{Request, Response, Status};

const TOKEN: &str = "test-pat";

#[derive(Default)]
struct Recorded {
    follow_requests: Vec<(u64, bool)>,
    list_requests: Vec<(u32, String)>,
    queued: Vec<JobSpec>,
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
