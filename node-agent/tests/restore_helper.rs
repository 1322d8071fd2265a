//! Runs the real `ferry-restore-helper` binary against temporary restores directories.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use std::os::unix::fs::PermissionsExt;

use ferry_node_agent::marker;
use ferry_shared::names::RESTORE_HELPER_USER;
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, Uid};

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
        Self::spawn(
            Command::new(env!("CARGO_BIN_EXE_ferry-restore-helper")),
            restores_dir,
            args,
        )
    }

    /// Starts the helper as `user` (uid and gid, no other groups), as the restore-wait
    /// container runs it.
    fn start_as(user: u32, restores_dir: &Path, args: &[&str]) -> Self {
        let mut command = Command::new("setpriv");
        command
            .arg(format!("--reuid={user}"))
            .arg(format!("--regid={user}"))
            .args(["--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_ferry-restore-helper"));
        Self::spawn(command, restores_dir, args)
    }

    fn spawn(mut command: Command, restores_dir: &Path, args: &[&str]) -> Self {
        let mut child = command
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

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// The agent writes the markers as root; the helper, as its non-root user, must be able to
/// remove them, or `.velero` stays in the application's data for good.
#[test]
fn the_helper_removes_the_markers_as_its_non_root_user() {
    if !Uid::effective().is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs the tests as root, to write markers as the agent does"
        );
        eprintln!("skipped: only root writes markers as the agent does");
        return;
    }
    let restores = tempfile::tempdir().unwrap();
    // The helper's user must reach and list the volumes; the kubelet makes emptyDir volumes
    // 0777, and a claim's root is the restored data's (here root's, 0755).
    set_mode(restores.path(), 0o755);
    let alpha = volume(restores.path(), "alpha");
    let bravo = volume(restores.path(), "bravo");
    let charlie = volume(restores.path(), "charlie");
    set_mode(&alpha, 0o777);
    set_mode(&bravo, 0o777);
    set_mode(&charlie, 0o755);
    // A .velero that came back with the data, root's and private, is replaced.
    fs::create_dir_all(bravo.join(".velero/old")).unwrap();
    set_mode(&bravo.join(".velero"), 0o700);
    for dir in [&alpha, &bravo, &charlie] {
        marker::write_marker(dir, UID).unwrap();
    }

    let (status, output) = Helper::start_as(
        RESTORE_HELPER_USER,
        restores.path(),
        &[UID, "--timeout", "30s", "--poll-interval", "20ms"],
    )
    .finish();

    assert_eq!(status.code(), Some(0), "{output}");
    assert!(output.contains("all 3 volumes restored"), "{output}");
    for (dir, name) in [(&alpha, "alpha"), (&bravo, "bravo"), (&charlie, "charlie")] {
        assert_eq!(
            fs::read_to_string(dir.join("data.txt")).unwrap(),
            format!("contents of {name}")
        );
    }
    for dir in [&alpha, &bravo] {
        assert!(
            fs::symlink_metadata(dir.join(".velero")).is_err(),
            "{}: {output}",
            dir.display()
        );
    }
    // A volume root that the helper's user may not write keeps an empty `.velero`: the marker
    // itself is gone, and the pod starts all the same.
    assert!(!marker::marker_present(&charlie, UID), "{output}");
    assert_eq!(fs::read_dir(charlie.join(".velero")).unwrap().count(), 0);
    assert!(output.contains("cannot remove"), "{output}");
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
