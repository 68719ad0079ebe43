//! The lapsed-lease reaper: failing, exhausted attempts, and racing
//! reapers.

use std::collections::BTreeMap;
use std::sync::Arc;

use ferry_store::{Error, JobState, ReapOutcome, StepState};
use tokio::sync::Barrier;

use crate::support::{TestDb, first, new_job};

/// An agent lost while a step ran: the job fails.
pub async fn lapsed_running_job_fails(db: &TestDb) {
    let store = &db.store;
    let pool = store.create_pool("lost").await.expect("pool");
    let job = store
        .insert_job(new_job(&pool.id, "lost", &["a", "b", "c"]))
        .await
        .expect("job");
    assert!(
        store
            .claim_job(&job.id, "agent-a", 100, 1_000)
            .await
            .expect("claim")
    );
    let a = first("agent-a");
    store
        .update_step(&job.id, a, 0, StepState::Running, None, 200)
        .await
        .expect("step");
    store
        .update_step(&job.id, a, 0, StepState::Succeeded, Some(0), 300)
        .await
        .expect("step");
    store
        .update_step(&job.id, a, 1, StepState::Running, None, 400)
        .await
        .expect("step");

    let reaped = store.reap_lapsed_leases(1_001).await.expect("reap");
    assert_eq!(reaped.len(), 1);
    assert_eq!(reaped[0].outcome, ReapOutcome::Failed);
    assert_eq!(reaped[0].agent_id.as_deref(), Some("agent-a"));
    let failed = store.job(&job.id).await.expect("get").expect("exists");
    assert_eq!(failed.state, JobState::Failed);
    assert_eq!(failed.attempt, 1);
    assert_eq!(failed.finished_at, Some(1_001));
    assert_eq!(failed.lease_expires_at, None);
    assert_eq!(failed.message, "agent lost: its lease lapsed");
    let states: Vec<_> = failed.steps.iter().map(|s| s.state).collect();
    assert_eq!(
        states,
        vec![StepState::Succeeded, StepState::Failed, StepState::Skipped]
    );
    assert_eq!(failed.steps[1].finished_at, Some(1_001));
    let err = store
        .complete_job(&job.id, a, JobState::Succeeded, "", 1_100)
        .await;
    assert!(matches!(err, Err(Error::Conflict(_))), "{err:?}");
    assert!(
        store
            .reap_lapsed_leases(5_000)
            .await
            .expect("reap")
            .is_empty()
    );
}

/// A lost agent whose job was being canceled: the job is canceled, not
/// requeued, even though no step started.
pub async fn lapsed_cancel_requested_job_cancels(db: &TestDb) {
    let store = &db.store;
    let pool = store.create_pool("lost-cancel").await.expect("pool");
    let job = store
        .insert_job(new_job(&pool.id, "lost", &["a"]))
        .await
        .expect("job");
    assert!(
        store
            .claim_job(&job.id, "agent-a", 100, 1_000)
            .await
            .expect("claim")
    );
    store
        .request_cancel(&job.id, "stop", 500)
        .await
        .expect("cancel");
    let reaped = store.reap_lapsed_leases(1_001).await.expect("reap");
    assert_eq!(reaped.len(), 1);
    assert_eq!(reaped[0].outcome, ReapOutcome::Canceled);
    let canceled = store.job(&job.id).await.expect("get").expect("exists");
    assert_eq!((canceled.state, canceled.attempt), (JobState::Canceled, 1));
    assert_eq!(canceled.message, "canceled; the agent did not confirm");
    assert_eq!(canceled.steps[0].state, StepState::Skipped);
    assert!(
        store
            .queued_jobs(&pool.id, 10)
            .await
            .expect("queued")
            .is_empty()
    );
}

/// A job lost on its last attempt fails instead of going back.
pub async fn max_attempts_exhausted(db: &TestDb) {
    let store = &db.store;
    let pool = store.create_pool("attempts").await.expect("pool");
    let mut twice = new_job(&pool.id, "twice", &["a"]);
    twice.max_attempts = 2;
    let twice = store.insert_job(twice).await.expect("job");
    assert_eq!(twice.max_attempts, 2);
    let mut once = new_job(&pool.id, "once", &["a"]);
    once.max_attempts = 1;
    let once = store.insert_job(once).await.expect("job");

    assert!(
        store
            .claim_job(&twice.id, "agent-a", 0, 100)
            .await
            .expect("claim")
    );
    assert!(
        store
            .claim_job(&once.id, "agent-a", 0, 100)
            .await
            .expect("claim")
    );
    let mut reaped = store.reap_lapsed_leases(101).await.expect("reap");
    reaped.sort_by_key(|r| r.job_id == once.id);
    let outcomes: Vec<_> = reaped.iter().map(|r| r.outcome).collect();
    assert_eq!(
        outcomes,
        vec![ReapOutcome::Requeued { attempt: 2 }, ReapOutcome::Failed]
    );

    assert!(
        store
            .claim_job(&twice.id, "agent-b", 150, 200)
            .await
            .expect("claim")
    );
    let reaped = store.reap_lapsed_leases(201).await.expect("reap");
    assert_eq!(reaped.len(), 1);
    assert_eq!(reaped[0].outcome, ReapOutcome::Failed);
    assert_eq!(reaped[0].agent_id.as_deref(), Some("agent-b"));
    for id in [&twice.id, &once.id] {
        let job = store.job(id).await.expect("get").expect("exists");
        assert_eq!(job.state, JobState::Failed);
        assert_eq!(job.message, "agent lost: its lease lapsed");
        assert_eq!(job.steps[0].state, StepState::Skipped);
    }
    assert_eq!(
        store.job(&twice.id).await.expect("get").map(|j| j.attempt),
        Some(2)
    );
}

/// Two reapers at once (two replicas): each job is changed once.
pub async fn concurrent_reapers(db: &TestDb) {
    let store = &db.store;
    let pool = store.create_pool("reapers").await.expect("pool");
    let mut expected = BTreeMap::new();
    for n in 0..16 {
        let job = store
            .insert_job(new_job(&pool.id, &format!("job{n}"), &["s"]))
            .await
            .expect("job");
        let agent = format!("agent-{n}");
        assert!(
            store
                .claim_job(&job.id, &agent, 0, 1_000)
                .await
                .expect("claim")
        );
        let outcome = if n % 2 == 0 {
            store
                .update_step(&job.id, first(&agent), 0, StepState::Running, None, 10)
                .await
                .expect("step");
            ReapOutcome::Failed
        } else {
            ReapOutcome::Requeued { attempt: 2 }
        };
        expected.insert(job.id, outcome);
    }
    let barrier = Arc::new(Barrier::new(2));
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let (store, barrier) = (store.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store.reap_lapsed_leases(2_000).await.expect("reap")
        }));
    }
    let mut seen: BTreeMap<String, Vec<ReapOutcome>> = BTreeMap::new();
    for task in tasks {
        for reaped in task.await.expect("task") {
            seen.entry(reaped.job_id).or_default().push(reaped.outcome);
        }
    }
    let once: BTreeMap<_, _> = seen
        .iter()
        .filter(|(_, outcomes)| outcomes.len() == 1)
        .map(|(id, outcomes)| (id.clone(), outcomes[0]))
        .collect();
    assert_eq!(once.len(), seen.len(), "a job was reaped twice: {seen:?}");
    assert_eq!(once, expected);
    for (id, outcome) in &expected {
        let job = store.job(id).await.expect("get").expect("exists");
        match outcome {
            ReapOutcome::Requeued { .. } => {
                assert_eq!((job.state, job.attempt), (JobState::Queued, 2));
            }
            _ => assert_eq!((job.state, job.attempt), (JobState::Failed, 1)),
        }
    }
}
