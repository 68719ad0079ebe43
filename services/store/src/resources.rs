//! What jobs read and write besides logs: the records of source archives
//! and artifacts (their bytes live in a blob store outside the database),
//! and each job's running sum of JUnit test results.

use sea_orm::sea_query::{Alias, Expr, Func};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use crate::entity::{artifact, job, source};
use crate::error::{Error, Result, insert_error};
use crate::hold::hold_job;
use crate::store::{Store, from_json, to_i64, to_json, to_u64};
use crate::types::{Artifact, Holder, Source, TestSummary};

impl TryFrom<source::Model> for Source {
    type Error = Error;

    fn try_from(m: source::Model) -> Result<Self> {
        Ok(Source {
            size: to_u64(m.size, "source size")?,
            id: m.id,
            pool_id: m.pool_id,
            name: m.name,
            sha256: m.sha256,
            created_at: m.created_at,
        })
    }
}

impl TryFrom<artifact::Model> for Artifact {
    type Error = Error;

    fn try_from(m: artifact::Model) -> Result<Self> {
        Ok(Artifact {
            size: to_u64(m.size, "artifact size")?,
            job_id: m.job_id,
            name: m.name,
            sha256: m.sha256,
            created_at: m.created_at,
        })
    }
}

impl Store {
    /// Records a source archive. `AlreadyExists` when the id is taken,
    /// `NotFound` when the pool does not exist.
    pub async fn insert_source(&self, source: Source) -> Result<()> {
        let txn = self.begin_write().await?;
        source::Entity::insert(source::ActiveModel {
            size: Set(to_i64(source.size, "source size")?),
            id: Set(source.id),
            pool_id: Set(source.pool_id),
            name: Set(source.name),
            sha256: Set(source.sha256),
            created_at: Set(source.created_at),
        })
        .exec_without_returning(&txn)
        .await
        .map_err(|e| insert_error(e, "source", "pool"))?;
        txn.commit().await?;
        Ok(())
    }

    /// The source with this id, if any.
    pub async fn source(&self, id: &str) -> Result<Option<Source>> {
        source::Entity::find_by_id(id.to_owned())
            .all(self.db())
            .await?
            .pop()
            .map(Source::try_from)
            .transpose()
    }

    /// Records an artifact of a job. `AlreadyExists` when the job already
    /// has an artifact of this name, `NotFound` when the job does not exist.
    pub async fn insert_artifact(&self, artifact: Artifact) -> Result<()> {
        let txn = self.begin_write().await?;
        artifact::Entity::insert(artifact::ActiveModel {
            size: Set(to_i64(artifact.size, "artifact size")?),
            job_id: Set(artifact.job_id),
            name: Set(artifact.name),
            sha256: Set(artifact.sha256),
            created_at: Set(artifact.created_at),
        })
        .exec_without_returning(&txn)
        .await
        .map_err(|e| insert_error(e, "artifact", "job"))?;
        txn.commit().await?;
        Ok(())
    }

    /// The artifacts of a job, by name (empty for no such job).
    pub async fn artifacts(&self, job_id: &str) -> Result<Vec<Artifact>> {
        artifact::Entity::find()
            .filter(artifact::Column::JobId.eq(job_id))
            .order_by_asc(artifact::Column::Name)
            .all(self.db())
            .await?
            .into_iter()
            .map(Artifact::try_from)
            .collect()
    }

    /// One artifact of a job, if it exists.
    pub async fn artifact(&self, job_id: &str, name: &str) -> Result<Option<Artifact>> {
        artifact::Entity::find_by_id((job_id.to_owned(), name.to_owned()))
            .all(self.db())
            .await?
            .pop()
            .map(Artifact::try_from)
            .transpose()
    }

    /// The sum of the sizes of a job's artifacts (0 when it has none), for
    /// per-job quotas.
    pub async fn artifact_bytes(&self, job_id: &str) -> Result<u64> {
        // SUM(bigint) is numeric on PostgreSQL: cast it back
        let total = Func::coalesce([
            Func::cast_as(
                Func::sum(Expr::col(artifact::Column::Size)),
                Alias::new("bigint"),
            )
            .into(),
            Expr::value(0i64),
        ]);
        let bytes: Option<i64> = artifact::Entity::find()
            .select_only()
            .column_as(Expr::from(total), "total")
            .filter(artifact::Column::JobId.eq(job_id))
            .into_tuple()
            .all(self.db())
            .await?
            .pop();
        to_u64(bytes.unwrap_or(0), "artifact size")
    }

    /// Adds one JUnit file's counts to the job's summary and returns the
    /// new sum, in one transaction, for an active job held by `holder`
    /// (`Conflict` otherwise, `NotFound` when the job does not exist).
    /// `files` grows by the file's `files`, at least 1; `failed_tests`
    /// keeps the first 100 names.
    pub async fn add_test_results(
        &self,
        job_id: &str,
        holder: Holder<'_>,
        file: &TestSummary,
    ) -> Result<TestSummary> {
        let txn = self.begin_write().await?;
        hold_job(&txn, job_id, holder).await?;
        let stored: Option<Option<String>> = job::Entity::find_by_id(job_id.to_owned())
            .select_only()
            .column(job::Column::TestSummary)
            .into_tuple()
            .all(&txn)
            .await?
            .pop();
        let mut summary = match stored.flatten() {
            Some(text) => from_json::<TestSummary>(&text, "test summary")?,
            None => TestSummary::default(),
        };
        summary.add(file);
        job::Entity::update_many()
            .col_expr(
                job::Column::TestSummary,
                Expr::value(Some(to_json(&summary, "test summary")?)),
            )
            .filter(job::Column::Id.eq(job_id))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(summary)
    }
}
