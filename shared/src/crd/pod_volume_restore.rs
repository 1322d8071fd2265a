//! PodVolumeRestore: the restore of one volume of one restored pod, done by the node agent on the
//! node that runs the pod.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{PodReference, PodVolumePhase, Progress, is_zero};

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
    status = "PodVolumeRestoreStatus",
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

/// How the restore went. Written by the node agent only.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodVolumeRestoreStatus {
    /// Where the restore is in its life. Missing means New.
    #[serde(default)]
    pub phase: PodVolumePhase,
    /// Node whose agent claimed the restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Path on the node that the snapshot was restored into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// ID of the snapshot that was restored.
    #[serde(
        default,
        rename = "snapshotID",
        skip_serializing_if = "Option::is_none"
    )]
    pub snapshot_id: Option<String>,
    /// Why the restore failed, or a note on how it completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the node agent claimed the restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_timestamp: Option<Time>,
    /// When the restore reached Completed or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_timestamp: Option<Time>,
    /// Progress of the transfer, updated while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// How many times a node agent has started the transfer.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: u32,
    /// Problems that did not stop the restore.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl PodVolumeRestore {
    /// The phase, New when the status or its phase is missing.
    pub fn phase(&self) -> PodVolumePhase {
        self.status.as_ref().map(|s| s.phase).unwrap_or_default()
    }
}
