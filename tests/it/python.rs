//! Python tools the tests hold the broker against (Google's Cloud Run client, the Prometheus
//! text parser), installed by the tests themselves into virtual environments under the target
//! directory and kept between runs, so they run on a fresh machine.

use std::path::{Path, PathBuf};
use std::process::Command;

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| option_env!("CARGO_TARGET_DIR").map(PathBuf::from))
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// Runs `command`, failing the test with its output if it fails; returns its stdout.
pub fn run(command: &mut Command) -> String {
    let output = command.output().expect("the command starts");
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The Python of a virtual environment named `name` with `package` (`name==version`)
/// installed; made once, then reused.
pub fn python_with(name: &str, package: &str) -> PathBuf {
    let venv = target_dir().join(name);
    let python = venv.join("bin").join("python");
    let marker = venv.join(package);
    if !marker.exists() {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
        run(Command::new(&python).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            package,
        ]));
        std::fs::write(&marker, "installed\n").expect("marker");
    }
    python
}
