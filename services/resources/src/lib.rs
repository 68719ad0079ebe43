//! ResourceService: what jobs read and write — source archives, JUnit test
//! results, artifacts. Everything moves in chunks of at most 1 MiB and is
//! checked against the SHA-256 and size the sender announced; nothing is
//! held whole in memory (a JUnit report, which must be parsed, is capped).
//!
//! [`Resources`] is the domain; the bytes live behind [`blob::BlobStore`];
//! [`grpc`] is the thin tonic adapter.

pub mod blob;
pub mod grpc;
pub mod junit;

use std::sync::Arc;

use ferry_auth::{AdministratorIdentity, JobIdentity};
use ferry_proto::time::{now_micros, timestamp_from_micros};
use ferry_proto::v1::{BlobHeader, BlobInfo};
use ferry_service::{Error, Result, validate};
use ferry_store::{Holder, Job, Store, TestSummary};
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::blob::{BlobReader, BlobStore};

/// Largest chunk a message may carry.
pub const MAX_CHUNK: usize = 1024 * 1024;

/// Size limits, each answered with RESOURCE_EXHAUSTED.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest source archive.
    pub source_bytes: u64,
    /// Largest single artifact.
    pub artifact_bytes: u64,
    /// Most artifact bytes one job may store.
    pub job_artifact_bytes: u64,
    /// Largest JUnit report (it is parsed in memory).
    pub test_report_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            source_bytes: 1 << 30,
            artifact_bytes: 1 << 30,
            job_artifact_bytes: 4 << 30,
            test_report_bytes: 16 << 20,
        }
    }
}

/// The resource service's domain.
#[derive(Clone)]
pub struct Resources {
    store: Store,
    blobs: Arc<dyn BlobStore>,
    limits: Limits,
}

impl std::fmt::Debug for Resources {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Resources")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// A checked upload header.
struct Announced {
    name: String,
    size: u64,
    sha256: String,
}

fn announced(header: Option<BlobHeader>, limit: u64, what: &str) -> Result<Announced> {
    let header = header.ok_or_else(|| {
        Error::InvalidArgument("the first message must carry the header".to_owned())
    })?;
    if header.size > limit {
        return Err(Error::TooLarge(format!(
            "{what} is {} bytes, the limit is {limit}",
            header.size
        )));
    }
    let sha = header.sha256.to_ascii_lowercase();
    if sha.len() != 64 || !sha.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return Err(Error::InvalidArgument(
            "sha256 must be 64 hex digits".to_owned(),
        ));
    }
    Ok(Announced {
        name: header.name,
        size: header.size,
        sha256: sha,
    })
}

/// A relative, '/'-separated path with no `..`, at most 512 bytes.
fn relative_name(field: &str, name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 512
        && !name.starts_with('/')
        && !name.chars().any(char::is_control)
        && name
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..");
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "{field} must be a relative path without '..' (got {name:?})"
        )))
    }
}

/// Where received chunks go.
enum Sink<'a> {
    /// Into a blob.
    Blob(&'a mut Box<dyn blob::BlobWriter>),
    /// Into memory (a report to parse; capped by its limit).
    Memory(&'a mut Vec<u8>),
}

impl Sink<'_> {
    async fn accept(&mut self, chunk: &[u8]) -> Result<()> {
        match self {
            Sink::Blob(writer) => writer.write(chunk).await.map_err(io_error),
            Sink::Memory(bytes) => {
                bytes.extend_from_slice(chunk);
                Ok(())
            }
        }
    }
}

/// Reads chunks into `sink` while hashing; checks size and checksum.
async fn receive<S>(mut chunks: S, announced: &Announced, mut sink: Sink<'_>) -> Result<()>
where
    S: Stream<Item = Result<Vec<u8>>> + Unpin,
{
    let mut hasher = Sha256::new();
    let mut received = 0u64;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        if chunk.len() > MAX_CHUNK {
            return Err(Error::TooLarge(format!(
                "a chunk is {} bytes, the limit is {MAX_CHUNK}",
                chunk.len()
            )));
        }
        received += chunk.len() as u64;
        if received > announced.size {
            return Err(Error::TooLarge(format!(
                "more bytes than the announced {}",
                announced.size
            )));
        }
        hasher.update(&chunk);
        sink.accept(&chunk).await?;
    }
    if received != announced.size {
        return Err(Error::InvalidArgument(format!(
            "received {received} bytes, {} were announced",
            announced.size
        )));
    }
    if hex::encode(hasher.finalize()) != announced.sha256 {
        return Err(Error::InvalidArgument(
            "the content does not match its sha256".to_owned(),
        ));
    }
    Ok(())
}

fn io_error(error: std::io::Error) -> Error {
    Error::Internal(format!("blob store: {error}"))
}

impl Resources {
    /// A resource service over `store`, keeping bytes in `blobs`.
    pub fn new(store: Store, blobs: Arc<dyn BlobStore>, limits: Limits) -> Self {
        Self {
            store,
            blobs,
            limits,
        }
    }

    /// Writes a blob from chunks, checked; removes it on any failure.
    async fn put<S>(&self, key: &str, chunks: S, announced: &Announced) -> Result<()>
    where
        S: Stream<Item = Result<Vec<u8>>> + Unpin,
    {
        let mut writer = self.blobs.create(key).await.map_err(io_error)?;
        let result = receive(chunks, announced, Sink::Blob(&mut writer)).await;
        match result {
            Ok(()) => writer.commit().await.map_err(io_error),
            Err(error) => {
                writer.abort().await;
                Err(error)
            }
        }
    }

    /// The caller's job, refused unless the token's holder still runs it.
    async fn held_job(&self, caller: &JobIdentity, job_id: &str) -> Result<Job> {
        validate::id("job_id", job_id)?;
        caller
            .require_job(job_id)
            .and_then(|()| caller.require_scope(ferry_auth::token::scope::JOB_RESOURCES))
            .map_err(|status| Error::PermissionDenied(status.message().to_owned()))?;
        let job = self
            .store
            .job(job_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("job {job_id} not found")))?;
        if !job.state.is_active()
            || job.agent_id.as_deref() != Some(caller.agent_id.as_str())
            || job.attempt != caller.attempt
        {
            return Err(Error::Unauthenticated(
                "the job has ended or moved: its token is revoked".to_owned(),
            ));
        }
        Ok(job)
    }

    /// Stores a source archive for a pool the caller administers.
    pub async fn upload_source<S>(
        &self,
        caller: &AdministratorIdentity,
        pool: &str,
        header: Option<BlobHeader>,
        chunks: S,
    ) -> Result<(String, BlobInfo)>
    where
        S: Stream<Item = Result<Vec<u8>>> + Unpin,
    {
        let announced = announced(header, self.limits.source_bytes, "the source archive")?;
        validate::max_len("name", &announced.name, 512)?;
        let pool_name = if pool.is_empty() { "default" } else { pool };
        let pool = self
            .store
            .pool_by_name(pool_name)
            .await?
            .filter(|pool| caller.administers(&pool.id))
            .ok_or_else(|| Error::NotFound(format!("pool {pool_name:?} not found")))?;
        let id = uuid::Uuid::now_v7().to_string();
        self.put(&format!("sources/{id}"), chunks, &announced)
            .await?;
        let created_at = now_micros();
        self.store
            .insert_source(ferry_store::Source {
                id: id.clone(),
                pool_id: pool.id,
                name: announced.name.clone(),
                size: announced.size,
                sha256: announced.sha256.clone(),
                created_at,
            })
            .await?;
        tracing::info!(source_id = %id, size = announced.size, by = %caller.name, "source stored");
        Ok((
            id,
            info(announced.name, announced.size, announced.sha256, created_at),
        ))
    }

    /// The caller's job's source archive: its info and a reader.
    pub async fn download_source(
        &self,
        caller: &JobIdentity,
        job_id: &str,
    ) -> Result<(BlobInfo, BlobReader)> {
        let job = self.held_job(caller, job_id).await?;
        let source_id = job
            .source_id
            .ok_or_else(|| Error::NotFound("this job has no source".to_owned()))?;
        let source = self
            .store
            .source(&source_id)
            .await?
            .filter(|source| source.pool_id == job.pool_id)
            .ok_or_else(|| Error::NotFound(format!("source {source_id} not found")))?;
        let reader = self.open(&format!("sources/{}", source.id)).await?;
        Ok((
            info(source.name, source.size, source.sha256, source.created_at),
            reader,
        ))
    }

    async fn open(&self, key: &str) -> Result<BlobReader> {
        self.blobs
            .open(key)
            .await
            .map_err(io_error)?
            .ok_or_else(|| Error::Internal(format!("blob {key} is missing from the blob store")))
    }

    /// Parses one JUnit report of the caller's job into its summary.
    pub async fn upload_test_results<S>(
        &self,
        caller: &JobIdentity,
        job_id: &str,
        header: Option<BlobHeader>,
        chunks: S,
    ) -> Result<TestSummary>
    where
        S: Stream<Item = Result<Vec<u8>>> + Unpin,
    {
        self.held_job(caller, job_id).await?;
        let announced = announced(header, self.limits.test_report_bytes, "the test report")?;
        relative_name("name", &announced.name)?;
        let mut bytes = Vec::with_capacity(announced.size as usize);
        receive(chunks, &announced, Sink::Memory(&mut bytes)).await?;
        let file = junit::parse(&bytes)
            .map_err(|error| Error::InvalidArgument(format!("{}: {}", announced.name, error.0)))?;
        let holder = Holder {
            agent_id: &caller.agent_id,
            attempt: caller.attempt,
        };
        Ok(self.store.add_test_results(job_id, holder, &file).await?)
    }

    /// Stores a named artifact of the caller's job.
    pub async fn upload_artifact<S>(
        &self,
        caller: &JobIdentity,
        job_id: &str,
        header: Option<BlobHeader>,
        chunks: S,
    ) -> Result<BlobInfo>
    where
        S: Stream<Item = Result<Vec<u8>>> + Unpin,
    {
        self.held_job(caller, job_id).await?;
        let announced = announced(header, self.limits.artifact_bytes, "the artifact")?;
        relative_name("name", &announced.name)?;
        let used = self.store.artifact_bytes(job_id).await?;
        if used + announced.size > self.limits.job_artifact_bytes {
            return Err(Error::TooLarge(format!(
                "the job's artifacts would take {} bytes, the limit is {}",
                used + announced.size,
                self.limits.job_artifact_bytes
            )));
        }
        if self
            .store
            .artifact(job_id, &announced.name)
            .await?
            .is_some()
        {
            return Err(Error::AlreadyExists(format!(
                "artifact {:?} already exists",
                announced.name
            )));
        }
        let key = artifact_key(job_id, &announced.name);
        self.put(&key, chunks, &announced).await?;
        let created_at = now_micros();
        let stored = self
            .store
            .insert_artifact(ferry_store::Artifact {
                job_id: job_id.to_owned(),
                name: announced.name.clone(),
                size: announced.size,
                sha256: announced.sha256.clone(),
                created_at,
            })
            .await;
        if let Err(error) = stored {
            let _ = self.blobs.delete(&key).await;
            return Err(error.into());
        }
        Ok(info(
            announced.name,
            announced.size,
            announced.sha256,
            created_at,
        ))
    }

    /// Checks that the caller may read `job_id`'s artifacts: an
    /// administrator of its pool, or a running job of the same pipeline.
    async fn readable_job(&self, caller: &Reader<'_>, job_id: &str) -> Result<Job> {
        validate::id("job_id", job_id)?;
        let job = self
            .store
            .job(job_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("job {job_id} not found")))?;
        match caller {
            Reader::Administrator(administrator) if administrator.administers(&job.pool_id) => {
                Ok(job)
            }
            Reader::Administrator(_) => Err(Error::NotFound(format!("job {job_id} not found"))),
            Reader::Job(identity) => {
                self.held_job(identity, &identity.job_id).await?;
                if identity.project == job.project && identity.pipeline == job.pipeline {
                    Ok(job)
                } else {
                    Err(Error::PermissionDenied(
                        "a job token reads only its own pipeline's artifacts".to_owned(),
                    ))
                }
            }
        }
    }

    /// A job's artifacts and its state.
    pub async fn list_artifacts(
        &self,
        caller: &Reader<'_>,
        job_id: &str,
    ) -> Result<(Vec<BlobInfo>, ferry_store::JobState)> {
        let job = self.readable_job(caller, job_id).await?;
        let artifacts = self
            .store
            .artifacts(job_id)
            .await?
            .into_iter()
            .map(|artifact| {
                info(
                    artifact.name,
                    artifact.size,
                    artifact.sha256,
                    artifact.created_at,
                )
            })
            .collect();
        Ok((artifacts, job.state))
    }

    /// One artifact: its info and a reader.
    pub async fn download_artifact(
        &self,
        caller: &Reader<'_>,
        job_id: &str,
        name: &str,
    ) -> Result<(BlobInfo, BlobReader)> {
        self.readable_job(caller, job_id).await?;
        relative_name("name", name)?;
        let artifact = self
            .store
            .artifact(job_id, name)
            .await?
            .ok_or_else(|| Error::NotFound(format!("artifact {name:?} not found")))?;
        let reader = self.open(&artifact_key(job_id, name)).await?;
        Ok((
            info(
                artifact.name,
                artifact.size,
                artifact.sha256,
                artifact.created_at,
            ),
            reader,
        ))
    }
}

/// Who reads artifacts.
#[derive(Debug)]
pub enum Reader<'a> {
    /// A person or tool with a PAT.
    Administrator(&'a AdministratorIdentity),
    /// A running job.
    Job(&'a JobIdentity),
}

fn artifact_key(job_id: &str, name: &str) -> String {
    format!(
        "artifacts/{job_id}/{}",
        hex::encode(Sha256::digest(name.as_bytes()))
    )
}

fn info(name: String, size: u64, sha256: String, created_at: i64) -> BlobInfo {
    BlobInfo {
        name,
        size,
        sha256,
        create_time: Some(timestamp_from_micros(created_at)),
    }
}

/// Reads a blob in chunks of at most [`MAX_CHUNK`] and hands each to `send`;
/// stops when `send` says the receiver is gone.
pub async fn stream_blob<F, Fut>(mut reader: BlobReader, mut send: F) -> Result<()>
where
    F: FnMut(Vec<u8>) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    loop {
        let mut chunk = vec![0u8; MAX_CHUNK];
        let mut filled = 0;
        while filled < MAX_CHUNK {
            let read = reader.read(&mut chunk[filled..]).await.map_err(io_error)?;
            if read == 0 {
                break;
            }
            filled += read;
        }
        if filled == 0 {
            return Ok(());
        }
        chunk.truncate(filled);
        if !send(chunk).await {
            return Ok(());
        }
    }
}
