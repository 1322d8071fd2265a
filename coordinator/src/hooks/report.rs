//! Running a pod's hooks of one phase in order, and what their runs do to the operation: the
//! records in its status, its errors and warnings, the log lines and the metric.

use ferry_shared::crd::{HookErrorMode, HookPhase, HookRecords, HookRun};
use ferry_shared::time::now;
use k8s_openapi::api::core::v1::Pod;
use kube::{Client, ResourceExt};
use tracing::{info, warn};

use super::exec::{run, took};
use super::plan::{InvalidHook, Planned, PodHook};
use crate::metrics::Metrics;

/// Hook runs an operation's status keeps, each up to about 1.3 KB: the object stays far below
/// the API server's size limit.
pub const KEPT_RUNS: usize = 200;

/// How the hooks of one or more pods went.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Report {
    pub runs: Vec<HookRun>,
    /// Failures of hooks whose error mode is `Fail`.
    pub errors: Vec<String>,
    /// Failures of hooks whose error mode is `Continue`.
    pub warnings: Vec<String>,
}

impl Report {
    /// Whether a hook that fails its pod failed.
    pub fn failed(&self) -> bool {
        !self.errors.is_empty()
    }

    pub fn merge(&mut self, other: Report) {
        self.runs.extend(other.runs);
        self.errors.extend(other.errors);
        self.warnings.extend(other.warnings);
    }

    /// Adds the runs to `records` (the first [`KEPT_RUNS`] of the operation), and their
    /// failures to `errors` and `warnings`.
    pub fn record(
        self,
        records: &mut HookRecords,
        errors: &mut Vec<String>,
        warnings: &mut Vec<String>,
    ) {
        let failed = self.runs.iter().filter(|run| !run.succeeded).count();
        records.hooks_attempted += u32::try_from(self.runs.len()).unwrap_or(u32::MAX);
        records.hooks_failed += u32::try_from(failed).unwrap_or(u32::MAX);
        let room = KEPT_RUNS.saturating_sub(records.hook_runs.len());
        records.hook_runs.extend(self.runs.into_iter().take(room));
        errors.extend(self.errors);
        warnings.extend(self.warnings);
    }
}

/// Runs `planned`, the hooks of `pod` in `phase`, in order; a failed hook whose error mode is
/// `Fail` ends the phase for the pod.
pub async fn run_in_order(
    client: &Client,
    metrics: &Metrics,
    pod: &Pod,
    phase: HookPhase,
    planned: Vec<Planned>,
) -> Report {
    let mut report = Report::default();
    for hook in planned {
        let (run, on_error) = match hook {
            Ok(hook) => (run(client, pod, phase, &hook).await, hook.on_error),
            Err(invalid) => (not_run(&pod_name(pod), phase, &invalid), invalid.on_error),
        };
        let stop = report.add(metrics, run, on_error);
        if stop {
            break;
        }
    }
    report
}

impl Report {
    /// Adds one run; true when it failed and fails its pod.
    pub fn add(&mut self, metrics: &Metrics, run: HookRun, on_error: HookErrorMode) -> bool {
        metrics.hook_ran(run.phase, run.succeeded);
        let stop = !run.succeeded && on_error == HookErrorMode::Fail;
        if run.succeeded {
            info!(pod = %run.pod, container = %run.container, phase = run.phase.as_str(), took = %took(&run), "hook succeeded");
        } else {
            let failure = failure(&run);
            warn!(pod = %run.pod, container = %run.container, phase = run.phase.as_str(), %failure, "hook failed");
            if stop {
                self.errors.push(failure);
            } else {
                self.warnings.push(failure);
            }
        }
        self.runs.push(run);
        stop
    }
}

/// `<namespace>/<name>` of a pod.
pub fn pod_name(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

/// The run of `hook` of `pod` that never started: its container did not run in time.
pub fn never_started(pod: &Pod, phase: HookPhase, hook: &PodHook, why: String) -> HookRun {
    HookRun {
        container: hook.container.clone(),
        source: hook.source.clone(),
        command: hook.command.clone(),
        ..not_run(
            &pod_name(pod),
            phase,
            &InvalidHook {
                source: hook.source.clone(),
                on_error: hook.on_error,
                message: why,
            },
        )
    }
}

/// The run of a hook of `pod` (`<namespace>/<name>`) that could not be run.
pub fn not_run(pod: &str, phase: HookPhase, invalid: &InvalidHook) -> HookRun {
    HookRun {
        phase,
        pod: pod.to_owned(),
        container: String::new(),
        source: invalid.source.clone(),
        command: Vec::new(),
        succeeded: false,
        exit_code: None,
        started: Some(now()),
        duration_ms: 0,
        message: Some(invalid.message.clone()),
        stdout_tail: String::new(),
        stderr_tail: String::new(),
    }
}

/// What a failed run's error or warning says: which hook, where, why, and the end of its
/// standard error.
pub fn failure(run: &HookRun) -> String {
    let container = match run.container.as_str() {
        "" => String::new(),
        name => format!(" in container {name}"),
    };
    let why = run.message.as_deref().unwrap_or("it failed");
    let stderr = match run.stderr_tail.as_str() {
        "" => String::new(),
        tail => format!("; stderr: {}", last_lines(tail)),
    };
    format!(
        "{} hook ({}) of pod {}{container} failed: {why}{stderr}",
        run.phase.as_str(),
        run.source,
        run.pod
    )
}

/// The last lines of an output tail, on one line.
fn last_lines(tail: &str) -> String {
    let lines: Vec<&str> = tail
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    lines[lines.len().saturating_sub(3)..].join(" | ")
}

/// The runs of `records` as the operation's log prints them, with how many more were run.
pub fn records_log(records: &HookRecords) -> Vec<String> {
    let lines = records.hook_runs.iter().flat_map(log_lines);
    lines.chain(unkept(records)).collect()
}

/// How many runs `records` counts but does not keep, if any.
pub fn unkept(records: &HookRecords) -> Option<String> {
    let kept = u32::try_from(records.hook_runs.len()).unwrap_or(u32::MAX);
    let more = records
        .hooks_attempted
        .checked_sub(kept)
        .filter(|more| *more > 0)?;
    Some(format!(
        "… and {more} more hook run(s), counted but not kept"
    ))
}

/// A run as the operation's log prints it: when, which hook, its command and how it ended,
/// then the tails of its output.
pub fn log_lines(run: &HookRun) -> Vec<String> {
    let when = run
        .started
        .as_ref()
        .map(|t| t.0.to_string())
        .unwrap_or_default();
    let ending = match (run.succeeded, run.exit_code, &run.message) {
        (true, _, _) => "exit code 0".to_owned(),
        (false, _, Some(message)) => format!("failed: {message}"),
        (false, Some(code), None) => format!("failed: exit code {code}"),
        (false, None, None) => "failed".to_owned(),
    };
    let mut lines = vec![format!(
        "{when} {} hook ({}) in pod {} container {}: {:?}: {ending} after {}",
        run.phase.as_str(),
        run.source,
        run.pod,
        run.container,
        run.command,
        took(run)
    )];
    for (name, tail) in [("stdout", &run.stdout_tail), ("stderr", &run.stderr_tail)] {
        lines.extend(tail.lines().map(|line| format!("    {name}: {line}")));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(succeeded: bool, exit_code: Option<i32>, message: Option<&str>) -> HookRun {
        HookRun {
            phase: HookPhase::Pre,
            pod: "shop/db-0".to_owned(),
            container: "db".to_owned(),
            source: "annotations".to_owned(),
            command: vec!["sh".to_owned(), "-c".to_owned(), "lock".to_owned()],
            succeeded,
            exit_code,
            started: None,
            duration_ms: 1500,
            message: message.map(str::to_owned),
            stdout_tail: "locked\n".to_owned(),
            stderr_tail: "first\nsecond\nthird\nERROR: cannot lock\n".to_owned(),
        }
    }

    #[test]
    fn failures_name_the_hook_the_pod_the_exit_code_and_the_end_of_stderr() {
        assert_eq!(
            failure(&run(false, Some(3), Some("exit code 3"))),
            "pre hook (annotations) of pod shop/db-0 in container db failed: exit code 3; \
             stderr: second | third | ERROR: cannot lock"
        );
    }

    #[test]
    fn a_fail_hook_stops_its_pod_and_is_an_error_a_continue_hook_a_warning() {
        let metrics = Metrics::new().unwrap();
        let mut report = Report::default();
        assert!(!report.add(&metrics, run(true, Some(0), None), HookErrorMode::Fail));
        assert!(!report.add(
            &metrics,
            run(false, Some(1), Some("exit code 1")),
            HookErrorMode::Continue
        ));
        assert!(!report.failed());
        assert!(report.add(
            &metrics,
            run(false, Some(2), Some("exit code 2")),
            HookErrorMode::Fail
        ));
        assert!(report.failed());
        assert_eq!((report.errors.len(), report.warnings.len()), (1, 1));
        let mut records = HookRecords::default();
        let (mut errors, mut warnings) = (vec![], vec![]);
        report.record(&mut records, &mut errors, &mut warnings);
        assert_eq!((records.hooks_attempted, records.hooks_failed), (3, 2));
        assert!(errors[0].contains("exit code 2"));
    }

    #[test]
    fn log_lines_hold_the_command_the_ending_and_the_output() {
        let lines = log_lines(&run(false, Some(3), Some("exit code 3")));
        assert_eq!(
            lines[0],
            " pre hook (annotations) in pod shop/db-0 container db: [\"sh\", \"-c\", \"lock\"]: \
             failed: exit code 3 after 1s 500ms"
        );
        assert_eq!(lines[1], "    stdout: locked");
        assert_eq!(lines.last().unwrap(), "    stderr: ERROR: cannot lock");
    }
}
