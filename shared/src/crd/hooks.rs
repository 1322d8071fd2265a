//! Hooks: commands run in a pod's containers around its backup (to quiesce the application) and
//! after its restore, with Velero's field names. The coordinator runs exec hooks through
//! `pods/exec`; restore init-container hooks become init containers of the restored pod.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Container;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{PodReference, is_zero};

/// The hooks of a Backup, by the pods they apply to.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupHooks {
    /// Hooks and the pods they apply to. A pod with hook annotations of a phase runs those
    /// instead of these for that phase.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<BackupResourceHook>,
}

/// Which pods a hook applies to: the common part of backup and restore resource hooks.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HookSelection {
    /// Names the hook in the logs and status.
    #[serde(default)]
    pub name: String,
    /// Namespaces whose pods the hook applies to. Empty or `*` means all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub included_namespaces: Vec<String>,
    /// Namespaces left out, even if included.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded_namespaces: Vec<String>,
    /// Resource types the hook applies to; hooks run in pods only, so a list without `pods`
    /// (or `*`) makes the hook apply to nothing. Empty means pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub included_resources: Vec<String>,
    /// Resource types left out; naming `pods` makes the hook apply to nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded_resources: Vec<String>,
    /// Only pods with matching labels. Empty means every pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<LabelSelector>,
}

/// Exec hooks run before and after the volumes of the selected pods are backed up.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupResourceHook {
    #[serde(flatten)]
    pub selection: HookSelection,
    /// Run before the pod's volumes are read, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pre: Vec<BackupHook>,
    /// Run once every transfer of the pod's volumes has ended, whatever its outcome, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub post: Vec<BackupHook>,
}

/// One backup hook.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupHook {
    pub exec: ExecHook,
}

/// A command run in a container of the pod.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecHook {
    /// The container to run in. Empty means the pod's first container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The command and its arguments; it is not run through a shell.
    #[serde(default)]
    pub command: Vec<String>,
    /// What a failure does: `Fail` (the default for backup hooks) or `Continue`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_error: Option<HookErrorMode>,
    /// How long the command may run, as a duration such as `30s` (the default); past it, its
    /// stream is closed and it counts as failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// What a failed hook does to its operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum HookErrorMode {
    /// Record a warning and go on.
    Continue,
    /// Record an error: a failed backup pre hook leaves the pod's volumes out; either makes
    /// the operation PartiallyFailed.
    Fail,
}

/// The hooks of a Restore, by the pods they apply to.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreHooks {
    /// Hooks and the restored pods they apply to. A pod with hook annotations of a kind (init
    /// or exec) runs those instead of these for that kind.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<RestoreResourceHook>,
}

/// Hooks run after the selected pods are restored.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreResourceHook {
    #[serde(flatten)]
    pub selection: HookSelection,
    /// The hooks, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub post_hooks: Vec<RestorePostHook>,
}

/// One restore hook: init containers, or a command run once the pod's data is back.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestorePostHook {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<InitRestoreHook>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<RestoreExecHook>,
}

/// Init containers added to the restored pod after `restore-wait`, so that they run on the
/// restored data and before the application.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InitRestoreHook {
    /// Containers as in a pod spec.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "containers_schema")]
    pub init_containers: Vec<Container>,
}

/// A command run in a container of the restored pod once its volumes are restored and the
/// container is Running.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreExecHook {
    /// The container to run in. Empty means the pod's first container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The command and its arguments; it is not run through a shell.
    #[serde(default)]
    pub command: Vec<String>,
    /// What a failure does: `Continue` (the default for restore hooks) or `Fail`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_error: Option<HookErrorMode>,
    /// How long the command may run (default `30s`); past it, its stream is closed and it
    /// counts as failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec_timeout: Option<String>,
    /// How long to wait for the container to be Running once the pod's volumes are restored
    /// (default `10m`); past it, the hook counts as failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_timeout: Option<String>,
}

/// The schema of a list of containers: objects kept as written, checked by the API server when
/// the restored pod is created, as a pod spec's containers are.
fn containers_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
    })
}

/// When a hook runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum HookPhase {
    /// Before a pod's volumes are backed up.
    Pre,
    /// After a pod's volume backups have ended.
    Post,
    /// After a pod's volumes are restored.
    PostRestore,
}

impl HookPhase {
    /// The phase as the logs, messages and metrics name it.
    pub fn as_str(self) -> &'static str {
        match self {
            HookPhase::Pre => "pre",
            HookPhase::Post => "post",
            HookPhase::PostRestore => "post-restore",
        }
    }
}

/// The hooks an operation ran.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HookRecords {
    /// Hooks run so far.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub hooks_attempted: u32,
    /// Hooks that failed, timed out or could not run.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub hooks_failed: u32,
    /// How each hook went, for the operation's log: the first runs, up to a bound that keeps
    /// the object small; the counts hold them all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hook_runs: Vec<HookRun>,
    /// Pods whose post hooks are still to run, once their transfers have ended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_post_hooks: Vec<PodReference>,
    /// The pods whose pre hooks have run, by UID, so that they never run twice.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pre_hooks_ran: BTreeMap<String, PreHooksEnd>,
}

/// How a pod's pre hooks ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum PreHooksEnd {
    /// None failed under `Fail`: the pod's volumes are backed up.
    Passed,
    /// One failed under `Fail`: the pod's volumes are left out.
    Blocked,
}

/// How one hook went, kept in the operation's status for its log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HookRun {
    pub phase: HookPhase,
    /// The pod, as `<namespace>/<name>`.
    pub pod: String,
    pub container: String,
    /// The resource hook's name, or `annotations`.
    pub source: String,
    pub command: Vec<String>,
    pub succeeded: bool,
    /// The command's exit code, when it ran to its end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// When the hook started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<Time>,
    /// How long it ran, in milliseconds.
    #[serde(default)]
    pub duration_ms: u64,
    /// Why it failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The end of its standard output.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stdout_tail: String,
    /// The end of its standard error.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stderr_tail: String,
}
