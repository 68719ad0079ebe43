//! The agent's configuration directory: `agent.toml` (settings),
//! `agent.key` (the X25519 private key, mode 0600) and `ca.pem` (optional).
//!
//! Nothing in it is a credential for the server except the private key; the
//! PAT used to register is never written, and the listener and job tokens
//! live only in memory.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use ferry_envelope::{KEY_LEN, PublicKey, SecretKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// The settings file inside the agent directory.
pub const SETTINGS_FILE: &str = "agent.toml";
/// The private key file inside the agent directory.
pub const KEY_FILE: &str = "agent.key";
/// The copied CA certificate inside the agent directory.
pub const CA_FILE: &str = "ca.pem";

/// What `ferry-agent configure` writes to `agent.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// The agent id the server assigned (a UUID).
    pub agent_id: String,
    /// The agent's name in its pool.
    pub name: String,
    /// The pool it belongs to.
    pub pool: String,
    /// The server URL.
    pub url: String,
    /// The server's X25519 public key, 64 hex digits.
    pub server_public_key: String,
    /// Where job workspaces are created.
    pub work_dir: PathBuf,
    /// The labels given at registration (without os, arch and hostname).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl Settings {
    /// The server's public key, parsed.
    pub fn server_public_key(&self) -> anyhow::Result<PublicKey> {
        self.server_public_key
            .parse()
            .context("server_public_key in the settings is not 64 hex digits")
    }
}

/// Everything `ferry-agent run` needs, loaded from the agent directory.
#[derive(Debug)]
pub struct Configuration {
    /// The settings.
    pub settings: Settings,
    /// The agent's private key.
    pub secret_key: SecretKey,
    /// The CA certificate to trust, when one was given at configuration.
    pub ca_pem: Option<String>,
}

/// The agent directory.
#[derive(Debug, Clone)]
pub struct AgentDir {
    path: PathBuf,
}

impl AgentDir {
    /// The directory at `path` (not created yet).
    pub fn new(path: impl Into<PathBuf>) -> AgentDir {
        AgentDir { path: path.into() }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `agent.toml`.
    pub fn settings_path(&self) -> PathBuf {
        self.path.join(SETTINGS_FILE)
    }

    /// `agent.key`.
    pub fn key_path(&self) -> PathBuf {
        self.path.join(KEY_FILE)
    }

    /// `ca.pem`.
    pub fn ca_path(&self) -> PathBuf {
        self.path.join(CA_FILE)
    }

    /// Whether an agent is configured here (settings or key present).
    pub fn is_configured(&self) -> bool {
        self.settings_path().exists() || self.key_path().exists()
    }

    /// Writes the key (mode 0600 from creation), the CA (or removes an old
    /// one) and then the settings, each atomically by rename.
    pub fn save(
        &self,
        settings: &Settings,
        secret_key: &SecretKey,
        ca_pem: Option<&str>,
    ) -> anyhow::Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.path)
            .with_context(|| {
                format!("cannot create the agent directory {}", self.path.display())
            })?;
        let key_hex = Zeroizing::new(format!("{}\n", hex::encode(secret_key.to_bytes().as_ref())));
        write_private(&self.key_path(), key_hex.as_bytes())?;
        match ca_pem {
            Some(pem) => write_private(&self.ca_path(), pem.as_bytes())?,
            None => match fs::remove_file(self.ca_path()) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    return Err(error)
                        .with_context(|| format!("cannot remove {}", self.ca_path().display()));
                }
            },
        }
        let text = toml::to_string(settings).context("cannot encode the settings")?;
        let text = format!(
            "# ferry-agent settings, written by `ferry-agent configure`.\n\
             # The private key is in {KEY_FILE}; no token is ever stored.\n{text}"
        );
        write_private(&self.settings_path(), text.as_bytes())
    }

    /// Loads the settings, the key and the CA, with errors that say what to do.
    pub fn load(&self) -> anyhow::Result<Configuration> {
        let settings_path = self.settings_path();
        let text = match fs::read_to_string(&settings_path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => bail!(
                "no agent is configured in {}: run `ferry-agent configure` first (or pass --dir)",
                self.path.display()
            ),
            Err(error) => {
                return Err(error)
                    .with_context(|| format!("cannot read {}", settings_path.display()));
            }
        };
        let settings: Settings = toml::from_str(&text)
            .with_context(|| format!("{} is not valid agent settings", settings_path.display()))?;
        settings.server_public_key()?;
        let secret_key = self.load_key()?;
        let ca_pem = match fs::read_to_string(self.ca_path()) {
            Ok(pem) => Some(pem),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => {
                return Err(error)
                    .with_context(|| format!("cannot read {}", self.ca_path().display()));
            }
        };
        Ok(Configuration {
            settings,
            secret_key,
            ca_pem,
        })
    }

    fn load_key(&self) -> anyhow::Result<SecretKey> {
        let path = self.key_path();
        let metadata = fs::metadata(&path).with_context(|| {
            format!(
                "cannot read the private key {}: configure the agent again with --replace",
                path.display()
            )
        })?;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "the private key is readable by other users: run chmod 600 on it");
        }
        let text = Zeroizing::new(
            fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?,
        );
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        hex::decode_to_slice(text.trim(), bytes.as_mut()).map_err(|_| {
            anyhow::anyhow!(
                "{} does not hold a private key (64 hex digits)",
                path.display()
            )
        })?;
        Ok(SecretKey::from_bytes(*bytes))
    }
}

/// Writes `bytes` to `path` atomically, the file readable by its owner only
/// from the moment it exists.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".new");
    let temporary = PathBuf::from(temporary);
    match fs::remove_file(&temporary) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(error).with_context(|| format!("cannot remove {}", temporary.display()));
        }
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .with_context(|| format!("cannot create {}", temporary.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    drop(file);
    fs::rename(&temporary, path).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(work_dir: &Path) -> Settings {
        Settings {
            agent_id: "0190f0a0-0000-7000-8000-000000000001".into(),
            name: "builder-1".into(),
            pool: "linux".into(),
            url: "https://ferry.example:8443".into(),
            server_public_key: SecretKey::generate().expect("key").public_key().to_string(),
            work_dir: work_dir.to_path_buf(),
            labels: BTreeMap::from([("gpu".into(), "none".into()), ("zone".into(), "b".into())]),
        }
    }

    #[test]
    fn settings_key_and_ca_round_trip() {
        let temp = tempfile::tempdir().expect("tempdir");
        let dir = AgentDir::new(temp.path().join("agent"));
        assert!(!dir.is_configured());
        let written = settings(&temp.path().join("work"));
        let key = SecretKey::generate().expect("key");
        dir.save(&written, &key, Some("-----BEGIN CERTIFICATE-----\n"))
            .expect("save");
        assert!(dir.is_configured());

        let loaded = dir.load().expect("load");
        assert_eq!(loaded.settings, written);
        assert_eq!(*loaded.secret_key.to_bytes(), *key.to_bytes());
        assert_eq!(loaded.secret_key.public_key(), key.public_key());
        assert_eq!(
            loaded.ca_pem.as_deref(),
            Some("-----BEGIN CERTIFICATE-----\n")
        );
        assert_eq!(
            loaded
                .settings
                .server_public_key()
                .expect("public key")
                .to_string(),
            written.server_public_key
        );

        // Saving again without a CA removes the old one.
        dir.save(&written, &key, None).expect("save again");
        assert!(dir.load().expect("load").ca_pem.is_none());
    }

    #[test]
    fn the_private_key_is_owner_only_and_not_in_the_settings() {
        let temp = tempfile::tempdir().expect("tempdir");
        let dir = AgentDir::new(temp.path());
        let key = SecretKey::generate().expect("key");
        dir.save(&settings(temp.path()), &key, None).expect("save");
        let mode = fs::metadata(dir.key_path())
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "agent.key mode is {mode:o}");
        let key_hex = hex::encode(key.to_bytes().as_ref());
        let settings_text = fs::read_to_string(dir.settings_path()).expect("settings");
        assert!(!settings_text.contains(&key_hex));
        assert!(
            fs::read_to_string(dir.key_path())
                .expect("key")
                .contains(&key_hex)
        );
        assert!(!temp.path().join("agent.key.new").exists());
    }

    #[test]
    fn loading_an_unconfigured_directory_says_what_to_do() {
        let temp = tempfile::tempdir().expect("tempdir");
        let error = AgentDir::new(temp.path())
            .load()
            .expect_err("not configured");
        assert!(
            error.to_string().contains("ferry-agent configure"),
            "{error}"
        );
    }

    #[test]
    fn a_damaged_key_is_refused() {
        let temp = tempfile::tempdir().expect("tempdir");
        let dir = AgentDir::new(temp.path());
        dir.save(
            &settings(temp.path()),
            &SecretKey::generate().expect("key"),
            None,
        )
        .expect("save");
        fs::write(dir.key_path(), "not hex\n").expect("overwrite");
        let error = dir.load().expect_err("bad key");
        assert!(
            error.to_string().contains("does not hold a private key"),
            "{error:#}"
        );
        assert!(!error.to_string().contains("not hex"));
    }
}
