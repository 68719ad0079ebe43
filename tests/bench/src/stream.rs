//! `LogService.StreamLogs` as an agent uses it: lines masked with the job's
//! secrets by ferry-agent's own [`Masker`], numbered gap-free from 1, sent
//! in batches of up to 500 lines (ferry-agent's batch size) with a bounded
//! number of unacknowledged lines in flight, until the server acknowledged
//! the last one.

use anyhow::{Context, bail};
use ferry_agent::masking::Masker;
use ferry_proto::v1::{
    JobEnd, JobResult, JobState, LogLine, LogStream, StepState, StepUpdate, StreamLogsRequest,
};
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

/// What ferry-agent sends for a one-step job whose step prints nothing:
/// the step's start line, which reports it running, alone; once the server
/// stored it (the agent waits for that before it runs the job's first
/// step), the rest of `count` lines on the same stream, the last reporting
/// the step succeeded, with the job's end on the last message; then it
/// waits for the answer that the job completed. `count` is at least 2 (the
/// start and exit lines).
pub async fn step_lines(session: &JobSession, masker: &Masker, count: u64) -> anyhow::Result<()> {
    anyhow::ensure!(
        count >= 2,
        "a step streams at least its start and exit lines"
    );
    let texts = (1..=count).map(|number| match number {
        1 => "▶ step 1/1: empty".to_owned(),
        last if last == count => "step empty exited with code 0 (0s)".to_owned(),
        other => format!("line {other}"),
    });
    let mut lines: Vec<LogLine> = texts
        .enumerate()
        .map(|(index, text)| {
            line(
                index as u64 + 1,
                LogStream::System,
                masker.mask(&text).into_owned(),
            )
        })
        .collect();
    lines[0].step_update = Some(StepUpdate {
        state: StepState::Running.into(),
        exit_code: None,
    });
    if let Some(last) = lines.last_mut() {
        last.step_update = Some(StepUpdate {
            state: StepState::Succeeded.into(),
            exit_code: Some(0),
        });
    }
    let rest = lines.split_off(1);
    let (requests, outgoing) = mpsc::channel(QUEUED_MESSAGES);
    requests
        .send(StreamLogsRequest {
            job_id: session.job_id.clone(),
            lines,
            end: None,
        })
        .await
        .context("queue the start line")?;
    let mut responses = session
        .logs
        .clone()
        .stream_logs(ReceiverStream::new(outgoing))
        .await
        .context("StreamLogs")?
        .into_inner();
    let mut rest = Some(rest);
    loop {
        let Some(response) = responses.message().await.context("StreamLogs")? else {
            bail!("the server ended the log stream before the job completed");
        };
        if response.final_state != JobState::Unspecified as i32 {
            anyhow::ensure!(
                response.final_state == JobState::Succeeded as i32
                    && response.acked_sequence == count,
                "the job ended {:?} with {} of {count} lines stored",
                JobState::try_from(response.final_state),
                response.acked_sequence
            );
            break;
        }
        if response.acked_sequence >= 1
            && let Some(rest) = rest.take()
        {
            let batches = rest.chunks(BATCH).count();
            for (index, batch) in rest.chunks(BATCH).enumerate() {
                let end = (index + 1 == batches).then(|| JobEnd {
                    result: JobResult::Succeeded.into(),
                    message: "all 1 steps succeeded".to_owned(),
                });
                requests
                    .send(StreamLogsRequest {
                        job_id: String::new(),
                        lines: batch.to_vec(),
                        end,
                    })
                    .await
                    .context("queue log batch")?;
            }
        }
    }
    drop(requests);
    // The server ends the call after the job's end, as ferry-agent sees it.
    while responses.message().await.context("StreamLogs")?.is_some() {}
    Ok(())
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
                end: None,
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

fn line(sequence: u64, stream: LogStream, text: String) -> LogLine {
    LogLine {
        sequence,
        step_index: 0,
        time: Some(ferry_proto::time::now()),
        stream: stream as i32,
        text,
        step_update: None,
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
