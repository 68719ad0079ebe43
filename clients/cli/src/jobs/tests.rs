use ferry_proto::time::timestamp_from_micros;
use ferry_proto::v1::{StepState, StepStatus};

use super::*;

const NOW: i64 = 1_700_000_000_000_000;
const SECOND: i64 = 1_000_000;

fn job() -> Job {
    Job {
        id: "j1".into(),
        name: "build".into(),
        project: "ferry".into(),
        pipeline: "ci".into(),
        pool: "default".into(),
        state: JobState::Failed as i32,
        demands: [("os".to_owned(), "linux".to_owned())].into(),
        agent_id: "a1".into(),
        agent_name: "runner".into(),
        attempt: 1,
        steps: vec![
            StepStatus {
                index: 0,
                name: "greet".into(),
                state: StepState::Succeeded as i32,
                exit_code: Some(0),
                start_time: Some(timestamp_from_micros(NOW - 60 * SECOND)),
                finish_time: Some(timestamp_from_micros(NOW - 58 * SECOND - 500_000)),
            },
            StepStatus {
                index: 1,
                name: "test".into(),
                state: StepState::Failed as i32,
                exit_code: Some(2),
                start_time: Some(timestamp_from_micros(NOW - 58 * SECOND)),
                finish_time: Some(timestamp_from_micros(NOW - 10 * SECOND)),
            },
            StepStatus {
                index: 2,
                name: "deploy".into(),
                state: StepState::Skipped as i32,
                ..StepStatus::default()
            },
        ],
        message: "step test exited with 2".into(),
        queue_time: Some(timestamp_from_micros(NOW - 61 * SECOND)),
        assign_time: Some(timestamp_from_micros(NOW - 61 * SECOND + 12_345)),
        start_time: Some(timestamp_from_micros(NOW - 60 * SECOND)),
        finish_time: Some(timestamp_from_micros(NOW - 10 * SECOND)),
        secret_names: vec!["TOKEN".into()],
        log_line_count: 42,
    }
}

#[test]
fn job_details_show_latency_times_and_steps() {
    let text = job_details(&job(), NOW);
    let expected = "\
id:               j1
name:             build
project:          ferry
pipeline:         ci
pool:             default
state:            failed
message:          step test exited with 2
agent:            runner (a1)
attempt:          1
demands:          os=linux
secrets:          TOKEN
queued:           2023-11-14T22:12:19Z (1m ago)
assigned:         2023-11-14T22:12:19Z (1m ago)
started:          2023-11-14T22:12:20Z (1m ago)
finished:         2023-11-14T22:13:10Z (10s ago)
dispatch latency: 12 ms
duration:         50.0s
log lines:        42

STEP  NAME    STATE      EXIT  DURATION
0     greet   succeeded  0     1.5s
1     test    failed     2     48.0s
2     deploy  skipped    -     -
";
    assert_eq!(text, expected);
}

#[test]
fn job_lists_show_running_jobs_so_far() {
    let mut running = job();
    running.id = "j2".into();
    running.state = JobState::Running as i32;
    running.finish_time = None;
    let queued = Job {
        id: "j3".into(),
        name: "later".into(),
        pool: "default".into(),
        state: JobState::Queued as i32,
        queue_time: Some(timestamp_from_micros(NOW - 2 * SECOND)),
        ..Job::default()
    };
    assert_eq!(
        job_table(&[job(), running, queued], NOW),
        "\
ID  NAME   POOL     STATE    AGENT   QUEUED  DURATION
j1  build  default  failed   runner  1m ago  50.0s
j2  build  default  running  runner  1m ago  1m00s so far
j3  later  default  queued   -       2s ago  -
"
    );
}

#[test]
fn final_summaries_say_why() {
    let job = job();
    assert_eq!(
        final_summary("j1", JobState::Failed, Some(&job)),
        "job j1 failed in 50.0s: step test exited with 2"
    );
    assert_eq!(
        final_summary("j1", JobState::Canceled, None),
        "job j1 canceled"
    );
    assert_eq!(exit_code(JobState::Succeeded), ExitCode::SUCCESS);
    assert_eq!(exit_code(JobState::Failed), ExitCode::FAILURE);
    assert_eq!(exit_code(JobState::Canceled), ExitCode::FAILURE);
}

#[test]
fn overrides_apply_to_the_pipeline() {
    let mut spec = pipeline::parse_with_env(
        "name: x\npool: a\nvariables: { A: '1' }\nsecrets: { S: s }\nsteps:\n  - run: make\n",
        |_| None,
    )
    .expect("valid");
    let vars = [
        ("A".to_owned(), "2".to_owned()),
        ("B".to_owned(), "3".to_owned()),
    ];
    apply_overrides(&mut spec, Some("b"), &vars).expect("overrides");
    assert_eq!(spec.pool, "b");
    assert_eq!(spec.variables.get("A").map(String::as_str), Some("2"));
    assert_eq!(spec.variables.get("B").map(String::as_str), Some("3"));
    let error =
        apply_overrides(&mut spec, None, &[("S".to_owned(), "x".to_owned())]).expect_err("secret");
    assert!(error.to_string().contains("is a secret"), "{error}");
    assert!(apply_overrides(&mut spec, Some(" "), &[]).is_err());
}

#[test]
fn pipeline_files_are_named_in_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, "name: x\nsteps: []\n").expect("write");
    let error = load_spec(&path, None, &[]).expect_err("no steps");
    let message = format!("{error:#}");
    assert!(message.starts_with("invalid pipeline "), "{message}");
    assert!(
        message.contains("bad.yaml: steps: a pipeline needs at least one step"),
        "{message}"
    );
    let error = load_spec(&dir.path().join("missing.yaml"), None, &[]).expect_err("missing");
    assert!(
        error.to_string().starts_with("cannot read pipeline "),
        "{error}"
    );
}
