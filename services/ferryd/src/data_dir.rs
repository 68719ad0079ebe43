//! The data directory: made on first start, read on every start.
//!
//! ```text
//! DATA_DIR/            0700
//!   ferry.db           SQLite (WAL), unless database-url says otherwise
//!   keys/signing.pk8   Ed25519 token signing key (PKCS#8)      0600
//!   keys/envelope.key  X25519 envelope key (32 bytes)          0600
//!   keys/data.key      key that encrypts job specs at rest     0600
//!   tls/server.crt     self-signed certificate (when none is configured)
//!   tls/server.key     its private key                         0600
//! ```

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use ferry_auth::token::{TokenSigner, generate_signing_key};
use ferry_envelope::SecretKey;
use ferry_tls::CertificateAndKey;

use crate::config::Config;

/// The key material and certificate ferryd serves with.
pub struct Material {
    /// Signs listener and job tokens.
    pub signer: TokenSigner,
    /// The server's static envelope key.
    pub envelope_key: SecretKey,
    /// Encrypts job specs (and their secrets) at rest.
    pub data_key: [u8; 32],
    /// The public port's certificate and key.
    pub tls: CertificateAndKey,
    /// Where that certificate is, for agents to trust (`--ca-cert`).
    pub certificate_path: PathBuf,
}

fn create_dir(path: &Path) -> anyhow::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .with_context(|| format!("cannot create directory {}", path.display()))
}

/// Writes a new secret file with mode 0600 from its creation on.
fn write_secret(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Reads a secret file, refusing one that others can read (as ssh does).
fn read_secret(path: &Path) -> anyhow::Result<Vec<u8>> {
    let mode = fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        bail!(
            "{} is readable by other users (mode {:o}): run `chmod 600` on it",
            path.display(),
            mode & 0o777
        );
    }
    fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Reads the secret at `path`, making it with `generate` on first start.
fn secret(
    path: &Path,
    generate: impl FnOnce() -> anyhow::Result<Vec<u8>>,
) -> anyhow::Result<Vec<u8>> {
    if path.exists() {
        return read_secret(path);
    }
    let bytes = generate()?;
    write_secret(path, &bytes)?;
    tracing::info!(path = %path.display(), "created key");
    Ok(bytes)
}

fn random_32() -> anyhow::Result<Vec<u8>> {
    Ok(SecretKey::generate()?.to_bytes().to_vec())
}

fn key_32(bytes: &[u8], path: &Path) -> anyhow::Result<[u8; 32]> {
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("{} must hold exactly 32 bytes", path.display()))
}

/// Prepares the data directory and loads everything in it.
pub fn prepare(config: &Config) -> anyhow::Result<Material> {
    let data_dir = &config.data_dir;
    create_dir(data_dir)?;
    let keys = data_dir.join("keys");
    create_dir(&keys)?;

    let signing = secret(&keys.join("signing.pk8"), || Ok(generate_signing_key()?))?;
    let signer = TokenSigner::from_pkcs8(&signing, config.tokens.issuer.clone())
        .context("keys/signing.pk8 is not an Ed25519 PKCS#8 key")?;
    let envelope_path = keys.join("envelope.key");
    let envelope = secret(&envelope_path, random_32)?;
    let envelope_key = SecretKey::from_bytes(key_32(&envelope, &envelope_path)?);
    let data_path = keys.join("data.key");
    let data_key = key_32(&secret(&data_path, random_32)?, &data_path)?;

    let (tls, certificate_path) = match (&config.tls.certificate, &config.tls.private_key) {
        (Some(certificate), Some(private_key)) => (
            CertificateAndKey {
                certificate_pem: ferry_tls::read_certificate_pem(certificate)?,
                private_key_pem: String::from_utf8(read_secret(private_key)?)
                    .context("the TLS private key is not PEM text")?,
            },
            certificate.clone(),
        ),
        _ => self_signed(data_dir)?,
    };
    Ok(Material {
        signer,
        envelope_key,
        data_key,
        tls,
        certificate_path,
    })
}

fn self_signed(data_dir: &Path) -> anyhow::Result<(CertificateAndKey, PathBuf)> {
    let tls_dir = data_dir.join("tls");
    create_dir(&tls_dir)?;
    let certificate_path = tls_dir.join("server.crt");
    let key_path = tls_dir.join("server.key");
    if !certificate_path.exists() {
        let made = ferry_tls::self_signed(&ferry_tls::default_subject_alt_names())?;
        write_secret(&key_path, made.private_key_pem.as_bytes())?;
        fs::write(&certificate_path, &made.certificate_pem)
            .with_context(|| format!("cannot write {}", certificate_path.display()))?;
        tracing::info!(path = %certificate_path.display(), "created self-signed TLS certificate");
    }
    let material = CertificateAndKey {
        certificate_pem: ferry_tls::read_certificate_pem(&certificate_path)?,
        private_key_pem: String::from_utf8(read_secret(&key_path)?)
            .context("tls/server.key is not PEM text")?,
    };
    Ok((material, certificate_path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_start_makes_private_keys_and_the_second_reuses_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = Config {
            data_dir: dir.path().join("data"),
            ..Config::default()
        };
        let first = prepare(&config).expect("first start");
        for file in [
            "keys/signing.pk8",
            "keys/envelope.key",
            "keys/data.key",
            "tls/server.key",
        ] {
            let mode = fs::metadata(config.data_dir.join(file))
                .expect("exists")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
        let mode = fs::metadata(&config.data_dir)
            .expect("dir")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        let second = prepare(&config).expect("second start");
        assert_eq!(first.data_key, second.data_key);
        assert_eq!(
            first.envelope_key.public_key(),
            second.envelope_key.public_key()
        );
        assert_eq!(first.tls.certificate_pem, second.tls.certificate_pem);
    }

    #[test]
    fn a_key_others_can_read_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = Config {
            data_dir: dir.path().join("data"),
            ..Config::default()
        };
        prepare(&config).expect("first start");
        let key = config.data_dir.join("keys/data.key");
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).expect("chmod");
        let error = prepare(&config).err().expect("refused");
        assert!(error.to_string().contains("chmod 600"), "{error}");
    }
}
