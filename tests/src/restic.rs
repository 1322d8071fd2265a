//! Runs the real restic CLI against a repository, as a user would.

use std::path::Path;
use std::process::{Command, Output};

/// The restic CLI, or a panic that says how to install it.
pub fn restic(repository: &str, password_file: &Path) -> Command {
    let found = Command::new("restic").arg("version").output();
    assert!(
        found.is_ok_and(|output| output.status.success()),
        "the restic CLI is needed: apt-get install restic (.ci/run installs it)"
    );
    let mut command = Command::new("restic");
    command
        .arg("--repo")
        .arg(repository)
        .arg("--password-file")
        .arg(password_file)
        .arg("--no-cache")
        .env_remove("RESTIC_REPOSITORY")
        .env_remove("RESTIC_PASSWORD");
    command
}

/// Runs the command and panics with its output unless it succeeded.
pub fn succeed(command: &mut Command) -> Output {
    let output = command.output().expect("run restic");
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}
