//! Checks on a queued job's spec: every limit is documented in
//! docs/protocol.md and answered with INVALID_ARGUMENT or RESOURCE_EXHAUSTED.

use std::time::Duration;

use ferry_proto::time::duration_from_proto;
use ferry_proto::v1::JobSpec;
use ferry_service::{Error, Result, validate};
use prost::Message;

/// Most steps in a job.
pub const MAX_STEPS: usize = 100;
/// Longest step script.
pub const MAX_SCRIPT_LEN: usize = 256 * 1024;
/// Largest encoded spec.
pub const MAX_SPEC_LEN: usize = 1024 * 1024;
/// Longest value of a variable, secret or step env entry.
pub const MAX_VALUE_LEN: usize = 32 * 1024;
/// Job timeout when the spec sets none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// Longest job timeout.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(72 * 60 * 60);

fn display_name(field: &str, value: &str) -> Result<()> {
    if value.trim().is_empty() {
        return Err(Error::InvalidArgument(format!("{field} is empty")));
    }
    validate::max_len(field, value, 200)?;
    if value.chars().any(char::is_control) {
        return Err(Error::InvalidArgument(format!(
            "{field} has control characters"
        )));
    }
    Ok(())
}

fn timeout(field: &str, value: Option<&prost_types::Duration>) -> Result<Option<Duration>> {
    let Some(value) = value else {
        return Ok(None);
    };
    if value.seconds < 0 || value.nanos < 0 {
        return Err(Error::InvalidArgument(format!("{field} is negative")));
    }
    let duration = duration_from_proto(value);
    if duration > MAX_TIMEOUT {
        return Err(Error::InvalidArgument(format!(
            "{field} is longer than {} hours",
            MAX_TIMEOUT.as_secs() / 3600
        )));
    }
    Ok((!duration.is_zero()).then_some(duration))
}

/// Fills defaults and checks every field; returns the job timeout.
pub fn normalize(spec: &mut JobSpec) -> Result<Duration> {
    let size = spec.encoded_len();
    if size > MAX_SPEC_LEN {
        return Err(Error::TooLarge(format!(
            "the job spec is {size} bytes, the limit is {MAX_SPEC_LEN}"
        )));
    }
    display_name("name", &spec.name)?;
    if spec.project.is_empty() {
        spec.project = "default".to_owned();
    }
    if spec.pool.is_empty() {
        spec.pool = "default".to_owned();
    }
    validate::name("project", &spec.project)?;
    validate::name("pool", &spec.pool)?;
    if spec.pipeline.is_empty() {
        spec.pipeline = spec
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .take(validate::MAX_NAME_LEN)
            .collect();
    }
    validate::name("pipeline", &spec.pipeline)?;
    validate::map("demands", spec.demands.iter(), 64, 256, validate::label_key)?;
    validate::map(
        "variables",
        spec.variables.iter(),
        1000,
        MAX_VALUE_LEN,
        validate::env_name,
    )?;
    validate::map(
        "secrets",
        spec.secrets.iter(),
        100,
        MAX_VALUE_LEN,
        validate::env_name,
    )?;
    if let Some((name, _)) = spec.secrets.iter().find(|(_, value)| value.is_empty()) {
        return Err(Error::InvalidArgument(format!("secret {name:?} is empty")));
    }
    if spec.steps.is_empty() {
        return Err(Error::InvalidArgument("the job has no steps".to_owned()));
    }
    if spec.steps.len() > MAX_STEPS {
        return Err(Error::TooLarge(format!(
            "the job has {} steps, the limit is {MAX_STEPS}",
            spec.steps.len()
        )));
    }
    for (index, step) in spec.steps.iter_mut().enumerate() {
        let field = |name: &str| format!("steps[{index}].{name}");
        if step.name.is_empty() {
            step.name = format!("step {}", index + 1);
        }
        display_name(&field("name"), &step.name)?;
        if step.script.trim().is_empty() {
            return Err(Error::InvalidArgument(format!(
                "{} is empty",
                field("script")
            )));
        }
        validate::max_len(&field("script"), &step.script, MAX_SCRIPT_LEN)?;
        if !matches!(step.shell.as_str(), "" | "bash" | "sh") {
            return Err(Error::InvalidArgument(format!(
                "{} must be bash or sh",
                field("shell")
            )));
        }
        validate::map(
            &field("env"),
            step.env.iter(),
            256,
            MAX_VALUE_LEN,
            validate::env_name,
        )?;
        timeout(&field("timeout"), step.timeout.as_ref())?;
    }
    Ok(timeout("timeout", spec.timeout.as_ref())?.unwrap_or(DEFAULT_TIMEOUT))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_proto::v1::StepSpec;

    fn spec() -> JobSpec {
        JobSpec {
            name: "build & test".into(),
            steps: vec![StepSpec {
                script: "echo hi".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn defaults_are_filled() {
        let mut spec = spec();
        assert_eq!(normalize(&mut spec).expect("valid"), DEFAULT_TIMEOUT);
        assert_eq!(spec.project, "default");
        assert_eq!(spec.pool, "default");
        assert_eq!(spec.pipeline, "build---test");
        assert_eq!(spec.steps[0].name, "step 1");
    }

    #[test]
    fn bad_specs_are_refused_with_the_field_named() {
        type Case = (fn(&mut JobSpec), &'static str, bool);
        let cases: Vec<Case> = vec![
            (|s| s.name.clear(), "name is empty", false),
            (|s| s.steps.clear(), "no steps", false),
            (
                |s| s.steps[0].script = "  ".into(),
                "steps[0].script is empty",
                false,
            ),
            (|s| s.steps[0].shell = "zsh".into(), "steps[0].shell", false),
            (
                |s| {
                    s.secrets.insert("A-B".into(), "x".into());
                },
                "not a valid environment",
                false,
            ),
            (
                |s| {
                    s.secrets.insert("EMPTY".into(), String::new());
                },
                "secret \"EMPTY\" is empty",
                false,
            ),
            (
                |s| s.steps[0].script = "x".repeat(MAX_SCRIPT_LEN + 1),
                "steps[0].script is",
                true,
            ),
            (
                |s| {
                    s.timeout = Some(prost_types::Duration {
                        seconds: -1,
                        nanos: 0,
                    })
                },
                "timeout is negative",
                false,
            ),
            (
                |s| s.steps = vec![s.steps[0].clone(); MAX_STEPS + 1],
                "steps, the limit",
                true,
            ),
        ];
        for (mutate, expected, too_large) in cases {
            let mut spec = spec();
            mutate(&mut spec);
            let error = normalize(&mut spec).expect_err(expected);
            assert!(
                error.to_string().contains(expected),
                "{error} vs {expected}"
            );
            assert_eq!(matches!(error, Error::TooLarge(_)), too_large, "{error}");
        }
    }
}
