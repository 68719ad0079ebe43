//! Sources, artifacts and test results.

use ferry_store::{Artifact, Error, JobState, Source, TestSummary};

use crate::support::{FOREVER, TestDb, first, holder, new_job};

pub async fn sources_and_artifacts(db: &TestDb) {
    let store = &db.store;
    let pool = store.create_pool("resources").await.expect("pool");
    let source = Source {
        id: uuid::Uuid::new_v4().to_string(),
        pool_id: pool.id.clone(),
        name: "src.tar.gz".to_owned(),
        size: 5_000_000_000,
        sha256: "ab".repeat(32),
        created_at: 42,
    };
    store.insert_source(source.clone()).await.expect("source");
    assert_eq!(
        store.source(&source.id).await.expect("get"),
        Some(source.clone())
    );
    assert_eq!(store.source("nope").await.expect("get"), None);
    let err = store.insert_source(source.clone()).await;
    assert!(matches!(err, Err(Error::AlreadyExists(_))), "{err:?}");
    let orphan = Source {
        id: uuid::Uuid::new_v4().to_string(),
        pool_id: "no-such-pool".to_owned(),
        ..source.clone()
    };
    let err = store.insert_source(orphan).await;
    assert!(matches!(err, Err(Error::NotFound(_))), "{err:?}");

    let mut new = new_job(&pool.id, "built", &["build"]);
    new.source_id = Some(source.id.clone());
    let job = store.insert_job(new).await.expect("job");
    assert_eq!(job.source_id.as_deref(), Some(source.id.as_str()));
    assert_eq!(store.job(&job.id).await.expect("get"), Some(job.clone()));
    let bare = store
        .insert_job(new_job(&pool.id, "bare", &[]))
        .await
        .expect("job");
    assert_eq!(bare.source_id, None);

    let artifact = |name: &str, size: u64| Artifact {
        job_id: job.id.clone(),
        name: name.to_owned(),
        size,
        sha256: "cd".repeat(32),
        created_at: 7,
    };
    store
        .insert_artifact(artifact("target/app", 3_000_000_000))
        .await
        .expect("artifact");
    store
        .insert_artifact(artifact("report.html", 1_000))
        .await
        .expect("artifact");
    store
        .insert_artifact(artifact("docs/index.html", 24))
        .await
        .expect("artifact");
    let err = store.insert_artifact(artifact("report.html", 5)).await;
    assert!(matches!(err, Err(Error::AlreadyExists(_))), "{err:?}");
    let err = store
        .insert_artifact(Artifact {
            job_id: "nope".to_owned(),
            ..artifact("x", 1)
        })
        .await;
    assert!(matches!(err, Err(Error::NotFound(_))), "{err:?}");

    let names: Vec<_> = store
        .artifacts(&job.id)
        .await
        .expect("list")
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(names, ["docs/index.html", "report.html", "target/app"]);
    assert_eq!(
        store.artifact(&job.id, "report.html").await.expect("get"),
        Some(artifact("report.html", 1_000))
    );
    assert_eq!(store.artifact(&job.id, "missing").await.expect("get"), None);
    assert_eq!(
        store.artifact(&bare.id, "report.html").await.expect("get"),
        None
    );
    assert_eq!(
        store.artifact_bytes(&job.id).await.expect("bytes"),
        3_000_001_024
    );
    assert_eq!(store.artifact_bytes(&bare.id).await.expect("bytes"), 0);
    assert!(store.artifacts(&bare.id).await.expect("list").is_empty());
}

pub async fn test_results(db: &TestDb) {
    let store = &db.store;
    let pool = store.create_pool("tests").await.expect("pool");
    let job = store
        .insert_job(new_job(&pool.id, "tested", &["test"]))
        .await
        .expect("job");
    let file = TestSummary {
        total: 3,
        passed: 1,
        failed: 1,
        skipped: 1,
        failed_tests: vec!["unit.adds".to_owned()],
        files: 1,
    };
    let err = store
        .add_test_results(&job.id, first("agent-a"), &file)
        .await;
    assert!(
        matches!(err, Err(Error::Conflict(_))),
        "a queued job takes no results: {err:?}"
    );
    assert!(
        store
            .claim_job(&job.id, "agent-a", 1, FOREVER)
            .await
            .expect("claim")
    );
    assert_eq!(
        store
            .job(&job.id)
            .await
            .expect("get")
            .and_then(|j| j.test_summary),
        None
    );

    let a = first("agent-a");
    assert_eq!(
        store
            .add_test_results(&job.id, a, &file)
            .await
            .expect("add"),
        file
    );
    let big = TestSummary {
        total: 160,
        passed: 10,
        failed: 150,
        skipped: 0,
        failed_tests: (0..150).map(|n| format!("it.case{n}")).collect(),
        files: 1,
    };
    let sum = store.add_test_results(&job.id, a, &big).await.expect("add");
    assert_eq!(
        (sum.total, sum.passed, sum.failed, sum.skipped, sum.files),
        (163, 11, 151, 1, 2)
    );
    assert_eq!(sum.failed_tests.len(), 100);
    assert_eq!(sum.failed_tests[0], "unit.adds");
    assert_eq!(sum.failed_tests[1], "it.case0");
    assert_eq!(sum.failed_tests[99], "it.case98");
    assert_eq!(
        store
            .job(&job.id)
            .await
            .expect("get")
            .and_then(|j| j.test_summary),
        Some(sum.clone())
    );

    for stale in [first("agent-b"), holder("agent-a", 2)] {
        let err = store.add_test_results(&job.id, stale, &file).await;
        assert!(matches!(err, Err(Error::Conflict(_))), "{stale:?}: {err:?}");
    }
    let err = store.add_test_results("nope", a, &file).await;
    assert!(matches!(err, Err(Error::NotFound(_))), "{err:?}");
    store
        .complete_job(&job.id, a, JobState::Succeeded, "", 2)
        .await
        .expect("complete");
    let done = store.job(&job.id).await.expect("read").expect("the job");
    assert_eq!(
        done.test_summary,
        Some(sum.clone()),
        "refusals change nothing"
    );
    let err = store.add_test_results(&job.id, a, &file).await;
    assert!(
        matches!(err, Err(Error::Conflict(_))),
        "a finished job takes no results: {err:?}"
    );
}
