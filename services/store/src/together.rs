//! Statements of one write that run together.
//!
//! On SQLite every statement is a round trip to the connection's own thread
//! (a hand-off and a wake-up each way), and those trips, not SQLite's work,
//! were most of what a write cost. Statements whose order is fixed and whose
//! results are not needed between them therefore go to SQLite as one
//! multi-statement query: one trip for all. A statement whose changed rows
//! the caller checks is followed by `SELECT changes()`, which reads exactly
//! its own count (SQLite sums nothing across statements there).
//!
//! PostgreSQL cannot take several statements with parameters in one query:
//! there they run one after the other, as before.
//!
//! Each combination is a statement of its own in sqlx's cache of prepared
//! statements (100 per connection, least recently used out first). A log
//! batch's combination depends on whether it has lines, on the steps it
//! reports and on whether it ends the job: a handful of shapes for common
//! jobs; a batch that reports many steps at once makes one more, and at
//! worst pushes out a statement that is prepared again when next used.

use sea_orm::{ConnectionTrait, DbBackend, DbErr, QueryTrait, Statement, Value};

/// Statements to run in order, each counted or not.
pub(crate) struct Together {
    backend: DbBackend,
    statements: Vec<(Statement, Counted)>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Counted {
    Yes,
    No,
}

impl Together {
    pub(crate) fn new(backend: DbBackend) -> Self {
        Self {
            backend,
            statements: Vec::new(),
        }
    }

    /// Adds a statement whose result is not needed.
    pub(crate) fn push(&mut self, statement: &impl QueryTrait) {
        self.statements
            .push((statement.build(self.backend), Counted::No));
    }

    /// Adds a statement whose changed rows [`Together::run`] returns.
    pub(crate) fn push_counted(&mut self, statement: &impl QueryTrait) {
        self.statements
            .push((statement.build(self.backend), Counted::Yes));
    }

    /// Runs the statements in order and returns the rows each counted one
    /// changed, in order. An error stops the run: the caller's transaction
    /// (or savepoint) must then be rolled back.
    pub(crate) async fn run(self, db: &impl ConnectionTrait) -> Result<Vec<u64>, DbErr> {
        match self.backend {
            DbBackend::Sqlite => run_at_once(db, self.statements).await,
            _ => {
                let mut counts = Vec::new();
                for (statement, counted) in self.statements {
                    let result = db.execute_raw(statement).await?;
                    if counted == Counted::Yes {
                        counts.push(result.rows_affected());
                    }
                }
                Ok(counts)
            }
        }
    }
}

async fn run_at_once(
    db: &impl ConnectionTrait,
    statements: Vec<(Statement, Counted)>,
) -> Result<Vec<u64>, DbErr> {
    if statements.is_empty() {
        return Ok(Vec::new());
    }
    let counted = statements
        .iter()
        .filter(|(_, counted)| *counted == Counted::Yes)
        .count();
    let mut sql = String::new();
    let mut values: Vec<Value> = Vec::new();
    for (statement, count) in statements {
        sql.push_str(&statement.sql);
        sql.push_str(";\n");
        if count == Counted::Yes {
            sql.push_str("SELECT changes();\n");
        }
        if let Some(more) = statement.values {
            values.extend(more.0);
        }
    }
    let all = Statement::from_sql_and_values(DbBackend::Sqlite, sql, values);
    if counted == 0 {
        db.execute_raw(all).await?;
        return Ok(Vec::new());
    }
    let rows = db.query_all_raw(all).await?;
    if rows.len() != counted {
        return Err(DbErr::Custom(format!(
            "{counted} statements counted, {} counts read",
            rows.len()
        )));
    }
    rows.iter()
        .map(|row| {
            let changes: i64 = row.try_get_by_index(0)?;
            u64::try_from(changes).map_err(|_| DbErr::Custom("negative changes()".to_owned()))
        })
        .collect()
}
