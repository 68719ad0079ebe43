//! A job's log as the steps write it: masked, sequenced, timestamped lines
//! handed to the uploader.

use ferry_proto::v1::{LogLine, LogStream};
use tokio::sync::mpsc;

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
}

impl JobLog {
    /// A log whose lines go to `sender`, masked with `masker`.
    pub fn new(masker: Masker, sender: mpsc::Sender<LogLine>) -> JobLog {
        JobLog {
            masker,
            next_sequence: 1,
            sender,
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
        self.send(step_index, LogStream::System, text).await;
    }

    /// A line a step printed. On stdout, `::add-mask::VALUE` adds a value to
    /// mask from now on and is shown as `::add-mask::***`.
    pub async fn output(&mut self, step_index: u32, stream: LogStream, text: &str) {
        if stream == LogStream::Stdout
            && let Some(value) = add_mask_value(text)
        {
            self.masker.add(value);
            self.send(step_index, stream, format!("{ADD_MASK_COMMAND}{MASK}"))
                .await;
            return;
        }
        let text = self.masker.mask(text).into_owned();
        self.send(step_index, stream, text).await;
    }

    async fn send(&mut self, step_index: u32, stream: LogStream, text: String) {
        let line = LogLine {
            sequence: self.next_sequence,
            step_index,
            time: Some(ferry_proto::time::now()),
            stream: stream as i32,
            text,
        };
        self.next_sequence += 1;
        if self.sender.send(line).await.is_err() {
            tracing::debug!(
                sequence = self.next_sequence - 1,
                "the log uploader is gone; line not sent"
            );
        }
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
