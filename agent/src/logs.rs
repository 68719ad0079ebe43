//! Uploading a job's log: one task per job holding a `LogService.StreamLogs`
//! stream open for the whole job (the server pushes cancellation on it),
//! resending every unacknowledged line after a reconnect. The job's end
//! goes on the stream's last message, after every line: the server
//! completes the job once they are all stored (no `CompleteJob` call).
//!
//! Every line is appended to the job's spool file before it is sent (see
//! [`crate::spool`]); at most [`Options::memory_lines`] unacknowledged lines
//! are kept in memory, the rest are read back from the spool as the server
//! catches up, so the steps never wait for the server. Without a usable
//! spool, the steps' output waits once that many lines are unacknowledged.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use ferry_client::Authorized;
use ferry_proto::v1::log_service_client::LogServiceClient;
use ferry_proto::v1::{
    JobEnd, JobState, LogLine, StepState, StreamLogsRequest, StreamLogsResponse,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tracing::Instrument as _;

use crate::backoff::{Backoff, seconds};
use crate::rpc::describe;
use crate::spool::Spool;
use crate::stop::{Stop, StopSignal};

/// Most lines in one message.
pub const MAX_BATCH: usize = 500;
/// Longest a line waits to be batched with others.
pub const FLUSH_AFTER: Duration = Duration::from_millis(50);
/// Most unacknowledged lines kept in memory (the rest wait in the spool).
pub const MAX_UNACKED: usize = 10_000;
/// Lines buffered between the job and the uploader.
pub const CHANNEL_CAPACITY: usize = 1024;
/// How long the end of a job waits for every line to be acknowledged.
pub const FINAL_ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// A stream that lasted this long was healthy: the reconnect backoff starts
/// over after it.
const HEALTHY_STREAM: Duration = Duration::from_secs(10);
/// How long a finished log stream waits for the server to end the call.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// What the uploader achieved once the job's log was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadSummary {
    /// Lines written by the job.
    pub lines: u64,
    /// Lines the server acknowledged.
    pub acked: u64,
    /// Lines never acknowledged (given up after the final timeout).
    pub lost: u64,
    /// The job's final state, when the server completed the job with the
    /// end sent on the stream; `None` when it did not (or no end was
    /// given): complete it with `CompleteJob`.
    pub completed: Option<JobState>,
    /// The server refused the log as for a job that moved to another agent
    /// or attempt: the job is not this agent's to complete.
    pub moved: bool,
}

/// How the uploader works.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long a closed log waits for the last acknowledgements.
    pub final_timeout: Duration,
    /// Most unacknowledged lines held in memory.
    pub memory_lines: usize,
    /// Where the job's spool file goes; `None` for none.
    pub spool_dir: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            final_timeout: FINAL_ACK_TIMEOUT,
            memory_lines: MAX_UNACKED,
            spool_dir: None,
        }
    }
}

/// Where a job's lines go, and how far the server has stored them.
#[derive(Debug)]
pub struct LogSender {
    /// Takes the lines, in sequence order.
    pub lines: mpsc::Sender<LogLine>,
    /// The server's cumulative acknowledgement: every line up to it is
    /// stored.
    pub stored: watch::Receiver<u64>,
    /// Takes the job's end, sent before `lines` is dropped.
    pub end: oneshot::Sender<JobEnd>,
}

/// Starts the uploader of `job_id`. Lines go into the returned sender;
/// dropping it closes the log, after which the task waits up to
/// `final_timeout` for the acknowledgements (and, when the job's end was
/// given, for the server to complete the job), removes the spool file and
/// returns its summary. A `cancel_requested` from the server sets `stop`.
/// A line that starts a step is sent at once, with whatever waits before
/// it (the agent waits for the first step's start to be stored); one that
/// ends a step goes like any line, within `FLUSH_AFTER`, so the job's last
/// step's end usually shares a message with the job's end.
pub fn start(
    client: LogServiceClient<Authorized>,
    job_id: String,
    options: Options,
    stop: StopSignal,
) -> (LogSender, JoinHandle<UploadSummary>) {
    let (sender, lines) = mpsc::channel(CHANNEL_CAPACITY);
    let (stored_sender, stored) = watch::channel(0);
    let (end_sender, end_receiver) = oneshot::channel();
    let spool = options
        .spool_dir
        .as_ref()
        .and_then(|dir| match Spool::create(dir, &job_id) {
            Ok(spool) => Some(spool),
            Err(error) => {
                tracing::warn!(job_id = %job_id, dir = %dir.display(), %error, "cannot create the log spool; unacknowledged lines stay in memory");
                None
            }
        });
    let uploader = Uploader {
        client,
        job_id,
        lines,
        end_receiver,
        end: None,
        end_sent: false,
        moved: false,
        stuck: false,
        completed: None,
        backlog: Backlog::new(options.memory_lines.max(1), spool),
        sent: 0,
        acked: 0,
        stored: stored_sender,
        total: 0,
        closing: false,
        deadline: None,
        final_timeout: options.final_timeout,
        oldest_unsent: None,
        flush_now: false,
        stop,
    };
    let sender = LogSender {
        lines: sender,
        stored,
        end: end_sender,
    };
    (sender, tokio::spawn(uploader.run().in_current_span()))
}

/// A line held in memory, and the size of its spool record (0 if none).
struct Entry {
    line: LogLine,
    size: u64,
}

/// Every unacknowledged line, in sequence order: the `window` in memory,
/// then `spooled` lines only in the spool file, then the `tail` kept in
/// memory when the spool cannot be written.
struct Backlog {
    window: VecDeque<Entry>,
    spooled: u64,
    tail: VecDeque<LogLine>,
    spool: Option<Spool>,
    spool_failed: bool,
    limit: usize,
    /// Lines that could not be read back from the spool.
    unreadable: u64,
}

impl Backlog {
    fn new(limit: usize, spool: Option<Spool>) -> Backlog {
        Backlog {
            window: VecDeque::new(),
            spooled: 0,
            tail: VecDeque::new(),
            spool_failed: spool.is_none(),
            spool,
            limit,
            unreadable: 0,
        }
    }

    fn len(&self) -> u64 {
        self.window.len() as u64 + self.spooled + self.tail.len() as u64
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether every unacknowledged line is in the window (none waits in
    /// the spool or the tail).
    fn all_in_window(&self) -> bool {
        self.spooled == 0 && self.tail.is_empty()
    }

    fn spool_usable(&self) -> bool {
        !self.spool_failed && self.tail.is_empty()
    }

    /// Whether another line can be taken now without exceeding the memory
    /// bound (always, while the spool works).
    fn has_room(&self) -> bool {
        self.spool_usable() || self.window.len() + self.tail.len() < self.limit
    }

    fn push(&mut self, job_id: &str, line: LogLine) {
        if self.spool_usable()
            && let Some(spool) = self.spool.as_mut()
        {
            let in_memory = self.window.len() < self.limit && self.spooled == 0;
            match spool.append(&line, in_memory) {
                Ok(size) => {
                    if in_memory {
                        self.window.push_back(Entry { line, size });
                    } else {
                        self.spooled += 1;
                    }
                    return;
                }
                Err(error) => {
                    tracing::warn!(job_id = %job_id, path = %spool.path().display(), %error, "cannot write the log spool; unacknowledged lines now stay in memory");
                    self.spool_failed = true;
                }
            }
        }
        if self.window.len() < self.limit && self.spooled == 0 && self.tail.is_empty() {
            self.window.push_back(Entry { line, size: 0 });
        } else {
            self.tail.push_back(line);
        }
    }

    /// Moves lines from the spool (then the tail) into the window.
    fn refill(&mut self, job_id: &str) {
        while self.window.len() < self.limit {
            if self.spooled > 0 {
                let read = match self.spool.as_mut() {
                    Some(spool) => spool.read_next(),
                    None => Err(std::io::Error::other("no spool")),
                };
                match read {
                    Ok((line, size)) => {
                        self.spooled -= 1;
                        self.window.push_back(Entry { line, size });
                    }
                    Err(error) => {
                        tracing::error!(job_id = %job_id, lines = self.spooled, %error, "cannot read log lines back from the spool; they are lost");
                        self.unreadable += self.spooled;
                        self.spooled = 0;
                    }
                }
            } else if let Some(line) = self.tail.pop_front() {
                self.window.push_back(Entry { line, size: 0 });
            } else {
                break;
            }
        }
    }

    /// Drops every line up to `sequence`; returns how many.
    fn acknowledge(&mut self, job_id: &str, sequence: u64) -> usize {
        let mut dropped = 0;
        let mut bytes = 0;
        while self
            .window
            .front()
            .is_some_and(|entry| entry.line.sequence <= sequence)
        {
            if let Some(entry) = self.window.pop_front() {
                bytes += entry.size;
                dropped += 1;
            }
        }
        if let Some(spool) = self.spool.as_mut()
            && let Err(error) = spool.acknowledge(bytes)
        {
            tracing::warn!(job_id = %job_id, path = %spool.path().display(), %error, "cannot trim the log spool");
        }
        self.refill(job_id);
        dropped
    }

    fn remove_spool(&mut self) {
        if let Some(spool) = self.spool.take() {
            spool.remove();
        }
    }
}

struct Uploader {
    client: LogServiceClient<Authorized>,
    job_id: String,
    lines: mpsc::Receiver<LogLine>,
    end_receiver: oneshot::Receiver<JobEnd>,
    /// The job's end, once the log is closed with one.
    end: Option<JobEnd>,
    /// Whether the end went out on the current stream.
    end_sent: bool,
    /// While closing, the server refused a new stream as for a job that
    /// moved to another agent or attempt: the upload is over, what was
    /// not stored cannot be.
    moved: bool,
    /// While closing, the server refused the lines after those lost to an
    /// unreadable spool (a gap it cannot take): the upload is over.
    stuck: bool,
    /// The job's final state, from the server: its answer to the end, or
    /// to a stream opened after the job ended.
    completed: Option<JobState>,
    backlog: Backlog,
    /// How many lines of the window were sent on the current stream.
    sent: usize,
    acked: u64,
    /// Publishes `acked`.
    stored: watch::Sender<u64>,
    total: u64,
    closing: bool,
    deadline: Option<Instant>,
    final_timeout: Duration,
    /// When the oldest line not sent yet arrived.
    oldest_unsent: Option<Instant>,
    /// Send what is pending at once (after a reconnect).
    flush_now: bool,
    stop: StopSignal,
}

impl Uploader {
    async fn run(mut self) -> UploadSummary {
        let mut backoff = Backoff::default();
        loop {
            if self.done() || self.gave_up() || self.past_deadline() {
                break;
            }
            let acked_before = self.acked;
            let started = Instant::now();
            let error = match self.session().await {
                Ok(()) => continue,
                Err(error) => error,
            };
            if self.acked > acked_before || started.elapsed() >= HEALTHY_STREAM {
                backoff.reset();
            }
            if self.gave_up() {
                tracing::warn!(job_id = %self.job_id, error = %error, "the job's log cannot be finished");
                break;
            }
            if self.past_deadline() {
                break;
            }
            let delay = backoff.next_delay();
            tracing::warn!(
                job_id = %self.job_id,
                error = %error,
                unacked = self.backlog.len(),
                retry_in = %seconds(delay),
                "log stream failed, reconnecting"
            );
            self.wait(delay).await;
        }
        let lost = self.backlog.len() + self.backlog.unreadable;
        self.backlog.remove_spool();
        UploadSummary {
            lines: self.total,
            acked: self.acked,
            lost,
            completed: self.completed,
            moved: self.moved,
        }
    }

    /// Whether the upload is over: the log closed, and the job ended on
    /// the server (lines not acknowledged by then are lost) or, without an
    /// end to send, every line acknowledged.
    fn done(&self) -> bool {
        self.closing
            && (self.completed.is_some() || (!self.end_pending() && self.backlog.is_empty()))
    }

    /// Whether the upload stopped short: the job moved, or the server
    /// cannot take the lines left.
    fn gave_up(&self) -> bool {
        self.moved || self.stuck
    }

    /// Whether an end is to go out: one was given, and no line was lost to
    /// an unreadable spool (the job's message must then say so, with
    /// `CompleteJob`).
    fn end_pending(&self) -> bool {
        self.end.is_some() && self.backlog.unreadable == 0
    }

    fn past_deadline(&self) -> bool {
        self.deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
    }

    fn push(&mut self, line: LogLine) {
        self.total += 1;
        if line
            .step_update
            .is_some_and(|update| update.state == i32::from(StepState::Running))
        {
            // The server learns of a step's start without delay.
            self.flush_now = true;
        }
        let window_before = self.backlog.window.len();
        self.backlog.push(&self.job_id, line);
        if self.backlog.window.len() > window_before && self.oldest_unsent.is_none() {
            self.oldest_unsent = Some(Instant::now());
        }
    }

    fn close(&mut self) {
        self.closing = true;
        self.deadline = Some(Instant::now() + self.final_timeout);
        // The end is sent before the lines' sender is dropped.
        self.end = self.end_receiver.try_recv().ok();
    }

    fn can_receive(&self) -> bool {
        !self.closing && self.backlog.has_room()
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

    /// One stream, opened at once and held while the job runs: sends
    /// pending lines, takes acks and cancellation, until everything is
    /// acknowledged after the log was closed (`Ok`) or the stream fails.
    async fn session(&mut self) -> Result<(), String> {
        self.sent = 0;
        self.end_sent = false;
        self.flush_now = true;
        if !self.backlog.window.is_empty() && self.oldest_unsent.is_none() {
            self.oldest_unsent = Some(Instant::now());
        }
        let (requests, outgoing) = mpsc::channel::<StreamLogsRequest>(4);
        let mut client = self.client.clone();
        let call = client.stream_logs(ReceiverStream::new(outgoing));
        tokio::pin!(call);
        let mut responses: Option<Streaming<StreamLogsResponse>> = None;
        // The first message names the job; a server answers only after it,
        // so it goes out with the first line, or without one after
        // `FLUSH_AFTER` (a job's first line, its step's start, usually
        // comes at once: one message fewer).
        let mut opened = false;
        let open_by = Instant::now() + FLUSH_AFTER;
        loop {
            if self.done() {
                // Close our side and let the server end the call with its
                // status, rather than cancelling it (a trace then shows the
                // stream as the success it was).
                drop(requests);
                if let Some(mut responses) = responses.take() {
                    let drain = async { while let Ok(Some(_)) = responses.message().await {} };
                    let _ = tokio::time::timeout(CLOSE_GRACE, drain).await;
                }
                return Ok(());
            }
            let unsent = self.backlog.window.len() - self.sent;
            let flush_at = self
                .oldest_unsent
                .map_or_else(Self::far_future, |oldest| oldest + FLUSH_AFTER);
            let ready = if opened {
                (unsent > 0
                    && (self.flush_now
                        || self.closing
                        || unsent >= MAX_BATCH
                        || Instant::now() >= flush_at))
                    || self.end_due()
            } else {
                unsent > 0 || self.closing || Instant::now() >= open_by
            };
            let wake_at = if opened { flush_at } else { open_by };
            let deadline = self.deadline.unwrap_or_else(Self::far_future);
            let can_receive = self.can_receive();
            tokio::select! {
                result = &mut call, if responses.is_none() => match result {
                    Ok(response) => responses = Some(response.into_inner()),
                    Err(status) => {
                        // Refused while finishing as only a job that moved
                        // is (one that ended would answer its state).
                        self.moved = self.closing
                            && matches!(
                                status.code(),
                                tonic::Code::Unauthenticated
                                    | tonic::Code::PermissionDenied
                                    | tonic::Code::NotFound
                            );
                        return Err(describe(&status));
                    }
                },
                message = next_response(&mut responses), if responses.is_some() => match message {
                    Ok(Some(response)) => self.answer(&response),
                    Ok(None) => return Err("the server ended the log stream".into()),
                    Err(status) => {
                        if self.end_sent {
                            self.refused(&status);
                        }
                        self.stuck = self.closing
                            && self.backlog.unreadable > 0
                            && status.code() == tonic::Code::FailedPrecondition;
                        return Err(describe(&status));
                    }
                },
                permit = requests.reserve(), if ready => {
                    let permit = permit.map_err(|_| "the log stream closed".to_owned())?;
                    permit.send(self.next_batch());
                    opened = true;
                }
                () = sleep_until(wake_at), if !ready && (!opened || unsent > 0) => {}
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

    fn answer(&mut self, response: &StreamLogsResponse) {
        if response.cancel_requested
            && self
                .stop
                .trigger(Stop::Canceled("the job was canceled on the server".into()))
        {
            tracing::info!(job_id = %self.job_id, "the server asked to cancel the job");
        }
        self.ack(response.acked_sequence);
        if let Ok(state) = JobState::try_from(response.final_state)
            && state != JobState::Unspecified
        {
            self.completed = Some(state);
        }
    }

    /// The stream failed after the end went out. When the server refused
    /// the end itself (`INVALID_ARGUMENT`, `PERMISSION_DENIED`), the lines
    /// go on without it and the job is completed with `CompleteJob`; on any
    /// other error the next stream sends the end again (it answers with the
    /// job's final state if the end was stored, and is refused if the job
    /// moved).
    fn refused(&mut self, status: &tonic::Status) {
        if matches!(
            status.code(),
            tonic::Code::InvalidArgument | tonic::Code::PermissionDenied
        ) {
            tracing::warn!(job_id = %self.job_id, error = %describe(status), "the server refused the job's end on the log stream; completing it with CompleteJob");
            self.end = None;
        }
    }

    /// Whether the end should go out now: the log is closed with one, it
    /// was not sent on this stream, and every line is sent.
    fn end_due(&self) -> bool {
        self.closing
            && self.end_pending()
            && !self.end_sent
            && self.completed.is_none()
            && self.backlog.all_in_window()
            && self.sent == self.backlog.window.len()
    }

    /// The next batch of unsent lines (possibly none, to open a stream),
    /// with the job's end when it holds the last of them.
    fn next_batch(&mut self) -> StreamLogsRequest {
        let count = (self.backlog.window.len() - self.sent).min(MAX_BATCH);
        let lines: Vec<LogLine> = self
            .backlog
            .window
            .iter()
            .skip(self.sent)
            .take(count)
            .map(|entry| entry.line.clone())
            .collect();
        self.sent += count;
        if self.sent == self.backlog.window.len() {
            self.oldest_unsent = None;
            self.flush_now = false;
        }
        let end = if self.end_due() {
            self.end_sent = true;
            self.end.clone()
        } else {
            None
        };
        StreamLogsRequest {
            job_id: self.job_id.clone(),
            lines,
            end,
        }
    }

    /// Forgets every line up to `acked_sequence`.
    fn ack(&mut self, acked_sequence: u64) {
        if acked_sequence <= self.acked {
            return;
        }
        self.acked = acked_sequence;
        self.stored.send_replace(acked_sequence);
        let dropped = self.backlog.acknowledge(&self.job_id, acked_sequence);
        self.sent = self.sent.saturating_sub(dropped);
        if self.sent < self.backlog.window.len() {
            // Lines read back from the spool are ready to go.
            self.oldest_unsent.get_or_insert_with(Instant::now);
        } else {
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
