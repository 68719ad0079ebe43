//! The end-to-end harness: starts the real `ferryd`, `ferry-agent` and
//! `ferryctl` binaries as processes on loopback, with a fresh data
//! directory each, and talks to them over TLS like any client.
//!
//! The binaries are the ones `cargo test --workspace` builds next to the
//! test executable (`target/<profile>/`).

pub mod mesh;
pub mod otlp;
pub mod scenarios;
pub mod sim;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ferry_client::{Bearer, ServerAddress};
use tonic::transport::Channel;

/// Path of one of ferry's binaries, built by cargo next to the tests.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable has a path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("tests run from target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: run the tests with `cargo test --workspace`, which builds every binary",
        path.display()
    );
    path
}

/// Retries `check` until it returns `Some` or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A child process killed when dropped.
#[derive(Debug)]
pub struct Process {
    pub(crate) child: Child,
    pub(crate) name: String,
}

impl Process {
    /// Wraps a started child (killed when dropped).
    pub fn new(child: Child, name: &str) -> Process {
        Process {
            child,
            name: name.to_owned(),
        }
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("{} did not exit within {timeout:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `ferryd all` process on a fresh data directory.
#[derive(Debug)]
pub struct Server {
    /// `https://localhost:PORT`.
    pub url: String,
    /// The port.
    pub port: u16,
    /// The first administrator's PAT.
    pub owner_token: String,
    /// The self-signed certificate agents trust.
    pub certificate_path: PathBuf,
    /// The data directory.
    pub data_dir: PathBuf,
    process: Option<Process>,
}

impl Server {
    /// Starts `ferryd all` on 127.0.0.1 with a free port, in `dir`.
    pub fn start(dir: &Path) -> anyhow::Result<Server> {
        Self::start_with(dir, "127.0.0.1:0", "")
    }

    /// Starts `ferryd all` on `listen` in `dir` with a config file holding
    /// `config` (TOML; empty for the defaults). Starting again on the same
    /// directory and port is a restart.
    pub fn start_with(dir: &Path, listen: &str, config: &str) -> anyhow::Result<Server> {
        let data_dir = dir.join("server");
        let config_path = dir.join("ferryd.toml");
        std::fs::write(&config_path, config)?;
        // Decided before ferryd starts: it creates the keys at once.
        let restart = data_dir.join("keys").exists();
        let mut child = Command::new(binary("ferryd"))
            .args(["all", "--listen", listen, "--config"])
            .arg(&config_path)
            .arg("--data-dir")
            .arg(&data_dir)
            .env("FERRY_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start ferryd")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let process = Process {
            child,
            name: "ferryd".to_owned(),
        };
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                println!("ferryd | {line}");
                let _ = sender.send(line);
            }
        });
        let mut port = None;
        let mut token = None;
        let deadline = Instant::now() + Duration::from_secs(60);
        while port.is_none() || (token.is_none() && !restart) {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let line = receiver
                .recv_timeout(remaining)
                .context("ferryd did not print its address and first PAT in time")?;
            if let Some(rest) = line.split("serving on https://").nth(1) {
                let address = rest.split_whitespace().next().unwrap_or_default();
                port = address
                    .rsplit(':')
                    .next()
                    .and_then(|port| port.parse::<u16>().ok());
            }
            if let Some(found) = line
                .split_whitespace()
                .find(|word| word.starts_with("ferry_pat_"))
            {
                token = Some(found.to_owned());
            }
        }
        Ok(Server {
            url: format!("https://localhost:{}", port.unwrap_or_default()),
            port: port.unwrap_or_default(),
            owner_token: token.unwrap_or_default(),
            certificate_path: data_dir.join("tls").join("server.crt"),
            data_dir,
            process: Some(process),
        })
    }

    /// The server's address with its certificate trusted.
    pub fn address(&self) -> anyhow::Result<ServerAddress> {
        Ok(ServerAddress::new(
            self.url.clone(),
            Some(std::fs::read_to_string(&self.certificate_path)?),
        ))
    }

    /// A connected channel.
    pub async fn channel(&self) -> anyhow::Result<Channel> {
        Ok(self.address()?.connect().await?)
    }

    /// A bearer credential of the owner.
    pub fn owner(&self) -> Bearer {
        Bearer::new(&self.owner_token).expect("a PAT is a valid header")
    }

    /// A view of a server run by someone else (the mesh's gateway).
    pub fn view(
        url: String,
        owner_token: String,
        certificate_path: PathBuf,
        data_dir: PathBuf,
    ) -> Server {
        let port = url
            .rsplit(':')
            .next()
            .and_then(|port| port.parse().ok())
            .unwrap_or_default();
        Server {
            url,
            port,
            owner_token,
            certificate_path,
            data_dir,
            process: None,
        }
    }

    /// Kills the server (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(process) = self.process.as_mut() {
            process.kill();
        }
    }
}

/// A `ferry-agent` configured in its own directory.
#[derive(Debug)]
pub struct Agent {
    /// The agent's directory (settings, key).
    pub dir: PathBuf,
    /// The running `ferry-agent run`, if started.
    pub process: Option<Process>,
}

impl Agent {
    /// Runs `ferry-agent configure` with `token` (passed in the
    /// environment, as the docs advise) and returns its output.
    pub fn configure(
        server: &Server,
        dir: &Path,
        name: &str,
        token: &str,
        extra: &[&str],
    ) -> anyhow::Result<(Agent, Output)> {
        let output = Command::new(binary("ferry-agent"))
            .args([
                "configure",
                "--url",
                &server.url,
                "--pool",
                "default",
                "--name",
                name,
            ])
            .arg("--ca-cert")
            .arg(&server.certificate_path)
            .arg("--dir")
            .arg(dir)
            .args(extra)
            .env("FERRY_TOKEN", token)
            .output()
            .context("cannot run ferry-agent configure")?;
        Ok((
            Agent {
                dir: dir.to_path_buf(),
                process: None,
            },
            output,
        ))
    }

    /// Starts `ferry-agent run` with extra arguments.
    pub fn run(&mut self, extra: &[&str]) -> anyhow::Result<()> {
        self.run_with_env(extra, &[])
    }

    /// Starts `ferry-agent run` with extra arguments and environment
    /// variables (e.g. `OTEL_*`).
    pub fn run_with_env(&mut self, extra: &[&str], env: &[(String, String)]) -> anyhow::Result<()> {
        let child = Command::new(binary("ferry-agent"))
            .arg("run")
            .arg("--dir")
            .arg(&self.dir)
            .args(extra)
            .env_remove("FERRY_TOKEN")
            .env("FERRY_LOG", "info")
            .envs(env.iter().map(|(key, value)| (key, value)))
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start ferry-agent run")?;
        self.process = Some(Process {
            child,
            name: "ferry-agent".to_owned(),
        });
        Ok(())
    }
}

/// Every file under `dir` whose bytes contain `needle`.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let Ok(metadata) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if metadata.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                pending.extend(entries.filter_map(|entry| entry.ok().map(|entry| entry.path())));
            }
        } else if let Ok(bytes) = std::fs::read(&path)
            && bytes.windows(needle.len()).any(|window| window == needle)
        {
            found.push(path);
        }
    }
    found
}

/// A free loopback port (bound and released), for servers that restart.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// Job helpers over the owner's credential.
pub mod jobs {
    use std::time::Duration;

    use anyhow::Context;
    use ferry_proto::v1::{
        FollowLogsRequest, GetJobRequest, Job, JobSpec, JobState, LogLine, QueueJobRequest,
    };
    use tokio_stream::StreamExt;

    use crate::{Server, eventually};

    /// Queues a job as the owner.
    pub async fn queue(server: &Server, spec: JobSpec) -> anyhow::Result<Job> {
        let mut jobs = ferry_client::jobs(server.channel().await?, server.owner());
        jobs.queue_job(QueueJobRequest { spec: Some(spec) })
            .await?
            .into_inner()
            .job
            .context("no job")
    }

    /// The job now.
    pub async fn get(server: &Server, job_id: &str) -> anyhow::Result<Job> {
        let mut jobs = ferry_client::jobs(server.channel().await?, server.owner());
        jobs.get_job(GetJobRequest {
            job_id: job_id.to_owned(),
        })
        .await?
        .into_inner()
        .job
        .context("no job")
    }

    /// Waits until the job has ended.
    pub async fn finished(server: &Server, job_id: &str, timeout: Duration) -> anyhow::Result<Job> {
        let jobs = ferry_client::jobs(server.channel().await?, server.owner());
        eventually(timeout, "the job to finish", || {
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

    /// Every stored line of the job.
    pub async fn lines(server: &Server, job_id: &str) -> anyhow::Result<Vec<LogLine>> {
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

    /// Waits until a stored line satisfies `check`.
    pub async fn line_matching(
        server: &Server,
        job_id: &str,
        timeout: Duration,
        check: impl Fn(&LogLine) -> bool,
    ) -> anyhow::Result<LogLine> {
        let check = &check;
        eventually(timeout, "a log line", || async move {
            lines(server, job_id)
                .await
                .ok()?
                .into_iter()
                .find(|line| check(line))
        })
        .await
    }

    /// The job's state as an enum.
    pub fn state(job: &Job) -> JobState {
        JobState::try_from(job.state).unwrap_or_default()
    }
}
