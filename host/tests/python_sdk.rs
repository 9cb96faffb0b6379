//! The gateway driven by the official MCP Python SDK (`tests/python/`) against this
//! build's `ww-memory`: built by the same `cargo test` as every other test, so the binary
//! is never compiled twice. `make test` creates the SDK's virtual environment first.

use std::path::Path;
use std::process::Command;

#[test]
fn the_official_python_sdk_drives_the_gateway() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join("target/py-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: `make test` (or `make py-venv`) creates it",
        python.display()
    );
    let out = Command::new(&python)
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/python",
        ])
        .current_dir(&root)
        .env("WW_MEMORY_BIN", env!("CARGO_BIN_EXE_ww-memory"))
        .output()
        .expect("run pytest");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the Python SDK tests failed:\n{report}"
    );
    // Say what ran, so a passing run is visible as such (`cargo test -- --nocapture`).
    println!("{}", report.lines().last().unwrap_or_default());
}
