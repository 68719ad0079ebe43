//! The mesh's certificates: a development CA and one certificate per
//! process (`gateway`, `registry`, …), each valid as a TLS server and as a
//! TLS client, named `<name>.ferry.internal`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};

use crate::{CertificateAndKey, Error, Result};

/// The DNS domain of the mesh: a process named `dispatch` presents
/// `dispatch.ferry.internal`.
pub const MESH_DOMAIN: &str = "ferry.internal";

/// The names `ferryd certs init` issues certificates for: the gateway and
/// each service.
pub const MESH_NAMES: &[&str] = &[
    "gateway",
    "registry",
    "tokens",
    "dispatch",
    "logs",
    "resources",
];

/// The DNS name a mesh process presents: `<name>.ferry.internal`.
pub fn mesh_dns_name(name: &str) -> String {
    format!("{name}.{MESH_DOMAIN}")
}

/// The mesh's CA and the certificates [`issue_mesh`] made or found.
#[derive(Clone, Debug)]
pub struct MeshCertificates {
    /// The directory holding every file.
    pub dir: PathBuf,
    /// The CA certificate, PEM: what every process trusts.
    pub ca_pem: String,
    /// Each name's certificate and key.
    pub identities: BTreeMap<String, CertificateAndKey>,
}

impl MeshCertificates {
    /// The certificate and key of `name`, if it was asked for.
    pub fn identity(&self, name: &str) -> Option<&CertificateAndKey> {
        self.identities.get(name)
    }

    /// `<dir>/ca.crt`.
    pub fn ca_certificate_path(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// `<dir>/<name>.crt`.
    pub fn certificate_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.crt"))
    }

    /// `<dir>/<name>.key`.
    pub fn key_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.key"))
    }
}

/// Makes (or finds) the mesh's development CA in `dir` (`ca.crt`, `ca.key`)
/// and a certificate and key for each name (`<name>.crt`, `<name>.key`),
/// ECDSA P-256, with the SANs `<name>.ferry.internal`, `localhost` and
/// `127.0.0.1`, and the extended key usages serverAuth and clientAuth.
///
/// Idempotent: files that exist are kept. A name whose certificate and key
/// both exist is not reissued; the CA key is only read when something must
/// be issued, so it can be kept elsewhere once every certificate exists.
/// Keys are written with mode 0600. A file whose pair is missing (a
/// certificate without its key or the other way round) is an error rather
/// than something to overwrite.
pub fn issue_mesh(dir: &Path, names: &[&str]) -> Result<MeshCertificates> {
    for name in names {
        validate_name(name)?;
    }
    std::fs::create_dir_all(dir).map_err(|source| io_error(dir, source))?;
    let ca_certificate = dir.join("ca.crt");
    let ca_key = dir.join("ca.key");
    let mut issuer = None;
    let ca_pem = match (ca_certificate.exists(), ca_key.exists()) {
        // The key may be kept elsewhere: it is only read to issue.
        (true, _) => crate::read_certificate_pem(&ca_certificate)?,
        (false, true) => {
            return Err(Error::Mesh(format!(
                "{} exists without its certificate {}: restore the certificate or remove the key",
                ca_key.display(),
                ca_certificate.display()
            )));
        }
        (false, false) => {
            let key = KeyPair::generate()?;
            let certificate = ca_params().self_signed(&key)?;
            write_new(&ca_key, &key.serialize_pem(), true)?;
            write_new(&ca_certificate, &certificate.pem(), false)?;
            issuer = Some(Issuer::new(ca_params(), key));
            certificate.pem()
        }
    };
    let created_ca = issuer.is_some();

    let mut identities = BTreeMap::new();
    for name in names {
        let certificate_path = dir.join(format!("{name}.crt"));
        let key_path = dir.join(format!("{name}.key"));
        let identity = if pair_state(&certificate_path, &key_path)? {
            crate::read_certificate_and_key(&certificate_path, &key_path)?
        } else {
            if issuer.is_none() {
                issuer = Some(load_issuer(&ca_key)?);
            }
            let Some(issuer) = issuer.as_ref() else {
                return Err(Error::Mesh("the mesh CA could not be loaded".to_owned()));
            };
            let identity = issue_leaf(name, issuer)?;
            if !created_ca {
                check_chain(&identity.certificate_pem, &ca_pem)?;
            }
            write_new(&key_path, &identity.private_key_pem, true)?;
            write_new(&certificate_path, &identity.certificate_pem, false)?;
            identity
        };
        identities.insert((*name).to_owned(), identity);
    }
    Ok(MeshCertificates {
        dir: dir.to_path_buf(),
        ca_pem,
        identities,
    })
}

/// A name must be one DNS label: `[a-z0-9-]{1,63}`, not starting or ending
/// with `-`.
fn validate_name(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-');
    if valid {
        Ok(())
    } else {
        Err(Error::Mesh(format!(
            "{name:?} is not a mesh name: one DNS label of a-z, 0-9 and -"
        )))
    }
}

/// True when both files exist, false when neither does, an error otherwise.
fn pair_state(certificate: &Path, key: &Path) -> Result<bool> {
    match (certificate.exists(), key.exists()) {
        (true, true) => Ok(true),
        (false, false) => Ok(false),
        (true, false) => Err(Error::Mesh(format!(
            "{} exists without its key {}: restore the key or remove the certificate",
            certificate.display(),
            key.display()
        ))),
        (false, true) => Err(Error::Mesh(format!(
            "{} exists without its certificate {}: restore the certificate or remove the key",
            key.display(),
            certificate.display()
        ))),
    }
}

/// The CA's parameters. The issuer is rebuilt from these and the stored key
/// when the CA already exists, so they must stay the same.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "ferry");
    name.push(DnType::CommonName, "ferry mesh development CA");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn load_issuer(ca_key: &Path) -> Result<Issuer<'static, KeyPair>> {
    if !ca_key.exists() {
        return Err(Error::Mesh(format!(
            "{} is missing: certificates cannot be issued without the CA key",
            ca_key.display()
        )));
    }
    let pem = crate::read(ca_key)?;
    Ok(Issuer::new(ca_params(), KeyPair::from_pem(&pem)?))
}

fn issue_leaf(name: &str, issuer: &Issuer<'static, KeyPair>) -> Result<CertificateAndKey> {
    let dns_name = crate::mesh_dns_name(name);
    let mut params = CertificateParams::new(vec![
        dns_name.clone(),
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
    ])?;
    let mut subject = DistinguishedName::new();
    subject.push(DnType::OrganizationName, "ferry");
    subject.push(DnType::CommonName, dns_name);
    params.distinguished_name = subject;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate()?;
    let certificate = params.signed_by(&key, issuer)?;
    Ok(CertificateAndKey {
        certificate_pem: certificate.pem(),
        private_key_pem: key.serialize_pem(),
    })
}

/// Checks that a newly issued certificate chains to the stored CA
/// certificate: it does not when `ca.crt` was made by something else.
fn check_chain(certificate_pem: &str, ca_pem: &str) -> Result<()> {
    let unparsable = |what: &str| Error::Mesh(format!("cannot parse the {what} certificate"));
    let ca = CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(|_| unparsable("CA"))?;
    let leaf = CertificateDer::from_pem_slice(certificate_pem.as_bytes())
        .map_err(|_| unparsable("new"))?;
    let anchor = webpki::anchor_from_trusted_cert(&ca).map_err(|_| unparsable("CA"))?;
    let end_entity = webpki::EndEntityCert::try_from(&leaf).map_err(|_| unparsable("new"))?;
    let algorithms = rustls::crypto::ring::default_provider()
        .signature_verification_algorithms
        .all;
    end_entity
        .verify_for_usage(
            algorithms,
            &[anchor],
            &[],
            UnixTime::now(),
            webpki::KeyUsage::client_auth(),
            None,
            None,
        )
        .map(|_| ())
        .map_err(|error| {
            Error::Mesh(format!(
                "ca.crt was not made with this ca.key by ferry ({error}): move the directory away and issue anew"
            ))
        })
}

/// Writes a new file (never over an existing one); keys get mode 0600.
fn write_new(path: &Path, contents: &str, secret: bool) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options
        .open(path)
        .map_err(|source| io_error(path, source))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|source| io_error(path, source))
}

fn io_error(path: &Path, source: std::io::Error) -> Error {
    Error::Write {
        path: path.display().to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_a_ca_and_named_certificates_and_keeps_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = issue_mesh(dir.path(), &["gateway", "dispatch"]).expect("issue");
        assert!(first.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        for file in [
            "ca.crt",
            "ca.key",
            "gateway.crt",
            "gateway.key",
            "dispatch.crt",
        ] {
            assert!(dir.path().join(file).exists(), "{file} missing");
        }
        #[cfg(unix)]
        for key in ["ca.key", "gateway.key", "dispatch.key"] {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(key))
                .expect("metadata")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{key} has mode {mode:o}");
        }
        let gateway = first.identity("gateway").expect("gateway");
        let leaf = CertificateDer::from_pem_slice(gateway.certificate_pem.as_bytes()).expect("pem");
        let parsed = webpki::EndEntityCert::try_from(&leaf).expect("parse");
        for name in ["gateway.ferry.internal", "localhost", "127.0.0.1"] {
            let name = rustls::pki_types::ServerName::try_from(name).expect("name");
            parsed
                .verify_is_valid_for_subject_name(&name)
                .expect("names the SAN");
        }
        let other =
            rustls::pki_types::ServerName::try_from("dispatch.ferry.internal").expect("name");
        assert!(parsed.verify_is_valid_for_subject_name(&other).is_err());
        check_chain(&gateway.certificate_pem, &first.ca_pem).expect("chains to the CA");

        // Again, with one more name: the existing files are kept, the new
        // name is issued by the stored CA.
        let second = issue_mesh(dir.path(), &["gateway", "dispatch", "logs"]).expect("again");
        assert_eq!(second.ca_pem, first.ca_pem);
        assert_eq!(
            second
                .identity("gateway")
                .map(|identity| &identity.certificate_pem),
            Some(&gateway.certificate_pem)
        );
        let logs = second.identity("logs").expect("logs");
        check_chain(&logs.certificate_pem, &second.ca_pem).expect("issued by the stored CA");
        assert_eq!(second.certificate_path("logs"), dir.path().join("logs.crt"));
    }

    #[test]
    fn a_certificate_from_another_ca_does_not_chain() {
        let one = tempfile::tempdir().expect("tempdir");
        let two = tempfile::tempdir().expect("tempdir");
        let first = issue_mesh(one.path(), &["gateway"]).expect("issue");
        let second = issue_mesh(two.path(), &["gateway"]).expect("issue");
        let foreign = second.identity("gateway").expect("gateway");
        let error = check_chain(&foreign.certificate_pem, &first.ca_pem).expect_err("foreign");
        assert!(
            error.to_string().contains("not made with this ca.key"),
            "{error}"
        );
    }

    #[test]
    fn bad_names_and_half_pairs_are_clear_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["", "Gateway", "a.b", "-x", "x/y"] {
            let error = issue_mesh(dir.path(), &[name]).expect_err("invalid name");
            assert!(error.to_string().contains("is not a mesh name"), "{error}");
        }
        issue_mesh(dir.path(), &["tokens"]).expect("issue");
        std::fs::remove_file(dir.path().join("tokens.key")).expect("remove");
        let error = issue_mesh(dir.path(), &["tokens"]).expect_err("half pair");
        assert!(
            error.to_string().contains("exists without its key"),
            "{error}"
        );

        std::fs::remove_file(dir.path().join("ca.key")).expect("remove");
        std::fs::remove_file(dir.path().join("tokens.crt")).expect("remove");
        let error = issue_mesh(dir.path(), &["tokens"]).expect_err("no CA key");
        assert!(
            error
                .to_string()
                .contains("cannot be issued without the CA key"),
            "{error}"
        );
    }

    #[test]
    fn the_ca_key_is_only_needed_to_issue() {
        let dir = tempfile::tempdir().expect("tempdir");
        issue_mesh(dir.path(), &["registry"]).expect("issue");
        let key = std::fs::read(dir.path().join("ca.key")).expect("read");
        let offline = dir.path().join("offline");
        std::fs::create_dir(&offline).expect("mkdir");
        std::fs::rename(dir.path().join("ca.key"), offline.join("ca.key")).expect("move");
        // Every certificate exists: the CA key is not needed.
        let kept = issue_mesh(dir.path(), &["registry"]).expect("without the CA key");
        assert!(kept.identity("registry").is_some());
        let error = issue_mesh(dir.path(), &["registry", "resources"]).expect_err("must issue");
        assert!(error.to_string().contains("ca.key is missing"), "{error}");
        std::fs::write(dir.path().join("ca.key"), key).expect("restore");
        issue_mesh(dir.path(), &["registry", "resources"]).expect("issue with the key back");
    }
}
