//! The transfer process itself: reads one job, runs it on the engine, and writes events. It
//! knows nothing of Kubernetes.

use std::io::{self, Read, Write};
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ferry_shared::repository::{EngineError, EngineLogger, OpenMode, ProgressCounters, Repository};
use ferry_shared::subprocess;

use crate::marker;

use super::protocol::{Event, Job, Operation, Outcome, ProgressReport};

/// Writes events as JSON lines, one at a time, whichever thread sends them, and nothing after
/// the last: a request still being retried on another thread when the job ends says no more.
struct Events<W>(Arc<Mutex<Output<W>>>);

struct Output<W> {
    out: W,
    ended: bool,
}

impl<W> Clone for Events<W> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<W: Write> Events<W> {
    fn new(out: W) -> Self {
        Self(Arc::new(Mutex::new(Output { out, ended: false })))
    }

    fn send(&self, event: &Event) {
        self.send_all(std::slice::from_ref(event), false);
    }

    /// Sends the job's last events; any sent after them are dropped.
    fn end(&self, events: &[Event]) {
        self.send_all(events, true);
    }

    fn send_all(&self, events: &[Event], last: bool) {
        let mut output = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if output.ended {
            return;
        }
        output.ended = last;
        for event in events {
            // A closed stdout means the agent is gone; the job's end is then nobody's concern.
            let _ = subprocess::write_message(&mut output.out, event);
        }
    }
}

/// Reads a job from `input`, runs it, and writes its events to `output`. Returns whether the
/// job succeeded.
pub fn run(input: impl Read, output: impl Write + Send + 'static) -> bool {
    let events = Events::new(output);
    let job: Job = match subprocess::read_job(input) {
        Ok(job) => job,
        Err(err) => {
            events.send(&Event::Failed {
                category: "InvalidJob".to_owned(),
                message: format!("the transfer job is not valid JSON: {err}"),
            });
            return false;
        }
    };
    // Warnings go to the agent as events; rustic's other chatter stays out of the way.
    let _ = EngineLogger::new(log::Level::Error, |record| {
        eprintln!("{}: {}", record.level(), record.args());
    })
    .install();

    let counters = ProgressCounters::new();
    {
        let events = events.clone();
        counters.listen_for_waits(move |wait| events.send(&Event::Waiting(wait.clone())));
    }
    let (done, finished) = mpsc::channel::<()>();
    let ticker = {
        let events = events.clone();
        let counters = counters.clone();
        let interval = job.progress_interval;
        std::thread::spawn(move || {
            let start = Instant::now();
            loop {
                match finished.recv_timeout(interval) {
                    Err(RecvTimeoutError::Timeout) => events.send(&Event::Progress(
                        ProgressReport::of(&counters, start.elapsed()),
                    )),
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => return start.elapsed(),
                }
            }
        })
    };

    let result = std::panic::catch_unwind(AssertUnwindSafe(|| execute(&job, counters.clone())))
        .unwrap_or_else(|panic| {
            let cause = panic
                .downcast_ref::<&str>()
                .map(|text| (*text).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".to_owned());
            Err(Failure {
                category: "Panic".to_owned(),
                message: format!("the transfer stopped on an internal error: {cause}"),
            })
        });
    drop(done);
    let elapsed = ticker.join().unwrap_or_default();
    let mut last = vec![Event::Progress(ProgressReport::of(&counters, elapsed))];
    let succeeded = result.is_ok();
    match result {
        Ok(outcome) => {
            let warnings = match &outcome {
                Outcome::Backup(backup) => &backup.warnings,
                Outcome::Restore(restore) => &restore.warnings,
            };
            last.extend(warnings.iter().map(|message| Event::Warning {
                message: message.clone(),
            }));
            last.push(Event::Completed(outcome));
        }
        Err(failure) => last.push(Event::Failed {
            category: failure.category,
            message: failure.message,
        }),
    }
    events.end(&last);
    succeeded
}

struct Failure {
    category: String,
    message: String,
}

impl From<EngineError> for Failure {
    fn from(err: EngineError) -> Self {
        Self {
            category: err.category().to_owned(),
            message: err.to_string(),
        }
    }
}

fn execute(job: &Job, counters: Arc<ProgressCounters>) -> Result<Outcome, Failure> {
    match &job.operation {
        Operation::Backup {
            request,
            create_repository,
        } => {
            let mode = if *create_repository {
                OpenMode::CreateIfMissing
            } else {
                OpenMode::Existing
            };
            let repo = Repository::open(&job.repository, mode, counters)?;
            Ok(Outcome::Backup(repo.backup(request)?))
        }
        Operation::Restore {
            request,
            restore_uid,
        } => {
            if let Some(uid) = restore_uid {
                marker::validate_restore_uid(uid).map_err(|err| Failure {
                    category: "InvalidJob".to_owned(),
                    message: err.to_string(),
                })?;
            }
            let repo = Repository::open(&job.repository, OpenMode::Existing, counters)?;
            // The marker, relative to the target, tells a retry that an earlier attempt got
            // as far as writing it.
            let done_marker = restore_uid
                .as_deref()
                .map(|uid| marker::marker_path(Path::new(""), uid));
            let restored = repo.restore_claimed(request, done_marker.as_deref())?;
            if let Some(uid) = restore_uid {
                marker::write_marker(restored.target(), uid).map_err(|err| Failure {
                    category: "WriteMarker".to_owned(),
                    message: err.to_string(),
                })?;
            }
            // Released only now: a crash before this leaves the claim, and the retry finds
            // the restore finished instead of clearing data the application may be using.
            Ok(Outcome::Restore(restored.release()?))
        }
    }
}

/// Runs the job read from stdin, writing events to stdout.
pub fn run_stdio() -> bool {
    run(io::stdin().lock(), io::stdout())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_written_after_the_last_events() {
        let events = Events::new(Vec::new());
        let warning = |message: &str| Event::Warning {
            message: message.to_owned(),
        };
        events.send(&warning("before"));
        events.end(&[warning("last"), warning("very last")]);
        events.send(&warning("after"));
        events.end(&[warning("after the end")]);
        let output = events.0.lock().unwrap();
        let lines: Vec<Event> = String::from_utf8_lossy(&output.out)
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(
            lines,
            [warning("before"), warning("last"), warning("very last")]
        );
    }
}
