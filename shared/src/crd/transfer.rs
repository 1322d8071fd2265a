//! What PodVolumeBackups and PodVolumeRestores share: the status a node agent writes, and
//! [`PodVolumeTransfer`], through which the node agent and the coordinator serve both kinds
//! with one piece of code.

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Resource;
use kube::core::object::HasStatus;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::common::{PodReference, PodVolumePhase, Progress, is_zero};
use super::{PodVolumeBackup, PodVolumeRestore};

/// How a transfer went. Written by the node agent only.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodVolumeTransferStatus {
    /// Where the transfer is in its life. Missing means New.
    #[serde(default)]
    pub phase: PodVolumePhase,
    /// Node whose agent claimed the transfer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Path on the node that was backed up or restored into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// ID of the snapshot taken or restored. A backup of an empty volume takes none.
    #[serde(
        default,
        rename = "snapshotID",
        skip_serializing_if = "Option::is_none"
    )]
    pub snapshot_id: Option<String>,
    /// Why the transfer failed, what it is waiting for, or a note on how it completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the node agent claimed the transfer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_timestamp: Option<Time>,
    /// When the transfer reached Completed or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_timestamp: Option<Time>,
    /// Progress of the transfer, updated while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// How many times a node agent has started the transfer.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: u32,
    /// Problems that did not stop the transfer, such as files that could not be read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// A PodVolumeBackup or PodVolumeRestore: one volume of one pod, moved by the node agent.
pub trait PodVolumeTransfer:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + HasStatus<Status = PodVolumeTransferStatus>
    + Clone
    + DeserializeOwned
    + Serialize
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    fn pod(&self) -> &PodReference;
    /// Name of the volume in the pod's spec.volumes.
    fn volume(&self) -> &str;
    /// Name of the BackupStorageLocation that holds the repository.
    fn storage_location(&self) -> &str;
    /// Restic-style identifier of the repository.
    fn repository(&self) -> &str;
    /// The namespace whose repository holds the data.
    fn repository_namespace(&self) -> &str;

    /// The phase, New when the status or its phase is missing.
    fn phase(&self) -> PodVolumePhase {
        self.status().map(|status| status.phase).unwrap_or_default()
    }

    /// `<namespace>/<pod>/<volume>`.
    fn volume_path(&self) -> String {
        let pod = self.pod();
        format!("{}/{}/{}", pod.namespace, pod.name, self.volume())
    }
}

/// Implements [`PodVolumeTransfer`]; the last argument is the field naming the repository's
/// namespace.
macro_rules! pod_volume_transfer {
    ($kind:ty, $($namespace:ident).+) => {
        impl PodVolumeTransfer for $kind {
            fn pod(&self) -> &PodReference {
                &self.spec.pod
            }
            fn volume(&self) -> &str {
                &self.spec.volume
            }
            fn storage_location(&self) -> &str {
                &self.spec.storage_location
            }
            fn repository(&self) -> &str {
                &self.spec.repository
            }
            fn repository_namespace(&self) -> &str {
                &self.$($namespace).+
            }
        }
    };
}

pod_volume_transfer!(PodVolumeBackup, spec.pod.namespace);
pod_volume_transfer!(PodVolumeRestore, spec.source_namespace);
