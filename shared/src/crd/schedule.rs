//! Schedule: Backups created on a cron schedule.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::backup::BackupSpec;
use super::common::is_false;

/// When to back up, and what.
#[allow(
    clippy::duplicated_attributes,
    reason = "each printcolumn(...) repeats keys such as type_ = \"date\""
)]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "ferry.dev",
    version = "v1alpha1",
    kind = "Schedule",
    namespaced,
    derive = "PartialEq",
    status = "ScheduleStatus",
    shortname = "fsch",
    category = "ferry",
    doc = "Backups created from a template on a cron schedule.",
    printcolumn(name = "Schedule", type_ = "string", json_path = ".spec.schedule"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Paused", type_ = "boolean", json_path = ".spec.paused"),
    printcolumn(name = "Last Backup", type_ = "date", json_path = ".status.lastBackup"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleSpec {
    /// Cron expression in UTC, five fields (`minute hour day-of-month month day-of-week`), such
    /// as `0 3 * * *`.
    pub schedule: String,
    /// Spec of each Backup the schedule creates.
    pub template: BackupSpec,
    /// Create no Backups while true.
    #[serde(default, skip_serializing_if = "is_false")]
    pub paused: bool,
}

/// State of a Schedule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleStatus {
    /// Enabled once the coordinator has accepted the schedule. Missing means New.
    #[serde(default)]
    pub phase: SchedulePhase,
    /// When the schedule last created a Backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<Time>,
    /// Why the spec is invalid, when the phase is FailedValidation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validation_errors: Vec<String>,
}

/// Phase of a Schedule. A missing or empty phase means New.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum SchedulePhase {
    /// Not yet looked at by the coordinator.
    #[default]
    #[serde(alias = "")]
    New,
    /// The schedule is valid and creates Backups.
    Enabled,
    /// The cron expression or the template is invalid; the validation errors say why.
    FailedValidation,
}

impl Schedule {
    /// The phase, New when the status or its phase is missing.
    pub fn phase(&self) -> SchedulePhase {
        self.status.as_ref().map(|s| s.phase).unwrap_or_default()
    }
}
