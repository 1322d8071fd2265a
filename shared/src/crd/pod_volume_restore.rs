//! PodVolumeRestore: the restore of one volume of one restored pod, done by the node agent on the
//! node that runs the pod.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::PodReference;
use super::transfer::PodVolumeTransferStatus;

/// The snapshot to restore and the volume to restore it into. Written by the coordinator only.
#[allow(
    clippy::duplicated_attributes,
    reason = "each printcolumn(...) repeats keys such as type_ = \"date\""
)]
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "ferry.dev",
    version = "v1alpha1",
    kind = "PodVolumeRestore",
    namespaced,
    derive = "PartialEq",
    status = "PodVolumeTransferStatus",
    shortname = "pvr",
    category = "ferry",
    doc = "The restore of one snapshot into a volume of a restored pod, by the node agent on the pod's node.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Node", type_ = "string", json_path = ".status.node"),
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
pub struct PodVolumeRestoreSpec {
    /// Restored pod whose volume receives the data. The node agent on the pod's node claims the
    /// restore once the pod's restore-wait init container runs.
    pub pod: PodReference,
    /// Name of the volume in the pod's spec.volumes.
    pub volume: String,
    /// Name of the BackupStorageLocation that holds the repository.
    pub storage_location: String,
    /// Restic-style identifier of the repository, such as
    /// `s3:https://s3.example/bucket/prefix/restic/<namespace>`.
    pub repository: String,
    /// ID of the snapshot to restore.
    #[serde(rename = "snapshotID")]
    pub snapshot_id: String,
    /// Namespace the pod was backed up from; the repository belongs to it.
    pub source_namespace: String,
}
