//! Secrets never leave the agent unmasked, in any common encoding, and are
//! never stored in plain text on either side.

use std::time::Duration;

use ferry_e2e::jobs::{self, state};
use ferry_e2e::{Agent, Server, files_containing};
use ferry_proto::v1::{JobSpec, JobState, StepSpec};

/// Has characters that every encoding changes: space, quote, slash, plus,
/// ampersand, a non-ASCII letter.
const SECRET: &str = "p@ss w\"rd/+&é-2f9c";

fn encodings() -> Vec<(&'static str, String)> {
    use base64::Engine;
    let standard = base64::engine::general_purpose::STANDARD.encode(SECRET);
    let url_safe = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(SECRET);
    let url_encoded: String = SECRET
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect();
    let json = serde_json::to_string(SECRET).unwrap_or_default();
    vec![
        ("plain", SECRET.to_owned()),
        ("base64", standard),
        ("base64url", url_safe),
        ("url", url_encoded),
        ("json", json.trim_matches('"').to_owned()),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn no_form_of_a_secret_survives_in_stored_logs_or_on_disk() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    let (mut agent, output) = Agent::configure(
        &server,
        &dir.path().join("agent"),
        "masker",
        &server.owner_token,
        &[],
    )?;
    anyhow::ensure!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    agent.run(&[])?;

    let script = r#"
echo "plain: $SECRET"
echo "base64: $(printf %s "$SECRET" | base64 -w0)"
echo "base64url: $(printf %s "$SECRET" | base64 -w0 | tr '+/' '-_' | tr -d '=')"
echo "url: $(python3 -c 'import os,urllib.parse;print(urllib.parse.quote(os.environ["SECRET"], safe="-_.~"))')"
echo "json: $(python3 -c 'import os,json;print(json.dumps(os.environ["SECRET"], ensure_ascii=False))')"
printf 'split: %s' "${SECRET:0:6}"; sleep 0.3; printf '%s\n' "${SECRET:6}"
echo "stderr: $SECRET" >&2
"#;
    let job = jobs::queue(
        &server,
        JobSpec {
            name: "masking".to_owned(),
            pool: "default".to_owned(),
            secrets: [("SECRET".to_owned(), SECRET.to_owned())].into(),
            steps: vec![StepSpec {
                name: "leak".to_owned(),
                script: script.to_owned(),
                ..Default::default()
            }],
            ..Default::default()
        },
    )
    .await?;
    let ended = jobs::finished(&server, &job.id, Duration::from_secs(60)).await?;
    assert_eq!(state(&ended), JobState::Succeeded, "{}", ended.message);
    let lines = jobs::lines(&server, &job.id).await?;
    for label in [
        "plain:",
        "base64:",
        "base64url:",
        "url:",
        "json:",
        "split:",
        "stderr:",
    ] {
        let line = lines
            .iter()
            .find(|line| line.text.starts_with(label))
            .unwrap_or_else(|| panic!("no {label} line in {lines:?}"));
        assert!(
            line.text.contains("***"),
            "{label} line not masked: {}",
            line.text
        );
    }
    for (form, encoded) in encodings() {
        for line in &lines {
            assert!(
                !line.text.contains(&encoded),
                "the {form} form leaked: {}",
                line.text
            );
        }
    }
    assert!(
        files_containing(&server.data_dir, SECRET.as_bytes()).is_empty(),
        "secret bytes in the server's data directory"
    );
    assert!(
        files_containing(&agent.dir, SECRET.as_bytes()).is_empty(),
        "secret bytes in the agent's directory"
    );
    Ok(())
}
