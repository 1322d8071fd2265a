//! The BackupStorageLocation controller: a periodic availability check by the layout rule,
//! and backup sync, which brings the backups a location holds into the cluster so that a fresh
//! cluster pointed at the same storage can restore them.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use ferry_shared::crd::{
    Backup, BackupStatus, BackupStorageLocation, BackupStorageLocationStatus, PodVolumeBackup,
    StorageLocationPhase,
};
use ferry_shared::layout::{self, ObjectStore, key, layout_problem};
use ferry_shared::names::{self, label};
use kube::api::{ListParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use crate::context::{Context, after, now, spec_duration, until};
use crate::error::Error;

pub async fn reconcile(
    location: Arc<BackupStorageLocation>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let name = location.name_any();
    let status = location.status.clone().unwrap_or_default();
    let validation = spec_duration(
        location.spec.validation_frequency.as_deref(),
        "validationFrequency",
        ctx.settings.validation_frequency,
    );
    let sync = spec_duration(
        location.spec.sync_period.as_deref(),
        "syncPeriod",
        ctx.settings.sync_period,
    );
    let (validation, sync) = match (validation, sync) {
        (Ok(validation), Ok(sync)) => (validation, sync),
        (Err(err), _) | (_, Err(err)) => {
            let next = BackupStorageLocationStatus {
                phase: Some(StorageLocationPhase::Unavailable),
                message: Some(err),
                last_validation_time: Some(now()),
                ..status.clone()
            };
            ctx.apply_status(&*location, &next).await?;
            return Ok(Action::await_change());
        }
    };
    let validation_due = !validation.is_zero()
        && status
            .last_validation_time
            .as_ref()
            .is_none_or(|last| until(&after(last, validation)).is_zero());
    let mut next = status.clone();
    let mut store = None;
    if validation_due || status.phase.is_none() {
        let (phase, message, reached) = check(&ctx, &name).await;
        if status.phase != Some(phase) {
            ctx.event(
                &*location,
                phase == StorageLocationPhase::Unavailable,
                &format!("{phase:?}"),
                message
                    .clone()
                    .unwrap_or_else(|| "the storage location is available".to_owned()),
            )
            .await;
        }
        next.phase = Some(phase);
        next.message = message;
        next.last_validation_time = Some(now());
        store = reached;
    }
    let sync_due = !sync.is_zero()
        && next.phase == Some(StorageLocationPhase::Available)
        && status
            .last_synced_time
            .as_ref()
            .is_none_or(|last| until(&after(last, sync)).is_zero());
    if sync_due {
        let store = match store {
            Some(store) => Some(store),
            None => check(&ctx, &name).await.2,
        };
        if let Some(store) = store {
            match sync_backups(&ctx, &name, &store).await {
                Ok(()) => next.last_synced_time = Some(now()),
                Err(err) => warn!(location = %name, %err, "backup sync failed"),
            }
        }
    }
    if next != status {
        ctx.apply_status(&*location, &next).await?;
    }
    let mut waits: Vec<Duration> = Vec::new();
    for (period, last) in [
        (validation, next.last_validation_time.as_ref()),
        (sync, next.last_synced_time.as_ref()),
    ] {
        if !period.is_zero() {
            waits.push(last.map_or(Duration::ZERO, |last| until(&after(last, period))));
        }
    }
    Ok(waits
        .into_iter()
        .min()
        .map_or_else(Action::await_change, |wait| {
            Action::requeue(wait.max(Duration::from_millis(500)))
        }))
}

/// Whether the location answers and holds Ferry's layout; the store when it answers.
async fn check(
    ctx: &Context,
    name: &str,
) -> (StorageLocationPhase, Option<String>, Option<ObjectStore>) {
    let result = async {
        let location = ctx.location(name).await?;
        let store = location.store(ctx.settings.retries)?;
        let top_level = store.top_level().await.map_err(|err| err.to_string())?;
        match layout_problem(&top_level) {
            Some(problem) => Err(problem),
            None => Ok(store),
        }
    }
    .await;
    match result {
        Ok(store) => (StorageLocationPhase::Available, None, Some(store)),
        Err(message) => {
            warn!(location = %name, %message, "storage location unavailable");
            (StorageLocationPhase::Unavailable, Some(message), None)
        }
    }
}

/// Creates the Backups (and their PodVolumeBackups) that the location holds and the cluster
/// lacks.
async fn sync_backups(ctx: &Context, location: &str, store: &ObjectStore) -> Result<(), Error> {
    let in_store = store
        .backups()
        .await
        .map_err(|err| Error::Storage(err.to_string()))?;
    let in_cluster: BTreeSet<String> = ctx
        .api::<Backup>()
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    for name in in_store.iter().filter(|name| !in_cluster.contains(*name)) {
        if let Err(err) = sync_one(ctx, location, store, name).await {
            warn!(backup = %name, %err, "cannot sync backup");
        }
    }
    Ok(())
}

async fn sync_one(
    ctx: &Context,
    location: &str,
    store: &ObjectStore,
    name: &str,
) -> Result<(), Error> {
    let storage = |err: String| Error::Storage(format!("backup {name}: {err}"));
    // Read again: the backup may have been deleted since the listing.
    let Some(metadata) = store
        .get(&key::backup_metadata(name))
        .await
        .map_err(|err| storage(err.to_string()))?
    else {
        return Ok(());
    };
    let stored: Backup = serde_json::from_slice(&metadata)
        .map_err(|err| storage(format!("ferry-backup.json is not valid: {err}")))?;
    let pvbs: Vec<PodVolumeBackup> = match store
        .get(&key::pod_volume_backups(name))
        .await
        .map_err(|err| storage(err.to_string()))?
    {
        Some(bytes) => {
            let json = layout::gunzip(&bytes).map_err(|err| storage(err.to_string()))?;
            serde_json::from_slice(&json).map_err(|err| storage(err.to_string()))?
        }
        None => Vec::new(),
    };
    let mut backup = Backup::new(name, stored.spec.clone());
    backup.spec.storage_location = Some(location.to_owned());
    backup.metadata.labels = stored.metadata.labels.clone();
    backup.metadata.annotations = Some(
        [(
            names::annotation::SYNCED_FROM.to_owned(),
            location.to_owned(),
        )]
        .into(),
    );
    let created = match ctx
        .api::<Backup>()
        .create(&PostParams::default(), &backup)
        .await
    {
        Ok(created) => created,
        Err(kube::Error::Api(status)) if status.code == 409 => return Ok(()),
        Err(err) => return Err(err.into()),
    };
    let status: BackupStatus = stored.status.clone().unwrap_or_default();
    let owner = created
        .controller_owner_ref(&())
        .ok_or_else(|| storage("the created Backup has no UID".to_owned()))?;
    let api = ctx.api::<PodVolumeBackup>();
    for stored_pvb in pvbs {
        let mut pvb = PodVolumeBackup::new(&stored_pvb.name_any(), stored_pvb.spec.clone());
        let mut labels = stored_pvb.metadata.labels.clone().unwrap_or_default();
        // No node agent may take it up again: it records a transfer that has ended.
        labels.remove(label::NODE);
        pvb.metadata.labels = Some(labels);
        pvb.metadata.annotations = stored_pvb.metadata.annotations.clone();
        pvb.metadata.owner_references = Some(vec![owner.clone()]);
        match api.create(&PostParams::default(), &pvb).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(err) => return Err(err.into()),
        }
        if let Some(pvb_status) = &stored_pvb.status {
            ctx.apply_status(&pvb, pvb_status).await?;
        }
    }
    ctx.apply_status(&created, &status).await?;
    info!(backup = %name, %location, "backup synced from the storage location");
    ctx.event(
        &created,
        false,
        "Synced",
        format!("found in storage location {location}"),
    )
    .await;
    Ok(())
}
