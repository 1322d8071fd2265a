//! The coordinator's metrics (DESIGN.md §6): Backups and Restores by final phase, backup
//! durations, repository maintenance, hooks, and retries of requests to object storage, each
//! counter with a series for every value of its labels from the start, so that the first
//! increase shows; and those read from the cluster's objects ([`state`]).

mod state;

pub use state::StateMetrics;

use ferry_shared::crd::{HookPhase, OperationPhase};
use ferry_shared::retry::CountedRetries;
use prometheus::{
    CounterVec, Histogram, HistogramOpts, IntCounterVec, Opts, Registry, exponential_buckets,
};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    backups: IntCounterVec,
    restores: IntCounterVec,
    backup_duration: Histogram,
    maintenance: CounterVec,
    storage_retries: IntCounterVec,
    hooks: IntCounterVec,
}

/// The phases a Backup or Restore ends in.
const ENDS: [OperationPhase; 4] = [
    OperationPhase::Completed,
    OperationPhase::PartiallyFailed,
    OperationPhase::Failed,
    OperationPhase::FailedValidation,
];

/// How maintenance and hooks end.
const RESULTS: [&str; 2] = ["success", "failure"];

fn phase_label(phase: OperationPhase) -> &'static str {
    match phase {
        OperationPhase::New => "New",
        OperationPhase::FailedValidation => "FailedValidation",
        OperationPhase::InProgress => "InProgress",
        OperationPhase::Completed => "Completed",
        OperationPhase::PartiallyFailed => "PartiallyFailed",
        OperationPhase::Failed => "Failed",
    }
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let backups = IntCounterVec::new(
            Opts::new("ferry_backup_total", "Backups that ended, by final phase."),
            &["phase"],
        )?;
        let restores = IntCounterVec::new(
            Opts::new(
                "ferry_restore_total",
                "Restores that ended, by final phase.",
            ),
            &["phase"],
        )?;
        let backup_duration = Histogram::with_opts(
            HistogramOpts::new(
                "ferry_backup_duration_seconds",
                "How long Backups took, from start to their final phase.",
            )
            .buckets(exponential_buckets(1.0, 4.0, 10)?),
        )?;
        let maintenance = CounterVec::new(
            Opts::new(
                "ferry_repository_maintenance_total",
                "Repository maintenance runs (forget, prune, check), by result.",
            ),
            &["result"],
        )?;
        registry.register(Box::new(backups.clone()))?;
        registry.register(Box::new(restores.clone()))?;
        registry.register(Box::new(backup_duration.clone()))?;
        let hooks = IntCounterVec::new(
            Opts::new(
                "ferry_hook_total",
                "Hooks run, by phase (pre, post, post-restore) and result (success, failure).",
            ),
            &["phase", "result"],
        )?;
        registry.register(Box::new(maintenance.clone()))?;
        registry.register(Box::new(hooks.clone()))?;
        let storage_retries = ferry_shared::retry::retries_metric()?;
        registry.register(Box::new(storage_retries.clone()))?;
        for phase in ENDS {
            backups.with_label_values(&[phase_label(phase)]);
            restores.with_label_values(&[phase_label(phase)]);
        }
        for result in RESULTS {
            maintenance.with_label_values(&[result]);
            for phase in [HookPhase::Pre, HookPhase::Post, HookPhase::PostRestore] {
                hooks.with_label_values(&[phase.as_str(), result]);
            }
        }
        Ok(Self {
            registry,
            backups,
            restores,
            backup_duration,
            maintenance,
            storage_retries,
            hooks,
        })
    }

    /// Counts and logs each retry of a request to object storage.
    pub fn storage_retries(&self) -> CountedRetries {
        CountedRetries(self.storage_retries.clone())
    }

    pub fn registry(&self) -> Registry {
        self.registry.clone()
    }

    /// Serves the metrics read from the cluster's objects, too.
    pub fn watch_state(&self, state: StateMetrics) -> Result<(), prometheus::Error> {
        self.registry.register(Box::new(state))
    }

    /// A Backup reached `phase`, after `seconds`.
    pub fn backup_ended(&self, phase: OperationPhase, seconds: f64) {
        self.backups.with_label_values(&[phase_label(phase)]).inc();
        if phase != OperationPhase::FailedValidation {
            self.backup_duration.observe(seconds);
        }
    }

    pub fn restore_ended(&self, phase: OperationPhase) {
        self.restores.with_label_values(&[phase_label(phase)]).inc();
    }

    pub fn maintenance_ran(&self, succeeded: bool) {
        let result = if succeeded { "success" } else { "failure" };
        self.maintenance.with_label_values(&[result]).inc();
    }

    pub fn hook_ran(&self, phase: HookPhase, succeeded: bool) {
        let result = if succeeded { "success" } else { "failure" };
        self.hooks
            .with_label_values(&[phase.as_str(), result])
            .inc();
    }
}
