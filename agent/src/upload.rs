//! After the last step: JUnit XML test results and artifacts, found by the
//! job's glob patterns relative to the workspace, each streamed from disk in
//! chunks of at most 1 MiB after a header with its size and SHA-256.
//! Failures are logged as SYSTEM lines and do not fail the job.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context as _, anyhow};
use ferry_client::Authorized;
use ferry_proto::v1::resource_service_client::ResourceServiceClient;
use ferry_proto::v1::{
    BlobHeader, TestSummary, UploadArtifactRequest, UploadTestResultsRequest,
    upload_artifact_request, upload_test_results_request,
};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncReadExt as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::joblog::JobLog;
use crate::rpc::{describe, with_retries};

/// The largest chunk sent.
pub const CHUNK_SIZE: usize = 1024 * 1024;
/// Most failed test names shown in the log.
const SHOWN_FAILURES: usize = 10;

/// Files a set of patterns matched: name (relative, '/'-separated) → path.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Matches {
    /// The files, by name.
    pub files: BTreeMap<String, PathBuf>,
    /// What was skipped and why (for SYSTEM lines).
    pub notes: Vec<String>,
}

/// Expands `patterns` (globs relative to `workspace`, `**` for any depth)
/// to regular files inside the workspace. Patterns that are absolute or
/// climb with `..`, and matches that resolve outside the workspace (through
/// links), are skipped with a note.
pub fn expand(workspace: &Path, patterns: &[String], what: &str) -> Matches {
    let mut matches = Matches::default();
    let Ok(root) = workspace.canonicalize() else {
        matches
            .notes
            .push(format!("cannot resolve the workspace; no {what} uploaded"));
        return matches;
    };
    let options = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: false,
    };
    for pattern in patterns {
        let pattern = pattern.trim();
        if pattern.is_empty() {
            continue;
        }
        let relative = Path::new(pattern);
        if relative.components().any(|component| {
            matches!(
                component,
                Component::ParentDir | Component::RootDir | Component::Prefix(_)
            )
        }) {
            matches.notes.push(format!(
                "{what} pattern {pattern} reaches outside the workspace; skipped"
            ));
            continue;
        }
        let full = format!(
            "{}/{}",
            glob::Pattern::escape(&root.to_string_lossy()),
            pattern
        );
        let paths = match glob::glob_with(&full, options) {
            Ok(paths) => paths,
            Err(error) => {
                matches.notes.push(format!(
                    "{what} pattern {pattern} is not a valid glob ({}); skipped",
                    error.msg
                ));
                continue;
            }
        };
        let mut found = 0;
        for path in paths.flatten() {
            if !path.is_file() {
                continue;
            }
            let inside = path
                .canonicalize()
                .is_ok_and(|canonical| canonical.starts_with(&root));
            let name = path.strip_prefix(&root).ok().and_then(relative_name);
            match (inside, name) {
                (true, Some(name)) => {
                    found += 1;
                    matches.files.insert(name, path);
                }
                (false, _) => matches.notes.push(format!(
                    "{} resolves outside the workspace; skipped",
                    path.strip_prefix(&root).unwrap_or(&path).display()
                )),
                (true, None) => matches.notes.push(format!(
                    "{} has a name that is not UTF-8; skipped",
                    path.display()
                )),
            }
        }
        if found == 0 {
            matches
                .notes
                .push(format!("no files match {what} pattern {pattern}"));
        }
    }
    matches
}

/// `a/b/c` from a relative path, if every part is UTF-8.
fn relative_name(path: &Path) -> Option<String> {
    let parts: Option<Vec<&str>> = path
        .components()
        .map(|component| match component {
            Component::Normal(part) => part.to_str(),
            _ => None,
        })
        .collect();
    parts
        .map(|parts| parts.join("/"))
        .filter(|name| !name.is_empty())
}

/// Size and SHA-256 (lowercase hex) of a file, read in chunks.
async fn digest(path: &Path) -> anyhow::Result<(u64, String)> {
    let mut file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let read = file
            .read(&mut buffer)
            .await
            .with_context(|| format!("cannot read {}", path.display()))?;
        if read == 0 {
            break;
        }
        size += read as u64;
        hasher.update(&buffer[..read]);
    }
    Ok((size, hex::encode(hasher.finalize())))
}

/// Streams `header` then the file's chunks into `make`'s messages.
fn stream_file<T, F>(path: PathBuf, header: BlobHeader, make: F) -> ReceiverStream<T>
where
    T: Send + 'static,
    F: Fn(Option<BlobHeader>, Option<Vec<u8>>) -> T + Send + 'static,
{
    let (sender, receiver) = mpsc::channel(2);
    tokio::spawn(async move {
        if sender.send(make(Some(header), None)).await.is_err() {
            return;
        }
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cannot reopen a file being uploaded");
                return;
            }
        };
        loop {
            let mut chunk = vec![0u8; CHUNK_SIZE];
            let mut filled = 0;
            while filled < CHUNK_SIZE {
                match file.read(&mut chunk[filled..]).await {
                    Ok(0) => break,
                    Ok(read) => filled += read,
                    Err(error) => {
                        // Ending short makes the server refuse the upload.
                        tracing::warn!(path = %path.display(), %error, "cannot read a file being uploaded");
                        return;
                    }
                }
            }
            if filled == 0 {
                return;
            }
            chunk.truncate(filled);
            if sender.send(make(None, Some(chunk))).await.is_err() {
                return;
            }
            if filled < CHUNK_SIZE {
                return;
            }
        }
    });
    ReceiverStream::new(receiver)
}

/// Uploads the test results and artifacts of a job; logs what happened.
pub async fn publish(
    resources: &ResourceServiceClient<Authorized>,
    job_id: &str,
    workspace: &Path,
    test_results: &[String],
    artifacts: &[String],
    log: &mut JobLog,
    step_index: u32,
) {
    if !test_results.is_empty() {
        let matches = expand(workspace, test_results, "test results");
        for note in &matches.notes {
            log.system(step_index, note).await;
        }
        let mut summary: Option<TestSummary> = None;
        for (name, path) in &matches.files {
            match upload_test_results(resources, job_id, name, path).await {
                Ok((size, answer)) => {
                    log.system(
                        step_index,
                        &format!("uploaded test results {name} ({size} bytes)"),
                    )
                    .await;
                    if answer.is_some() {
                        summary = answer;
                    }
                }
                Err(error) => {
                    log.system(
                        step_index,
                        &format!("cannot upload test results {name}: {error:#}"),
                    )
                    .await;
                }
            }
        }
        if let Some(summary) = summary {
            log.system(step_index, &summary_line(&summary)).await;
            if !summary.failed_tests.is_empty() {
                let shown: Vec<&str> = summary
                    .failed_tests
                    .iter()
                    .take(SHOWN_FAILURES)
                    .map(String::as_str)
                    .collect();
                let more = summary.failed_tests.len().saturating_sub(SHOWN_FAILURES);
                let mut text = format!("failed tests: {}", shown.join(", "));
                if more > 0 {
                    text.push_str(&format!(" and {more} more"));
                }
                log.system(step_index, &text).await;
            }
        }
    }
    if !artifacts.is_empty() {
        let matches = expand(workspace, artifacts, "artifact");
        for note in &matches.notes {
            log.system(step_index, note).await;
        }
        for (name, path) in &matches.files {
            let line = match upload_artifact(resources, job_id, name, path).await {
                Ok(size) => format!("uploaded artifact {name} ({size} bytes)"),
                Err(error) => format!("cannot upload artifact {name}: {error:#}"),
            };
            log.system(step_index, &line).await;
        }
    }
}

/// `tests: 10 total, 8 passed, 1 failed, 1 skipped`.
pub fn summary_line(summary: &TestSummary) -> String {
    format!(
        "tests: {} total, {} passed, {} failed, {} skipped",
        summary.total, summary.passed, summary.failed, summary.skipped
    )
}

async fn upload_test_results(
    resources: &ResourceServiceClient<Authorized>,
    job_id: &str,
    name: &str,
    path: &Path,
) -> anyhow::Result<(u64, Option<TestSummary>)> {
    let (size, sha256) = digest(path).await?;
    let header = BlobHeader {
        name: name.to_owned(),
        size,
        sha256,
    };
    let response = with_retries("UploadTestResults", 3, || {
        let job_id = job_id.to_owned();
        let stream = stream_file(path.to_path_buf(), header.clone(), move |header, chunk| {
            UploadTestResultsRequest {
                job_id: if header.is_some() {
                    job_id.clone()
                } else {
                    String::new()
                },
                content: header
                    .map(upload_test_results_request::Content::Header)
                    .or(chunk.map(upload_test_results_request::Content::Chunk)),
            }
        });
        let mut client = resources.clone();
        async move { client.upload_test_results(stream).await }
    })
    .await
    .map_err(|status| anyhow!("{}", describe(&status)))?;
    Ok((size, response.into_inner().summary))
}

async fn upload_artifact(
    resources: &ResourceServiceClient<Authorized>,
    job_id: &str,
    name: &str,
    path: &Path,
) -> anyhow::Result<u64> {
    let (size, sha256) = digest(path).await?;
    let header = BlobHeader {
        name: name.to_owned(),
        size,
        sha256,
    };
    with_retries("UploadArtifact", 3, || {
        let job_id = job_id.to_owned();
        let stream = stream_file(path.to_path_buf(), header.clone(), move |header, chunk| {
            UploadArtifactRequest {
                job_id: if header.is_some() {
                    job_id.clone()
                } else {
                    String::new()
                },
                content: header
                    .map(upload_artifact_request::Content::Header)
                    .or(chunk.map(upload_artifact_request::Content::Chunk)),
            }
        });
        let mut client = resources.clone();
        async move { client.upload_artifact(stream).await }
    })
    .await
    .map_err(|status| anyhow!("{}", describe(&status)))?;
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_expand_to_files_inside_the_workspace_only() {
        let temp = tempfile::tempdir().expect("tempdir");
        let workspace = temp.path().join("ws");
        for dir in ["reports/unit", "dist", "sp ace[1]"] {
            std::fs::create_dir_all(workspace.join(dir)).expect("dir");
        }
        for file in [
            "reports/a.xml",
            "reports/unit/b.xml",
            "reports/notes.txt",
            "dist/app.bin",
            "sp ace[1]/c.xml",
        ] {
            std::fs::write(workspace.join(file), file).expect("file");
        }
        std::fs::write(temp.path().join("secret.xml"), "outside").expect("outside");
        std::os::unix::fs::symlink(
            temp.path().join("secret.xml"),
            workspace.join("reports/leak.xml"),
        )
        .expect("symlink");
        std::os::unix::fs::symlink("a.xml", workspace.join("reports/alias.xml")).expect("symlink");
        let patterns: Vec<String> = [
            "reports/**/*.xml",
            "sp ace[[]1]/*.xml",
            "../*.xml",
            "/etc/passwd",
            "nothing/*.xml",
            "reports/a.xml",
        ]
        .iter()
        .map(|pattern| (*pattern).to_owned())
        .collect();
        let matches = expand(&workspace, &patterns, "test results");
        let names: Vec<&str> = matches.files.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "reports/a.xml",
                "reports/alias.xml",
                "reports/unit/b.xml",
                "sp ace[1]/c.xml"
            ]
        );
        let notes = matches.notes.join("\n");
        assert!(
            notes.contains("reports/leak.xml resolves outside the workspace"),
            "{notes}"
        );
        assert!(
            notes.contains("pattern ../*.xml reaches outside the workspace"),
            "{notes}"
        );
        assert!(
            notes.contains("pattern /etc/passwd reaches outside the workspace"),
            "{notes}"
        );
        assert!(
            notes.contains("no files match test results pattern nothing/*.xml"),
            "{notes}"
        );
    }

    #[test]
    fn the_summary_reads_naturally() {
        let summary = TestSummary {
            total: 10,
            passed: 8,
            failed: 1,
            skipped: 1,
            ..TestSummary::default()
        };
        assert_eq!(
            summary_line(&summary),
            "tests: 10 total, 8 passed, 1 failed, 1 skipped"
        );
    }
}
