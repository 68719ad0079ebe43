//! The store's error type.

use sea_orm::{DbErr, SqlErr};

/// Everything a store call can fail with. Messages are lowercase and never
/// carry a secret (no spec bytes, no keys, no token hashes).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The named thing does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The named thing already exists (a unique name or id is taken).
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// A state precondition failed (the job is not held by this agent, a log
    /// batch leaves a gap, ...).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The caller passed an argument the store cannot act on (a bad url, an
    /// empty log range, a non-final state where a final one is needed).
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// The database reported an error.
    #[error("database error: {0}")]
    Database(#[from] DbErr),
    /// Stored data is unreadable: bad JSON, an unknown state, a spec that
    /// fails to decrypt (wrong data key or tampering).
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// Encrypting a spec failed (no randomness for the nonce).
    #[error("encryption failed: {0}")]
    Crypto(String),
}

/// The store's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Maps an insert error: a unique violation means `what` already exists, a
/// foreign-key violation means `parent` does not exist.
pub(crate) fn insert_error(err: DbErr, what: &str, parent: &str) -> Error {
    match err.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(_)) => Error::AlreadyExists(what.to_owned()),
        Some(SqlErr::ForeignKeyConstraintViolation(_)) => Error::NotFound(parent.to_owned()),
        _ => Error::Database(err),
    }
}
