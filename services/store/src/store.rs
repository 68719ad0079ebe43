//! The `Store` handle: connecting, migrating, and helpers shared by the
//! query modules.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, EntityTrait,
    Statement, UpdateMany, UpdateResult,
};
use sea_orm_migration::MigratorTrait;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::crypto::SpecCipher;
use crate::error::{Error, Result};
use crate::handouts::HandedOut;
use crate::migration::Migrator;
use crate::writer::{Write, Writer};

/// How long a SQLite writer waits for the write lock before failing.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// SQLite in WAL mode allows one writer and many readers; the pool holds a
/// few connections so reads do not queue behind writes.
const SQLITE_MAX_CONNECTIONS: u32 = 8;
const POSTGRES_MAX_CONNECTIONS: u32 = 16;
/// A pooled PostgreSQL connection idle this long is pinged before use.
const POSTGRES_PING_AFTER_IDLE: Duration = Duration::from_secs(30);

// Lookups by a unique key use `.all(db).await?.pop()`, not `.one(db)`:
// sea-orm's `.one()` binds `LIMIT ?`, and SQLite (which may plan by a bound
// value) prepares such a statement again on every run.

/// A handle on the database. Cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: DatabaseConnection,
    backend: DbBackend,
    cipher: SpecCipher,
    /// SQLite's one writer: writers queue on a fair async lock (woken the
    /// moment the previous one is done, instead of sleeping in SQLite's
    /// busy handler while the database sits idle) and share group-commit
    /// batches. `None` on PostgreSQL, which locks rows.
    writer: Option<Writer>,
    /// Jobs just handed out, for their first log stream (see
    /// [`Store::remember_hand_outs`]).
    handed_out: OnceLock<HandedOut>,
}

/// How often the background task checkpoints SQLite's write-ahead log.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend_name())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Connects and applies pending migrations.
    ///
    /// `url` is `sqlite:///abs/path/ferry.db` (created if missing; WAL,
    /// `synchronous=NORMAL`, foreign keys on, 5 s busy timeout) or
    /// `postgres://...` / `postgresql://...`. `data_key` encrypts job specs
    /// at rest (XChaCha20-Poly1305, random 24-byte nonce stored with the
    /// ciphertext, the job id as associated data).
    pub async fn connect(url: &str, data_key: [u8; 32]) -> Result<Store> {
        let mut options = ConnectOptions::new(url);
        options.sqlx_logging(false);
        let backend = if url.starts_with("sqlite:") {
            // A connection to a local file does not drop: pinging it on
            // every checkout would cost a round trip to its thread per read.
            options
                .max_connections(SQLITE_MAX_CONNECTIONS)
                .min_connections(1)
                .test_before_acquire(false)
                .map_sqlx_sqlite_opts(|o| {
                    o.create_if_missing(true)
                        .journal_mode(SqliteJournalMode::Wal)
                        .synchronous(SqliteSynchronous::Normal)
                        .foreign_keys(true)
                        .busy_timeout(SQLITE_BUSY_TIMEOUT)
                        // checkpoints run in the background, never inside
                        // the request whose commit crossed the threshold
                        .pragma("wal_autocheckpoint", "0")
                });
            DbBackend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            // Ping only a connection idle long enough for the server, a
            // proxy or a firewall to have dropped it; a busy one answers its
            // queries without a round trip more per checkout.
            options
                .max_connections(POSTGRES_MAX_CONNECTIONS)
                .test_before_acquire_if_idle_for(POSTGRES_PING_AFTER_IDLE);
            DbBackend::Postgres
        } else {
            // never echo the url: it may hold a password
            return Err(Error::Invalid(
                "database url must start with sqlite: or postgres://".to_owned(),
            ));
        };
        let db = Database::connect(options).await?;
        Migrator::up(&db, None).await?;
        tracing::debug!(
            backend = backend_name(backend),
            "store connected and migrated"
        );
        let store = Store {
            inner: Arc::new(Inner {
                db,
                backend,
                cipher: SpecCipher::new(data_key),
                writer: (backend == DbBackend::Sqlite).then(Writer::start),
                handed_out: OnceLock::new(),
            }),
        };
        if backend == DbBackend::Sqlite {
            store.spawn_checkpointer();
        }
        Ok(store)
    }

    /// Checkpoints the SQLite write-ahead log every `CHECKPOINT_EVERY`
    /// (`PASSIVE`: copies what no reader still needs back into the
    /// database, without blocking writers or readers), for as long as the
    /// store lives. Automatic checkpoints are off: they ran inside whichever
    /// request's commit crossed 1000 pages, adding 9–11 ms to it (measured,
    /// BENCHMARKS.md).
    fn spawn_checkpointer(&self) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(CHECKPOINT_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let checkpoint =
                    Statement::from_string(DbBackend::Sqlite, "PRAGMA wal_checkpoint(PASSIVE)");
                if let Err(error) = inner.db.execute_raw(checkpoint).await {
                    tracing::warn!(%error, "could not checkpoint the SQLite write-ahead log");
                }
            }
        });
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend_name(&self) -> &'static str {
        backend_name(self.inner.backend)
    }

    pub(crate) fn db(&self) -> &DatabaseConnection {
        &self.inner.db
    }

    pub(crate) fn backend(&self) -> DbBackend {
        self.inner.backend
    }

    pub(crate) fn cipher(&self) -> &SpecCipher {
        &self.inner.cipher
    }

    /// From now on, remember each job's hand-out for its first log stream
    /// ([`Store::handed_out_to`], [`Store::log_stream_holder`]). Only for a
    /// process that runs dispatch and logs on SQLite (`ferryd all`): it is
    /// then the database's only writer. Does nothing on PostgreSQL.
    pub fn remember_hand_outs(&self) {
        if self.inner.backend == DbBackend::Sqlite {
            let _ = self.inner.handed_out.set(HandedOut::default());
        }
    }

    pub(crate) fn handed_out(&self) -> Option<&HandedOut> {
        self.inner.handed_out.get()
    }

    /// Reserves the hand-out slot of a job: call before the write that
    /// assigns it.
    pub(crate) fn reserve_hand_out(&self, job_id: &str) {
        if let Some(handed_out) = self.handed_out() {
            handed_out.reserve(job_id);
        }
    }

    /// Drops what was remembered of a job's hand-out: call once a write
    /// that may change what a log stream checks when it opens committed,
    /// before its event is published.
    pub(crate) fn forget_hand_out(&self, job_id: &str) {
        if let Some(handed_out) = self.handed_out() {
            handed_out.forget(job_id);
        }
    }

    /// Begins a write: statements run on the returned [`Write`] as on a
    /// transaction, and `commit` makes them durable. On SQLite it waits for
    /// the one write lock and joins the open group-commit batch (see
    /// `crate::writer`); on PostgreSQL it is a transaction of its own.
    pub(crate) async fn begin_write(&self) -> Result<Write> {
        Ok(Write::begin(&self.inner.db, self.inner.writer.as_ref()).await?)
    }

    /// One `UPDATE` as a write of its own (a single statement is atomic by
    /// itself): on PostgreSQL in autocommit, one round trip instead of
    /// `BEGIN`, the update and `COMMIT`; on SQLite in the group-commit
    /// batch, answered once the batch committed, as every write.
    pub(crate) async fn update_alone<E: EntityTrait>(
        &self,
        update: UpdateMany<E>,
    ) -> Result<UpdateResult> {
        if self.inner.writer.is_none() {
            return Ok(update.exec(self.db()).await?);
        }
        let txn = self.begin_write().await?;
        let updated = update.exec(&txn).await?;
        txn.commit().await?;
        Ok(updated)
    }
}

fn backend_name(backend: DbBackend) -> &'static str {
    match backend {
        DbBackend::Postgres => "postgres",
        _ => "sqlite",
    }
}

/// Microseconds since the Unix epoch, for rows whose methods take no `now`.
pub(crate) fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A fresh random id.
pub(crate) fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub(crate) fn to_json<T: Serialize>(value: &T, what: &str) -> Result<String> {
    serde_json::to_string(value).map_err(|_| Error::Invalid(format!("{what} cannot be encoded")))
}

pub(crate) fn from_json<T: DeserializeOwned>(text: &str, what: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|_| Error::Corrupt(format!("stored {what} is not valid")))
}

/// A stored enum value.
pub(crate) fn parse_state<T: std::str::FromStr<Err = crate::ParseStateError>>(
    text: &str,
) -> Result<T> {
    text.parse()
        .map_err(|e: crate::ParseStateError| Error::Corrupt(e.to_string()))
}

/// A stored non-negative counter.
pub(crate) fn to_u64(value: i64, what: &str) -> Result<u64> {
    u64::try_from(value).map_err(|_| Error::Corrupt(format!("stored {what} is negative")))
}

/// A stored non-negative small number.
pub(crate) fn to_u32(value: i32, what: &str) -> Result<u32> {
    u32::try_from(value).map_err(|_| Error::Corrupt(format!("stored {what} is negative")))
}

/// A caller's counter that must fit a signed 64-bit column.
pub(crate) fn to_i64(value: u64, what: &str) -> Result<i64> {
    i64::try_from(value).map_err(|_| Error::Invalid(format!("{what} is too large")))
}
