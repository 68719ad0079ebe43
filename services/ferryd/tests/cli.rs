//! ferryd's command line, run as a program.

use std::process::Command;

fn ferryd(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ferryd"))
        .args(args)
        .output()
        .expect("ferryd runs")
}

#[test]
fn config_check_accepts_the_shipped_config_and_explains_a_bad_one() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/ferry.toml");
    let ok = ferryd(&["config", "check", shipped]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("route ferry.v1.JobService"));

    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[dispatch]\nlease = \"0s\"\n").expect("write");
    let refused = ferryd(&["config", "check", bad.to_str().expect("utf8")]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("dispatch.lease must be between"));

    std::fs::write(&bad, "lisen = \"0.0.0.0:1\"\n").expect("write");
    let unknown = ferryd(&["config", "check", bad.to_str().expect("utf8")]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown field `lisen`"));
}

#[test]
fn serve_without_listen_and_the_mesh_on_sqlite_are_refused_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let serve = ferryd(&[
        "serve",
        "dispatch",
        "--data-dir",
        data.to_str().expect("utf8"),
    ]);
    assert_eq!(serve.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&serve.stderr).contains("needs --listen"));
    let on_sqlite = ferryd(&[
        "serve",
        "dispatch",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().expect("utf8"),
    ]);
    assert_eq!(on_sqlite.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&on_sqlite.stderr);
    assert!(stderr.contains("share PostgreSQL"), "{stderr}");
    assert!(!data.join("ferry.db").exists(), "nothing was created");

    let config = dir.path().join("mesh.toml");
    std::fs::write(
        &config,
        format!("data-dir = {:?}\n", data.display().to_string()),
    )
    .expect("write");
    let up = ferryd(&["mesh", "up", "--config", config.to_str().expect("utf8")]);
    assert_eq!(up.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&up.stderr).contains("the mesh needs PostgreSQL"));
}

#[test]
fn certs_init_makes_a_ca_and_one_certificate_per_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mesh = dir.path().join("mesh");
    let made = ferryd(&["certs", "init", "--dir", mesh.to_str().expect("utf8")]);
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    for name in [
        "ca",
        "gateway",
        "registry",
        "tokens",
        "dispatch",
        "logs",
        "resources",
    ] {
        assert!(mesh.join(format!("{name}.crt")).is_file(), "{name}.crt");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(mesh.join("dispatch.key"))
        .expect("key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "keys are private");
}
