//! Tests of the log uploader against the fake server.

use std::path::Path;
use std::time::Duration;

use ferry_client::{Bearer, ServerAddress};
use ferry_proto::v1::{JobResult, LogLine, LogStream};

use super::*;
use crate::spool::spool_path;
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
        step_update: None,
    }
}

fn options(final_timeout: Duration, spool_dir: Option<&Path>, memory_lines: usize) -> Options {
    Options {
        final_timeout,
        memory_lines,
        spool_dir: spool_dir.map(Path::to_path_buf),
    }
}

async fn upload(url: &str, count: u64, options: Options) -> UploadSummary {
    let (sender, task) = start(client(url), "job-1".into(), options, StopSignal::new());
    for sequence in 1..=count {
        sender.lines.send(line(sequence)).await.expect("send");
    }
    finish(sender, task).await
}

/// As JobLog::finish does: the end, then the log closes; returns what the
/// uploader achieved.
async fn finish(sender: LogSender, task: JoinHandle<UploadSummary>) -> UploadSummary {
    sender
        .end
        .send(JobEnd {
            result: JobResult::Succeeded.into(),
            message: "all 1 steps succeeded".to_owned(),
        })
        .expect("end");
    drop(sender.lines);
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("uploader finishes")
        .expect("uploader task")
}

#[tokio::test]
async fn every_line_is_stored_once_in_order_in_bounded_batches() {
    let (fake, url) = testserver::start().await;
    let temp = tempfile::tempdir().expect("tempdir");
    let summary = upload(
        &url,
        1234,
        options(FINAL_ACK_TIMEOUT, Some(temp.path()), MAX_UNACKED),
    )
    .await;
    assert_eq!(
        summary,
        UploadSummary {
            lines: 1234,
            acked: 1234,
            lost: 0,
            completed: Some(JobState::Succeeded),
            moved: false,
        }
    );
    let state = fake.state();
    // The first message (which names the job) carried lines: the stream
    // waits briefly for the first one rather than open empty.
    assert!(state.batch_sizes[0] > 0, "{:?}", state.batch_sizes);
    // The end went once, after every line was stored.
    assert_eq!(state.stream_ends, 1);
    assert_eq!(state.completions[0].message, "all 1 steps succeeded");
    let sequences: Vec<u64> = state.lines.iter().map(|line| line.sequence).collect();
    assert_eq!(sequences, (1..=1234).collect::<Vec<u64>>());
    assert!(
        state.batch_sizes.iter().all(|&size| size <= MAX_BATCH),
        "{:?}",
        state.batch_sizes
    );
    assert!(state.batch_job_ids.iter().all(|job_id| job_id == "job-1"));
    assert_eq!(state.gaps, 0);
    assert_eq!(state.log_streams, 1);
    assert!(
        !spool_path(temp.path(), "job-1").exists(),
        "the spool file is removed once every line is acknowledged"
    );
}

#[tokio::test]
async fn unacknowledged_lines_are_resent_after_the_stream_fails() {
    let (fake, url) = testserver::start().await;
    fake.state().fail_streams = 2;
    let temp = tempfile::tempdir().expect("tempdir");
    let summary = upload(
        &url,
        700,
        options(FINAL_ACK_TIMEOUT, Some(temp.path()), MAX_UNACKED),
    )
    .await;
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
    let temp = tempfile::tempdir().expect("tempdir");
    let started = std::time::Instant::now();
    let summary = upload(
        &url,
        10,
        options(Duration::from_secs(1), Some(temp.path()), MAX_UNACKED),
    )
    .await;
    assert_eq!(
        summary,
        UploadSummary {
            lines: 10,
            acked: 0,
            lost: 10,
            completed: None,
            moved: false,
        }
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(!spool_path(temp.path(), "job-1").exists());
}

#[tokio::test]
async fn the_stream_is_held_open_without_lines_and_carries_cancellation() {
    let (fake, url) = testserver::start().await;
    let stop = StopSignal::new();
    let (sender, task) = start(
        client(&url),
        "job-1".into(),
        Options::default(),
        stop.clone(),
    );
    // No line is written, yet the stream opens (after waiting FLUSH_AFTER
    // for a first line to carry) with an empty message.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while fake.state().batch_sizes.is_empty() {
        assert!(std::time::Instant::now() < deadline, "no stream opened");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(fake.state().batch_sizes, [0]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.state().log_streams, 1, "one stream, held open");

    let canceled_at = std::time::Instant::now();
    fake.cancel("job-1");
    let reason = tokio::time::timeout(Duration::from_secs(1), stop.wait())
        .await
        .expect("the cancellation arrives within a second");
    assert_eq!(
        reason,
        crate::stop::Stop::Canceled("the job was canceled on the server".into())
    );
    assert!(canceled_at.elapsed() < Duration::from_secs(1));
    sender.lines.send(line(1)).await.expect("send");
    drop(sender);
    let summary = task.await.expect("task");
    assert_eq!(summary.acked, 1);
}

#[tokio::test]
async fn without_a_spool_a_server_that_never_acknowledges_holds_the_writers_back() {
    let url = testserver::closed_url().await;
    let memory = 2000;
    let (sender, _task) = start(
        client(&url),
        "job-1".into(),
        options(FINAL_ACK_TIMEOUT, None, memory),
        StopSignal::new(),
    );
    let written = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = written.clone();
    let writer = tokio::spawn(async move {
        for sequence in 1..=(memory + CHANNEL_CAPACITY + 100) as u64 {
            if sender.lines.send(line(sequence)).await.is_err() {
                return;
            }
            counter.store(sequence, std::sync::atomic::Ordering::SeqCst);
        }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let count = written.load(std::sync::atomic::Ordering::SeqCst);
    assert!(!writer.is_finished(), "the writer must be held back");
    assert!(count >= memory as u64, "only {count} lines taken");
    assert!(
        count <= (memory + CHANNEL_CAPACITY + 1) as u64,
        "{count} lines taken"
    );
    writer.abort();
}

#[tokio::test]
async fn the_spool_takes_lines_while_the_server_refuses_streams_and_is_removed_after_the_acks() {
    let (fake, url) = testserver::start().await;
    fake.state().refuse_streams = true;
    let temp = tempfile::tempdir().expect("tempdir");
    let memory = 100;
    let count = 3000u64;
    let (sender, task) = start(
        client(&url),
        "job-1".into(),
        options(FINAL_ACK_TIMEOUT, Some(temp.path()), memory),
        StopSignal::new(),
    );
    // Far more lines than the memory bound: none of them waits.
    tokio::time::timeout(Duration::from_secs(5), async {
        for sequence in 1..=count {
            sender.lines.send(line(sequence)).await.expect("send");
        }
    })
    .await
    .expect("the writer is never held back while the spool works");
    let path = spool_path(temp.path(), "job-1");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read(&path).unwrap_or_default();
        if text.windows(9).any(|window| window == b"line 3000") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the last line never reached the spool"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        fake.state().refused_streams >= 2,
        "{}",
        fake.state().refused_streams
    );
    assert!(fake.state().lines.is_empty());

    fake.state().refuse_streams = false;
    drop(sender);
    let summary = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("uploader finishes")
        .expect("task");
    assert_eq!(
        summary,
        UploadSummary {
            lines: count,
            acked: count,
            lost: 0,
            completed: None,
            moved: false,
        }
    );
    let state = fake.state();
    let sequences: Vec<u64> = state.lines.iter().map(|line| line.sequence).collect();
    assert_eq!(sequences, (1..=count).collect::<Vec<u64>>());
    assert_eq!(state.gaps, 0);
    assert!(!path.exists(), "the spool file is removed after the acks");
}

#[tokio::test]
async fn lines_lost_to_an_unreadable_spool_stop_the_upload_at_once_without_an_end() {
    let (fake, url) = testserver::start().await;
    {
        let mut state = fake.state();
        state.refuse_streams = true;
        state.refuse_gaps = true;
    }
    let temp = tempfile::tempdir().expect("tempdir");
    let memory = 100;
    let (sender, task) = start(
        client(&url),
        "job-1".into(),
        options(FINAL_ACK_TIMEOUT, Some(temp.path()), memory),
        StopSignal::new(),
    );
    for sequence in 1..=300 {
        sender.lines.send(line(sequence)).await.expect("send");
    }
    let path = spool_path(temp.path(), "job-1");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !std::fs::read(&path)
        .unwrap_or_default()
        .windows(8)
        .any(|window| window == b"line 300")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "line 300 never reached the spool"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Lines 101..=300 are only in the spool: lose them.
    std::fs::File::create(&path).expect("truncate the spool");
    fake.state().refuse_streams = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while fake.lines_of("job-1").len() < memory {
        assert!(
            std::time::Instant::now() < deadline,
            "the lines in memory were never stored"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A line after the lost ones leaves a gap the server refuses.
    sender.lines.send(line(301)).await.expect("send");
    let started = std::time::Instant::now();
    let summary = finish(sender, task).await;
    assert!(
        started.elapsed() < FINAL_ACK_TIMEOUT / 2,
        "the upload waited {:?} for lines that cannot be stored",
        started.elapsed()
    );
    assert_eq!(
        summary,
        UploadSummary {
            lines: 301,
            acked: memory as u64,
            lost: 201,
            completed: None,
            moved: false,
        }
    );
    let state = fake.state();
    assert!(state.gaps >= 1, "line 301 was sent after the gap");
    assert!(
        state.completions.is_empty() && state.ended_jobs.is_empty(),
        "no end goes out after lost lines: the job's message must say they were lost"
    );
    assert_eq!(state.lines.len(), memory);
}
