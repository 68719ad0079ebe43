//! Source archives, JUnit results and artifacts end to end through the real
//! binaries, and the job token's scope on them.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::Context;
use ferry_client::Bearer;
use ferry_e2e::jobs::{self, state};
use ferry_e2e::sim::SimAgent;
use ferry_e2e::{Agent, Server, binary};
use ferry_proto::v1::{
    CompleteJobRequest, DownloadArtifactRequest, DownloadSourceRequest, JobResult, JobSpec,
    JobState, StepSpec,
};
use tonic::Code;

const REPORT: &str = r#"<?xml version="1.0"?>
<testsuite name="calc" tests="3">
  <testcase classname="calc" name="adds"/>
  <testcase classname="calc" name="divides"><failure message="by zero"/></testcase>
  <testcase classname="calc" name="later"><skipped/></testcase>
</testsuite>"#;

fn ferryctl(server: &Server, args: &[&str]) -> Output {
    Command::new(binary("ferryctl"))
        .args(args)
        .env("FERRY_URL", &server.url)
        .env("FERRY_TOKEN", &server.owner_token)
        .env("FERRY_CA_CERT", &server.certificate_path)
        .env_remove("FERRY_CONFIG")
        .output()
        .expect("ferryctl runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write_project(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("src"))?;
    std::fs::write(dir.join("hello.txt"), "hello from the source archive\n")?;
    std::fs::write(dir.join("src/report.xml"), REPORT)?;
    std::fs::write(
        dir.join("pipeline.yaml"),
        r#"name: with-resources
project: e2e
pipeline: resources
steps:
  - name: read source
    run: cat hello.txt
  - name: test and build
    run: |
      mkdir -p reports out
      cp src/report.xml reports/junit.xml
      head -c 300000 /dev/urandom > out/app.bin
      sha256sum out/app.bin
test-results: ["reports/*.xml"]
artifacts: ["out/*"]
"#,
    )?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn source_results_and_artifacts_flow_through_the_real_binaries() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    let (mut agent, output) = Agent::configure(
        &server,
        &dir.path().join("agent"),
        "builder",
        &server.owner_token,
        &[],
    )?;
    anyhow::ensure!(output.status.success(), "{}", text(&output.stderr));
    agent.run(&[])?;
    let project = dir.path().join("project");
    write_project(&project)?;
    let pipeline = project.join("pipeline.yaml");
    let pipeline = pipeline.to_str().context("utf8 path")?;
    let source = project.to_str().context("utf8 path")?;

    let queued = ferryctl(
        &server,
        &["job", "queue", pipeline, "--source", source, "--follow"],
    );
    let out = text(&queued.stdout);
    assert_eq!(
        queued.status.code(),
        Some(0),
        "{out}\n{}",
        text(&queued.stderr)
    );
    assert!(
        out.contains("hello from the source archive"),
        "the source was unpacked: {out}"
    );

    let listed: serde_json::Value =
        serde_json::from_slice(&ferryctl(&server, &["job", "list", "-o", "json"]).stdout)?;
    let job_id = listed[0]["id"].as_str().context("a job")?.to_owned();
    let job = jobs::get(&server, &job_id).await?;
    assert_eq!(state(&job), JobState::Succeeded, "{}", job.message);
    let summary = job.test_summary.context("the JUnit report was parsed")?;
    assert_eq!(
        (
            summary.total,
            summary.passed,
            summary.failed,
            summary.skipped
        ),
        (3, 1, 1, 1)
    );
    assert_eq!(summary.failed_tests, ["calc.divides"]);
    assert!(!job.source_id.is_empty());

    let listed: serde_json::Value = serde_json::from_slice(
        &ferryctl(&server, &["artifact", "list", &job_id, "-o", "json"]).stdout,
    )?;
    assert!(listed.to_string().contains("out/app.bin"), "{listed}");
    let download = dir.path().join("app.bin");
    let fetched = ferryctl(
        &server,
        &[
            "artifact",
            "download",
            &job_id,
            "out/app.bin",
            "-O",
            download.to_str().context("utf8")?,
        ],
    );
    assert!(fetched.status.success(), "{}", text(&fetched.stderr));
    let bytes = std::fs::read(&download)?;
    assert_eq!(bytes.len(), 300_000);
    let printed = jobs::lines(&server, &job_id).await?;
    let sha = ferry_e2e_sha256(&bytes);
    assert!(
        printed.iter().any(|line| line.text.starts_with(&sha)),
        "the artifact is the file the step made"
    );
    Ok(())
}

fn ferry_e2e_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_token_reaches_only_its_own_job_and_pipeline() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    let (mut agent, output) = Agent::configure(
        &server,
        &dir.path().join("agent"),
        "builder",
        &server.owner_token,
        &["--label", "real=yes"],
    )?;
    anyhow::ensure!(output.status.success(), "{}", text(&output.stderr));
    agent.run(&[])?;
    let project = dir.path().join("project");
    write_project(&project)?;
    let pipeline = project.join("pipeline.yaml");
    let queued = ferryctl(
        &server,
        &[
            "job",
            "queue",
            pipeline.to_str().context("utf8")?,
            "--source",
            project.to_str().context("utf8")?,
            "--follow",
        ],
    );
    assert_eq!(queued.status.code(), Some(0), "{}", text(&queued.stderr));
    let listed: serde_json::Value =
        serde_json::from_slice(&ferryctl(&server, &["job", "list", "-o", "json"]).stdout)?;
    let job_a = listed[0]["id"].as_str().context("a job")?.to_owned();

    // A job of another pipeline, taken by an agent played by the test.
    let channel = server.channel().await?;
    let player = SimAgent::register_with(
        channel.clone(),
        &server.owner(),
        "default",
        "player",
        &[("player", "yes")],
    )
    .await?;
    let job_b = jobs::queue(
        &server,
        JobSpec {
            name: "other pipeline".to_owned(),
            project: "e2e".to_owned(),
            pipeline: "elsewhere".to_owned(),
            pool: "default".to_owned(),
            demands: [("player".to_owned(), "yes".to_owned())].into(),
            steps: vec![StepSpec {
                name: "x".to_owned(),
                script: "true".to_owned(),
                ..Default::default()
            }],
            ..Default::default()
        },
    )
    .await?;
    let polled = player.poll(10).await?.context("a job")?;
    assert_eq!(polled.job_id, job_b.id);
    let token_b = polled.job_token;

    let mut resources =
        ferry_proto::v1::resource_service_client::ResourceServiceClient::with_interceptor(
            channel.clone(),
            Bearer::new(&token_b)?,
        );
    let source = resources
        .download_source(DownloadSourceRequest {
            job_id: job_a.clone(),
        })
        .await
        .expect_err("job B's token on job A's source");
    assert_eq!(source.code(), Code::PermissionDenied);
    let artifact = resources
        .download_artifact(DownloadArtifactRequest {
            job_id: job_a.clone(),
            name: "out/app.bin".to_owned(),
        })
        .await
        .expect_err("job B's token on another pipeline's artifact");
    assert_eq!(artifact.code(), Code::PermissionDenied);

    ferry_client::jobs(channel, Bearer::new(&token_b)?)
        .complete_job(CompleteJobRequest {
            job_id: job_b.id.clone(),
            result: JobResult::Succeeded.into(),
            message: String::new(),
        })
        .await?;
    let after = resources
        .download_source(DownloadSourceRequest {
            job_id: job_b.id.clone(),
        })
        .await
        .expect_err("a completed job's token is dead");
    assert_eq!(after.code(), Code::Unauthenticated);
    let _ = jobs::finished(&server, &job_b.id, Duration::from_secs(5)).await?;
    Ok(())
}
