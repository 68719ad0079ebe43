//! Where ferryctl finds the server URL, the token and the CA certificate:
//! flags beat environment variables, which beat the config file.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::cli::GlobalArgs;

/// Environment variable naming the server URL.
pub const ENV_URL: &str = "FERRY_URL";
/// Environment variable holding the personal access token.
pub const ENV_TOKEN: &str = "FERRY_TOKEN";
/// Environment variable naming the CA certificate file.
pub const ENV_CA_CERT: &str = "FERRY_CA_CERT";
/// Environment variable naming the config file.
pub const ENV_CONFIG: &str = "FERRY_CONFIG";

/// The connection settings of one invocation. `Debug` hides the token.
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    /// Server URL.
    pub url: String,
    /// Personal access token.
    pub token: String,
    /// PEM file of the CA to trust; the public web PKI when `None`.
    pub ca_cert: Option<PathBuf>,
}

impl fmt::Debug for Settings {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Settings")
            .field("url", &self.url)
            .field("token", &"..")
            .field("ca_cert", &self.ca_cert)
            .finish()
    }
}

/// The config file's contents.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    url: Option<String>,
    token: Option<String>,
    ca_cert: Option<PathBuf>,
}

/// The config file used when `--config` and `FERRY_CONFIG` are not given:
/// `$XDG_CONFIG_HOME/ferry/ferryctl.toml`, else
/// `~/.config/ferry/ferryctl.toml`.
pub fn default_config_path(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let base = match non_empty(env("XDG_CONFIG_HOME")) {
        Some(xdg) => PathBuf::from(xdg),
        None => PathBuf::from(non_empty(env("HOME"))?).join(".config"),
    };
    Some(base.join("ferry").join("ferryctl.toml"))
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|value| !value.is_empty())
}

/// Resolves the settings from the flags, the environment (read through
/// `env`) and the config file. A missing default config file is fine; a
/// missing file named by `--config` or `FERRY_CONFIG` is an error.
pub fn resolve(
    global: &GlobalArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<Settings> {
    let (path, explicit) = match (&global.config, non_empty(env(ENV_CONFIG))) {
        (Some(path), _) => (Some(path.clone()), true),
        (None, Some(path)) => (Some(PathBuf::from(path)), true),
        (None, None) => (default_config_path(env), false),
    };
    let file = match &path {
        Some(path) => load(path, explicit)?,
        None => FileConfig::default(),
    };
    let where_file = path.as_ref().map_or_else(
        || "the config file".to_owned(),
        |path| path.display().to_string(),
    );

    let url = global
        .url
        .clone()
        .or_else(|| non_empty(env(ENV_URL)))
        .or(file.url)
        .filter(|url| !url.is_empty());
    let Some(url) = url else {
        bail!(
            "no server URL: pass --url, set {ENV_URL} or add `url = \"https://…\"` to {where_file}"
        );
    };
    let token = global
        .token
        .clone()
        .or_else(|| non_empty(env(ENV_TOKEN)))
        .or(file.token)
        .filter(|token| !token.is_empty());
    let Some(token) = token else {
        bail!("no token: pass --token, set {ENV_TOKEN} or add `token = \"…\"` to {where_file}");
    };
    let ca_cert = match (&global.ca_cert, non_empty(env(ENV_CA_CERT)), file.ca_cert) {
        (Some(flag), _, _) => Some(flag.clone()),
        (None, Some(env), _) => Some(PathBuf::from(env)),
        // A relative path in the file is relative to the file.
        (None, None, Some(from_file)) => Some(match path.as_deref().and_then(Path::parent) {
            Some(directory) if from_file.is_relative() => directory.join(from_file),
            _ => from_file,
        }),
        (None, None, None) => None,
    };
    Ok(Settings {
        url,
        token,
        ca_cert,
    })
}

fn load(path: &Path, explicit: bool) -> anyhow::Result<FileConfig> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound && !explicit => {
            return Ok(FileConfig::default());
        }
        Err(error) => {
            return Err(error)
                .with_context(|| format!("cannot read config file {}", path.display()));
        }
    };
    // toml's own message quotes the offending line, which may hold the
    // token: report only the message and the line number.
    toml::from_str(&text).map_err(|error| {
        let line = error
            .span()
            .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
        let message = error.message().trim_end();
        match line {
            Some(line) => anyhow::anyhow!("config file {} line {line}: {message}", path.display()),
            None => anyhow::anyhow!("config file {}: {message}", path.display()),
        }
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use clap::Parser;

    use super::*;
    use crate::Cli;

    fn settings(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Settings> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let mut argv = vec!["ferryctl"];
        argv.extend_from_slice(args);
        argv.extend_from_slice(&["pool", "list"]);
        let cli = Cli::try_parse_from(argv)?;
        resolve(&cli.global, &|name| env.get(name).cloned())
    }

    fn write_config(text: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ferryctl.toml");
        std::fs::write(&path, text).expect("write");
        let path = path.to_string_lossy().into_owned();
        (dir, path)
    }

    const FILE: &str = "url = \"https://file:1\"\ntoken = \"file-token\"\nca-cert = \"ca.pem\"\n";

    #[test]
    fn the_file_is_used_when_nothing_else_is_given() {
        let (dir, path) = write_config(FILE);
        let settings = settings(&["--config", &path], &[]).expect("settings");
        assert_eq!(settings.url, "https://file:1");
        assert_eq!(settings.token, "file-token");
        assert_eq!(settings.ca_cert, Some(dir.path().join("ca.pem")));
    }

    #[test]
    fn the_environment_beats_the_file() {
        let (_dir, path) = write_config(FILE);
        let env = [
            (ENV_URL, "https://env:2"),
            (ENV_TOKEN, "env-token"),
            (ENV_CA_CERT, "/env/ca.pem"),
        ];
        let settings = settings(&["--config", &path], &env).expect("settings");
        assert_eq!(settings.url, "https://env:2");
        assert_eq!(settings.token, "env-token");
        assert_eq!(settings.ca_cert, Some(PathBuf::from("/env/ca.pem")));
    }

    #[test]
    fn flags_beat_the_environment() {
        let (_dir, path) = write_config(FILE);
        let env = [
            (ENV_URL, "https://env:2"),
            (ENV_TOKEN, "env-token"),
            (ENV_CA_CERT, "/env/ca.pem"),
        ];
        let args = [
            "--config",
            &path,
            "--url",
            "https://flag:3",
            "--token",
            "flag-token",
            "--ca-cert",
            "/flag/ca.pem",
        ];
        let settings = settings(&args, &env).expect("settings");
        assert_eq!(settings.url, "https://flag:3");
        assert_eq!(settings.token, "flag-token");
        assert_eq!(settings.ca_cert, Some(PathBuf::from("/flag/ca.pem")));
    }

    #[test]
    fn sources_mix_per_setting() {
        let (_dir, path) = write_config("url = \"https://file:1\"\n");
        let settings =
            settings(&["--config", &path], &[(ENV_TOKEN, "env-token")]).expect("settings");
        assert_eq!(
            (settings.url.as_str(), settings.token.as_str()),
            ("https://file:1", "env-token")
        );
        assert_eq!(settings.ca_cert, None);
    }

    #[test]
    fn global_flags_may_follow_the_subcommand() {
        let cli = Cli::try_parse_from(["ferryctl", "pool", "list", "--url", "https://late:4"])
            .expect("parse");
        assert_eq!(cli.global.url.as_deref(), Some("https://late:4"));
    }

    #[test]
    fn ferry_config_names_the_file() {
        let (_dir, path) = write_config(FILE);
        let settings = settings(&[], &[(ENV_CONFIG, &path)]).expect("settings");
        assert_eq!(settings.token, "file-token");
    }

    #[test]
    fn the_default_file_is_found_and_may_be_missing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path().to_string_lossy().into_owned();
        let error = settings(&[], &[("HOME", &home)]).expect_err("nothing configured");
        assert!(
            error
                .to_string()
                .starts_with("no server URL: pass --url, set FERRY_URL"),
            "{error}"
        );
        assert!(
            error.to_string().contains(".config/ferry/ferryctl.toml"),
            "{error}"
        );

        let config = dir.path().join("xdg").join("ferry");
        std::fs::create_dir_all(&config).expect("mkdir");
        std::fs::write(config.join("ferryctl.toml"), FILE).expect("write");
        let xdg = dir.path().join("xdg").to_string_lossy().into_owned();
        let settings =
            settings(&[], &[("HOME", &home), ("XDG_CONFIG_HOME", &xdg)]).expect("settings");
        assert_eq!(settings.url, "https://file:1");
    }

    #[test]
    fn an_explicit_missing_file_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope.toml").to_string_lossy().into_owned();
        let error = settings(&["--config", &missing, "--url", "u", "--token", "t"], &[])
            .expect_err("missing");
        assert!(
            error.to_string().contains("cannot read config file"),
            "{error}"
        );
        let error = settings(&["--url", "u", "--token", "t"], &[(ENV_CONFIG, &missing)])
            .expect_err("missing");
        assert!(
            error.to_string().contains("cannot read config file"),
            "{error}"
        );
    }

    #[test]
    fn a_missing_token_is_explained() {
        let error = settings(&["--url", "https://x"], &[]).expect_err("no token");
        assert!(
            error
                .to_string()
                .starts_with("no token: pass --token, set FERRY_TOKEN"),
            "{error}"
        );
    }

    #[test]
    fn empty_environment_values_count_as_unset() {
        let (_dir, path) = write_config(FILE);
        let settings =
            settings(&["--config", &path], &[(ENV_URL, ""), (ENV_TOKEN, "")]).expect("settings");
        assert_eq!(settings.url, "https://file:1");
    }

    #[test]
    fn config_errors_do_not_quote_the_token() {
        let (_dir, path) = write_config("url = \"https://x\"\ntoken = very-secret-token\n");
        let error = settings(&["--config", &path], &[]).expect_err("bad toml");
        let message = error.to_string();
        assert!(message.contains("line 2"), "{message}");
        assert!(!message.contains("very-secret-token"), "{message}");
        let (_dir, path) = write_config("url = \"https://x\"\ntokn = \"t\"\n");
        let error = settings(&["--config", &path], &[]).expect_err("unknown key");
        assert!(error.to_string().contains("tokn"), "{error}");
    }

    #[test]
    fn debug_hides_the_token() {
        let settings = Settings {
            url: "https://x".into(),
            token: "very-secret-token".into(),
            ca_cert: None,
        };
        assert!(!format!("{settings:?}").contains("very-secret"));
    }
}
