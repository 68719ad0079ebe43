//! Sources and artifacts: uploading a packed source for `job queue
//! --source`, and the `artifact` commands. Content moves in chunks of at
//! most 1 MiB and is checked against a SHA-256; nothing is held whole in
//! memory.

use std::io::{self, BufWriter, IsTerminal, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ferry_proto::time::now_micros;
use ferry_proto::v1::{
    BlobHeader, BlobInfo, DownloadArtifactRequest, DownloadArtifactResponse, JobState,
    ListArtifactsRequest, UploadSourceRequest, UploadSourceResponse, download_artifact_response,
    upload_source_request,
};
use futures::{Stream, StreamExt, stream};
use tokio::io::AsyncReadExt;

use crate::archive::{HashingWriter, PackedSource};
use crate::cli::{ArtifactCommand, OutputFormat};
use crate::client::{Client, status_message};
use crate::format::{self, Table};
use crate::output;
use crate::views::{ArtifactListView, ArtifactView, DownloadedView};

/// The largest chunk sent or accepted: 1 MiB.
pub const CHUNK_SIZE: usize = 1024 * 1024;

/// Transfers at least this large show a progress line on standard error.
pub const PROGRESS_THRESHOLD: u64 = 4 * 1024 * 1024;

/// `uploading source: 12.3 MiB / 40.0 MiB`.
pub fn progress_line(label: &str, done: u64, total: u64) -> String {
    format!(
        "{label}: {} / {}",
        format::mebibytes(done),
        format::mebibytes(total)
    )
}

/// A progress line on standard error for a large transfer: rewritten in
/// place on a terminal (at most ten times a second), else a line every
/// five seconds; the last state always ends the line.
pub(crate) struct Progress {
    label: String,
    total: u64,
    done: u64,
    shown: bool,
    terminal: bool,
    last: Option<Instant>,
}

impl Drop for Progress {
    /// A transfer that stopped early still ends its line, so that the error
    /// that follows starts on a line of its own.
    fn drop(&mut self) {
        if self.last.is_some() {
            self.finish();
        }
    }
}

impl Progress {
    pub(crate) fn new(label: impl Into<String>, total: u64) -> Self {
        Self {
            label: label.into(),
            total,
            done: 0,
            shown: total >= PROGRESS_THRESHOLD,
            terminal: io::stderr().is_terminal(),
            last: None,
        }
    }

    pub(crate) fn advance(&mut self, bytes: u64) {
        self.done = self.done.saturating_add(bytes);
        if !self.shown {
            return;
        }
        let every = if self.terminal {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(5)
        };
        if self.last.is_none_or(|last| last.elapsed() >= every) {
            self.last = Some(Instant::now());
            self.print(false);
        }
    }

    pub(crate) fn finish(&mut self) {
        if self.shown {
            self.print(true);
            self.shown = false;
        }
    }

    fn print(&self, last: bool) {
        let line = progress_line(&self.label, self.done, self.total);
        let mut stderr = io::stderr();
        // Progress is a courtesy: a failure to show it is ignored.
        let _ = if self.terminal {
            write!(stderr, "\r{line}{}", if last { "\n" } else { "" })
        } else {
            writeln!(stderr, "{line}")
        };
        let _ = stderr.flush();
    }
}

/// Uploads a packed source for jobs of `pool`: the header first, then the
/// archive in chunks of at most 1 MiB. Returns the server's answer, whose
/// `source_id` goes into `JobSpec.source_id`.
pub(crate) async fn upload_source(
    client: &mut Client,
    packed: PackedSource,
    pool: &str,
    name: &str,
) -> anyhow::Result<UploadSourceResponse> {
    let header = UploadSourceRequest {
        content: Some(upload_source_request::Content::Header(BlobHeader {
            name: name.to_owned(),
            size: packed.size,
            sha256: packed.sha256.clone(),
        })),
        pool: pool.to_owned(),
    };
    let progress = Progress::new("uploading source", packed.size);
    let failure: Arc<Mutex<Option<io::Error>>> = Arc::default();
    let chunks = read_chunks(
        tokio::fs::File::from_std(packed.file),
        progress,
        failure.clone(),
    )
    .map(|chunk| UploadSourceRequest {
        content: Some(upload_source_request::Content::Chunk(chunk)),
        pool: String::new(),
    });
    let requests = stream::once(async { header }).chain(chunks);
    let result = client.resources.upload_source(requests).await;
    // A read error ends the stream early; it explains the server's refusal.
    if let Some(error) = failure.lock().ok().and_then(|mut slot| slot.take()) {
        return Err(anyhow::Error::from(error).context("cannot read the source archive"));
    }
    let response = result.map_err(|status| client.error(&status))?.into_inner();
    if response.source_id.is_empty() {
        bail!("the server returned no source id");
    }
    Ok(response)
}

/// The file's bytes in chunks of [`CHUNK_SIZE`] (the last may be shorter);
/// a read error ends the stream and is left in `failure`.
fn read_chunks(
    file: tokio::fs::File,
    progress: Progress,
    failure: Arc<Mutex<Option<io::Error>>>,
) -> impl Stream<Item = Vec<u8>> + Send + 'static {
    stream::unfold(Some((file, progress)), move |state| {
        let failure = failure.clone();
        async move {
            let (mut file, mut progress) = state?;
            let mut chunk = vec![0; CHUNK_SIZE];
            let mut filled = 0;
            while filled < CHUNK_SIZE {
                match file.read(&mut chunk[filled..]).await {
                    Ok(0) => break,
                    Ok(read) => filled += read,
                    Err(error) => {
                        if let Ok(mut slot) = failure.lock() {
                            *slot = Some(error);
                        }
                        progress.finish();
                        return None;
                    }
                }
            }
            if filled == 0 {
                progress.finish();
                return None;
            }
            chunk.truncate(filled);
            progress.advance(filled as u64);
            Some((chunk, Some((file, progress))))
        }
    })
}

/// Runs an `artifact` command.
pub(crate) async fn artifact(
    client: &mut Client,
    command: ArtifactCommand,
    format: OutputFormat,
) -> anyhow::Result<ExitCode> {
    match command {
        ArtifactCommand::List { job_id } => {
            let response = client
                .resources
                .list_artifacts(ListArtifactsRequest {
                    job_id: job_id.clone(),
                })
                .await
                .map_err(|status| client.error(&status))?
                .into_inner();
            let state = response.job_state();
            match format {
                OutputFormat::Json => output::json(&ArtifactListView {
                    job_id,
                    job_state: format::job_state(state).to_owned(),
                    artifacts: response.artifacts.iter().map(ArtifactView::from).collect(),
                })?,
                OutputFormat::Table => {
                    output::text(&artifact_table(&response.artifacts, now_micros()))?;
                    if !is_final(state) {
                        output::note(&format!(
                            "job {job_id} is {}: more artifacts may come",
                            format::job_state(state)
                        ));
                    }
                }
            }
        }
        ArtifactCommand::Download {
            job_id,
            name,
            output_file,
            force,
        } => {
            let destination = destination(&name, output_file.as_deref())?;
            if let Destination::File(path) = &destination
                && !force
                && std::fs::symlink_metadata(path).is_ok()
            {
                bail!("{} exists: pass --force to replace it", path.display());
            }
            let info = download(client, &job_id, &name, &destination, force).await?;
            if let Destination::File(path) = destination {
                match format {
                    OutputFormat::Json => output::json(&DownloadedView {
                        job_id,
                        name,
                        path: path.display().to_string(),
                        size: info.size,
                        sha256: info.sha256,
                    })?,
                    OutputFormat::Table => output::text(&format!(
                        "downloaded {name} to {} ({}, sha256 {} verified)\n",
                        path.display(),
                        format::size(info.size),
                        short_hash(&info.sha256)
                    ))?,
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn is_final(state: JobState) -> bool {
    matches!(
        state,
        JobState::Succeeded | JobState::Failed | JobState::Canceled
    )
}

fn short_hash(sha256: &str) -> &str {
    sha256.get(..12).unwrap_or(sha256)
}

/// The `artifact list` table; the SHA-256 is cut to 12 characters
/// (`-o json` has it whole).
pub fn artifact_table(artifacts: &[BlobInfo], now: i64) -> String {
    let mut table = Table::new(&["NAME", "SIZE", "SHA256", "CREATED"]);
    for artifact in artifacts {
        table.row(vec![
            artifact.name.clone(),
            format::size(artifact.size),
            format::or_dash(short_hash(&artifact.sha256)),
            format::relative_cell(format::micros(artifact.create_time.as_ref()), now),
        ]);
    }
    table.render()
}

/// Where a download goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// Standard output (`-O -`).
    Stdout,
    /// A file.
    File(PathBuf),
}

/// The destination of artifact `name`: `-O -` is standard output, `-O DIR`
/// an existing directory to put it in under its last name part, `-O FILE`
/// that file; without `-O`, its last name part in the current directory.
pub fn destination(name: &str, output: Option<&Path>) -> anyhow::Result<Destination> {
    let file_name = || -> anyhow::Result<PathBuf> {
        let last = name.rsplit('/').next().unwrap_or(name);
        let mut components = Path::new(last).components();
        match (components.next(), components.next()) {
            (Some(Component::Normal(part)), None) => Ok(PathBuf::from(part)),
            _ => bail!("cannot name a file after artifact `{name}`: pass -O FILE"),
        }
    };
    match output {
        Some(path) if path == Path::new("-") => Ok(Destination::Stdout),
        Some(path) if path.is_dir() => Ok(Destination::File(path.join(file_name()?))),
        Some(path) => Ok(Destination::File(path.to_path_buf())),
        None => Ok(Destination::File(file_name()?)),
    }
}

/// Downloads an artifact to `destination`: into a temporary file first,
/// renamed into place (or copied to standard output) only once its size and
/// SHA-256 match the server's announcement.
async fn download(
    client: &mut Client,
    job_id: &str,
    name: &str,
    destination: &Destination,
    force: bool,
) -> anyhow::Result<BlobInfo> {
    let request = DownloadArtifactRequest {
        job_id: job_id.to_owned(),
        name: name.to_owned(),
    };
    let url = client.url.clone();
    let messages = client
        .resources
        .download_artifact(request)
        .await
        .map_err(|status| client.error(&status))?
        .into_inner()
        .map(move |message| message.map_err(|status| status_message(&status, &url)));
    match destination {
        Destination::Stdout => {
            let mut spool = tempfile::tempfile().context("cannot create a temporary file")?;
            let info = receive(messages, &mut spool, name).await?;
            spool.seek(SeekFrom::Start(0))?;
            let mut stdout = io::stdout().lock();
            io::copy(&mut spool, &mut stdout)?;
            stdout.flush()?;
            Ok(info)
        }
        Destination::File(path) => {
            let directory = match path.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => parent,
                _ => Path::new("."),
            };
            let mut builder = tempfile::Builder::new();
            builder.prefix(".ferryctl-download-");
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                builder.permissions(std::fs::Permissions::from_mode(0o666));
            }
            let mut temporary = builder
                .tempfile_in(directory)
                .with_context(|| format!("cannot create a file in {}", directory.display()))?;
            let info = receive(messages, temporary.as_file_mut(), name).await?;
            let persisted = if force {
                temporary.persist(path)
            } else {
                temporary.persist_noclobber(path)
            };
            persisted.map_err(|error| {
                if error.error.kind() == io::ErrorKind::AlreadyExists {
                    anyhow::anyhow!("{} exists: pass --force to replace it", path.display())
                } else {
                    anyhow::Error::from(error.error)
                        .context(format!("cannot write {}", path.display()))
                }
            })?;
            Ok(info)
        }
    }
}

/// Reads a download: the info first, then chunks written to `out`, checked
/// against the announced size as they come and against the SHA-256 at the
/// end. Returns the info once everything matched.
pub async fn receive(
    mut messages: impl Stream<Item = Result<DownloadArtifactResponse, String>> + Unpin,
    out: &mut impl Write,
    name: &str,
) -> anyhow::Result<BlobInfo> {
    let first = messages
        .next()
        .await
        .ok_or_else(|| anyhow::anyhow!("the server sent nothing for artifact {name}"))?
        .map_err(anyhow::Error::msg)?;
    let Some(download_artifact_response::Content::Info(info)) = first.content else {
        bail!("the server did not start artifact {name} with its size and checksum");
    };
    if info.sha256.len() != 64
        || !info
            .sha256
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    {
        bail!("the server announced no valid SHA-256 for artifact {name}");
    }
    let mut progress = Progress::new(format!("downloading {name}"), info.size);
    let mut writer = HashingWriter::new(BufWriter::new(out));
    let mut received: u64 = 0;
    while let Some(message) = messages.next().await {
        let message = message.map_err(anyhow::Error::msg)?;
        match message.content {
            Some(download_artifact_response::Content::Chunk(chunk)) => {
                received = received.saturating_add(chunk.len() as u64);
                if received > info.size {
                    progress.finish();
                    bail!(
                        "artifact {name} is longer than the {} bytes the server announced: refused",
                        info.size
                    );
                }
                writer
                    .write_all(&chunk)
                    .with_context(|| format!("cannot write artifact {name}"))?;
                progress.advance(chunk.len() as u64);
            }
            Some(download_artifact_response::Content::Info(_)) => {
                progress.finish();
                bail!("the server sent the info of artifact {name} twice");
            }
            None => {}
        }
    }
    progress.finish();
    writer
        .flush()
        .with_context(|| format!("cannot write artifact {name}"))?;
    let (written, sha256) = writer.finish();
    if written != info.size {
        bail!(
            "artifact {name} is incomplete: received {written} of {} bytes",
            info.size
        );
    }
    if sha256 != info.sha256 {
        bail!(
            "artifact {name} failed verification: its SHA-256 is {sha256}, the server announced {}; nothing was written",
            info.sha256
        );
    }
    Ok(info)
}

#[cfg(test)]
mod tests;
