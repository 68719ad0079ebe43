//! ferry-agent's command line, run as a program: the errors an operator
//! meets before the agent ever reaches a server.
//!
//! (Having an integration test also makes `cargo test --workspace` build the
//! `ferry-agent` binary that the end-to-end suite in `tests/` starts.)

use std::process::{Command, Output};

fn agent(args: &[&str], envs: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferry-agent"))
        .args(args)
        .env_remove("FERRY_TOKEN")
        .env_remove("FERRY_AGENT_DIR")
        .envs(envs.iter().copied())
        .output()
        .expect("ferry-agent runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn run_without_a_configuration_says_to_configure_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("agent");
    let output = agent(&["run", "--dir", missing.to_str().expect("utf8")], &[]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(message.contains("no agent is configured"), "{message}");
    assert!(message.contains("ferry-agent configure"), "{message}");
    assert!(!missing.exists(), "run must not create the agent directory");
}

#[test]
fn configure_against_an_unreachable_server_fails_cleanly_without_leaking_the_pat() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agent_dir = dir.path().join("agent");
    let pat = "ferry_pat_do-not-print-me-0123456789";
    // Port 1 on loopback: nothing listens there.
    let output = agent(
        &[
            "configure",
            "--url",
            "https://127.0.0.1:1",
            "--pool",
            "default",
            "--name",
            "a1",
            "--dir",
            agent_dir.to_str().expect("utf8"),
        ],
        &[("FERRY_TOKEN", pat)],
    );
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(message.contains("cannot reach the server"), "{message}");
    assert!(!message.contains(pat), "the PAT leaked: {message}");
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains(pat),
        "the PAT leaked on stdout"
    );
    assert!(
        !agent_dir.join("agent.toml").exists(),
        "a failed registration must not leave a configuration behind"
    );
}

#[test]
fn bad_arguments_are_refused_with_usage_errors() {
    let zero = agent(&["run", "--max-jobs", "0"], &[]);
    assert_eq!(zero.status.code(), Some(2));
    assert!(
        stderr(&zero).contains("0 is not in 1..=64"),
        "{}",
        stderr(&zero)
    );

    let label = agent(
        &[
            "configure",
            "--url",
            "https://127.0.0.1:1",
            "--pool",
            "p",
            "--name",
            "n",
            "--label",
            "os=plan9",
        ],
        &[("FERRY_TOKEN", "x")],
    );
    assert_eq!(label.status.code(), Some(2));
    assert!(
        stderr(&label).contains("set by the agent itself"),
        "{}",
        stderr(&label)
    );

    let help = agent(&["--help"], &[]);
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("configure") && text.contains("run"), "{text}");
}
