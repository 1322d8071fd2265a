//! PodVolumeBackup: the backup of one volume of one pod, done by the node agent on the pod's node.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{PodReference, PodVolumePhase, Progress, is_zero};

/// The volume to back up and where to. Written by the coordinator only.
#[allow(
    clippy::duplicated_attributes,
    reason = "each printcolumn(...) repeats keys such as type_ = \"date\""
)]
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "ferry.dev",
    version = "v1alpha1",
    kind = "PodVolumeBackup",
    namespaced,
    derive = "PartialEq",
    status = "PodVolumeBackupStatus",
    shortname = "pvb",
    category = "ferry",
    doc = "The backup of one pod volume into a restic-format repository, by the node agent on spec.node.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Node", type_ = "string", json_path = ".spec.node"),
    printcolumn(
        name = "Bytes Done",
        type_ = "integer",
        json_path = ".status.progress.bytesDone"
    ),
    printcolumn(
        name = "Total Bytes",
        type_ = "integer",
        json_path = ".status.progress.totalBytes"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct PodVolumeBackupSpec {
    /// Node that runs the pod; only the node agent on this node works on the backup.
    pub node: String,
    /// Pod whose volume is backed up.
    pub pod: PodReference,
    /// Name of the volume in the pod's spec.volumes.
    pub volume: String,
    /// Name of the BackupStorageLocation that holds the repository.
    pub storage_location: String,
    /// Restic-style identifier of the repository, such as
    /// `s3:https://s3.example/bucket/prefix/restic/<namespace>`.
    pub repository: String,
    /// Tags recorded on the snapshot: backup, backup-uid, pod, pod-uid, ns, volume and, for a
    /// PVC, pvc-uid.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Snapshot to back up incrementally from. Empty means a full backup.
    #[serde(
        default,
        rename = "parentSnapshotID",
        skip_serializing_if = "Option::is_none"
    )]
    pub parent_snapshot_id: Option<String>,
}

/// How the backup went. Written by the node agent only.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodVolumeBackupStatus {
    /// Where the backup is in its life. Missing means New.
    #[serde(default)]
    pub phase: PodVolumePhase,
    /// Path on the node that was backed up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// ID of the snapshot taken. Empty when the volume was empty and no snapshot was taken.
    #[serde(
        default,
        rename = "snapshotID",
        skip_serializing_if = "Option::is_none"
    )]
    pub snapshot_id: Option<String>,
    /// Why the backup failed, or a note on how it completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the node agent claimed the backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_timestamp: Option<Time>,
    /// When the backup reached Completed or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_timestamp: Option<Time>,
    /// Progress of the transfer, updated while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// How many times a node agent has started the transfer.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: u32,
    /// Problems that did not stop the backup, such as files that could not be read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl PodVolumeBackup {
    /// The phase, New when the status or its phase is missing.
    pub fn phase(&self) -> PodVolumePhase {
        self.status.as_ref().map(|s| s.phase).unwrap_or_default()
    }
}
