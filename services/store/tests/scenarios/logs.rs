//! Job logs.

use ferry_store::{Error, JobState, LogBatch, LogHolder};

use crate::support::{FOREVER, TestDb, first, new_job};

pub async fn logs(db: &TestDb) {
    let store = &db.store;
    let pool = store.create_pool("logs").await.expect("pool");
    let job = store
        .insert_job(new_job(&pool.id, "logged", &["s"]))
        .await
        .expect("job");
    assert!(
        matches!(
            store
                .append_log_batch(&job.id, first("agent-1"), 1, 1, b"early".to_vec())
                .await,
            Err(Error::Conflict(_))
        ),
        "a queued job takes no lines"
    );
    assert!(
        store
            .claim_job(&job.id, "agent-1", 1, FOREVER)
            .await
            .expect("claim")
    );
    assert_eq!(store.log_sequence(&job.id).await.expect("seq"), 0);
    assert!(
        store
            .log_batches(&job.id, 0, 10)
            .await
            .expect("batches")
            .is_empty()
    );

    assert_eq!(
        store
            .append_log_batch(&job.id, first("agent-1"), 1, 2, b"l1\nl2\n".to_vec())
            .await
            .expect("1..=2"),
        2
    );
    assert_eq!(
        store
            .append_log_batch(&job.id, first("agent-1"), 3, 3, b"l3\n".to_vec())
            .await
            .expect("3..=3"),
        3
    );
    assert_eq!(store.log_sequence(&job.id).await.expect("seq"), 3);
    assert_eq!(
        store.log_holder(&job.id).await.expect("holder"),
        Some(LogHolder {
            state: JobState::Assigned,
            agent_id: Some("agent-1".to_owned()),
            attempt: 1,
            log_sequence: 3,
            cancel_requested: false,
            steps: 1,
        })
    );
    assert_eq!(store.log_holder("nope").await.expect("no holder"), None);

    // a duplicate stores nothing and reports where the log is
    assert_eq!(
        store
            .append_log_batch(&job.id, first("agent-1"), 1, 2, b"XX".to_vec())
            .await
            .expect("dup"),
        3
    );
    assert_eq!(
        store
            .append_log_batch(&job.id, first("agent-1"), 3, 3, b"XX".to_vec())
            .await
            .expect("dup"),
        3
    );
    assert_eq!(
        store
            .log_batches(&job.id, 0, 100)
            .await
            .expect("batches")
            .len(),
        2
    );

    let err = store
        .append_log_batch(&job.id, first("agent-1"), 5, 6, b"gap".to_vec())
        .await;
    assert!(matches!(err, Err(Error::Conflict(_))), "{err:?}");
    let err = store
        .append_log_batch(&job.id, first("agent-1"), 3, 4, b"overlap".to_vec())
        .await;
    assert!(matches!(err, Err(Error::Conflict(_))), "{err:?}");
    let err = store
        .append_log_batch(&job.id, first("agent-1"), 0, 1, b"zero".to_vec())
        .await;
    assert!(matches!(err, Err(Error::Invalid(_))), "{err:?}");
    let err = store
        .append_log_batch(&job.id, first("agent-1"), 5, 4, b"backwards".to_vec())
        .await;
    assert!(matches!(err, Err(Error::Invalid(_))), "{err:?}");
    let err = store
        .append_log_batch("nope", first("agent-1"), 1, 1, b"x".to_vec())
        .await;
    assert!(matches!(err, Err(Error::NotFound(_))), "{err:?}");
    let err = store.log_sequence("nope").await;
    assert!(matches!(err, Err(Error::NotFound(_))), "{err:?}");
    assert_eq!(
        store.log_sequence(&job.id).await.expect("seq"),
        3,
        "failures change nothing"
    );

    assert_eq!(
        store
            .append_log_batch(&job.id, first("agent-1"), 4, 10, b"l4..l10\n".to_vec())
            .await
            .expect("4..=10"),
        10
    );

    let batch = |first, last, lines: &[u8]| LogBatch {
        first,
        last,
        lines: lines.to_vec(),
    };
    // from a line in the middle of the first batch: that batch and the rest
    assert_eq!(
        store.log_batches(&job.id, 2, 100).await.expect("from 2"),
        vec![
            batch(1, 2, b"l1\nl2\n"),
            batch(3, 3, b"l3\n"),
            batch(4, 10, b"l4..l10\n")
        ]
    );
    assert_eq!(
        store.log_batches(&job.id, 3, 100).await.expect("from 3"),
        vec![batch(3, 3, b"l3\n"), batch(4, 10, b"l4..l10\n")]
    );
    assert_eq!(
        store.log_batches(&job.id, 7, 100).await.expect("from 7"),
        vec![batch(4, 10, b"l4..l10\n")]
    );
    assert_eq!(
        store.log_batches(&job.id, 3, 1).await.expect("limit"),
        vec![batch(3, 3, b"l3\n")]
    );
    assert!(
        store
            .log_batches(&job.id, 11, 100)
            .await
            .expect("past the end")
            .is_empty()
    );
    assert!(
        store
            .log_batches("nope", 0, 100)
            .await
            .expect("no job")
            .is_empty()
    );

    store
        .complete_job(&job.id, first("agent-1"), JobState::Succeeded, "", 2)
        .await
        .expect("complete");
    let err = store
        .append_log_batch(&job.id, first("agent-1"), 11, 11, b"late".to_vec())
        .await;
    assert!(
        matches!(err, Err(Error::Conflict(_))),
        "an ended job takes no lines: {err:?}"
    );
    assert_eq!(store.log_sequence(&job.id).await.expect("seq"), 10);
}

/// The same batch sent by several tasks at once is stored once.
pub async fn concurrent_duplicate_log_appends(db: &TestDb) {
    let store = &db.store;
    let pool = store.create_pool("logs").await.expect("pool");
    let job = store
        .insert_job(new_job(&pool.id, "logged", &[]))
        .await
        .expect("job");
    assert!(
        store
            .claim_job(&job.id, "agent-1", 1, FOREVER)
            .await
            .expect("claim")
    );
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (store, job_id) = (store.clone(), job.id.clone());
        tasks.push(tokio::spawn(async move {
            store
                .append_log_batch(&job_id, first("agent-1"), 1, 5, b"five lines".to_vec())
                .await
        }));
    }
    for task in tasks {
        assert_eq!(task.await.expect("task").expect("append"), 5);
    }
    assert_eq!(
        store
            .log_batches(&job.id, 0, 100)
            .await
            .expect("batches")
            .len(),
        1
    );
    assert_eq!(store.log_sequence(&job.id).await.expect("seq"), 5);
}

/// A job's first log stream after its hand-out opens with what dispatch
/// knew then (SQLite; PostgreSQL reads), once; a write that changes what the
/// stream checks drops it, even when dispatch fills it in after that write.
pub async fn hand_out_holders(db: &TestDb) {
    let store = &db.store;
    store.remember_hand_outs();
    let remembers = store.backend_name() == "sqlite";
    let pool = store.create_pool("handed").await.expect("pool");
    let pool_id = pool.id.as_str();
    let handed_out = |name: &'static str| async move {
        let job = store
            .insert_job(new_job(pool_id, name, &["s"]))
            .await
            .expect("job");
        assert!(
            store
                .claim_job(&job.id, "agent-1", 100, 1_000)
                .await
                .expect("claim")
        );
        store.job(&job.id).await.expect("job").expect("exists")
    };

    // Taken once, as remembered (here altered, to tell it from a read).
    let job = handed_out("taken").await;
    let read = store.log_holder(&job.id).await.expect("read");
    let mut altered = job.clone();
    altered.log_sequence = 7;
    store.handed_out_to(&altered, "agent-1");
    let opened = store.log_stream_holder(&job.id).await.expect("open");
    if remembers {
        assert_eq!(opened.as_ref().map(|h| h.log_sequence), Some(7));
    } else {
        assert_eq!(opened, read);
    }
    assert_eq!(
        store.log_stream_holder(&job.id).await.expect("open again"),
        read,
        "a second stream reads"
    );

    // As remembered, unaltered, it is what a read gives.
    let job = handed_out("same").await;
    store.handed_out_to(&job, "agent-1");
    assert_eq!(
        store.log_stream_holder(&job.id).await.expect("open"),
        store.log_holder(&job.id).await.expect("read")
    );

    // A cancel request.
    let job = handed_out("canceled").await;
    store.handed_out_to(&job, "agent-1");
    store
        .request_cancel(&job.id, "stop", 200)
        .await
        .expect("cancel");
    let opened = store.log_stream_holder(&job.id).await.expect("open");
    assert_eq!(opened.map(|h| h.cancel_requested), Some(true));

    // A cancel after the claim, before dispatch fills in what it sealed
    // (which still says no cancel).
    let job = handed_out("canceled first").await;
    store
        .request_cancel(&job.id, "stop", 200)
        .await
        .expect("cancel");
    store.handed_out_to(&job, "agent-1");
    let opened = store.log_stream_holder(&job.id).await.expect("open");
    assert_eq!(opened.map(|h| h.cancel_requested), Some(true));

    // A completion.
    let job = handed_out("completed").await;
    store.handed_out_to(&job, "agent-1");
    store
        .complete_job(&job.id, first("agent-1"), JobState::Succeeded, "", 300)
        .await
        .expect("complete");
    let opened = store.log_stream_holder(&job.id).await.expect("open");
    assert_eq!(opened.map(|h| h.state), Some(JobState::Succeeded));

    // A release.
    let job = handed_out("released").await;
    store.handed_out_to(&job, "agent-1");
    store
        .release_job(&job.id, "agent-1")
        .await
        .expect("release");
    let opened = store.log_stream_holder(&job.id).await.expect("open");
    assert_eq!(
        opened.map(|h| (h.state, h.agent_id)),
        Some((JobState::Queued, None))
    );

    // A reaper's end (the job timed out; every job above that is still
    // held ends too).
    let job = handed_out("timed out").await;
    store.handed_out_to(&job, "agent-1");
    let reaped = store.reap_timed_out(4_000_000_000, 0).await.expect("reap");
    assert!(reaped.iter().any(|r| r.job_id == job.id), "{reaped:?}");
    let opened = store.log_stream_holder(&job.id).await.expect("open");
    assert_eq!(opened.map(|h| h.state), Some(JobState::Failed));

    // A reaper's requeue (the lease lapsed).
    let job = handed_out("requeued").await;
    store.handed_out_to(&job, "agent-1");
    let reaped = store.reap_lapsed_leases(1_001).await.expect("reap");
    assert!(reaped.iter().any(|r| r.job_id == job.id), "{reaped:?}");
    let opened = store.log_stream_holder(&job.id).await.expect("open");
    assert_eq!(
        opened.map(|h| (h.state, h.attempt)),
        Some((JobState::Queued, 2))
    );
}
