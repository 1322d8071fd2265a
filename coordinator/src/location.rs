//! The BackupStorageLocation controller: a periodic availability check by the layout rule,
//! and backup sync, which brings the backups a location holds into the cluster so that a fresh
//! cluster pointed at the same storage can restore them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use ferry_shared::crd::{
    Backup, BackupStatus, BackupStorageLocation, BackupStorageLocationStatus, OperationPhase,
    PodVolumeBackup, StorageLocationPhase,
};
use ferry_shared::layout::{self, ObjectStore, key, layout_problem};
use ferry_shared::names::{self, label};
use ferry_shared::time::{after, now, until};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::api::{ListParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use crate::context::{Context, spec_duration};
use crate::error::{Error, StorageError};

/// How long after a failed sync the next is tried.
const SYNC_RETRY: Duration = Duration::from_secs(30);

pub async fn reconcile(
    location: Arc<BackupStorageLocation>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let status = location.status.clone().unwrap_or_default();
    let periods = match Periods::of(&location, &ctx) {
        Ok(periods) => periods,
        Err(message) => {
            if status.message.as_ref() != Some(&message) {
                let next = BackupStorageLocationStatus {
                    phase: Some(StorageLocationPhase::Unavailable),
                    message: Some(message),
                    last_validation_time: Some(now()),
                    ..status.clone()
                };
                ctx.apply_status(&*location, &next).await?;
            }
            return Ok(Action::await_change());
        }
    };
    let mut next = status.clone();
    let store = validate_when_due(&location, &ctx, &periods, &mut next).await;
    let sync_failed = sync_when_due(&location, &ctx, &periods, &mut next, store).await;
    if next != status {
        ctx.apply_status(&*location, &next).await?;
    }
    Ok(periods.next_action(&next, sync_failed))
}

/// How often a location is validated and synced; zero means never.
struct Periods {
    validation: Duration,
    sync: Duration,
}

impl Periods {
    fn of(location: &BackupStorageLocation, ctx: &Context) -> Result<Self, String> {
        Ok(Self {
            validation: spec_duration(
                location.spec.validation_frequency.as_deref(),
                "validationFrequency",
                ctx.settings.validation_frequency,
            )?,
            sync: spec_duration(
                location.spec.sync_period.as_deref(),
                "syncPeriod",
                ctx.settings.sync_period,
            )?,
        })
    }

    /// Whether work done every `period`, last at `last`, is due.
    fn due(period: Duration, last: Option<&Time>) -> bool {
        !period.is_zero() && last.is_none_or(|last| until(&after(last, period)).is_zero())
    }

    /// When to look again: at the next validation or sync, and after a failed sync not before
    /// a while, rather than list the bucket again at once.
    fn next_action(&self, status: &BackupStorageLocationStatus, sync_failed: bool) -> Action {
        let floor = if sync_failed {
            SYNC_RETRY
        } else {
            Duration::from_millis(500)
        };
        [
            (self.validation, status.last_validation_time.as_ref()),
            (self.sync, status.last_synced_time.as_ref()),
        ]
        .into_iter()
        .filter(|(period, _)| !period.is_zero())
        .map(|(period, last)| last.map_or(Duration::ZERO, |last| until(&after(last, period))))
        .min()
        .map_or_else(Action::await_change, |wait| {
            Action::requeue(wait.max(floor))
        })
    }
}

/// Checks the location when a check is due, none was made or the spec changed since, recording
/// the outcome in `next` and an Event when the phase changes; the store when the check reached
/// it.
async fn validate_when_due(
    location: &BackupStorageLocation,
    ctx: &Context,
    periods: &Periods,
    next: &mut BackupStorageLocationStatus,
) -> Option<ObjectStore> {
    let last = next.last_validation_time.as_ref();
    let generation = location.metadata.generation;
    let changed = next.observed_generation != generation;
    if !Periods::due(periods.validation, last) && next.phase.is_some() && !changed {
        return None;
    }
    let (phase, message, reached) = check(ctx, &location.name_any()).await;
    if next.phase != Some(phase) {
        let note =
            (message.clone()).unwrap_or_else(|| "the storage location is available".to_owned());
        let warning = phase == StorageLocationPhase::Unavailable;
        ctx.event(location, warning, &format!("{phase:?}"), note)
            .await;
    }
    next.phase = Some(phase);
    next.message = message;
    next.last_validation_time = Some(now());
    next.observed_generation = generation;
    reached
}

/// Syncs the location's backups when a sync is due and the location is available; returns
/// whether a sync failed.
async fn sync_when_due(
    location: &BackupStorageLocation,
    ctx: &Context,
    periods: &Periods,
    next: &mut BackupStorageLocationStatus,
    store: Option<ObjectStore>,
) -> bool {
    let available = next.phase == Some(StorageLocationPhase::Available);
    if !available || !Periods::due(periods.sync, next.last_synced_time.as_ref()) {
        return false;
    }
    let name = location.name_any();
    let store = match store {
        Some(store) => Some(store),
        None => check(ctx, &name).await.2,
    };
    let Some(store) = store else {
        return true;
    };
    match sync_backups(ctx, &name, &store).await {
        Ok(()) => {
            next.last_synced_time = Some(now());
            false
        }
        Err(err) => {
            warn!(location = %name, %err, "backup sync failed");
            true
        }
    }
}

/// Whether the location answers and holds Ferry's layout; the store when it answers.
async fn check(
    ctx: &Context,
    name: &str,
) -> (StorageLocationPhase, Option<String>, Option<ObjectStore>) {
    let result = async {
        let location = ctx.location(name).await??;
        let store = location.store(&ctx.store_retrier)?;
        let top_level = store.top_level().await.map_err(StorageError::from)?;
        Ok::<_, Error>(match layout_problem(&top_level) {
            Some(problem) => Err(problem),
            None => Ok(store),
        })
    }
    .await;
    match result
        .map_err(|err| err.to_string())
        .and_then(|reached| reached)
    {
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
    let in_store = store.backups().await.map_err(StorageError::from)?;
    // Backups already whole in the cluster; a synced one still New was cut short and is
    // finished now.
    let in_cluster: BTreeSet<String> = ctx
        .api::<Backup>()
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter(|backup| {
            !(backup
                .annotations()
                .contains_key(names::annotation::SYNCED_FROM)
                && backup.phase() == OperationPhase::New)
        })
        .map(ResourceExt::name_any)
        .collect();
    for name in in_store.iter().filter(|name| !in_cluster.contains(*name)) {
        if let Err(err) = sync_one(ctx, location, store, name).await {
            warn!(backup = %name, %err, "cannot sync backup");
        }
    }
    Ok(())
}

/// A backup as its location keeps it: the Backup and its PodVolumeBackups.
struct Stored {
    backup: Backup,
    pvbs: Vec<PodVolumeBackup>,
}

impl Stored {
    /// Reads the backup `name`; None when it has been deleted since the listing.
    async fn read(store: &ObjectStore, name: &str) -> Result<Option<Self>, StorageError> {
        let Some(metadata) = store.get(&key::backup_metadata(name)).await? else {
            return Ok(None);
        };
        let backup = serde_json::from_slice(&metadata).map_err(StorageError::json(format!(
            "backup {name}'s ferry-backup.json"
        )))?;
        let pvbs = match store.get(&key::pod_volume_backups(name)).await? {
            Some(bytes) => serde_json::from_slice(&layout::gunzip(&bytes)?).map_err(
                StorageError::json(format!("backup {name}'s PodVolumeBackup list")),
            )?,
            None => Vec::new(),
        };
        Ok(Some(Self { backup, pvbs }))
    }
}

async fn sync_one(
    ctx: &Context,
    location: &str,
    store: &ObjectStore,
    name: &str,
) -> Result<(), Error> {
    let Some(stored) = Stored::read(store, name).await? else {
        return Ok(());
    };
    let mut backup = Backup::new(name, stored.backup.spec.clone());
    backup.spec.storage_location = Some(location.to_owned());
    backup.metadata.labels = stored.backup.metadata.labels.clone();
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
    let owner = created.controller_owner_ref(&()).ok_or(Error::Incomplete {
        kind: "Backup",
        field: "UID",
    })?;
    for stored_pvb in &stored.pvbs {
        if stored_pvb
            .spec
            .tags
            .get(names::tag::BACKUP)
            .map(String::as_str)
            != Some(name)
        {
            warn!(backup = %name, pvb = %stored_pvb.name_any(), "skipping a PodVolumeBackup of another backup");
            continue;
        }
        sync_pod_volume_backup(ctx, name, stored_pvb, &owner).await?;
    }
    let status: BackupStatus = stored.backup.status.clone().unwrap_or_default();
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

/// Creates one PodVolumeBackup of the synced backup `name`, owned by its new Backup, with the
/// status it ended with.
async fn sync_pod_volume_backup(
    ctx: &Context,
    name: &str,
    stored: &PodVolumeBackup,
    owner: &OwnerReference,
) -> Result<(), Error> {
    let api = ctx.api::<PodVolumeBackup>();
    let mut pvb = PodVolumeBackup::new(&stored.name_any(), stored.spec.clone());
    // Labels are made anew; none for a node, so that no node agent takes it up again: it
    // records a transfer that has ended.
    let mut labels = BTreeMap::from([(label::BACKUP_NAME.to_owned(), names::label_value(name))]);
    for key in [label::BACKUP_UID, label::POD_UID, label::PVC_UID] {
        if let Some(value) = stored.labels().get(key) {
            labels.insert(key.to_owned(), value.clone());
        }
    }
    pvb.metadata.labels = Some(labels);
    pvb.metadata.annotations = stored.metadata.annotations.clone();
    pvb.metadata.owner_references = Some(vec![owner.clone()]);
    let ours = match api.create(&PostParams::default(), &pvb).await {
        Ok(_) => true,
        // Made by an earlier sync of this Backup that was cut short before its status, or
        // not sync's at all: then its status stays as it is.
        Err(kube::Error::Api(status)) if status.code == 409 => {
            api.get_opt(&pvb.name_any()).await?.is_some_and(|existing| {
                existing.status.is_none()
                    && existing
                        .owner_references()
                        .iter()
                        .any(|existing_owner| existing_owner.uid == owner.uid)
            })
        }
        Err(err) => return Err(err.into()),
    };
    if ours && let Some(pvb_status) = &stored.status {
        ctx.apply_status(&pvb, pvb_status).await?;
    }
    Ok(())
}
