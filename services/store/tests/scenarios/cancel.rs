//! Cancellation, unconfirmed cancels, and the timeout backstop.

use ferry_store::{CancelOutcome, Error, JobState, ReapOutcome, StepState, Store};

use crate::support::{FOREVER, TestDb, first, new_job};

pub async fn cancel_jobs(db: &TestDb) {
    let store = &db.store;
    let pool = store.create_pool("cancel").await.expect("pool");

    // queued: canceled at once
    let queued = store
        .insert_job(new_job(&pool.id, "queued", &["a", "b"]))
        .await
        .expect("job");
    assert_eq!(
        store
            .request_cancel(&queued.id, "not needed", 500)
            .await
            .expect("cancel"),
        CancelOutcome::Canceled
    );
    let canceled = store.job(&queued.id).await.expect("get").expect("exists");
    assert_eq!(canceled.state, JobState::Canceled);
    assert_eq!(canceled.finished_at, Some(500));
    assert_eq!(canceled.cancel_requested_at, Some(500));
    assert_eq!(canceled.message, "not needed");
    assert!(canceled.steps.iter().all(|s| s.state == StepState::Skipped));
    assert!(
        store
            .queued_jobs(&pool.id, 10)
            .await
            .expect("queued")
            .is_empty()
    );
    assert!(
        !store
            .claim_job(&queued.id, "agent-a", 600, FOREVER)
            .await
            .expect("claim")
    );
    assert_eq!(
        store
            .request_cancel(&queued.id, "again", 700)
            .await
            .expect("cancel"),
        CancelOutcome::AlreadyFinished(JobState::Canceled)
    );
    let unexplained = store
        .insert_job(new_job(&pool.id, "unexplained", &[]))
        .await
        .expect("job");
    store
        .request_cancel(&unexplained.id, "", 1)
        .await
        .expect("cancel");
    assert_eq!(
        store
            .job(&unexplained.id)
            .await
            .expect("get")
            .map(|j| j.message),
        Some("canceled".to_owned())
    );

    // running: the cancel is requested, the agent learns of it and stops
    let running = store
        .insert_job(new_job(&pool.id, "running", &["a", "b"]))
        .await
        .expect("job");
    let a = first("agent-a");
    assert!(
        store
            .claim_job(&running.id, "agent-a", 100, 1_000)
            .await
            .expect("claim")
    );
    store
        .update_step(&running.id, a, 0, StepState::Running, None, 200)
        .await
        .expect("step");
    let renewed = store
        .renew_lease(&running.id, a, 300, 1_300)
        .await
        .expect("renew");
    assert!(!renewed.cancel_requested);
    assert_eq!(
        store
            .request_cancel(&running.id, "stop it", 400)
            .await
            .expect("cancel"),
        CancelOutcome::Requested
    );
    assert_eq!(
        store
            .request_cancel(&running.id, "again", 450)
            .await
            .expect("cancel"),
        CancelOutcome::Requested
    );
    let requested = store.job(&running.id).await.expect("get").expect("exists");
    assert_eq!(requested.state, JobState::Running);
    assert_eq!(requested.finished_at, None);
    assert_eq!(
        requested.cancel_requested_at,
        Some(400),
        "the first request wins"
    );
    assert_eq!(requested.message, "stop it");
    let renewed = store
        .renew_lease(&running.id, a, 500, 1_500)
        .await
        .expect("renew");
    assert!(renewed.cancel_requested);
    assert_eq!(renewed.lease_expires_at, 1_500);
    store
        .complete_job(&running.id, a, JobState::Canceled, "", 600)
        .await
        .expect("complete");
    let done = store
        .job(&running.id)
        .await
        .expect("read")
        .expect("the job");
    assert_eq!(done.state, JobState::Canceled);
    assert_eq!(done.message, "stop it", "an empty message keeps the reason");
    let states: Vec<_> = done.steps.iter().map(|s| s.state).collect();
    assert_eq!(states, vec![StepState::Canceled, StepState::Skipped]);
    assert_eq!(
        store
            .request_cancel(&running.id, "late", 700)
            .await
            .expect("cancel"),
        CancelOutcome::AlreadyFinished(JobState::Canceled)
    );

    // the agent's final state stands even after a cancel request
    let raced = store
        .insert_job(new_job(&pool.id, "raced", &["a"]))
        .await
        .expect("job");
    assert!(
        store
            .claim_job(&raced.id, "agent-b", 100, FOREVER)
            .await
            .expect("claim")
    );
    store
        .request_cancel(&raced.id, "stop", 200)
        .await
        .expect("cancel");
    store
        .complete_job(
            &raced.id,
            first("agent-b"),
            JobState::Succeeded,
            "all green",
            300,
        )
        .await
        .expect("complete");
    let finished = store.job(&raced.id).await.expect("read").expect("the job");
    assert_eq!(
        (finished.state, finished.message.as_str()),
        (JobState::Succeeded, "all green")
    );
    assert_eq!(
        store
            .request_cancel(&raced.id, "", 400)
            .await
            .expect("cancel"),
        CancelOutcome::AlreadyFinished(JobState::Succeeded)
    );

    let err = store.request_cancel("nope", "", 1).await;
    assert!(matches!(err, Err(Error::NotFound(_))), "{err:?}");
}

/// An agent that does not confirm a cancel within the grace period: the
/// server cancels the job itself.
pub async fn unconfirmed_cancels(db: &TestDb) {
    let store = &db.store;
    let pool = store.create_pool("unconfirmed").await.expect("pool");
    let stuck = store
        .insert_job(new_job(&pool.id, "stuck", &["a", "b"]))
        .await
        .expect("job");
    let busy = store
        .insert_job(new_job(&pool.id, "busy", &["a"]))
        .await
        .expect("job");
    for (job, agent) in [(&stuck, "agent-a"), (&busy, "agent-b")] {
        assert!(
            store
                .claim_job(&job.id, agent, 0, FOREVER)
                .await
                .expect("claim")
        );
        store
            .update_step(&job.id, first(agent), 0, StepState::Running, None, 10)
            .await
            .expect("step");
    }
    store
        .request_cancel(&stuck.id, "stop", 1_000)
        .await
        .expect("cancel");

    assert!(
        store
            .reap_unconfirmed_cancels(2_000, 1_000)
            .await
            .expect("reap")
            .is_empty(),
        "still within the grace period"
    );
    let reaped = store
        .reap_unconfirmed_cancels(2_001, 1_000)
        .await
        .expect("reap");
    assert_eq!(reaped.len(), 1);
    assert_eq!(reaped[0].job_id, stuck.id);
    assert_eq!(reaped[0].agent_id.as_deref(), Some("agent-a"));
    assert_eq!(reaped[0].outcome, ReapOutcome::Canceled);
    let job = store.job(&stuck.id).await.expect("get").expect("exists");
    assert_eq!(job.state, JobState::Canceled);
    assert_eq!(job.finished_at, Some(2_001));
    assert_eq!(job.lease_expires_at, None);
    assert_eq!(job.message, "canceled; the agent did not confirm");
    let states: Vec<_> = job.steps.iter().map(|s| s.state).collect();
    assert_eq!(states, vec![StepState::Canceled, StepState::Skipped]);
    let err = store
        .complete_job(&stuck.id, first("agent-a"), JobState::Canceled, "", 3_000)
        .await;
    assert!(matches!(err, Err(Error::Conflict(_))), "{err:?}");
    assert_eq!(job_state(store, &busy.id).await, JobState::Running);
    assert!(
        store
            .reap_unconfirmed_cancels(9_000, 1_000)
            .await
            .expect("reap")
            .is_empty()
    );
}

/// The server's timeout backstop: from the start (or the assignment when
/// no step started) plus the timeout plus the grace.
pub async fn timeouts(db: &TestDb) {
    const SECOND: i64 = 1_000_000;
    let store = &db.store;
    let pool = store.create_pool("timeouts").await.expect("pool");
    let mut quick = new_job(&pool.id, "assigned", &["a", "b"]);
    quick.timeout_seconds = 10;
    let assigned = store.insert_job(quick.clone()).await.expect("job");
    quick.id = uuid::Uuid::now_v7().to_string();
    quick.name = "started".to_owned();
    let started = store.insert_job(quick.clone()).await.expect("job");
    quick.id = uuid::Uuid::now_v7().to_string();
    quick.name = "queued".to_owned();
    store.insert_job(quick).await.expect("job");
    let slow = store
        .insert_job(new_job(&pool.id, "slow", &["a"]))
        .await
        .expect("job");

    assert!(
        store
            .claim_job(&assigned.id, "agent-a", SECOND, FOREVER)
            .await
            .expect("claim")
    );
    assert!(
        store
            .claim_job(&started.id, "agent-b", 0, FOREVER)
            .await
            .expect("claim")
    );
    assert!(
        store
            .claim_job(&slow.id, "agent-c", 0, FOREVER)
            .await
            .expect("claim")
    );
    store
        .update_step(
            &started.id,
            first("agent-b"),
            0,
            StepState::Running,
            None,
            5 * SECOND,
        )
        .await
        .expect("step");

    let grace = SECOND;
    // assigned at 1 s: deadline 1 + 10 + 1 = 12 s
    assert!(
        store
            .reap_timed_out(12 * SECOND, grace)
            .await
            .expect("reap")
            .is_empty()
    );
    let reaped = store
        .reap_timed_out(12 * SECOND + 1, grace)
        .await
        .expect("reap");
    assert_eq!(reaped.len(), 1);
    assert_eq!(
        (reaped[0].job_id.as_str(), reaped[0].outcome),
        (assigned.id.as_str(), ReapOutcome::Failed)
    );
    let job = store.job(&assigned.id).await.expect("get").expect("exists");
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.message, "timed out after 10s");
    assert!(job.steps.iter().all(|s| s.state == StepState::Skipped));

    // started at 5 s: deadline 16 s
    assert!(
        store
            .reap_timed_out(16 * SECOND, grace)
            .await
            .expect("reap")
            .is_empty()
    );
    let reaped = store
        .reap_timed_out(16 * SECOND + 1, grace)
        .await
        .expect("reap");
    assert_eq!(reaped.len(), 1);
    assert_eq!(reaped[0].job_id, started.id);
    assert_eq!(reaped[0].agent_id.as_deref(), Some("agent-b"));
    let job = store.job(&started.id).await.expect("get").expect("exists");
    assert_eq!(
        (job.state, job.finished_at),
        (JobState::Failed, Some(16 * SECOND + 1))
    );
    assert_eq!(
        (job.steps[0].state, job.steps[1].state),
        (StepState::Failed, StepState::Skipped)
    );
    assert_eq!(job_state(store, &slow.id).await, JobState::Assigned);

    // the one-hour job, past its hour; the queued one is never reaped
    let reaped = store
        .reap_timed_out(3_602 * SECOND, grace)
        .await
        .expect("reap");
    assert_eq!(reaped.len(), 1);
    assert_eq!(
        store.job(&slow.id).await.expect("get").map(|j| j.message),
        Some("timed out after 1h".to_owned())
    );
    assert_eq!(
        store.queued_jobs(&pool.id, 10).await.expect("queued").len(),
        1
    );
}

async fn job_state(store: &Store, id: &str) -> JobState {
    store.job(id).await.expect("get").expect("exists").state
}
