//! The restore helper: the first init container of every restored pod.
//!
//! Each restored volume is mounted at `<restores dir>/<volume>`. The helper polls until every
//! directory there holds the done-marker of its restore (see [`crate::marker`]), removes the
//! markers and exits 0, so the application starts only on restored data. Unlike Velero's helper it
//! gives up after `--timeout` and names the volumes that never got their marker.
//!
//! Exit codes: [`EXIT_RESTORED`], [`EXIT_TIMED_OUT`], [`EXIT_SETUP`] (also clap's code for bad
//! arguments). After SIGTERM or SIGINT it exits with 128 + the signal number.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use nix::sys::signal::{SigSet, Signal};
use tracing::{error, info, warn};

use crate::marker;

/// Every volume got its marker.
pub const EXIT_RESTORED: u8 = 0;
/// The timeout passed while some volumes still had no marker.
pub const EXIT_TIMED_OUT: u8 = 1;
/// The restores directory cannot be read, or the arguments are wrong.
pub const EXIT_SETUP: u8 = 2;

/// While nothing changes, the volumes still missing are logged this often.
pub const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Waits until the node agent has restored every volume of this pod, then lets it start.
#[derive(Debug, Parser)]
#[command(name = "ferry-restore-helper", version)]
pub struct Args {
    /// UID of the Restore whose done-markers to wait for.
    #[arg(value_parser = parse_restore_uid)]
    pub restore_uid: String,

    /// Directory whose subdirectories are the restored volumes.
    #[arg(long, env = "FERRY_RESTORES_DIR", default_value = "/restores")]
    pub restores_dir: PathBuf,

    /// Give up after this long (e.g. `30m`, `4h`) and exit 1. The default is Velero's default
    /// budget for the pod volume transfers of a whole restore.
    #[arg(long, env = "FERRY_RESTORE_TIMEOUT", default_value = "4h", value_parser = humantime::parse_duration)]
    pub timeout: Duration,

    /// How often to look for the markers.
    #[arg(long, env = "FERRY_RESTORE_POLL_INTERVAL", default_value = "1s", value_parser = parse_poll_interval)]
    pub poll_interval: Duration,
}

fn parse_restore_uid(value: &str) -> Result<String, String> {
    marker::validate_restore_uid(value)
        .map(|()| value.to_owned())
        .map_err(|err| err.to_string())
}

fn parse_poll_interval(value: &str) -> Result<Duration, String> {
    match humantime::parse_duration(value) {
        Ok(interval) if interval.is_zero() => Err("must be longer than zero".to_owned()),
        Ok(interval) => Ok(interval),
        Err(err) => Err(err.to_string()),
    }
}

/// What one look at the restores directory found. Names are sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// Volumes that hold the marker.
    pub ready: Vec<String>,
    /// Volumes that do not hold it (yet).
    pub missing: Vec<String>,
    /// Why some of the missing volumes could not be checked, one line each.
    pub errors: Vec<String>,
}

impl Status {
    pub fn is_done(&self) -> bool {
        self.missing.is_empty()
    }

    pub fn total(&self) -> usize {
        self.ready.len() + self.missing.len()
    }
}

/// Looks once for the marker of `restore_uid` in every directory directly under `restores_dir`.
/// Entries that are not directories are not volumes, and are skipped.
pub fn check(restores_dir: &Path, restore_uid: &str) -> io::Result<Status> {
    let mut status = Status::default();
    for entry in fs::read_dir(restores_dir)? {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        match marker::probe_marker(&entry.path(), restore_uid) {
            Ok(true) => status.ready.push(name),
            Ok(false) => status.missing.push(name),
            Err(err) => {
                status.errors.push(format!("{name}: {err}"));
                status.missing.push(name);
            }
        }
    }
    status.ready.sort();
    status.missing.sort();
    status.errors.sort();
    Ok(status)
}

/// Time as the wait loop sees it, so tests can run it without sleeping.
pub trait Clock {
    fn now(&self) -> Instant;
    fn sleep(&mut self, duration: Duration);
}

/// The real clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&mut self, duration: Duration) {
        std::thread::sleep(duration);
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub poll_interval: Duration,
    pub timeout: Duration,
    pub report_every: Duration,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Restored(Status),
    TimedOut(Status),
}

/// Checks every `poll_interval` until all volumes hold the marker or `timeout` has passed; the
/// last check happens at the deadline. An error reading the restores directory ends the wait.
pub fn wait_for_markers(
    restores_dir: &Path,
    restore_uid: &str,
    timing: &Timing,
    clock: &mut impl Clock,
) -> io::Result<Outcome> {
    // A timeout too large for an Instant means no deadline at all.
    let deadline = clock.now().checked_add(timing.timeout);
    let mut reporter = Reporter::new(timing.report_every);
    loop {
        let status = check(restores_dir, restore_uid)?;
        if status.is_done() {
            return Ok(Outcome::Restored(status));
        }
        let now = clock.now();
        if reporter.is_due(&status, now) {
            report_waiting(&status, restore_uid);
        }
        let pause = match deadline {
            Some(deadline) if now >= deadline => return Ok(Outcome::TimedOut(status)),
            Some(deadline) => timing.poll_interval.min(deadline - now),
            None => timing.poll_interval,
        };
        clock.sleep(pause);
    }
}

/// Decides when the waiting line is worth printing: when what is missing changes, and otherwise
/// every `every`, so a long wait stays visible without a line per poll.
struct Reporter {
    every: Duration,
    last: Option<(Vec<String>, Vec<String>, Instant)>,
}

impl Reporter {
    fn new(every: Duration) -> Self {
        Self { every, last: None }
    }

    fn is_due(&mut self, status: &Status, now: Instant) -> bool {
        let due = match &self.last {
            None => true,
            Some((missing, errors, at)) => {
                *missing != status.missing
                    || *errors != status.errors
                    || now.duration_since(*at) >= self.every
            }
        };
        if due {
            self.last = Some((status.missing.clone(), status.errors.clone(), now));
        }
        due
    }
}

fn report_waiting(status: &Status, restore_uid: &str) {
    info!(
        "waiting for {} of {}: {} (no {}/{restore_uid} there yet)",
        status.missing.len(),
        volumes(status.total()),
        status.missing.join(", "),
        marker::MARKER_DIR,
    );
    for err in &status.errors {
        warn!("{err}");
    }
}

/// Runs the helper and returns its exit code.
pub fn run(args: &Args) -> ExitCode {
    let timing = Timing {
        poll_interval: args.poll_interval,
        timeout: args.timeout,
        report_every: REPORT_EVERY,
    };
    info!(
        "waiting for the markers of restore {} in the volumes under {} (timeout {})",
        args.restore_uid,
        args.restores_dir.display(),
        humantime::format_duration(args.timeout),
    );
    let outcome = wait_for_markers(
        &args.restores_dir,
        &args.restore_uid,
        &timing,
        &mut SystemClock,
    );
    match outcome {
        Ok(Outcome::Restored(status)) => {
            if status.ready.is_empty() {
                warn!(
                    "no volume directories under {}: nothing to wait for",
                    args.restores_dir.display()
                );
            }
            remove_markers(&args.restores_dir, &status.ready);
            info!("all {} restored", volumes(status.ready.len()));
            ExitCode::from(EXIT_RESTORED)
        }
        Ok(Outcome::TimedOut(status)) => {
            error!(
                "timed out after {}: {} of {} never got the marker {}/{}: {}. Their data is not \
                 restored; check the PodVolumeRestores labelled ferry.dev/restore-uid={} and the \
                 Ferry node agent on this pod's node",
                humantime::format_duration(args.timeout),
                status.missing.len(),
                volumes(status.total()),
                marker::MARKER_DIR,
                args.restore_uid,
                status.missing.join(", "),
                args.restore_uid,
            );
            for err in &status.errors {
                error!("{err}");
            }
            ExitCode::from(EXIT_TIMED_OUT)
        }
        Err(err) => {
            error!(
                "cannot read the restores directory {}: {err}. Mount each restored volume at \
                 <restores dir>/<volume>, or point --restores-dir (FERRY_RESTORES_DIR) at them",
                args.restores_dir.display(),
            );
            ExitCode::from(EXIT_SETUP)
        }
    }
}

/// Removes the marker directories. A failure is only logged: the data is complete, so the pod
/// should start anyway (this is what Velero's helper does too).
fn remove_markers(restores_dir: &Path, volumes: &[String]) {
    for volume in volumes {
        let volume_dir = restores_dir.join(volume);
        if let Err(err) = marker::remove_marker_dir(&volume_dir) {
            warn!(
                "cannot remove {}: {err}; the volume's data is restored all the same",
                volume_dir.join(marker::MARKER_DIR).display()
            );
        }
    }
}

/// Makes SIGTERM and SIGINT end the process with 128 + the signal number. As PID 1 of its
/// container the helper would otherwise ignore them, and deleting a waiting pod would take the
/// whole grace period. Call it before any other thread starts, so that all inherit the mask.
pub fn exit_on_termination_signals() -> nix::Result<()> {
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals.thread_block()?;
    std::thread::spawn(move || {
        if let Ok(signal) = signals.wait() {
            info!("received {signal}, exiting");
            std::process::exit(128 + signal as i32);
        }
    });
    Ok(())
}

fn volumes(count: usize) -> String {
    match count {
        1 => "1 volume".to_owned(),
        n => format!("{n} volumes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    const UID: &str = "0a1b2c3d-1111-2222-3333-444455556666";

    /// A clock that moves only when the loop sleeps, and runs `on_sleep` with the sleep's number.
    struct FakeClock<F: FnMut(usize)> {
        now: Instant,
        sleeps: Vec<Duration>,
        on_sleep: F,
    }

    impl<F: FnMut(usize)> FakeClock<F> {
        fn new(on_sleep: F) -> Self {
            Self {
                now: Instant::now(),
                sleeps: Vec::new(),
                on_sleep,
            }
        }
    }

    impl<F: FnMut(usize)> Clock for FakeClock<F> {
        fn now(&self) -> Instant {
            self.now
        }

        fn sleep(&mut self, duration: Duration) {
            self.now += duration;
            self.sleeps.push(duration);
            (self.on_sleep)(self.sleeps.len());
        }
    }

    fn timing(poll_secs: u64, timeout_secs: u64) -> Timing {
        Timing {
            poll_interval: Duration::from_secs(poll_secs),
            timeout: Duration::from_secs(timeout_secs),
            report_every: REPORT_EVERY,
        }
    }

    fn restores_with(volumes: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for volume in volumes {
            fs::create_dir(dir.path().join(volume)).unwrap();
        }
        dir
    }

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn cli_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn cli_defaults() {
        let args = Args::try_parse_from(["ferry-restore-helper", UID]).unwrap();
        assert_eq!(args.restore_uid, UID);
        assert_eq!(args.restores_dir, Path::new("/restores"));
        assert_eq!(args.timeout, Duration::from_secs(4 * 3600));
        assert_eq!(args.poll_interval, Duration::from_secs(1));
    }

    #[test]
    fn cli_parses_durations_and_rejects_bad_values() {
        let args = Args::try_parse_from([
            "ferry-restore-helper",
            UID,
            "--timeout",
            "30m",
            "--poll-interval",
            "250ms",
        ])
        .unwrap();
        assert_eq!(args.timeout, Duration::from_secs(1800));
        assert_eq!(args.poll_interval, Duration::from_millis(250));

        for bad in [
            vec!["ferry-restore-helper"],
            vec!["ferry-restore-helper", "../etc"],
            vec!["ferry-restore-helper", UID, "extra"],
            vec!["ferry-restore-helper", UID, "--timeout", "soon"],
            vec!["ferry-restore-helper", UID, "--poll-interval", "0s"],
        ] {
            assert!(Args::try_parse_from(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn check_sorts_volumes_by_marker() {
        let restores = restores_with(&["delta", "alpha", "charlie", "bravo"]);
        marker::write_marker(&restores.path().join("alpha"), UID).unwrap();
        marker::write_marker(&restores.path().join("delta"), UID).unwrap();
        marker::write_marker(&restores.path().join("charlie"), "another-restore").unwrap();
        fs::write(restores.path().join("not-a-volume"), b"").unwrap();

        let status = check(restores.path(), UID).unwrap();

        assert_eq!(
            status,
            Status {
                ready: names(&["alpha", "delta"]),
                missing: names(&["bravo", "charlie"]),
                errors: vec![],
            }
        );
        assert!(!status.is_done());
        assert_eq!(status.total(), 4);
    }

    #[test]
    fn check_reports_what_it_cannot_check() {
        let restores = restores_with(&["alpha"]);
        let looping = restores.path().join("alpha/.velero");
        std::os::unix::fs::symlink(&looping, &looping).unwrap();

        let status = check(restores.path(), UID).unwrap();

        assert_eq!(status.missing, names(&["alpha"]));
        assert_eq!(status.errors.len(), 1);
        let expected = format!(
            "alpha: cannot check the marker file {}/{UID}: ",
            looping.display()
        );
        assert!(status.errors[0].starts_with(&expected), "{status:?}");
    }

    #[test]
    fn check_fails_without_restores_dir() {
        let dir = tempfile::tempdir().unwrap();
        let err = check(&dir.path().join("missing"), UID).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn no_volumes_is_done_at_once() {
        let restores = restores_with(&[]);
        let mut clock = FakeClock::new(|_| {});
        let outcome = wait_for_markers(restores.path(), UID, &timing(1, 60), &mut clock).unwrap();
        assert_eq!(outcome, Outcome::Restored(Status::default()));
        assert!(clock.sleeps.is_empty());
    }

    #[test]
    fn times_out_with_a_last_check_at_the_deadline() {
        let restores = restores_with(&["alpha", "bravo"]);
        marker::write_marker(&restores.path().join("alpha"), UID).unwrap();
        let mut clock = FakeClock::new(|_| {});

        let outcome = wait_for_markers(restores.path(), UID, &timing(2, 5), &mut clock).unwrap();

        let Outcome::TimedOut(status) = outcome else {
            panic!("expected a timeout, got {outcome:?}");
        };
        assert_eq!(status.missing, names(&["bravo"]));
        assert_eq!(status.ready, names(&["alpha"]));
        assert_eq!(
            clock.sleeps,
            [2, 2, 1].map(Duration::from_secs).to_vec(),
            "polls at 0, 2, 4 and 5 s"
        );
    }

    #[test]
    fn zero_timeout_checks_once() {
        let restores = restores_with(&["alpha"]);
        let mut clock = FakeClock::new(|_| {});
        let outcome = wait_for_markers(restores.path(), UID, &timing(1, 0), &mut clock).unwrap();
        assert!(matches!(outcome, Outcome::TimedOut(_)));
        assert!(clock.sleeps.is_empty());
    }

    #[test]
    fn finishes_once_the_last_marker_appears() {
        let restores = restores_with(&["alpha", "bravo"]);
        let path = restores.path().to_owned();
        let mut clock = FakeClock::new(|sleep| match sleep {
            1 => marker::write_marker(&path.join("bravo"), UID).unwrap(),
            3 => marker::write_marker(&path.join("alpha"), UID).unwrap(),
            _ => {}
        });

        let outcome = wait_for_markers(restores.path(), UID, &timing(1, 60), &mut clock).unwrap();

        assert_eq!(
            outcome,
            Outcome::Restored(Status {
                ready: names(&["alpha", "bravo"]),
                ..Status::default()
            })
        );
        assert_eq!(clock.sleeps.len(), 3);
    }

    #[test]
    fn a_huge_timeout_waits_without_a_deadline() {
        let restores = restores_with(&["alpha"]);
        let path = restores.path().to_owned();
        let mut clock = FakeClock::new(|_| marker::write_marker(&path.join("alpha"), UID).unwrap());
        let timing = Timing {
            timeout: Duration::MAX,
            ..timing(1, 0)
        };
        let outcome = wait_for_markers(restores.path(), UID, &timing, &mut clock).unwrap();
        assert!(matches!(outcome, Outcome::Restored(_)));
    }

    #[test]
    fn reports_on_change_and_every_interval() {
        let start = Instant::now();
        let at = |secs| start + Duration::from_secs(secs);
        let both = Status {
            missing: names(&["alpha", "bravo"]),
            ..Status::default()
        };
        let one = Status {
            missing: names(&["bravo"]),
            ready: names(&["alpha"]),
            ..Status::default()
        };
        let mut reporter = Reporter::new(Duration::from_secs(10));

        assert!(reporter.is_due(&both, at(0)));
        assert!(!reporter.is_due(&both, at(1)));
        assert!(!reporter.is_due(&both, at(9)));
        assert!(reporter.is_due(&both, at(10)));
        assert!(reporter.is_due(&one, at(11)));
        assert!(!reporter.is_due(&one, at(12)));
        let failing = Status {
            errors: vec!["bravo: cannot check".to_owned()],
            ..one.clone()
        };
        assert!(reporter.is_due(&failing, at(13)));
    }
}
