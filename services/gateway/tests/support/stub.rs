//! A stub of ferry's TokenService, JobService and LogService that answers
//! with its label in the `x-replica` response header and echoes what it saw.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use ferry_proto::v1::job_service_server::JobService;
use ferry_proto::v1::log_service_server::LogService;
use ferry_proto::v1::token_service_server::TokenService;
use ferry_proto::v1::*;
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

/// What a replica saw, shared with the test.
#[derive(Default)]
pub struct Seen {
    pub calls: AtomicUsize,
    /// Released by the test: the server stream's remaining messages.
    pub release: Notify,
    /// Set once the server stream sent its last message.
    pub stream_finished: AtomicBool,
}

/// A stub of ferry's TokenService, JobService and LogService that answers
/// with its label in the `x-replica` response header.
#[derive(Clone)]
pub struct Stub {
    pub label: String,
    pub seen: Arc<Seen>,
}

impl Stub {
    fn answer<T>(&self, request_headers: &tonic::metadata::MetadataMap, message: T) -> Response<T> {
        self.seen.calls.fetch_add(1, Ordering::SeqCst);
        let mut response = Response::new(message);
        let metadata = response.metadata_mut();
        metadata.insert(
            "x-replica",
            MetadataValue::try_from(&self.label).expect("label"),
        );
        for (seen, header) in [
            ("x-seen-authorization", "authorization"),
            ("x-seen-forwarded-for", "x-forwarded-for"),
            ("x-seen-grpc-timeout", "grpc-timeout"),
            ("x-seen-custom", "x-custom"),
        ] {
            if let Some(value) = request_headers.get(header) {
                metadata.insert(seen, value.clone());
            }
        }
        response
    }
}

fn stub() -> Status {
    Status::unimplemented("not in the stub")
}

#[tonic::async_trait]
impl TokenService for Stub {
    async fn get_listener_token(
        &self,
        request: Request<GetListenerTokenRequest>,
    ) -> Result<Response<GetListenerTokenResponse>, Status> {
        Ok(self.answer(request.metadata(), GetListenerTokenResponse::default()))
    }
}

#[tonic::async_trait]
impl JobService for Stub {
    async fn poll_job(
        &self,
        request: Request<PollJobRequest>,
    ) -> Result<Response<PollJobResponse>, Status> {
        let wait = request.get_ref().wait.map(|wait| wait.seconds).unwrap_or(0);
        tokio::time::sleep(Duration::from_secs(wait.unsigned_abs())).await;
        let answer = PollJobResponse {
            job_id: self.label.clone(),
            sealed_job: None,
        };
        Ok(self.answer(request.metadata(), answer))
    }
    async fn report_step(
        &self,
        _: Request<ReportStepRequest>,
    ) -> Result<Response<ReportStepResponse>, Status> {
        Err(stub())
    }
    async fn complete_job(
        &self,
        _: Request<CompleteJobRequest>,
    ) -> Result<Response<CompleteJobResponse>, Status> {
        Err(stub())
    }
    async fn queue_job(
        &self,
        request: Request<QueueJobRequest>,
    ) -> Result<Response<QueueJobResponse>, Status> {
        Ok(self.answer(request.metadata(), QueueJobResponse::default()))
    }
    async fn get_job(&self, _: Request<GetJobRequest>) -> Result<Response<GetJobResponse>, Status> {
        Err(stub())
    }
    async fn list_jobs(
        &self,
        _: Request<ListJobsRequest>,
    ) -> Result<Response<ListJobsResponse>, Status> {
        Err(stub())
    }
    async fn renew_lease(
        &self,
        _: Request<RenewLeaseRequest>,
    ) -> Result<Response<RenewLeaseResponse>, Status> {
        Err(stub())
    }
    async fn cancel_job(
        &self,
        _: Request<CancelJobRequest>,
    ) -> Result<Response<CancelJobResponse>, Status> {
        Err(stub())
    }
}

type BoxStream<T> = std::pin::Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl LogService for Stub {
    type StreamLogsStream = BoxStream<StreamLogsResponse>;
    type FollowLogsStream = BoxStream<FollowLogsResponse>;

    /// Acks every batch as it arrives.
    async fn stream_logs(
        &self,
        request: Request<Streaming<StreamLogsRequest>>,
    ) -> Result<Response<Self::StreamLogsStream>, Status> {
        let metadata = request.metadata().clone();
        let mut batches = request.into_inner();
        let acks = async_stream(move |sender| async move {
            while let Some(batch) = batches.next().await {
                let batch = match batch {
                    Ok(batch) => batch,
                    Err(status) => {
                        let _ = sender.send(Err(status)).await;
                        return;
                    }
                };
                let acked_sequence = batch.lines.last().map_or(0, |line| line.sequence);
                let ack = StreamLogsResponse {
                    acked_sequence,
                    cancel_requested: false,
                    ..StreamLogsResponse::default()
                };
                if sender.send(Ok(ack)).await.is_err() {
                    return;
                }
            }
        });
        Ok(self.answer(&metadata, acks))
    }

    /// Sends `from_sequence` messages: the first at once, the others once
    /// the test releases them.
    async fn follow_logs(
        &self,
        request: Request<FollowLogsRequest>,
    ) -> Result<Response<Self::FollowLogsStream>, Status> {
        let count = request.get_ref().from_sequence;
        let seen = self.seen.clone();
        let messages = async_stream(move |sender| async move {
            for sequence in 1..=count {
                if sequence == 2 {
                    seen.release.notified().await;
                }
                let line = LogLine {
                    sequence,
                    text: format!("line {sequence}"),
                    ..LogLine::default()
                };
                let message = FollowLogsResponse {
                    lines: vec![line],
                    final_state: 0,
                };
                if sender.send(Ok(message)).await.is_err() {
                    return;
                }
            }
            seen.stream_finished.store(true, Ordering::SeqCst);
        });
        Ok(self.answer(request.metadata(), messages))
    }
}

/// A stream fed by a task.
fn async_stream<T, F, Fut>(produce: F) -> BoxStream<T>
where
    T: Send + 'static,
    F: FnOnce(mpsc::Sender<Result<T, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (sender, receiver) = mpsc::channel(1);
    tokio::spawn(produce(sender));
    Box::pin(ReceiverStream::new(receiver))
}
