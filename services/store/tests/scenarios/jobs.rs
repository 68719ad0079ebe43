//! The job queue: lifecycle and racing claims.

use std::collections::BTreeMap;
use std::sync::Arc;

use ferry_store::{Error, JobState, StepState, Store};
use tokio::sync::Barrier;

use crate::support::{FOREVER, TestDb, first, new_job};

pub async fn job_lifecycle(db: &TestDb) {
    let store = &db.store;
    let pool = store.create_pool("linux").await.expect("pool");
    let other = store.create_pool("other").await.expect("pool");
    let steps = ["checkout", "build", "test"];
    let j1 = store
        .insert_job(new_job(&pool.id, "one", &steps))
        .await
        .expect("j1");
    store
        .insert_job(new_job(&other.id, "elsewhere", &steps))
        .await
        .expect("other");
    let j2 = store
        .insert_job(new_job(&pool.id, "two", &steps))
        .await
        .expect("j2");
    let j3 = store
        .insert_job(new_job(&pool.id, "three", &[]))
        .await
        .expect("j3");

    assert_eq!(j1.state, JobState::Queued);
    assert_eq!(j1.attempt, 1);
    assert_eq!(j1.log_sequence, 0);
    assert_eq!(j1.steps.len(), 3);
    assert!(j1.steps.iter().all(|s| s.state == StepState::Pending));
    assert_eq!(store.job(&j1.id).await.expect("get"), Some(j1.clone()));
    assert_eq!(store.job("nope").await.expect("get"), None);
    assert_eq!(store.job_spec(&j1.id).await.expect("spec"), b"spec of one");

    let dup = new_job(&pool.id, "dup", &[]);
    let mut dup2 = new_job(&pool.id, "dup2", &[]);
    dup2.id = dup.id.clone();
    store.insert_job(dup).await.expect("dup");
    let err = store.insert_job(dup2).await;
    assert!(matches!(err, Err(Error::AlreadyExists(_))), "{err:?}");
    let err = store.insert_job(new_job("no-such-pool", "x", &["a"])).await;
    assert!(matches!(err, Err(Error::NotFound(_))), "{err:?}");

    // FIFO by id, only this pool, limited
    let queued: Vec<_> = queued_ids(store, &pool.id, 10).await;
    assert_eq!(queued[..3], [j1.id.clone(), j2.id.clone(), j3.id.clone()]);
    assert_eq!(
        queued_ids(store, &pool.id, 2).await,
        vec![j1.id.clone(), j2.id.clone()]
    );

    assert!(
        store
            .claim_job(&j1.id, "agent-a", 50, FOREVER)
            .await
            .expect("claim")
    );
    assert!(
        !store
            .claim_job(&j1.id, "agent-b", 51, FOREVER)
            .await
            .expect("second claim")
    );
    assert!(
        !store
            .claim_job("nope", "agent-b", 51, FOREVER)
            .await
            .expect("missing")
    );
    assert_eq!(
        queued_ids(store, &pool.id, 2).await,
        vec![j2.id.clone(), j3.id.clone()]
    );
    let assigned = store.job(&j1.id).await.expect("get").expect("exists");
    assert_eq!(assigned.state, JobState::Assigned);
    assert_eq!(assigned.agent_id.as_deref(), Some("agent-a"));
    assert_eq!(assigned.assigned_at, Some(50));

    // release: only by the holder, only while assigned
    store
        .release_job(&j1.id, "agent-b")
        .await
        .expect("release by other");
    assert_eq!(job_state(store, &j1.id).await, JobState::Assigned);
    store.release_job(&j1.id, "agent-a").await.expect("release");
    let released = store.job(&j1.id).await.expect("get").expect("exists");
    assert_eq!(
        (released.state, released.agent_id, released.assigned_at),
        (JobState::Queued, None, None)
    );
    assert!(
        store
            .claim_job(&j1.id, "agent-a", 60, FOREVER)
            .await
            .expect("claim again")
    );

    // step progress
    let err = store
        .update_step(&j1.id, first("agent-b"), 0, StepState::Running, None, 70)
        .await;
    assert!(matches!(err, Err(Error::Conflict(_))), "{err:?}");
    let err = store
        .update_step(&j2.id, first("agent-a"), 0, StepState::Running, None, 70)
        .await;
    assert!(matches!(err, Err(Error::Conflict(_))), "{err:?}");
    let err = store
        .update_step("nope", first("agent-a"), 0, StepState::Running, None, 70)
        .await;
    assert!(matches!(err, Err(Error::NotFound(_))), "{err:?}");
    assert_eq!(
        job_state(store, &j1.id).await,
        JobState::Assigned,
        "failed updates change nothing"
    );

    store
        .update_step(&j1.id, first("agent-a"), 0, StepState::Running, None, 100)
        .await
        .expect("step 0 running");
    let running = store.job(&j1.id).await.expect("get").expect("exists");
    assert_eq!(
        (running.state, running.started_at),
        (JobState::Running, Some(100))
    );
    assert_eq!(
        (running.steps[0].state, running.steps[0].started_at),
        (StepState::Running, Some(100))
    );
    // a repeated report keeps the first start time
    store
        .update_step(&j1.id, first("agent-a"), 0, StepState::Running, None, 101)
        .await
        .expect("repeat");
    store
        .update_step(
            &j1.id,
            first("agent-a"),
            0,
            StepState::Succeeded,
            Some(0),
            110,
        )
        .await
        .expect("step 0 done");
    store
        .update_step(&j1.id, first("agent-a"), 1, StepState::Running, None, 120)
        .await
        .expect("step 1 running");
    let err = store
        .update_step(&j1.id, first("agent-a"), 9, StepState::Running, None, 120)
        .await;
    assert!(matches!(err, Err(Error::NotFound(_))), "{err:?}");
    let mid = store.job(&j1.id).await.expect("get").expect("exists");
    assert_eq!(
        mid.started_at,
        Some(100),
        "job start time is the first step's"
    );
    assert_eq!(mid.steps[0].started_at, Some(100));
    assert_eq!(
        (mid.steps[0].exit_code, mid.steps[0].finished_at),
        (Some(0), Some(110))
    );

    // completion
    let err = store
        .complete_job(&j1.id, first("agent-a"), JobState::Running, "", 130)
        .await;
    assert!(matches!(err, Err(Error::Invalid(_))), "{err:?}");
    let err = store
        .complete_job(&j1.id, first("agent-b"), JobState::Failed, "", 130)
        .await;
    assert!(matches!(err, Err(Error::Conflict(_))), "{err:?}");
    let err = store
        .complete_job("nope", first("agent-a"), JobState::Failed, "", 130)
        .await;
    assert!(matches!(err, Err(Error::NotFound(_))), "{err:?}");
    store
        .complete_job(
            &j1.id,
            first("agent-a"),
            JobState::Failed,
            "step build exited 2",
            130,
        )
        .await
        .expect("complete");
    let done = store.job(&j1.id).await.expect("read").expect("the job");
    assert_eq!(done.state, JobState::Failed);
    assert_eq!(done.finished_at, Some(130));
    assert_eq!(done.message, "step build exited 2");
    let states: Vec<_> = done.steps.iter().map(|s| s.state).collect();
    assert_eq!(
        states,
        vec![StepState::Succeeded, StepState::Failed, StepState::Skipped]
    );
    assert_eq!(done.steps[1].finished_at, Some(130));
    assert_eq!(store.job(&j1.id).await.expect("get"), Some(done));

    let err = store
        .complete_job(&j1.id, first("agent-a"), JobState::Succeeded, "", 140)
        .await;
    assert!(matches!(err, Err(Error::Conflict(_))), "{err:?}");
    let err = store
        .update_step(&j1.id, first("agent-a"), 2, StepState::Running, None, 140)
        .await;
    assert!(matches!(err, Err(Error::Conflict(_))), "{err:?}");
    assert!(
        !store
            .claim_job(&j1.id, "agent-c", 150, FOREVER)
            .await
            .expect("claim finished")
    );

    // a job completed straight from assigned, with no steps
    assert!(
        store
            .claim_job(&j3.id, "agent-c", 200, FOREVER)
            .await
            .expect("claim")
    );
    store
        .complete_job(
            &j3.id,
            first("agent-c"),
            JobState::Canceled,
            "canceled by alice",
            210,
        )
        .await
        .expect("cancel");
    let canceled = store.job(&j3.id).await.expect("read").expect("the job");
    assert_eq!(
        (canceled.state, canceled.started_at),
        (JobState::Canceled, None)
    );
}

/// 20 tasks race to claim 10 jobs: every job is claimed exactly once.
pub async fn concurrent_claims(db: &TestDb) {
    let store = &db.store;
    let pool = store.create_pool("race").await.expect("pool");
    let mut ids = Vec::new();
    for n in 0..10 {
        ids.push(
            store
                .insert_job(new_job(&pool.id, &format!("job{n}"), &["s"]))
                .await
                .expect("job")
                .id,
        );
    }
    let ids = Arc::new(ids);
    let barrier = Arc::new(Barrier::new(20));
    let mut tasks = Vec::new();
    for agent in 0..20usize {
        let (store, ids, barrier) = (store.clone(), ids.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let agent_id = format!("agent-{agent}");
            barrier.wait().await;
            let mut won = Vec::new();
            for k in 0..ids.len() {
                let job_id = &ids[(agent + k) % ids.len()];
                if store
                    .claim_job(job_id, &agent_id, 1, FOREVER)
                    .await
                    .expect("claim")
                {
                    won.push((job_id.clone(), agent_id.clone()));
                }
            }
            won
        }));
    }
    let mut winners: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for task in tasks {
        for (job_id, agent_id) in task.await.expect("task") {
            winners.entry(job_id).or_default().push(agent_id);
        }
    }
    assert_eq!(winners.len(), 10, "every job claimed: {winners:?}");
    for (job_id, agents) in &winners {
        assert_eq!(agents.len(), 1, "job {job_id} claimed by {agents:?}");
        let job = store.job(job_id).await.expect("get").expect("exists");
        assert_eq!(job.state, JobState::Assigned);
        assert_eq!(job.agent_id.as_ref(), Some(&agents[0]));
    }
    assert!(
        store
            .queued_jobs(&pool.id, 10)
            .await
            .expect("queued")
            .is_empty()
    );
}
async fn queued_ids(store: &Store, pool_id: &str, limit: u64) -> Vec<String> {
    store
        .queued_jobs(pool_id, limit)
        .await
        .expect("queued")
        .into_iter()
        .map(|j| j.id)
        .collect()
}

async fn job_state(store: &Store, id: &str) -> JobState {
    store.job(id).await.expect("get").expect("exists").state
}
