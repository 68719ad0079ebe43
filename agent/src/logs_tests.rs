//! Tests of the log uploader against the fake server.

use std::time::Duration;

use ferry_client::{Bearer, ServerAddress};
use ferry_proto::v1::{LogLine, LogStream};

use super::*;
use crate::testserver::{self, JOB_TOKEN};

fn client(url: &str) -> LogServiceClient<Authorized> {
    let channel = ServerAddress::new(url, None)
        .connect_lazy()
        .expect("channel");
    ferry_client::logs(channel, Bearer::new(JOB_TOKEN).expect("bearer"))
}

fn line(sequence: u64) -> LogLine {
    LogLine {
        sequence,
        step_index: 0,
        time: Some(ferry_proto::time::now()),
        stream: LogStream::Stdout as i32,
        text: format!("line {sequence}"),
    }
}

async fn upload(url: &str, count: u64, final_timeout: Duration) -> UploadSummary {
    let (sender, task) = start(client(url), "job-1".into(), final_timeout);
    for sequence in 1..=count {
        sender.send(line(sequence)).await.expect("send");
    }
    drop(sender);
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("uploader finishes")
        .expect("uploader task")
}

#[tokio::test]
async fn every_line_is_stored_once_in_order_in_bounded_batches() {
    let (fake, url) = testserver::start().await;
    let summary = upload(&url, 1234, FINAL_ACK_TIMEOUT).await;
    assert_eq!(
        summary,
        UploadSummary {
            lines: 1234,
            acked: 1234,
            lost: 0
        }
    );
    let state = fake.state();
    let sequences: Vec<u64> = state.lines.iter().map(|line| line.sequence).collect();
    assert_eq!(sequences, (1..=1234).collect::<Vec<u64>>());
    assert!(
        state
            .batch_sizes
            .iter()
            .all(|&size| size > 0 && size <= MAX_BATCH),
        "{:?}",
        state.batch_sizes
    );
    assert!(state.batch_job_ids.iter().all(|job_id| job_id == "job-1"));
    assert_eq!(state.gaps, 0);
    assert_eq!(state.log_streams, 1);
}

#[tokio::test]
async fn unacknowledged_lines_are_resent_after_the_stream_fails() {
    let (fake, url) = testserver::start().await;
    fake.state().fail_streams = 2;
    let summary = upload(&url, 700, FINAL_ACK_TIMEOUT).await;
    assert_eq!(summary.lost, 0, "{summary:?}");
    assert_eq!(summary.acked, 700);
    let state = fake.state();
    let sequences: Vec<u64> = state.lines.iter().map(|line| line.sequence).collect();
    assert_eq!(sequences, (1..=700).collect::<Vec<u64>>());
    assert_eq!(
        state.gaps, 0,
        "a reconnect must resend from the first unacknowledged line"
    );
    assert_eq!(state.log_streams, 3);
}

#[tokio::test]
async fn an_unreachable_server_loses_the_lines_after_the_final_timeout() {
    let url = testserver::closed_url().await;
    let started = std::time::Instant::now();
    let summary = upload(&url, 10, Duration::from_secs(1)).await;
    assert_eq!(
        summary,
        UploadSummary {
            lines: 10,
            acked: 0,
            lost: 10
        }
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_closed_log_with_no_lines_needs_no_stream() {
    let (fake, url) = testserver::start().await;
    let summary = upload(&url, 0, FINAL_ACK_TIMEOUT).await;
    assert_eq!(summary.lines, 0);
    assert_eq!(fake.state().log_streams, 0);
}

#[tokio::test]
async fn a_server_that_never_acknowledges_stops_the_writers_instead_of_dropping_lines() {
    let url = testserver::closed_url().await;
    let (sender, _task) = start(client(&url), "job-1".into(), FINAL_ACK_TIMEOUT);
    let written = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = written.clone();
    let writer = tokio::spawn(async move {
        for sequence in 1..=(MAX_UNACKED + CHANNEL_CAPACITY + 100) as u64 {
            if sender.send(line(sequence)).await.is_err() {
                return;
            }
            counter.store(sequence, std::sync::atomic::Ordering::SeqCst);
        }
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    let count = written.load(std::sync::atomic::Ordering::SeqCst);
    assert!(!writer.is_finished(), "the writer must be held back");
    assert!(count >= MAX_UNACKED as u64, "only {count} lines taken");
    assert!(
        count <= (MAX_UNACKED + CHANNEL_CAPACITY + 1) as u64,
        "{count} lines taken"
    );
    writer.abort();
}
