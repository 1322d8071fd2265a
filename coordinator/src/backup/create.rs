//! Creating a backup's work: the objects it selects, written to the location first, then one
//! PodVolumeBackup per chosen volume.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ferry_shared::crd::{
    Backup, BackupProgress, BackupStatus, PodVolumeBackup, RepositoryPhase, TransferCounts,
};
use ferry_shared::layout::{self, key};
use ferry_shared::names::label;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use tracing::info;

use super::collect::{Collected, collect};
use super::finish::{fail, watch};
use super::hooks::{leave_out_blocked, run_pre_hooks};
use crate::context::{Context, Locked, ResolvedLocation};
use crate::error::{Error, StorageError};
use crate::plan::{self, BackupTarget, VolumeChoice, choose_volumes, union, volume_key};
use crate::repository;

/// PodVolumeBackups created at once.
const CREATE_CONCURRENCY: usize = 16;

/// Collects the objects, chooses the volumes, writes the objects, runs the pods' pre hooks, then
/// creates the PodVolumeBackups of the pods whose pre hooks did not fail.
pub(super) async fn plan_and_create(
    backup: &Backup,
    ctx: &Context,
    location: &ResolvedLocation,
    status: BackupStatus,
) -> Result<Action, Error> {
    let collected = collect(backup, ctx).await?;
    let pods: Vec<Pod> = collected.typed("pods");
    let claims: Vec<PersistentVolumeClaim> = collected.typed("persistentvolumeclaims");
    let volumes = Api::<PersistentVolume>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let opt_out = backup
        .spec
        .default_volumes_to_fs_backup
        .unwrap_or(ctx.settings.default_volumes_to_fs_backup);
    let choice = choose_volumes(&pods, &claims, &volumes, opt_out);
    let namespaces: BTreeSet<String> = choice
        .chosen
        .iter()
        .map(|chosen| chosen.pod.namespace.clone())
        .collect();
    if let Err(not_ready) = repositories_ready(backup, ctx, location, &namespaces).await? {
        return match not_ready {
            NotReady::Wait(action) => Ok(action),
            NotReady::Failed(message) => fail(backup, ctx, status, message).await,
        };
    }
    // Held until the PodVolumeBackups exist, so that maintenance cannot start in between.
    let (guards, repositories) = match ctx.lock_repositories(location, &namespaces) {
        Locked::Held {
            guards,
            identifiers,
        } => (guards, identifiers),
        Locked::Busy(namespace) => {
            info!(name = %backup.name_any(), %namespace, "waiting for repository maintenance to end");
            return Ok(Action::requeue(Duration::from_secs(5)));
        }
        Locked::Failed(message) => return fail(backup, ctx, status, message).await,
    };
    // The objects go to the location before any data: a backup without them is useless.
    if let Err(err) = write_items(backup, ctx, location, &collected).await {
        let message = format!("cannot write the backup's objects: {err}");
        return fail(backup, ctx, status, message).await;
    }
    let status = run_pre_hooks(backup, ctx, &pods, status).await?;
    let choice = leave_out_blocked(choice, &status.hooks.pre_hooks_ran);
    let created = create_pod_volume_backups(backup, ctx, location, &choice, &repositories).await?;
    drop(guards);
    let status = collected_status(status, collected);
    volumes_chosen(backup, ctx, location, status, &choice, created).await
}

/// Why a backup cannot create its transfers yet.
enum NotReady {
    /// A repository is being made ready.
    Wait(Action),
    /// A repository cannot be made ready.
    Failed(String),
}

/// Whether the repository of every namespace is ready.
async fn repositories_ready(
    backup: &Backup,
    ctx: &Context,
    location: &ResolvedLocation,
    namespaces: &BTreeSet<String>,
) -> Result<Result<(), NotReady>, Error> {
    for namespace in namespaces {
        let repo = repository::ensure(ctx, namespace, &location.name()).await?;
        match repo.phase() {
            RepositoryPhase::Ready => {}
            // The repository's change wakes this Backup; the requeue is a safety net.
            RepositoryPhase::New => {
                info!(name = %backup.name_any(), %namespace, "waiting for the repository");
                return Ok(Err(NotReady::Wait(Action::requeue(Duration::from_secs(
                    10,
                )))));
            }
            RepositoryPhase::NotReady => {
                let message = repo
                    .status
                    .and_then(|status| status.message)
                    .unwrap_or_default();
                return Ok(Err(NotReady::Failed(format!(
                    "the repository of namespace {namespace} is not ready: {message}"
                ))));
            }
        }
    }
    Ok(Ok(()))
}

/// Writes the backup's objects to the location, as one tarball.
async fn write_items(
    backup: &Backup,
    ctx: &Context,
    location: &ResolvedLocation,
    collected: &Collected,
) -> Result<(), StorageError> {
    let files = (collected.items.iter()).map(|(path, json)| (path.to_path(), json.as_slice()));
    let tarball = layout::tar_gz(files)?;
    let store = location.store(&ctx.store_retrier)?;
    Ok(store
        .put(&key::resources(&backup.name_any()), tarball)
        .await?)
}

/// The status once the objects are written: how many, what could not be read, and the types
/// lost, which make the backup PartiallyFailed.
fn collected_status(status: BackupStatus, collected: Collected) -> BackupStatus {
    let items = collected.items.len() as u64;
    let mut errors = status.errors;
    if !collected.lost.is_empty() {
        errors = union(
            errors,
            [format!(
                "the backup lacks the objects of {} type(s) that could not be listed: {}",
                collected.lost.len(),
                collected.lost.join(", ")
            )],
        );
    }
    BackupStatus {
        progress: Some(BackupProgress {
            total_items: items,
            items_backed_up: items,
            ..BackupProgress::default()
        }),
        warnings: union(status.warnings, collected.warnings),
        errors,
        ..status
    }
}

/// Creates the PodVolumeBackups of the chosen volumes that an earlier pass did not; returns
/// how many it created.
async fn create_pod_volume_backups(
    backup: &Backup,
    ctx: &Context,
    location: &ResolvedLocation,
    choice: &VolumeChoice,
    repositories: &BTreeMap<String, String>,
) -> Result<usize, Error> {
    let name = backup.name_any();
    let uid = backup.uid().unwrap_or_default();
    let api = ctx.api::<PodVolumeBackup>();
    let all = api.list(&ListParams::default()).await?.items;
    let existing: BTreeSet<String> = all
        .iter()
        .filter(|pvb| pvb.labels().get(label::BACKUP_UID) == Some(&uid))
        .map(|pvb| volume_key(&pvb.spec.pod.uid, &pvb.spec.volume))
        .collect();
    let owner = backup.controller_owner_ref(&()).ok_or(Error::Incomplete {
        kind: "Backup",
        field: "UID",
    })?;
    let location_name = location.name();
    let target = BackupTarget {
        backup_name: &name,
        backup_uid: &uid,
        storage_location: &location_name,
    };
    let to_create: Vec<PodVolumeBackup> = choice
        .chosen
        .iter()
        .filter(|chosen| !existing.contains(&volume_key(&chosen.pod.uid, &chosen.volume)))
        .map(|chosen| {
            let repository = &repositories[&chosen.pod.namespace];
            let mut pvb = plan::pod_volume_backup(&target, chosen, repository, &all);
            pvb.metadata.owner_references = Some(vec![owner.clone()]);
            pvb
        })
        .collect();
    let created = to_create.len();
    futures::stream::iter(to_create)
        .map(|pvb| {
            let api = api.clone();
            async move { api.create(&PostParams::default(), &pvb).await }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(created)
}

/// Records what was chosen: an Event, and the status that moves the backup on to watching its
/// volumes.
async fn volumes_chosen(
    backup: &Backup,
    ctx: &Context,
    location: &ResolvedLocation,
    status: BackupStatus,
    choice: &VolumeChoice,
    created: usize,
) -> Result<Action, Error> {
    let total = u32::try_from(choice.chosen.len()).unwrap_or(u32::MAX);
    let skipped = choice.skipped.len();
    info!(name = %backup.name_any(), total, created, skipped, "pod volume backups created");
    let note = format!("{total} volume(s) to back up, {skipped} skipped");
    ctx.event(backup, false, "VolumesChosen", note).await;
    let status = BackupStatus {
        pod_volume_backups: Some(TransferCounts {
            total,
            ..TransferCounts::default()
        }),
        warnings: union(
            status.warnings.clone(),
            choice.skipped.iter().map(ToString::to_string),
        ),
        skipped_volumes: choice.skipped.clone(),
        ..status
    };
    ctx.apply_status(backup, &status).await?;
    if total == 0 {
        return watch(backup, ctx, location, status).await;
    }
    Ok(Action::await_change())
}
