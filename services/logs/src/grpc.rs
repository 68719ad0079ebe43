//! The tonic adapter: unwraps the streams, calls [`Logs`], maps errors.

use ferry_auth::{Requirement, principal};
use ferry_proto::v1::log_service_server::{LogService, LogServiceServer};
use ferry_proto::v1::{
    FollowLogsRequest, FollowLogsResponse, StreamLogsRequest, StreamLogsResponse,
};
use ferry_service::from_stream;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use futures::stream::FuturesOrdered;

use crate::{Ingest, Logs};

/// What each method needs.
pub const AUTH: &[(&str, Requirement)] = &[
    ("/ferry.v1.LogService/StreamLogs", Requirement::Job),
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

/// Sends the ack of a stored batch, or its refusal; false when the stream
/// is over (refused, or the agent left).
async fn acknowledge(
    sender: &mpsc::Sender<Result<StreamLogsResponse, Status>>,
    ingest: &mut Ingest,
    stored: ferry_service::Result<u64>,
    cancel_requested: bool,
) -> bool {
    match stored {
        Ok(acked) => {
            ingest.stored(acked);
            let ack = StreamLogsResponse {
                acked_sequence: ingest.acked(),
                cancel_requested,
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
    S: futures::Stream<Item = (ferry_service::Result<u64>, usize)> + Unpin,
{
    while let Some((stored, _)) = in_flight.next().await {
        if !acknowledge(sender, ingest, stored, cancel_requested).await {
            return;
        }
    }
}

/// Largest message: a batch of lines.
pub const MAX_REQUEST_SIZE: usize = 8 * 1024 * 1024;

/// The tonic service around [`Logs`].
pub fn server(logs: Logs) -> LogServiceServer<Logs> {
    LogServiceServer::new(logs)
        .max_decoding_message_size(MAX_REQUEST_SIZE)
        .max_encoding_message_size(16 * 1024 * 1024)
}

#[tonic::async_trait]
impl LogService for Logs {
    type StreamLogsStream = ReceiverStream<Result<StreamLogsResponse, Status>>;
    type FollowLogsStream = ReceiverStream<Result<FollowLogsResponse, Status>>;

    async fn stream_logs(
        &self,
        request: Request<Streaming<StreamLogsRequest>>,
    ) -> Result<Response<Self::StreamLogsStream>, Status> {
        let caller = principal::job(&request)?.clone();
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await
            .map_err(from_stream)?
            .ok_or_else(|| Status::invalid_argument("the stream ended before its first message"))?;
        // Watched before the job is read: a cancel in between is not missed.
        let mut cancel = self.watch_cancel(&first.job_id.as_str().into());
        let mut ingest = self.ingest(&caller, &first.job_id).await?;
        let (sender, receiver) = mpsc::channel(16);
        tokio::spawn(async move {
            let job_id = ingest.job_id().clone();
            let mut pending = Some(first);
            let mut cancel_requested = ingest.cancel_requested();
            let mut cancel_sent = false;
            // Batches handed to the writer, acked in order as they commit;
            // the stream reads on meanwhile.
            let mut in_flight = FuturesOrdered::new();
            let mut in_flight_bytes = 0usize;
            loop {
                if cancel_requested && !cancel_sent {
                    cancel_sent = true;
                    let cancel = StreamLogsResponse {
                        acked_sequence: ingest.acked(),
                        cancel_requested: true,
                    };
                    if sender.send(Ok(cancel)).await.is_err() {
                        break;
                    }
                }
                let message = match pending.take() {
                    Some(message) => message,
                    None => tokio::select! {
                        Some((stored, bytes)) = in_flight.next(), if !in_flight.is_empty() => {
                            in_flight_bytes -= bytes;
                            if !acknowledge(&sender, &mut ingest, stored, cancel_sent).await {
                                break;
                            }
                            continue;
                        }
                        next = inbound.next(), if in_flight.len() < MAX_IN_FLIGHT
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
                match ingest.append(message.lines).await {
                    Ok(stored) => {
                        let bytes = stored.bytes();
                        in_flight_bytes += bytes;
                        in_flight.push_back(async move { (stored.await, bytes) });
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
