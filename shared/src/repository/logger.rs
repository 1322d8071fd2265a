//! rustic_core reports through the `log` crate. [`EngineLogger`] hands the records a transfer
//! should show to its caller's sink.

use log::{Level, Log, Metadata, Record};

/// A `log` logger that hands every record at or above `level` to `forward`.
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
        let level = self.level.to_level_filter();
        log::set_boxed_logger(Box::new(self))?;
        log::set_max_level(level);
        Ok(())
    }
}

impl<F: Fn(&Record<'_>) + Send + Sync> Log for EngineLogger<F> {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            (self.forward)(record);
        }
    }

    fn flush(&self) {}
}
