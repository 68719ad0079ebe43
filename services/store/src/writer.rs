//! Writing transactions, and SQLite's group commit.
//!
//! SQLite has one writer. Each write used to be a transaction of its own
//! (`BEGIN IMMEDIATE` … `COMMIT`), so every job paid several commits, each
//! writing its pages to the write-ahead log, one after the other behind the
//! one write lock. Now the writes that queue for the lock share one *batch*
//! transaction: each runs inside a savepoint of its own (so one write
//! failing or being abandoned undoes only that write), and a committer task
//! that queues for the lock like any writer commits the batch once every
//! write ahead of it has run. Whoever wrote waits for that commit before it
//! answers, so an acknowledged write is a committed write, as before.
//!
//! On PostgreSQL, which locks rows and group-commits its own log flushes,
//! each write is simply its own transaction.

use std::sync::{Arc, Weak};

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, ExecResult,
    QueryResult, SqliteTransactionMode, Statement, TransactionOptions, TransactionTrait,
};
use tokio::sync::{Mutex, Notify, OwnedMutexGuard, watch};

/// The savepoint each write of a batch runs in. A write that succeeds
/// leaves its savepoint open; the next write releases it as it opens its
/// own, in the same round trip to SQLite's thread, and the commit releases
/// the last one. So finishing a write costs no round trip, and there is
/// never more than one savepoint open.
const SAVEPOINT: &str = "SAVEPOINT ferry_write";
const RELEASE: &str = "RELEASE ferry_write";
const UNDO: &str = "ROLLBACK TO ferry_write";

/// How a batch ended, as seen by each write in it.
type Outcome = Result<(), Arc<str>>;

/// SQLite's writer: the lock writers queue on (fair: first come, first
/// served) and the batch they write into.
pub(crate) struct Writer {
    state: Arc<Mutex<Batching>>,
    /// Woken whenever a write ends; the committer then queues for the lock.
    ended: Arc<Notify>,
}

#[derive(Default)]
struct Batching {
    open: Option<Batch>,
}

struct Batch {
    txn: DatabaseTransaction,
    /// The last write's savepoint is still open.
    savepoint_open: bool,
    /// The last write was abandoned (an error, or its caller went away):
    /// whoever takes the lock next rolls back to its savepoint first.
    undo_pending: bool,
    /// A savepoint statement failed: the batch is rolled back, not
    /// committed, and every write in it fails.
    poisoned: bool,
    outcome: watch::Sender<Option<Outcome>>,
}

impl Writer {
    /// A writer with its committer task (which ends when the writer is
    /// dropped).
    pub(crate) fn start() -> Writer {
        let writer = Writer {
            state: Arc::new(Mutex::new(Batching::default())),
            ended: Arc::new(Notify::new()),
        };
        tokio::spawn(commit_batches(
            Arc::downgrade(&writer.state),
            writer.ended.clone(),
        ));
        writer
    }

    /// Takes the write lock and opens a savepoint in the open batch
    /// (beginning one if there is none).
    async fn begin(&self, db: &DatabaseConnection) -> Result<Write, DbErr> {
        let mut guard = self.state.clone().lock_owned().await;
        if guard.open.is_none() {
            let txn = db.begin_with_options(immediate()).await?;
            guard.open = Some(Batch {
                txn,
                savepoint_open: false,
                undo_pending: false,
                poisoned: false,
                outcome: watch::Sender::new(None),
            });
        }
        let Some(batch) = guard.open.as_mut() else {
            return Err(DbErr::Custom("no open write batch".to_owned()));
        };
        let outcome = batch.outcome.subscribe();
        // Should this caller go away during the statement below, the
        // committer must still learn that a write ended: the batch may hold
        // other writes waiting for their commit.
        let mut wake = WakeOnDrop(Some(self.ended.clone()));
        let sql = match (batch.savepoint_open, batch.undo_pending) {
            (false, _) => SAVEPOINT.to_owned(),
            (true, false) => format!("{RELEASE}; {SAVEPOINT}"),
            (true, true) => format!("{UNDO}; {RELEASE}; {SAVEPOINT}"),
        };
        let opened = batch.txn.execute_unprepared(&sql).await;
        batch.savepoint_open = true;
        batch.undo_pending = false;
        if let Err(error) = opened {
            batch.poisoned = true;
            return Err(error);
        }
        // from here on the write's own drop wakes the committer
        wake.0 = None;
        Ok(Write {
            inner: Inner::Batched(Batched {
                guard,
                outcome,
                kept: false,
                ended: self.ended.clone(),
            }),
        })
    }
}

/// Wakes the committer when dropped, unless disarmed (`None`).
struct WakeOnDrop(Option<Arc<Notify>>);

impl Drop for WakeOnDrop {
    fn drop(&mut self) {
        if let Some(ended) = &self.0 {
            ended.notify_one();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // lets the committer see that the writer is gone
        self.ended.notify_one();
    }
}

/// `BEGIN IMMEDIATE`: the write lock from the start (another process may
/// hold the database).
fn immediate() -> TransactionOptions {
    TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..TransactionOptions::default()
    }
}

/// The committer: each time a write ends, queue for the lock behind the
/// writers already waiting (they join the open batch), then commit it.
async fn commit_batches(state: Weak<Mutex<Batching>>, ended: Arc<Notify>) {
    loop {
        ended.notified().await;
        let Some(state) = state.upgrade() else { return };
        let mut guard = state.lock().await;
        let Some(batch) = guard.open.take() else {
            continue;
        };
        let outcome = finish(batch.txn, batch.undo_pending, batch.poisoned).await;
        drop(guard);
        batch.outcome.send_replace(Some(outcome));
    }
}

async fn finish(txn: DatabaseTransaction, undo_pending: bool, poisoned: bool) -> Outcome {
    if poisoned {
        if let Err(error) = txn.rollback().await {
            tracing::warn!(%error, "could not roll back a failed write batch");
        }
        return Err("a write batch failed and was rolled back".into());
    }
    if undo_pending && let Err(error) = txn.execute_unprepared(UNDO).await {
        tracing::warn!(%error, "could not undo an abandoned write; rolling its batch back");
        if let Err(error) = txn.rollback().await {
            tracing::warn!(%error, "could not roll back a failed write batch");
        }
        return Err(error.to_string().into());
    }
    txn.commit()
        .await
        .map_err(|error| Arc::from(error.to_string()))
}

/// One write: statements run on it as on a transaction; [`Write::commit`]
/// makes them durable. Dropping it (an early `?`, a caller that went away)
/// undoes them.
pub(crate) struct Write {
    inner: Inner,
}

enum Inner {
    /// SQLite: a savepoint in the shared batch, holding the write lock.
    Batched(Batched),
    /// PostgreSQL: a transaction of its own.
    Own(DatabaseTransaction),
}

struct Batched {
    guard: OwnedMutexGuard<Batching>,
    outcome: watch::Receiver<Option<Outcome>>,
    kept: bool,
    ended: Arc<Notify>,
}

impl Batched {
    fn txn(&self) -> Result<&DatabaseTransaction, DbErr> {
        self.guard
            .open
            .as_ref()
            .map(|batch| &batch.txn)
            .ok_or_else(|| DbErr::Custom("the write batch is closed".to_owned()))
    }
}

impl Drop for Batched {
    fn drop(&mut self) {
        if !self.kept
            && let Some(batch) = self.guard.open.as_mut()
        {
            batch.undo_pending = true;
        }
        self.ended.notify_one();
    }
}

impl Write {
    /// Begins a write: on SQLite (`writer` is `Some`) a savepoint in the
    /// batch, once the write lock is ours; on PostgreSQL a transaction.
    pub(crate) async fn begin(
        db: &DatabaseConnection,
        writer: Option<&Writer>,
    ) -> Result<Write, DbErr> {
        match writer {
            Some(writer) => writer.begin(db).await,
            None => Ok(Write {
                inner: Inner::Own(db.begin().await?),
            }),
        }
    }

    /// Makes the write durable: returns once its batch (SQLite) or
    /// transaction (PostgreSQL) has committed.
    pub(crate) async fn commit(self) -> Result<(), DbErr> {
        match self.inner {
            Inner::Own(txn) => txn.commit().await,
            Inner::Batched(mut batched) => {
                batched.kept = true;
                let mut outcome = batched.outcome.clone();
                // ends the write: the lock passes on and the committer is woken
                drop(batched);
                let ended = outcome
                    .wait_for(Option::is_some)
                    .await
                    .map_err(|_| DbErr::Custom("the store closed before committing".to_owned()))?
                    .clone();
                match ended {
                    Some(Ok(())) => Ok(()),
                    Some(Err(error)) => Err(DbErr::Custom(format!(
                        "the write's batch did not commit: {error}"
                    ))),
                    None => Err(DbErr::Custom("the write's batch did not commit".to_owned())),
                }
            }
        }
    }

    /// Undoes the write.
    pub(crate) async fn rollback(self) -> Result<(), DbErr> {
        match self.inner {
            Inner::Own(txn) => txn.rollback().await,
            // the savepoint is undone by whoever takes the lock next
            Inner::Batched(batched) => {
                drop(batched);
                Ok(())
            }
        }
    }

    fn txn(&self) -> Result<&DatabaseTransaction, DbErr> {
        match &self.inner {
            Inner::Own(txn) => Ok(txn),
            Inner::Batched(batched) => batched.txn(),
        }
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for Write {
    fn get_database_backend(&self) -> DbBackend {
        match &self.inner {
            Inner::Own(txn) => txn.get_database_backend(),
            Inner::Batched(_) => DbBackend::Sqlite,
        }
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        self.txn()?.execute_raw(stmt).await
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        self.txn()?.execute_unprepared(sql).await
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        self.txn()?.query_one_raw(stmt).await
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        self.txn()?.query_all_raw(stmt).await
    }
}
