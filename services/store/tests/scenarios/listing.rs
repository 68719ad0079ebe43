//! Listing jobs.

use std::collections::BTreeSet;

use ferry_store::{JobFilter, JobState};

use crate::support::{FOREVER, TestDb, new_job};

/// Newest first, keyset pages, pool and state filters, steps included.
pub async fn list_jobs_pagination(db: &TestDb) {
    let store = &db.store;
    let p1 = store.create_pool("p1").await.expect("pool");
    let p2 = store.create_pool("p2").await.expect("pool");
    let mut all = Vec::new();
    let mut in_p1 = Vec::new();
    for n in 0..7 {
        let pool = if n % 2 == 0 { &p1 } else { &p2 };
        let job = store
            .insert_job(new_job(&pool.id, &format!("j{n}"), &["a", "b"]))
            .await
            .expect("job");
        if n % 2 == 0 {
            in_p1.push(job.id.clone());
        }
        all.push(job.id);
    }
    all.reverse();
    in_p1.reverse();

    let mut seen = Vec::new();
    let mut token = None;
    let mut pages = 0;
    loop {
        let filter = JobFilter {
            limit: 3,
            after_id: token.clone(),
            ..JobFilter::default()
        };
        let (jobs, next) = store.list_jobs(filter).await.expect("list");
        pages += 1;
        assert!(jobs.len() <= 3);
        assert!(
            jobs.iter().all(|j| j.steps.len() == 2),
            "steps are included"
        );
        seen.extend(jobs.into_iter().map(|j| j.id));
        match next {
            Some(next) => token = Some(next),
            None => break,
        }
        assert!(pages < 10, "pagination does not end");
    }
    assert_eq!(seen, all);
    assert_eq!(pages, 3);

    let only_p1 = JobFilter {
        pool_ids: Some(vec![p1.id.clone()]),
        ..JobFilter::default()
    };
    let (jobs, next) = store.list_jobs(only_p1).await.expect("list p1");
    assert_eq!(jobs.into_iter().map(|j| j.id).collect::<Vec<_>>(), in_p1);
    assert_eq!(next, None);
    let both = JobFilter {
        pool_ids: Some(vec![p1.id.clone(), p2.id.clone()]),
        limit: 100,
        ..JobFilter::default()
    };
    assert_eq!(store.list_jobs(both).await.expect("list").0.len(), 7);
    let none = JobFilter {
        pool_ids: Some(vec![]),
        ..JobFilter::default()
    };
    assert_eq!(store.list_jobs(none).await.expect("list"), (vec![], None));

    assert!(
        store
            .claim_job(&all[3], "agent", 5, FOREVER)
            .await
            .expect("claim")
    );
    let assigned = JobFilter {
        state: Some(JobState::Assigned),
        ..JobFilter::default()
    };
    let ids: BTreeSet<_> = store
        .list_jobs(assigned)
        .await
        .expect("list")
        .0
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(ids, BTreeSet::from([all[3].clone()]));
    let queued = JobFilter {
        state: Some(JobState::Queued),
        pool_ids: Some(vec![p2.id.clone()]),
        ..JobFilter::default()
    };
    let (jobs, _) = store.list_jobs(queued).await.expect("list");
    assert!(
        jobs.iter()
            .all(|j| j.state == JobState::Queued && j.pool_id == p2.id)
    );
}
