//! The tonic adapter: unwraps the streams, calls [`Logs`], maps errors.

use ferry_auth::{Requirement, principal};
use ferry_proto::v1::log_service_server::{LogService, LogServiceServer, SERVICE_NAME};
use ferry_proto::v1::{
    FollowLogsRequest, FollowLogsResponse, JobState, StreamLogsRequest, StreamLogsResponse,
};
use ferry_service::from_stream;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::{Body, BoxFuture, Service, StdError, http};
use tonic::server::NamedService;
use tonic::{Request, Response, Status, Streaming};

use futures::stream::FuturesOrdered;

use crate::raw::RawBatch;
use crate::{Ingest, Logs};

/// What each method needs.
pub const AUTH: &[(&str, Requirement)] = &[
    (STREAM_LOGS, Requirement::Job),
    (
        "/ferry.v1.LogService/FollowLogs",
        Requirement::Administrator,
    ),
];

/// Batches of one stream being stored at once.
const MAX_IN_FLIGHT: usize = 32;
/// Line text of one stream being stored at once: a stream stops reading
/// past it (or past `MAX_IN_FLIGHT` batches) until acks free room. 32
/// in flight measured 1.03 M lines/s with one stream against 0.93 M with 8.
const MAX_IN_FLIGHT_BYTES: usize = 8 * 1024 * 1024;

/// A batch being stored: its ack (or refusal), the bytes it holds, and the
/// job's final state when it ends the job.
type InFlight = (ferry_service::Result<u64>, usize, Option<JobState>);

/// Sends the ack of a stored batch (with the job's final state, when the
/// batch ended it), or its refusal; false when the stream is over (refused,
/// or the agent left).
async fn acknowledge(
    sender: &mpsc::Sender<Result<StreamLogsResponse, Status>>,
    ingest: &mut Ingest,
    (stored, _, ends): InFlight,
    cancel_requested: bool,
) -> bool {
    match stored {
        Ok(acked) => {
            ingest.stored(acked);
            let ack = StreamLogsResponse {
                acked_sequence: ingest.acked(),
                cancel_requested,
                final_state: ends.unwrap_or_default().into(),
            };
            sender.send(Ok(ack)).await.is_ok()
        }
        Err(error) => {
            let _ = sender.send(Err(Status::from(error))).await;
            false
        }
    }
}

/// Acks what is still being stored, in order, before the stream ends with
/// an error: the agent then resends only what really was not stored.
async fn drain<S>(
    in_flight: &mut S,
    sender: &mpsc::Sender<Result<StreamLogsResponse, Status>>,
    ingest: &mut Ingest,
    cancel_requested: bool,
) where
    S: futures::Stream<Item = InFlight> + Unpin,
{
    while let Some(stored) = in_flight.next().await {
        if !acknowledge(sender, ingest, stored, cancel_requested).await {
            return;
        }
    }
}

/// Largest message: a batch of lines.
pub const MAX_REQUEST_SIZE: usize = 8 * 1024 * 1024;

/// Largest message the service sends.
const MAX_RESPONSE_SIZE: usize = 16 * 1024 * 1024;
/// The method served apart from the generated server.
const STREAM_LOGS: &str = "/ferry.v1.LogService/StreamLogs";

/// The tonic service around [`Logs`].
pub fn server(logs: Logs) -> LogsServer {
    LogsServer {
        generated: LogServiceServer::new(logs.clone())
            .max_decoding_message_size(MAX_REQUEST_SIZE)
            .max_encoding_message_size(MAX_RESPONSE_SIZE),
        logs,
    }
}

/// `ferry.v1.LogService`: `StreamLogs` takes its messages as [`RawBatch`]es
/// (the lines stay as they arrived, to be stored as they are); every other
/// method is the generated server's.
#[derive(Debug, Clone)]
pub struct LogsServer {
    logs: Logs,
    generated: LogServiceServer<Logs>,
}

impl NamedService for LogsServer {
    const NAME: &'static str = SERVICE_NAME;
}

impl<B> Service<http::Request<B>> for LogsServer
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(
        &mut self,
        _context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != STREAM_LOGS {
            return self.generated.call(request);
        }
        let method = StreamLogsMethod(self.logs.clone());
        Box::pin(async move {
            let codec = tonic_prost::ProstCodec::<StreamLogsResponse, RawBatch>::default();
            let mut grpc = tonic::server::Grpc::new(codec)
                .apply_max_message_size_config(Some(MAX_REQUEST_SIZE), Some(MAX_RESPONSE_SIZE));
            Ok(grpc.streaming(method, request).await)
        })
    }
}

/// `StreamLogs` for tonic's server.
struct StreamLogsMethod(Logs);

impl tonic::server::StreamingService<RawBatch> for StreamLogsMethod {
    type Response = StreamLogsResponse;
    type ResponseStream = ReceiverStream<Result<StreamLogsResponse, Status>>;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: Request<Streaming<RawBatch>>) -> Self::Future {
        let logs = self.0.clone();
        Box::pin(async move { stream_logs(&logs, request).await })
    }
}

#[tonic::async_trait]
impl LogService for Logs {
    type StreamLogsStream = ReceiverStream<Result<StreamLogsResponse, Status>>;
    type FollowLogsStream = ReceiverStream<Result<FollowLogsResponse, Status>>;

    async fn stream_logs(
        &self,
        _request: Request<Streaming<StreamLogsRequest>>,
    ) -> Result<Response<Self::StreamLogsStream>, Status> {
        // LogsServer takes StreamLogs before the generated server sees it.
        Err(Status::internal("StreamLogs is served by LogsServer"))
    }

    async fn follow_logs(
        &self,
        request: Request<FollowLogsRequest>,
    ) -> Result<Response<Self::FollowLogsStream>, Status> {
        let caller = principal::administrator(&request)?;
        let message = request.get_ref();
        let (sender, receiver) = mpsc::channel(16);
        self.follow(
            caller,
            &message.job_id,
            message.from_sequence,
            message.follow,
            sender,
        )
        .await?;
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}

/// Takes a job's log lines: each batch goes to the group-commit writer while
/// the stream reads on; acks go back in order as batches are stored.
async fn stream_logs(
    logs: &Logs,
    request: Request<Streaming<RawBatch>>,
) -> Result<Response<ReceiverStream<Result<StreamLogsResponse, Status>>>, Status> {
    let caller = principal::job(&request)?.clone();
    let mut inbound = request.into_inner();
    let first = inbound
        .message()
        .await
        .map_err(from_stream)?
        .ok_or_else(|| Status::invalid_argument("the stream ended before its first message"))?;
    // Watched before the job is read: a cancel in between is not missed.
    let mut cancel = logs.watch_cancel(&first.job_id.as_str().into());
    let mut ingest = logs.ingest(&caller, &first.job_id).await?;
    let (sender, receiver) = mpsc::channel(16);
    if let Some(final_state) = ingest.ended() {
        // Nothing more is stored for a job that ended: say how it ended
        // and how far its log goes, and end the stream.
        let answer = StreamLogsResponse {
            acked_sequence: ingest.acked(),
            cancel_requested: false,
            final_state: final_state.into(),
        };
        let _ = sender.send(Ok(answer)).await;
        return Ok(Response::new(ReceiverStream::new(receiver)));
    }
    tokio::spawn(async move {
        let job_id = ingest.job_id().clone();
        let mut pending = Some(first);
        let mut cancel_requested = ingest.cancel_requested();
        let mut cancel_sent = false;
        // Batches handed to the writer, acked in order as they commit;
        // the stream reads on meanwhile.
        let mut in_flight = FuturesOrdered::new();
        let mut in_flight_bytes = 0usize;
        // The agent sent the job's end: nothing is read after it.
        let mut end_received = false;
        loop {
            if end_received && in_flight.is_empty() {
                break;
            }
            if cancel_requested && !cancel_sent {
                cancel_sent = true;
                let cancel = StreamLogsResponse {
                    acked_sequence: ingest.acked(),
                    cancel_requested: true,
                    final_state: JobState::Unspecified.into(),
                };
                if sender.send(Ok(cancel)).await.is_err() {
                    break;
                }
            }
            let message = match pending.take() {
                Some(message) => message,
                None => tokio::select! {
                    Some(stored) = in_flight.next(), if !in_flight.is_empty() => {
                        let stored: InFlight = stored;
                        in_flight_bytes -= stored.1;
                        if !acknowledge(&sender, &mut ingest, stored, cancel_sent).await {
                            break;
                        }
                        continue;
                    }
                    next = inbound.next(), if !end_received && in_flight.len() < MAX_IN_FLIGHT
                        && in_flight_bytes < MAX_IN_FLIGHT_BYTES => match next {
                        Some(Ok(message)) => message,
                        None => {
                            // The agent is done sending: ack the rest.
                            drain(&mut in_flight, &sender, &mut ingest, cancel_sent).await;
                            break;
                        }
                        Some(Err(status)) => {
                            drain(&mut in_flight, &sender, &mut ingest, cancel_sent).await;
                            let _ = sender.send(Err(from_stream(status))).await;
                            break;
                        }
                    },
                    () = cancel.canceled(), if !cancel_requested => {
                        // Tell the agent of a cancel at once, on the
                        // stream it already holds.
                        cancel_requested = true;
                        continue;
                    }
                },
            };
            if !message.job_id.is_empty() && *message.job_id != *job_id {
                drain(&mut in_flight, &sender, &mut ingest, cancel_sent).await;
                let _ = sender
                    .send(Err(Status::invalid_argument(
                        "one stream carries one job's lines",
                    )))
                    .await;
                break;
            }
            match ingest.append(message).await {
                Ok(stored) => {
                    let (bytes, ends) = (stored.bytes(), stored.ends());
                    end_received = ends.is_some();
                    in_flight_bytes += bytes;
                    in_flight.push_back(async move { (stored.await, bytes, ends) });
                }
                Err(error) => {
                    drain(&mut in_flight, &sender, &mut ingest, cancel_sent).await;
                    let _ = sender.send(Err(Status::from(error))).await;
                    break;
                }
            }
        }
    });
    Ok(Response::new(ReceiverStream::new(receiver)))
}
