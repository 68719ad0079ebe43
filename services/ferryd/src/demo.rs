//! `ferryd demo`: the whole flow on a temporary embedded default, with a
//! real agent process connecting over TLS like any agent.

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use ferry_client::{Bearer, ServerAddress};
use ferry_proto::time::micros_from_timestamp;
use ferry_proto::v1::{GetJobRequest, JobState, QueueJobRequest};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::config::Config;
use crate::server;

/// The pipeline the demo queues: three steps, one secret.
pub const SAMPLE_PIPELINE: &str = r#"name: ferry demo
project: demo
pipeline: hello
timeout: 5m
variables:
  GREETING: hello from ferry
secrets:
  DEPLOY_TOKEN: s3cr3t-d3mo-t0ken
steps:
  - name: build
    run: |
      echo "$GREETING: job $FERRY_JOB_ID on $(uname -sm)"
      mkdir -p out && printf 'artifact built at %s\n' "$(date -u +%FT%TZ)" > out/build.txt
      cat out/build.txt
  - name: deploy
    run: |
      echo "deploying with token $DEPLOY_TOKEN"
      echo "the same token, base64: $(printf %s "$DEPLOY_TOKEN" | base64)"
      echo "a warning on stderr" >&2
  - name: test
    run: |
      for suite in unit integration e2e; do
        echo "test suite $suite: ok"
        sleep 0.2
      done
"#;

/// Options of `ferryd demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the temporary directory (server data, agent settings) afterwards.
    #[arg(long)]
    keep: bool,
}

/// The program to run the agent with: `ferry-agent` next to this binary,
/// else this binary's hidden `agent` subcommand (same code).
fn agent_command() -> anyhow::Result<Command> {
    let me = std::env::current_exe().context("cannot find this program's path")?;
    let sibling = me.with_file_name("ferry-agent");
    Ok(if sibling.is_file() {
        Command::new(sibling)
    } else {
        let mut command = Command::new(me);
        command.arg("agent");
        command
    })
}

/// Prefixes each line of the agent's output so it reads apart from the job's.
fn relay(child: &mut Child) {
    let streams: Vec<Box<dyn tokio::io::AsyncRead + Unpin + Send>> = [
        child
            .stdout
            .take()
            .map(|out| Box::new(out) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        child
            .stderr
            .take()
            .map(|err| Box::new(err) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
    ]
    .into_iter()
    .flatten()
    .collect();
    for stream in streams {
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("  agent | {line}");
            }
        });
    }
}

async fn configure_agent(
    url: &str,
    token: &str,
    certificate: &Path,
    agent_dir: &Path,
) -> anyhow::Result<()> {
    let mut command = agent_command()?;
    command
        .args([
            "configure",
            "--url",
            url,
            "--pool",
            "default",
            "--name",
            "demo-agent",
            "--label",
            "demo=true",
        ])
        .arg("--ca-cert")
        .arg(certificate)
        .arg("--dir")
        .arg(agent_dir)
        .env("FERRY_TOKEN", token)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().context("cannot start ferry-agent")?;
    relay(&mut child);
    let status = child.wait().await?;
    if !status.success() {
        bail!("ferry-agent configure failed ({status})");
    }
    Ok(())
}

/// Runs the demo; the exit code says whether the job succeeded.
pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let temp = tempfile::Builder::new()
        .prefix("ferry-demo-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let root: PathBuf = temp.path().to_path_buf();
    let config = Config {
        listen: ([127, 0, 0, 1], 0).into(),
        data_dir: root.join("server"),
        ..Config::default()
    };
    let running = server::start(&config).await?;
    let url = format!("https://localhost:{}", running.address.port());
    let token = running
        .first_token
        .clone()
        .context("a fresh data directory must yield a first PAT")?;
    say!(
        "▶ ferryd serving on {url} (SQLite and keys in {})",
        config.data_dir.display()
    );

    let agent_dir = root.join("agent");
    configure_agent(&url, &token, &running.certificate_path, &agent_dir).await?;
    say!("▶ agent configured: it holds its private key, never the PAT");

    let mut agent = agent_command()?;
    agent
        .args(["run", "--once", "--dir"])
        .arg(&agent_dir)
        .env_remove("FERRY_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut agent = agent.spawn().context("cannot start ferry-agent run")?;
    relay(&mut agent);
    say!("▶ agent started (pid {})", agent.id().unwrap_or_default());

    let server_address = ServerAddress::new(
        url.clone(),
        Some(ferry_tls::read_certificate_pem(&running.certificate_path)?),
    );
    let channel = server_address.connect().await?;
    let bearer = Bearer::new(&token)?;
    let spec = ferryctl::pipeline::parse(SAMPLE_PIPELINE)?;
    let mut jobs = ferry_client::jobs(channel.clone(), bearer.clone());
    let queued = jobs
        .queue_job(QueueJobRequest { spec: Some(spec) })
        .await?
        .into_inner()
        .job
        .context("the server returned no job")?;
    say!(
        "▶ queued job {} ({} steps, secret DEPLOY_TOKEN)",
        queued.id,
        queued.steps.len()
    );
    say!("▶ following its logs live:\n");

    let mut client = ferryctl::Client::new(url.clone(), channel.clone(), bearer.clone());
    let mut stdout = std::io::stdout();
    let final_state = tokio::time::timeout(
        Duration::from_secs(120),
        ferryctl::follow_logs(&mut client, &queued.id, 0, &mut stdout, false),
    )
    .await
    .context("the job did not finish within 2 minutes")??;

    let job = jobs
        .get_job(GetJobRequest {
            job_id: queued.id.clone(),
        })
        .await?
        .into_inner()
        .job
        .context("the server returned no job")?;
    let micros = |time: &Option<prost_types::Timestamp>| time.as_ref().map(micros_from_timestamp);
    say!();
    for step in &job.steps {
        say!(
            "  step {} {:<8} exit {}",
            step.index + 1,
            step.name,
            step.exit_code
                .map_or("-".to_owned(), |code| code.to_string())
        );
    }
    if let (Some(queued_at), Some(assigned_at)) =
        (micros(&job.queue_time), micros(&job.assign_time))
    {
        say!(
            "▶ dispatch: queued → handed to the agent in {:.2} ms",
            (assigned_at - queued_at) as f64 / 1000.0
        );
    }
    say!(
        "▶ job {}: {} in {:.1} s ({} log lines; the secret never left the agent unmasked)",
        job.id,
        JobState::try_from(job.state)
            .unwrap_or_default()
            .as_str_name()
            .trim_start_matches("JOB_STATE_")
            .to_lowercase(),
        started.elapsed().as_secs_f64(),
        job.log_line_count
    );

    match tokio::time::timeout(Duration::from_secs(30), agent.wait()).await {
        Ok(Ok(status)) if status.success() => {}
        Ok(Ok(status)) => eprintln!("warning: the agent exited with {status}"),
        Ok(Err(error)) => eprintln!("warning: cannot wait for the agent: {error}"),
        Err(_) => {
            eprintln!("warning: the agent did not exit; stopping it");
            let _ = agent.kill().await;
        }
    }
    running.stop().await?;
    if args.keep {
        let kept = temp.keep();
        say!("▶ kept {}", kept.display());
    }
    Ok(if final_state == JobState::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
