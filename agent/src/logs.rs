//! Uploading a job's log: one task per job holding a `LogService.StreamLogs`
//! stream, resending every unacknowledged line after a reconnect.

use std::collections::VecDeque;
use std::time::Duration;

use ferry_client::Authorized;
use ferry_proto::v1::log_service_client::LogServiceClient;
use ferry_proto::v1::{LogLine, StreamLogsRequest, StreamLogsResponse};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use crate::backoff::{Backoff, seconds};
use crate::rpc::describe;

/// Most lines in one message.
pub const MAX_BATCH: usize = 500;
/// Longest a line waits to be batched with others.
pub const FLUSH_AFTER: Duration = Duration::from_millis(50);
/// Most lines held unacknowledged; beyond it the steps' output waits.
pub const MAX_UNACKED: usize = 100_000;
/// Lines buffered between the job and the uploader.
pub const CHANNEL_CAPACITY: usize = 1024;
/// How long the end of a job waits for every line to be acknowledged.
pub const FINAL_ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// What the uploader achieved once the job's log was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadSummary {
    /// Lines written by the job.
    pub lines: u64,
    /// Lines the server acknowledged.
    pub acked: u64,
    /// Lines never acknowledged (given up after the final timeout).
    pub lost: u64,
}

/// Starts the uploader of `job_id`. Lines go into the returned sender;
/// dropping every sender closes the log, after which the task waits up to
/// `final_timeout` for the acknowledgements and returns its summary.
pub fn start(
    client: LogServiceClient<Authorized>,
    job_id: String,
    final_timeout: Duration,
) -> (mpsc::Sender<LogLine>, JoinHandle<UploadSummary>) {
    let (sender, lines) = mpsc::channel(CHANNEL_CAPACITY);
    let uploader = Uploader {
        client,
        job_id,
        lines,
        pending: VecDeque::new(),
        sent: 0,
        acked: 0,
        total: 0,
        closing: false,
        deadline: None,
        final_timeout,
        oldest_unsent: None,
        flush_now: false,
    };
    (sender, tokio::spawn(uploader.run()))
}

struct Uploader {
    client: LogServiceClient<Authorized>,
    job_id: String,
    lines: mpsc::Receiver<LogLine>,
    /// Every line not acknowledged yet, in sequence order.
    pending: VecDeque<LogLine>,
    /// How many of `pending` were sent on the current stream.
    sent: usize,
    acked: u64,
    total: u64,
    closing: bool,
    deadline: Option<Instant>,
    final_timeout: Duration,
    /// When the oldest line not sent yet arrived.
    oldest_unsent: Option<Instant>,
    /// Send what is pending at once (after a reconnect).
    flush_now: bool,
}

impl Uploader {
    async fn run(mut self) -> UploadSummary {
        let mut backoff = Backoff::default();
        loop {
            if self.pending.is_empty() {
                if self.closing {
                    break;
                }
                // Nothing to send: no stream needed until a line arrives.
                match self.lines.recv().await {
                    Some(line) => self.push(line),
                    None => self.close(),
                }
                continue;
            }
            if self
                .deadline
                .is_some_and(|deadline| Instant::now() >= deadline)
            {
                break;
            }
            let acked_before = self.acked;
            let error = match self.session().await {
                Ok(()) => continue,
                Err(error) => error,
            };
            if self.acked > acked_before {
                backoff.reset();
            }
            if self
                .deadline
                .is_some_and(|deadline| Instant::now() >= deadline)
            {
                break;
            }
            let delay = backoff.next_delay();
            tracing::warn!(
                job_id = %self.job_id,
                error = %error,
                unacked = self.pending.len(),
                retry_in = %seconds(delay),
                "log stream failed, reconnecting"
            );
            self.wait(delay).await;
        }
        let lost = self.pending.len() as u64;
        UploadSummary {
            lines: self.total,
            acked: self.acked,
            lost,
        }
    }

    fn push(&mut self, line: LogLine) {
        self.total += 1;
        if self.pending.len() == self.sent {
            self.oldest_unsent = Some(Instant::now());
        }
        self.pending.push_back(line);
    }

    fn close(&mut self) {
        self.closing = true;
        self.deadline = Some(Instant::now() + self.final_timeout);
    }

    fn can_receive(&self) -> bool {
        !self.closing && self.pending.len() < MAX_UNACKED
    }

    fn far_future() -> Instant {
        Instant::now() + Duration::from_secs(365 * 24 * 3600)
    }

    /// Waits `delay` (at most until the deadline), still taking lines.
    async fn wait(&mut self, delay: Duration) {
        let mut until = Instant::now() + delay;
        if let Some(deadline) = self.deadline {
            until = until.min(deadline);
        }
        loop {
            tokio::select! {
                () = sleep_until(until) => return,
                line = self.lines.recv(), if self.can_receive() => match line {
                    Some(line) => self.push(line),
                    None => {
                        self.close();
                        if let Some(deadline) = self.deadline {
                            until = until.min(deadline);
                        }
                    }
                },
            }
        }
    }

    /// One stream: sends pending lines and takes acks until everything is
    /// acknowledged after the log was closed (`Ok`) or the stream fails.
    async fn session(&mut self) -> Result<(), String> {
        self.sent = 0;
        self.flush_now = true;
        let (requests, outgoing) = mpsc::channel::<StreamLogsRequest>(4);
        let mut client = self.client.clone();
        let call = client.stream_logs(ReceiverStream::new(outgoing));
        tokio::pin!(call);
        let mut responses: Option<Streaming<StreamLogsResponse>> = None;
        loop {
            if self.closing && self.pending.is_empty() {
                return Ok(());
            }
            let unsent = self.pending.len() - self.sent;
            let flush_at = self
                .oldest_unsent
                .map_or_else(Self::far_future, |oldest| oldest + FLUSH_AFTER);
            let ready = unsent > 0
                && (self.flush_now
                    || self.closing
                    || unsent >= MAX_BATCH
                    || Instant::now() >= flush_at);
            let deadline = self.deadline.unwrap_or_else(Self::far_future);
            let can_receive = self.can_receive();
            tokio::select! {
                result = &mut call, if responses.is_none() => {
                    responses = Some(result.map_err(|status| describe(&status))?.into_inner());
                }
                message = next_response(&mut responses), if responses.is_some() => match message {
                    Ok(Some(response)) => self.ack(response.acked_sequence),
                    Ok(None) => return Err("the server ended the log stream".into()),
                    Err(status) => return Err(describe(&status)),
                },
                permit = requests.reserve(), if ready => {
                    let permit = permit.map_err(|_| "the log stream closed".to_owned())?;
                    permit.send(self.next_batch());
                }
                () = sleep_until(flush_at), if unsent > 0 && !ready => {}
                line = self.lines.recv(), if can_receive => match line {
                    Some(line) => self.push(line),
                    None => self.close(),
                },
                () = sleep_until(deadline), if self.deadline.is_some() => {
                    return Err("timed out waiting for the server to acknowledge every line".into());
                }
            }
        }
    }

    /// The next batch of unsent lines.
    fn next_batch(&mut self) -> StreamLogsRequest {
        let count = (self.pending.len() - self.sent).min(MAX_BATCH);
        let lines: Vec<LogLine> = self
            .pending
            .iter()
            .skip(self.sent)
            .take(count)
            .cloned()
            .collect();
        self.sent += count;
        if self.sent == self.pending.len() {
            self.oldest_unsent = None;
            self.flush_now = false;
        }
        StreamLogsRequest {
            job_id: self.job_id.clone(),
            lines,
        }
    }

    /// Forgets every line up to `acked_sequence`.
    fn ack(&mut self, acked_sequence: u64) {
        if acked_sequence <= self.acked {
            return;
        }
        self.acked = acked_sequence;
        while self
            .pending
            .front()
            .is_some_and(|line| line.sequence <= acked_sequence)
        {
            self.pending.pop_front();
            self.sent = self.sent.saturating_sub(1);
        }
        if self.sent == self.pending.len() {
            self.oldest_unsent = None;
        }
    }
}

async fn next_response(
    responses: &mut Option<Streaming<StreamLogsResponse>>,
) -> Result<Option<StreamLogsResponse>, tonic::Status> {
    match responses {
        Some(responses) => responses.message().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
#[path = "logs_tests.rs"]
mod tests;
