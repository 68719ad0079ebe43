//! The whole agent flow through the real binaries: `ferryd all` on a fresh
//! SQLite data directory, `ferry-agent configure` + `run` over TLS.

use std::time::Duration;

use anyhow::Context;
use ferry_e2e::{Agent, Server, files_containing};
use ferry_proto::v1::{
    CreateAdministratorRequest, JobState, RegisterRequest, RemoveAdministratorRequest,
};

use ferry_e2e::scenarios::{spec, step};

#[tokio::test(flavor = "multi_thread")]
async fn a_multi_step_job_with_a_secret_runs_end_to_end() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    ferry_e2e::scenarios::multi_step_job_with_a_secret(&server, dir.path()).await
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
    let queued = ferry_e2e::jobs::queue(
        &server,
        spec("after removal", vec![step("hello", "echo still working")]),
    )
    .await?;
    let job = ferry_e2e::jobs::finished(&server, &queued.id, Duration::from_secs(60)).await?;
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
