//! The server under test: a `ferryd all` this tool starts on a fresh
//! temporary data directory (SQLite by default, or a PostgreSQL database),
//! or one already running that `--url` names.

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ferry_client::{Bearer, ServerAddress};
use ferry_store::testing::PostgresCluster;

use crate::cli::ServerArgs;

/// Which database a started ferryd uses.
#[derive(Debug, Clone)]
pub enum Database {
    /// The default: `DATA_DIR/ferry.db`.
    Sqlite,
    /// A database the user gave with `--database-url`.
    Url(String),
    /// A fresh database per run in a throwaway cluster.
    Postgres(Arc<PostgresCluster>),
}

impl Database {
    /// `SQLite` or `PostgreSQL`, for the report.
    pub fn label(&self) -> &'static str {
        match self {
            Database::Sqlite => "SQLite",
            Database::Url(url) if url.starts_with("sqlite:") => "SQLite",
            Database::Url(_) | Database::Postgres(_) => "PostgreSQL",
        }
    }
}

/// How to reach (or start) the server for each run.
#[derive(Debug, Clone)]
pub struct ServerPlan {
    /// Either an external server or how to start one.
    pub mode: Mode,
    /// Pool of the agents and jobs.
    pub pool: String,
}

/// External or started.
#[derive(Debug, Clone)]
pub enum Mode {
    /// `--url`.
    External {
        /// Address with the CA to trust.
        address: ServerAddress,
        /// The administrator's PAT.
        token: String,
        /// Its process, when given.
        pid: Option<u32>,
    },
    /// A fresh ferryd per run.
    Spawn {
        /// The binary.
        ferryd: PathBuf,
        /// The database.
        database: Database,
        /// Its FERRY_LOG.
        log: String,
    },
}

impl ServerPlan {
    /// From the command line; starts the PostgreSQL cluster if asked.
    pub fn from_args(args: &ServerArgs) -> anyhow::Result<ServerPlan> {
        let mode = match &args.url {
            Some(url) => {
                let ca = match &args.ca_cert {
                    Some(path) => Some(std::fs::read_to_string(path).with_context(|| {
                        format!("cannot read the certificate {}", path.display())
                    })?),
                    None => None,
                };
                Mode::External {
                    address: ServerAddress::new(url.clone(), ca),
                    token: args.token.clone().context("--url needs --token")?,
                    pid: args.server_pid,
                }
            }
            None => {
                let ferryd = match &args.ferryd {
                    Some(path) => path.clone(),
                    None => sibling_binary("ferryd")?,
                };
                let database = if args.postgres {
                    eprintln!("starting a throwaway PostgreSQL cluster…");
                    Database::Postgres(Arc::new(
                        PostgresCluster::start().context("cannot start PostgreSQL")?,
                    ))
                } else if let Some(url) = &args.database_url {
                    Database::Url(url.clone())
                } else {
                    Database::Sqlite
                };
                Mode::Spawn {
                    ferryd,
                    database,
                    log: args.server_log.clone(),
                }
            }
        };
        Ok(ServerPlan {
            mode,
            pool: args.pool.clone(),
        })
    }

    /// `SQLite`, `PostgreSQL`, or `external` for a server given by URL.
    pub fn database_label(&self) -> &'static str {
        match &self.mode {
            Mode::External { .. } => "external server",
            Mode::Spawn { database, .. } => database.label(),
        }
    }

    /// A server for one run: a new ferryd, or the external one.
    pub fn start(&self) -> anyhow::Result<Target> {
        match &self.mode {
            Mode::External {
                address,
                token,
                pid,
            } => Ok(Target {
                address: address.clone(),
                owner: Bearer::new(token).map_err(|status| anyhow::anyhow!("{status}"))?,
                pid: *pid,
                pool: self.pool.clone(),
                process: None,
            }),
            Mode::Spawn {
                ferryd,
                database,
                log,
            } => {
                let url = match database {
                    Database::Sqlite => None,
                    Database::Url(url) => Some(url.clone()),
                    Database::Postgres(cluster) => Some(
                        cluster
                            .fresh_database()
                            .context("cannot create a PostgreSQL database")?,
                    ),
                };
                spawn(ferryd, url.as_deref(), log, &self.pool)
            }
        }
    }
}

/// A started ferryd: killed, and its data directory removed, on drop.
#[derive(Debug)]
struct Spawned {
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Spawned {
    /// SIGTERM (ferryd shuts down cleanly, and a profiler wrapping it
    /// writes its report), then SIGKILL after 10 s.
    fn drop(&mut self) {
        let terminated = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .is_ok_and(|status| status.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        while terminated && Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server of one run.
#[derive(Debug)]
pub struct Target {
    /// Its address and the CA to trust.
    pub address: ServerAddress,
    /// The administrator's credential.
    pub owner: Bearer,
    /// Its process id, when known (memory figures).
    pub pid: Option<u32>,
    /// The pool used.
    pub pool: String,
    process: Option<Spawned>,
}

impl Target {
    /// Where the started server's log is.
    pub fn log_path(&self) -> Option<PathBuf> {
        self.process
            .as_ref()
            .map(|spawned| spawned.dir.path().join("ferryd.log"))
    }

    /// Last lines of the started server's log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let Some(text) = self
            .log_path()
            .and_then(|path| std::fs::read_to_string(path).ok())
        else {
            return String::new();
        };
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

fn spawn(
    ferryd: &Path,
    database_url: Option<&str>,
    log: &str,
    pool: &str,
) -> anyhow::Result<Target> {
    if pool != "default" {
        bail!("a started ferryd has only the pool \"default\"; --pool is for --url");
    }
    let dir = tempfile::Builder::new()
        .prefix("ferry-bench-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let data_dir = dir.path().join("data");
    let log_file = std::fs::File::create(dir.path().join("ferryd.log"))?;
    let mut command = Command::new(ferryd);
    command
        .args(["all", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data_dir)
        .env("FERRY_LOG", log)
        .env_remove("FERRY_CONFIG")
        .env_remove("FERRY_DATABASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file);
    if let Some(url) = database_url {
        command.args(["--database-url", url]);
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {}", ferryd.display()))?;
    let stdout = child.stdout.take().context("ferryd has no stdout")?;
    let pid = child.id();
    let spawned = Spawned { child, dir };
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = sender.send(line);
        }
    });
    let (mut port, mut token) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(60);
    while port.is_none() || token.is_none() {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = receiver.recv_timeout(remaining) else {
            let log =
                std::fs::read_to_string(spawned.dir.path().join("ferryd.log")).unwrap_or_default();
            bail!("ferryd did not print its address and the owner's PAT in time:\n{log}");
        };
        if let Some(rest) = line.split("serving on https://").nth(1) {
            port = rest
                .split_whitespace()
                .next()
                .and_then(|address| address.rsplit(':').next())
                .and_then(|port| port.parse::<u16>().ok());
        }
        if let Some(found) = line
            .split_whitespace()
            .find(|word| word.starts_with("ferry_pat_"))
        {
            token = Some(found.to_owned());
        }
    }
    let certificate = data_dir.join("tls").join("server.crt");
    let pem = std::fs::read_to_string(&certificate)
        .with_context(|| format!("cannot read {}", certificate.display()))?;
    let url = format!("https://127.0.0.1:{}", port.unwrap_or_default());
    Ok(Target {
        address: ServerAddress::new(url, Some(pem)),
        owner: Bearer::new(token.as_deref().unwrap_or_default())
            .map_err(|status| anyhow::anyhow!("{status}"))?,
        pid: Some(pid),
        pool: pool.to_owned(),
        process: Some(spawned),
    })
}

/// `VmRSS` of a process, in bytes.
pub fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_kib(&status, "VmRSS:").map(|kib| kib * 1024)
}

/// Clock ticks per second of /proc/*/stat's times (USER_HZ, 100 on Linux).
const USER_HZ: u64 = 100;

/// CPU time used so far by ferryd (when its process is known) and by this
/// process.
#[derive(Debug, Clone, Copy)]
pub struct CpuMark {
    server: Option<Duration>,
    bench: Option<Duration>,
}

/// The CPU time ferryd and this process have used so far.
pub fn cpu_now(target: &Target) -> CpuMark {
    CpuMark {
        server: target.pid.and_then(cpu_of),
        bench: cpu_of(std::process::id()),
    }
}

impl CpuMark {
    /// ferryd's and this process's CPU time from `self` to `later`, in
    /// seconds × `scale`, divided by `units` (e.g. ms per job); `None` where
    /// unknown or where the clock went backwards (another process reusing
    /// the id).
    pub fn per(&self, later: &CpuMark, units: f64, scale: f64) -> (Option<f64>, Option<f64>) {
        let spent = |before: Option<Duration>, after: Option<Duration>| {
            let spent = after?.checked_sub(before?)?;
            Some(spent.as_secs_f64() * scale / units.max(1.0))
        };
        (
            spent(self.server, later.server),
            spent(self.bench, later.bench),
        )
    }
}

/// CPU time a process has used so far (user + system, all its threads),
/// from /proc/PID/stat.
pub fn cpu_of(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // the fields after the command name, which may hold spaces: the third
    // field of the line (state) first, so utime (14th) and stime (15th)
    // are the 12th and 13th here
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 1000 / USER_HZ))
}

/// A `… kB` field of /proc/*/status or /proc/meminfo, in KiB.
pub fn status_kib(text: &str, field: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
}

/// A binary next to this one (`target/<profile>/NAME`).
pub fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find ferry-bench's own path")?;
    let dir = exe.parent().context("ferry-bench has no directory")?;
    // Integration tests run from target/<profile>/deps.
    for candidate in [dir.join(name), dir.join("..").join(name)] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "{name} is not next to {} - build it (cargo build --release -p ferryd) or pass --ferryd",
        exe.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_spent_is_divided_per_unit_and_never_negative() {
        let mark = |server: u64, bench: u64| CpuMark {
            server: Some(Duration::from_millis(server)),
            bench: Some(Duration::from_millis(bench)),
        };
        // 300 ms and 100 ms over 100 jobs, in ms: 3 and 1 per job.
        let (server, bench) = mark(1_000, 500).per(&mark(1_300, 600), 100.0, 1000.0);
        assert!((server.expect("server") - 3.0).abs() < 1e-9);
        assert!((bench.expect("bench") - 1.0).abs() < 1e-9);
        // A clock that went backwards (another process) gives no figure.
        assert_eq!(mark(1_000, 500).per(&mark(900, 600), 1.0, 1.0).0, None);
        let unknown = CpuMark {
            server: None,
            bench: None,
        };
        assert_eq!(unknown.per(&mark(1, 1), 1.0, 1.0), (None, None));
    }

    #[test]
    fn status_fields_are_read_in_kib() {
        let text = "Name:\tferryd\nVmPeak:\t  200 kB\nVmRSS:\t   12345 kB\n";
        assert_eq!(status_kib(text, "VmRSS:"), Some(12345));
        assert_eq!(status_kib(text, "VmSwap:"), None);
        assert!(rss_of(std::process::id()).is_some_and(|bytes| bytes > 0));
        let before = cpu_of(std::process::id()).expect("own cpu time");
        let started = std::time::Instant::now();
        let mut spin = 0u64;
        while started.elapsed() < Duration::from_millis(300) {
            spin = std::hint::black_box(spin.wrapping_add(1));
        }
        let used = cpu_of(std::process::id()).expect("own cpu time") - before;
        assert!(used >= Duration::from_millis(100), "{used:?}");
    }
}
