//! `ferryctl`, the real binary, against a real `ferryd all` and agent.

use std::path::Path;
use std::process::{Command, Output};

use ferry_e2e::{Agent, Server, binary};

fn ferryctl(server: &Server, args: &[&str]) -> Output {
    Command::new(binary("ferryctl"))
        .args(args)
        .env("FERRY_URL", &server.url)
        .env("FERRY_TOKEN", &server.owner_token)
        .env("FERRY_CA_CERT", &server.certificate_path)
        .env("HELLO_TOKEN", "ctl-s3cret-v4lue")
        .env_remove("FERRY_CONFIG")
        .output()
        .expect("ferryctl runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn json(output: &Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "ferryctl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON output")
}

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../clients/cli/examples")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn ferryctl_administers_queues_and_follows_jobs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path()).expect("ferryd starts");
    let (mut agent, output) = Agent::configure(
        &server,
        &dir.path().join("agent"),
        "ctl-agent",
        &server.owner_token,
        &[],
    )
    .expect("configure runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    agent.run(&[]).expect("agent runs");

    let pools = json(&ferryctl(&server, &["pool", "list", "-o", "json"]));
    assert!(pools.to_string().contains("\"default\""), "{pools}");
    let created = ferryctl(&server, &["pool", "create", "gpu"]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let duplicate = ferryctl(&server, &["pool", "create", "gpu"]);
    assert_eq!(duplicate.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&duplicate.stderr).contains("already exists"));

    let agents = json(&ferryctl(&server, &["agent", "list", "-o", "json"]));
    assert!(agents.to_string().contains("ctl-agent"), "{agents}");

    // A succeeding pipeline: --follow streams masked logs and exits 0.
    let queued = ferryctl(
        &server,
        &["job", "queue", &example("hello.yaml"), "--follow"],
    );
    let out = stdout(&queued);
    assert_eq!(
        queued.status.code(),
        Some(0),
        "{out}\n{}",
        String::from_utf8_lossy(&queued.stderr)
    );
    assert!(out.contains("token: ***"), "the secret is masked: {out}");
    assert!(
        !out.contains("ctl-s3cret-v4lue"),
        "the secret leaked: {out}"
    );
    for line in ["run 1", "run 2", "run 3"] {
        assert!(out.contains(line), "missing {line:?} in {out}");
    }

    // A failing pipeline exits 1; job list and job get show it.
    let failing = ferryctl(
        &server,
        &["job", "queue", &example("failing.yaml"), "--follow"],
    );
    assert_eq!(failing.status.code(), Some(1), "{}", stdout(&failing));
    let jobs = json(&ferryctl(&server, &["job", "list", "-o", "json"]));
    let jobs = jobs.as_array().cloned().unwrap_or_default();
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    let failed = jobs
        .iter()
        .find(|job| job["name"] == "failing")
        .expect("the failing job is listed");
    assert_eq!(failed["state"], "failed");
    let id = failed["id"].as_str().expect("id");
    let job = json(&ferryctl(&server, &["job", "get", id, "-o", "json"]));
    let states: Vec<&str> = job["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|step| step["state"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(states, ["failed", "failed", "skipped"], "{job}");
    let logs = ferryctl(&server, &["logs", id]);
    assert!(
        stdout(&logs).contains("this step fails, and that is fine"),
        "{}",
        stdout(&logs)
    );

    // Administrators: create one (its PAT printed once), list, remove.
    let admin = ferryctl(&server, &["admin", "create", "dev", "--pool", "gpu"]);
    assert!(
        admin.status.success(),
        "{}",
        String::from_utf8_lossy(&admin.stderr)
    );
    assert!(stdout(&admin).trim().starts_with("ferry_pat_"));
    let admins = json(&ferryctl(&server, &["admin", "list", "-o", "json"]));
    let dev = admins
        .as_array()
        .and_then(|list| list.iter().find(|admin| admin["name"] == "dev"))
        .expect("dev is listed")
        .clone();
    assert_eq!(dev["pools"], serde_json::json!(["gpu"]));
    let removed = ferryctl(
        &server,
        &["admin", "remove", dev["id"].as_str().expect("id")],
    );
    assert!(
        removed.status.success(),
        "{}",
        String::from_utf8_lossy(&removed.stderr)
    );

    // A wrong token is a one-line, readable error.
    let refused = Command::new(binary("ferryctl"))
        .args(["pool", "list"])
        .env("FERRY_URL", &server.url)
        .env("FERRY_TOKEN", format!("ferry_pat_{}", "B".repeat(43)))
        .env("FERRY_CA_CERT", &server.certificate_path)
        .output()
        .expect("ferryctl runs");
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("refused the token"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}
