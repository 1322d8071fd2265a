//! What the agent needs to know of PodVolumeBackups and PodVolumeRestores beyond
//! [`PodVolumeTransfer`], so that one controller serves both.

use ferry_shared::crd::{PodVolumeBackup, PodVolumeRestore, PodVolumeTransfer};
use kube::ResourceExt;
use std::collections::BTreeMap;

use super::metrics::Operation;

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

/// A pod-volume transfer resource, as the agent runs it.
pub trait TransferKind: PodVolumeTransfer {
    const OPERATION: Operation;

    fn specifics(&self) -> Specifics;
}

impl TransferKind for PodVolumeBackup {
    const OPERATION: Operation = Operation::Backup;

    fn specifics(&self) -> Specifics {
        Specifics::Backup {
            tags: self.spec.tags.clone(),
            parent: self.spec.parent_snapshot_id.clone(),
        }
    }
}

impl TransferKind for PodVolumeRestore {
    const OPERATION: Operation = Operation::Restore;

    fn specifics(&self) -> Specifics {
        Specifics::Restore {
            snapshot: self.spec.snapshot_id.clone(),
            restore_uid: self
                .owner_references()
                .iter()
                .find(|owner| owner.controller == Some(true) && owner.kind == "Restore")
                .map(|owner| owner.uid.clone()),
        }
    }
}
