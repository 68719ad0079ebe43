//! A job's source: `ResourceService.DownloadSource` streamed to a temporary
//! file while hashing (never held whole in memory), checked against the
//! announced size and SHA-256, then unpacked (a gzip-compressed tar) into the
//! workspace, refusing every entry that could reach outside it.

use std::io;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use ferry_client::Authorized;
use ferry_proto::v1::download_source_response::Content;
use ferry_proto::v1::resource_service_client::ResourceServiceClient;
use ferry_proto::v1::{BlobInfo, DownloadSourceRequest};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;

use crate::backoff::{Backoff, seconds};
use crate::rpc::{describe, is_transient};

/// How many times a download interrupted by a transient failure is tried.
pub const DOWNLOAD_ATTEMPTS: u32 = 3;
/// Longest wait for the next message of a download.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A verified download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, lowercase hex.
    pub sha256: String,
}

/// What was unpacked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unpacked {
    /// Regular files (and hard links).
    pub files: u64,
    /// Directories.
    pub directories: u64,
    /// Symbolic links.
    pub links: u64,
}

enum Failure {
    Transient(String),
    Fatal(anyhow::Error),
}

/// Downloads the job's source to `archive`, verifying it; retries transient
/// failures.
pub async fn download(
    resources: &ResourceServiceClient<Authorized>,
    job_id: &str,
    archive: &Path,
) -> anyhow::Result<Downloaded> {
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(5));
    let mut attempt = 1;
    loop {
        match download_once(resources, job_id, archive).await {
            Ok(downloaded) => return Ok(downloaded),
            Err(Failure::Fatal(error)) => return Err(error),
            Err(Failure::Transient(error)) if attempt < DOWNLOAD_ATTEMPTS => {
                let delay = backoff.next_delay();
                tracing::warn!(job_id = %job_id, attempt, %error, retry_in = %seconds(delay), "source download failed, retrying");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            Err(Failure::Transient(error)) => {
                bail!("cannot download the source: {error}")
            }
        }
    }
}

async fn download_once(
    resources: &ResourceServiceClient<Authorized>,
    job_id: &str,
    archive: &Path,
) -> Result<Downloaded, Failure> {
    let status_failure = |status: tonic::Status| {
        if is_transient(&status) {
            Failure::Transient(describe(&status))
        } else {
            Failure::Fatal(anyhow!("cannot download the source: {}", describe(&status)))
        }
    };
    let mut client = resources.clone();
    let request = DownloadSourceRequest {
        job_id: job_id.to_owned(),
    };
    let mut stream =
        match tokio::time::timeout(STALL_TIMEOUT, client.download_source(request)).await {
            Err(_) => return Err(Failure::Transient("the server did not answer".into())),
            Ok(Err(status)) => return Err(status_failure(status)),
            Ok(Ok(response)) => response.into_inner(),
        };
    let mut next = async || match tokio::time::timeout(STALL_TIMEOUT, stream.message()).await {
        Err(_) => Err(Failure::Transient(format!(
            "no data for {}",
            seconds(STALL_TIMEOUT)
        ))),
        Ok(Err(status)) => Err(status_failure(status)),
        Ok(Ok(message)) => Ok(message.and_then(|message| message.content)),
    };
    let info: BlobInfo = match next().await? {
        Some(Content::Info(info)) => info,
        Some(Content::Chunk(_)) => {
            return Err(Failure::Fatal(anyhow!(
                "the server sent source data before its size and checksum"
            )));
        }
        None => {
            return Err(Failure::Transient(
                "the server ended the download before sending anything".into(),
            ));
        }
    };
    let expected_sha = info.sha256.trim().to_ascii_lowercase();
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(archive)
        .await
        .map_err(|error| Failure::Fatal(anyhow!("cannot write {}: {error}", archive.display())))?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(content) = next().await? {
        let Content::Chunk(chunk) = content else {
            return Err(Failure::Fatal(anyhow!(
                "the server sent the source's size and checksum twice"
            )));
        };
        size += chunk.len() as u64;
        if size > info.size {
            return Err(Failure::Fatal(anyhow!(
                "the source is corrupt: more than the announced {} bytes arrived",
                info.size
            )));
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(|error| {
            Failure::Fatal(anyhow!("cannot write {}: {error}", archive.display()))
        })?;
    }
    file.flush()
        .await
        .map_err(|error| Failure::Fatal(anyhow!("cannot write {}: {error}", archive.display())))?;
    let sha256 = hex::encode(hasher.finalize());
    if size != info.size {
        return Err(Failure::Fatal(anyhow!(
            "the source is corrupt: {size} bytes arrived, {} were announced",
            info.size
        )));
    }
    if sha256 != expected_sha {
        return Err(Failure::Fatal(anyhow!(
            "the source is corrupt: its SHA-256 is {sha256}, the server announced {expected_sha}"
        )));
    }
    Ok(Downloaded { size, sha256 })
}

/// Unpacks the gzip-compressed tar `archive` into `workspace`. Refuses (and
/// stops at) any entry with an absolute path or a `..` component, a symbolic
/// link that is absolute or resolves outside the workspace, a hard link to
/// outside, and devices or pipes.
pub fn unpack(archive: &Path, workspace: &Path) -> anyhow::Result<Unpacked> {
    let root = workspace
        .canonicalize()
        .with_context(|| format!("cannot resolve the workspace {}", workspace.display()))?;
    let file = std::fs::File::open(archive)
        .with_context(|| format!("cannot read {}", archive.display()))?;
    let decoder = flate2::read::GzDecoder::new(io::BufReader::new(file));
    let mut tar = tar::Archive::new(decoder);
    let mut unpacked = Unpacked::default();
    let entries = tar
        .entries()
        .context("the source is not a gzip-compressed tar archive")?;
    for entry in entries {
        let mut entry =
            entry.context("the source is not a readable gzip-compressed tar archive")?;
        let path: PathBuf = entry
            .path()
            .context("the source archive has an entry with an unreadable name")?
            .into_owned();
        let shown = path.display().to_string();
        check_relative(&path)
            .map_err(|why| anyhow!("the source archive is refused: entry {shown} {why}"))?;
        let kind = entry.header().entry_type();
        let counter = match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => &mut unpacked.files,
            tar::EntryType::Directory => &mut unpacked.directories,
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .context("the source archive has a link with an unreadable target")?
                    .ok_or_else(|| {
                        anyhow!("the source archive is refused: link {shown} has no target")
                    })?
                    .into_owned();
                check_symlink(&root, &path, &target).map_err(|why| {
                    anyhow!(
                        "the source archive is refused: link {shown} -> {} {why}",
                        target.display()
                    )
                })?;
                &mut unpacked.links
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .context("the source archive has a link with an unreadable target")?
                    .ok_or_else(|| {
                        anyhow!("the source archive is refused: link {shown} has no target")
                    })?
                    .into_owned();
                check_relative(&target).map_err(|why| {
                    anyhow!(
                        "the source archive is refused: hard link {shown} -> {} {why}",
                        target.display()
                    )
                })?;
                &mut unpacked.files
            }
            tar::EntryType::XGlobalHeader
            | tar::EntryType::XHeader
            | tar::EntryType::GNULongName
            | tar::EntryType::GNULongLink => continue,
            other => bail!(
                "the source archive is refused: entry {shown} is a {}, which the agent does not unpack",
                describe_kind(other)
            ),
        };
        if path
            .components()
            .all(|component| component == Component::CurDir)
        {
            continue;
        }
        entry.set_preserve_permissions(false);
        entry.set_unpack_xattrs(false);
        entry.set_preserve_mtime(true);
        let inside = entry
            .unpack_in(&root)
            .with_context(|| format!("cannot unpack {shown} from the source archive"))?;
        if !inside {
            bail!("the source archive is refused: entry {shown} escapes the workspace");
        }
        *counter += 1;
    }
    Ok(unpacked)
}

fn describe_kind(kind: tar::EntryType) -> &'static str {
    match kind {
        tar::EntryType::Char => "character device",
        tar::EntryType::Block => "block device",
        tar::EntryType::Fifo => "named pipe",
        _ => "special file",
    }
}

/// A path inside the archive must be relative and free of `..`.
fn check_relative(path: &Path) -> Result<(), &'static str> {
    for component in path.components() {
        match component {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => return Err("escapes the workspace (it has '..')"),
            Component::RootDir | Component::Prefix(_) => {
                return Err("escapes the workspace (its path is absolute)");
            }
        }
    }
    Ok(())
}

/// A symbolic link at `path` (inside the archive) pointing to `target` must
/// stay inside the workspace: the target is relative, may climb with `..`
/// only at its start and no higher than the link's own directory is deep,
/// and the link's directory is a real directory (not reached through another
/// link, which would make the climb land elsewhere). Links it passes through
/// further down were checked the same way when they were unpacked.
fn check_symlink(root: &Path, path: &Path, target: &Path) -> Result<(), &'static str> {
    let mut climbs = 0usize;
    let mut descended = false;
    for component in target.components() {
        match component {
            Component::ParentDir if descended => {
                return Err("is refused: '..' may only start a link's target");
            }
            Component::ParentDir => climbs += 1,
            Component::Normal(_) => descended = true,
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err("points outside the workspace (its target is absolute)");
            }
        }
    }
    let parent: Vec<&std::ffi::OsStr> = path
        .parent()
        .map(|parent| {
            parent
                .components()
                .filter_map(|component| match component {
                    Component::Normal(name) => Some(name),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if climbs > parent.len() {
        return Err("points outside the workspace");
    }
    let mut prefix = root.to_path_buf();
    for name in parent {
        prefix.push(name);
        match std::fs::symlink_metadata(&prefix) {
            Ok(metadata) if metadata.file_type().is_symlink() => {
                return Err("is refused: it sits below another link");
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "source_tests.rs"]
pub(crate) mod tests;
