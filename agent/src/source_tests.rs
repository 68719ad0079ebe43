//! Tests of unpacking source archives, hostile ones included.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;

use super::*;

/// An entry written with a raw header, so that names a well-behaved
/// builder refuses (`..`, absolute) can be tested.
pub struct Raw<'a> {
    pub name: &'a str,
    pub kind: tar::EntryType,
    pub link: Option<&'a str>,
    pub data: &'a [u8],
    pub mode: u32,
}

impl<'a> Raw<'a> {
    pub fn file(name: &'a str, data: &'a [u8]) -> Raw<'a> {
        Raw {
            name,
            kind: tar::EntryType::Regular,
            link: None,
            data,
            mode: 0o644,
        }
    }

    pub fn dir(name: &'a str) -> Raw<'a> {
        Raw {
            name,
            kind: tar::EntryType::Directory,
            link: None,
            data: b"",
            mode: 0o755,
        }
    }

    pub fn symlink(name: &'a str, target: &'a str) -> Raw<'a> {
        Raw {
            name,
            kind: tar::EntryType::Symlink,
            link: Some(target),
            data: b"",
            mode: 0o777,
        }
    }

    pub fn hard_link(name: &'a str, target: &'a str) -> Raw<'a> {
        Raw {
            kind: tar::EntryType::Link,
            ..Raw::symlink(name, target)
        }
    }
}

/// A gzip-compressed tar of `entries`.
pub fn archive(entries: &[Raw<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        {
            let old = header.as_old_mut();
            old.name[..entry.name.len()].copy_from_slice(entry.name.as_bytes());
            if let Some(link) = entry.link {
                old.linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
        }
        header.set_entry_type(entry.kind);
        header.set_size(entry.data.len() as u64);
        header.set_mode(entry.mode);
        header.set_mtime(1_700_000_000);
        header.set_cksum();
        builder.append(&header, entry.data).expect("append");
    }
    let tar = builder.into_inner().expect("tar");
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(&tar).expect("gzip");
    encoder.finish().expect("gzip")
}

fn unpack_bytes(bytes: &[u8]) -> (tempfile::TempDir, PathBuf, anyhow::Result<Unpacked>) {
    let temp = tempfile::tempdir().expect("tempdir");
    let workspace = temp.path().join("jobs").join("ws");
    std::fs::create_dir_all(&workspace).expect("workspace");
    let archive = temp.path().join("source.tar.gz");
    std::fs::write(&archive, bytes).expect("archive");
    let result = unpack(&archive, &workspace);
    (temp, workspace, result)
}

#[test]
fn a_good_archive_unpacks_with_its_links_and_modes() {
    let bytes = archive(&[
        Raw::dir("src/"),
        Raw::file("src/hello.txt", b"hello from the source\n"),
        Raw {
            mode: 0o755,
            ..Raw::file("./run.sh", b"#!/bin/sh\necho run\n")
        },
        Raw::symlink("latest", "src/hello.txt"),
        Raw::symlink("src/up", "../run.sh"),
        Raw::hard_link("copy.txt", "src/hello.txt"),
        Raw::file("deep/er/file", b"x"),
    ]);
    let (_temp, workspace, result) = unpack_bytes(&bytes);
    let unpacked = result.expect("unpacks");
    assert_eq!(
        unpacked,
        Unpacked {
            files: 4,
            directories: 1,
            links: 2
        }
    );
    let read = |path: &str| std::fs::read_to_string(workspace.join(path)).expect(path);
    assert_eq!(read("src/hello.txt"), "hello from the source\n");
    assert_eq!(read("latest"), "hello from the source\n");
    assert_eq!(read("copy.txt"), "hello from the source\n");
    assert_eq!(read("src/up"), "#!/bin/sh\necho run\n");
    assert_eq!(read("deep/er/file"), "x");
    let mode = std::fs::metadata(workspace.join("run.sh"))
        .expect("run.sh")
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111, "executable bits kept: {mode:o}");
}

#[test]
fn entries_and_links_that_escape_the_workspace_are_refused() {
    let cases: Vec<(&str, Vec<Raw<'_>>)> = vec![
        ("../evil", vec![Raw::file("../evil", b"pwned")]),
        (
            "sub/../../evil",
            vec![Raw::file("sub/../../evil", b"pwned")],
        ),
        (
            "/tmp/evil",
            vec![Raw::file("/tmp/ferry-agent-test-evil", b"pwned")],
        ),
        ("absolute link", vec![Raw::symlink("etc", "/etc")]),
        ("climbing link", vec![Raw::symlink("out", "../evil")]),
        (
            "deep climbing link",
            vec![Raw::symlink("a/b/out", "../../../evil")],
        ),
        (
            "'..' in the middle",
            vec![Raw::symlink("mid", "a/../../evil")],
        ),
        (
            "link below a link",
            vec![
                Raw::symlink("here", "."),
                Raw::symlink("here/out", "../evil"),
            ],
        ),
        ("hard link out", vec![Raw::hard_link("h", "../evil")]),
        (
            "fifo",
            vec![Raw {
                kind: tar::EntryType::Fifo,
                ..Raw::file("pipe", b"")
            }],
        ),
    ];
    for (case, entries) in cases {
        let bytes = archive(&entries);
        let (temp, workspace, result) = unpack_bytes(&bytes);
        let error = format!("{:#}", result.expect_err(case));
        assert!(
            error.contains("the source archive is refused"),
            "{case}: {error}"
        );
        for outside in [
            temp.path().join("evil"),
            temp.path().join("jobs").join("evil"),
            PathBuf::from("/tmp/ferry-agent-test-evil"),
        ] {
            assert!(!outside.exists(), "{case}: {} exists", outside.display());
        }
        assert!(!workspace.join("out").exists(), "{case}");
    }
}

#[test]
fn links_that_stay_inside_are_allowed() {
    let bytes = archive(&[
        Raw::dir("a/"),
        Raw::dir("a/b/"),
        Raw::file("top.txt", b"top"),
        Raw::symlink("a/b/top", "../../top.txt"),
        Raw::symlink("a/self", "."),
    ]);
    let (_temp, workspace, result) = unpack_bytes(&bytes);
    result.expect("unpacks");
    assert_eq!(
        std::fs::read_to_string(workspace.join("a/b/top")).expect("top"),
        "top"
    );
}

#[test]
fn garbage_is_not_an_archive() {
    let (_temp, _workspace, result) = unpack_bytes(b"definitely not gzip");
    let error = format!("{:#}", result.expect_err("garbage"));
    assert!(error.contains("gzip-compressed tar"), "{error}");
}
