use std::path::PathBuf;
use std::time::Duration;

use ferry_proto::time::duration_from_proto;

use super::*;

fn env(name: &str) -> Option<String> {
    match name {
        "API_TOKEN" => Some("from-the-environment".to_owned()),
        "EMPTY" => Some(String::new()),
        _ => None,
    }
}

fn parse(yaml: &str) -> Result<JobSpec, PipelineError> {
    parse_with_env(yaml, env)
}

fn error(yaml: &str) -> String {
    match parse(yaml) {
        Ok(_) => panic!("accepted:\n{yaml}"),
        Err(error) => error.to_string(),
    }
}

fn assert_error(yaml: &str, expected: &[&str]) {
    let message = error(yaml);
    for part in expected {
        assert!(message.contains(part), "{message:?} lacks {part:?}");
    }
}

const MINIMAL: &str = "name: build\nsteps:\n  - run: make\n";

#[test]
fn a_full_pipeline_is_read() {
    let yaml = r#"
name: build-and-test
project: ferry
pipeline: ci
pool: linux
timeout: 1h30m
demands: { os: linux, arch: x86_64 }
variables:
  GREETING: hello
  VERSION: 1.10
  DEBUG: true
  EMPTY:
secrets:
  API_TOKEN: { from-env: API_TOKEN }
  PASSWORD: "s3cr3t"
steps:
  - name: greet
    run: echo "$GREETING"
    shell: sh
    timeout: 5m
    continue-on-error: true
    env: { EXTRA: x, _under: "1" }
  - run: |
      make
      make test
"#;
    let spec = parse(yaml).expect("valid");
    assert_eq!(spec.name, "build-and-test");
    assert_eq!(spec.project, "ferry");
    assert_eq!(spec.pipeline, "ci");
    assert_eq!(spec.pool, "linux");
    assert_eq!(
        spec.timeout.as_ref().map(duration_from_proto),
        Some(Duration::from_secs(5400))
    );
    assert_eq!(spec.demands.get("os").map(String::as_str), Some("linux"));
    assert_eq!(spec.demands.get("arch").map(String::as_str), Some("x86_64"));
    assert_eq!(
        spec.variables.get("GREETING").map(String::as_str),
        Some("hello")
    );
    // Scalars are taken verbatim: no float rounding, no bool parsing.
    assert_eq!(
        spec.variables.get("VERSION").map(String::as_str),
        Some("1.10")
    );
    assert_eq!(
        spec.variables.get("DEBUG").map(String::as_str),
        Some("true")
    );
    assert_eq!(spec.variables.get("EMPTY").map(String::as_str), Some(""));
    assert_eq!(
        spec.secrets.get("API_TOKEN").map(String::as_str),
        Some("from-the-environment")
    );
    assert_eq!(
        spec.secrets.get("PASSWORD").map(String::as_str),
        Some("s3cr3t")
    );
    assert_eq!(spec.steps.len(), 2);
    let greet = &spec.steps[0];
    assert_eq!(greet.name, "greet");
    assert_eq!(greet.script, "echo \"$GREETING\"");
    assert_eq!(greet.shell, "sh");
    assert_eq!(
        greet.timeout.as_ref().map(duration_from_proto),
        Some(Duration::from_secs(300))
    );
    assert!(greet.continue_on_error);
    assert_eq!(greet.env.get("EXTRA").map(String::as_str), Some("x"));
    assert_eq!(greet.env.get("_under").map(String::as_str), Some("1"));
    let build = &spec.steps[1];
    assert_eq!(build.name, "step 2");
    assert_eq!(build.script, "make\nmake test\n");
    assert_eq!(build.shell, "bash");
    assert_eq!(build.timeout, None);
    assert!(!build.continue_on_error);
    assert!(build.env.is_empty());
}

#[test]
fn defaults_are_filled_in() {
    let spec = parse(MINIMAL).expect("valid");
    assert_eq!(spec.project, "default");
    assert_eq!(spec.pipeline, "build");
    assert_eq!(spec.pool, "default");
    assert_eq!(
        spec.timeout.as_ref().map(duration_from_proto),
        Some(DEFAULT_TIMEOUT)
    );
    assert!(spec.demands.is_empty() && spec.variables.is_empty() && spec.secrets.is_empty());
    assert_eq!(spec.steps[0].name, "step 1");
    assert_eq!(spec.steps[0].shell, "bash");
}

#[test]
fn the_examples_parse() {
    for (file, yaml) in [
        ("hello.yaml", include_str!("../../examples/hello.yaml")),
        ("failing.yaml", include_str!("../../examples/failing.yaml")),
    ] {
        let spec = parse_with_env(yaml, |_| Some("example-secret".to_owned()))
            .unwrap_or_else(|error| panic!("{file}: {error}"));
        assert!(!spec.steps.is_empty(), "{file}");
    }
    let hello = parse_with_env(include_str!("../../examples/hello.yaml"), |_| {
        Some("x".to_owned())
    })
    .expect("hello");
    assert_eq!(hello.steps.len(), 3);
    assert!(!hello.secrets.is_empty());
}

#[test]
fn empty_files_are_refused() {
    for yaml in ["", "  \n", "# only a comment\n", "---\n"] {
        assert!(matches!(parse(yaml), Err(PipelineError::Empty)), "{yaml:?}");
    }
}

#[test]
fn unknown_keys_are_refused_with_their_position() {
    let result = parse("name: build\nstpes: []\n");
    let Err(error) = result else {
        panic!("accepted")
    };
    assert!(
        error.to_string().contains("unknown field `stpes`"),
        "{error}"
    );
    assert_eq!(error.location().map(|(line, _)| line), Some(2));
    assert_error(
        "name: build\nsteps:\n  - run: make\n    continue_on_error: true\n",
        &["steps[0]", "unknown field `continue_on_error`", "line 4"],
    );
}

#[test]
fn required_keys_are_required() {
    assert_error("steps:\n  - run: make\n", &["missing field `name`"]);
    assert_error("name: build\n", &["missing field `steps`"]);
    assert_error(
        "name: build\nsteps:\n  - name: x\n",
        &["missing field `run`"],
    );
}

#[test]
fn empty_values_are_refused() {
    assert_error("name: build\nsteps: []\n", &["at least one step", "line 2"]);
    assert_error("name: build\nsteps:\n", &["at least one step"]);
    assert_error(
        "name: build\nsteps:\n  - run: '  '\n",
        &["steps[0].run", "script is empty", "line 3"],
    );
    assert_error(
        "name: ''\nsteps:\n  - run: make\n",
        &["name", "must not be empty"],
    );
    assert_error(
        "name: x\npool: ' '\nsteps:\n  - run: make\n",
        &["pool", "must not be empty"],
    );
    assert_error(
        "name: x\ndemands: { '': linux }\nsteps:\n  - run: make\n",
        &["demands", "must not be empty"],
    );
}

#[test]
fn variable_names_are_checked() {
    for (section, prefix) in [("variables", ""), ("secrets", ""), ("env", "steps[0].")] {
        for bad in ["1ABC", "A-B", "A B", "É"] {
            let yaml = if section == "env" {
                format!("name: x\nsteps:\n  - run: make\n    env: {{ '{bad}': v }}\n")
            } else {
                format!("name: x\n{section}: {{ '{bad}': v }}\nsteps:\n  - run: make\n")
            };
            assert_error(
                &yaml,
                &[
                    &format!("{prefix}{section}"),
                    "not a valid variable name",
                    bad,
                ],
            );
        }
    }
    assert!(is_valid_env_name("_A1") && is_valid_env_name("a") && !is_valid_env_name(""));
}

#[test]
fn duplicate_names_are_refused() {
    assert_error(
        "name: x\nvariables:\n  A: 1\n  A: 2\nsteps:\n  - run: make\n",
        &["`A` appears twice"],
    );
    assert_error(
        "name: x\nsecrets:\n  A: '1'\n  A: '2'\nsteps:\n  - run: make\n",
        &["`A` appears twice"],
    );
}

#[test]
fn durations_are_checked() {
    let cases = [
        ("90s", 90),
        ("30m", 1800),
        ("2h", 7200),
        ("1h30m", 5400),
        ("1h0m5s", 3605),
        ("120m", 7200),
    ];
    for (text, seconds) in cases {
        assert_eq!(
            parse_duration(text),
            Ok(Duration::from_secs(seconds)),
            "{text}"
        );
    }
    for bad in [
        "",
        "90",
        "m",
        "1x",
        "1m1h",
        "1h1h",
        "1.5h",
        "-5m",
        "5 m",
        "0s",
        "0h0m",
        "99999999999999999999h",
    ] {
        assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
    }
    assert_error(
        "name: x\ntimeout: 90\nsteps:\n  - run: make\n",
        &["timeout", "invalid duration `90`", "line 2"],
    );
    assert_error(
        "name: x\nsteps:\n  - run: make\n    timeout: 0s\n",
        &["steps[0].timeout", "longer than zero"],
    );
}

#[test]
fn shells_are_checked() {
    assert_error(
        "name: x\nsteps:\n  - run: make\n    shell: zsh\n",
        &["unknown variant `zsh`", "bash", "sh"],
    );
}

#[test]
fn secrets_must_not_be_empty_and_errors_never_show_them() {
    assert_error(
        "name: x\nsecrets: { A: '' }\nsteps:\n  - run: make\n",
        &["secrets.A", "the secret is empty"],
    );
    assert_error(
        "name: x\nsecrets:\n  A:\nsteps:\n  - run: make\n",
        &["secrets.A", "the secret is empty"],
    );
    assert_error(
        "name: x\nsecrets: { A: { from-env: EMPTY } }\nsteps:\n  - run: make\n",
        &["secrets.A", "`EMPTY` is empty"],
    );
    assert_error(
        "name: x\nsecrets: { A: { from-env: UNSET } }\nsteps:\n  - run: make\n",
        &["secrets.A", "`UNSET` is not set"],
    );
    assert_error(
        "name: x\nsecrets: { A: { from-file: x } }\nsteps:\n  - run: make\n",
        &["unknown key `from-file`"],
    );
    assert_error(
        "name: x\nsecrets: { A: {} }\nsteps:\n  - run: make\n",
        &["from-env"],
    );
    assert_error(
        "name: x\nsecrets: { A: { from-env: 'not a name' } }\nsteps:\n  - run: make\n",
        &["not a valid variable name"],
    );
    // Unquoted numbers and bools must be quoted; the value is not echoed.
    for value in ["123456789", "true", "1.5"] {
        let message = error(&format!(
            "name: x\nsecrets: {{ A: {value} }}\nsteps:\n  - run: make\n"
        ));
        assert!(message.contains("quoted string"), "{message}");
        assert!(!message.contains(value), "{message}");
    }
    // A scalar where the mapping belongs does not echo the value either.
    let message = error("name: x\nsecrets: hunter2-secret\nsteps:\n  - run: make\n");
    assert!(!message.contains("hunter2"), "{message}");
}

#[test]
fn a_name_cannot_be_both_a_variable_and_a_secret() {
    assert_error(
        "name: x\nvariables: { A: v }\nsecrets: { A: s }\nsteps:\n  - run: make\n",
        &["secrets.A", "also a variable"],
    );
}

#[test]
fn wrong_types_are_refused() {
    assert_error(
        "name: x\nsteps: { run: make }\n",
        &["steps", "a list of steps"],
    );
    assert_error(
        "name: x\nsteps:\n  - run: make\n    continue-on-error: maybe\n",
        &["continue-on-error"],
    );
    assert_error(
        "name: x\nvariables: [A, B]\nsteps:\n  - run: make\n",
        &["variables"],
    );
    assert_error("name: [x]\nsteps:\n  - run: make\n", &["name"]);
    assert_error("name: x\nsteps:\n  - run: [make]\n", &["steps[0].run"]);
    assert_error(
        "- a\n- b\n",
        &["expected a pipeline: a mapping with `name` and `steps`"],
    );
    assert_error(
        "name: x\nsteps:\n  - make\n",
        &["steps[0]", "expected a step: a mapping with `run`"],
    );
}

#[test]
fn malformed_yaml_is_refused_with_a_position() {
    let Err(error) = parse("name: x\nsteps:\n  - run: 'unterminated\n") else {
        panic!("accepted")
    };
    assert!(error.location().is_some(), "{error}");
}

#[test]
fn source_test_results_and_artifacts_are_read() {
    let yaml = "name: x\nsource: ../app\ntest-results:\n  - target/reports/*.xml\n  - 'junit-*.xml'\nartifacts: [dist/**, \"logs/run.log\"]\nsteps:\n  - run: make\n";
    let pipeline = parse_pipeline(yaml, env).expect("valid");
    assert_eq!(pipeline.source, Some(PathBuf::from("../app")));
    assert_eq!(
        pipeline.spec.test_results,
        ["target/reports/*.xml", "junit-*.xml"]
    );
    assert_eq!(pipeline.spec.artifacts, ["dist/**", "logs/run.log"]);
    assert_eq!(pipeline.spec.source_id, "");
    // `parse` gives the same spec.
    assert_eq!(parse(yaml).expect("valid"), pipeline.spec);

    let with_secret = parse_pipeline(
        "name: x\nsecrets: { PASSWORD: 'hunter2-value' }\nsource: app\nsteps:\n  - run: make\n",
        env,
    )
    .expect("valid");
    let debug = format!("{with_secret:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(
        debug.contains("PASSWORD") && debug.contains("app"),
        "{debug}"
    );

    let pipeline = parse_pipeline(MINIMAL, env).expect("valid");
    assert_eq!(pipeline.source, None);
    assert!(pipeline.spec.test_results.is_empty() && pipeline.spec.artifacts.is_empty());
    let empty = parse_pipeline(
        "name: x\ntest-results:\nartifacts: []\nsteps:\n  - run: make\n",
        env,
    )
    .expect("empty lists");
    assert!(empty.spec.test_results.is_empty() && empty.spec.artifacts.is_empty());
}

#[test]
fn bad_globs_and_sources_are_refused() {
    assert_error(
        "name: x\nsource: ''\nsteps:\n  - run: make\n",
        &["source", "must not be empty", "line 2"],
    );
    assert_error("name: x\nsource: [a]\nsteps:\n  - run: make\n", &["source"]);
    assert_error(
        "name: x\ntest-results: reports/*.xml\nsteps:\n  - run: make\n",
        &["test-results", "a list of glob patterns"],
    );
    assert_error(
        "name: x\nartifacts: ['/etc/*']\nsteps:\n  - run: make\n",
        &["artifacts[0]", "is not relative", "line 2"],
    );
    assert_error(
        "name: x\nartifacts: [ok, 'dist/../../x']\nsteps:\n  - run: make\n",
        &["artifacts[1]", "climbs out of the workspace"],
    );
    assert_error(
        "name: x\ntest-results: ['C:/reports/*.xml']\nsteps:\n  - run: make\n",
        &["test-results[0]", "is not relative"],
    );
    assert_error(
        "name: x\ntest-results: ['  ']\nsteps:\n  - run: make\n",
        &["test-results[0]", "must not be empty"],
    );
    assert_error(
        "name: x\nartifacts: [a, a]\nsteps:\n  - run: make\n",
        &["artifacts", "`a` appears twice"],
    );
    assert_error(
        "name: x\nartifacts: [[a]]\nsteps:\n  - run: make\n",
        &["artifacts[0]", "a glob pattern"],
    );
    assert!(check_glob("reports/**/TEST-*.xml").is_ok());
    assert!(check_glob("a..b/x").is_ok());
    assert!(check_glob("x/..").is_err());
}
