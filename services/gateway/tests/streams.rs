//! Streams pass through the gateway as they are produced, limits and
//! deadlines apply.

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ferry_proto::v1::job_service_client::JobServiceClient;
use ferry_proto::v1::log_service_client::LogServiceClient;
use ferry_proto::v1::{
    FollowLogsRequest, JobSpec, LogLine, PollJobRequest, QueueJobRequest, StreamLogsRequest,
};
use support::*;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

const PATIENCE: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_server_stream_passes_each_message_as_it_is_produced() {
    let mesh = Mesh::new();
    let logs = replicas(&mesh, "logs", 1).await;
    let gateway = ferry_gateway::start(mesh.gateway_config().route(LOG, urls(&logs)))
        .await
        .expect("gateway");
    let mut client = LogServiceClient::new(connect(&mesh, &gateway).await);
    let request = FollowLogsRequest {
        job_id: "job".to_owned(),
        from_sequence: 3,
        follow: true,
    };
    let mut stream = timeout(PATIENCE, client.follow_logs(request))
        .await
        .expect("headers in time")
        .expect("follow")
        .into_inner();
    // The upstream holds its second message until released: the first one
    // must come through on its own.
    let first = timeout(PATIENCE, stream.message())
        .await
        .expect("the first message arrives while the upstream still streams")
        .expect("no error")
        .expect("a message");
    assert_eq!(first.lines[0].sequence, 1);
    assert!(!logs[0].seen.stream_finished.load(Ordering::SeqCst));

    logs[0].seen.release.notify_one();
    let mut sequences = vec![1];
    while let Some(message) = timeout(PATIENCE, stream.message())
        .await
        .expect("in time")
        .expect("no error")
    {
        sequences.push(message.lines[0].sequence);
    }
    assert_eq!(sequences, vec![1, 2, 3]);
    assert!(logs[0].seen.stream_finished.load(Ordering::SeqCst));
}

fn batch(sequence: u64, text: String) -> StreamLogsRequest {
    StreamLogsRequest {
        job_id: "job".to_owned(),
        lines: vec![LogLine {
            sequence,
            text,
            ..LogLine::default()
        }],
        end: None,
    }
}

#[tokio::test]
async fn a_bidirectional_stream_goes_back_and_forth_through_the_gateway() {
    let mesh = Mesh::new();
    let logs = replicas(&mesh, "logs", 1).await;
    let gateway = ferry_gateway::start(mesh.gateway_config().route(LOG, urls(&logs)))
        .await
        .expect("gateway");
    let mut client = LogServiceClient::new(connect(&mesh, &gateway).await);
    let (batches, outgoing) = mpsc::channel(1);
    batches
        .send(batch(1, "one".to_owned()))
        .await
        .expect("send");
    let mut acks = timeout(PATIENCE, client.stream_logs(ReceiverStream::new(outgoing)))
        .await
        .expect("headers in time")
        .expect("stream")
        .into_inner();
    // Each ack must arrive while the request stream is still open: the
    // next batch is only sent once the previous one was acked.
    for sequence in 1..=5 {
        let ack = timeout(PATIENCE, acks.message())
            .await
            .expect("the ack arrives before the request stream ends")
            .expect("no error")
            .expect("an ack");
        assert_eq!(ack.acked_sequence, sequence);
        if sequence < 5 {
            let next = batch(sequence + 1, format!("line {}", sequence + 1));
            batches.send(next).await.expect("send");
        }
    }
    drop(batches);
    let end = timeout(PATIENCE, acks.message())
        .await
        .expect("in time")
        .expect("ok");
    assert!(end.is_none(), "the stream ends when the client's does");
}

#[tokio::test]
async fn messages_over_the_limit_are_refused_and_smaller_ones_pass() {
    let mesh = Mesh::new();
    let logs = replicas(&mesh, "logs", 1).await;
    let jobs = replicas(&mesh, "dispatch", 1).await;
    let mut config = mesh
        .gateway_config()
        .route(LOG, urls(&logs))
        .route(JOB, urls(&jobs));
    config.max_request_bytes = 16 * 1024;
    let gateway = ferry_gateway::start(config).await.expect("gateway");
    let channel = connect(&mesh, &gateway).await;

    let spec = |size: usize| QueueJobRequest {
        spec: Some(JobSpec {
            name: "x".repeat(size),
            ..JobSpec::default()
        }),
    };
    let mut jobs_client = JobServiceClient::new(channel.clone());
    jobs_client
        .queue_job(spec(8 * 1024))
        .await
        .expect("8 KiB passes");
    let status = jobs_client
        .queue_job(spec(64 * 1024))
        .await
        .expect_err("too large");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("larger than the gateway's limit"),
        "{status:?}"
    );
    assert_eq!(jobs[0].calls(), 1, "the large call never reached a handler");
    // The replica is not blamed: it stays in the balancer.
    jobs_client.queue_job(spec(10)).await.expect("still served");

    // In a stream that is already flowing, the status comes as trailers.
    let mut client = LogServiceClient::new(channel);
    let (batches, outgoing) = mpsc::channel(1);
    batches
        .send(batch(1, "small".to_owned()))
        .await
        .expect("send");
    let mut acks = client
        .stream_logs(ReceiverStream::new(outgoing))
        .await
        .expect("stream")
        .into_inner();
    let ack = acks.message().await.expect("ack").expect("an ack");
    assert_eq!(ack.acked_sequence, 1);
    batches
        .send(batch(2, "y".repeat(64 * 1024)))
        .await
        .expect("send");
    let status = timeout(PATIENCE, acks.message())
        .await
        .expect("in time")
        .expect_err("too large");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
}

#[tokio::test]
async fn the_deadline_passes_through_and_bounds_the_gateways_wait() {
    let mesh = Mesh::new();
    let jobs = replicas(&mesh, "dispatch", 1).await;
    let gateway = ferry_gateway::start(mesh.gateway_config().route(JOB, urls(&jobs)))
        .await
        .expect("gateway");
    let mut client = JobServiceClient::new(connect(&mesh, &gateway).await);
    // The stub holds the poll for its whole wait (30 s); the deadline is
    // 300 ms. A raw client, because tonic's would end the call itself.
    let wait_30_seconds = [0x0a, 0x02, 0x08, 30];
    let started = Instant::now();
    let (headers, trailers) = raw_call(
        &mesh,
        &gateway,
        "/ferry.v1.JobService/PollJob",
        &[("grpc-timeout", "300m")],
        &wait_30_seconds,
    )
    .await;
    let elapsed = started.elapsed();
    let (status, message) = grpc_outcome(&headers, trailers.as_ref());
    assert_eq!(status, "4", "DEADLINE_EXCEEDED: {message}");
    assert_eq!(
        message,
        "deadline%20exceeded%20waiting%20for%20ferry.v1.JobService"
    );
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");

    // A poll within its deadline is answered.
    let mut request = tonic::Request::new(PollJobRequest { wait: None });
    request.set_timeout(Duration::from_secs(5));
    let answer = client.poll_job(request).await.expect("answered");
    assert_eq!(answer.get_ref().job_id, "dispatch-0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_streams_per_connection_are_limited() {
    let mesh = Mesh::new();
    let logs = replicas(&mesh, "logs", 1).await;
    let mut config = mesh.gateway_config().route(LOG, urls(&logs));
    config.max_concurrent_streams = 2;
    let gateway = ferry_gateway::start(config).await.expect("gateway");
    let channel = connect(&mesh, &gateway).await;
    let follow = |channel: tonic::transport::Channel| async move {
        let request = FollowLogsRequest {
            job_id: "job".to_owned(),
            from_sequence: 2,
            follow: true,
        };
        let mut stream = LogServiceClient::new(channel)
            .follow_logs(request)
            .await
            .expect("follow")
            .into_inner();
        let first = stream.message().await.expect("ok").expect("first");
        (first.lines[0].sequence, stream)
    };
    // Two streams held open by the upstream fill the connection.
    let (_, mut one) = timeout(PATIENCE, follow(channel.clone()))
        .await
        .expect("one");
    let (_, _two) = timeout(PATIENCE, follow(channel.clone()))
        .await
        .expect("two");
    let third = tokio::spawn(follow(channel));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !third.is_finished(),
        "a third stream opened beyond the limit"
    );
    assert_eq!(logs[0].calls(), 2);

    // One ends: the third gets its turn.
    logs[0].seen.release.notify_one();
    while timeout(PATIENCE, one.message())
        .await
        .expect("in time")
        .expect("ok")
        .is_some()
    {}
    let (sequence, _three) = timeout(PATIENCE, third)
        .await
        .expect("the third stream opens once one ended")
        .expect("task");
    assert_eq!(sequence, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_streams_count_as_load_until_they_end() {
    let mesh = Mesh::new();
    let logs = replicas(&mesh, "logs", 2).await;
    let gateway = ferry_gateway::start(mesh.gateway_config().route(LOG, urls(&logs)))
        .await
        .expect("gateway");
    let mut client = LogServiceClient::new(connect(&mesh, &gateway).await);
    // Each stream stays open (its upstream waits for a release that never
    // comes). Power of two choices over two replicas compares both, so with
    // open streams counted as load every new stream goes to the replica
    // with fewer: they end up evenly split.
    let mut open = Vec::new();
    for _ in 0..10 {
        let request = FollowLogsRequest {
            job_id: "job".to_owned(),
            from_sequence: 2,
            follow: true,
        };
        let mut stream = timeout(PATIENCE, client.follow_logs(request))
            .await
            .expect("in time")
            .expect("follow")
            .into_inner();
        timeout(PATIENCE, stream.message())
            .await
            .expect("first message")
            .expect("ok");
        open.push(stream);
    }
    assert_eq!((logs[0].calls(), logs[1].calls()), (5, 5));
}
