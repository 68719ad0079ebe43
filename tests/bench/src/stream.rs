//! `LogService.StreamLogs` as an agent uses it: lines masked with the job's
//! secrets by ferry-agent's own [`Masker`], numbered gap-free from 1, sent
//! in batches of up to 500 lines (ferry-agent's batch size) with a bounded
//! number of unacknowledged lines in flight, until the server acknowledged
//! the last one.

use anyhow::{Context, bail};
use ferry_agent::masking::Masker;
use ferry_proto::v1::{LogLine, LogStream, StreamLogsRequest};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::agent::JobSession;

/// Lines per message (ferry-agent's `logs::MAX_BATCH`).
pub const BATCH: usize = 500;
/// Most lines sent and not acknowledged yet (ferry-agent's window).
pub const MAX_UNACKED: u64 = 10_000;
/// Messages queued ahead of the HTTP/2 stream.
const QUEUED_MESSAGES: usize = 4;

/// What a job prints.
#[derive(Debug)]
pub struct Plan<'a> {
    /// How many lines.
    pub lines: u64,
    /// A secret some lines print (masked before sending).
    pub secret: &'a str,
    /// One line in this many prints it (0: none).
    pub secret_every: u64,
}

/// The two system lines ferry-agent writes around a step that prints
/// nothing (`count` of them; 0 sends nothing).
pub async fn step_lines(session: &JobSession, masker: &Masker, count: u64) -> anyhow::Result<()> {
    if count == 0 {
        return Ok(());
    }
    let texts = (0..count).map(|index| match index {
        0 => "▶ step 1/1: empty".to_owned(),
        1 => "step empty exited with code 0 (0s)".to_owned(),
        other => format!("line {other}"),
    });
    let lines = texts
        .enumerate()
        .map(|(index, text)| {
            line(
                index as u64 + 1,
                LogStream::System,
                masker.mask(&text).into_owned(),
            )
        })
        .collect::<Vec<_>>();
    send(
        session,
        lines.chunks(BATCH).map(<[LogLine]>::to_vec).collect(),
        count,
    )
    .await
}

/// `plan.lines` lines of step output, masked, streamed and acknowledged;
/// returns the last acknowledged sequence.
pub async fn output_lines(
    session: &JobSession,
    masker: &Masker,
    plan: &Plan<'_>,
) -> anyhow::Result<u64> {
    let total = plan.lines;
    let (requests, outgoing) = mpsc::channel::<StreamLogsRequest>(QUEUED_MESSAGES);
    let (acked_sender, mut acked) = watch::channel(0u64);
    let mut client = session.logs.clone();
    let job_id = session.job_id.clone();
    let producer = async move {
        let mut sequence = 1u64;
        let mut first = true;
        while sequence <= total {
            let end = (sequence + BATCH as u64 - 1).min(total);
            // Hold back while the window of unacknowledged lines is full.
            acked
                .wait_for(|acked| end.saturating_sub(*acked) <= MAX_UNACKED)
                .await
                .context("the log stream ended early")?;
            let lines = (sequence..=end)
                .map(|number| {
                    let text = output_text(number, plan);
                    line(number, LogStream::Stdout, masker.mask(&text).into_owned())
                })
                .collect();
            let request = StreamLogsRequest {
                job_id: if first { job_id.clone() } else { String::new() },
                lines,
            };
            first = false;
            if requests.send(request).await.is_err() {
                bail!("the log stream closed");
            }
            sequence = end + 1;
        }
        anyhow::Ok(())
    };
    let consumer = async move {
        let mut responses = client
            .stream_logs(ReceiverStream::new(outgoing))
            .await
            .context("StreamLogs")?
            .into_inner();
        let mut last = 0;
        while last < total {
            let Some(response) = responses.message().await.context("StreamLogs")? else {
                bail!("the server ended the log stream at {last} of {total} lines");
            };
            last = response.acked_sequence;
            let _ = acked_sender.send(last);
        }
        anyhow::Ok(last)
    };
    let (produced, consumed) = tokio::join!(producer, consumer);
    let last = consumed?;
    produced?;
    Ok(last)
}

/// Sends prepared batches on one stream and waits for the last ack.
async fn send(session: &JobSession, batches: Vec<Vec<LogLine>>, total: u64) -> anyhow::Result<()> {
    let requests = batches
        .into_iter()
        .enumerate()
        .map(|(index, lines)| StreamLogsRequest {
            job_id: if index == 0 {
                session.job_id.clone()
            } else {
                String::new()
            },
            lines,
        })
        .collect::<Vec<_>>();
    let (sender, outgoing) = mpsc::channel(requests.len().max(1));
    for request in requests {
        sender.send(request).await.context("queue log batch")?;
    }
    drop(sender);
    let mut responses = session
        .logs
        .clone()
        .stream_logs(ReceiverStream::new(outgoing))
        .await
        .context("StreamLogs")?
        .into_inner();
    while let Some(response) = responses.message().await.context("StreamLogs")? {
        if response.acked_sequence >= total {
            return Ok(());
        }
    }
    bail!("the server ended the log stream before acknowledging every line")
}

fn line(sequence: u64, stream: LogStream, text: String) -> LogLine {
    LogLine {
        sequence,
        step_index: 0,
        time: Some(ferry_proto::time::now()),
        stream: stream as i32,
        text,
    }
}

/// A build-log-like line of about 90 bytes; every `secret_every`th prints
/// the secret.
fn output_text(number: u64, plan: &Plan<'_>) -> String {
    if plan.secret_every > 0 && number.is_multiple_of(plan.secret_every) {
        format!(
            "{number:>9} uploading with token {} to the artifact store",
            plan.secret
        )
    } else {
        format!(
            "{number:>9}    Compiling crate-{} v0.{}.{} (/work/src/crates/crate-{})",
            number % 997,
            number % 31,
            number % 7,
            number % 997
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_print_the_secret_every_so_often_and_it_is_masked() {
        let plan = Plan {
            lines: 10,
            secret: "hunter2-secret",
            secret_every: 5,
        };
        let masker = Masker::new([plan.secret]);
        let plain = output_text(4, &plan);
        assert!(plain.contains("Compiling"), "{plain}");
        assert!(plain.len() > 60 && plain.len() < 120, "{plain}");
        let secret = output_text(5, &plan);
        assert!(secret.contains(plan.secret));
        let masked = masker.mask(&secret);
        assert!(
            !masked.contains(plan.secret) && masked.contains("***"),
            "{masked}"
        );
    }
}
