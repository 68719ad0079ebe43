//! The real agent behind an HTTP CONNECT proxy: `HTTPS_PROXY` is honoured
//! for every call, `NO_PROXY` bypasses it.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ferry_e2e::jobs::{self, state};
use ferry_e2e::{Process, Server, binary};
use ferry_proto::v1::JobState;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// A minimal HTTP CONNECT proxy on loopback that counts its tunnels.
async fn start_proxy() -> anyhow::Result<(u16, Arc<AtomicUsize>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let tunnels = Arc::new(AtomicUsize::new(0));
    let counted = tunnels.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let counted = counted.clone();
            tokio::spawn(async move {
                let mut client = BufReader::new(client);
                let mut request = String::new();
                if client.read_line(&mut request).await.is_err() {
                    return;
                }
                let target = match request.split_whitespace().collect::<Vec<_>>()[..] {
                    ["CONNECT", target, _]
                        if target.starts_with("127.0.0.1:") || target.starts_with("localhost:") =>
                    {
                        target.to_owned()
                    }
                    _ => return,
                };
                loop {
                    let mut header = String::new();
                    match client.read_line(&mut header).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) if header == "\r\n" => break,
                        Ok(_) => {}
                    }
                }
                let Ok(mut upstream) = TcpStream::connect(target).await else {
                    return;
                };
                let mut client = client.into_inner();
                if client
                    .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                    .await
                    .is_err()
                {
                    return;
                }
                counted.fetch_add(1, Ordering::SeqCst);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    Ok((port, tunnels))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_reaches_the_server_through_an_https_proxy() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    let (port, tunnels) = start_proxy().await?;
    let proxy = format!("http://127.0.0.1:{port}");
    let agent_dir = dir.path().join("agent");
    let configured = Command::new(binary("ferry-agent"))
        .args([
            "configure",
            "--url",
            &server.url,
            "--pool",
            "default",
            "--name",
            "proxied",
            "--ca-cert",
        ])
        .arg(&server.certificate_path)
        .arg("--dir")
        .arg(&agent_dir)
        .env("FERRY_TOKEN", &server.owner_token)
        .env("HTTPS_PROXY", &proxy)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .output()?;
    anyhow::ensure!(
        configured.status.success(),
        "{}",
        String::from_utf8_lossy(&configured.stderr)
    );
    let after_configure = tunnels.load(Ordering::SeqCst);
    assert!(
        after_configure >= 1,
        "registration did not go through the proxy"
    );

    let child = Command::new(binary("ferry-agent"))
        .args(["run", "--dir"])
        .arg(&agent_dir)
        .env("HTTPS_PROXY", &proxy)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()?;
    let _agent = Process::new(child, "ferry-agent");
    let job = jobs::queue(
        &server,
        ferry_e2e::scenarios::spec(
            "proxied",
            vec![ferry_e2e::scenarios::step(
                "hello",
                "echo through the proxy",
            )],
        ),
    )
    .await?;
    let ended = jobs::finished(&server, &job.id, Duration::from_secs(60)).await?;
    assert_eq!(state(&ended), JobState::Succeeded, "{}", ended.message);
    assert!(
        tunnels.load(Ordering::SeqCst) > after_configure,
        "the agent's calls did not go through the proxy"
    );

    // NO_PROXY bypasses it.
    let before = tunnels.load(Ordering::SeqCst);
    let bypassed = Command::new(binary("ferry-agent"))
        .args([
            "configure",
            "--url",
            &server.url,
            "--pool",
            "default",
            "--name",
            "direct",
            "--ca-cert",
        ])
        .arg(&server.certificate_path)
        .arg("--dir")
        .arg(dir.path().join("direct"))
        .env("FERRY_TOKEN", &server.owner_token)
        .env("HTTPS_PROXY", &proxy)
        .env("NO_PROXY", "localhost,127.0.0.1")
        .output()?;
    anyhow::ensure!(
        bypassed.status.success(),
        "{}",
        String::from_utf8_lossy(&bypassed.stderr)
    );
    assert_eq!(
        tunnels.load(Ordering::SeqCst),
        before,
        "NO_PROXY was not honoured"
    );
    Ok(())
}
