//! Running one step: its script as a child process in its own process group,
//! stdout and stderr read line by line into the job log, a timeout that
//! stops the whole process group, and interruption when the job is stopped
//! (canceled, timed out, lease lost, agent shut down): SIGINT to the group,
//! SIGTERM after [`INTERRUPT_GRACE`], SIGKILL after as long again.

use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::os::unix::process::ExitStatusExt as _;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use ferry_proto::v1::LogStream;
use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};

use crate::backoff::seconds;
use crate::joblog::JobLog;
use crate::lines::LineSplitter;
use crate::stop::StopSignal;

/// How long a step gets between SIGTERM and SIGKILL after its timeout.
pub const KILL_GRACE: Duration = Duration::from_secs(5);

/// How long an interrupted step gets between SIGINT and SIGTERM, and again
/// between SIGTERM and SIGKILL.
pub const INTERRUPT_GRACE: Duration = Duration::from_secs(5);

/// How long to keep reading after the step's shell exited, while processes
/// it left behind still hold its output open, before they are killed.
pub const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// One step, ready to run.
#[derive(Debug, Clone)]
pub struct StepCommand {
    /// Position in the job, from 0.
    pub index: u32,
    /// Display name.
    pub name: String,
    /// The script.
    pub script: String,
    /// `"bash"` (or empty) or `"sh"`.
    pub shell: String,
    /// The working directory.
    pub workspace: PathBuf,
    /// Where the script file is written.
    pub script_dir: PathBuf,
    /// Environment added to the agent's own (which loses FERRY_TOKEN).
    pub env: Vec<(String, String)>,
    /// How long the step may run.
    pub timeout: Duration,
}

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepOutcome {
    /// The exit code; 128 + signal number when a signal ended it.
    pub exit_code: i32,
    /// Whether it was stopped because its timeout passed.
    pub timed_out: bool,
    /// Whether it was interrupted because the job was stopped.
    pub interrupted: bool,
    /// How long it ran.
    pub elapsed: Duration,
}

impl StepOutcome {
    /// Exited 0 in time, and was not interrupted.
    pub fn succeeded(&self) -> bool {
        self.exit_code == 0 && !self.timed_out && !self.interrupted
    }
}

/// Environment variables never passed to a step.
pub const REMOVED_ENV: [&str; 1] = ["FERRY_TOKEN"];

/// Runs the step to its end, writing its output to `log`; interrupts it when
/// `stop` is set. An error means it could not start (unknown shell, script
/// not writable, spawn failed).
pub async fn run_step(
    step: &StepCommand,
    log: &mut JobLog,
    stop: &StopSignal,
) -> anyhow::Result<StepOutcome> {
    let mut command = build_command(step)?;
    let started = Instant::now();
    let mut child = command.spawn().with_context(|| {
        format!(
            "cannot start {}",
            command.as_std().get_program().to_string_lossy()
        )
    })?;
    let process_group = child.id();

    let (sender, mut lines) = mpsc::channel(256);
    let mut readers: Vec<JoinHandle<()>> = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        readers.push(tokio::spawn(read_lines(
            stdout,
            LogStream::Stdout,
            sender.clone(),
        )));
    }
    if let Some(stderr) = child.stderr.take() {
        readers.push(tokio::spawn(read_lines(stderr, LogStream::Stderr, sender)));
    }

    let far_future = started + Duration::from_secs(100 * 365 * 24 * 3600);
    let deadline = started.checked_add(step.timeout).unwrap_or(far_future);
    let mut status: Option<ExitStatus> = None;
    let mut timed_out = false;
    let mut kill_at: Option<Instant> = None;
    let mut drain_until: Option<Instant> = None;
    let mut killed_leftovers = false;
    let mut lines_open = true;
    let mut interrupted = false;
    // The next escalation of an interruption: when, and which signal.
    let mut escalation: Option<(Instant, &'static str)> = None;
    let stopped = stop.wait();
    tokio::pin!(stopped);
    while status.is_none() || lines_open {
        tokio::select! {
            line = lines.recv(), if lines_open => match line {
                Some((stream, text)) => log.output(step.index, stream, &text).await,
                None => lines_open = false,
            },
            result = child.wait(), if status.is_none() => {
                status = Some(result.context("cannot wait for the step's process")?);
                if timed_out || interrupted {
                    // Whatever of the group survived the shell goes too.
                    signal_group(process_group, "KILL").await;
                }
                escalation = None;
                drain_until = Some(Instant::now() + DRAIN_GRACE);
            }
            () = sleep_until(deadline), if status.is_none() && !timed_out => {
                timed_out = true;
                let text = format!("step {} timed out after {}; stopping it", step.name, seconds(step.timeout));
                log.system(step.index, &text).await;
                signal_group(process_group, "TERM").await;
                kill_at = Some(Instant::now() + KILL_GRACE);
            }
            reason = &mut stopped, if status.is_none() && !interrupted => {
                interrupted = true;
                let text = format!(
                    "stopping step {} ({}): SIGINT now, SIGTERM after {}, SIGKILL after {} more",
                    step.name,
                    reason.describe(),
                    seconds(INTERRUPT_GRACE),
                    seconds(INTERRUPT_GRACE)
                );
                log.system(step.index, &text).await;
                signal_group(process_group, "INT").await;
                escalation = Some((Instant::now() + INTERRUPT_GRACE, "TERM"));
            }
            () = sleep_until(escalation.map_or(far_future, |(at, _)| at)), if status.is_none() && escalation.is_some() => {
                let signal = escalation.map_or("KILL", |(_, signal)| signal);
                signal_group(process_group, signal).await;
                escalation = (signal == "TERM").then(|| (Instant::now() + INTERRUPT_GRACE, "KILL"));
            }
            () = sleep_until(kill_at.unwrap_or(far_future)), if status.is_none() && kill_at.is_some() => {
                kill_at = None;
                signal_group(process_group, "KILL").await;
            }
            () = sleep_until(drain_until.unwrap_or(far_future)), if lines_open && drain_until.is_some() => {
                if killed_leftovers {
                    // Processes outside the group hold the output open.
                    for reader in &readers {
                        reader.abort();
                    }
                    while let Ok((stream, text)) = lines.try_recv() {
                        log.output(step.index, stream, &text).await;
                    }
                    log.system(step.index, "stopped reading output of processes the step left running").await;
                    lines_open = false;
                } else {
                    killed_leftovers = true;
                    drain_until = Some(Instant::now() + DRAIN_GRACE);
                    if signal_group(process_group, "KILL").await {
                        log.system(step.index, "killed processes the step left running with its output open").await;
                    }
                }
            }
        }
    }
    for reader in readers {
        reader.abort();
    }
    let exit_code = status.map(exit_code).unwrap_or(-1);
    Ok(StepOutcome {
        exit_code,
        timed_out,
        interrupted,
        elapsed: started.elapsed(),
    })
}

/// The shell command for the step, its script written to disk.
fn build_command(step: &StepCommand) -> anyhow::Result<tokio::process::Command> {
    let (program, flags): (&str, &[&str]) = match step.shell.as_str() {
        "" | "bash" => ("bash", &["-eo", "pipefail"]),
        "sh" => ("sh", &["-e"]),
        other => bail!("unknown shell {other:?}: use bash or sh"),
    };
    let script_path = write_script(step)?;
    let mut command = tokio::process::Command::new(program);
    // Removed from what the agent passes on; a job may still set them.
    for key in REMOVED_ENV {
        command.env_remove(key);
    }
    command
        .args(flags)
        .arg(&script_path)
        .current_dir(&step.workspace)
        .envs(step.env.iter().map(|(key, value)| (key, value)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    Ok(command)
}

/// The exit code, or 128 + the signal number when a signal ended it.
pub fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(-1)
}

/// Writes the script to `script_dir/step-N.sh`, readable by the owner only.
fn write_script(step: &StepCommand) -> anyhow::Result<PathBuf> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&step.script_dir)
        .with_context(|| format!("cannot create {}", step.script_dir.display()))?;
    let path = step.script_dir.join(format!("step-{}.sh", step.index + 1));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    std::io::Write::write_all(&mut file, step.script.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// Reads one of the child's pipes to its end, line by line.
async fn read_lines<R>(mut reader: R, stream: LogStream, sender: mpsc::Sender<(LogStream, String)>)
where
    R: AsyncRead + Unpin,
{
    let mut splitter = LineSplitter::new();
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let lines = match reader.read(&mut buffer).await {
            Ok(0) => break,
            Ok(read) => splitter.push(&buffer[..read]),
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => {
                tracing::debug!(?stream, %error, "cannot read step output");
                break;
            }
        };
        for line in lines {
            if sender.send((stream, line)).await.is_err() {
                return;
            }
        }
    }
    for line in splitter.finish() {
        if sender.send((stream, line)).await.is_err() {
            return;
        }
    }
}

/// Sends `signal` (a name such as TERM or KILL) to every process in the
/// group; true when at least one got it. Uses `kill(1)` (the shell's builtin
/// when there is no kill binary) since the crate forbids unsafe code.
async fn signal_group(process_group: Option<u32>, signal: &str) -> bool {
    let Some(process_group) = process_group else {
        return false;
    };
    let target = format!("-{process_group}");
    let quiet = |command: &mut tokio::process::Command| {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
    };
    let mut command = tokio::process::Command::new("kill");
    command.args(["-s", signal, "--", &target]);
    quiet(&mut command);
    match command.status().await {
        Ok(status) => return status.success(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            tracing::warn!(%error, process_group, signal, "cannot signal the step's processes");
            return false;
        }
    }
    let mut command = tokio::process::Command::new("sh");
    command.args(["-c", "kill -s \"$1\" -- \"$2\"", "sh", signal, &target]);
    quiet(&mut command);
    match command.status().await {
        Ok(status) => status.success(),
        Err(error) => {
            tracing::warn!(%error, process_group, signal, "cannot signal the step's processes");
            false
        }
    }
}

#[cfg(test)]
#[path = "step_tests.rs"]
mod tests;
