//! Backup: a request to back up the pod volumes of some namespaces.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{BackupProgress, OperationPhase, ResourceSelection, TransferCounts};
use super::hooks::{BackupHooks, HookRecords};

/// Which pods to back up, and where to.
#[allow(
    clippy::duplicated_attributes,
    reason = "each printcolumn(...) repeats keys such as type_ = \"date\""
)]
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "ferry.dev",
    version = "v1alpha1",
    kind = "Backup",
    namespaced,
    derive = "PartialEq",
    status = "BackupStatus",
    shortname = "fbk",
    category = "ferry",
    doc = "A backup of the pod volumes of the selected pods, with their Pod and PVC manifests.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Storage Location",
        type_ = "string",
        json_path = ".spec.storageLocation"
    ),
    printcolumn(
        name = "Completed PVBs",
        type_ = "integer",
        json_path = ".status.podVolumeBackups.completed"
    ),
    printcolumn(
        name = "Failed PVBs",
        type_ = "integer",
        json_path = ".status.podVolumeBackups.failed",
        priority = 1
    ),
    printcolumn(name = "Expiration", type_ = "date", json_path = ".status.expiration"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// Namespaces whose objects and pod volumes are backed up. Empty or `*` means all
    /// namespaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub included_namespaces: Vec<String>,
    /// Namespaces left out, even if included.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded_namespaces: Vec<String>,
    /// Resource types and cluster-scoped objects.
    #[serde(flatten)]
    pub resources: ResourceSelection,
    /// Only objects and pods with matching labels are backed up. Empty means every one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<LabelSelector>,
    /// Back up every volume of a pod except those that cannot or need not be (opt-out), instead
    /// of only those named in the pod's `backup.ferry.dev/backup-volumes` annotation (opt-in).
    /// Empty means the coordinator's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_volumes_to_fs_backup: Option<bool>,
    /// Name of the BackupStorageLocation to write to. Empty means the default location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_location: Option<String>,
    /// How long to keep the backup, as a duration such as `720h`. Empty means the coordinator's
    /// default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// How long the transfer of each volume may run once a node agent has claimed it, as a
    /// duration such as `4h`; a transfer past it is stopped and counts as failed. Empty means
    /// the coordinator's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_timeout: Option<String>,
    /// Commands run in the selected pods before and after their volumes are backed up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<BackupHooks>,
}

/// How a Backup went.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    /// Where the backup is in its life. Missing means New.
    #[serde(default)]
    pub phase: OperationPhase,
    /// Why the spec is invalid, when the phase is FailedValidation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validation_errors: Vec<String>,
    /// When the coordinator started the backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_timestamp: Option<Time>,
    /// When the backup reached a final phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_timestamp: Option<Time>,
    /// When the backup expires and is deleted, with its data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<Time>,
    /// Counts of the PodVolumeBackups of this backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_volume_backups: Option<TransferCounts>,
    /// Objects written, and progress summed over the PodVolumeBackups of this backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<BackupProgress>,
    /// Things that did not stop the backup but that the user should know, such as skipped
    /// volumes and unreadable files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// What failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// Volumes (`<namespace>/<pod>/<volume>`) whose transfer ran past volumeTimeout and was
    /// stopped; each counts as failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timed_out_volumes: Vec<String>,
    /// Volumes of the selected pods that were not backed up, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_volumes: Vec<SkippedVolume>,
    /// How many hooks ran, how many failed, and how each went.
    #[serde(flatten)]
    pub hooks: HookRecords,
}

/// A volume a backup left out, and why.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SkippedVolume {
    /// The pod, as `<namespace>/<name>`.
    pub pod: String,
    /// The volume's name in the pod.
    pub volume: String,
    pub reason: String,
}

impl std::fmt::Display for SkippedVolume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "volume {} of pod {} skipped: {}",
            self.volume, self.pod, self.reason
        )
    }
}

impl Backup {
    /// The phase, New when the status or its phase is missing.
    pub fn phase(&self) -> OperationPhase {
        self.status.as_ref().map(|s| s.phase).unwrap_or_default()
    }
}
