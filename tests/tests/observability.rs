//! OpenTelemetry end to end: the mesh (gateway and one process per
//! service), a real agent and ferryctl export to an OTLP receiver of the
//! test's own. A job is one trace from `ferryctl job queue` to its last
//! step, its parent links hold, each step is a span with its exit code, the
//! fleet's metrics arrive with sensible values, and no secret, token or
//! PAT appears in anything exported.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use ferry_e2e::mesh::Mesh;
use ferry_e2e::otlp::checks::{check_trace, metric_problems, tokens_traced, trace_problems};
use ferry_e2e::otlp::{ReceivedSpan, Receiver};
use ferry_e2e::sim::SimAgent;
use ferry_e2e::{Agent, binary, jobs};
use ferry_proto::v1::{GetJobRequest, JobSpec, JobState, StepSpec};

const SECRET: &str = "tr4ce-s3cret-v4lue-7c1e";
const FAKE_PAT: &str = "ferry_pat_BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";
/// Short leases, so a vanished agent's lease lapses within the test.
const LEASES: &str = "[dispatch]\nlease = \"4s\"\nreap-interval = \"500ms\"\n";
const PIPELINE: &str = "\
name: traced
project: e2e
pipeline: observability
pool: default
secrets:
  OBS_SECRET: { from-env: OBS_SECRET }
steps:
  - name: hello
    run: echo hello
  - name: secret
    run: echo \"the secret is $OBS_SECRET\"
  - name: fails
    continue-on-error: true
    run: exit 3
";

fn ferryctl(mesh: &Mesh, env: &[(String, String)], args: &[&str]) -> anyhow::Result<Output> {
    let output = Command::new(binary("ferryctl"))
        .args(args)
        .env("FERRY_URL", &mesh.url)
        .env("FERRY_TOKEN", &mesh.owner_token)
        .env("FERRY_CA_CERT", &mesh.certificate_path)
        .env("OBS_SECRET", SECRET)
        .env_remove("FERRY_CONFIG")
        .envs(env.iter().map(|(key, value)| (key, value)))
        .output()
        .context("ferryctl runs")?;
    ensure!(
        output.status.success(),
        "ferryctl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(output)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_is_one_trace_and_the_fleet_is_measured() -> anyhow::Result<()> {
    let receiver = Receiver::start().await?;
    let env = receiver.env();
    let dir = tempfile::tempdir()?;
    let mesh = Mesh::start_with_env(dir.path(), 1, 1, LEASES, &env).await?;
    let server = mesh.as_server();
    let (mut agent, output) = Agent::configure(
        &server,
        &dir.path().join("agent"),
        "traced-agent",
        &mesh.owner_token,
        &[],
    )?;
    ensure!(output.status.success(), "configure: {output:?}");
    agent.run_with_env(&[], &env)?;

    // ferryctl queues the job: the root of its trace.
    let pipeline = dir.path().join("traced.yaml");
    std::fs::write(&pipeline, PIPELINE)?;
    let queued = ferryctl(
        &mesh,
        &env,
        &[
            "job",
            "queue",
            &pipeline.display().to_string(),
            "-o",
            "json",
        ],
    )?;
    let queued: serde_json::Value = serde_json::from_slice(&queued.stdout)?;
    let job_id = queued["id"].as_str().context("a job id")?.to_owned();
    let trace_id = queued["trace_id"]
        .as_str()
        .context("a trace id")?
        .to_owned();
    ensure!(
        trace_id.len() == 32 && trace_id != "0".repeat(32),
        "{trace_id}"
    );
    let job = jobs::finished(&server, &job_id, Duration::from_secs(60)).await?;
    ensure!(jobs::state(&job) == JobState::Succeeded, "{job:?}");
    let shown = ferryctl(&mesh, &env, &["job", "get", &job_id])?;
    let shown = String::from_utf8_lossy(&shown.stdout);
    ensure!(
        shown
            .lines()
            .any(|line| line.starts_with("trace id:") && line.ends_with(&trace_id)),
        "job get shows no trace id:\n{shown}"
    );

    // A refused PAT, counted by reason.
    let refused = ferry_client::jobs(mesh.channel().await?, ferry_client::Bearer::new(FAKE_PAT)?)
        .get_job(GetJobRequest {
            job_id: job_id.clone(),
        })
        .await
        .expect_err("an unknown PAT is refused");
    ensure!(refused.code() == tonic::Code::Unauthenticated);

    // The job's trace, whole.
    let deadline = Instant::now() + Duration::from_secs(45);
    let spans = loop {
        let spans: Vec<ReceivedSpan> = receiver
            .spans()
            .into_iter()
            .filter(|span| span.trace_id() == trace_id)
            .collect();
        let problems = trace_problems(&spans);
        if problems.is_empty() {
            break spans;
        }
        if Instant::now() > deadline {
            bail!("the job's trace is incomplete: {problems:#?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    check_trace(&spans)?;
    ensure!(
        tokens_traced(&receiver.spans()),
        "the tokens service traced no GetListenerToken"
    );

    // An agent that takes a job and vanishes: its lease lapses.
    let vanishing = SimAgent::register_with(
        mesh.channel().await?,
        &mesh.owner(),
        "default",
        "vanishing",
        &[("vanishes", "yes")],
    )
    .await?;
    let abandoned = jobs::queue(
        &server,
        JobSpec {
            name: "abandoned".to_owned(),
            pool: "default".to_owned(),
            demands: [("vanishes".to_owned(), "yes".to_owned())].into(),
            steps: vec![StepSpec {
                name: "never".to_owned(),
                script: "true".to_owned(),
                ..Default::default()
            }],
            ..Default::default()
        },
    )
    .await?;
    let taken = vanishing
        .poll(10)
        .await?
        .context("the vanishing agent's job")?;
    ensure!(taken.job_id == abandoned.id);
    ensure!(
        ferry_observability::propagation::trace_id(&taken.traceparent).as_deref()
            == Some(abandoned.trace_id.as_str()),
        "the sealed job carries its trace: {:?} vs {}",
        taken.traceparent,
        abandoned.trace_id
    );

    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let problems = metric_problems(&receiver);
        if problems.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            bail!("metrics: {problems:#?}");
        }
        println!("waiting for metrics: {problems:?}");
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }

    // Nothing exported carries a secret, a token or a PAT.
    let forbidden = [
        SECRET,
        mesh.owner_token.as_str(),
        FAKE_PAT,
        "ferry_pat_",
        "Bearer ",
        "eyJ",
    ];
    let spans = receiver.spans();
    ensure!(spans.len() > 20, "{} spans", spans.len());
    for span in &spans {
        for text in span.texts() {
            for needle in forbidden {
                ensure!(
                    !text.contains(needle),
                    "{} of {} carries {needle:?}: {text:?}",
                    span.span.name,
                    span.service
                );
            }
        }
    }
    for point in receiver.points() {
        for (key, value) in &point.attributes {
            for needle in forbidden {
                ensure!(
                    !key.contains(needle) && !value.contains(needle),
                    "{}: {key}={value}",
                    point.name
                );
            }
        }
    }
    drop(agent);
    Ok(())
}
