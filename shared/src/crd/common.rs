//! Pieces that several kinds share: the pod reference, transfer progress, counts and phases.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The pod whose volume a PodVolumeBackup or PodVolumeRestore works on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodReference {
    /// Namespace of the pod.
    pub namespace: String,
    /// Name of the pod.
    pub name: String,
    /// UID of the pod. The node agent checks it against the live pod before it touches any path.
    pub uid: String,
}

/// Progress of a transfer, or the sum over the transfers of a Backup or Restore.
///
/// A zero counter is left out of the JSON, as Velero does.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// Bytes to transfer in total, once the scan has counted them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub total_bytes: u64,
    /// Bytes transferred so far.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub bytes_done: u64,
    /// Files to transfer in total, once the scan has counted them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub total_files: u64,
    /// Files transferred so far.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub files_done: u64,
    /// Recent transfer rate, in bytes per second.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub bytes_per_second: u64,
}

/// Which resource types, and which cluster-scoped objects, a Backup or Restore takes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceSelection {
    /// Resource types to take, by plural, singular, kind or short name, optionally with their
    /// group (`deployments`, `deployments.apps`, `cm`); `*` or empty means every type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub included_resources: Vec<String>,
    /// Resource types left out, even if included, named as in includedResources.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded_resources: Vec<String>,
    /// Cluster-scoped objects: `true` takes all of them, `false` none. Unset takes all of them
    /// when every namespace is taken, and otherwise only those the namespaced objects need:
    /// their Namespaces, the PersistentVolumes bound to their claims and the
    /// CustomResourceDefinitions of their kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_cluster_resources: Option<bool>,
}

/// A Backup's progress: the sum over its PodVolumeBackups, and the objects written.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupProgress {
    /// Bytes and files of the pod volumes.
    #[serde(flatten)]
    pub volumes: Progress,
    /// Objects the backup selected.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub total_items: u64,
    /// Objects written to the backup's resources.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub items_backed_up: u64,
}

/// A Restore's progress: the sum over its PodVolumeRestores, and the objects restored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreProgress {
    /// Bytes and files of the pod volumes.
    #[serde(flatten)]
    pub volumes: Progress,
    /// Objects of the backup the restore selected.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub total_items: u64,
    /// Objects dealt with so far: created, updated, or found existing.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub items_restored: u64,
}

/// How many pod-volume transfers a Backup or Restore has, and how they ended.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransferCounts {
    /// Transfers created.
    #[serde(default)]
    pub total: u32,
    /// Transfers that are Completed.
    #[serde(default)]
    pub completed: u32,
    /// Transfers that are Failed.
    #[serde(default)]
    pub failed: u32,
}

/// Phase of a PodVolumeBackup or PodVolumeRestore. A missing or empty phase means New.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum PodVolumePhase {
    /// Created by the coordinator; no node agent has claimed it yet.
    #[default]
    #[serde(alias = "")]
    New,
    /// Claimed by a node agent, which is transferring the data.
    InProgress,
    /// The transfer finished.
    Completed,
    /// The transfer failed; the message says why.
    Failed,
}

/// Phase of a Backup or Restore. A missing or empty phase means New.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum OperationPhase {
    /// Not yet looked at by the coordinator.
    #[default]
    #[serde(alias = "")]
    New,
    /// The spec is invalid; the validation errors say why.
    FailedValidation,
    /// The coordinator is running it.
    InProgress,
    /// Every part finished without error.
    Completed,
    /// It finished, but some parts failed; the errors say which.
    PartiallyFailed,
    /// It failed as a whole.
    Failed,
}

pub(crate) fn is_zero<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

pub(crate) fn is_false(value: &bool) -> bool {
    !*value
}
