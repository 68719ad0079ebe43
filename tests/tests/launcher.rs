//! `ferryd mesh up`: the launcher starts the gateway and a replica of every
//! service as separate processes, and stops them all on Ctrl-C.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use ferry_client::{Bearer, ServerAddress};
use ferry_e2e::{Process, binary, eventually, free_port};
use ferry_proto::v1::ListPoolsRequest;
use ferry_store::testing::PostgresCluster;

/// A base port with the next five free too.
fn free_range(count: u16) -> u16 {
    loop {
        let base = free_port();
        if base < u16::MAX - count
            && (1..count)
                .all(|offset| std::net::TcpListener::bind(("127.0.0.1", base + offset)).is_ok())
        {
            return base;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn mesh_up_runs_every_process_and_stops_them_on_ctrl_c() -> anyhow::Result<()> {
    let database = PostgresCluster::shared().context("cannot start PostgreSQL")?;
    let database_url = database.fresh_database()?;
    let dir = tempfile::tempdir()?;
    let gateway_port = free_port();
    let config = dir.path().join("mesh.toml");
    std::fs::write(
        &config,
        format!(
            "data-dir = {data:?}\ndatabase-url = {database_url:?}\n[mesh]\ncertificates-dir = {mesh:?}\n[gateway]\nlisten = \"127.0.0.1:{gateway_port}\"\nhealth-interval = \"300ms\"\n",
            data = dir.path().join("data").display().to_string(),
            mesh = dir.path().join("mesh").display().to_string(),
        ),
    )?;
    let base = free_range(5);
    let mut child = Command::new(binary("ferryd"))
        .args([
            "mesh",
            "up",
            "--replicas",
            "1",
            "--base-port",
            &base.to_string(),
            "--config",
        ])
        .arg(&config)
        .env("FERRY_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let pid = child.id();
    let mut launcher = Process::new(child, "ferryd mesh up");
    let mut token = None;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if let Some(found) = line
            .split_whitespace()
            .find(|word| word.starts_with("ferry_pat_"))
        {
            token = Some(found.to_owned());
        }
        if line.starts_with("mesh up:") {
            break;
        }
    }
    let token = token.context("mesh up printed no PAT")?;
    let address = ServerAddress::new(
        format!("https://localhost:{gateway_port}"),
        Some(std::fs::read_to_string(
            dir.path().join("data/tls/server.crt"),
        )?),
    );
    let pools = eventually(Duration::from_secs(60), "the mesh to answer", || {
        let (address, token) = (address.clone(), token.clone());
        async move {
            let channel = address.connect().await.ok()?;
            ferry_client::registration(channel, Bearer::new(&token).ok()?)
                .list_pools(ListPoolsRequest {})
                .await
                .ok()
                .map(|response| response.into_inner().pools)
        }
    })
    .await?;
    assert!(pools.iter().any(|pool| pool.name == "default"));

    // Ctrl-C stops the launcher and every process it started.
    Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()?;
    let status = launcher.wait_exit(Duration::from_secs(20))?;
    assert!(status.success(), "the launcher exits 0 on Ctrl-C");
    eventually(
        Duration::from_secs(10),
        "the mesh processes to stop",
        || async {
            let ports = std::iter::once(gateway_port).chain(base..base + 5);
            ports
                .into_iter()
                .all(|port| std::net::TcpStream::connect(("127.0.0.1", port)).is_err())
                .then_some(())
        },
    )
    .await?;
    Ok(())
}
