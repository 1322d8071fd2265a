//! What the agent needs to know of PodVolumeBackups and PodVolumeRestores, so that one
//! controller serves both.

use ferry_shared::crd::{PodReference, PodVolumeBackup, PodVolumeRestore};
use k8s_openapi::NamespaceResourceScope;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;

use super::metrics::Operation;

/// The status a node agent writes, whichever the kind: a PodVolumeRestore's status, of which
/// a PodVolumeBackup's is the same less `node`.
pub use ferry_shared::crd::PodVolumeRestoreStatus as TransferStatus;

/// What only one of the kinds has.
pub enum Specifics {
    Backup {
        tags: BTreeMap<String, String>,
        parent: Option<String>,
    },
    Restore {
        snapshot: String,
        /// The UID of the controlling Restore, which names the done-marker.
        restore_uid: Option<String>,
    },
}

/// A pod-volume transfer resource.
pub trait TransferKind:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Serialize
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    const OPERATION: Operation;

    fn pod(&self) -> &PodReference;
    fn volume(&self) -> &str;
    fn storage_location(&self) -> &str;
    fn repository(&self) -> &str;
    /// The namespace whose repository holds the data.
    fn repository_namespace(&self) -> &str;
    fn specifics(&self) -> Specifics;
    fn status_json(&self) -> Option<serde_json::Value>;
    fn set_status_json(&mut self, status: serde_json::Value) -> serde_json::Result<()>;

    fn transfer_status(&self) -> TransferStatus {
        self.status_json()
            .and_then(|status| serde_json::from_value(status).ok())
            .unwrap_or_default()
    }

    fn set_transfer_status(&mut self, status: &TransferStatus) -> serde_json::Result<()> {
        self.set_status_json(serde_json::to_value(status)?)
    }
}

/// Implements [`TransferKind`]; the last argument is the field naming the repository's namespace.
macro_rules! transfer_kind {
    ($kind:ty, $operation:expr, $specifics:ident, $($namespace:ident).+) => {
        impl TransferKind for $kind {
            const OPERATION: Operation = $operation;

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
            fn specifics(&self) -> Specifics {
                $specifics(self)
            }
            fn status_json(&self) -> Option<serde_json::Value> {
                self.status.as_ref().and_then(|status| serde_json::to_value(status).ok())
            }
            fn set_status_json(&mut self, status: serde_json::Value) -> serde_json::Result<()> {
                self.status = Some(serde_json::from_value(status)?);
                Ok(())
            }
        }
    };
}

transfer_kind!(
    PodVolumeBackup,
    Operation::Backup,
    backup_specifics,
    spec.pod.namespace
);
transfer_kind!(
    PodVolumeRestore,
    Operation::Restore,
    restore_specifics,
    spec.source_namespace
);

fn backup_specifics(backup: &PodVolumeBackup) -> Specifics {
    Specifics::Backup {
        tags: backup.spec.tags.clone(),
        parent: backup.spec.parent_snapshot_id.clone(),
    }
}

fn restore_specifics(restore: &PodVolumeRestore) -> Specifics {
    Specifics::Restore {
        snapshot: restore.spec.snapshot_id.clone(),
        restore_uid: restore
            .owner_references()
            .iter()
            .find(|owner| owner.controller == Some(true) && owner.kind == "Restore")
            .map(|owner| owner.uid.clone()),
    }
}
