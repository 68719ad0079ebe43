use std::collections::BTreeMap;
use std::os::unix::fs::{PermissionsExt, symlink};

use flate2::read::GzDecoder;

use super::*;

fn write(path: &Path, contents: &[u8], mode: u32) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(path, contents).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A source tree: files with several modes, nested and empty directories,
/// `.git` at the top and in a submodule, and a link that stays inside.
fn tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write(&root.join("README.md"), b"# hello\n", 0o644);
    write(&root.join("build.sh"), b"#!/bin/sh\nmake\n", 0o755);
    write(&root.join("private.key"), b"not really a key", 0o600);
    write(&root.join("src/lib/deep/mod.rs"), b"pub fn x() {}\n", 0o640);
    write(&root.join("src/main.rs"), &[0, 1, 2, 255, 254], 0o644);
    std::fs::create_dir_all(root.join("empty")).expect("mkdir");
    std::fs::set_permissions(root.join("empty"), std::fs::Permissions::from_mode(0o700))
        .expect("chmod");
    write(&root.join(".git/config"), b"[core]\n", 0o644);
    write(&root.join(".git/objects/ab/cdef"), b"blob", 0o444);
    write(
        &root.join("vendor/sub/.git"),
        b"gitdir: ../../.git/modules/sub\n",
        0o644,
    );
    write(&root.join("vendor/sub/code.c"), b"int main;\n", 0o644);
    write(&root.join(".gitignore"), b"target/\n", 0o644);
    symlink("src/main.rs", root.join("main-link")).expect("symlink");
    symlink("../README.md", root.join("src/readme-link")).expect("symlink");
    dir
}

#[derive(Debug, PartialEq, Eq)]
enum Unpacked {
    File(Vec<u8>, u32),
    Dir(u32),
    Link(PathBuf),
}

/// Reads an archive back: path to what is there, in archive order.
fn entries(packed: &mut PackedSource) -> Vec<(String, Unpacked)> {
    packed.file.seek(SeekFrom::Start(0)).expect("seek");
    let mut archive = tar::Archive::new(GzDecoder::new(&packed.file));
    let mut found = Vec::new();
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let path = entry.path().expect("path").to_string_lossy().into_owned();
        assert!(!path.starts_with('/'), "absolute path {path}");
        assert_eq!(entry.header().uid().expect("uid"), 0);
        let mode = entry.header().mode().expect("mode");
        let what = match entry.header().entry_type() {
            EntryType::Regular => {
                let mut contents = Vec::new();
                entry.read_to_end(&mut contents).expect("read");
                Unpacked::File(contents, mode)
            }
            EntryType::Directory => Unpacked::Dir(mode),
            EntryType::Symlink => Unpacked::Link(
                entry
                    .link_name()
                    .expect("link")
                    .expect("target")
                    .into_owned(),
            ),
            other => panic!("unexpected entry type {other:?} for {path}"),
        };
        found.push((path.trim_end_matches('/').to_owned(), what));
    }
    found
}

#[test]
fn a_tree_round_trips_with_modes_and_without_git() {
    let dir = tree();
    let mut packed = pack(dir.path(), false).expect("pack");
    let found = entries(&mut packed);
    let names: Vec<&str> = found.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        [
            ".gitignore",
            "README.md",
            "build.sh",
            "empty",
            "main-link",
            "private.key",
            "src",
            "src/lib",
            "src/lib/deep",
            "src/lib/deep/mod.rs",
            "src/main.rs",
            "src/readme-link",
            "vendor",
            "vendor/sub",
            "vendor/sub/code.c",
        ]
    );
    let found: BTreeMap<String, Unpacked> = found.into_iter().collect();
    assert_eq!(
        found["build.sh"],
        Unpacked::File(b"#!/bin/sh\nmake\n".to_vec(), 0o755)
    );
    assert_eq!(
        found["private.key"],
        Unpacked::File(b"not really a key".to_vec(), 0o600)
    );
    assert_eq!(
        found["src/lib/deep/mod.rs"],
        Unpacked::File(b"pub fn x() {}\n".to_vec(), 0o640)
    );
    assert_eq!(
        found["src/main.rs"],
        Unpacked::File(vec![0, 1, 2, 255, 254], 0o644)
    );
    assert_eq!(found["empty"], Unpacked::Dir(0o700));
    assert_eq!(found["main-link"], Unpacked::Link("src/main.rs".into()));
    assert_eq!(
        found["src/readme-link"],
        Unpacked::Link("../README.md".into())
    );
    assert_eq!(packed.files, 7);
    assert!(packed.skipped.is_empty());

    // The size and the hash describe the file's bytes.
    let mut bytes = Vec::new();
    packed.file.seek(SeekFrom::Start(0)).expect("seek");
    packed.file.read_to_end(&mut bytes).expect("read");
    assert_eq!(bytes.len() as u64, packed.size);
    assert_eq!(hex::encode(Sha256::digest(&bytes)), packed.sha256);
    assert_eq!(packed.sha256.len(), 64);
    assert!(
        packed
            .sha256
            .chars()
            .all(|c| matches!(c, '0'..='9' | 'a'..='f'))
    );

    // The same tree packs to the same bytes.
    let again = pack(dir.path(), false).expect("pack again");
    assert_eq!(again.sha256, packed.sha256);
}

#[test]
fn unpacking_with_tar_restores_the_tree() {
    let dir = tree();
    let packed = pack(dir.path(), false).expect("pack");
    let out = tempfile::tempdir().expect("tempdir");
    tar::Archive::new(GzDecoder::new(&packed.file))
        .unpack(out.path())
        .expect("unpack");
    let read = |path: &str| std::fs::read(out.path().join(path)).expect(path);
    let mode_of = |path: &str| {
        std::fs::symlink_metadata(out.path().join(path))
            .expect(path)
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(read("src/lib/deep/mod.rs"), b"pub fn x() {}\n");
    assert_eq!(read("main-link"), [0, 1, 2, 255, 254]);
    assert_eq!(mode_of("build.sh"), 0o755);
    assert_eq!(mode_of("private.key"), 0o600);
    assert!(out.path().join("empty").is_dir());
    assert!(!out.path().join(".git").exists());
    assert!(!out.path().join("vendor/sub/.git").exists());
}

#[test]
fn git_is_packed_when_asked() {
    let dir = tree();
    let mut packed = pack(dir.path(), true).expect("pack");
    let found: BTreeMap<String, Unpacked> = entries(&mut packed).into_iter().collect();
    assert_eq!(
        found[".git/config"],
        Unpacked::File(b"[core]\n".to_vec(), 0o644)
    );
    assert_eq!(
        found[".git/objects/ab/cdef"],
        Unpacked::File(b"blob".to_vec(), 0o444)
    );
    assert!(found.contains_key("vendor/sub/.git"));
}

#[test]
fn links_that_escape_are_refused() {
    let outside = tempfile::tempdir().expect("tempdir");
    write(&outside.path().join("secret"), b"s", 0o644);
    let cases: Vec<(&str, PathBuf)> = vec![
        ("up", PathBuf::from("../secret")),
        ("deep/up", PathBuf::from("../../x")),
        ("absolute", outside.path().join("secret")),
        ("absolute-inside", PathBuf::from("/etc/passwd")),
    ];
    for (name, target) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        write(&dir.path().join("ok.txt"), b"ok", 0o644);
        let link = dir.path().join(name);
        std::fs::create_dir_all(link.parent().expect("parent")).expect("mkdir");
        symlink(&target, &link).expect("symlink");
        let error = pack(dir.path(), false).expect_err(name);
        let message = format!("{error:#}");
        let expected = format!(
            "cannot pack source {}: symbolic link {name} points outside the source directory",
            dir.path().display()
        );
        assert!(message.starts_with(&expected), "{message}");
    }
}

#[test]
fn links_through_other_links_are_resolved() {
    // `sub/root -> ..` is the source directory itself (allowed), but
    // `escape -> sub/root/..` goes through it and out: refused, though a
    // lexical reading (`sub/..`) would stay inside.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("sub")).expect("mkdir");
    symlink("..", dir.path().join("sub/root")).expect("symlink");
    pack(dir.path(), false).expect("a link to the root itself is inside");
    symlink("sub/root/..", dir.path().join("escape")).expect("symlink");
    let error = pack(dir.path(), false).expect_err("escape");
    assert!(
        error
            .root_cause()
            .to_string()
            .starts_with("symbolic link escape points outside"),
        "{error}"
    );

    // A dangling link that stays inside is kept; one whose missing part
    // climbs back out after a real link is refused.
    let dir = tempfile::tempdir().expect("tempdir");
    symlink("later/file", dir.path().join("dangling")).expect("symlink");
    pack(dir.path(), false).expect("dangling inside");
    std::fs::create_dir_all(dir.path().join("a/b")).expect("mkdir");
    symlink("a/b", dir.path().join("ab")).expect("symlink");
    symlink("ab/missing/../../../..", dir.path().join("z-out")).expect("symlink");
    let error = pack(dir.path(), false).expect_err("z-out");
    assert!(
        format!("{error:#}").contains("symbolic link z-out points outside"),
        "{error:#}"
    );
}

#[test]
fn a_linked_source_directory_is_packed_and_odd_files_are_skipped() {
    let dir = tree();
    let parent = tempfile::tempdir().expect("tempdir");
    let link = parent.path().join("checkout");
    symlink(dir.path(), &link).expect("symlink");
    let packed = pack(&link, false).expect("pack through a link");
    assert_eq!(packed.files, 7);

    let dir = tempfile::tempdir().expect("tempdir");
    let socket =
        std::os::unix::net::UnixListener::bind(dir.path().join("agent.sock")).expect("socket");
    let packed = pack(dir.path(), false).expect("pack");
    assert_eq!(packed.skipped, [PathBuf::from("agent.sock")]);
    drop(socket);
}

#[test]
fn missing_and_non_directory_sources_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let error = pack(&dir.path().join("missing"), false).expect_err("missing");
    assert!(
        error
            .to_string()
            .starts_with("cannot read source directory "),
        "{error}"
    );
    write(&dir.path().join("file"), b"x", 0o644);
    let error = pack(&dir.path().join("file"), false).expect_err("file");
    assert!(error.to_string().ends_with("is not a directory"), "{error}");
}

#[test]
fn a_file_that_shrinks_is_an_error() {
    let mut reader = ExactReader {
        inner: &b"abc"[..],
        remaining: 5,
    };
    let mut out = Vec::new();
    let error = io::copy(&mut reader, &mut out).expect_err("short");
    assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
}
