//! The whole agent against the fake server, for the job's life beyond its
//! steps: leases, cancellation, timeouts, sources, uploads, several jobs at
//! once and graceful drain.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser as _;
use ferry_proto::v1::{AgentJob, JobResult, LogStream, StepState};
use tokio::task::JoinHandle;

use crate::flow_tests::{configured_agent, step};
use crate::listener::{ShutdownHandle, run_until};
use crate::source::tests::{Raw, archive};
use crate::testserver::{Fake, JOB_TOKEN};
use crate::{Cli, Command};

const JOB_A: &str = "0190f0a0-dddd-7000-8000-00000000000a";
const JOB_B: &str = "0190f0a0-dddd-7000-8000-00000000000b";

fn job(job_id: &str, token: &str, steps: Vec<ferry_proto::v1::StepSpec>) -> AgentJob {
    AgentJob {
        job_id: job_id.into(),
        name: format!("job {}", &job_id[job_id.len() - 1..]),
        steps,
        job_token: token.into(),
        ..AgentJob::default()
    }
}

fn millis(millis: u64) -> Option<prost_types::Duration> {
    Some(ferry_proto::time::duration_to_proto(Duration::from_millis(
        millis,
    )))
}

/// Starts `ferry-agent run --dir DIR ARGS…` with a stop switch.
fn spawn_agent(dir: &str, args: &[&str]) -> (ShutdownHandle, JoinHandle<anyhow::Result<()>>) {
    let mut argv = vec!["ferry-agent", "run", "--dir", dir];
    argv.extend_from_slice(args);
    let Command::Run(run_args) = Cli::try_parse_from(argv).expect("arguments").command else {
        panic!("not run");
    };
    let shutdown = ShutdownHandle::new();
    let task = tokio::spawn(run_until(run_args, shutdown.clone()));
    (shutdown, task)
}

async fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn finish(task: JoinHandle<anyhow::Result<()>>, timeout: Duration) {
    tokio::time::timeout(timeout, task)
        .await
        .expect("the agent stops in time")
        .expect("agent task")
        .expect("the agent succeeds");
}

fn has_line(fake: &Fake, job_id: &str, text: &str) -> bool {
    fake.lines_of(job_id).iter().any(|line| line.text == text)
}

fn texts(fake: &Fake, job_id: &str) -> Vec<String> {
    fake.lines_of(job_id)
        .into_iter()
        .map(|line| line.text)
        .collect()
}

fn reports(fake: &Fake, job_id: &str) -> Vec<(u32, i32, Option<i32>)> {
    fake.state()
        .reports
        .iter()
        .filter(|report| report.job_id == job_id)
        .map(|report| (report.index, report.state, report.exit_code))
        .collect()
}

/// Whether a process is gone (or a zombie nobody reaped yet).
fn is_dead(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

async fn assert_dead(pid_file: &Path) {
    let pid = std::fs::read_to_string(pid_file).expect("pid file");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !is_dead(&pid) {
        assert!(
            Instant::now() < deadline,
            "process {} from {} survived",
            pid.trim(),
            pid_file.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn assert_gap_free(fake: &Fake, job_id: &str) {
    let sequences: Vec<u64> = fake
        .lines_of(job_id)
        .iter()
        .map(|line| line.sequence)
        .collect();
    assert_eq!(
        sequences,
        (1..=sequences.len() as u64).collect::<Vec<u64>>()
    );
}

#[tokio::test]
async fn the_first_step_runs_only_once_the_server_stored_its_start() {
    let (fake, temp, dir) = configured_agent().await;
    let marker = temp.path().join("ran");
    fake.state().refuse_streams = true;
    fake.queue(job(
        JOB_A,
        JOB_TOKEN,
        vec![
            step("first", &format!("touch {}", marker.display())),
            step("second", "echo second"),
        ],
    ));
    let (_shutdown, task) = spawn_agent(&dir, &["--once"]);
    wait_for("a refused log stream", Duration::from_secs(10), || {
        fake.state().refused_streams >= 1
    })
    .await;
    // The server knows nothing of the start yet: the step waits (had the
    // agent died now, the server could hand the job to another agent).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!marker.exists(), "the step ran before its start was stored");
    assert!(fake.state().reports.is_empty());

    fake.state().refuse_streams = false;
    finish(task, Duration::from_secs(20)).await;
    assert!(marker.exists());
    let reported = reports(&fake, JOB_A);
    assert_eq!(
        reported,
        [
            (0, StepState::Running as i32, None),
            (0, StepState::Succeeded as i32, Some(0)),
            (1, StepState::Running as i32, None),
            (1, StepState::Succeeded as i32, Some(0)),
        ]
    );
    let lines = fake.lines_of(JOB_A);
    assert_eq!(
        lines[0].step_update.map(|update| update.state),
        Some(StepState::Running as i32),
        "the step's first line carries its start"
    );
    assert_eq!(fake.state().completions.len(), 1);
}

/// Runs a one-step job whose end the server refuses with `code`; returns
/// the fake once the agent is done: well within the 30 s the uploader
/// would wait for a missing ack.
async fn run_with_refused_end(code: tonic::Code) -> Fake {
    let (fake, _temp, dir) = configured_agent().await;
    fake.state().refuse_ends = Some(code);
    fake.queue(job(JOB_A, JOB_TOKEN, vec![step("one", "echo one")]));
    let (_shutdown, task) = spawn_agent(&dir, &["--once"]);
    finish(task, Duration::from_secs(20)).await;
    assert_eq!(fake.state().stream_ends, 0);
    fake
}

#[tokio::test]
async fn an_end_the_server_cannot_take_leaves_the_lines_to_go_on_and_completes_with_complete_job() {
    let fake = run_with_refused_end(tonic::Code::InvalidArgument).await;
    {
        let state = fake.state();
        assert!(state.called("CompleteJob"), "completed with CompleteJob");
        assert_eq!(state.completions.len(), 1);
        assert_eq!(state.completions[0].result, JobResult::Succeeded as i32);
        assert_eq!(state.completions[0].message, "all 1 steps succeeded");
    }
    assert!(has_line(&fake, JOB_A, "one"));
    assert_gap_free(&fake, JOB_A);
}

#[tokio::test]
async fn a_lost_final_ack_is_learned_again_from_the_next_stream() {
    let (fake, _temp, dir) = configured_agent().await;
    fake.state().drop_final_ack = true;
    fake.queue(job(JOB_A, JOB_TOKEN, vec![step("one", "echo one")]));
    let (_shutdown, task) = spawn_agent(&dir, &["--once"]);
    finish(task, Duration::from_secs(20)).await;
    let state = fake.state();
    // Completed once, on the stream; the reconnect learned it and made no
    // CompleteJob call.
    assert_eq!((state.stream_ends, state.completions.len()), (1, 1));
    assert!(state.log_streams >= 2, "{} streams", state.log_streams);
    assert!(!state.called("CompleteJob"), "no CompleteJob call");
    assert_eq!(state.completions[0].message, "all 1 steps succeeded");
}

#[tokio::test]
async fn an_end_refused_because_the_job_moved_ends_the_upload_at_once() {
    let fake = run_with_refused_end(tonic::Code::FailedPrecondition).await;
    // The reconnect was refused as for a job that moved: the job is not
    // this agent's to complete.
    let state = fake.state();
    assert!(state.log_streams >= 1);
    assert!(
        !state.called("CompleteJob"),
        "no CompleteJob for a moved job"
    );
    assert!(state.completions.is_empty());
}

#[tokio::test]
async fn a_job_canceled_while_its_start_is_unconfirmed_never_runs_its_step() {
    let (fake, temp, dir) = configured_agent().await;
    let marker = temp.path().join("ran");
    fake.state().refuse_streams = true;
    let mut canceled = job(
        JOB_A,
        JOB_TOKEN,
        vec![step("first", &format!("touch {}", marker.display()))],
    );
    canceled.lease_duration = millis(600);
    fake.queue(canceled);
    let (_shutdown, task) = spawn_agent(&dir, &["--once"]);
    wait_for("a refused log stream", Duration::from_secs(10), || {
        fake.state().refused_streams >= 1
    })
    .await;
    // The cancel arrives with a lease renewal while the step waits; then
    // the log may go through (the job's end waits for its acks).
    fake.cancel(JOB_A);
    let renewed = fake.state().renewals.len();
    wait_for("two more renewals", Duration::from_secs(10), || {
        fake.state().renewals.len() >= renewed + 2
    })
    .await;
    fake.state().refuse_streams = false;
    finish(task, Duration::from_secs(30)).await;
    assert!(!marker.exists(), "the canceled step ran");
    assert_eq!(
        reports(&fake, JOB_A),
        [
            (0, StepState::Running as i32, None),
            (0, StepState::Canceled as i32, None),
        ],
        "the step never started, so it has no exit code"
    );
    assert!(
        texts(&fake, JOB_A)
            .iter()
            .any(|text| text.starts_with("step first not started: ")),
        "{:?}",
        texts(&fake, JOB_A)
    );
    let state = fake.state();
    assert_eq!(state.completions.len(), 1);
    assert_eq!(state.completions[0].result, JobResult::Canceled as i32);
}

#[tokio::test]
async fn lease_renewals_switch_every_later_call_to_the_new_token() {
    let (fake, _temp, dir) = configured_agent().await;
    let mut renewed = job(
        JOB_A,
        JOB_TOKEN,
        vec![
            step("work", "echo started\nsleep 1.5\necho done"),
            step("after", "echo after"),
        ],
    );
    renewed.lease_duration = millis(600);
    fake.queue(renewed);
    let (_shutdown, task) = spawn_agent(&dir, &["--once"]);

    wait_for("two renewals", Duration::from_secs(10), || {
        fake.state().renewals.len() >= 2
    })
    .await;
    // Break the log stream: the agent reconnects with the token it holds now.
    fake.state().drop_streams = true;
    fake.poke();
    tokio::time::sleep(Duration::from_millis(100)).await;
    fake.state().drop_streams = false;
    finish(task, Duration::from_secs(30)).await;

    let state = fake.state();
    assert_eq!(state.completions.len(), 1);
    assert_eq!(state.completions[0].result, JobResult::Succeeded as i32);
    assert!(
        state.renewals.len() >= 4,
        "{} renewals",
        state.renewals.len()
    );
    // Each renewal presents the token the previous one issued.
    assert_eq!(state.renewals[0].1, JOB_TOKEN);
    for (index, (job_id, presented)) in state.renewals.iter().enumerate().skip(1) {
        assert_eq!(job_id, JOB_A);
        assert_eq!(
            presented,
            &state.issued_tokens[index - 1],
            "renewal {index}"
        );
    }
    let renewed_header = |header: &String| header.starts_with("Bearer job-token-renewed-");
    let log_streams: Vec<&String> = state
        .authorizations
        .iter()
        .filter(|(method, _)| *method == "StreamLogs")
        .map(|(_, header)| header)
        .collect();
    assert!(log_streams.len() >= 2, "{log_streams:?}");
    assert_eq!(log_streams[0], &format!("Bearer {JOB_TOKEN}"));
    assert!(
        renewed_header(log_streams[log_streams.len() - 1]),
        "the log stream reconnected with {:?}",
        log_streams.last()
    );
    // The job completed on that last stream, with the renewed token.
    assert_eq!(state.completions.len(), 1);
    assert_eq!(state.stream_ends, 1);
    // The first token was revoked after the second renewal: every call
    // made with it would have failed.
    assert!(!state.valid_job_tokens.contains(JOB_TOKEN));
    drop(state);
    assert!(has_line(&fake, JOB_A, "done"));
    assert!(has_line(&fake, JOB_A, "after"));
    assert_gap_free(&fake, JOB_A);
}

#[tokio::test]
async fn a_lost_lease_stops_the_job_without_completing_it_and_the_agent_polls_on() {
    let (fake, temp, dir) = configured_agent().await;
    let pids = temp.path().join("pids");
    std::fs::create_dir_all(&pids).expect("pids");
    let mut fenced = job(
        JOB_A,
        "job-token-a",
        vec![
            step(
                "hang",
                "sleep 600 &\necho $! > \"$PIDS/bg.pid\"\necho started\nsleep 600\necho never",
            ),
            step("later", "echo later"),
        ],
    );
    fenced.lease_duration = millis(600);
    fenced.test_results = vec!["*.xml".into()];
    fenced
        .variables
        .insert("PIDS".into(), pids.display().to_string());
    fake.queue(fenced);
    let (shutdown, task) = spawn_agent(&dir, &[]);

    wait_for("the step to start", Duration::from_secs(10), || {
        has_line(&fake, JOB_A, "started")
    })
    .await;
    let lost_at = Instant::now();
    fake.state().lost_leases.insert(JOB_A.into());
    // The step's processes are stopped at once (the renewal comes within
    // 200 ms; SIGINT ends `sleep`, the leftover is killed).
    assert_dead(&pids.join("bg.pid")).await;
    assert!(
        lost_at.elapsed() < Duration::from_secs(3),
        "{:?}",
        lost_at.elapsed()
    );

    // The agent goes back to polling and runs the next job.
    fake.queue(job(JOB_B, "job-token-b", vec![step("ok", "echo ok")]));
    wait_for("the next job", Duration::from_secs(10), || {
        !fake.state().completions.is_empty()
    })
    .await;
    shutdown.request();
    finish(task, Duration::from_secs(10)).await;

    let state = fake.state();
    let completed: Vec<&str> = state
        .completions
        .iter()
        .map(|completion| completion.job_id.as_str())
        .collect();
    assert_eq!(completed, [JOB_B], "the fenced job is never completed");
    assert!(state.test_uploads.is_empty());
    drop(state);
    assert_eq!(
        reports(&fake, JOB_A),
        [(0, StepState::Running as i32, None)],
        "nothing is reported once the lease is lost"
    );
    assert!(!has_line(&fake, JOB_A, "never"));
    assert!(!has_line(&fake, JOB_A, "later"));
    let spool = Path::new(&dir).join("spool");
    assert_eq!(
        std::fs::read_dir(&spool).expect("spool dir").count(),
        0,
        "no spool file is left"
    );
}

#[tokio::test]
async fn a_cancel_on_the_log_stream_interrupts_a_sleeping_step_within_a_second() {
    let (fake, temp, dir) = configured_agent().await;
    let pids = temp.path().join("pids");
    std::fs::create_dir_all(&pids).expect("pids");
    let script = "trap 'date +%s%N > \"$PIDS/interrupted\"; exit 130' INT\n\
                  sleep 600 &\necho $! > \"$PIDS/bg.pid\"\necho started\nsleep 600\necho never";
    let mut canceled = job(
        JOB_A,
        JOB_TOKEN,
        vec![step("hang", script), step("later", "echo later")],
    );
    canceled.test_results = vec!["**/*.xml".into()];
    canceled
        .variables
        .insert("PIDS".into(), pids.display().to_string());
    fake.queue(canceled);
    let (_shutdown, task) = spawn_agent(&dir, &["--once"]);

    wait_for("the step to start", Duration::from_secs(10), || {
        has_line(&fake, JOB_A, "started")
    })
    .await;
    let canceled_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    fake.cancel(JOB_A);
    finish(task, Duration::from_secs(15)).await;

    let interrupted: u128 = std::fs::read_to_string(pids.join("interrupted"))
        .expect("the step got SIGINT")
        .trim()
        .parse()
        .expect("nanoseconds");
    let latency =
        Duration::from_nanos(u64::try_from(interrupted.saturating_sub(canceled_at)).expect("fits"));
    assert!(
        latency < Duration::from_secs(1),
        "SIGINT arrived after {latency:?}"
    );
    assert_dead(&pids.join("bg.pid")).await;

    let state = fake.state();
    assert_eq!(state.completions.len(), 1);
    assert_eq!(state.completions[0].result, JobResult::Canceled as i32);
    assert_eq!(
        state.completions[0].message,
        "the job was canceled on the server"
    );
    assert!(state.test_uploads.is_empty(), "no uploads after a cancel");
    assert!(
        state.renewals.is_empty(),
        "the default lease renews after 10 s"
    );
    drop(state);
    assert_eq!(
        reports(&fake, JOB_A),
        [
            (0, StepState::Running as i32, None),
            (0, StepState::Canceled as i32, Some(130)),
            (1, StepState::Skipped as i32, None),
        ]
    );
    let lines = texts(&fake, JOB_A);
    assert!(
        lines.iter().any(|line| line
            .starts_with("stopping step hang (the job was canceled on the server): SIGINT now")),
        "{lines:?}"
    );
    assert!(!lines.iter().any(|line| line == "never" || line == "later"));
    assert_gap_free(&fake, JOB_A);
}

#[tokio::test]
async fn a_cancel_on_a_lease_renewal_cancels_the_job_too() {
    let (fake, _temp, dir) = configured_agent().await;
    fake.state().quiet_logs = true;
    let mut canceled = job(
        JOB_A,
        JOB_TOKEN,
        vec![step("hang", "echo started\nsleep 600")],
    );
    canceled.lease_duration = millis(600);
    fake.queue(canceled);
    let (_shutdown, task) = spawn_agent(&dir, &["--once"]);
    wait_for("the step to start", Duration::from_secs(10), || {
        has_line(&fake, JOB_A, "started")
    })
    .await;
    let started = Instant::now();
    fake.cancel(JOB_A);
    finish(task, Duration::from_secs(15)).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let state = fake.state();
    assert_eq!(state.completions[0].result, JobResult::Canceled as i32);
}

#[tokio::test]
async fn the_job_timeout_interrupts_the_running_step_and_fails_the_job() {
    let (fake, _temp, dir) = configured_agent().await;
    let mut slow = job(
        JOB_A,
        JOB_TOKEN,
        vec![
            step("slow", "echo started\nsleep 600"),
            step("never", "echo never"),
        ],
    );
    slow.timeout = millis(1000);
    slow.artifacts = vec!["*.txt".into()];
    fake.queue(slow);
    let started = Instant::now();
    let (_shutdown, task) = spawn_agent(&dir, &["--once"]);
    finish(task, Duration::from_secs(20)).await;
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    let state = fake.state();
    assert_eq!(state.completions.len(), 1);
    assert_eq!(state.completions[0].result, JobResult::Failed as i32);
    assert_eq!(
        state.completions[0].message,
        "the job timed out after 1.0 s"
    );
    drop(state);
    let reported = reports(&fake, JOB_A);
    assert_eq!(reported[1].0, 0);
    assert_eq!(reported[1].1, StepState::Failed as i32);
    assert_eq!(reported[2], (1, StepState::Skipped as i32, None));
    let lines = texts(&fake, JOB_A);
    assert!(
        lines
            .iter()
            .any(|line| line.starts_with("stopping step slow (the job timed out after 1.0 s)")),
        "{lines:?}"
    );
    // Uploads still run after a timeout: the pattern matched nothing.
    assert!(
        lines.contains(&"no files match artifact pattern *.txt".to_owned()),
        "{lines:?}"
    );
}

#[tokio::test]
async fn the_source_is_downloaded_verified_and_unpacked_and_bad_ones_fail_the_job() {
    let (fake, temp, dir) = configured_agent().await;
    let good = archive(&[
        Raw::dir("src/"),
        Raw::file("src/hello.txt", b"hello from the source\n"),
        Raw::symlink("latest", "src/hello.txt"),
    ]);
    let evil = archive(&[Raw::file("ok.txt", b"fine"), Raw::file("../evil", b"pwned")]);
    {
        let mut state = fake.state();
        state.sources.insert("src-good".into(), good.clone());
        state.sources.insert("src-evil".into(), evil);
    }
    let mut with_source = job(
        JOB_A,
        "job-token-a",
        vec![step(
            "build",
            "cat src/hello.txt\ntest -L latest\ncat latest",
        )],
    );
    with_source.source_id = "src-good".into();
    fake.queue(with_source);
    let (shutdown, task) = spawn_agent(&dir, &[]);
    wait_for("the first job", Duration::from_secs(15), || {
        fake.state().completions.len() == 1
    })
    .await;

    fake.state().tamper_source = true;
    let mut tampered = job(JOB_B, "job-token-b", vec![step("build", "echo never")]);
    tampered.source_id = "src-good".into();
    fake.queue(tampered);
    wait_for("the tampered job", Duration::from_secs(15), || {
        fake.state().completions.len() == 2
    })
    .await;

    fake.state().tamper_source = false;
    let job_c = "0190f0a0-dddd-7000-8000-00000000000c";
    let mut evil_job = job(job_c, "job-token-c", vec![step("build", "echo never")]);
    evil_job.source_id = "src-evil".into();
    fake.queue(evil_job);
    wait_for("the evil job", Duration::from_secs(15), || {
        fake.state().completions.len() == 3
    })
    .await;
    shutdown.request();
    finish(task, Duration::from_secs(10)).await;

    let state = fake.state();
    let completions: Vec<(&str, i32, &str)> = state
        .completions
        .iter()
        .map(|completion| {
            (
                completion.job_id.as_str(),
                completion.result,
                completion.message.as_str(),
            )
        })
        .collect();
    assert_eq!(
        completions[0],
        (JOB_A, JobResult::Succeeded as i32, "all 1 steps succeeded")
    );
    assert_eq!(completions[1].0, JOB_B);
    assert_eq!(completions[1].1, JobResult::Failed as i32);
    assert!(
        completions[1]
            .2
            .starts_with("the source is corrupt: its SHA-256 is "),
        "{}",
        completions[1].2
    );
    assert_eq!(completions[2].0, job_c);
    assert_eq!(completions[2].1, JobResult::Failed as i32);
    assert!(
        completions[2]
            .2
            .contains("the source archive is refused: entry ../evil escapes the workspace"),
        "{}",
        completions[2].2
    );
    drop(state);

    let lines = texts(&fake, JOB_A);
    let sha = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(&good))
    };
    assert_eq!(lines[0], "downloading source src-good");
    assert_eq!(
        lines[1],
        format!("source verified: {} bytes, sha256 {sha}", good.len())
    );
    assert_eq!(lines[2], "source unpacked: 1 files, 1 directories, 1 links");
    assert_eq!(
        lines
            .iter()
            .filter(|line| *line == "hello from the source")
            .count(),
        2
    );
    for bad in [JOB_B, job_c] {
        assert_eq!(
            reports(&fake, bad),
            [(0, StepState::Skipped as i32, None)],
            "no step runs after a bad source"
        );
        assert!(!texts(&fake, bad).contains(&"never".to_owned()));
    }
    let work = Path::new(&dir).join("work");
    assert!(!work.join("evil").exists());
    assert!(!temp.path().join("evil").exists());
    assert!(
        fake.state()
            .authorizations
            .iter()
            .any(|(method, header)| *method == "DownloadSource" && header == "Bearer job-token-a")
    );
}

#[tokio::test]
async fn test_results_and_artifacts_are_uploaded_even_after_a_failed_step() {
    let (fake, _temp, dir) = configured_agent().await;
    let junit_a = r#"<testsuite name="a"><testcase name="one"/><testcase name="two"><failure/></testcase><testcase name="three"><skipped/></testcase></testsuite>"#;
    let junit_b =
        r#"<testsuite name="b"><testcase name="four"/><testcase name="five"/></testsuite>"#;
    let script = format!(
        "mkdir -p reports/sub dist\n\
         echo '{junit_a}' > reports/a.xml\n\
         echo '{junit_b}' > reports/sub/b.xml\n\
         head -c 2621440 /dev/urandom > dist/app.bin\n\
         echo notes > dist/notes.txt\n\
         exit 1"
    );
    let mut publishing = job(JOB_A, JOB_TOKEN, vec![step("test", &script)]);
    publishing.test_results = vec!["reports/**/*.xml".into(), "../*.xml".into()];
    publishing.artifacts = vec!["dist/*".into(), "missing/*".into()];
    fake.queue(publishing);
    let (_shutdown, task) = spawn_agent(&dir, &["--once"]);
    finish(task, Duration::from_secs(30)).await;

    let state = fake.state();
    assert_eq!(state.completions[0].result, JobResult::Failed as i32);
    assert_eq!(
        state.completions[0].message,
        "step test failed with exit code 1"
    );
    let tests: Vec<(&str, &str, String)> = state
        .test_uploads
        .iter()
        .map(|(job_id, header, content)| {
            (
                job_id.as_str(),
                header.name.as_str(),
                String::from_utf8_lossy(content).trim().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        tests,
        [
            (JOB_A, "reports/a.xml", junit_a.to_owned()),
            (JOB_A, "reports/sub/b.xml", junit_b.to_owned()),
        ]
    );
    let artifacts: Vec<(&str, u64)> = state
        .artifact_uploads
        .iter()
        .map(|(_, header, content)| {
            assert_eq!(header.size, content.len() as u64);
            (header.name.as_str(), header.size)
        })
        .collect();
    assert_eq!(
        artifacts,
        [("dist/app.bin", 2_621_440), ("dist/notes.txt", 6)]
    );
    assert!(
        state.chunk_sizes.iter().all(|&size| size <= 1024 * 1024),
        "{:?}",
        state.chunk_sizes
    );
    assert!(state.chunk_sizes.contains(&(1024 * 1024)));
    drop(state);
    let lines: Vec<(i32, String)> = fake
        .lines_of(JOB_A)
        .into_iter()
        .map(|line| (line.stream, line.text))
        .collect();
    let system = |text: &str| lines.contains(&(LogStream::System as i32, text.to_owned()));
    for expected in [
        "test results pattern ../*.xml reaches outside the workspace; skipped".to_owned(),
        format!(
            "uploaded test results reports/a.xml ({} bytes)",
            junit_a.len() + 1
        ),
        format!(
            "uploaded test results reports/sub/b.xml ({} bytes)",
            junit_b.len() + 1
        ),
        "tests: 5 total, 3 passed, 1 failed, 1 skipped".to_owned(),
        "uploaded artifact dist/app.bin (2621440 bytes)".to_owned(),
        "uploaded artifact dist/notes.txt (6 bytes)".to_owned(),
        "no files match artifact pattern missing/*".to_owned(),
    ] {
        assert!(
            system(&expected),
            "no SYSTEM line {expected:?} in {lines:?}"
        );
    }
}

#[tokio::test]
async fn max_jobs_two_runs_two_jobs_at_once() {
    let (fake, temp, dir) = configured_agent().await;
    let shared = temp.path().join("shared");
    std::fs::create_dir_all(&shared).expect("shared");
    // Each job waits until both have started: only concurrent jobs succeed.
    let script = "touch \"$SHARED/$FERRY_JOB_ID\"\n\
                  for i in $(seq 200); do\n\
                    if [ \"$(ls \"$SHARED\" | wc -l)\" -ge 2 ]; then echo together; exit 0; fi\n\
                    sleep 0.05\n\
                  done\nexit 1";
    for (job_id, token) in [(JOB_A, "job-token-a"), (JOB_B, "job-token-b")] {
        let mut both = job(job_id, token, vec![step("meet", script)]);
        both.variables
            .insert("SHARED".into(), shared.display().to_string());
        fake.queue(both);
    }
    let leftover: PathBuf = Path::new(&dir).join("spool").join("0190f0a0-old.log");
    std::fs::create_dir_all(leftover.parent().expect("parent")).expect("spool dir");
    std::fs::write(&leftover, b"masked lines of a crashed run").expect("leftover");
    let (shutdown, task) = spawn_agent(&dir, &["--max-jobs", "2"]);
    wait_for("both jobs", Duration::from_secs(20), || {
        fake.state().completions.len() == 2
    })
    .await;
    shutdown.request();
    finish(task, Duration::from_secs(10)).await;

    let state = fake.state();
    for completion in &state.completions {
        assert_eq!(
            completion.result,
            JobResult::Succeeded as i32,
            "{}: {}",
            completion.job_id,
            completion.message
        );
    }
    drop(state);
    for job_id in [JOB_A, JOB_B] {
        assert!(has_line(&fake, job_id, "together"));
        assert_gap_free(&fake, job_id);
    }
    assert!(!leftover.exists(), "the leftover spool file is discarded");
    assert_eq!(
        std::fs::read_dir(Path::new(&dir).join("spool"))
            .expect("spool dir")
            .count(),
        0
    );
}

#[tokio::test]
async fn a_stop_request_drains_and_a_second_one_cancels() {
    let (fake, _temp, dir) = configured_agent().await;
    fake.queue(job(
        JOB_A,
        "job-token-a",
        vec![step("finish", "echo started\nsleep 1\necho finished")],
    ));
    let (shutdown, task) = spawn_agent(&dir, &[]);
    wait_for("the step to start", Duration::from_secs(10), || {
        has_line(&fake, JOB_A, "started")
    })
    .await;
    shutdown.request();
    // Queued after the stop request: never taken.
    fake.queue(job(JOB_B, "job-token-b", vec![step("no", "echo no")]));
    finish(task, Duration::from_secs(15)).await;
    {
        let state = fake.state();
        assert_eq!(state.completions.len(), 1);
        assert_eq!(state.completions[0].job_id, JOB_A);
        assert_eq!(state.completions[0].result, JobResult::Succeeded as i32);
        assert_eq!(state.queue.len(), 1, "no job is taken while draining");
    }
    assert!(has_line(&fake, JOB_A, "finished"));

    // A second request cancels the running job.
    fake.state().queue.clear();
    let job_c = "0190f0a0-dddd-7000-8000-00000000000c";
    fake.queue(job(
        job_c,
        "job-token-c",
        vec![step("hang", "echo started\nsleep 600")],
    ));
    let (shutdown, task) = spawn_agent(&dir, &[]);
    wait_for("the step to start", Duration::from_secs(10), || {
        has_line(&fake, job_c, "started")
    })
    .await;
    shutdown.request();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        fake.state().completions.len(),
        1,
        "still running after one request"
    );
    shutdown.request();
    finish(task, Duration::from_secs(15)).await;
    let state = fake.state();
    assert_eq!(state.completions.len(), 2);
    assert_eq!(state.completions[1].job_id, job_c);
    assert_eq!(state.completions[1].result, JobResult::Canceled as i32);
    assert_eq!(state.completions[1].message, "the agent was stopped");
}

#[tokio::test]
async fn an_idle_agent_stops_at_once_and_once_with_max_jobs_is_refused() {
    let (fake, _temp, dir) = configured_agent().await;
    let (shutdown, task) = spawn_agent(&dir, &["--once"]);
    wait_for("a poll", Duration::from_secs(10), || fake.state().polls > 0).await;
    shutdown.request();
    finish(task, Duration::from_secs(5)).await;
    assert_eq!(
        fake.state().deregistrations,
        0,
        "no job ran: still registered"
    );
    assert!(Path::new(&dir).join("agent.key").exists());

    let (_shutdown, task) = spawn_agent(&dir, &["--once", "--max-jobs", "2"]);
    let error = task.await.expect("task").expect_err("refused");
    assert!(error.to_string().contains("--once"), "{error}");
}

#[tokio::test]
async fn a_job_the_server_had_ended_otherwise_is_reported_as_the_server_ended_it() {
    let (fake, _temp, dir) = configured_agent().await;
    // The job ran to success here, but the server had timed it out.
    fake.state().end_state = Some(ferry_proto::v1::JobState::Failed);
    let configuration = crate::settings::AgentDir::new(&dir)
        .load()
        .expect("configuration");
    let server_key = configuration
        .settings
        .server_public_key()
        .expect("server key");
    let context = crate::job::JobContext {
        channel: ferry_client::ServerAddress::new(
            configuration.settings.url.clone(),
            configuration.ca_pem.clone(),
        )
        .connect_lazy()
        .expect("channel"),
        opener: ferry_envelope::Opener::new(configuration.secret_key, &server_key).expect("opener"),
        settings: configuration.settings,
        spool_dir: None,
        log_memory_lines: crate::logs::MAX_UNACKED,
        final_ack_timeout: crate::logs::FINAL_ACK_TIMEOUT,
    };
    let agent_job = job(JOB_A, JOB_TOKEN, vec![step("one", "echo one")]);
    fake.state()
        .valid_job_tokens
        .insert(agent_job.job_token.clone());
    let report = tokio::time::timeout(
        Duration::from_secs(20),
        crate::job::run(&context, agent_job, crate::stop::StopSignal::new()),
    )
    .await
    .expect("the job ends");
    assert_eq!(report.result, JobResult::Failed, "{report:?}");
    assert_eq!(
        report.message,
        "all 1 steps succeeded; the server ended the job as failed"
    );
    assert!(report.completed && !report.lease_lost, "{report:?}");
    let state = fake.state();
    assert_eq!(state.stream_ends, 1);
    assert!(
        !state.called("CompleteJob"),
        "the end was taken on the stream"
    );
}
