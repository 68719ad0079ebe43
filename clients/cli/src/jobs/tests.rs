use ferry_proto::time::timestamp_from_micros;
use ferry_proto::v1::{StepState, StepStatus, TestSummary};

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
        cancel_time: None,
        lease_expire_time: None,
        test_summary: Some(TestSummary {
            total: 10,
            passed: 8,
            failed: 1,
            skipped: 1,
            failed_tests: vec!["parser.rejects_tabs".into()],
            files: 2,
        }),
        source_id: "src-1".into(),
        max_attempts: 3,
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
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
attempt:          1/3
demands:          os=linux
secrets:          TOKEN
source:           src-1
trace id:         4bf92f3577b34da6a3ce929d0e0e4736
queued:           2023-11-14T22:12:19Z (1m ago)
assigned:         2023-11-14T22:12:19Z (1m ago)
started:          2023-11-14T22:12:20Z (1m ago)
finished:         2023-11-14T22:13:10Z (10s ago)
dispatch latency: 12 ms
duration:         50.0s
log lines:        42
tests:            10 total, 8 passed, 1 failed, 1 skipped

failed tests:
  parser.rejects_tabs

STEP  NAME    STATE      EXIT  DURATION
0     greet   succeeded  0     1.5s
1     test    failed     2     48.0s
2     deploy  skipped    -     -
";
    assert_eq!(text, expected);
}

#[test]
fn running_and_canceled_jobs_show_lease_and_cancel_times() {
    let mut running = job();
    running.state = JobState::Running as i32;
    running.finish_time = None;
    running.max_attempts = 0;
    running.source_id = String::new();
    running.trace_id = String::new();
    running.lease_expire_time = Some(timestamp_from_micros(NOW + 40 * SECOND));
    running.cancel_time = Some(timestamp_from_micros(NOW - 2 * SECOND));
    running.test_summary = Some(TestSummary {
        total: 300,
        passed: 100,
        failed: 150,
        skipped: 50,
        failed_tests: (0..100).map(|n| format!("suite.t{n}")).collect(),
        files: 1,
    });
    let text = job_details(&running, NOW);
    for line in [
        "attempt:          1\n",
        "source:           -\n",
        "trace id:         -\n",
        "cancel requested: 2023-11-14T22:13:18Z (2s ago)\n",
        "lease expires:    2023-11-14T22:14:00Z (in 40s)\n",
        "duration:         1m00s so far\n",
        "tests:            300 total, 100 passed, 150 failed, 50 skipped\n",
        "  suite.t0\n",
        "  suite.t99\n  … and 50 more\n\nSTEP",
    ] {
        assert!(text.contains(line), "{line:?} missing from\n{text}");
    }
    // A finished job's lease is not shown, nor an unset cancel time; no
    // summary is `-`.
    let mut finished = job();
    finished.lease_expire_time = Some(timestamp_from_micros(NOW));
    finished.test_summary = None;
    let text = job_details(&finished, NOW);
    assert!(!text.contains("lease expires"), "{text}");
    assert!(!text.contains("cancel requested"), "{text}");
    assert!(text.contains("tests:            -\n"), "{text}");
    assert!(!text.contains("failed tests"), "{text}");
}

#[test]
fn cancel_answers_are_explained() {
    assert_eq!(cancel_summary("j1", JobState::Canceled), "job j1 canceled");
    assert_eq!(
        cancel_summary("j1", JobState::Running),
        "job j1: cancel requested; the agent is stopping it"
    );
    assert_eq!(
        cancel_summary("j1", JobState::Assigned),
        "job j1: cancel requested; the agent is stopping it"
    );
    assert_eq!(
        cancel_summary("j1", JobState::Succeeded),
        "job j1 already ended: succeeded"
    );
}

#[test]
fn sources_are_relative_to_the_pipeline_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nested = dir.path().join("ci");
    std::fs::create_dir_all(&nested).expect("mkdir");
    let path = nested.join("p.yaml");
    std::fs::write(
        &path,
        "name: x\nsource: ../app\ntest-results: [reports/*.xml]\nsteps:\n  - run: make\n",
    )
    .expect("write");
    let pipeline = load_spec(&path, None, &[]).expect("load");
    assert_eq!(pipeline.source, Some(nested.join("../app")));
    assert_eq!(pipeline.spec.test_results, ["reports/*.xml"]);
    assert_eq!(pipeline.spec.source_id, "");
    std::fs::write(&path, "name: x\nsource: /srv/app\nsteps:\n  - run: make\n").expect("write");
    let pipeline = load_spec(&path, None, &[]).expect("load");
    assert_eq!(pipeline.source, Some(PathBuf::from("/srv/app")));
    std::fs::write(&path, "name: x\nsteps:\n  - run: make\n").expect("write");
    assert_eq!(load_spec(&path, None, &[]).expect("load").source, None);
}

#[tokio::test]
async fn the_source_flag_wins_and_bad_sources_fail_before_connecting() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("app")).expect("mkdir");
    std::fs::write(dir.path().join("app/main.c"), "int main;").expect("write");
    std::fs::create_dir_all(dir.path().join("other")).expect("mkdir");
    let path = dir.path().join("p.yaml");
    std::fs::write(&path, "name: x\nsource: app\nsteps:\n  - run: make\n").expect("write");

    let prepared = prepare(&path, None, &[], None, false)
        .await
        .expect("prepare");
    let (directory, packed) = prepared.source.expect("a source");
    assert_eq!(directory, dir.path().join("app"));
    assert_eq!(packed.files, 1);
    assert_eq!(archive_stem(&directory), "app");

    let flag = dir.path().join("other");
    let prepared = prepare(&path, None, &[], Some(&flag), false)
        .await
        .expect("prepare");
    let (directory, packed) = prepared.source.expect("a source");
    assert_eq!((directory, packed.files), (flag, 0));

    let missing = dir.path().join("missing");
    let Err(error) = prepare(&path, None, &[], Some(&missing), false).await else {
        panic!("a missing source was packed");
    };
    assert!(
        format!("{error:#}").starts_with(&format!(
            "cannot read source directory {}: ",
            missing.display()
        )),
        "{error:#}"
    );
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
