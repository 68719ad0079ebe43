//! Upgrading a database that already holds rows: the first four
//! migrations, old-schema rows, then `Store::connect` applies the rest.

use sea_orm::sea_query::{Alias, Query, SimpleExpr};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use sea_orm_migration::MigratorTrait;

use super::Migrator;
use crate::store::Store;
use crate::testing::PostgresCluster;
use crate::types::{AgentStatus, Holder, JobState};

/// The migrations that shipped before leases.
const SHIPPED: u32 = 4;
const KEY: [u8; 32] = [7; 32];

async fn insert(db: &DatabaseConnection, table: &str, row: Vec<(&str, SimpleExpr)>) {
    let (columns, values): (Vec<_>, Vec<_>) = row.into_iter().unzip();
    let mut statement = Query::insert();
    statement
        .into_table(Alias::new(table))
        .columns(columns.into_iter().map(Alias::new))
        .values(values)
        .expect("values");
    let built = db.get_database_backend().build(&statement);
    db.execute_raw(built).await.expect("insert old row");
}

async fn upgrade_keeps_rows(url: &str) {
    let db = Database::connect(url).await.expect("connect");
    Migrator::up(&db, Some(SHIPPED)).await.expect("old schema");
    insert(
        &db,
        "pools",
        vec![
            ("id", "p1".into()),
            ("name", "linux".into()),
            ("created_at", 1i64.into()),
        ],
    )
    .await;
    insert(
        &db,
        "agents",
        vec![
            ("id", "a1".into()),
            ("pool_id", "p1".into()),
            ("name", "runner".into()),
            ("public_key", vec![1u8, 2].into()),
            ("capabilities", "{}".into()),
            ("status", "busy".into()),
            ("current_job_id", "j1".into()),
            ("created_at", 1i64.into()),
            ("last_seen_at", 1i64.into()),
        ],
    )
    .await;
    insert(
        &db,
        "jobs",
        vec![
            ("id", "j1".into()),
            ("pool_id", "p1".into()),
            ("name", "old".into()),
            ("project", "ferry".into()),
            ("pipeline", "ci".into()),
            ("state", "running".into()),
            ("demands", "{}".into()),
            ("secret_names", "[]".into()),
            ("spec", vec![0u8; 40].into()),
            ("attempt", 1i32.into()),
            ("agent_id", "a1".into()),
            ("message", "".into()),
            ("timeout_seconds", 3600i64.into()),
            ("queued_at", 1i64.into()),
            ("assigned_at", 2i64.into()),
            ("started_at", 3i64.into()),
            ("log_sequence", 0i64.into()),
        ],
    )
    .await;
    db.close().await.expect("close");

    let store = Store::connect(url, KEY).await.expect("upgrade");
    let agent = store.agent("a1").await.expect("get").expect("exists");
    assert_eq!((agent.status, agent.disabled), (AgentStatus::Busy, false));
    let job = store.job("j1").await.expect("get").expect("exists");
    assert_eq!(job.state, JobState::Running);
    assert_eq!(job.max_attempts, 3);
    assert_eq!(
        (job.lease_expires_at, job.cancel_requested_at),
        (None, None)
    );
    assert_eq!((job.source_id, job.test_summary), (None, None));

    // a job claimed before leases is not reaped for want of one, and its
    // agent's first renewal gives it one
    assert!(
        store
            .reap_lapsed_leases(100)
            .await
            .expect("reap")
            .is_empty()
    );
    let holder = Holder {
        agent_id: "a1",
        attempt: 1,
    };
    let renewed = store
        .renew_lease("j1", holder, 100, 200)
        .await
        .expect("renew");
    assert_eq!(renewed.lease_expires_at, 200);
    assert_eq!(store.reap_lapsed_leases(201).await.expect("reap").len(), 1);
}

#[tokio::test]
async fn upgrade_sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("old.db").display());
    upgrade_keeps_rows(&url).await;
}

#[tokio::test]
async fn upgrade_postgres() {
    let cluster = tokio::task::spawn_blocking(PostgresCluster::shared)
        .await
        .expect("join")
        .expect("start throwaway postgresql");
    let url = cluster.fresh_database().expect("create database");
    upgrade_keeps_rows(&url).await;
}
