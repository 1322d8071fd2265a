//! PodVolumeBackup: the backup of one volume of one pod, done by the node agent on the pod's node.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::PodReference;
use super::transfer::PodVolumeTransferStatus;

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
    status = "PodVolumeTransferStatus",
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
