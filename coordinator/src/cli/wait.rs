//! `--wait`: follows a Backup or Restore through a watch until it ends, showing its progress:
//! on a terminal, a progress bar and one line per running volume; otherwise a plain line
//! every interval, without escape codes. Then a summary, and the exit code says how it ended.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Duration;

use clap::Args;
use ferry_shared::crd::{OperationPhase, PodVolumePhase, PodVolumeTransfer};
use futures::StreamExt;
use indicatif::{HumanDuration, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use kube::runtime::{WatchStreamExt, watcher};

use super::backup::transfers_of;
use super::connect::Ferry;
use super::error::CliError;
use super::operation::{Operation, Summary};
use super::output::{bytes, write_out};

/// How `create` follows what it created.
#[derive(Debug, Clone, Args)]
pub struct WaitFlags {
    /// Wait until it ends, showing its progress; exit 1 unless it Completed.
    #[arg(long)]
    pub wait: bool,
    /// With --wait and no terminal, how often a progress line is printed.
    #[arg(long, default_value = "10s", value_parser = at_least_a_second, requires = "wait")]
    pub progress_interval: Duration,
}

fn at_least_a_second(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(interval) if interval >= Duration::from_secs(1) => Ok(interval),
        Ok(_) => Err("the interval must be 1s or more".to_owned()),
        Err(err) => Err(format!("{text:?} is not a duration such as 10s: {err}")),
    }
}

/// How often a terminal's progress bar is redrawn.
const TERMINAL_TICK: Duration = Duration::from_secs(1);

/// Follows the `K` named `name` until it ends; Ok only if it Completed.
pub async fn follow<K: Operation>(
    ferry: &Ferry,
    name: &str,
    flags: &WaitFlags,
) -> Result<(), CliError> {
    let terminal = std::io::stdout().is_terminal();
    let mut view = if terminal { View::bars() } else { View::Lines };
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut changes = watcher(ferry.api::<K>(), config).default_backoff().boxed();
    let mut ticker = tokio::time::interval(if terminal {
        TERMINAL_TICK
    } else {
        flags.progress_interval
    });
    let mut watch = Watch::default();
    let last = loop {
        tokio::select! {
            change = changes.next() => {
                if let Some(ended) = watch.took(change, name)? {
                    break ended;
                }
            },
            _ = ticker.tick() => if let Some(object) = &watch.latest {
                // The watch decides how the wait ends; a list that fails for a moment only
                // leaves this tick's volume lines out.
                let running = running_transfers::<K>(ferry, name).await.unwrap_or_default();
                view.show(&object.summary(), &running, K::ITEMS_DONE)?;
            },
        }
    };
    view.clear();
    ended(&last, name)
}

/// How many watch errors in a row end the wait: the watch retries each after a backoff, so
/// this many mean the object cannot be watched (no permission, say), not a passing blip.
const WATCH_ERRORS: u32 = 10;

/// What the watch has seen of the object.
struct Watch<K> {
    latest: Option<K>,
    errors: u32,
}

impl<K> Default for Watch<K> {
    fn default() -> Self {
        Self {
            latest: None,
            errors: 0,
        }
    }
}

impl<K: Operation> Watch<K> {
    /// Takes in one event of the watch; the object once it has ended.
    fn took(
        &mut self,
        change: Option<Result<watcher::Event<K>, watcher::Error>>,
        name: &str,
    ) -> Result<Option<K>, CliError> {
        let lost = |why: String| CliError::Refused(format!("{} {name} {why}", K::KIND));
        match change {
            Some(Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object))) => {
                self.errors = 0;
                if object.summary().is_final() {
                    return Ok(Some(object));
                }
                self.latest = Some(object);
            }
            Some(Ok(watcher::Event::Delete(_))) => {
                return Err(lost("was deleted while waiting for it".to_owned()));
            }
            Some(Ok(watcher::Event::Init | watcher::Event::InitDone)) => {}
            Some(Err(err)) => {
                self.errors += 1;
                if self.errors >= WATCH_ERRORS {
                    return Err(lost(format!("cannot be watched: {err}")));
                }
            }
            None => return Err(lost("cannot be watched: the watch ended".to_owned())),
        }
        Ok(None)
    }
}

/// Prints how `object` ended; an error unless it Completed.
pub fn ended<K: Operation>(object: &K, name: &str) -> Result<(), CliError> {
    let summary = object.summary();
    write_out(&ending(K::KIND, name, &summary, K::ITEMS_DONE))?;
    if summary.phase == OperationPhase::Completed {
        return Ok(());
    }
    Err(CliError::Unsuccessful {
        kind: K::KIND,
        name: name.to_owned(),
        phase: format!("{:?}", summary.phase),
    })
}

/// The summary printed when an operation ends, with its warnings and errors.
fn ending(kind: &str, name: &str, summary: &Summary<'_>, items_done: &str) -> String {
    let took = match (summary.started, summary.completed) {
        (Some(start), Some(end)) => {
            let seconds = (end.0.as_second() - start.0.as_second()).max(0);
            format!(
                " in {}",
                HumanDuration(Duration::from_secs(seconds.unsigned_abs()))
            )
        }
        _ => String::new(),
    };
    let mut text = format!(
        "{kind} {name} {:?}{took}: {} volume(s), {}, {} file(s); {} object(s) {items_done}.\n",
        summary.phase,
        summary.transfers.total,
        bytes(summary.volumes.bytes_done),
        summary.volumes.files_done,
        summary.items_done,
    );
    for (title, lines) in [
        ("Validation errors", summary.validation_errors),
        ("Errors", summary.errors),
        ("Warnings", summary.warnings),
    ] {
        if !lines.is_empty() {
            text.push_str(&format!("{title}:\n"));
            for line in lines {
                text.push_str(&format!("  {line}\n"));
            }
        }
    }
    text
}

/// The operation's transfers that are running now, by `<namespace>/<pod>/<volume>`.
async fn running_transfers<K: Operation>(
    ferry: &Ferry,
    name: &str,
) -> Result<Vec<K::Transfer>, CliError> {
    let mut transfers = transfers_of::<K>(ferry, name).await?;
    transfers.retain(|transfer| transfer.phase() == PodVolumePhase::InProgress);
    Ok(transfers)
}

/// The progress of the whole operation in one line.
fn progress_line(summary: &Summary<'_>, items_done: &str) -> String {
    if summary.phase == OperationPhase::New {
        return "New: waiting for the coordinator to start it".to_owned();
    }
    let volumes = &summary.volumes;
    let mut line = format!(
        "{:?}: {}",
        summary.phase,
        amount(volumes.bytes_done, volumes.total_bytes)
    );
    if volumes.total_files > 0 {
        line.push_str(&format!(
            ", {} of {} files",
            volumes.files_done, volumes.total_files
        ));
    }
    if volumes.bytes_per_second > 0 {
        line.push_str(&format!(", {}/s", bytes(volumes.bytes_per_second)));
        if let Some(left) = eta(
            volumes.bytes_done,
            volumes.total_bytes,
            volumes.bytes_per_second,
        ) {
            line.push_str(&format!(", about {} left", HumanDuration(left)));
        }
    }
    if summary.total_items > 0 {
        line.push_str(&format!(
            "; {} of {} objects {items_done}",
            summary.items_done, summary.total_items
        ));
    }
    line
}

/// `done of total (pc%)`, or `done` while the total is unknown.
fn amount(done: u64, total: u64) -> String {
    if total == 0 {
        return bytes(done);
    }
    let percent = done.saturating_mul(100) / total;
    format!("{} of {} ({percent}%)", bytes(done), bytes(total))
}

/// Time left at the current rate, once the total is known.
fn eta(done: u64, total: u64, rate: u64) -> Option<Duration> {
    (total > 0 && rate > 0).then(|| Duration::from_secs(total.saturating_sub(done) / rate))
}

/// One running volume's line.
fn volume_line<T: PodVolumeTransfer>(transfer: &T) -> String {
    let progress = transfer
        .status()
        .and_then(|status| status.progress.clone())
        .unwrap_or_default();
    format!(
        "  {}: {}",
        transfer.volume_path(),
        amount(progress.bytes_done, progress.total_bytes)
    )
}

/// Where progress goes.
enum View {
    /// Plain lines, each a snapshot.
    Lines,
    /// A bar for the whole, and one line per running volume.
    Bars {
        bars: MultiProgress,
        whole: ProgressBar,
        volumes: BTreeMap<String, ProgressBar>,
    },
}

impl View {
    fn bars() -> Self {
        let bars = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
        let whole = bars.add(ProgressBar::new(0));
        whole.set_style(
            ProgressStyle::with_template("[{bar:30}] {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        Self::Bars {
            bars,
            whole,
            volumes: BTreeMap::new(),
        }
    }

    fn show<T: PodVolumeTransfer>(
        &mut self,
        summary: &Summary<'_>,
        running: &[T],
        items_done: &str,
    ) -> Result<(), CliError> {
        let Self::Bars {
            bars,
            whole,
            volumes,
        } = self
        else {
            let mut text = progress_line(summary, items_done);
            text.push('\n');
            for transfer in running {
                text.push_str(&volume_line(transfer));
                text.push('\n');
            }
            return write_out(&text);
        };
        whole.set_length(summary.volumes.total_bytes.max(1));
        whole.set_position(summary.volumes.bytes_done);
        whole.set_message(progress_line(summary, items_done));
        let now: BTreeMap<String, String> = running
            .iter()
            .map(|t| (t.volume_path(), volume_line(t)))
            .collect();
        volumes.retain(|path, bar| {
            let keep = now.contains_key(path);
            if !keep {
                bar.finish_and_clear();
            }
            keep
        });
        for (path, line) in now {
            volumes
                .entry(path)
                .or_insert_with(|| bars.add(ProgressBar::new_spinner()))
                .set_message(line);
        }
        Ok(())
    }

    /// Takes the bars off the terminal, so the summary stands alone.
    fn clear(&self) {
        if let Self::Bars {
            bars,
            whole,
            volumes,
        } = self
        {
            for bar in volumes.values().chain([whole]) {
                bar.finish_and_clear();
            }
            let _ = bars.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_shared::crd::{Progress, TransferCounts};

    fn summary(phase: OperationPhase, volumes: Progress) -> Summary<'static> {
        Summary {
            phase,
            volumes,
            ..Summary::default()
        }
    }

    #[test]
    fn a_progress_line_says_what_is_known() {
        let mib = 1024 * 1024;
        let cases = [
            (
                summary(OperationPhase::New, Progress::default()),
                "New: waiting for the coordinator to start it",
            ),
            (
                summary(OperationPhase::InProgress, Progress::default()),
                "InProgress: 0 B",
            ),
            (
                summary(
                    OperationPhase::InProgress,
                    Progress {
                        total_bytes: 100 * mib,
                        bytes_done: 25 * mib,
                        total_files: 10,
                        files_done: 3,
                        bytes_per_second: 5 * mib,
                    },
                ),
                "InProgress: 25.00 MiB of 100.00 MiB (25%), 3 of 10 files, 5.00 MiB/s, about 15 seconds left",
            ),
        ];
        for (summary, line) in cases {
            assert_eq!(progress_line(&summary, "backed up"), line);
        }
        let with_items = Summary {
            total_items: 12,
            items_done: 5,
            ..summary(OperationPhase::InProgress, Progress::default())
        };
        assert_eq!(
            progress_line(&with_items, "restored"),
            "InProgress: 0 B; 5 of 12 objects restored"
        );
    }

    #[test]
    fn the_ending_lists_errors_and_warnings() {
        let errors = ["volume app/web/data failed: disk full".to_owned()];
        let warnings = ["volume x of pod y skipped: hostPath".to_owned()];
        let ended = Summary {
            phase: OperationPhase::PartiallyFailed,
            transfers: TransferCounts {
                total: 2,
                completed: 1,
                failed: 1,
            },
            errors: &errors,
            warnings: &warnings,
            items_done: 7,
            ..Summary::default()
        };
        assert_eq!(
            ending("Backup", "b1", &ended, "backed up"),
            "Backup b1 PartiallyFailed: 2 volume(s), 0 B, 0 file(s); 7 object(s) backed up.\n\
             Errors:\n  volume app/web/data failed: disk full\n\
             Warnings:\n  volume x of pod y skipped: hostPath\n"
        );
    }
}
