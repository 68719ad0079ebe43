//! The job lifecycle through the real binaries: cancellation, lost agents,
//! requeues with fencing, a server restart mid-job, revocation.

use std::time::{Duration, Instant};

use anyhow::Context;
use ferry_client::Bearer;
use ferry_e2e::jobs::{self, state};
use ferry_e2e::sim::SimAgent;
use ferry_e2e::{Agent, Server, eventually, free_port};
use ferry_proto::v1::{
    AgentStatus, CancelJobRequest, JobSpec, JobState, ListAgentsRequest, RemoveAgentRequest,
    ReportStepRequest, StepSpec, StepState,
};
use tonic::Code;

/// Short leases so lost agents are noticed in seconds.
const FAST_LEASES: &str = "[dispatch]\nlease = \"2s\"\nreap-interval = \"200ms\"\n";

fn spec(name: &str, scripts: &[&str]) -> JobSpec {
    JobSpec {
        name: name.to_owned(),
        project: "e2e".to_owned(),
        pipeline: "lifecycle".to_owned(),
        pool: "default".to_owned(),
        steps: scripts
            .iter()
            .enumerate()
            .map(|(index, script)| StepSpec {
                name: format!("step-{index}"),
                script: (*script).to_owned(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn start_agent(server: &Server, dir: &std::path::Path, name: &str) -> anyhow::Result<Agent> {
    let (mut agent, output) =
        Agent::configure(server, &dir.join(name), name, &server.owner_token, &[])?;
    anyhow::ensure!(
        output.status.success(),
        "configure: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    agent.run(&[])?;
    Ok(agent)
}

fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            !stat
                .rsplit(')')
                .next()
                .unwrap_or_default()
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_reaches_a_sleeping_step_and_its_children_die() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    let _agent = start_agent(&server, dir.path(), "canceled-agent")?;
    let job = jobs::queue(
        &server,
        spec(
            "sleeper",
            &["sleep 600 &\necho \"child $!\"\nwait", "echo never"],
        ),
    )
    .await?;
    let line = jobs::line_matching(&server, &job.id, Duration::from_secs(30), |line| {
        line.text.starts_with("child ")
    })
    .await?;
    let pid: u32 = line.text.trim_start_matches("child ").trim().parse()?;
    assert!(process_alive(pid), "the step's child runs");

    let asked = Instant::now();
    let mut client = ferry_client::jobs(server.channel().await?, server.owner());
    client
        .cancel_job(CancelJobRequest {
            job_id: job.id.clone(),
            reason: "test".to_owned(),
        })
        .await?;
    let ended = jobs::finished(&server, &job.id, Duration::from_secs(20)).await?;
    let took = asked.elapsed();
    assert_eq!(state(&ended), JobState::Canceled, "{}", ended.message);
    assert!(took < Duration::from_secs(15), "cancel took {took:?}");
    assert_eq!(
        StepState::try_from(ended.steps[0].state)?,
        StepState::Canceled
    );
    assert_ne!(
        StepState::try_from(ended.steps[1].state)?,
        StepState::Succeeded
    );
    eventually(
        Duration::from_secs(10),
        "the step's child to die",
        || async move { (!process_alive(pid)).then_some(()) },
    )
    .await?;
    let lines = jobs::lines(&server, &job.id).await?;
    assert!(lines.iter().all(|line| line.text != "never"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_queued_job_cancels_at_once() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    let job = jobs::queue(&server, spec("no agent", &["echo hi"])).await?;
    assert!(
        jobs::get(&server, &job.id)
            .await?
            .message
            .contains("no enabled agent"),
        "the waiting reason names the cause"
    );
    let mut client = ferry_client::jobs(server.channel().await?, server.owner());
    let answer = client
        .cancel_job(CancelJobRequest {
            job_id: job.id.clone(),
            reason: String::new(),
        })
        .await?
        .into_inner();
    assert_eq!(JobState::try_from(answer.state)?, JobState::Canceled);
    assert_eq!(
        state(&jobs::get(&server, &job.id).await?),
        JobState::Canceled
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_agent_is_detected_and_its_running_job_fails() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start_with(dir.path(), "127.0.0.1:0", FAST_LEASES)?;
    let mut agent = start_agent(&server, dir.path(), "doomed")?;
    let job = jobs::queue(&server, spec("long", &["echo started; sleep 600"])).await?;
    jobs::line_matching(&server, &job.id, Duration::from_secs(30), |line| {
        line.text == "started"
    })
    .await?;
    let killed = Instant::now();
    agent.process.as_mut().context("running")?.kill();
    let ended = jobs::finished(&server, &job.id, Duration::from_secs(20)).await?;
    assert_eq!(state(&ended), JobState::Failed);
    assert!(ended.message.contains("agent lost"), "{}", ended.message);
    assert!(
        killed.elapsed() < Duration::from_secs(10),
        "noticed after {:?}",
        killed.elapsed()
    );
    Ok(())
}

/// An agent played by the test: it takes a job and vanishes. Returns the
/// job's id and its (stale-to-be) job token.
async fn take_a_job_and_vanish(server: &Server) -> anyhow::Result<(String, String)> {
    let agent = SimAgent::register(
        server.channel().await?,
        &server.owner(),
        "default",
        "vanishing",
    )
    .await?;
    let job = agent.poll(10).await?.context("a job")?;
    Ok((job.job_id, job.job_token))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_whose_agent_vanished_before_starting_is_requeued_and_runs_once() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let server = Server::start_with(dir.path(), "127.0.0.1:0", FAST_LEASES)?;
    let job = jobs::queue(&server, spec("requeued", &["echo only once"])).await?;
    let (taken, stale_token) = take_a_job_and_vanish(&server).await?;
    assert_eq!(taken, job.id);

    eventually(
        Duration::from_secs(15),
        "the job to be requeued",
        || async {
            let job = jobs::get(&server, &job.id).await.ok()?;
            (state(&job) == JobState::Queued && job.attempt == 2).then_some(())
        },
    )
    .await?;
    // The vanished agent's token (still unexpired: it lives two leases) is
    // fenced off: its attempt is over.
    let refused = ferry_client::jobs(server.channel().await?, Bearer::new(&stale_token)?)
        .report_step(ReportStepRequest {
            job_id: job.id.clone(),
            index: 0,
            state: StepState::Running.into(),
            ..Default::default()
        })
        .await
        .expect_err("a stale attempt's write is refused");
    assert_eq!(refused.code(), Code::FailedPrecondition);

    let _agent = start_agent(&server, dir.path(), "rescuer")?;
    let ended = jobs::finished(&server, &job.id, Duration::from_secs(30)).await?;
    assert_eq!(state(&ended), JobState::Succeeded, "{}", ended.message);
    assert_eq!(ended.attempt, 2);
    let lines = jobs::lines(&server, &job.id).await?;
    assert_eq!(
        lines.iter().filter(|line| line.text == "only once").count(),
        1,
        "the step ran exactly once"
    );

    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_restart_mid_job_loses_and_repeats_no_line() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let listen = format!("127.0.0.1:{}", free_port());
    let mut server = Server::start_with(dir.path(), &listen, "")?;
    let owner_token = server.owner_token.clone();
    let _agent = start_agent(&server, dir.path(), "survivor")?;
    let job = jobs::queue(
        &server,
        spec(
            "restart",
            &["for i in $(seq 1 80); do echo \"line $i\"; sleep 0.05; done"],
        ),
    )
    .await?;
    jobs::line_matching(&server, &job.id, Duration::from_secs(30), |line| {
        line.text == "line 10"
    })
    .await?;

    server.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut restarted = Server::start_with(dir.path(), &listen, "")?;
    restarted.owner_token = owner_token;

    let ended = jobs::finished(&restarted, &job.id, Duration::from_secs(60)).await?;
    assert_eq!(state(&ended), JobState::Succeeded, "{}", ended.message);
    let lines = jobs::lines(&restarted, &job.id).await?;
    let sequences: Vec<u64> = lines.iter().map(|line| line.sequence).collect();
    assert_eq!(sequences, (1..=lines.len() as u64).collect::<Vec<_>>());
    let printed: Vec<&str> = lines
        .iter()
        .filter(|line| line.text.starts_with("line "))
        .map(|line| line.text.as_str())
        .collect();
    let expected: Vec<String> = (1..=80).map(|i| format!("line {i}")).collect();
    assert_eq!(printed, expected, "every line exactly once, in order");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn removing_an_agent_ends_its_long_poll_at_once() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    let channel = server.channel().await?;
    let agent = SimAgent::register(channel.clone(), &server.owner(), "default", "removed").await?;
    let agent_id = agent.id.clone();
    let poll = tokio::spawn(async move { agent.poll(60).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let removed_at = Instant::now();
    ferry_client::registration(channel, server.owner())
        .remove_agent(RemoveAgentRequest { agent_id })
        .await?;
    let answer = tokio::time::timeout(Duration::from_secs(5), poll).await??;
    assert_eq!(answer.expect_err("refused").code(), Code::Unauthenticated);
    assert!(removed_at.elapsed() < Duration::from_secs(5));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_stopped_after_its_job_shows_idle_not_busy() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    let mut agent = start_agent(&server, dir.path(), "stopping")?;
    let job = jobs::queue(&server, spec("last job", &["sleep 1", "echo done"])).await?;
    eventually(Duration::from_secs(30), "the job to run", || async {
        jobs::get(&server, &job.id)
            .await
            .ok()
            .filter(|job| state(job) == JobState::Running)
    })
    .await?;
    // SIGTERM: the running job finishes, then the agent exits without
    // polling again. The job completes on its log stream (the log
    // service); dispatch hears of it and shows the agent idle.
    let process = agent.process.as_mut().context("agent running")?;
    std::process::Command::new("kill")
        .args(["-TERM", &process.id().to_string()])
        .status()?;
    let status = process.wait_exit(Duration::from_secs(30))?;
    assert!(status.success(), "the agent drains and exits 0");
    let finished = jobs::finished(&server, &job.id, Duration::from_secs(10)).await?;
    assert_eq!(
        state(&finished),
        JobState::Succeeded,
        "{}",
        finished.message
    );
    let registration = ferry_client::registration(server.channel().await?, server.owner());
    eventually(Duration::from_secs(10), "the agent shown idle", || {
        let mut registration = registration.clone();
        async move {
            let agents = registration
                .list_agents(ListAgentsRequest::default())
                .await
                .ok()?
                .into_inner()
                .agents;
            agents.into_iter().find(|shown| {
                shown.name == "stopping"
                    && shown.status == AgentStatus::Online as i32
                    && shown.current_job_id.is_empty()
            })
        }
    })
    .await?;
    Ok(())
}
