//! Writes made in batches: a job stored already assigned, log batches of
//! several jobs committed together, step reports and the job's end carried
//! by log batches, agent statuses recorded together.

use ferry_store::{
    AgentSeen, AgentStatus, Error, JobEnd, JobState, NewLogBatch, StepReport, StepState,
};

use crate::support::{FOREVER, TestDb, claimed_job, first, new_agent, new_job};

/// A job handed to a waiting agent is stored assigned to it, in one write:
/// nobody can claim it, its holder can run it, and it reads back as written.
pub async fn job_stored_assigned(db: &TestDb) {
    let store = &db.store;
    let pool = store.create_pool("assigned").await.expect("pool");
    let stored = store
        .insert_assigned_job(
            new_job(&pool.id, "handed", &["build", "test"]),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned()),
            "agent-a",
            100,
            FOREVER,
        )
        .await
        .expect("insert assigned");
    assert_eq!(stored.state, JobState::Assigned);
    assert_eq!(stored.agent_id.as_deref(), Some("agent-a"));
    assert_eq!(
        (stored.assigned_at, stored.lease_expires_at),
        (Some(100), Some(FOREVER))
    );
    let read = store.job(&stored.id).await.expect("read").expect("exists");
    assert_eq!(read, stored, "the answer is what was written");
    assert!(
        !store
            .claim_job(&stored.id, "agent-b", 101, FOREVER)
            .await
            .expect("claim"),
        "an assigned job cannot be claimed again"
    );
    assert!(
        store
            .queued_jobs(&pool.id, 10)
            .await
            .expect("queued")
            .is_empty()
    );
    // its holder runs it; the first step's start moves it to Running
    store
        .update_step(
            &stored.id,
            first("agent-a"),
            0,
            StepState::Running,
            None,
            110,
        )
        .await
        .expect("step 0 running");
    let running = store.job(&stored.id).await.expect("read").expect("exists");
    assert_eq!(
        (running.state, running.started_at),
        (JobState::Running, Some(110))
    );
    // a second start report keeps the first start time
    store
        .update_step(
            &stored.id,
            first("agent-a"),
            0,
            StepState::Running,
            None,
            120,
        )
        .await
        .expect("again");
    let again = store.job(&stored.id).await.expect("read").expect("exists");
    assert_eq!(again.started_at, Some(110));
    assert!(matches!(
        store
            .update_step(
                &stored.id,
                first("agent-b"),
                0,
                StepState::Running,
                None,
                130
            )
            .await,
        Err(Error::Conflict(_))
    ));
    // completing closes the running step and skips the pending one
    store
        .complete_job(&stored.id, first("agent-a"), JobState::Failed, "boom", 140)
        .await
        .expect("complete");
    let done = store.job(&stored.id).await.expect("read").expect("the job");
    assert_eq!(done.state, JobState::Failed);
    let steps: Vec<_> = done
        .steps
        .iter()
        .map(|step| (step.state, step.finished_at))
        .collect();
    assert_eq!(
        steps,
        [(StepState::Failed, Some(140)), (StepState::Skipped, None)]
    );
}

/// One group commit: each batch gets its own answer; a refused batch
/// stores nothing and does not stop the others.
pub async fn grouped_log_appends(db: &TestDb) {
    let store = &db.store;
    let pool = store.create_pool("grouped").await.expect("pool");
    let mut jobs = Vec::new();
    for agent in ["agent-a", "agent-b"] {
        jobs.push(claimed_job(store, &pool.id, &["s"], agent).await.id);
    }
    let batch = |job: usize, agent: &'static str, first_line: u64, last: u64| NewLogBatch {
        job_id: &jobs[job],
        holder: first(agent),
        first: first_line,
        last,
        lines: format!("{first_line}..{last}").into_bytes(),
        steps: Vec::new(),
        end: None,
    };
    let answers = store
        .append_log_batches(vec![
            batch(0, "agent-a", 1, 2),
            batch(1, "agent-b", 1, 5),
            batch(0, "agent-a", 3, 4), // follows the first, in order
            batch(1, "agent-a", 6, 6), // not its holder
            batch(0, "agent-a", 9, 9), // a gap
            batch(1, "agent-b", 6, 7),
        ])
        .await
        .expect("group");
    let answers = conflicts(answers);
    assert_eq!(answers, [Ok(2), Ok(5), Ok(4), Err(true), Err(true), Ok(7)]);
    assert_eq!(store.log_sequence(&jobs[0]).await.expect("a"), 4);
    assert_eq!(store.log_sequence(&jobs[1]).await.expect("b"), 7);
    let stored: Vec<_> = store
        .log_batches(&jobs[1], 1, 10)
        .await
        .expect("batches")
        .into_iter()
        .map(|batch| (batch.first, batch.last))
        .collect();
    assert_eq!(stored, [(1, 5), (6, 7)], "the refused batch left no trace");
}

/// A group's answers with each refusal reduced to whether it is a
/// `Conflict`.
fn conflicts(answers: Vec<ferry_store::Result<u64>>) -> Vec<Result<u64, bool>> {
    answers
        .into_iter()
        .map(|answer| answer.map_err(|error| matches!(error, Error::Conflict(_))))
        .collect()
}

/// Step reports ride on log batches: recorded with the lines, once (a
/// resent batch's reports are not applied again), and not at all for a
/// holder whose batch is refused; the first `Running` report starts the
/// job at its time.
pub async fn step_reports_on_log_batches(db: &TestDb) {
    let store = &db.store;
    let pool = store.create_pool("reported").await.expect("pool");
    let job = claimed_job(store, &pool.id, &["one", "two"], "agent-a").await;
    assert_eq!(
        store
            .log_holder(&job.id)
            .await
            .expect("holder")
            .map(|holder| holder.steps),
        Some(2)
    );
    let report = |index: u32, state: StepState, exit_code: Option<i32>, at: i64| StepReport {
        index,
        state,
        exit_code,
        at,
    };
    let batch =
        |agent: &'static str, first_line: u64, last: u64, steps: Vec<StepReport>| NewLogBatch {
            job_id: &job.id,
            holder: first(agent),
            first: first_line,
            last,
            lines: b"lines".to_vec(),
            steps,
            end: None,
        };
    let answers = store
        .append_log_batches(vec![
            // step 0 starts, runs and ends within one batch
            batch(
                "agent-a",
                1,
                3,
                vec![
                    report(0, StepState::Running, None, 1_000),
                    report(0, StepState::Succeeded, Some(0), 1_500),
                ],
            ),
            // a stale holder's report is refused with its lines
            batch(
                "agent-b",
                4,
                4,
                vec![report(1, StepState::Failed, Some(9), 1_600)],
            ),
            batch(
                "agent-a",
                4,
                4,
                vec![report(1, StepState::Running, None, 2_000)],
            ),
        ])
        .await
        .expect("group");
    let answers = conflicts(answers);
    assert_eq!(answers, [Ok(3), Err(true), Ok(4)]);
    let stored = store.job(&job.id).await.expect("read").expect("job");
    assert_eq!(stored.state, JobState::Running);
    assert_eq!(
        stored.started_at,
        Some(1_000),
        "started at the first report"
    );
    let steps: Vec<_> = stored
        .steps
        .iter()
        .map(|step| {
            (
                step.state,
                step.exit_code,
                step.started_at,
                step.finished_at,
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            (StepState::Succeeded, Some(0), Some(1_000), Some(1_500)),
            (StepState::Running, None, Some(2_000), None),
        ]
    );

    // Line `line` alone, reporting that step 1 failed at `at`; the answer.
    let fail_step_1 = async |line: u64, at: i64| {
        let batch = batch(
            "agent-a",
            line,
            line,
            vec![report(1, StepState::Failed, Some(3), at)],
        );
        let answers = store.append_log_batches(vec![batch]).await.expect("append");
        match answers.as_slice() {
            [Ok(acked)] => *acked,
            other => panic!("{other:?}"),
        }
    };
    // The batch resent (a reconnect) with a report that would change the
    // step: its lines are old, so nothing is written.
    assert_eq!(fail_step_1(4, 9_000).await, 4);
    let step = &store.job(&job.id).await.expect("read").expect("job").steps[1];
    assert_eq!((step.state, step.finished_at), (StepState::Running, None));

    // The step ends with the next new line.
    assert_eq!(fail_step_1(5, 2_500).await, 5);
    let stored = store.job(&job.id).await.expect("read").expect("job");
    let step = &stored.steps[1];
    assert_eq!(
        (
            step.state,
            step.exit_code,
            step.started_at,
            step.finished_at
        ),
        (StepState::Failed, Some(3), Some(2_000), Some(2_500))
    );
    assert_eq!(
        stored.started_at,
        Some(1_000),
        "a running job keeps its start"
    );

    // An agent whose clock is behind: the job starts no earlier than it was
    // assigned (the server's timeout counts from there).
    let late = claimed_job(store, &pool.id, &["only"], "agent-a").await;
    let assigned_at = store
        .job(&late.id)
        .await
        .expect("read")
        .and_then(|job| job.assigned_at)
        .expect("assigned");
    let answers = store
        .append_log_batches(vec![NewLogBatch {
            job_id: &late.id,
            holder: first("agent-a"),
            first: 1,
            last: 1,
            lines: b"line".to_vec(),
            steps: vec![report(
                0,
                StepState::Running,
                None,
                assigned_at - 60_000_000,
            )],
            end: None,
        }])
        .await
        .expect("append");
    assert!(matches!(answers.as_slice(), [Ok(1)]), "{answers:?}");
    let started = store.job(&late.id).await.expect("read").expect("job");
    assert_eq!(started.started_at, Some(assigned_at));
    assert_eq!(
        started.steps[0].started_at,
        Some(assigned_at - 60_000_000),
        "the step keeps the agent's time"
    );
}

/// Statuses recorded together; a sighting older than the stored one (from
/// another replica) does not overwrite it.
pub async fn agent_statuses_in_batches(db: &TestDb) {
    let store = &db.store;
    let pool = store.create_pool("statuses").await.expect("pool");
    let one = store
        .create_agent(new_agent(&pool.id, "one"), false)
        .await
        .expect("one");
    let two = store
        .create_agent(new_agent(&pool.id, "two"), false)
        .await
        .expect("two");
    let seen = |id: &str, status, job: Option<&str>, at| AgentSeen {
        id: id.to_owned(),
        status,
        current_job_id: job.map(str::to_owned),
        at,
    };
    let later = one.last_seen_at.max(two.last_seen_at) + 1_000_000;
    store
        .record_agent_statuses(&[
            seen(&one.id, AgentStatus::Busy, Some("job-1"), later),
            seen(&two.id, AgentStatus::Online, None, later),
            seen("gone", AgentStatus::Online, None, later),
        ])
        .await
        .expect("record");
    let read = |id: String| async move { store.agent(&id).await.expect("read").expect("agent") };
    let first_read = read(one.id.clone()).await;
    assert_eq!(
        (
            first_read.status,
            first_read.current_job_id.as_deref(),
            first_read.last_seen_at
        ),
        (AgentStatus::Busy, Some("job-1"), later)
    );
    assert_eq!(read(two.id.clone()).await.status, AgentStatus::Online);
    store
        .record_agent_statuses(&[seen(&one.id, AgentStatus::Online, None, later - 10)])
        .await
        .expect("stale");
    assert_eq!(
        read(one.id.clone()).await.status,
        AgentStatus::Busy,
        "an older sighting does not win"
    );
    // Replacing an agent names the one replaced, whose credentials go.
    let (again, replaced) = store
        .register_agent(new_agent(&pool.id, "one"), true)
        .await
        .expect("replace");
    assert_eq!(replaced, std::slice::from_ref(&one.id));
    assert_ne!(again.id, one.id);
    assert!(store.agent(&one.id).await.expect("read").is_none());
    let (_, none) = store
        .register_agent(new_agent(&pool.id, "three"), true)
        .await
        .expect("new name");
    assert!(none.is_empty());
}

/// Many writers at once (on SQLite they share group-commit batches): a
/// write refused after it already changed a row leaves nothing behind, the
/// others all commit, a write whose caller went away midway neither
/// commits half of itself nor blocks the writers after it, and whatever a
/// write reported as done is there for every reader.
pub async fn concurrent_writes_commit_alone(db: &TestDb) {
    let store = &db.store;
    let pool = store.create_pool("together").await.expect("pool");
    let job = store
        .insert_assigned_job(
            new_job(&pool.id, "held", &["build"]),
            None,
            "agent-a",
            100,
            FOREVER,
        )
        .await
        .expect("insert assigned");
    let mut writers = tokio::task::JoinSet::new();
    for index in 0..40 {
        let store = store.clone();
        let job_id = job.id.clone();
        writers.spawn(async move {
            match index % 4 {
                // moves the job to Running, then finds no step 7: refused
                0 => {
                    let refused = store
                        .update_step(&job_id, first("agent-a"), 7, StepState::Running, None, 200)
                        .await;
                    assert!(matches!(refused, Err(Error::NotFound(_))), "{refused:?}");
                    None
                }
                // the same name each time: one is created, the rest refused
                1 => store
                    .create_pool("contested")
                    .await
                    .ok()
                    .map(|pool| pool.name),
                _ => Some(
                    store
                        .create_pool(&format!("pool-{index}"))
                        .await
                        .expect("a pool of its own")
                        .name,
                ),
            }
        });
    }
    // writers whose callers give up at once, wherever they are
    for index in 0..10 {
        let store = store.clone();
        let abandoned = tokio::spawn(async move {
            let _ = store.create_pool(&format!("abandoned-{index}")).await;
        });
        tokio::task::yield_now().await;
        abandoned.abort();
    }
    let mut created = Vec::new();
    while let Some(joined) = writers.join_next().await {
        created.extend(joined.expect("writer"));
    }
    assert_eq!(
        created.iter().filter(|name| *name == "contested").count(),
        1,
        "exactly one writer created the contested pool"
    );
    assert_eq!(
        created.len(),
        21,
        "20 pools of their own and the contested one"
    );
    for name in &created {
        assert!(
            store.pool_by_name(name).await.expect("read").is_some(),
            "pool {name} was reported created but is not there"
        );
    }
    let after = store.job(&job.id).await.expect("read").expect("exists");
    assert_eq!(
        (after.state, after.started_at),
        (JobState::Assigned, None),
        "the refused step reports left the job as it was"
    );
    // the writer is free: a write after the abandoned ones commits
    let last = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        store.create_pool("after-the-abandoned"),
    )
    .await
    .expect("a write after abandoned writes does not hang")
    .expect("pool");
    assert!(
        store
            .pool_by_name(&last.name)
            .await
            .expect("read")
            .is_some()
    );
}

/// A log batch as (job, agent, first line, last line, step reports, end).
type Batch<'a> = (
    &'a str,
    &'static str,
    u64,
    u64,
    Vec<StepReport>,
    Option<JobEnd>,
);

/// The job's end rides on its last log batch: the job completes with the
/// batch, in the same write, only when every line up to it is stored and
/// the holder is current; a batch may carry the end alone; an end resent
/// after its lines were stored (an ack lost) still completes the job once.
pub async fn job_ends_on_log_batches(db: &TestDb) {
    let store = &db.store;
    let pool = store.create_pool("ended").await.expect("pool");
    let job = claimed_job(store, &pool.id, &["one", "two"], "agent-a").await;
    let end = |state: JobState, message: &str| JobEnd {
        state,
        message: message.to_owned(),
        at: 2_000,
    };
    let append = async |batches: Vec<Batch<'_>>| {
        let batches = batches
            .into_iter()
            .map(
                |(job_id, agent, first_line, last, steps, end)| NewLogBatch {
                    job_id,
                    holder: first(agent),
                    first: first_line,
                    last,
                    lines: if last >= first_line {
                        b"lines".to_vec()
                    } else {
                        Vec::new()
                    },
                    steps,
                    end,
                },
            )
            .collect();
        conflicts(store.append_log_batches(batches).await.expect("group"))
    };
    let job_id = job.id.as_str();
    let running = StepReport {
        index: 0,
        state: StepState::Running,
        exit_code: None,
        at: 1_000,
    };
    assert_eq!(
        append(vec![(job_id, "agent-a", 1, 1, vec![running], None)]).await,
        [Ok(1)]
    );
    let failed = end(JobState::Failed, "step two failed to start");
    let answers = append(vec![
        // a stale holder cannot end it
        (job_id, "agent-b", 2, 2, vec![], Some(failed.clone())),
        // nor can an end that leaves a gap
        (job_id, "agent-a", 4, 4, vec![], Some(failed.clone())),
        (
            job_id,
            "agent-a",
            2,
            3,
            vec![StepReport {
                index: 0,
                state: StepState::Succeeded,
                exit_code: Some(0),
                at: 1_500,
            }],
            Some(failed.clone()),
        ),
    ])
    .await;
    assert_eq!(answers, [Err(true), Err(true), Ok(3)]);
    let ended = store.job(job_id).await.expect("read").expect("job");
    assert_eq!(
        (
            ended.state,
            ended.message.as_str(),
            ended.started_at,
            ended.finished_at,
            ended.lease_expires_at,
            ended.log_sequence,
        ),
        (
            JobState::Failed,
            "step two failed to start",
            Some(1_000),
            Some(2_000),
            None,
            3
        )
    );
    let steps: Vec<_> = ended
        .steps
        .iter()
        .map(|step| (step.state, step.exit_code, step.finished_at))
        .collect();
    assert_eq!(
        steps,
        [
            (StepState::Succeeded, Some(0), Some(1_500)),
            (StepState::Skipped, None, None),
        ]
    );
    // Ended is final: neither the end again nor another line is taken.
    assert_eq!(
        append(vec![
            (job_id, "agent-a", 2, 3, vec![], Some(failed.clone())),
            (job_id, "agent-a", 4, 4, vec![], None),
        ])
        .await,
        [Err(true), Err(true)]
    );

    // The end alone, after the last line was acknowledged; a job that
    // never started completes too, its running step taking its state.
    let alone = claimed_job(store, &pool.id, &["one", "two"], "agent-a").await;
    let alone_id = alone.id.as_str();
    assert_eq!(
        append(vec![(alone_id, "agent-a", 1, 2, vec![running], None)]).await,
        [Ok(2)]
    );
    assert_eq!(
        append(vec![(
            alone_id,
            "agent-a",
            3,
            2,
            vec![],
            Some(end(JobState::Canceled, "canceled by the agent"))
        )])
        .await,
        [Ok(2)]
    );
    let canceled = store.job(alone_id).await.expect("read").expect("job");
    assert_eq!(canceled.state, JobState::Canceled);
    assert_eq!(canceled.log_sequence, 2);
    assert_eq!(
        canceled
            .steps
            .iter()
            .map(|step| step.state)
            .collect::<Vec<_>>(),
        [StepState::Canceled, StepState::Skipped]
    );

    // Lines stored, their ack lost: the agent resends them with the end.
    let resent = claimed_job(store, &pool.id, &["one"], "agent-a").await;
    let resent_id = resent.id.as_str();
    assert_eq!(
        append(vec![(resent_id, "agent-a", 1, 2, vec![running], None)]).await,
        [Ok(2)]
    );
    let succeeded = end(JobState::Succeeded, "");
    assert_eq!(
        append(vec![
            // an end before lines that are stored is refused
            (resent_id, "agent-a", 1, 1, vec![], Some(succeeded.clone())),
            (resent_id, "agent-a", 1, 2, vec![], Some(succeeded.clone())),
        ])
        .await,
        [Err(true), Ok(2)]
    );
    let done = store.job(resent_id).await.expect("read").expect("job");
    assert_eq!(
        (done.state, done.steps[0].state),
        (JobState::Succeeded, StepState::Succeeded),
        "the running step takes the job's state"
    );

    // Only a final state ends a job; an end without lines needs one.
    let open = claimed_job(store, &pool.id, &["one"], "agent-a").await;
    let no_lines = |end: Option<JobEnd>| NewLogBatch {
        job_id: &open.id,
        holder: first("agent-a"),
        first: 1,
        last: 0,
        lines: Vec::new(),
        steps: vec![],
        end,
    };
    let answers = store
        .append_log_batches(vec![
            no_lines(Some(end(JobState::Running, ""))),
            no_lines(None),
        ])
        .await
        .expect("group");
    assert!(
        matches!(
            answers.as_slice(),
            [Err(Error::Invalid(_)), Err(Error::Invalid(_))]
        ),
        "{answers:?}"
    );
    let still = store.job(&open.id).await.expect("read").expect("job");
    assert_eq!(still.state, JobState::Assigned);
}
