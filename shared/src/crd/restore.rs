//! Restore: a request to recreate pods and their volume data from a Backup.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{OperationPhase, ResourceSelection, RestoreProgress, TransferCounts};
use super::hooks::{HookRecords, RestoreHooks};

/// What to restore, and from which backup.
///
/// No field is required by the schema: the coordinator validates the spec and reports
/// FailedValidation with its reasons.
#[allow(
    clippy::duplicated_attributes,
    reason = "each printcolumn(...) repeats keys such as type_ = \"date\""
)]
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "ferry.dev",
    version = "v1alpha1",
    kind = "Restore",
    namespaced,
    derive = "PartialEq",
    status = "RestoreStatus",
    shortname = "frs",
    category = "ferry",
    doc = "A restore of pods, their PVCs and their volume data from a Backup.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Backup", type_ = "string", json_path = ".spec.backupName"),
    printcolumn(
        name = "Completed PVRs",
        type_ = "integer",
        json_path = ".status.podVolumeRestores.completed"
    ),
    printcolumn(
        name = "Failed PVRs",
        type_ = "integer",
        json_path = ".status.podVolumeRestores.failed",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSpec {
    /// Backup to restore from. Give this or scheduleName.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_name: Option<String>,
    /// Schedule whose newest Completed backup to restore from, when backupName is empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_name: Option<String>,
    /// Namespaces of the backup to restore. Empty or `*` means all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub included_namespaces: Vec<String>,
    /// Namespaces of the backup left out, even if included.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded_namespaces: Vec<String>,
    /// Resource types and cluster-scoped objects.
    #[serde(flatten)]
    pub resources: ResourceSelection,
    /// Keep the node ports of restored Services; otherwise the cluster assigns new ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preserve_node_ports: Option<bool>,
    /// Restore the objects of a backed-up namespace (the key) into another namespace (the value).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub namespace_mapping: BTreeMap<String, String>,
    /// Only objects with matching labels are restored. Empty means every object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<LabelSelector>,
    /// What to do with an object that already exists in the cluster and differs from the
    /// backed-up one: `none` (keep it, and record a warning) or `update` (patch it to the
    /// backed-up version where the API server allows, and warn where it refuses). Either way no
    /// data is restored into an existing pod.
    #[serde(default)]
    pub existing_resource_policy: ExistingResourcePolicy,
    /// Init containers added to the restored pods, and commands run in them once their data is
    /// back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<RestoreHooks>,
}

/// What a Restore does with an object that already exists.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExistingResourcePolicy {
    /// Keep the existing object, and record a warning.
    #[default]
    None,
    /// Patch the existing object to its backed-up version.
    Update,
}

/// How a Restore went.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreStatus {
    /// Where the restore is in its life. Missing means New.
    #[serde(default)]
    pub phase: OperationPhase,
    /// Why the spec is invalid, when the phase is FailedValidation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validation_errors: Vec<String>,
    /// The Backup restored from: spec.backupName, or the newest Completed Backup of
    /// spec.scheduleName when the restore started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_name: Option<String>,
    /// When the coordinator started the restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_timestamp: Option<Time>,
    /// When the restore reached a final phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_timestamp: Option<Time>,
    /// Counts of the PodVolumeRestores of this restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_volume_restores: Option<TransferCounts>,
    /// Objects restored, and progress summed over the PodVolumeRestores of this restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<RestoreProgress>,
    /// Things that did not stop the restore but that the user should know, such as objects
    /// that already existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// What failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// Volumes (`<namespace>/<pod>/<volume>`) whose restore did not finish within the
    /// coordinator's volume timeout, counted from its claim or, unclaimed, its creation; each
    /// was stopped and counts as failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timed_out_volumes: Vec<String>,
    /// How many hooks ran, how many failed, and how each went.
    #[serde(flatten)]
    pub hooks: HookRecords,
}

impl Restore {
    /// The phase, New when the status or its phase is missing.
    pub fn phase(&self) -> OperationPhase {
        self.status.as_ref().map(|s| s.phase).unwrap_or_default()
    }
}
