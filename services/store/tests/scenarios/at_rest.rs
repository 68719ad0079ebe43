//! Job specs are encrypted at rest.

use ferry_store::{Error, Store};
use sea_orm::{ConnectionTrait, Statement};

use crate::support::{TestDb, new_job};

const MARKER: &str = "ferry-test-marker-5eb1c0-hunter2";
const VISIBLE: &str = "ferry-visible-job-name-7d3a";

pub async fn spec_encrypted_at_rest(db: &TestDb) {
    let store = &db.store;
    let pool = store.create_pool("secret").await.expect("pool");
    let mut new = new_job(&pool.id, VISIBLE, &["deploy"]);
    new.spec = format!("{{\"env\":{{\"TOKEN\":\"{MARKER}\"}}}}").into_bytes();
    let plaintext = new.spec.clone();
    let job = store.insert_job(new).await.expect("insert");
    assert_eq!(store.job_spec(&job.id).await.expect("spec"), plaintext);
    let err = store.job_spec("nope").await;
    assert!(matches!(err, Err(Error::NotFound(_))), "{err:?}");

    // the stored column is nonce || ciphertext || tag, without the marker
    let raw = sea_orm::Database::connect(db.url.as_str())
        .await
        .expect("raw connection");
    let sql = format!("SELECT spec FROM jobs WHERE id = '{}'", job.id);
    let row = raw
        .query_one_raw(Statement::from_string(raw.get_database_backend(), sql))
        .await
        .expect("select spec")
        .expect("row");
    let stored: Vec<u8> = row.try_get_by_index(0).expect("spec column");
    assert_eq!(stored.len(), 24 + plaintext.len() + 16);
    assert!(
        !contains(&stored, MARKER.as_bytes()),
        "the spec column holds the plaintext"
    );
    if db.sqlite_path.is_some() {
        // WAL is a property of the database file, so any connection sees it
        let row = raw
            .query_one_raw(Statement::from_string(
                raw.get_database_backend(),
                "PRAGMA journal_mode",
            ))
            .await
            .expect("pragma")
            .expect("row");
        let mode: String = row.try_get_by_index(0).expect("journal mode");
        assert_eq!(mode, "wal");
    }
    raw.close().await.expect("close");

    if let Some(path) = &db.sqlite_path {
        let mut raw = std::fs::read(path).expect("read database file");
        let wal = path.with_file_name(format!(
            "{}-wal",
            path.file_name()
                .and_then(|n| n.to_str())
                .expect("file name")
        ));
        if let Ok(bytes) = std::fs::read(&wal) {
            raw.extend_from_slice(&bytes);
        }
        // the scan can see row data at all: the job name is stored in clear
        assert!(
            contains(&raw, VISIBLE.as_bytes()),
            "job name not found in the database files"
        );
        assert!(
            !contains(&raw, MARKER.as_bytes()),
            "the spec is stored in clear"
        );
    }

    let wrong = Store::connect(&db.url, [0x24; 32])
        .await
        .expect("connect with another key");
    let err = wrong.job_spec(&job.id).await;
    assert!(matches!(err, Err(Error::Corrupt(_))), "{err:?}");
    if let Err(err) = err {
        assert!(!err.to_string().contains(MARKER));
    }
}
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
