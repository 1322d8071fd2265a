//! rustic_core reports files it could not read only as `log` warnings, and still saves the
//! snapshot. Ferry installs [`EngineLogger`] so that such warnings are counted and named in the
//! backup's outcome instead of vanishing. A transfer runs alone in its process, so one
//! process-wide collector serves it.

use std::sync::Mutex;

use log::{Level, Log, Metadata, Record};

/// How many warnings are kept word for word; the rest are only counted.
const KEPT: usize = 10;

#[derive(Default)]
struct Collected {
    count: u64,
    messages: Vec<String>,
}

static COLLECTED: Mutex<Collected> = Mutex::new(Collected {
    count: 0,
    messages: Vec::new(),
});

/// Warnings raised while backing up: how many, and the first few in full.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EngineWarnings {
    pub count: u64,
    pub first: Vec<String>,
}

/// A `log` logger that collects the archiver's warnings and hands every record that passes
/// `level` to `forward`.
pub struct EngineLogger<F> {
    level: Level,
    forward: F,
}

impl<F: Fn(&Record<'_>) + Send + Sync + 'static> EngineLogger<F> {
    pub fn new(level: Level, forward: F) -> Self {
        Self { level, forward }
    }

    /// Makes this the process's logger. Fails if a logger is already installed.
    pub fn install(self) -> Result<(), log::SetLoggerError> {
        log::set_boxed_logger(Box::new(self))?;
        log::set_max_level(log::LevelFilter::Trace);
        Ok(())
    }
}

impl<F: Fn(&Record<'_>) + Send + Sync> Log for EngineLogger<F> {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.level || is_archiver_warning(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if is_archiver_warning(record.metadata()) {
            record_warning(record.args().to_string());
        }
        if record.level() <= self.level {
            (self.forward)(record);
        }
    }

    fn flush(&self) {}
}

/// The archiver (files and directories it could not read) and the parent lookup warn through
/// `rustic_core::archiver`; the size scan repeats the same errors elsewhere and is not counted.
fn is_archiver_warning(metadata: &Metadata<'_>) -> bool {
    metadata.level() == Level::Warn && metadata.target().starts_with("rustic_core::archiver")
}

fn record_warning(message: String) {
    let mut collected = COLLECTED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    collected.count += 1;
    if collected.messages.len() < KEPT {
        collected.messages.push(message);
    }
}

/// Takes the warnings collected so far and starts counting afresh.
pub(crate) fn take() -> EngineWarnings {
    let mut collected = COLLECTED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let taken = std::mem::take(&mut *collected);
    EngineWarnings {
        count: taken.count,
        first: taken.messages,
    }
}
