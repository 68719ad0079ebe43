//! Test databases on both backends, and small builders.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use ferry_store::testing::PostgresCluster;
use ferry_store::{Holder, Job, NewAgent, NewJob, Store};

pub const KEY: [u8; 32] = [0x42; 32];

/// A lease that never lapses in a test.
pub const FOREVER: i64 = 1 << 60;

/// The holder of a job claimed once by `agent_id`.
pub fn first(agent_id: &str) -> Holder<'_> {
    Holder {
        agent_id,
        attempt: 1,
    }
}

/// The holder of attempt `attempt` of a job claimed by `agent_id`.
pub fn holder(agent_id: &str, attempt: u32) -> Holder<'_> {
    Holder { agent_id, attempt }
}

/// A fresh, migrated database and a store on it. Fields drop in order: the
/// store closes before its directory or cluster goes away.
pub struct TestDb {
    pub store: Store,
    pub url: String,
    /// The SQLite database file, when the backend is SQLite.
    pub sqlite_path: Option<PathBuf>,
    _dir: Option<tempfile::TempDir>,
    _cluster: Option<Arc<PostgresCluster>>,
}

impl TestDb {
    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("ferry.db");
        let url = format!("sqlite://{}", path.display());
        let store = Store::connect(&url, KEY).await.expect("connect sqlite");
        assert_eq!(store.backend_name(), "sqlite");
        TestDb {
            store,
            url,
            sqlite_path: Some(path),
            _dir: Some(dir),
            _cluster: None,
        }
    }

    /// Panics (fails the test) when PostgreSQL cannot start.
    pub async fn postgres() -> TestDb {
        let cluster = tokio::task::spawn_blocking(PostgresCluster::shared)
            .await
            .expect("join")
            .expect("start throwaway postgresql");
        let url = cluster.fresh_database().expect("create database");
        let store = Store::connect(&url, KEY).await.expect("connect postgres");
        assert_eq!(store.backend_name(), "postgres");
        TestDb {
            store,
            url,
            sqlite_path: None,
            _dir: None,
            _cluster: Some(cluster),
        }
    }
}

pub fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

pub fn new_job(pool_id: &str, name: &str, steps: &[&str]) -> NewJob {
    NewJob {
        id: uuid::Uuid::now_v7().to_string(),
        pool_id: pool_id.to_owned(),
        name: name.to_owned(),
        project: "ferry".to_owned(),
        pipeline: "ci".to_owned(),
        demands: map(&[("os", "linux")]),
        secret_names: vec!["DEPLOY_KEY".to_owned()],
        step_names: steps.iter().map(|s| (*s).to_owned()).collect(),
        spec: format!("spec of {name}").into_bytes(),
        timeout_seconds: 3600,
        queued_at: 1_000,
        source_id: None,
        max_attempts: 0,
    }
}

/// A job with these steps, queued and claimed by `agent_id` (attempt 1,
/// a lease that never lapses).
pub async fn claimed_job(store: &Store, pool_id: &str, steps: &[&str], agent_id: &str) -> Job {
    let job = store
        .insert_job(new_job(pool_id, "claimed", steps))
        .await
        .expect("job");
    assert!(
        store
            .claim_job(&job.id, agent_id, 1, FOREVER)
            .await
            .expect("claim"),
        "the job is claimed"
    );
    job
}

pub fn new_agent(pool_id: &str, name: &str) -> NewAgent {
    NewAgent {
        pool_id: pool_id.to_owned(),
        name: name.to_owned(),
        public_key: vec![1, 2, 3, 4],
        capabilities: map(&[("os", "linux"), ("arch", "x86_64")]),
    }
}
