//! Tests of the job's workspace and environment.

use super::*;

#[test]
fn job_ids_must_be_safe_directory_names() {
    let temp = tempfile::tempdir().expect("tempdir");
    for bad in ["", "..", "a/b", "_temp", "x y"] {
        assert!(prepare_workspace(temp.path(), bad).is_err(), "{bad:?}");
    }
    let (workspace, scripts) = prepare_workspace(temp.path(), "0190-abc").expect("workspace");
    assert_eq!(workspace, temp.path().join("0190-abc"));
    assert_eq!(scripts, temp.path().join("_temp/0190-abc"));
    let mode = |path: &Path| {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(path).expect("dir").permissions().mode() & 0o777
    };
    assert_eq!(
        mode(&scripts),
        0o700,
        "scripts and the source archive are private"
    );
    std::fs::write(workspace.join("stale"), "x").expect("write");
    let (workspace, _) = prepare_workspace(temp.path(), "0190-abc").expect("again");
    assert!(
        !workspace.join("stale").exists(),
        "a workspace starts empty"
    );
}

#[test]
fn ferry_variables_win_over_job_and_step_env() {
    let job = AgentJob {
        job_id: "j1".into(),
        variables: [("A".into(), "var".into()), ("CI".into(), "no".into())].into(),
        secrets: [("S".into(), "secret".into())].into(),
        ..AgentJob::default()
    };
    let spec = ferry_proto::v1::StepSpec {
        name: "build".into(),
        env: [
            ("A".into(), "step".into()),
            ("FERRY_JOB_ID".into(), "spoof".into()),
        ]
        .into(),
        ..Default::default()
    };
    let env = step_env(&job, &spec, Path::new("/w/j1"));
    // Later entries win when set on a command.
    let last = |key: &str| {
        env.iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(last("A"), Some("step"));
    assert_eq!(last("S"), Some("secret"));
    assert_eq!(last("CI"), Some("true"));
    assert_eq!(last("FERRY_JOB_ID"), Some("j1"));
    assert_eq!(last("FERRY_WORKSPACE"), Some("/w/j1"));
    assert_eq!(last("FERRY_STEP_NAME"), Some("build"));
}
