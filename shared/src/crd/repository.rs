//! BackupRepository: the restic-format repository of one namespace in one storage location.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Which repository: the one for a workload namespace in a storage location.
#[allow(
    clippy::duplicated_attributes,
    reason = "each printcolumn(...) repeats keys such as type_ = \"date\""
)]
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "ferry.dev",
    version = "v1alpha1",
    kind = "BackupRepository",
    namespaced,
    derive = "PartialEq",
    status = "BackupRepositoryStatus",
    shortname = "brepo",
    category = "ferry",
    doc = "The restic-format repository that holds the volume data of one namespace in one storage location.",
    printcolumn(
        name = "Volume Namespace",
        type_ = "string",
        json_path = ".spec.volumeNamespace"
    ),
    printcolumn(
        name = "Storage Location",
        type_ = "string",
        json_path = ".spec.storageLocation"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Last Maintenance",
        type_ = "date",
        json_path = ".status.lastMaintenanceTime"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct BackupRepositorySpec {
    /// Namespace of the workloads whose volumes the repository holds.
    pub volume_namespace: String,
    /// Name of the BackupStorageLocation that holds the repository.
    pub storage_location: String,
    /// How often to forget what expired backups no longer need, prune and check, as a duration
    /// such as `168h`. Empty means the coordinator's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance_frequency: Option<String>,
}

/// State of a BackupRepository.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupRepositoryStatus {
    /// Ready once the repository exists and opens with the password. Missing means New.
    #[serde(default)]
    pub phase: RepositoryPhase,
    /// Why the repository is NotReady, or why the last maintenance failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When maintenance last finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_maintenance_time: Option<Time>,
}

/// Phase of a BackupRepository. A missing or empty phase means New.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum RepositoryPhase {
    /// Not yet opened or initialised by the coordinator.
    #[default]
    #[serde(alias = "")]
    New,
    /// The repository exists and opens; transfers may use it.
    Ready,
    /// The repository cannot be opened or created; the message says why.
    NotReady,
}

impl BackupRepository {
    /// The phase, New when the status or its phase is missing.
    pub fn phase(&self) -> RepositoryPhase {
        self.status.as_ref().map(|s| s.phase).unwrap_or_default()
    }
}
