//! A job's log as the steps write it: masked, sequenced, timestamped lines
//! handed to the uploader.

use std::time::Duration;

use ferry_proto::v1::{JobEnd, JobResult, LogLine, LogStream, StepState, StepUpdate};
use tokio::sync::{mpsc, oneshot, watch};

use crate::logs::LogSender;
use crate::masking::{ADD_MASK_COMMAND, MASK, Masker, add_mask_value};

/// Masks every line, numbers it (from 1, gap-free across the whole job) and
/// sends it to the log uploader. Sending waits when the uploader is behind,
/// which in turn stops the step's output from being read: lines are never
/// dropped.
#[derive(Debug)]
pub struct JobLog {
    masker: Masker,
    next_sequence: u64,
    sender: mpsc::Sender<LogLine>,
    /// The server's acknowledgements, when the lines go to an uploader.
    stored: Option<watch::Receiver<u64>>,
    /// Takes the job's end, when the lines go to an uploader.
    end: Option<oneshot::Sender<JobEnd>>,
}

impl JobLog {
    /// A log whose lines go to `sender`, masked with `masker`.
    pub fn new(masker: Masker, sender: mpsc::Sender<LogLine>) -> JobLog {
        JobLog {
            masker,
            next_sequence: 1,
            sender,
            stored: None,
            end: None,
        }
    }

    /// A log whose lines go to the uploader behind `sender`, which also
    /// says how far the server has stored them.
    pub fn uploading(masker: Masker, sender: LogSender) -> JobLog {
        JobLog {
            stored: Some(sender.stored),
            end: Some(sender.end),
            ..JobLog::new(masker, sender.lines)
        }
    }

    /// Closes the log with the job's end (`message` masked by the caller
    /// and within the server's limit): the uploader sends it after the last
    /// line, and the server completes the job once every line is stored.
    /// Dropping the log instead closes it without an end.
    pub fn finish(mut self, result: JobResult, message: &str) {
        if let Some(end) = self.end.take() {
            let _ = end.send(JobEnd {
                result: result.into(),
                message: message.to_owned(),
            });
        }
    }

    /// How many lines were written.
    pub fn line_count(&self) -> u64 {
        self.next_sequence - 1
    }

    /// `text` masked with the job's secrets (for messages sent elsewhere).
    pub fn mask(&self, text: &str) -> String {
        self.masker.mask(text).into_owned()
    }

    /// A line from the agent itself.
    pub async fn system(&mut self, step_index: u32, text: &str) {
        let text = self.masker.mask(text).into_owned();
        self.send(step_index, LogStream::System, text, None).await;
    }

    /// A line from the agent that also reports step `step_index`'s new
    /// state: the server records the state when it stores the line. Returns
    /// the line's sequence.
    pub async fn step(
        &mut self,
        step_index: u32,
        text: &str,
        state: StepState,
        exit_code: Option<i32>,
    ) -> u64 {
        let text = self.masker.mask(text).into_owned();
        let update = StepUpdate {
            state: state.into(),
            exit_code,
        };
        self.send(step_index, LogStream::System, text, Some(update))
            .await
    }

    /// Waits up to `timeout` until the server has stored every line up to
    /// `sequence`; returns whether it has. Always false for a log that does
    /// not go to an uploader.
    pub async fn stored(&mut self, sequence: u64, timeout: Duration) -> bool {
        let Some(stored) = self.stored.as_mut() else {
            return false;
        };
        matches!(
            tokio::time::timeout(timeout, stored.wait_for(|acked| *acked >= sequence)).await,
            Ok(Ok(_))
        )
    }

    /// A line a step printed. On stdout, `::add-mask::VALUE` adds a value to
    /// mask from now on and is shown as `::add-mask::***`.
    pub async fn output(&mut self, step_index: u32, stream: LogStream, text: &str) {
        if stream == LogStream::Stdout
            && let Some(value) = add_mask_value(text)
        {
            self.masker.add(value);
            self.send(
                step_index,
                stream,
                format!("{ADD_MASK_COMMAND}{MASK}"),
                None,
            )
            .await;
            return;
        }
        let text = self.masker.mask(text).into_owned();
        self.send(step_index, stream, text, None).await;
    }

    /// Sends a line; returns its sequence.
    async fn send(
        &mut self,
        step_index: u32,
        stream: LogStream,
        text: String,
        step_update: Option<StepUpdate>,
    ) -> u64 {
        let sequence = self.next_sequence;
        let line = LogLine {
            sequence,
            step_index,
            time: Some(ferry_proto::time::now()),
            stream: stream as i32,
            text,
            step_update,
        };
        self.next_sequence += 1;
        if self.sender.send(line).await.is_err() {
            tracing::debug!(sequence, "the log uploader is gone; line not sent");
        }
        sequence
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_masked_numbered_and_add_mask_takes_effect() {
        let (sender, mut receiver) = mpsc::channel(16);
        let mut log = JobLog::new(Masker::new(["sekrit"]), sender);
        log.system(0, "▶ step 1/1: use sekrit").await;
        log.output(0, LogStream::Stdout, "late is not masked yet")
            .await;
        log.output(0, LogStream::Stdout, "::add-mask::late").await;
        log.output(0, LogStream::Stderr, "late sekrit").await;
        log.output(0, LogStream::Stderr, "::add-mask::ignored on stderr")
            .await;
        assert_eq!(log.line_count(), 5);
        drop(log);
        let mut lines = Vec::new();
        while let Some(line) = receiver.recv().await {
            lines.push(line);
        }
        let sequences: Vec<u64> = lines.iter().map(|line| line.sequence).collect();
        assert_eq!(sequences, [1, 2, 3, 4, 5]);
        let texts: Vec<&str> = lines.iter().map(|line| line.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "▶ step 1/1: use ***",
                "late is not masked yet",
                "::add-mask::***",
                "*** ***",
                "::add-mask::ignored on stderr"
            ]
        );
        assert_eq!(lines[0].stream, LogStream::System as i32);
        assert_eq!(lines[3].stream, LogStream::Stderr as i32);
        assert!(lines.iter().all(|line| line.time.is_some()));
    }
}
