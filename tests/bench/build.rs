//! Records the compiler's version and the build profile for the report.

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let version = std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .map(|text| text.trim().to_owned())
        .filter(|text| !text.is_empty())
        .unwrap_or_else(|| "rustc (unknown version)".to_owned());
    println!("cargo:rustc-env=FERRY_BENCH_RUSTC={version}");
    println!("cargo:rerun-if-env-changed=RUSTC");
    // OUT_DIR is `<target>/<profile>/build/<package>-<hash>/out`; PROFILE
    // says only "debug" or "release", not which profile (`dist`).
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default());
    let profile = out
        .ancestors()
        .nth(3)
        .and_then(|dir| dir.file_name()?.to_str().map(str::to_owned))
        .unwrap_or_else(|| std::env::var("PROFILE").unwrap_or_else(|_| "unknown".to_owned()));
    println!("cargo:rustc-env=FERRY_BENCH_PROFILE={profile}");
}
