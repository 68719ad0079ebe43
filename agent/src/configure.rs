//! `ferry-agent configure`: register with a pool and write the agent
//! directory. The PAT is used for this one call and never stored.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use ferry_client::{Bearer, ServerAddress};
use ferry_envelope::{PublicKey, SecretKey};
use ferry_proto::v1::RegisterRequest;
use tonic::Code;

use crate::cli::ConfigureArgs;
use crate::rpc::describe;
use crate::settings::{AgentDir, Settings};

/// How long registration may take.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(30);

/// Registers the agent and writes its configuration.
pub async fn configure(args: ConfigureArgs) -> anyhow::Result<()> {
    let dir = AgentDir::new(&args.dir.dir);
    if dir.is_configured() && !args.replace {
        bail!(
            "{} already holds an agent configuration: pass --replace to overwrite it",
            dir.path().display()
        );
    }
    let ca_pem = match &args.ca_cert {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the CA certificate {}", path.display()))?,
        ),
        None => None,
    };
    let channel = ServerAddress::new(args.url.clone(), ca_pem.clone()).connect_lazy()?;
    let bearer = Bearer::new(args.token.expose())
        .map_err(|_| anyhow!("the PAT has characters a header cannot carry"))?;
    let secret_key = SecretKey::generate().context("cannot generate the agent's key")?;

    let mut capabilities: HashMap<String, String> = args.labels.iter().cloned().collect();
    capabilities.insert("os".into(), std::env::consts::OS.into());
    capabilities.insert("arch".into(), std::env::consts::ARCH.into());
    if let Some(hostname) = hostname() {
        capabilities.insert("hostname".into(), hostname);
    }
    let mut request = tonic::Request::new(RegisterRequest {
        pool: args.pool.clone(),
        name: args.name.clone(),
        public_key: secret_key.public_key().as_bytes().to_vec(),
        capabilities,
        replace: args.replace,
    });
    request.set_timeout(REGISTER_TIMEOUT);
    let mut client = ferry_client::registration(channel, bearer);
    let call = client.register(request);
    let response = match tokio::time::timeout(REGISTER_TIMEOUT + Duration::from_secs(5), call).await
    {
        Err(_) => bail!(
            "the server at {} did not answer within {} s",
            args.url,
            REGISTER_TIMEOUT.as_secs()
        ),
        Ok(Err(status)) => return Err(registration_error(&args, &status)),
        Ok(Ok(response)) => response.into_inner(),
    };
    let server_public_key = PublicKey::from_slice(&response.server_public_key)
        .map_err(|_| anyhow!("the server sent a server public key that is not 32 bytes"))?;
    if response.agent_id.is_empty() {
        bail!("the server sent no agent id");
    }

    let work_dir = match &args.work_dir {
        Some(work_dir) => work_dir.clone(),
        None => dir.path().join("work"),
    };
    let work_dir = std::path::absolute(&work_dir)
        .with_context(|| format!("cannot resolve the work directory {}", work_dir.display()))?;
    std::fs::create_dir_all(&work_dir)
        .with_context(|| format!("cannot create the work directory {}", work_dir.display()))?;
    let pool = response
        .pool
        .map(|pool| pool.name)
        .filter(|name| !name.is_empty())
        .unwrap_or(args.pool);
    let settings = Settings {
        agent_id: response.agent_id,
        name: args.name,
        pool,
        url: args.url,
        server_public_key: server_public_key.to_string(),
        work_dir,
        labels: args.labels.into_iter().collect(),
    };
    dir.save(&settings, &secret_key, ca_pem.as_deref())?;
    tracing::info!(agent_id = %settings.agent_id, agent = %settings.name, pool = %settings.pool, dir = %dir.path().display(), "agent configured");
    println!(
        "configured agent {} ({}) in pool {}; settings are in {}\nstart it with: ferry-agent run --dir {}",
        settings.name,
        settings.agent_id,
        settings.pool,
        dir.settings_path().display(),
        dir.path().display()
    );
    Ok(())
}

/// A clear error for a failed registration; never includes the PAT.
fn registration_error(args: &ConfigureArgs, status: &tonic::Status) -> anyhow::Error {
    match status.code() {
        Code::PermissionDenied => anyhow!("this PAT is not an administrator of pool {}", args.pool),
        Code::Unauthenticated => {
            anyhow!("the PAT was refused by {} ({})", args.url, describe(status))
        }
        Code::Unavailable => anyhow!(
            "cannot reach the server at {}: {}",
            args.url,
            describe(status)
        ),
        Code::AlreadyExists => anyhow!(
            "an agent named {} is already registered in pool {}: pass --replace to replace it",
            args.name,
            args.pool
        ),
        Code::NotFound => anyhow!("registration failed at {}: {}", args.url, describe(status)),
        _ => anyhow!("registration failed at {}: {}", args.url, describe(status)),
    }
}

/// This machine's host name, if it can be found without libc.
fn hostname() -> Option<String> {
    let from_files = ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .map(|text| text.trim().to_owned())
        .find(|name| !name.is_empty());
    from_files
        .or_else(|| {
            std::env::var("HOSTNAME")
                .ok()
                .filter(|name| !name.is_empty())
        })
        .or_else(|| {
            std::process::Command::new("hostname")
                .output()
                .ok()
                .and_then(|output| String::from_utf8(output.stdout).ok())
                .map(|name| name.trim().to_owned())
                .filter(|name| !name.is_empty())
        })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_hostname_is_found() {
        let name = super::hostname().expect("hostname");
        assert!(!name.is_empty() && !name.contains('\n'));
    }
}
