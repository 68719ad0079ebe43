//! Tests of the step runner with real scripts.

use std::path::Path;
use std::time::Duration;

use ferry_proto::v1::{LogLine, LogStream};
use tokio::sync::mpsc;

use super::*;
use crate::masking::Masker;
use crate::stop::Stop;

fn command(dir: &Path, script: &str, timeout: Duration) -> StepCommand {
    let workspace = dir.join("ws");
    std::fs::create_dir_all(&workspace).expect("workspace");
    StepCommand {
        index: 2,
        name: "build".into(),
        script: script.into(),
        shell: String::new(),
        workspace,
        script_dir: dir.join("scripts"),
        env: vec![
            ("FERRY_STEP_NAME".into(), "build".into()),
            ("MY_SECRET".into(), "s3kr1t-value".into()),
        ],
        timeout,
    }
}

async fn run(step: &StepCommand) -> (StepOutcome, Vec<LogLine>) {
    let (sender, mut receiver) = mpsc::channel(1024);
    let mut log = JobLog::new(Masker::new(["s3kr1t-value"]), sender);
    let outcome = run_step(step, &mut log, &StopSignal::new())
        .await
        .expect("step runs");
    drop(log);
    let mut lines = Vec::new();
    while let Some(line) = receiver.recv().await {
        lines.push(line);
    }
    (outcome, lines)
}

fn texts(lines: &[LogLine], stream: LogStream) -> Vec<&str> {
    lines
        .iter()
        .filter(|line| line.stream == stream as i32)
        .map(|line| line.text.as_str())
        .collect()
}

/// Whether a process is gone (or a zombie nobody reaped yet).
fn is_dead(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[tokio::test]
async fn runs_a_script_and_reports_lines_streams_masking_and_exit_code() {
    let temp = tempfile::tempdir().expect("tempdir");
    let script = "echo one\necho two >&2\necho \"secret is $MY_SECRET\"\nprintf 'crlf\\r\\n'\n\
                  echo \"in $PWD as $FERRY_STEP_NAME\"\necho three\nprintf 'no newline'\nexit 3\n";
    let step = command(temp.path(), script, Duration::from_secs(30));
    let (outcome, lines) = run(&step).await;
    assert_eq!(outcome.exit_code, 3);
    assert!(!outcome.timed_out);
    assert!(!outcome.succeeded());
    let workspace = step.workspace.canonicalize().expect("canonical");
    assert_eq!(
        texts(&lines, LogStream::Stdout),
        [
            "one".to_owned(),
            "secret is ***".to_owned(),
            "crlf".to_owned(),
            format!("in {} as build", workspace.display()),
            "three".to_owned(),
            "no newline".to_owned(),
        ]
    );
    assert_eq!(texts(&lines, LogStream::Stderr), ["two"]);
    let sequences: Vec<u64> = lines.iter().map(|line| line.sequence).collect();
    assert_eq!(sequences, (1..=7).collect::<Vec<u64>>());
    assert!(lines.iter().all(|line| line.step_index == 2));
    assert!(!lines.iter().any(|line| line.text.contains("s3kr1t")));
}

#[tokio::test]
async fn bash_runs_with_errexit_and_pipefail() {
    let temp = tempfile::tempdir().expect("tempdir");
    let step = command(
        temp.path(),
        "false | true\necho unreachable\n",
        Duration::from_secs(30),
    );
    let (outcome, lines) = run(&step).await;
    assert_eq!(outcome.exit_code, 1);
    assert!(texts(&lines, LogStream::Stdout).is_empty());
}

#[tokio::test]
async fn sh_runs_with_errexit_and_success_is_zero() {
    let temp = tempfile::tempdir().expect("tempdir");
    let mut step = command(temp.path(), "echo ok\n", Duration::from_secs(30));
    step.shell = "sh".into();
    let (outcome, lines) = run(&step).await;
    assert!(outcome.succeeded());
    assert_eq!(texts(&lines, LogStream::Stdout), ["ok"]);

    step.script = "false\necho unreachable\n".into();
    let (outcome, lines) = run(&step).await;
    assert_eq!(outcome.exit_code, 1);
    assert!(lines.is_empty());

    step.shell = "fish".into();
    let (sender, _receiver) = mpsc::channel(1);
    let mut log = JobLog::new(Masker::default(), sender);
    let error = run_step(&step, &mut log, &StopSignal::new())
        .await
        .expect_err("unknown shell");
    assert!(error.to_string().contains("unknown shell"), "{error}");
}

#[tokio::test]
async fn a_signal_reports_128_plus_the_signal() {
    let temp = tempfile::tempdir().expect("tempdir");
    let step = command(temp.path(), "kill -KILL $$\n", Duration::from_secs(30));
    let (outcome, _) = run(&step).await;
    assert_eq!(outcome.exit_code, 128 + 9);
}

#[tokio::test]
async fn a_timeout_kills_the_whole_process_group() {
    let temp = tempfile::tempdir().expect("tempdir");
    // A background sleep, one that ignores SIGTERM (needs the SIGKILL), and
    // a foreground sleep: all in the step's process group.
    let script = "sleep 600 &\necho $! > bg.pid\n(trap '' TERM; exec sleep 600) &\necho $! > stubborn.pid\n\
                  echo started\nsleep 600\n";
    let step = command(temp.path(), script, Duration::from_secs(1));
    let started = std::time::Instant::now();
    let (outcome, lines) = run(&step).await;
    let elapsed = started.elapsed();
    assert!(outcome.timed_out);
    assert!(!outcome.succeeded());
    assert_eq!(outcome.exit_code, 128 + 15, "bash ends on SIGTERM");
    assert!(elapsed < Duration::from_secs(15), "took {elapsed:?}");
    assert_eq!(texts(&lines, LogStream::Stdout), ["started"]);
    let system = texts(&lines, LogStream::System);
    assert_eq!(system, ["step build timed out after 1.0 s; stopping it"]);
    for file in ["bg.pid", "stubborn.pid"] {
        let pid = std::fs::read_to_string(step.workspace.join(file)).expect("pid file");
        let pid = pid.trim();
        let mut dead = is_dead(pid);
        for _ in 0..50 {
            if dead {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            dead = is_dead(pid);
        }
        assert!(dead, "process {pid} from {file} survived the timeout");
    }
}

#[tokio::test]
async fn processes_left_holding_the_output_are_killed_after_the_step() {
    let temp = tempfile::tempdir().expect("tempdir");
    let script = "sleep 600 &\necho $! > bg.pid\necho done\n";
    let step = command(temp.path(), script, Duration::from_secs(60));
    let (outcome, lines) = run(&step).await;
    assert!(outcome.succeeded());
    assert!(
        outcome.elapsed < Duration::from_secs(10),
        "{:?}",
        outcome.elapsed
    );
    assert_eq!(texts(&lines, LogStream::Stdout), ["done"]);
    assert_eq!(
        texts(&lines, LogStream::System),
        ["killed processes the step left running with its output open"]
    );
    let pid = std::fs::read_to_string(step.workspace.join("bg.pid")).expect("pid file");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(is_dead(pid.trim()));
}

#[tokio::test]
async fn a_step_ignoring_sigterm_gets_sigkill_after_the_grace_period() {
    let temp = tempfile::tempdir().expect("tempdir");
    let step = command(
        temp.path(),
        "trap '' TERM\necho started\nsleep 600\n",
        Duration::from_millis(500),
    );
    let (outcome, lines) = run(&step).await;
    assert!(outcome.timed_out);
    assert_eq!(outcome.exit_code, 128 + 9);
    assert!(outcome.elapsed >= KILL_GRACE, "{:?}", outcome.elapsed);
    assert!(
        outcome.elapsed < KILL_GRACE + Duration::from_secs(10),
        "{:?}",
        outcome.elapsed
    );
    assert_eq!(texts(&lines, LogStream::Stdout), ["started"]);
}

#[test]
fn the_agents_token_variable_is_not_passed_on() {
    let temp = tempfile::tempdir().expect("tempdir");
    let step = command(temp.path(), "true\n", Duration::from_secs(1));
    let built = build_command(&step).expect("command");
    let envs: Vec<_> = built.as_std().get_envs().collect();
    assert!(
        envs.contains(&(std::ffi::OsStr::new("FERRY_TOKEN"), None)),
        "{envs:?}"
    );
    assert!(envs.contains(&(
        std::ffi::OsStr::new("MY_SECRET"),
        Some(std::ffi::OsStr::new("s3kr1t-value"))
    )));
    let args: Vec<_> = built.as_std().get_args().collect();
    assert_eq!(args[..2], ["-eo", "pipefail"]);
    assert_eq!(built.as_std().get_program(), "bash");
}

#[tokio::test]
async fn a_stop_interrupts_the_group_with_sigint_then_sigterm() {
    let temp = tempfile::tempdir().expect("tempdir");
    // The shell ignores SIGINT (so does its background child, as
    // non-interactive shells do); the foreground sleep is a child too.
    let script = "trap '' INT\nsleep 600 &\necho $! > bg.pid\necho started\nsleep 600\n";
    let step = command(temp.path(), script, Duration::from_secs(600));
    let stop = StopSignal::new();
    let (sender, mut receiver) = mpsc::channel(1024);
    let mut log = JobLog::new(Masker::default(), sender);
    let trigger = {
        let stop = stop.clone();
        let pid_file = step.workspace.join("bg.pid");
        tokio::spawn(async move {
            while !pid_file.exists() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            stop.trigger(Stop::Canceled("the job was canceled on the server".into()));
        })
    };
    let outcome = run_step(&step, &mut log, &stop).await.expect("runs");
    trigger.await.expect("trigger");
    drop(log);
    let mut lines = Vec::new();
    while let Some(line) = receiver.recv().await {
        lines.push(line);
    }
    assert!(outcome.interrupted);
    assert!(!outcome.timed_out);
    assert!(!outcome.succeeded());
    assert_eq!(
        outcome.exit_code,
        128 + 15,
        "SIGINT ignored, SIGTERM ends it"
    );
    assert!(outcome.elapsed >= INTERRUPT_GRACE, "{:?}", outcome.elapsed);
    assert!(
        outcome.elapsed < INTERRUPT_GRACE * 2,
        "{:?}",
        outcome.elapsed
    );
    assert_eq!(
        texts(&lines, LogStream::System),
        [
            "stopping step build (the job was canceled on the server): SIGINT now, SIGTERM after 5.0 s, SIGKILL after 5.0 s more"
        ]
    );
    let pid = std::fs::read_to_string(step.workspace.join("bg.pid")).expect("pid file");
    let mut dead = is_dead(pid.trim());
    for _ in 0..50 {
        if dead {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        dead = is_dead(pid.trim());
    }
    assert!(dead, "the background child survived");
}
