//! `ferry-node-agent backup` and `restore` while the object store is out of reach: the test S3
//! server behind a fault-injecting front that drops and refuses connections, or answers
//! `503 SlowDown`. What Ferry writes through an outage is checked by the real restic CLI, read
//! straight from the server.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use ferry_node_agent::transfer::{Event, Outcome};
use ferry_shared::retry::StoreWait;
use ferry_tests::fault::FaultyFront;
use ferry_tests::restic::{restic, succeed};
use ferry_tests::s3;
use ferry_tests::scratch::Scratch;
use ferry_tests::tree::{assert_same_tree, make_files, make_rich_tree};

const PASSWORD: &str = "correct horse battery staple";

/// An outage as long as the one measured against restic.
const OUTAGE: Duration = Duration::from_secs(20);

/// A repository in a new bucket of the test S3 server, reached through `endpoint`.
fn repository(endpoint: &str, bucket: &str) -> String {
    format!("s3:{endpoint}/{bucket}/ferry/restic/shop")
}

fn ferry(scratch: &Scratch, repository: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ferry-node-agent"));
    command
        .args(args)
        .arg("--repository")
        .arg(repository)
        .arg("--password-file")
        .arg(scratch.password_file())
        .args(["--json", "--progress-interval", "100ms"])
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("AWS_ACCESS_KEY_ID", s3::ACCESS_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", s3::SECRET_ACCESS_KEY);
    command
}

/// How a run of ferry ended, with every event it printed.
struct Run {
    status: ExitStatus,
    events: Vec<Event>,
    stderr: String,
}

impl Run {
    fn waits(&self) -> Vec<&StoreWait> {
        self.events
            .iter()
            .filter_map(|event| match event {
                Event::Waiting(wait) => Some(wait),
                _ => None,
            })
            .collect()
    }

    fn completed(&self) -> &Outcome {
        match self.events.last() {
            Some(Event::Completed(outcome)) if self.status.success() => outcome,
            _ => panic!("the transfer did not complete: {self}"),
        }
    }

    fn failure(&self) -> &str {
        match self.events.last() {
            Some(Event::Failed { message, .. }) if !self.status.success() => message,
            _ => panic!("the transfer did not fail: {self}"),
        }
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}; last event {:?}", self.status, self.events.last())?;
        write!(f, "; stderr: {}", self.stderr)
    }
}

/// When a run calls its trigger.
#[derive(Clone, Copy)]
enum At {
    /// At the first progress report: the transfer has begun and is far from its end.
    Start,
    /// At the first progress report with bytes moved: the transfer is under way.
    Moving,
}

/// Runs `command`, calling `trigger` once, `at` the given point of its progress.
fn run(mut command: Command, at: At, trigger: impl FnOnce()) -> Run {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ferry-node-agent");
    let mut stderr = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut trigger = Some(trigger);
    let mut events = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        let event: Event =
            serde_json::from_str(&line).unwrap_or_else(|err| panic!("{line}: {err}"));
        if let Event::Progress(report) = &event
            && (matches!(at, At::Start) || report.counters.bytes_done > 0)
            && let Some(trigger) = trigger.take()
        {
            trigger();
        }
        events.push(event);
    }
    Run {
        status: child.wait().unwrap(),
        events,
        stderr: stderr.join().unwrap(),
    }
}

fn text(path: &Path) -> String {
    path.display().to_string()
}

fn snapshot_id(run: &Run) -> String {
    match run.completed() {
        Outcome::Backup(backup) => backup.snapshot_id.clone().expect("a snapshot"),
        Outcome::Restore(_) => panic!("not a backup"),
    }
}

/// The restic CLI on the repository, straight at the test S3 server.
fn restic_on_server(scratch: &Scratch, bucket: &str) -> Command {
    let mut command = restic(
        &repository(&s3::endpoint(), bucket),
        &scratch.password_file(),
    );
    command
        .env("AWS_ACCESS_KEY_ID", s3::ACCESS_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", s3::SECRET_ACCESS_KEY);
    command
}

fn assert_waited_through_the_outage(run: &Run, what: &str) {
    assert!(
        !run.waits().is_empty(),
        "the {what} never waited: the outage began after it ended; {run}"
    );
    let shown = run.events.iter().any(|event| {
        matches!(event, Event::Progress(report)
        if report.waiting.as_ref().is_some_and(|wait| {
            wait.to_string().starts_with("waiting for the object store: ")
        }))
    });
    assert!(shown, "no progress report showed the wait: {run}");
}

#[test]
fn a_backup_and_a_restore_ride_out_an_outage_of_the_object_store() {
    let scratch = Scratch::new(PASSWORD);
    let source = scratch.path("source");
    make_files(&source, 300, 512 * 1024, 41);
    let front = FaultyFront::for_test_s3();
    let bucket = s3::new_bucket(&s3::endpoint());
    let through_front = repository(&front.endpoint(), &bucket);

    let backup = ferry(
        &scratch,
        &through_front,
        &["backup", "--source", &text(&source)],
    );
    let backed_up = run(backup, At::Moving, || front.outage(OUTAGE));
    let snapshot = snapshot_id(&backed_up);
    assert_waited_through_the_outage(&backed_up, "backup");
    succeed(restic_on_server(&scratch, &bucket).args(["check", "--read-data"]));

    let target = scratch.path("restored");
    let mut restore = ferry(
        &scratch,
        &through_front,
        &["restore", "--snapshot", &snapshot],
    );
    restore.arg("--target").arg(&target);
    let restored = run(restore, At::Start, || front.outage(OUTAGE));
    restored.completed();
    assert_waited_through_the_outage(&restored, "restore");
    assert_same_tree(&source, &target);
}

#[test]
fn a_burst_of_slow_down_answers_is_retried() {
    let scratch = Scratch::new(PASSWORD);
    let source = scratch.path("source");
    make_rich_tree(&source, 5);
    let front = FaultyFront::for_test_s3();
    let bucket = s3::new_bucket(&s3::endpoint());
    front.slow_down(3);
    let backup = ferry(
        &scratch,
        &repository(&front.endpoint(), &bucket),
        &["backup", "--source", &text(&source)],
    );
    let backed_up = run(backup, At::Start, || {});
    let snapshot = snapshot_id(&backed_up);
    assert_eq!(front.slowed_down(), 3);
    let throttled = backed_up
        .waits()
        .into_iter()
        .filter(|wait| wait.cause.contains("HTTP 503"))
        .count();
    assert_eq!(throttled, 3, "{:?}", backed_up.waits());
    let listed = succeed(restic_on_server(&scratch, &bucket).args(["snapshots", "--json"]));
    assert!(String::from_utf8_lossy(&listed.stdout).contains(&snapshot));
}

#[test]
fn an_outage_longer_than_the_budget_fails_naming_it_and_saves_no_snapshot() {
    let scratch = Scratch::new(PASSWORD);
    let source = scratch.path("source");
    make_files(&source, 200, 512 * 1024, 43);
    let front = FaultyFront::for_test_s3();
    let bucket = s3::new_bucket(&s3::endpoint());
    let backup = ferry(
        &scratch,
        &repository(&front.endpoint(), &bucket),
        &[
            "backup",
            "--storage-retry-budget",
            "3s",
            "--source",
            &text(&source),
        ],
    );
    let failed = run(backup, At::Moving, || {
        front.outage(Duration::from_secs(600))
    });
    let message = failed.failure();
    assert!(message.contains("no snapshot was saved"), "{message}");
    assert!(message.contains("(the storage retry budget)"), "{message}");
    assert!(!failed.waits().is_empty(), "{failed}");

    let listed = succeed(restic_on_server(&scratch, &bucket).args(["snapshots", "--json"]));
    assert_eq!(String::from_utf8_lossy(&listed.stdout).trim(), "[]");
    succeed(restic_on_server(&scratch, &bucket).arg("check"));
}

#[test]
fn a_wrong_secret_key_fails_at_once_with_the_cause() {
    let scratch = Scratch::new(PASSWORD);
    let source = scratch.path("source");
    make_rich_tree(&source, 6);
    let auth = s3::auth();
    let prefix = format!("outage-{}", std::process::id());
    let repository = format!("s3:{}/{}/{prefix}/repo", auth.endpoint, auth.bucket);
    let backup = |secret: &str| {
        let mut command = ferry(
            &scratch,
            &repository,
            &["backup", "--source", &text(&source)],
        );
        command
            .env("AWS_ACCESS_KEY_ID", &auth.access_key_id)
            .env("AWS_SECRET_ACCESS_KEY", secret);
        run(command, At::Start, || {})
    };
    snapshot_id(&backup(&auth.secret_access_key));

    let refused = backup("not-the-secret");
    let message = refused.failure();
    assert!(message.contains("PermissionDenied"), "{message}");
    assert!(message.contains("check the access key"), "{message}");
    assert!(refused.waits().is_empty(), "{:?}", refused.waits());
}
