//! Runs the real `ferry-restore-helper` binary against temporary restores directories.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use ferry_node_agent::marker;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const UID: &str = "6f3c2a4e-9d1b-4c7a-8e5f-0a1b2c3d4e5f";
/// Only a guard against a hung test; no assertion depends on how fast the helper is.
const GUARD: Duration = Duration::from_secs(60);

struct Helper {
    child: Child,
    lines: Receiver<String>,
    output: Vec<String>,
}

impl Helper {
    fn start(restores_dir: &Path, args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ferry-restore-helper"))
            .arg("--restores-dir")
            .arg(restores_dir)
            .args(args)
            .env_remove("FERRY_RESTORES_DIR")
            .env_remove("FERRY_RESTORE_TIMEOUT")
            .env_remove("FERRY_RESTORE_POLL_INTERVAL")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        for stream in [Box::new(stdout) as Box<dyn Read + Send>, Box::new(stderr)] {
            let tx = tx.clone();
            thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Self {
            child,
            lines,
            output: Vec::new(),
        }
    }

    /// Waits for an output line that matches, and fails if the helper exits first.
    fn wait_for_line(&mut self, matches: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + GUARD;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = matches(&line);
                    self.output.push(line);
                    if found {
                        return;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("the helper ended first:\n{}", self.output.join("\n"))
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.child.kill().unwrap();
                    panic!("no matching line:\n{}", self.output.join("\n"));
                }
            }
        }
    }

    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "the helper exited ({status}) while it should wait:\n{}",
                self.output.join("\n")
            );
        }
    }

    /// Waits for the exit, and returns its status and all the output.
    fn finish(mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + GUARD;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                self.child.kill().unwrap();
                panic!("the helper did not exit:\n{}", self.output.join("\n"));
            }
            thread::sleep(Duration::from_millis(20));
        };
        self.output.extend(self.lines.iter());
        (status, self.output.join("\n"))
    }
}

fn volume(restores: &Path, name: &str) -> std::path::PathBuf {
    let dir = restores.join(name);
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("data.txt"), format!("contents of {name}")).unwrap();
    dir
}

#[test]
fn waits_for_every_marker_then_cleans_up() {
    let restores = tempfile::tempdir().unwrap();
    let alpha = volume(restores.path(), "alpha");
    let bravo = volume(restores.path(), "bravo");
    let mut helper = Helper::start(
        restores.path(),
        &[UID, "--poll-interval", "20ms", "--timeout", "10m"],
    );

    helper.wait_for_line(|line| line.contains("alpha, bravo"));
    helper.assert_running();

    marker::write_marker(&alpha, UID).unwrap();
    helper.wait_for_line(|line| line.contains("waiting for 1 of 2 volumes: bravo"));
    helper.assert_running();

    marker::write_marker(&bravo, UID).unwrap();
    let (status, output) = helper.finish();

    assert_eq!(status.code(), Some(0), "{output}");
    assert!(output.contains("all 2 volumes restored"), "{output}");
    for (dir, name) in [(&alpha, "alpha"), (&bravo, "bravo")] {
        assert!(fs::symlink_metadata(dir.join(".velero")).is_err(), "{name}");
        assert_eq!(
            fs::read_to_string(dir.join("data.txt")).unwrap(),
            format!("contents of {name}")
        );
    }
}

#[test]
fn times_out_naming_only_the_missing_volume() {
    let restores = tempfile::tempdir().unwrap();
    let alpha = volume(restores.path(), "alpha");
    volume(restores.path(), "bravo");
    marker::write_marker(&alpha, UID).unwrap();

    let (status, output) = Helper::start(
        restores.path(),
        &[UID, "--timeout", "1s", "--poll-interval", "50ms"],
    )
    .finish();

    assert_eq!(status.code(), Some(1), "{output}");
    assert!(output.contains("timed out"), "{output}");
    assert!(output.contains("bravo"), "{output}");
    assert!(!output.contains("alpha"), "{output}");
    assert!(marker::marker_present(&alpha, UID), "no cleanup on timeout");
}

#[test]
fn a_marker_of_another_restore_does_not_count() {
    let restores = tempfile::tempdir().unwrap();
    let alpha = volume(restores.path(), "alpha");
    marker::write_marker(&alpha, "11111111-2222-3333-4444-555555555555").unwrap();

    let (status, output) = Helper::start(
        restores.path(),
        &[UID, "--timeout", "1s", "--poll-interval", "50ms"],
    )
    .finish();

    assert_eq!(status.code(), Some(1), "{output}");
    assert!(output.contains("alpha"), "{output}");
    assert!(marker::marker_present(
        &alpha,
        "11111111-2222-3333-4444-555555555555"
    ));
}

#[test]
fn a_missing_restores_dir_is_a_setup_error() {
    let parent = tempfile::tempdir().unwrap();
    let missing = parent.path().join("restores");

    let (status, output) = Helper::start(&missing, &[UID]).finish();

    assert_eq!(status.code(), Some(2), "{output}");
    assert!(
        output.contains(&format!(
            "cannot read the restores directory {}",
            missing.display()
        )),
        "{output}"
    );
}

#[test]
fn no_volumes_means_nothing_to_wait_for() {
    let restores = tempfile::tempdir().unwrap();
    let (status, output) = Helper::start(restores.path(), &[UID]).finish();
    assert_eq!(status.code(), Some(0), "{output}");
    assert!(output.contains("nothing to wait for"), "{output}");
}

#[test]
fn an_unsafe_restore_uid_is_rejected() {
    let restores = tempfile::tempdir().unwrap();
    let (status, output) = Helper::start(restores.path(), &["../escape"]).finish();
    assert_eq!(status.code(), Some(2), "{output}");
    assert!(output.contains("invalid restore UID"), "{output}");
}

#[test]
fn sigterm_ends_the_wait() {
    let restores = tempfile::tempdir().unwrap();
    volume(restores.path(), "alpha");
    let mut helper = Helper::start(restores.path(), &[UID, "--poll-interval", "20ms"]);
    helper.wait_for_line(|line| line.contains("waiting for 1 of 1 volume: alpha"));

    let pid = Pid::from_raw(i32::try_from(helper.child.id()).unwrap());
    kill(pid, Signal::SIGTERM).unwrap();
    let (status, output) = helper.finish();

    assert_eq!(status.code(), Some(128 + 15), "{output}");
}
