//! Scenarios that run the same on the embedded default and on the mesh.

use std::path::Path;
use std::time::Duration;

use crate::{Agent, Server, files_containing, jobs};
use ferry_proto::v1::{Job, JobSpec, JobState, LogStream, StepSpec, StepState};

/// The secret the scenarios use.
pub const SECRET: &str = "hunter2-Sup3r-s3cret-value";

/// A step running `script`.
pub fn step(name: &str, script: &str) -> StepSpec {
    StepSpec {
        name: name.to_owned(),
        script: script.to_owned(),
        ..Default::default()
    }
}

/// A job of the e2e project in the default pool, with [`SECRET`] and a
/// variable.
pub fn spec(name: &str, steps: Vec<StepSpec>) -> JobSpec {
    JobSpec {
        name: name.to_owned(),
        project: "e2e".to_owned(),
        pipeline: "flow".to_owned(),
        pool: "default".to_owned(),
        secrets: [("SECRET".to_owned(), SECRET.to_owned())].into(),
        variables: [("GREETING".to_owned(), "hello".to_owned())].into(),
        steps,
        ..Default::default()
    }
}

fn step_states(job: &Job) -> Vec<(StepState, Option<i32>)> {
    job.steps
        .iter()
        .map(|step| {
            (
                StepState::try_from(step.state).unwrap_or_default(),
                step.exit_code,
            )
        })
        .collect()
}

/// A multi-step job with a secret through the real agent: every line
/// arrives in order, the secret is masked and stored nowhere, exit codes and
/// results are right, a failing step fails its job.
pub async fn multi_step_job_with_a_secret(server: &Server, root: &Path) -> anyhow::Result<()> {
    let (mut agent, output) = Agent::configure(
        server,
        &root.join("agent"),
        "e2e-agent",
        &server.owner_token,
        &["--label", "suite=e2e"],
    )?;
    assert!(
        output.status.success(),
        "configure failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        files_containing(&agent.dir, server.owner_token.as_bytes()).is_empty(),
        "the PAT was written under the agent's directory"
    );
    agent.run(&[])?;

    let good = jobs::queue(
        server,
        spec(
            "three steps",
            vec![
                step("count", "for i in $(seq 1 300); do echo \"line $i\"; done"),
                step(
                    "secret",
                    "echo \"$GREETING, the secret is $SECRET\"\necho \"on stderr: $SECRET\" >&2",
                ),
                step("last", "echo done"),
            ],
        ),
    )
    .await?;
    let job = jobs::finished(server, &good.id, Duration::from_secs(60)).await?;
    assert_eq!(
        JobState::try_from(job.state)?,
        JobState::Succeeded,
        "{}",
        job.message
    );
    assert_eq!(
        step_states(&job),
        vec![(StepState::Succeeded, Some(0)); 3],
        "every step exits 0"
    );
    assert!(job.assign_time.is_some() && job.finish_time.is_some());

    let lines = jobs::lines(server, &good.id).await?;
    let sequences: Vec<u64> = lines.iter().map(|line| line.sequence).collect();
    assert_eq!(
        sequences,
        (1..=lines.len() as u64).collect::<Vec<_>>(),
        "gap-free, in order, once each"
    );
    assert_eq!(job.log_line_count, lines.len() as u64);
    let counted: Vec<&str> = lines
        .iter()
        .filter(|line| line.step_index == 0 && line.stream == LogStream::Stdout as i32)
        .map(|line| line.text.as_str())
        .collect();
    let expected: Vec<String> = (1..=300).map(|i| format!("line {i}")).collect();
    assert_eq!(counted, expected, "every line of step 1 arrives, in order");
    assert!(
        lines
            .iter()
            .any(|line| line.step_index == 1 && line.text == "hello, the secret is ***")
    );
    assert!(
        lines
            .iter()
            .any(|line| line.stream == LogStream::Stderr as i32 && line.text == "on stderr: ***")
    );
    assert!(
        lines
            .iter()
            .any(|line| line.step_index == 2 && line.text == "done")
    );
    assert!(
        lines.iter().all(|line| !line.text.contains(SECRET)),
        "a secret leaked into the stored log"
    );

    let failing = jobs::queue(
        server,
        spec(
            "fails",
            vec![
                step("before", "echo before"),
                step("breaks", "echo breaking; exit 7"),
                step("after", "echo never printed"),
            ],
        ),
    )
    .await?;
    let job = jobs::finished(server, &failing.id, Duration::from_secs(60)).await?;
    assert_eq!(JobState::try_from(job.state)?, JobState::Failed);
    assert_eq!(
        step_states(&job),
        vec![
            (StepState::Succeeded, Some(0)),
            (StepState::Failed, Some(7)),
            (StepState::Skipped, None)
        ]
    );
    let lines = jobs::lines(server, &failing.id).await?;
    assert!(lines.iter().any(|line| line.text == "breaking"));
    assert!(
        lines
            .iter()
            .all(|line| !line.text.contains("never printed")),
        "a step after a failure ran"
    );

    assert!(
        files_containing(&server.data_dir, SECRET.as_bytes()).is_empty(),
        "secret bytes in the server's data directory (database, WAL)"
    );
    assert!(
        files_containing(&agent.dir, SECRET.as_bytes()).is_empty(),
        "secret bytes left in the agent's directory"
    );
    Ok(())
}
