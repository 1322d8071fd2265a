//! `ferry-node-agent backup` and `restore` on real repositories: local directories and the
//! test S3 server, read and written by the real restic CLI as well.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ferry_node_agent::marker;
use ferry_node_agent::transfer::{Event, Outcome};
use ferry_shared::repository::{BackupOutcome, RestoreOutcome, UNCHECKED_TLS};
use ferry_tests::restic::{restic, succeed};
use ferry_tests::s3;
use ferry_tests::scratch::Scratch;
use ferry_tests::tree::{assert_same_tree, make_files, make_rich_tree};

const PASSWORD: &str = "correct horse battery staple";

/// A local repository and a rich source tree in a scratch directory.
trait Local {
    fn repository(&self) -> String;
    fn source_with_rich_tree(&self) -> PathBuf;
}

impl Local for Scratch {
    fn repository(&self) -> String {
        self.path("repo").display().to_string()
    }

    fn source_with_rich_tree(&self) -> PathBuf {
        let source = self.path("source");
        make_rich_tree(&source, 7);
        source
    }
}

fn ferry() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ferry-node-agent"));
    command.env("NO_PROXY", "127.0.0.1,localhost");
    command
}

/// Runs ferry with `--json` and returns its output and the events it printed.
fn run_json(mut command: Command) -> (Output, Vec<Event>) {
    let output = command
        .arg("--json")
        .output()
        .expect("run ferry-node-agent");
    let events = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("{line}: {err}")))
        .collect();
    (output, events)
}

fn failure_text(output: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn backup_command(scratch: &Scratch, repository: &str, source: &Path) -> Command {
    let mut command = ferry();
    command
        .arg("backup")
        .arg("--source")
        .arg(source)
        .arg("--repository")
        .arg(repository)
        .arg("--password-file")
        .arg(scratch.password_file());
    command
}

fn restore_command(scratch: &Scratch, repository: &str, snapshot: &str, target: &Path) -> Command {
    let mut command = ferry();
    command
        .arg("restore")
        .arg("--snapshot")
        .arg(snapshot)
        .arg("--target")
        .arg(target)
        .arg("--repository")
        .arg(repository)
        .arg("--password-file")
        .arg(scratch.password_file());
    command
}

fn backed_up(command: Command) -> (BackupOutcome, Vec<Event>) {
    let (output, events) = run_json(command);
    assert!(
        output.status.success(),
        "backup failed: {}",
        failure_text(&output)
    );
    match events.last() {
        Some(Event::Completed(Outcome::Backup(outcome))) => (outcome.clone(), events),
        other => panic!("backup ended with {other:?}"),
    }
}

fn restored(command: Command) -> (RestoreOutcome, Vec<Event>) {
    let (output, events) = run_json(command);
    assert!(
        output.status.success(),
        "restore failed: {}",
        failure_text(&output)
    );
    match events.last() {
        Some(Event::Completed(Outcome::Restore(outcome))) => (outcome.clone(), events),
        other => panic!("restore ended with {other:?}"),
    }
}

fn snapshot_id(outcome: &BackupOutcome) -> String {
    outcome.snapshot_id.clone().expect("a snapshot was taken")
}

fn fails_with(mut command: Command, expected: &str) -> Output {
    let output = command.output().expect("run ferry-node-agent");
    let text = failure_text(&output);
    assert_eq!(output.status.code(), Some(1), "expected failure: {text}");
    assert!(
        text.contains(expected),
        "expected the message to contain {expected:?}, got:\n{text}"
    );
    output
}

#[test]
fn local_round_trip_keeps_data_modes_times_links_and_odd_names() {
    let scratch = Scratch::new(PASSWORD);
    let source = scratch.source_with_rich_tree();
    let repository = scratch.repository();
    let (backup, _) = backed_up(backup_command(&scratch, &repository, &source));
    assert_eq!(backup.unreadable, 0);
    let target = scratch.path("restored");
    let (restore, _) = restored(restore_command(
        &scratch,
        &repository,
        &snapshot_id(&backup),
        &target,
    ));
    assert_eq!(restore.files, backup.files);
    assert_same_tree(&source, &target);
}

#[test]
fn s3_round_trip_keeps_everything() {
    let scratch = Scratch::new(PASSWORD);
    let source = scratch.source_with_rich_tree();
    let endpoint = s3::endpoint();
    let bucket = s3::new_bucket(&endpoint);
    let repository = format!("s3:{endpoint}/{bucket}/ferry/restic/shop");
    let with_keys = |mut command: Command| {
        command
            .env("AWS_ACCESS_KEY_ID", s3::ACCESS_KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", s3::SECRET_ACCESS_KEY);
        command
    };
    let (backup, _) = backed_up(with_keys(backup_command(&scratch, &repository, &source)));
    let target = scratch.path("restored");
    restored(with_keys(restore_command(
        &scratch,
        &repository,
        &snapshot_id(&backup),
        &target,
    )));
    assert_same_tree(&source, &target);

    // The restic CLI reaches the same repository by the same identifier.
    let listed = succeed(
        restic(&repository, &scratch.password_file())
            .args(["snapshots", "--json"])
            .env("AWS_ACCESS_KEY_ID", s3::ACCESS_KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", s3::SECRET_ACCESS_KEY),
    );
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains(&snapshot_id(&backup)), "{listed}");

    // The same S3 repository, given by flags instead of an identifier.
    let target = scratch.path("restored-by-flags");
    let mut command = ferry();
    command
        .args(["restore", "--snapshot"])
        .arg(snapshot_id(&backup))
        .arg("--target")
        .arg(&target)
        .arg("--password-file")
        .arg(scratch.password_file())
        .args(["--s3-endpoint", &endpoint, "--s3-bucket", &bucket])
        .args(["--s3-prefix", "ferry/restic/shop"]);
    restored(with_keys(command));
    assert_same_tree(&source, &target);
}

#[test]
fn restic_reads_lists_checks_and_restores_what_ferry_writes() {
    let scratch = Scratch::new(PASSWORD);
    let source = scratch.source_with_rich_tree();
    let repository = scratch.repository();
    let mut command = backup_command(&scratch, &repository, &source);
    command.args([
        "--tag",
        "backup=nightly",
        "--tag",
        "ns=shop",
        "--label",
        "shop/data",
    ]);
    let (backup, _) = backed_up(command);
    let id = snapshot_id(&backup);

    let listed =
        succeed(restic(&repository, &scratch.password_file()).args(["snapshots", "--json"]));
    let snapshots: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let snapshot = &snapshots[0];
    assert_eq!(snapshot["id"], id.as_str());
    assert_eq!(snapshot["hostname"], "ferry");
    assert_eq!(snapshot["paths"], serde_json::json!(["/"]));
    let tags: Vec<&str> = snapshot["tags"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|tag| tag.as_str())
        .collect();
    assert_eq!(tags, ["backup=nightly", "ns=shop"]);

    succeed(restic(&repository, &scratch.password_file()).args(["check", "--read-data"]));

    let target = scratch.path("restic-restored");
    succeed(
        restic(&repository, &scratch.password_file())
            .args(["restore", &id, "--target"])
            .arg(&target),
    );
    assert_same_tree(&source, &target);
}

#[test]
fn ferry_restores_and_continues_what_restic_writes() {
    let scratch = Scratch::new(PASSWORD);
    let source = scratch.source_with_rich_tree();
    let repository = scratch.repository();
    succeed(restic(&repository, &scratch.password_file()).arg("init"));
    succeed(
        restic(&repository, &scratch.password_file())
            .args(["backup", "--host", "elsewhere", "."])
            .current_dir(&source),
    );
    let listed =
        succeed(restic(&repository, &scratch.password_file()).args(["snapshots", "--json"]));
    let snapshots: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let id = snapshots[0]["id"].as_str().unwrap().to_owned();

    let target = scratch.path("restored");
    restored(restore_command(&scratch, &repository, &id, &target));
    assert_same_tree(&source, &target);

    // Ferry backs up into restic's repository against restic's snapshot, reading nothing again.
    let mut command = backup_command(&scratch, &repository, &source);
    command.args(["--parent", &id]);
    let (backup, _) = backed_up(command);
    assert_eq!(backup.parent.as_deref(), Some(id.as_str()));
    assert_eq!(backup.files_new, 0, "{backup:?}");
    assert_eq!(backup.data_blobs, 0, "{backup:?}");

    // Read again in full, every file (the 3 MiB one in several chunks) cuts where restic cut.
    let mut command = backup_command(&scratch, &repository, &source);
    command.arg("--no-parent");
    let (reread, _) = backed_up(command);
    assert_eq!(reread.files_new, reread.files, "{reread:?}");
    assert_eq!(reread.data_blobs, 0, "{reread:?}");
    assert_eq!(reread.data_added, 0, "{reread:?}");
    succeed(restic(&repository, &scratch.password_file()).args(["check", "--read-data"]));
}

fn pack_count(repository: &str) -> usize {
    walkdir::WalkDir::new(Path::new(repository).join("data"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_file())
        .count()
}

#[test]
fn an_unchanged_second_backup_uses_its_parent_and_adds_no_data() {
    let scratch = Scratch::new(PASSWORD);
    let source = scratch.source_with_rich_tree();
    let repository = scratch.repository();
    let (first, _) = backed_up(backup_command(&scratch, &repository, &source));
    assert_eq!(first.parent, None, "an empty repository has no parent");
    let packs = pack_count(&repository);

    let mut command = backup_command(&scratch, &repository, &source);
    command.args(["--parent", &snapshot_id(&first)]);
    let (second, _) = backed_up(command);
    assert_eq!(second.parent, first.snapshot_id);
    assert_eq!(second.files_unmodified, second.files, "{second:?}");
    assert_eq!(second.data_added, 0, "{second:?}");
    assert_eq!(second.data_blobs, 0, "{second:?}");
    assert_eq!(
        pack_count(&repository),
        packs,
        "the second backup wrote packs"
    );
    assert_ne!(second.snapshot_id, first.snapshot_id);

    // --no-parent reads every file again, though deduplication still stores nothing new.
    let mut command = backup_command(&scratch, &repository, &source);
    command.arg("--no-parent");
    let (third, _) = backed_up(command);
    assert_eq!(third.parent, None);
    assert_eq!(third.files_unmodified, 0, "{third:?}");
    assert_eq!(third.data_added, 0, "{third:?}");
}

#[test]
fn without_a_parent_named_the_latest_snapshot_of_the_same_label_and_tags_is_the_parent() {
    let scratch = Scratch::new(PASSWORD);
    let source = scratch.source_with_rich_tree();
    let repository = scratch.repository();
    let labelled = |label: &str, tags: &[&str]| {
        let mut command = backup_command(&scratch, &repository, &source);
        command.args(["--label", label]);
        for tag in tags {
            command.args(["--tag", tag]);
        }
        backed_up(command).0
    };
    let first = labelled("shop/pvc/a", &["ns=shop"]);
    let second = labelled("shop/pvc/a", &["ns=shop"]);
    assert_eq!(second.parent, first.snapshot_id);
    assert_eq!(second.files_unmodified, second.files, "{second:?}");
    let third = labelled("shop/pvc/a", &["ns=shop"]);
    assert_eq!(
        third.parent, second.snapshot_id,
        "the latest one is the parent"
    );

    let other_label = labelled("shop/pvc/b", &["ns=shop"]);
    assert_eq!(other_label.parent, None, "{other_label:?}");
    assert_eq!(other_label.files_unmodified, 0, "{other_label:?}");
    let other_tags = labelled("shop/pvc/a", &["ns=shop", "backup=nightly"]);
    assert_eq!(other_tags.parent, None, "{other_tags:?}");
}

#[test]
fn parent_and_no_parent_exclude_each_other() {
    let scratch = Scratch::new(PASSWORD);
    let source = scratch.source_with_rich_tree();
    let mut command = backup_command(&scratch, &scratch.repository(), &source);
    command.args(["--parent", "abc", "--no-parent"]);
    let output = command.output().expect("run ferry-node-agent");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "a usage error: {stderr}");
    assert!(stderr.contains("cannot be used with"), "{stderr}");
}

fn progress_events(events: &[Event]) -> Vec<ferry_shared::repository::ProgressSnapshot> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::Progress(report) => Some(report.counters),
            _ => None,
        })
        .collect()
}

#[test]
fn progress_follows_the_interval_and_reaches_the_totals() {
    let scratch = Scratch::new(PASSWORD);
    let source = scratch.path("source");
    make_files(&source, 300, 64 * 1024, 3);
    let repository = scratch.repository();

    // An interval longer than the transfer: only the final report.
    let mut command = backup_command(&scratch, &repository, &source);
    command.args(["--progress-interval", "1h"]);
    let (backup, events) = backed_up(command);
    let reports = progress_events(&events);
    assert_eq!(reports.len(), 1, "{events:?}");
    let last = reports[0];
    assert_eq!((last.files_done, last.files_total), (300, 300));
    assert_eq!(last.bytes_done, last.bytes_total);
    assert_eq!(last.bytes_total, 300 * 64 * 1024);

    // A very short interval: reports along the way, never going backwards, ending at the totals.
    let target = scratch.path("restored");
    let mut command = restore_command(&scratch, &repository, &snapshot_id(&backup), &target);
    command.args(["--progress-interval", "1ms"]);
    let (_, events) = restored(command);
    let reports = progress_events(&events);
    assert!(reports.len() > 1, "{events:?}");
    for pair in reports.windows(2) {
        assert!(pair[0].bytes_done <= pair[1].bytes_done, "{pair:?}");
        assert!(pair[0].files_done <= pair[1].files_done, "{pair:?}");
    }
    let last = reports.last().unwrap();
    assert_eq!((last.files_done, last.files_total), (300, 300));
    assert_eq!(
        (last.bytes_done, last.bytes_total),
        (300 * 64 * 1024, 300 * 64 * 1024)
    );
}

#[test]
fn restore_with_a_restore_uid_writes_the_marker_and_the_helper_releases_the_pod() {
    let scratch = Scratch::new(PASSWORD);
    let source = scratch.source_with_rich_tree();
    let repository = scratch.repository();
    let (backup, _) = backed_up(backup_command(&scratch, &repository, &source));
    let restores = scratch.path("restores");
    let volume = restores.join("data");
    let uid = "6f1c1b9e-8f33-4a0e-9d55-0c5c7a0e2c11";
    let mut command = restore_command(&scratch, &repository, &snapshot_id(&backup), &volume);
    command.args(["--restore-uid", uid]);
    restored(command);

    let marker_dir = volume.join(".velero");
    let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&marker_dir), 0o755);
    assert_eq!(mode(&marker_dir.join(uid)), 0o644);
    assert!(marker::marker_present(&volume, uid));

    let helper = Command::new(env!("CARGO_BIN_EXE_ferry-restore-helper"))
        .arg(uid)
        .arg("--restores-dir")
        .arg(&restores)
        .args(["--timeout", "30s"])
        .output()
        .unwrap();
    assert!(helper.status.success(), "{}", failure_text(&helper));
    assert!(!marker_dir.exists(), "the helper left .velero behind");
    assert_same_tree(&source, &volume);
}

#[test]
fn an_empty_source_takes_no_snapshot() {
    let scratch = Scratch::new(PASSWORD);
    let source = scratch.path("empty");
    fs::create_dir(&source).unwrap();
    let (backup, _) = backed_up(backup_command(&scratch, &scratch.repository(), &source));
    assert_eq!(backup.snapshot_id, None);
}

#[test]
fn a_wrong_password_is_named() {
    let scratch = Scratch::new(PASSWORD);
    let source = scratch.source_with_rich_tree();
    let repository = scratch.repository();
    let (backup, _) = backed_up(backup_command(&scratch, &repository, &source));
    fs::write(scratch.password_file(), "not the password\n").unwrap();
    let target = scratch.path("restored");
    let command = restore_command(&scratch, &repository, &snapshot_id(&backup), &target);
    fails_with(command, "wrong password");
    assert!(!target.join("nested").exists());
}

#[test]
fn bad_sources_targets_snapshots_and_password_files_are_named() {
    let scratch = Scratch::new(PASSWORD);
    let source = scratch.source_with_rich_tree();
    let repository = scratch.repository();
    let (backup, _) = backed_up(backup_command(&scratch, &repository, &source));
    let id = snapshot_id(&backup);

    let missing = scratch.path("no-such-dir");
    fails_with(
        backup_command(&scratch, &repository, &missing),
        "cannot back up",
    );

    fails_with(
        restore_command(&scratch, &repository, "deadbeef", &scratch.path("t1")),
        "snapshot deadbeef was not found",
    );

    let occupied = scratch.path("occupied");
    fs::create_dir(&occupied).unwrap();
    fs::write(occupied.join("precious"), b"keep me").unwrap();
    fails_with(
        restore_command(&scratch, &repository, &id, &occupied),
        "not empty",
    );
    assert_eq!(fs::read(occupied.join("precious")).unwrap(), b"keep me");
    assert_eq!(fs::read_dir(&occupied).unwrap().count(), 1);

    fails_with(
        restore_command(
            &scratch,
            &scratch.path("no-repo").display().to_string(),
            &id,
            &scratch.path("t3"),
        ),
        "there is no repository",
    );

    fs::remove_file(scratch.password_file()).unwrap();
    fails_with(
        restore_command(&scratch, &repository, &id, &scratch.path("t2")),
        "cannot read the password file",
    );
}

#[test]
fn over_tls_the_given_ca_is_trusted_others_are_named_at_once_and_skipping_the_check_warns() {
    let scratch = Scratch::new(PASSWORD);
    let source = scratch.source_with_rich_tree();
    let tls = s3::tls();
    let bucket = s3::new_bucket(&s3::endpoint());
    let repository = format!("s3:{}/{bucket}/ferry/restic/shop", tls.endpoint);
    let with_keys = |mut command: Command| {
        command
            .env("AWS_ACCESS_KEY_ID", s3::ACCESS_KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", s3::SECRET_ACCESS_KEY);
        command
    };
    let trusting = |mut command: Command, ca: &Path| {
        command.arg("--s3-ca-cert").arg(ca);
        with_keys(command)
    };

    let backup = backup_command(&scratch, &repository, &source);
    let (backup, _) = backed_up(trusting(backup, &tls.ca));
    let target = scratch.path("restored");
    let restore = restore_command(&scratch, &repository, &snapshot_id(&backup), &target);
    restored(trusting(restore, &tls.ca));
    assert_same_tree(&source, &target);
    // restic trusts the same CA for the same repository.
    succeed(
        restic(&repository, &scratch.password_file())
            .arg("--cacert")
            .arg(&tls.ca)
            .arg("check")
            .env("AWS_ACCESS_KEY_ID", s3::ACCESS_KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", s3::SECRET_ACCESS_KEY),
    );

    // Without the CA, or with another, the certificate is named, and never waited on: the
    // retry budget is the default five minutes.
    let untrusted = [
        with_keys(backup_command(&scratch, &repository, &source)),
        trusting(
            backup_command(&scratch, &repository, &source),
            &tls.other_ca,
        ),
    ];
    for mut command in untrusted {
        command.arg("--json");
        let output = fails_with(command, "certificate was not trusted");
        let text = failure_text(&output);
        assert!(text.contains("--s3-ca-cert"), "{text}");
        assert!(!text.contains("\"event\":\"waiting\""), "retried: {text}");
    }

    let mut unchecked = with_keys(backup_command(&scratch, &repository, &source));
    let output = unchecked
        .arg("--s3-insecure-skip-tls-verify")
        .output()
        .unwrap();
    let warned = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{}", failure_text(&output));
    assert!(warned.contains(UNCHECKED_TLS), "{warned}");

    let bad = scratch.path("not-a-ca.pem");
    fs::write(&bad, "not a certificate").unwrap();
    let output = trusting(backup_command(&scratch, &repository, &source), &bad)
        .output()
        .unwrap();
    let text = failure_text(&output);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("holds no PEM certificate"), "{text}");
}

#[test]
fn an_unreachable_object_store_is_named_with_its_cause() {
    let scratch = Scratch::new(PASSWORD);
    let source = scratch.source_with_rich_tree();
    // Nothing listens on port 9 of the loopback address.
    let mut command = backup_command(&scratch, "s3:http://127.0.0.1:9/bucket/repo", &source);
    command
        .args(["--storage-retry-budget", "0s"])
        .env("AWS_ACCESS_KEY_ID", s3::ACCESS_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", s3::SECRET_ACCESS_KEY);
    let output = fails_with(command, "s3:http://127.0.0.1:9/bucket/repo");
    let text = failure_text(&output).to_lowercase();
    assert!(
        text.contains("connect") || text.contains("refused"),
        "the connection failure is not named: {text}"
    );
}

/// The command as one line of shell, every argument quoted.
fn shell_line(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|arg| format!("'{}'", arg.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `script` in a private mount namespace where `dir` is a tiny tmpfs. Returns None when
/// this machine cannot do that (not root, no namespaces); CI must be able to.
fn on_tiny_filesystem(dir: &Path, size: &str, script: &str) -> Option<Output> {
    fs::create_dir_all(dir).unwrap();
    let full = format!(
        "mount -t tmpfs -o size={size} ferry-test '{}' && {script}",
        dir.display()
    );
    let probe = Command::new("unshare")
        .args([
            "--mount",
            "sh",
            "-c",
            "mount -t tmpfs -o size=1m probe /mnt",
        ])
        .output();
    if !probe.is_ok_and(|output| output.status.success()) {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must be able to mount a tmpfs in a private mount namespace"
        );
        eprintln!("skipped: cannot mount a small filesystem here");
        return None;
    }
    Some(
        Command::new("unshare")
            .args(["--mount", "sh", "-c", &full])
            .output()
            .unwrap(),
    )
}

#[test]
fn a_full_disk_fails_the_restore_without_a_marker() {
    let scratch = Scratch::new(PASSWORD);
    let source = scratch.path("source");
    make_files(&source, 4, 1024 * 1024, 5);
    let repository = scratch.repository();
    let (backup, _) = backed_up(backup_command(&scratch, &repository, &source));
    let mount = scratch.path("small");
    let target = mount.join("volume");
    let command = restore_command(&scratch, &repository, &snapshot_id(&backup), &target);
    let script = format!(
        "{} --restore-uid abc; echo exit=$?; ls -a '{}'",
        shell_line(&command),
        target.display(),
    );
    let Some(output) = on_tiny_filesystem(&mount, "1m", &script) else {
        return;
    };
    let text = failure_text(&output);
    assert!(text.contains("exit=1"), "{text}");
    assert!(text.contains("No space left on device"), "{text}");
    assert!(!text.contains(".velero"), "a marker was written: {text}");
}

#[test]
fn a_full_repository_disk_saves_no_snapshot() {
    let scratch = Scratch::new(PASSWORD);
    let source = scratch.path("source");
    make_files(&source, 4, 1024 * 1024, 6);
    let mount = scratch.path("small");
    let repository = mount.join("repo");
    let command = backup_command(&scratch, &repository.display().to_string(), &source);
    let script = format!(
        "{}; echo exit=$?; echo snapshots=$(ls '{}/snapshots' 2>/dev/null | wc -l)",
        shell_line(&command),
        repository.display(),
    );
    let Some(output) = on_tiny_filesystem(&mount, "2m", &script) else {
        return;
    };
    let text = failure_text(&output);
    assert!(text.contains("exit=1"), "{text}");
    assert!(text.contains("snapshots=0"), "{text}");
    assert!(
        text.contains("no snapshot was saved") || text.contains("cannot create"),
        "{text}"
    );
}

#[test]
fn unreadable_files_are_counted_and_named() {
    let scratch = Scratch::new(PASSWORD);
    let source = scratch.path("source");
    make_files(&source, 5, 1000, 8);
    let hidden = source.join("d0/unreadable");
    fs::write(&hidden, b"nobody may read this").unwrap();
    fs::set_permissions(&hidden, fs::Permissions::from_mode(0o000)).unwrap();

    let mut command = backup_command(&scratch, &scratch.repository(), &source);
    if nix::unistd::Uid::effective().is_root() {
        // Root reads everything; run the backup as nobody instead.
        for path in [scratch.root().to_owned(), source.clone()] {
            fs::set_permissions(&path, fs::Permissions::from_mode(0o777)).unwrap();
        }
        for entry in walkdir::WalkDir::new(&source).min_depth(1) {
            let entry = entry.unwrap();
            if entry.path() != hidden {
                let mode = if entry.file_type().is_dir() {
                    0o755
                } else {
                    0o644
                };
                fs::set_permissions(entry.path(), fs::Permissions::from_mode(mode)).unwrap();
            }
        }
        fs::set_permissions(scratch.password_file(), fs::Permissions::from_mode(0o644)).unwrap();
        let mut as_nobody = Command::new("setpriv");
        as_nobody
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(command.get_program())
            .args(command.get_args());
        command = as_nobody;
    }
    let (backup, events) = backed_up(command);
    assert_eq!(backup.unreadable, 1, "{backup:?}");
    assert!(backup.snapshot_id.is_some());
    let warnings: Vec<&String> = events
        .iter()
        .filter_map(|event| match event {
            Event::Warning { message } => Some(message),
            _ => None,
        })
        .collect();
    assert!(
        warnings
            .iter()
            .any(|message| message.contains("unreadable")),
        "{warnings:?}"
    );
}

#[test]
fn a_transfer_over_its_memory_limit_fails_alone_and_says_so() {
    let scratch = Scratch::new(PASSWORD);
    let source = scratch.source_with_rich_tree();
    let repository = scratch.repository();
    let (backup, _) = backed_up(backup_command(&scratch, &repository, &source));
    let target = scratch.path("restored");
    let mut command = restore_command(&scratch, &repository, &snapshot_id(&backup), &target);
    command.args(["--memory-limit", "16Mi"]);
    fails_with(command, "ran out of memory");
}

#[test]
fn a_terminated_backup_stops_its_transfer_and_saves_no_snapshot() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let scratch = Scratch::new(PASSWORD);
    let source = scratch.path("source");
    make_files(&source, 64, 1024 * 1024, 9);
    let repository = scratch.repository();
    let mut command = backup_command(&scratch, &repository, &source);
    let mut child = command
        .args(["--progress-interval", "1ms", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        let event: Event = serde_json::from_str(&line.unwrap()).unwrap();
        if let Event::Progress(report) = event
            && report.counters.bytes_done > 0
        {
            break;
        }
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    // Keep reading, as a terminal would, until the command ends.
    lines.for_each(drop);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cancelled"), "{stderr}");
    let snapshots = Path::new(&repository).join("snapshots");
    assert_eq!(fs::read_dir(snapshots).unwrap().count(), 0);
}

#[test]
fn init_creates_a_repository_once_that_restic_opens() {
    let scratch = Scratch::new(PASSWORD);
    let repository = scratch.repository();
    let init = || {
        let mut command = ferry();
        command
            .args(["init", "--repository", &repository, "--password-file"])
            .arg(scratch.password_file());
        command.output().unwrap()
    };
    let first = init();
    assert!(first.status.success(), "{}", failure_text(&first));
    assert!(failure_text(&first).contains("created the repository"));
    let second = init();
    assert!(second.status.success(), "{}", failure_text(&second));
    assert!(failure_text(&second).contains("exists already"));
    let keys: Vec<_> = fs::read_dir(Path::new(&repository).join("keys"))
        .unwrap()
        .collect();
    assert_eq!(keys.len(), 1, "one key, Ferry's own");
    succeed(restic(&repository, &scratch.password_file()).args(["snapshots"]));
}

/// The names in `target` that are restore claims.
fn claims_in(target: &Path) -> Vec<String> {
    fs::read_dir(target)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".ferry-restore-"))
        .collect()
}

/// Kills the command's whole process group (the CLI and its transfer child) as soon as it has
/// restored some bytes, and waits until no process of the group is left.
fn kill_while_restoring(mut command: Command) {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;

    use nix::sys::signal::{Signal, killpg};
    use nix::unistd::Pid;

    let mut child = command
        .args(["--progress-interval", "1ms", "--json"])
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let group = Pid::from_raw(child.id() as i32);
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines {
        let event: Event = serde_json::from_str(&line.unwrap()).unwrap();
        if let Event::Progress(report) = event
            && report.counters.bytes_done > 0
        {
            break;
        }
    }
    killpg(group, Signal::SIGKILL).unwrap();
    child.wait().unwrap();
    // The transfer child is not this test's to wait for; it is gone once the group is empty
    // (or only a zombie is left, which writes nothing).
    for _ in 0..500 {
        if killpg(group, None).is_err() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn a_killed_restore_is_refused_then_finished_with_resume() {
    let scratch = Scratch::new(PASSWORD);
    let source = scratch.path("source");
    make_files(&source, 200, 256 * 1024, 12);
    let repository = scratch.repository();
    let (backup, _) = backed_up(backup_command(&scratch, &repository, &source));
    let id = snapshot_id(&backup);
    let target = scratch.path("restored");

    kill_while_restoring(restore_command(&scratch, &repository, &id, &target));
    assert_eq!(
        claims_in(&target),
        [format!(".ferry-restore-{id}")],
        "the restore was not caught in the middle"
    );

    let refused = fails_with(
        restore_command(&scratch, &repository, &id, &target),
        "--resume",
    );
    assert!(
        failure_text(&refused).contains("interrupted restore of this snapshot"),
        "{}",
        failure_text(&refused)
    );

    let mut command = restore_command(&scratch, &repository, &id, &target);
    command.arg("--resume");
    let (restore, _) = restored(command);
    assert_eq!(restore.files, 200);
    assert_same_tree(&source, &target);
    assert!(claims_in(&target).is_empty());
}

#[test]
fn a_restore_stopped_by_a_full_disk_finishes_with_resume_once_there_is_room() {
    let scratch = Scratch::new(PASSWORD);
    let source = scratch.path("source");
    make_files(&source, 4, 1024 * 1024, 13);
    let repository = scratch.repository();
    let (backup, _) = backed_up(backup_command(&scratch, &repository, &source));
    let mount = scratch.path("small");
    let target = mount.join("volume");
    let copy = scratch.path("copy");
    let command = restore_command(&scratch, &repository, &snapshot_id(&backup), &target);
    // The tmpfs lives only in the script's mount namespace: the script keeps a copy.
    let script = format!(
        "{restore}; echo first=$?; mount -o remount,size=16m ferry-test '{mount}' && {restore} --resume; echo second=$?; ls -a '{target}'; cp -a '{target}' '{copy}'",
        restore = shell_line(&command),
        mount = mount.display(),
        target = target.display(),
        copy = copy.display(),
    );
    let Some(output) = on_tiny_filesystem(&mount, "1m", &script) else {
        return;
    };
    let text = failure_text(&output);
    assert!(text.contains("first=1"), "{text}");
    assert!(text.contains("the disk is full (ENOSPC"), "{text}");
    assert!(text.contains("second=0"), "{text}");
    assert!(
        !text.contains(".ferry-restore-"),
        "a claim was left: {text}"
    );
    assert_same_tree(&source, &copy);
}

#[test]
fn a_retry_after_the_marker_was_written_keeps_the_data_and_releases_the_claim() {
    let scratch = Scratch::new(PASSWORD);
    let source = scratch.source_with_rich_tree();
    let repository = scratch.repository();
    let (backup, _) = backed_up(backup_command(&scratch, &repository, &source));
    let id = snapshot_id(&backup);
    let volume = scratch.path("volume");
    let uid = "0f6b3c59-1f0e-4b7e-a1a4-5f1f6c1d2e3f";
    let mut command = restore_command(&scratch, &repository, &id, &volume);
    command.args(["--restore-uid", uid]);
    restored(command);

    // As if the first attempt died between writing the marker and removing its claim, and the
    // application had started meanwhile.
    fs::write(
        volume.join(format!(".ferry-restore-{id}")),
        format!("{id}\n"),
    )
    .unwrap();
    fs::write(volume.join("written-by-the-application"), b"new data").unwrap();
    let mut command = restore_command(&scratch, &repository, &id, &volume);
    command.args(["--restore-uid", uid, "--resume"]);
    let (restore, _) = restored(command);
    assert_eq!(restore.files, backup.files);

    assert!(claims_in(&volume).is_empty());
    assert!(marker::marker_present(&volume, uid));
    assert_eq!(
        fs::read(volume.join("written-by-the-application")).unwrap(),
        b"new data"
    );
    fs::remove_file(volume.join("written-by-the-application")).unwrap();
    marker::remove_marker_dir(&volume).unwrap();
    assert_same_tree(&source, &volume);
}
