//! Runs the browser tests (tests/browser, Node's test runner driving Debian's Chromium) against
//! the binary cargo just built. Screenshots go to target/screenshots.

use std::path::Path;
use std::process::Command;

#[test]
fn browser_tests_pass_in_chromium() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("tests/browser");
    if !dir.join("node_modules/playwright-core").exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .expect("npm runs");
        assert!(status.success(), "npm ci failed");
    }
    let output = Command::new("node")
        .args([
            "--test",
            "--test-concurrency=1",
            "ui.test.mjs",
            "fresh.test.mjs",
            "interop.test.mjs",
        ])
        .current_dir(&dir)
        .env("BREAKGLASS_BIN", env!("CARGO_BIN_EXE_breakglass-broker"))
        .env("SCREENSHOT_DIR", root.join("target/screenshots"))
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "browser tests failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("# pass 4") && stdout.contains("# fail 0"),
        "expected 4 passing browser tests:\n{stdout}"
    );
}
