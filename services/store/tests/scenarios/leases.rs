//! Leases: renewal, fencing by attempt, and the lapsed-lease reaper.

use ferry_store::{Error, JobState, LeaseRenewal, ReapOutcome, Reaped, StepState, Store};

use crate::support::{FOREVER, TestDb, first, holder, new_job};

pub async fn lease_renewal(db: &TestDb) {
    let store = &db.store;
    let pool = store.create_pool("leases").await.expect("pool");
    let job = store
        .insert_job(new_job(&pool.id, "leased", &["a", "b"]))
        .await
        .expect("job");
    let queued = store
        .insert_job(new_job(&pool.id, "queued", &["a"]))
        .await
        .expect("job");
    assert_eq!((job.lease_expires_at, job.max_attempts), (None, 3));

    assert!(
        store
            .claim_job(&job.id, "agent-a", 100, 1_100)
            .await
            .expect("claim")
    );
    assert_eq!(lease(store, &job.id).await, Some(1_100));

    let renewed = store
        .renew_lease(&job.id, first("agent-a"), 500, 2_000)
        .await
        .expect("renew");
    assert_eq!(
        renewed,
        LeaseRenewal {
            lease_expires_at: 2_000,
            cancel_requested: false
        }
    );
    assert_eq!(lease(store, &job.id).await, Some(2_000));

    // stale holders: another agent, an older or newer attempt
    for stale in [first("agent-b"), holder("agent-a", 2), holder("agent-a", 0)] {
        let err = store.renew_lease(&job.id, stale, 600, 9_000).await;
        assert!(matches!(err, Err(Error::Conflict(_))), "{stale:?}: {err:?}");
    }
    let err = store
        .renew_lease("nope", first("agent-a"), 600, 9_000)
        .await;
    assert!(matches!(err, Err(Error::NotFound(_))), "{err:?}");
    let err = store
        .renew_lease(&queued.id, first("agent-a"), 600, 9_000)
        .await;
    assert!(matches!(err, Err(Error::Conflict(_))), "{err:?}");
    assert_eq!(
        lease(store, &job.id).await,
        Some(2_000),
        "refusals change nothing"
    );

    // the lease ends at 2_000: renewing at 2_000 is in time, later is not
    store
        .renew_lease(&job.id, first("agent-a"), 2_000, 2_000)
        .await
        .expect("renew at the last moment");
    let err = store
        .renew_lease(&job.id, first("agent-a"), 2_001, 3_000)
        .await;
    assert!(
        matches!(err, Err(Error::Conflict(_))),
        "a lapsed lease is not renewed: {err:?}"
    );
    assert_eq!(lease(store, &job.id).await, Some(2_000));

    // completing clears the lease; a finished job has none to renew
    store
        .complete_job(&job.id, first("agent-a"), JobState::Succeeded, "", 1_500)
        .await
        .expect("complete");
    let done = store.job(&job.id).await.expect("read").expect("the job");
    assert_eq!(done.lease_expires_at, None);
    let err = store
        .renew_lease(&job.id, first("agent-a"), 1_600, 9_000)
        .await;
    assert!(matches!(err, Err(Error::Conflict(_))), "{err:?}");
}

/// An agent lost before any step started: the job goes back to the queue
/// as attempt 2, and the lost agent's writes are refused from then on.
pub async fn lapsed_assigned_job_requeues(db: &TestDb) {
    let store = &db.store;
    let pool = store.create_pool("requeue").await.expect("pool");
    let job = store
        .insert_job(new_job(&pool.id, "lost", &["build", "test"]))
        .await
        .expect("job");
    let healthy = store
        .insert_job(new_job(&pool.id, "healthy", &["build"]))
        .await
        .expect("job");
    assert!(
        store
            .claim_job(&job.id, "agent-a", 100, 1_000)
            .await
            .expect("claim")
    );
    assert!(
        store
            .claim_job(&healthy.id, "agent-x", 100, FOREVER)
            .await
            .expect("claim")
    );
    store
        .append_log_batch(&job.id, first("agent-a"), 1, 1, b"fetching\n".to_vec())
        .await
        .expect("log while assigned");

    assert!(
        store
            .reap_lapsed_leases(1_000)
            .await
            .expect("reap")
            .is_empty(),
        "a lease ending now has not lapsed"
    );
    let reaped = store.reap_lapsed_leases(1_001).await.expect("reap");
    assert_eq!(
        reaped,
        vec![Reaped {
            job_id: job.id.clone(),
            pool_id: pool.id.clone(),
            agent_id: Some("agent-a".to_owned()),
            outcome: ReapOutcome::Requeued { attempt: 2 },
        }]
    );
    let requeued = store.job(&job.id).await.expect("get").expect("exists");
    assert_eq!(requeued.state, JobState::Queued);
    assert_eq!(requeued.attempt, 2);
    assert_eq!(
        (
            requeued.agent_id.as_deref(),
            requeued.assigned_at,
            requeued.lease_expires_at
        ),
        (None, None, None)
    );
    assert_eq!(
        requeued.message,
        "agent lost before the job started; requeued (attempt 2 of 3)"
    );
    assert!(requeued.steps.iter().all(|s| s.state == StepState::Pending));
    assert_eq!(
        requeued.log_sequence, 0,
        "the next attempt logs from line 1"
    );
    assert!(
        store
            .log_batches(&job.id, 0, 100)
            .await
            .expect("batches")
            .is_empty()
    );
    let queued: Vec<_> = store
        .queued_jobs(&pool.id, 10)
        .await
        .expect("queued")
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(queued, vec![job.id.clone()]);
    assert_eq!(
        store.job(&healthy.id).await.expect("get").map(|j| j.state),
        Some(JobState::Assigned),
        "a live lease is left alone"
    );
    assert!(
        store
            .reap_lapsed_leases(1_002)
            .await
            .expect("reap")
            .is_empty(),
        "a requeued job has no lease to lapse"
    );

    // agent B gets attempt 2; the lost agent A (attempt 1) is fenced off
    assert!(
        store
            .claim_job(&job.id, "agent-b", 2_000, FOREVER)
            .await
            .expect("claim again")
    );
    let b = holder("agent-b", 2);
    fenced(store, &job.id, first("agent-a")).await;
    fenced(store, &job.id, first("agent-b")).await;
    store
        .update_step(&job.id, b, 0, StepState::Running, None, 2_100)
        .await
        .expect("step as attempt 2");
    assert_eq!(
        store
            .append_log_batch(&job.id, b, 1, 2, b"l1\nl2\n".to_vec())
            .await
            .expect("log as attempt 2"),
        2
    );
    fenced(store, &job.id, first("agent-a")).await;
    store
        .complete_job(&job.id, b, JobState::Succeeded, "", 2_200)
        .await
        .expect("complete as attempt 2");
    let done = store.job(&job.id).await.expect("read").expect("the job");
    assert_eq!((done.state, done.attempt), (JobState::Succeeded, 2));
    assert_eq!(done.agent_id.as_deref(), Some("agent-b"));
    assert_eq!(done.log_sequence, 2);
    assert_eq!(done.message, "", "the requeue message is replaced");

    // the same agent handed the job again still cannot write as attempt 1
    let again = store
        .insert_job(new_job(&pool.id, "again", &["s"]))
        .await
        .expect("job");
    assert!(
        store
            .claim_job(&again.id, "agent-a", 0, 10)
            .await
            .expect("claim")
    );
    assert_eq!(store.reap_lapsed_leases(11).await.expect("reap").len(), 1);
    assert!(
        store
            .claim_job(&again.id, "agent-a", 20, FOREVER)
            .await
            .expect("claim")
    );
    fenced(store, &again.id, first("agent-a")).await;
    store
        .update_step(
            &again.id,
            holder("agent-a", 2),
            0,
            StepState::Running,
            None,
            30,
        )
        .await
        .expect("attempt 2 of the same agent");
}

/// Every agent write by `stale` is refused and changes nothing.
async fn fenced(store: &Store, job_id: &str, stale: ferry_store::Holder<'_>) {
    let before = store.job(job_id).await.expect("get").expect("exists");
    let err = store
        .update_step(job_id, stale, 1, StepState::Running, None, 5_000)
        .await;
    assert!(matches!(err, Err(Error::Conflict(_))), "{stale:?}: {err:?}");
    let err = store
        .append_log_batch(job_id, stale, 1, 1, b"stale\n".to_vec())
        .await;
    assert!(matches!(err, Err(Error::Conflict(_))), "{stale:?}: {err:?}");
    let err = store
        .append_log_batch(
            job_id,
            stale,
            before.log_sequence + 1,
            before.log_sequence + 1,
            b"stale\n".to_vec(),
        )
        .await;
    assert!(matches!(err, Err(Error::Conflict(_))), "{stale:?}: {err:?}");
    let err = store
        .complete_job(job_id, stale, JobState::Failed, "stale", 5_000)
        .await;
    assert!(matches!(err, Err(Error::Conflict(_))), "{stale:?}: {err:?}");
    let err = store.renew_lease(job_id, stale, 0, FOREVER).await;
    assert!(matches!(err, Err(Error::Conflict(_))), "{stale:?}: {err:?}");
    let after = store.job(job_id).await.expect("get").expect("exists");
    assert_eq!(before, after, "a stale holder changed the job");
}

async fn lease(store: &Store, id: &str) -> Option<i64> {
    store
        .job(id)
        .await
        .expect("get")
        .expect("exists")
        .lease_expires_at
}
