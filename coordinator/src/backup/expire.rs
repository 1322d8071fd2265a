//! The end of a backup's life: deleted once its ttl has passed, and the finalizer that forgets
//! its snapshots and removes its objects from the location first.

use std::collections::BTreeMap;
use std::time::Duration;

use ferry_shared::crd::{Backup, OperationPhase, PodVolumeBackup, Restore};
use ferry_shared::layout::key;
use ferry_shared::names::{self, label};
use ferry_shared::time::until;
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams};
use kube::runtime::controller::Action;
use tracing::{info, warn};

use super::hooks::run_post_hooks_on_deletion;
use crate::context::{Context, ResolvedLocation};
use crate::error::{Error, StorageError};
use crate::jobs::{Job, Operation};

pub(super) async fn expire_when_due(backup: &Backup, ctx: &Context) -> Result<Action, Error> {
    let Some(expiration) = backup
        .status
        .as_ref()
        .and_then(|status| status.expiration.clone())
    else {
        return Ok(Action::await_change());
    };
    let left = until(&expiration);
    if !left.is_zero() {
        return Ok(Action::requeue(left));
    }
    // Nothing in a ReadOnly location may be deleted, so its backups do not expire here: sync
    // would only bring them back.
    let location = ctx
        .location(backup.spec.storage_location.as_deref().unwrap_or_default())
        .await?;
    if location.is_ok_and(|location| location.read_only()) {
        return Ok(Action::await_change());
    }
    info!(name = %backup.name_any(), "backup expired; deleting it");
    ctx.event(
        backup,
        false,
        "Expired",
        "the backup's ttl has passed; deleting it".to_owned(),
    )
    .await;
    match ctx
        .api::<Backup>()
        .delete(&backup.name_any(), &DeleteParams::default())
        .await
    {
        Ok(_) => Ok(Action::await_change()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(Action::await_change()),
        Err(err) => Err(err.into()),
    }
}

/// The finalizer: run the post hooks an unfinished backup still owes its pods, forget the
/// backup's snapshots, remove its objects from the location, and delete its PodVolumeBackups.
pub(super) async fn cleanup(backup: &Backup, ctx: &Context) -> Result<Action, Error> {
    let name = backup.name_any();
    run_post_hooks_on_deletion(backup, ctx).await?;
    let restoring: Vec<String> = ctx
        .api::<Restore>()
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter(|restore| restore.phase() == OperationPhase::InProgress)
        .filter(|restore| {
            restore
                .status
                .as_ref()
                .and_then(|s| s.backup_name.as_deref())
                == Some(name.as_str())
        })
        .map(ResourceExt::name_any)
        .collect();
    if !restoring.is_empty() {
        info!(%name, ?restoring, "deletion waits for the restores from this backup");
        return Ok(Action::requeue(Duration::from_secs(10)));
    }
    let api = ctx.api::<PodVolumeBackup>();
    let pvbs = owned_pod_volume_backups(ctx, backup).await?;
    let location_name = backup.spec.storage_location.clone().unwrap_or_default();
    let wrote_data = !matches!(
        backup.phase(),
        OperationPhase::New | OperationPhase::FailedValidation
    );
    if wrote_data && !location_name.is_empty() {
        match ctx.location(&location_name).await? {
            Err(err) => {
                warn!(%name, %err, "cannot clean up the backup's data");
                ctx.event(
                    backup,
                    true,
                    "DataLeft",
                    format!("the backup's data was left in place: {err}"),
                )
                .await;
            }
            Ok(location) if location.read_only() => {
                ctx.event(
                    backup,
                    false,
                    "DataLeft",
                    format!("storage location {location_name} is ReadOnly; the backup's data stays there"),
                )
                .await;
            }
            Ok(location) => forget_and_remove(backup, ctx, &location, &pvbs).await?,
        }
    }
    for pvb in &pvbs {
        match api.delete(&pvb.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(err) => return Err(err.into()),
        }
    }
    info!(%name, "backup deleted");
    Ok(Action::await_change())
}

/// The PodVolumeBackups this Backup owns: labelled with its name, and owned by its UID, so
/// that no other backup's records (a synced one that names it, say) are taken for its own.
pub async fn owned_pod_volume_backups(
    ctx: &Context,
    backup: &Backup,
) -> Result<Vec<PodVolumeBackup>, kube::Error> {
    let selector = format!(
        "{}={}",
        label::BACKUP_NAME,
        names::label_value(&backup.name_any())
    );
    let uid = backup.uid();
    Ok(ctx
        .api::<PodVolumeBackup>()
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .into_iter()
        .filter(|pvb| {
            pvb.owner_references()
                .iter()
                .any(|owner| Some(&owner.uid) == uid.as_ref())
        })
        .collect())
}

async fn forget_and_remove(
    backup: &Backup,
    ctx: &Context,
    location: &ResolvedLocation,
    pvbs: &[PodVolumeBackup],
) -> Result<(), Error> {
    let name = backup.name_any();
    let mut by_namespace: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pvb in pvbs {
        if let Some(snapshot) = pvb.status.as_ref().and_then(|s| s.snapshot_id.clone()) {
            by_namespace
                .entry(pvb.spec.pod.namespace.clone())
                .or_default()
                .push(snapshot);
        }
    }
    for (namespace, snapshot_ids) in by_namespace {
        let config = ctx.repository_config(location, &namespace).await?;
        let summary = ctx
            .jobs
            .run(&Job {
                repository: config,
                operation: Operation::Forget { snapshot_ids },
            })
            .await
            .map_err(|source| Error::Job {
                action: format!(
                    "forget the snapshots of backup {name} in namespace {namespace}'s repository"
                ),
                source,
            })?;
        info!(%name, %namespace, %summary, "snapshots forgotten");
    }
    let store = location.store(&ctx.store_retrier)?;
    store
        .delete_dir(&key::backup_dir(&name))
        .await
        .map_err(|err| StorageError::from(err).into())
}
