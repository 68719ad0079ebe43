//! The whole agent, `configure` then `run --once`, against the fake server.

use std::path::Path;
use std::time::Duration;

use clap::Parser as _;
use ferry_proto::v1::{AgentJob, JobResult, LogStream, StepSpec, StepState};

use crate::testserver::{self, JOB_TOKEN, LISTENER_TOKEN, PAT};
use crate::{Cli, run};

pub(crate) fn configure_cli(url: &str, pool: &str, token: &str, dir: &Path, extra: &[&str]) -> Cli {
    let dir = dir.display().to_string();
    let mut args = vec![
        "ferry-agent",
        "configure",
        "--url",
        url,
        "--pool",
        pool,
        "--name",
        "builder-1",
        "--token",
        token,
        "--label",
        "zone=b",
        "--dir",
        &dir,
    ];
    args.extend_from_slice(extra);
    Cli::try_parse_from(args).expect("configure arguments")
}

pub(crate) fn step(name: &str, script: &str) -> StepSpec {
    StepSpec {
        name: name.into(),
        script: script.into(),
        ..StepSpec::default()
    }
}

pub(crate) fn files_contain(dir: &Path, needle: &str) -> bool {
    std::fs::read_dir(dir)
        .expect("read dir")
        .flatten()
        .any(|entry| {
            let path = entry.path();
            if path.is_dir() {
                files_contain(&path, needle)
            } else {
                std::fs::read(&path).is_ok_and(|bytes| {
                    bytes
                        .windows(needle.len())
                        .any(|window| window == needle.as_bytes())
                })
            }
        })
}

#[tokio::test]
async fn configure_registers_and_stores_no_token() {
    let (fake, url) = testserver::start().await;
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = temp.path().join("agent");
    run(configure_cli(&url, "linux", PAT, &dir, &[]))
        .await
        .expect("configure");

    let registration = fake.state().registrations.pop().expect("registered");
    assert_eq!(registration.pool, "linux");
    assert_eq!(registration.name, "builder-1");
    assert_eq!(
        registration.capabilities.get("os").map(String::as_str),
        Some(std::env::consts::OS)
    );
    assert_eq!(
        registration.capabilities.get("arch").map(String::as_str),
        Some(std::env::consts::ARCH)
    );
    assert_eq!(
        registration.capabilities.get("zone").map(String::as_str),
        Some("b")
    );
    assert!(registration.capabilities.contains_key("hostname"));
    let configuration = crate::settings::AgentDir::new(&dir).load().expect("load");
    assert_eq!(configuration.settings.agent_id, testserver::AGENT_ID);
    assert_eq!(
        configuration.secret_key.public_key().as_bytes().as_slice(),
        registration.public_key.as_slice()
    );
    assert_eq!(configuration.settings.work_dir, dir.join("work"));
    assert!(!files_contain(&dir, PAT), "the PAT was written to disk");

    let error = run(configure_cli(&url, "linux", PAT, &dir, &[]))
        .await
        .expect_err("configured");
    assert!(error.to_string().contains("--replace"), "{error}");
    run(configure_cli(&url, "linux", PAT, &dir, &["--replace"]))
        .await
        .expect("replace");
    assert!(
        fake.state()
            .registrations
            .last()
            .is_some_and(|request| request.replace)
    );
}

#[tokio::test]
async fn configure_errors_are_clear_and_never_show_the_token() {
    let (_fake, url) = testserver::start().await;
    let temp = tempfile::tempdir().expect("tempdir");
    let cases = [
        (
            url.clone(),
            "linux",
            "pat-wrong-9876",
            "the PAT was refused",
        ),
        (
            url.clone(),
            "forbidden",
            PAT,
            "this PAT is not an administrator of pool forbidden",
        ),
        (
            testserver::closed_url().await,
            "linux",
            PAT,
            "cannot reach the server at http://127.0.0.1:",
        ),
    ];
    for (index, (url, pool, token, expected)) in cases.into_iter().enumerate() {
        let dir = temp.path().join(format!("agent-{index}"));
        let error = run(configure_cli(&url, pool, token, &dir, &[]))
            .await
            .expect_err("refused");
        let text = format!("{error:#}");
        assert!(text.contains(expected), "{text:?} lacks {expected:?}");
        assert!(!text.contains(token), "{text:?} shows the token");
        assert!(!dir.join("agent.toml").exists());
    }
}

#[tokio::test]
async fn run_once_runs_a_job_reports_it_and_streams_masked_logs() {
    let (fake, url) = testserver::start().await;
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = temp.path().join("agent");
    run(configure_cli(&url, "linux", PAT, &dir, &[]))
        .await
        .expect("configure");
    let job = AgentJob {
        job_id: "0190f0a0-bbbb-7000-8000-000000000002".into(),
        name: "ci".into(),
        attempt: 1,
        steps: vec![
            step(
                "hello",
                "echo hello $GREETING\necho \"token=$API_KEY\"\necho ::add-mask::runtime-value\necho runtime-value\n\
                 echo \"env=${FERRY_TOKEN:-unset} ci=$CI id=$FERRY_JOB_ID\"",
            ),
            step("fail", "echo failing >&2\nexit 3"),
            step("never", "echo never"),
        ],
        variables: [("GREETING".into(), "world".into())].into(),
        secrets: [("API_KEY".into(), "k3y-v4lue-s3cret".into())].into(),
        job_token: JOB_TOKEN.into(),
        ..AgentJob::default()
    };
    fake.state().queue.push_back(job.clone());
    let run_args = Cli::try_parse_from([
        "ferry-agent",
        "run",
        "--once",
        "--dir",
        &dir.display().to_string(),
    ])
    .expect("run arguments");
    tokio::time::timeout(Duration::from_secs(60), run(run_args))
        .await
        .expect("run --once ends")
        .expect("run --once succeeds");

    let state = fake.state();
    assert_eq!(state.completions.len(), 1);
    let completion = &state.completions[0];
    assert_eq!(completion.job_id, job.job_id);
    assert_eq!(completion.result, JobResult::Failed as i32);
    assert_eq!(completion.message, "step fail failed with exit code 3");

    assert!(
        !state.called("ReportStep"),
        "steps are reported on their log lines, not with ReportStep"
    );
    assert_eq!(state.stream_ends, 1, "the job completes on its log stream");
    assert!(!state.called("CompleteJob"), "no CompleteJob call");
    let reports: Vec<(u32, i32, Option<i32>)> = state
        .reports
        .iter()
        .map(|report| (report.index, report.state, report.exit_code))
        .collect();
    assert_eq!(
        reports,
        [
            (0, StepState::Running as i32, None),
            (0, StepState::Succeeded as i32, Some(0)),
            (1, StepState::Running as i32, None),
            (1, StepState::Failed as i32, Some(3)),
            (2, StepState::Skipped as i32, None),
        ]
    );

    let sequences: Vec<u64> = state.lines.iter().map(|line| line.sequence).collect();
    assert_eq!(
        sequences,
        (1..=state.lines.len() as u64).collect::<Vec<u64>>()
    );
    let texts: Vec<(u32, i32, &str)> = state
        .lines
        .iter()
        .map(|line| (line.step_index, line.stream, line.text.as_str()))
        .collect();
    let system = LogStream::System as i32;
    let stdout = LogStream::Stdout as i32;
    assert_eq!(texts[0], (0, system, "▶ step 1/3: hello"));
    assert_eq!(
        texts[1..6],
        [
            (0, stdout, "hello world"),
            (0, stdout, "token=***"),
            (0, stdout, "::add-mask::***"),
            (0, stdout, "***"),
            (0, stdout, &*format!("env=unset ci=true id={}", job.job_id)),
        ]
    );
    assert!(
        texts[6].2.starts_with("step hello exited with code 0 ("),
        "{:?}",
        texts[6]
    );
    assert_eq!(texts[7], (1, system, "▶ step 2/3: fail"));
    assert_eq!(texts[8], (1, LogStream::Stderr as i32, "failing"));
    assert!(
        texts[9].2.starts_with("step fail exited with code 3 ("),
        "{:?}",
        texts[9]
    );
    assert_eq!(texts[10], (2, system, "step never skipped"));
    assert_eq!(texts.len(), 11);

    for (method, header) in &state.authorizations {
        let expected = match *method {
            "Register" => PAT,
            "PollJob" | "Deregister" => LISTENER_TOKEN,
            _ => JOB_TOKEN,
        };
        assert_eq!(header, &format!("Bearer {expected}"), "{method}");
    }
    assert!(state.called("StreamLogs"));
    let work_dir = dir.join("work");
    assert!(
        !work_dir.join(&job.job_id).exists(),
        "the workspace is removed"
    );
    assert!(!work_dir.join("_temp").join(&job.job_id).exists());
    assert!(!files_contain(&dir, JOB_TOKEN));
    assert!(!files_contain(&dir, LISTENER_TOKEN));
    assert!(!files_contain(&dir, "k3y-v4lue-s3cret"));

    // --once: the agent deregistered and deleted its key and settings.
    assert_eq!(state.deregistrations, 1);
    assert!(!dir.join("agent.key").exists());
    assert!(!dir.join("agent.toml").exists());
    assert!(
        std::fs::read_dir(dir.join("spool")).is_err(),
        "the empty spool directory is removed too"
    );
}

pub(crate) async fn configured_agent() -> (testserver::Fake, tempfile::TempDir, String) {
    let (fake, url) = testserver::start().await;
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = temp.path().join("agent");
    run(configure_cli(&url, "linux", PAT, &dir, &[]))
        .await
        .expect("configure");
    (fake, temp, dir.display().to_string())
}

#[tokio::test]
async fn a_refused_listener_token_is_replaced_at_once() {
    let (fake, _temp, dir) = configured_agent().await;
    {
        let mut state = fake.state();
        state.reject_polls = 1;
        state
            .queue
            .push_back(one_step_job("0190f0a0-cccc-7000-8000-000000000003", "true"));
    }
    run_once(&dir, Duration::from_secs(10)).await;
    let state = fake.state();
    // The refused one and its replacement; none after the job, whose token
    // has most of its life ahead.
    assert_eq!(state.token_fetches, 2);
    assert_eq!(state.completions.len(), 1);
    assert_eq!(state.completions[0].result, JobResult::Succeeded as i32);
    assert_eq!(state.completions[0].message, "all 1 steps succeeded");
}

#[tokio::test]
async fn a_job_that_outlived_half_the_listener_token_renews_it_after() {
    let (fake, _temp, dir) = configured_agent().await;
    {
        let mut state = fake.state();
        state.token_life = Some(Duration::from_secs(4));
        state.queue.push_back(one_step_job(
            "0190f0a0-cccc-7000-8000-000000000004",
            "sleep 2.5",
        ));
    }
    run_once(&dir, Duration::from_secs(20)).await;
    let state = fake.state();
    // The first token, and a fresh one after the job (2.5 s of a 4 s life).
    assert_eq!(state.token_fetches, 2);
    assert_eq!(state.completions.len(), 1);
}

/// A job of one step running `script`.
fn one_step_job(job_id: &str, script: &str) -> AgentJob {
    AgentJob {
        job_id: job_id.into(),
        name: "one step".into(),
        steps: vec![step("only", script)],
        job_token: JOB_TOKEN.into(),
        ..AgentJob::default()
    }
}

/// `ferry-agent run --once` in `dir`, which must end within `within`.
async fn run_once(dir: &str, within: Duration) {
    let cli =
        Cli::try_parse_from(["ferry-agent", "run", "--once", "--dir", dir]).expect("arguments");
    tokio::time::timeout(within, run(cli))
        .await
        .expect("the agent ends in time")
        .expect("run");
}

#[tokio::test]
async fn the_listener_token_is_refreshed_before_it_expires() {
    let (fake, _temp, dir) = configured_agent().await;
    fake.state().token_life = Some(Duration::from_secs(4));
    let cli = Cli::try_parse_from(["ferry-agent", "run", "--dir", &dir]).expect("arguments");
    // The agent runs until stopped; it refreshes at 80% of 4 s: 3.2 s.
    let stopped = tokio::time::timeout(Duration::from_millis(4800), run(cli)).await;
    assert!(stopped.is_err(), "the agent stopped by itself: {stopped:?}");
    let state = fake.state();
    assert_eq!(state.token_fetches, 2);
    let polls: Vec<&String> = state
        .authorizations
        .iter()
        .filter(|(method, _)| *method == "PollJob")
        .map(|(_, header)| header)
        .collect();
    assert!(polls.len() > 10, "{} polls", polls.len());
    assert!(
        polls
            .iter()
            .all(|header| **header == format!("Bearer {LISTENER_TOKEN}"))
    );
}
