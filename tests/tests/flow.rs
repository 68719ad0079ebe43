//! The whole agent flow through the real binaries: `ferryd all` on a fresh
//! SQLite data directory, `ferry-agent configure` + `run` over TLS.

use std::time::Duration;

use anyhow::Context;
use ferry_e2e::{Agent, Server, eventually, files_containing};
use ferry_proto::v1::{
    CreateAdministratorRequest, FollowLogsRequest, GetJobRequest, Job, JobSpec, JobState, LogLine,
    LogStream, QueueJobRequest, RegisterRequest, RemoveAdministratorRequest, StepSpec, StepState,
};
use tokio_stream::StreamExt;

const SECRET: &str = "hunter2-Sup3r-s3cret-value";

fn step(name: &str, script: &str) -> StepSpec {
    StepSpec {
        name: name.to_owned(),
        script: script.to_owned(),
        ..Default::default()
    }
}

fn spec(name: &str, steps: Vec<StepSpec>) -> JobSpec {
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

async fn queue(server: &Server, spec: JobSpec) -> anyhow::Result<Job> {
    let mut jobs = ferry_client::jobs(server.channel().await?, server.owner());
    jobs.queue_job(QueueJobRequest { spec: Some(spec) })
        .await?
        .into_inner()
        .job
        .context("no job")
}

async fn finished(server: &Server, job_id: &str) -> anyhow::Result<Job> {
    let jobs = ferry_client::jobs(server.channel().await?, server.owner());
    eventually(Duration::from_secs(60), "the job to finish", || {
        let mut jobs = jobs.clone();
        async move {
            let job = jobs
                .get_job(GetJobRequest {
                    job_id: job_id.to_owned(),
                })
                .await
                .ok()?
                .into_inner()
                .job?;
            matches!(
                JobState::try_from(job.state),
                Ok(JobState::Succeeded | JobState::Failed | JobState::Canceled)
            )
            .then_some(job)
        }
    })
    .await
}

async fn stored_lines(server: &Server, job_id: &str) -> anyhow::Result<Vec<LogLine>> {
    let mut logs = ferry_client::logs(server.channel().await?, server.owner());
    let mut stream = logs
        .follow_logs(FollowLogsRequest {
            job_id: job_id.to_owned(),
            from_sequence: 0,
            follow: false,
        })
        .await?
        .into_inner();
    let mut lines = Vec::new();
    while let Some(message) = stream.next().await {
        lines.extend(message?.lines);
    }
    Ok(lines)
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

#[tokio::test(flavor = "multi_thread")]
async fn a_multi_step_job_with_a_secret_runs_end_to_end() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    let (mut agent, output) = Agent::configure(
        &server,
        &dir.path().join("agent"),
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

    let good = queue(
        &server,
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
    let job = finished(&server, &good.id).await?;
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

    let lines = stored_lines(&server, &good.id).await?;
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

    let failing = queue(
        &server,
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
    let job = finished(&server, &failing.id).await?;
    assert_eq!(JobState::try_from(job.state)?, JobState::Failed);
    assert_eq!(
        step_states(&job),
        vec![
            (StepState::Succeeded, Some(0)),
            (StepState::Failed, Some(7)),
            (StepState::Skipped, None)
        ]
    );
    let lines = stored_lines(&server, &failing.id).await?;
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

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_keeps_no_pat_and_outlives_its_administrator() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    let mut registration = ferry_client::registration(server.channel().await?, server.owner());
    let created = registration
        .create_administrator(CreateAdministratorRequest {
            name: "ops".to_owned(),
            pools: vec!["default".to_owned()],
            owner: false,
        })
        .await?
        .into_inner();
    let ops_token = created.token;
    let (mut agent, output) = Agent::configure(
        &server,
        &dir.path().join("agent"),
        "ops-agent",
        &ops_token,
        &[],
    )?;
    assert!(
        output.status.success(),
        "configure failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        files_containing(&agent.dir, ops_token.as_bytes()).is_empty(),
        "the PAT was kept"
    );
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains(&ops_token)
            && !String::from_utf8_lossy(&output.stderr).contains(&ops_token),
        "configure printed the PAT"
    );

    registration
        .remove_administrator(RemoveAdministratorRequest {
            administrator_id: created.administrator.context("no administrator")?.id,
        })
        .await?;
    let mut revoked = ferry_client::registration(
        server.channel().await?,
        ferry_client::Bearer::new(&ops_token)?,
    );
    let refused = revoked
        .register(RegisterRequest {
            pool: "default".to_owned(),
            name: "another".to_owned(),
            public_key: vec![9; 32],
            ..Default::default()
        })
        .await
        .expect_err("a removed administrator's PAT is refused");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    agent.run(&["--once"])?;
    let queued = queue(
        &server,
        spec("after removal", vec![step("hello", "echo still working")]),
    )
    .await?;
    let job = finished(&server, &queued.id).await?;
    assert_eq!(
        JobState::try_from(job.state)?,
        JobState::Succeeded,
        "{}",
        job.message
    );
    let status = agent
        .process
        .as_mut()
        .context("agent running")?
        .wait_exit(Duration::from_secs(30))?;
    assert!(status.success(), "--once exits 0 after its job");
    Ok(())
}
