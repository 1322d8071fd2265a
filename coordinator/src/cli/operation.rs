//! What a Backup and a Restore have in common for the command line: a phase, progress, the
//! transfers of their volumes, and how they ended.

use ferry_shared::crd::{
    Backup, OperationPhase, PodVolumeBackup, PodVolumeRestore, PodVolumeTransfer, Progress,
    Restore, TransferCounts,
};
use ferry_shared::names::label;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Resource;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The state of a Backup or Restore, as the command line shows it.
#[derive(Debug, Default)]
pub struct Summary<'a> {
    pub phase: OperationPhase,
    pub volumes: Progress,
    pub total_items: u64,
    pub items_done: u64,
    pub transfers: TransferCounts,
    pub started: Option<&'a Time>,
    pub completed: Option<&'a Time>,
    pub validation_errors: &'a [String],
    pub warnings: &'a [String],
    pub errors: &'a [String],
}

impl Summary<'_> {
    /// Whether the operation has reached a phase it never leaves.
    pub fn is_final(&self) -> bool {
        !matches!(self.phase, OperationPhase::New | OperationPhase::InProgress)
    }
}

/// A Backup or a Restore.
pub trait Operation:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + std::fmt::Debug
    + DeserializeOwned
    + Serialize
    + Send
    + Sync
    + 'static
{
    /// `Backup` or `Restore`.
    const KIND: &'static str;
    /// The label that names the operation on its transfers.
    const TRANSFER_LABEL: &'static str;
    /// What "done" means for its objects: backed up or restored.
    const ITEMS_DONE: &'static str;
    type Transfer: PodVolumeTransfer;

    fn summary(&self) -> Summary<'_>;
}

impl Operation for Backup {
    const KIND: &'static str = "Backup";
    const TRANSFER_LABEL: &'static str = label::BACKUP_NAME;
    const ITEMS_DONE: &'static str = "backed up";
    type Transfer = PodVolumeBackup;

    fn summary(&self) -> Summary<'_> {
        let Some(status) = &self.status else {
            return Summary::default();
        };
        let progress = status.progress.clone().unwrap_or_default();
        Summary {
            phase: status.phase,
            volumes: progress.volumes,
            total_items: progress.total_items,
            items_done: progress.items_backed_up,
            transfers: status.pod_volume_backups.clone().unwrap_or_default(),
            started: status.start_timestamp.as_ref(),
            completed: status.completion_timestamp.as_ref(),
            validation_errors: &status.validation_errors,
            warnings: &status.warnings,
            errors: &status.errors,
        }
    }
}

impl Operation for Restore {
    const KIND: &'static str = "Restore";
    const TRANSFER_LABEL: &'static str = label::RESTORE_NAME;
    const ITEMS_DONE: &'static str = "restored";
    type Transfer = PodVolumeRestore;

    fn summary(&self) -> Summary<'_> {
        let Some(status) = &self.status else {
            return Summary::default();
        };
        let progress = status.progress.clone().unwrap_or_default();
        Summary {
            phase: status.phase,
            volumes: progress.volumes,
            total_items: progress.total_items,
            items_done: progress.items_restored,
            transfers: status.pod_volume_restores.clone().unwrap_or_default(),
            started: status.start_timestamp.as_ref(),
            completed: status.completion_timestamp.as_ref(),
            validation_errors: &status.validation_errors,
            warnings: &status.warnings,
            errors: &status.errors,
        }
    }
}
