//! The tonic adapter: unwraps the streams, calls [`Logs`], maps errors.

use ferry_auth::{Requirement, principal};
use ferry_proto::v1::log_service_server::{LogService, LogServiceServer};
use ferry_proto::v1::{
    FollowLogsRequest, FollowLogsResponse, StreamLogsRequest, StreamLogsResponse,
};
use ferry_service::Event;
use ferry_service::from_stream;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::Logs;

/// What each method needs.
pub const AUTH: &[(&str, Requirement)] = &[
    ("/ferry.v1.LogService/StreamLogs", Requirement::Job),
    (
        "/ferry.v1.LogService/FollowLogs",
        Requirement::Administrator,
    ),
];

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
        let mut ingest = self.ingest(&caller, &first.job_id).await?;
        let mut events = self.subscribe();
        let (sender, receiver) = mpsc::channel(16);
        tokio::spawn(async move {
            let job_id = ingest.job_id().to_owned();
            let mut pending = Some(first);
            let mut cancel_sent = false;
            loop {
                if ingest.cancel_requested() && !cancel_sent {
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
                        next = inbound.next() => match next {
                            Some(Ok(message)) => message,
                            None => break,
                            Some(Err(status)) => {
                                let _ = sender.send(Err(from_stream(status))).await;
                                break;
                            }
                        },
                        event = events.recv() => {
                            // Tell the agent of a cancel at once, on the
                            // stream it already holds.
                            let canceled = match event {
                                Ok(Event::CancelRequested { job_id: canceled }) => *canceled == *job_id,
                                Ok(_) | Err(RecvError::Lagged(_)) => false,
                                Err(RecvError::Closed) => break,
                            };
                            if canceled && !cancel_sent {
                                cancel_sent = true;
                                let cancel = StreamLogsResponse {
                                    acked_sequence: ingest.acked(),
                                    cancel_requested: true,
                                };
                                if sender.send(Ok(cancel)).await.is_err() {
                                    break;
                                }
                            }
                            continue;
                        }
                    },
                };
                if !message.job_id.is_empty() && message.job_id != job_id {
                    let _ = sender
                        .send(Err(Status::invalid_argument(
                            "one stream carries one job's lines",
                        )))
                        .await;
                    break;
                }
                let reply = ingest
                    .append(message.lines)
                    .await
                    .map(|acked_sequence| StreamLogsResponse {
                        acked_sequence,
                        cancel_requested: cancel_sent,
                    })
                    .map_err(Status::from);
                let failed = reply.is_err();
                if sender.send(reply).await.is_err() || failed {
                    break;
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
