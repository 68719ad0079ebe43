//! Throwaway PostgreSQL clusters for tests (std only).
//!
//! [`PostgresCluster::start`] runs `initdb` and `pg_ctl` from
//! `/usr/lib/postgresql/15/bin` (override with `FERRY_PG_BIN`) in a fresh
//! temporary directory, listening on a free 127.0.0.1 port with trust
//! authentication, and creates database `ferry`. Dropping it stops the
//! server (`-m immediate`) and removes the directory. When the process runs
//! as root (initdb refuses to), the server tools run as the `postgres` user
//! through `runuser`.
//!
//! Starting never silently skips: a missing binary or a failed start is an
//! error, so a test that needs PostgreSQL fails when it cannot have it.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const DEFAULT_BIN: &str = "/usr/lib/postgresql/15/bin";
const START_ATTEMPTS: usize = 3;

static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// A running throwaway PostgreSQL cluster.
#[derive(Debug)]
pub struct PostgresCluster {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl PostgresCluster {
    /// Starts a cluster and creates database `ferry` in it.
    pub fn start() -> io::Result<PostgresCluster> {
        let bin = std::env::var_os("FERRY_PG_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_BIN));
        for tool in ["initdb", "pg_ctl", "createdb"] {
            if !bin.join(tool).is_file() {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!(
                        "postgresql binary {} not found (install postgresql 15 or set FERRY_PG_BIN)",
                        bin.join(tool).display()
                    ),
                ));
            }
        }
        let as_postgres = running_as_root();
        let dir = unique_temp_dir()?;
        // from here on, Drop cleans up whatever was started
        let mut cluster = PostgresCluster {
            dir,
            bin,
            port: 0,
            as_postgres,
        };
        if as_postgres {
            run(Command::new("chown")
                .arg("-R")
                .arg("postgres:postgres")
                .arg(&cluster.dir))?;
        }
        let mut initdb = cluster.server_tool("initdb");
        initdb
            .arg("-D")
            .arg(cluster.data_dir())
            .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"])
            .arg("--no-locale");
        run(&mut initdb)?;

        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            cluster.port = free_port()?;
            match cluster.pg_ctl_start() {
                Ok(()) => {
                    last_error = None;
                    break;
                }
                Err(err) => last_error = Some(err),
            }
        }
        if let Some(err) = last_error {
            return Err(err);
        }
        cluster.wait_until_accepting(Duration::from_secs(30))?;
        cluster.create_database("ferry")?;
        Ok(cluster)
    }

    /// A cluster shared by everyone holding the returned `Arc`: started on
    /// first use, stopped when the last holder drops it (a later call then
    /// starts a new one). Lets the tests of one binary share a server and
    /// still stop it at the end.
    pub fn shared() -> io::Result<Arc<PostgresCluster>> {
        static SHARED: Mutex<Weak<PostgresCluster>> = Mutex::new(Weak::new());
        let mut shared = SHARED
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(cluster) = shared.upgrade() {
            return Ok(cluster);
        }
        let cluster = Arc::new(PostgresCluster::start()?);
        *shared = Arc::downgrade(&cluster);
        Ok(cluster)
    }

    /// `postgres://postgres@127.0.0.1:PORT/ferry`.
    pub fn url(&self) -> String {
        self.database_url("ferry")
    }

    /// The url of database `name` in this cluster.
    pub fn database_url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// The port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates database `name` and returns its url.
    pub fn create_database(&self, name: &str) -> io::Result<String> {
        let mut createdb = Command::new(self.bin.join("createdb"));
        createdb
            .args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
            .arg(self.port.to_string())
            .arg(name)
            .env_remove("PGPASSWORD")
            .current_dir(&self.dir);
        run(&mut createdb)?;
        Ok(self.database_url(name))
    }

    /// Creates a database with a fresh unique name and returns its url.
    pub fn fresh_database(&self) -> io::Result<String> {
        let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        self.create_database(&format!("ferry_{}_{n}", std::process::id()))
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn pg_ctl_start(&self) -> io::Result<()> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        let mut pg_ctl = self.server_tool("pg_ctl");
        pg_ctl
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.dir.join("server.log"))
            .args(["-w", "-t", "30", "-o"])
            .arg(options)
            .arg("start");
        run(&mut pg_ctl).map_err(|err| {
            let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
            io::Error::other(format!("{err}\nserver log:\n{log}"))
        })?;
        Ok(())
    }

    fn wait_until_accepting(&self, timeout: Duration) -> io::Result<()> {
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + timeout;
        loop {
            if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("postgresql did not accept connections on {address}"),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A command for a server tool, run as `postgres` when we are root.
    fn server_tool(&self, tool: &str) -> Command {
        let program = self.bin.join(tool);
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        };
        // the postgres user may not be able to enter the caller's directory
        command.current_dir(&self.dir);
        command
    }
}

impl Drop for PostgresCluster {
    fn drop(&mut self) {
        if self.data_dir().join("postmaster.pid").exists() {
            let mut pg_ctl = self.server_tool("pg_ctl");
            pg_ctl
                .arg("-D")
                .arg(self.data_dir())
                .args(["-m", "immediate", "-w", "stop"]);
            if let Err(err) = run(&mut pg_ctl) {
                eprintln!("stopping throwaway postgresql failed: {err}");
            }
        }
        if let Err(err) = std::fs::remove_dir_all(&self.dir) {
            eprintln!(
                "removing throwaway postgresql directory {} failed: {err}",
                self.dir.display()
            );
        }
    }
}

/// Runs a command to completion; an error (with its output) unless it
/// exits successfully.
fn run(command: &mut Command) -> io::Result<Output> {
    let output = command.output().map_err(|err| {
        io::Error::new(
            err.kind(),
            format!("cannot run {:?}: {err}", command.get_program()),
        )
    })?;
    if output.status.success() {
        return Ok(output);
    }
    Err(io::Error::other(format!(
        "{:?} {:?} failed ({}):\n{}{}",
        command.get_program(),
        command.get_args().collect::<Vec<_>>(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    )))
}

/// True when the effective uid is 0.
fn running_as_root() -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let Ok(meta) = std::fs::metadata("/proc/self") {
            return meta.uid() == 0;
        }
    }
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

fn unique_temp_dir() -> io::Result<PathBuf> {
    let base = std::env::temp_dir();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    for attempt in 0..100u32 {
        let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!(
            "ferry-pg-{}-{nanos}-{n}-{attempt}",
            std::process::id()
        ));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(err) => return Err(err),
        }
    }
    Err(io::Error::other("cannot create a temporary directory"))
}

/// A port nothing listens on right now (the kernel picks it).
fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}
