//! Pipeline files: the YAML a person writes, turned into the
//! [`JobSpec`] that `QueueJob` takes.
//!
//! The format is documented in `docs/pipeline-format.md`. Parsing checks
//! everything that can be checked without the server: unknown keys, missing
//! or empty required values, variable names, durations and secrets. Errors
//! from the YAML layer carry the line and column; errors found afterwards
//! carry the key path (`secrets.API_TOKEN`).
//!
//! Error messages never contain a secret's value.

mod values;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use ferry_proto::time::duration_to_proto;
use ferry_proto::v1::{JobSpec, StepSpec};
use serde::Deserialize;

use values::{
    Demands, EnvMap, Globs, Name, PathValue, Script, SecretSource, Shell, Steps, Timeout,
};
pub use values::{check_glob, is_valid_env_name, parse_duration};

/// The job timeout when the pipeline sets none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// The project, and the pool, when the pipeline names none.
pub const DEFAULT_NAME: &str = "default";

/// Why a pipeline file was refused.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The file holds nothing (or only comments).
    #[error("the pipeline is empty")]
    Empty,
    /// The YAML is malformed or does not have the expected shape; the
    /// message names the key path and the line and column.
    #[error("{0}")]
    Yaml(serde_norway::Error),
    /// A value is well-formed YAML but not acceptable.
    #[error("{path}: {message}")]
    Invalid {
        /// Where, as a key path (`secrets.API_TOKEN`, `steps[1].env`).
        path: String,
        /// What is wrong.
        message: String,
    },
}

// Not `#[from]`: that would make the YAML error the source too, and every
// message would be printed twice by `{:#}`.
impl From<serde_norway::Error> for PipelineError {
    fn from(error: serde_norway::Error) -> Self {
        Self::Yaml(error)
    }
}

impl PipelineError {
    /// The 1-based line and column the error points at, when known.
    pub fn location(&self) -> Option<(usize, usize)> {
        match self {
            Self::Yaml(error) => error
                .location()
                .map(|location| (location.line(), location.column())),
            Self::Empty | Self::Invalid { .. } => None,
        }
    }

    fn invalid(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// A parsed pipeline: the job to queue and what must be done before. Its
/// `Debug` shows secrets by name only.
#[derive(Clone, PartialEq)]
pub struct Pipeline {
    /// The job. `source_id` is empty: it is known once the source is
    /// uploaded.
    pub spec: JobSpec,
    /// The `source` directory to pack and upload, as written in the file
    /// (relative paths are relative to the pipeline file's directory; the
    /// caller resolves them).
    pub source: Option<PathBuf>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut secrets: Vec<&String> = self.spec.secrets.keys().collect();
        secrets.sort();
        formatter
            .debug_struct("Pipeline")
            .field("name", &self.spec.name)
            .field("pool", &self.spec.pool)
            .field("secret_names", &secrets)
            .field("steps", &self.spec.steps.len())
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Parses a pipeline, reading `from-env` secrets from this process's
/// environment. The `source` key, which names a directory to upload first,
/// is only returned by [`parse_pipeline`].
pub fn parse(yaml: &str) -> Result<JobSpec, PipelineError> {
    parse_with_env(yaml, |name| std::env::var(name).ok())
}

/// Parses a pipeline, reading `from-env` secrets through `env` (a variable's
/// value, or `None` when it is unset).
pub fn parse_with_env(
    yaml: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<JobSpec, PipelineError> {
    parse_pipeline(yaml, env).map(|pipeline| pipeline.spec)
}

/// Parses a pipeline with its `source` directory, reading `from-env`
/// secrets through `env`.
pub fn parse_pipeline(
    yaml: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Pipeline, PipelineError> {
    if yaml.lines().all(|line| {
        line.trim().is_empty() || line.trim_start().starts_with('#') || line.trim() == "---"
    }) {
        return Err(PipelineError::Empty);
    }
    let file: PipelineFile = serde_norway::from_str(yaml)?;
    file.into_pipeline(&env)
}

/// The top level of a pipeline file.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a pipeline: a mapping with `name` and `steps`"
)]
struct PipelineFile {
    name: Name,
    project: Option<Name>,
    pipeline: Option<Name>,
    pool: Option<Name>,
    timeout: Option<Timeout>,
    #[serde(default)]
    demands: Demands,
    #[serde(default)]
    variables: EnvMap<String>,
    #[serde(default)]
    secrets: EnvMap<SecretSource>,
    source: Option<PathValue>,
    #[serde(default)]
    test_results: Globs,
    #[serde(default)]
    artifacts: Globs,
    steps: Steps<StepFile>,
}

/// One entry of `steps`.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a step: a mapping with `run`"
)]
struct StepFile {
    name: Option<Name>,
    run: Script,
    #[serde(default)]
    shell: Shell,
    timeout: Option<Timeout>,
    #[serde(default)]
    continue_on_error: bool,
    #[serde(default)]
    env: EnvMap<String>,
}

impl PipelineFile {
    fn into_pipeline(
        self,
        env: &impl Fn(&str) -> Option<String>,
    ) -> Result<Pipeline, PipelineError> {
        let mut secrets = HashMap::with_capacity(self.secrets.0.len());
        for (name, source) in self.secrets.0 {
            if self.variables.0.contains_key(&name) {
                return Err(PipelineError::invalid(
                    format!("secrets.{name}"),
                    format!("`{name}` is also a variable: a name is either a variable or a secret"),
                ));
            }
            let value = source.resolve(&name, env)?;
            secrets.insert(name, value);
        }
        let name = self.name.0;
        let steps = self
            .steps
            .0
            .into_iter()
            .enumerate()
            .map(|(index, step)| StepSpec {
                name: step
                    .name
                    .map_or_else(|| format!("step {}", index + 1), |name| name.0),
                script: step.run.0,
                shell: step.shell.as_str().to_owned(),
                timeout: step.timeout.map(|timeout| duration_to_proto(timeout.0)),
                continue_on_error: step.continue_on_error,
                env: step.env.0.into_iter().collect(),
            })
            .collect();
        let spec = JobSpec {
            pipeline: self
                .pipeline
                .map_or_else(|| name.clone(), |pipeline| pipeline.0),
            name,
            project: self
                .project
                .map_or_else(|| DEFAULT_NAME.to_owned(), |project| project.0),
            pool: self
                .pool
                .map_or_else(|| DEFAULT_NAME.to_owned(), |pool| pool.0),
            demands: self.demands.0.into_iter().collect(),
            variables: self.variables.0.into_iter().collect(),
            secrets,
            steps,
            timeout: Some(duration_to_proto(
                self.timeout.map_or(DEFAULT_TIMEOUT, |timeout| timeout.0),
            )),
            source_id: String::new(),
            test_results: self.test_results.0,
            artifacts: self.artifacts.0,
        };
        Ok(Pipeline {
            spec,
            source: self.source.map(|source| source.0),
        })
    }
}

impl SecretSource {
    /// The secret's value; reads the environment for `from-env`.
    fn resolve(
        self,
        name: &str,
        env: &impl Fn(&str) -> Option<String>,
    ) -> Result<String, PipelineError> {
        match self {
            Self::Value(value) => Ok(value),
            Self::FromEnv(variable) => match env(&variable) {
                Some(value) if !value.is_empty() => Ok(value),
                Some(_) => Err(PipelineError::invalid(
                    format!("secrets.{name}"),
                    format!("environment variable `{variable}` is empty"),
                )),
                None => Err(PipelineError::invalid(
                    format!("secrets.{name}"),
                    format!("environment variable `{variable}` is not set"),
                )),
            },
        }
    }
}
