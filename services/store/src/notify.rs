//! PostgreSQL notifications: how replicas of the services tell each other
//! that something happened (a job queued, a cancel, new log lines), with
//! `NOTIFY` on one side and `LISTEN` on the other. SQLite has no such thing:
//! the embedded default runs every service in one process and tells them in
//! memory.

use sea_orm::sqlx::postgres::PgListener;
use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement};

use crate::error::{Error, Result};
use crate::store::Store;

/// Longest payload PostgreSQL accepts in a notification, in bytes.
pub const MAX_PAYLOAD: usize = 7900;

impl Store {
    /// Whether this store is PostgreSQL (and so can notify other processes).
    pub fn is_postgres(&self) -> bool {
        self.backend_name() == "postgres"
    }

    /// Sends `payload` to every listener of `channel` (when the surrounding
    /// transaction, if any, commits). PostgreSQL only.
    pub async fn notify(&self, channel: &str, payload: &str) -> Result<()> {
        if !self.is_postgres() {
            return Err(Error::Invalid("notifications need PostgreSQL".to_owned()));
        }
        if payload.len() > MAX_PAYLOAD {
            return Err(Error::Invalid(format!(
                "a notification payload is {} bytes, the limit is {MAX_PAYLOAD}",
                payload.len()
            )));
        }
        self.db()
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT pg_notify($1, $2)",
                [channel.into(), payload.into()],
            ))
            .await?;
        Ok(())
    }

    /// Starts listening on `channel`, on a connection of its own.
    pub async fn listen(&self, channel: &str) -> Result<Listener> {
        if !self.is_postgres() {
            return Err(Error::Invalid("notifications need PostgreSQL".to_owned()));
        }
        let mut listener = PgListener::connect_with(self.db().get_postgres_connection_pool())
            .await
            .map_err(|error| Error::Database(DbErr::Custom(format!("listen: {error}"))))?;
        listener
            .listen(channel)
            .await
            .map_err(|error| Error::Database(DbErr::Custom(format!("listen: {error}"))))?;
        Ok(Listener { listener })
    }
}

/// Notifications of one channel.
pub struct Listener {
    listener: PgListener,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Listener(..)")
    }
}

impl Listener {
    /// The next payload; `None` when the connection was lost and
    /// re-established (notifications sent meanwhile are gone: resync).
    pub async fn next(&mut self) -> Result<Option<String>> {
        match self.listener.try_recv().await {
            Ok(Some(notification)) => Ok(Some(notification.payload().to_owned())),
            Ok(None) => Ok(None),
            Err(error) => Err(Error::Database(DbErr::Custom(format!("listen: {error}")))),
        }
    }
}
