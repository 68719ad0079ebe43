use ferry_proto::time::timestamp_from_micros;
use sha2::{Digest, Sha256};

use super::*;

const NOW: i64 = 1_700_000_000_000_000;

fn info(name: &str, content: &[u8]) -> BlobInfo {
    BlobInfo {
        name: name.to_owned(),
        size: content.len() as u64,
        sha256: hex::encode(Sha256::digest(content)),
        create_time: Some(timestamp_from_micros(NOW - 90 * 1_000_000)),
    }
}

fn messages(
    info: Option<BlobInfo>,
    chunks: &[&[u8]],
) -> impl Stream<Item = Result<DownloadArtifactResponse, String>> + Unpin {
    let mut all = Vec::new();
    if let Some(info) = info {
        all.push(Ok(DownloadArtifactResponse {
            content: Some(download_artifact_response::Content::Info(info)),
        }));
    }
    for chunk in chunks {
        all.push(Ok(DownloadArtifactResponse {
            content: Some(download_artifact_response::Content::Chunk(chunk.to_vec())),
        }));
    }
    stream::iter(all)
}

#[tokio::test]
async fn downloads_are_verified() {
    let content = b"hello, artifact";
    let mut out = Vec::new();
    let received = receive(
        messages(Some(info("a.txt", content)), &[b"hello, ", b"artifact"]),
        &mut out,
        "a.txt",
    )
    .await
    .expect("good download");
    assert_eq!(out, content);
    assert_eq!(received.size, 15);

    let mut bad = info("a.txt", content);
    bad.sha256 = hex::encode(Sha256::digest(b"something else"));
    let error = receive(messages(Some(bad), &[content]), &mut Vec::new(), "a.txt")
        .await
        .expect_err("bad checksum");
    assert!(
        error
            .to_string()
            .starts_with("artifact a.txt failed verification"),
        "{error}"
    );

    let error = receive(
        messages(Some(info("a.txt", content)), &[content, b"!"]),
        &mut Vec::new(),
        "a.txt",
    )
    .await
    .expect_err("too long");
    assert!(
        error.to_string().contains("longer than the 15 bytes"),
        "{error}"
    );

    let error = receive(
        messages(Some(info("a.txt", content)), &[b"hello"]),
        &mut Vec::new(),
        "a.txt",
    )
    .await
    .expect_err("too short");
    assert_eq!(
        error.to_string(),
        "artifact a.txt is incomplete: received 5 of 15 bytes"
    );

    let error = receive(messages(None, &[content]), &mut Vec::new(), "a.txt")
        .await
        .expect_err("no info");
    assert!(error.to_string().contains("size and checksum"), "{error}");

    let mut upper = info("a.txt", content);
    upper.sha256 = upper.sha256.to_uppercase();
    let error = receive(messages(Some(upper), &[content]), &mut Vec::new(), "a.txt")
        .await
        .expect_err("not lowercase hex");
    assert!(error.to_string().contains("no valid SHA-256"), "{error}");

    let failing = stream::iter(vec![Err("not found: artifact x".to_owned())]);
    let error = receive(failing, &mut Vec::new(), "x")
        .await
        .expect_err("status");
    assert_eq!(error.to_string(), "not found: artifact x");
}

#[test]
fn destinations_follow_the_name_and_the_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert_eq!(
        destination("dist/app.tar.gz", None).expect("default"),
        Destination::File("app.tar.gz".into())
    );
    assert_eq!(
        destination("report.xml", Some(Path::new("-"))).expect("stdout"),
        Destination::Stdout
    );
    assert_eq!(
        destination("dist/app.tar.gz", Some(dir.path())).expect("into a directory"),
        Destination::File(dir.path().join("app.tar.gz"))
    );
    let file = dir.path().join("renamed.bin");
    assert_eq!(
        destination("dist/app.tar.gz", Some(&file)).expect("a file"),
        Destination::File(file)
    );
    for bad in ["dist/", "..", "a/..", "", "."] {
        let error = destination(bad, None).expect_err(bad);
        assert!(error.to_string().contains("pass -O FILE"), "{error}");
    }
    // With -O, any name will do.
    assert!(destination("dist/", Some(Path::new("out.bin"))).is_ok());
}

#[test]
fn progress_and_tables_are_formatted() {
    assert_eq!(
        progress_line("uploading source", 12_897_485, 40 * 1024 * 1024),
        "uploading source: 12.3 MiB / 40.0 MiB"
    );
    let artifacts = [
        info("dist/app.tar.gz", &[7; 3000]),
        BlobInfo {
            name: "empty".into(),
            ..BlobInfo::default()
        },
    ];
    let sha = &artifacts[0].sha256[..12];
    assert_eq!(
        artifact_table(&artifacts, NOW),
        format!(
            "NAME             SIZE     SHA256        CREATED\n\
             dist/app.tar.gz  2.9 KiB  {sha}  1m ago\n\
             empty            0 B      -             -\n"
        )
    );
}
