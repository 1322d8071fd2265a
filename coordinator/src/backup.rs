//! The Backup controller: validate → choose volumes → ensure repositories → write the
//! manifests → create PodVolumeBackups → aggregate their status → write the backup to the
//! storage location, `ferry-backup.json` last. Expired or deleted Backups go through a
//! finalizer that forgets their snapshots and removes their objects from the location.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use ferry_shared::crd::{
    Backup, BackupStatus, OperationPhase, PodVolumeBackup, RepositoryPhase, Restore, TransferCounts,
};
use ferry_shared::layout::{self, key, layout_problem};
use ferry_shared::names::{self, label};
use ferry_shared::retry::Retrier;
use ferry_shared::time::{after, now, until};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::Selector;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use crate::context::{Context, ResolvedLocation, spec_duration};
use crate::error::{Error, StorageError};
use crate::jobs::{Job, Operation};
use crate::overdue::{Tally, tally};
use crate::plan::{self, BackupTarget, choose_volumes, union, volume_key};
use crate::repository;

/// PodVolumeBackups created at once.
const CREATE_CONCURRENCY: usize = 16;

pub async fn reconcile(backup: Arc<Backup>, ctx: Arc<Context>) -> Result<Action, Error> {
    let api = ctx.api::<Backup>();
    finalizer(&api, names::BACKUP_FINALIZER, backup, |event| async {
        match event {
            FinalizerEvent::Apply(backup) => apply(&backup, &ctx).await,
            FinalizerEvent::Cleanup(backup) => cleanup(&backup, &ctx).await,
        }
    })
    .await
    .map_err(Error::from)
}

async fn apply(cached: &Backup, ctx: &Context) -> Result<Action, Error> {
    // The watch cache may not show the status this controller wrote last; every step works on
    // the Backup as it is now, so no step runs twice.
    let Some(backup) = ctx.api::<Backup>().get_opt(&cached.name_any()).await? else {
        return Ok(Action::await_change());
    };
    let backup = &backup;
    // A Backup brought in by sync records a finished backup; sync writes its status.
    if backup
        .annotations()
        .contains_key(names::annotation::SYNCED_FROM)
        && backup.phase() == OperationPhase::New
    {
        return Ok(Action::await_change());
    }
    match backup.phase() {
        OperationPhase::New => start(backup, ctx).await,
        OperationPhase::InProgress => progress(backup, ctx).await,
        _ => expire_when_due(backup, ctx).await,
    }
}

/// What the spec alone says is wrong.
pub fn spec_errors(backup: &Backup, settings: &crate::config::RunArgs) -> Vec<String> {
    let spec = &backup.spec;
    let mut errors = Vec::new();
    if let Err(err) = spec_duration(spec.ttl.as_deref(), "ttl", settings.default_backup_ttl) {
        errors.push(err);
    }
    if let Err(err) = spec_duration(
        spec.volume_timeout.as_deref(),
        "volumeTimeout",
        settings.default_volume_timeout,
    ) {
        errors.push(err);
    }
    if let Some(selector) = &spec.label_selector
        && let Err(err) = Selector::try_from(selector.clone())
    {
        errors.push(format!("labelSelector is not valid: {err}"));
    }
    for namespace in spec
        .included_namespaces
        .iter()
        .chain(&spec.excluded_namespaces)
    {
        if namespace != "*" && !ferry_shared::storage::is_dns_label(namespace) {
            errors.push(format!("{namespace:?} is not a namespace name"));
        }
    }
    errors
}

/// Validates, then moves the Backup to InProgress, or to FailedValidation with the reasons.
async fn start(backup: &Backup, ctx: &Context) -> Result<Action, Error> {
    let name = backup.name_any();
    let mut errors = spec_errors(backup, &ctx.settings);
    let location_name = match &backup.spec.storage_location {
        Some(location) if !location.is_empty() => Some(location.clone()),
        _ => match ctx.default_location().await? {
            Ok(location) => Some(location),
            Err(err) => {
                errors.push(err);
                None
            }
        },
    };
    if let Some(location_name) = &location_name {
        match ctx.location(location_name).await? {
            Err(err) => errors.push(err.to_string()),
            Ok(location) if location.read_only() => errors.push(format!(
                "storage location {location_name} is ReadOnly; backups cannot be written to it"
            )),
            Ok(location) => {
                if let Err(err) = writable(&location, &name, &ctx.store_retrier).await {
                    errors.push(err);
                }
            }
        }
    }
    let started = now();
    let ttl = spec_duration(
        backup.spec.ttl.as_deref(),
        "ttl",
        ctx.settings.default_backup_ttl,
    )
    .unwrap_or(ctx.settings.default_backup_ttl);
    let expiration = Some(after(&started, ttl));
    if !errors.is_empty() {
        warn!(%name, ?errors, "backup failed validation");
        ctx.event(backup, true, "FailedValidation", errors.join("; "))
            .await;
        ctx.apply_status(
            backup,
            &BackupStatus {
                phase: OperationPhase::FailedValidation,
                validation_errors: errors,
                completion_timestamp: Some(started),
                expiration,
                ..BackupStatus::default()
            },
        )
        .await?;
        ctx.metrics.backup_ended(
            OperationPhase::FailedValidation,
            0.0,
            &schedule_of(backup),
            0.0,
        );
        return Ok(Action::await_change());
    }
    if backup
        .spec
        .storage_location
        .as_deref()
        .unwrap_or_default()
        .is_empty()
    {
        // The default location becomes the backup's own, as if the user had named it.
        ctx.api::<Backup>()
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"storageLocation": location_name}})),
            )
            .await?;
    }
    info!(%name, "backup started");
    ctx.event(
        backup,
        false,
        "Started",
        format!(
            "backing up to storage location {}",
            location_name.unwrap_or_default()
        ),
    )
    .await;
    ctx.apply_status(
        backup,
        &BackupStatus {
            phase: OperationPhase::InProgress,
            start_timestamp: Some(started),
            expiration,
            ..BackupStatus::default()
        },
    )
    .await?;
    Ok(Action::await_change())
}

/// Whether the backup `name` may be written to the location: it answers, holds Ferry's layout
/// and no backup of that name.
async fn writable(
    location: &ResolvedLocation,
    name: &str,
    retrier: &Retrier,
) -> Result<(), String> {
    let store = location.store(retrier).map_err(|err| err.to_string())?;
    let location = location.name();
    let unreachable = |err: ferry_shared::layout::StoreError| {
        format!("storage location {location} is unreachable: {err}")
    };
    let top_level = store.top_level().await.map_err(unreachable)?;
    if let Some(problem) = layout_problem(&top_level) {
        return Err(format!(
            "storage location {location} is unusable: {problem}"
        ));
    }
    if store.has_backup(name).await.map_err(unreachable)? {
        return Err(format!(
            "a backup named {name} already exists in storage location {location}"
        ));
    }
    Ok(())
}

fn schedule_of(backup: &Backup) -> String {
    backup
        .labels()
        .get(label::SCHEDULE_NAME)
        .cloned()
        .unwrap_or_default()
}

async fn progress(backup: &Backup, ctx: &Context) -> Result<Action, Error> {
    let status = backup.status.clone().unwrap_or_default();
    let location_name = backup.spec.storage_location.clone().unwrap_or_default();
    let location = match ctx.location(&location_name).await? {
        Ok(location) => location,
        Err(err) => return fail(backup, ctx, status, err.to_string()).await,
    };
    match status.pod_volume_backups {
        None => plan_and_create(backup, ctx, &location, status).await,
        Some(_) => watch(backup, ctx, &location, status).await,
    }
}

/// Ends the backup Failed, removing whatever it wrote to the location.
async fn fail(
    backup: &Backup,
    ctx: &Context,
    status: BackupStatus,
    error: String,
) -> Result<Action, Error> {
    let name = backup.name_any();
    warn!(%name, %error, "backup failed");
    if let Ok(Ok(location)) = ctx
        .location(backup.spec.storage_location.as_deref().unwrap_or_default())
        .await
        && let Ok(store) = location.store(&ctx.store_retrier)
        && let Err(err) = store.delete_dir(&key::backup_dir(&name)).await
    {
        warn!(%name, %err, "cannot remove the failed backup's objects");
    }
    ctx.event(backup, true, "Failed", error.clone()).await;
    let mut errors = status.errors.clone();
    errors.push(error);
    let status = BackupStatus {
        phase: OperationPhase::Failed,
        completion_timestamp: Some(now()),
        errors,
        ..status
    };
    ctx.apply_status(backup, &status).await?;
    record_end(backup, ctx, &status);
    Ok(Action::await_change())
}

fn record_end(backup: &Backup, ctx: &Context, status: &BackupStatus) {
    let seconds = |time: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
        time.as_ref()
            .map(|t| t.0.as_millisecond() as f64 / 1000.0)
            .unwrap_or_default()
    };
    let finished = seconds(&status.completion_timestamp);
    ctx.metrics.backup_ended(
        status.phase,
        finished - seconds(&status.start_timestamp),
        &schedule_of(backup),
        finished,
    );
}

/// The pods a Backup selects.
async fn selected_pods(backup: &Backup, ctx: &Context) -> Result<Vec<Pod>, Error> {
    let spec = &backup.spec;
    let mut params = ListParams::default();
    if let Some(selector) = &spec.label_selector {
        let selector = Selector::try_from(selector.clone())?;
        params = params.labels(&selector.to_string());
    }
    let everything =
        spec.included_namespaces.is_empty() || spec.included_namespaces.iter().any(|ns| ns == "*");
    let mut pods = Vec::new();
    if everything {
        pods = Api::<Pod>::all(ctx.client.clone())
            .list(&params)
            .await?
            .items;
    } else {
        for namespace in &spec.included_namespaces {
            pods.extend(
                Api::<Pod>::namespaced(ctx.client.clone(), namespace)
                    .list(&params)
                    .await?
                    .items,
            );
        }
    }
    pods.retain(|pod| {
        !spec
            .excluded_namespaces
            .contains(&pod.namespace().unwrap_or_default())
    });
    Ok(pods)
}

/// The claims the pods mount.
async fn claims_of(ctx: &Context, pods: &[Pod]) -> Result<Vec<PersistentVolumeClaim>, Error> {
    let wanted: BTreeSet<(String, String)> = pods
        .iter()
        .flat_map(|pod| {
            let namespace = pod.namespace().unwrap_or_default();
            pod.spec
                .iter()
                .flat_map(|spec| spec.volumes.iter().flatten())
                .filter_map(|volume| volume.persistent_volume_claim.as_ref())
                .map(move |source| (namespace.clone(), source.claim_name.clone()))
        })
        .collect();
    let namespaces: BTreeSet<&String> = wanted.iter().map(|(namespace, _)| namespace).collect();
    let mut claims = Vec::new();
    for namespace in namespaces {
        let listed = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), namespace)
            .list(&ListParams::default())
            .await?;
        claims.extend(
            listed
                .items
                .into_iter()
                .filter(|claim| wanted.contains(&(namespace.clone(), claim.name_any()))),
        );
    }
    Ok(claims)
}

/// A manifest as it goes into the resources tarball: without managed fields.
fn manifest<K: serde::Serialize + Resource>(object: &K) -> Result<Vec<u8>, Error> {
    let mut value = serde_json::to_value(object).map_err(StorageError::json("a manifest"))?;
    if let Some(metadata) = value.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        metadata.remove("managedFields");
    }
    Ok(serde_json::to_vec_pretty(&value).map_err(StorageError::json("a manifest"))?)
}

async fn plan_and_create(
    backup: &Backup,
    ctx: &Context,
    location: &ResolvedLocation,
    status: BackupStatus,
) -> Result<Action, Error> {
    let name = backup.name_any();
    let uid = backup.uid().unwrap_or_default();
    let pods = selected_pods(backup, ctx).await?;
    let claims = claims_of(ctx, &pods).await?;
    let volumes = Api::<PersistentVolume>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let opt_out = backup
        .spec
        .default_volumes_to_fs_backup
        .unwrap_or(ctx.settings.default_volumes_to_fs_backup);
    let choice = choose_volumes(&pods, &claims, &volumes, opt_out);

    // Every namespace's repository must be ready, and not under maintenance.
    let namespaces: BTreeSet<&str> = choice
        .chosen
        .iter()
        .map(|chosen| chosen.pod.namespace.as_str())
        .collect();
    let mut repositories = BTreeMap::new();
    // Held until the PodVolumeBackups exist, so that maintenance cannot start in between.
    let mut guards = Vec::new();
    for namespace in namespaces {
        let repo = repository::ensure(ctx, namespace, &location.name()).await?;
        match repo.phase() {
            RepositoryPhase::Ready => {}
            // The repository's change wakes this Backup; the requeue is a safety net.
            RepositoryPhase::New => return Ok(Action::requeue(Duration::from_secs(10))),
            RepositoryPhase::NotReady => {
                let message = repo
                    .status
                    .and_then(|status| status.message)
                    .unwrap_or_default();
                return fail(
                    backup,
                    ctx,
                    status,
                    format!("the repository of namespace {namespace} is not ready: {message}"),
                )
                .await;
            }
        }
        let identifier = match location.repository(namespace) {
            Ok(repository) => repository.restic_identifier(),
            Err(err) => return fail(backup, ctx, status, err.to_string()).await,
        };
        let Some(guard) = ctx.try_lock_repository(&identifier) else {
            info!(name = %backup.name_any(), %namespace, "waiting for repository maintenance to end");
            return Ok(Action::requeue(Duration::from_secs(5)));
        };
        guards.push(guard);
        repositories.insert(namespace.to_owned(), identifier);
    }

    // The manifests go to the location before any data: a backup without them is useless.
    let mut files = Vec::new();
    for pod in &pods {
        files.push((
            key::manifest(
                "pods",
                &pod.namespace().unwrap_or_default(),
                &pod.name_any(),
            ),
            manifest(pod)?,
        ));
    }
    for claim in &claims {
        files.push((
            key::manifest(
                "persistentvolumeclaims",
                &claim.namespace().unwrap_or_default(),
                &claim.name_any(),
            ),
            manifest(claim)?,
        ));
    }
    let upload = async {
        let tarball = layout::tar_gz(&files)?;
        let store = location.store(&ctx.store_retrier)?;
        Ok::<_, StorageError>(store.put(&key::resources(&name), tarball).await?)
    };
    if let Err(err) = upload.await {
        return fail(
            backup,
            ctx,
            status,
            format!("cannot write the manifests: {err}"),
        )
        .await;
    }

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
            let mut pvb = plan::pod_volume_backup(
                &target,
                chosen,
                &repositories[&chosen.pod.namespace],
                &all,
            );
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
    drop(guards);
    let total = u32::try_from(choice.chosen.len()).unwrap_or(u32::MAX);
    info!(%name, total, created, skipped = choice.skipped.len(), "pod volume backups created");
    ctx.event(
        backup,
        false,
        "VolumesChosen",
        format!(
            "{total} volume(s) to back up, {} skipped",
            choice.skipped.len()
        ),
    )
    .await;
    let status = BackupStatus {
        pod_volume_backups: Some(TransferCounts {
            total,
            ..TransferCounts::default()
        }),
        warnings: choice.skipped.iter().map(ToString::to_string).collect(),
        ..status
    };
    ctx.apply_status(backup, &status).await?;
    if total == 0 {
        return watch(backup, ctx, location, status).await;
    }
    Ok(Action::await_change())
}

async fn watch(
    backup: &Backup,
    ctx: &Context,
    location: &ResolvedLocation,
    status: BackupStatus,
) -> Result<Action, Error> {
    let uid = backup.uid().unwrap_or_default();
    let api = ctx.api::<PodVolumeBackup>();
    let selector = format!("{}={uid}", label::BACKUP_UID);
    let pvbs = api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items;
    let timeout = spec_duration(
        backup.spec.volume_timeout.as_deref(),
        "volumeTimeout",
        ctx.settings.default_volume_timeout,
    )
    .unwrap_or(ctx.settings.default_volume_timeout);

    let planned = status
        .pod_volume_backups
        .as_ref()
        .map_or(0, |counts| counts.total);
    let Tally {
        kept,
        timed_out,
        sum,
        next_deadline,
    } = tally(
        &api,
        pvbs,
        timeout,
        planned,
        &status.timed_out_volumes,
        |volume| {
            format!(
                "volume {volume} timed out after {}",
                humantime::format_duration(timeout)
            )
        },
    )
    .await?;
    let mut next = BackupStatus {
        pod_volume_backups: Some(sum.counts.clone()),
        progress: Some(sum.progress.clone()),
        warnings: union(status.warnings.clone(), sum.warnings.clone()),
        timed_out_volumes: timed_out,
        ..status.clone()
    };
    if !sum.finished() {
        if next != status {
            ctx.apply_status(backup, &next).await?;
        }
        return Ok(next_deadline.map_or_else(Action::await_change, Action::requeue));
    }
    next.phase = sum.final_phase();
    next.completion_timestamp = Some(now());
    next.errors = union(next.errors, sum.errors.clone());
    let mut finished = backup.clone();
    finished.status = Some(next.clone());
    if let Err(err) = write_backup(&finished, &kept, location, ctx).await {
        return fail(
            backup,
            ctx,
            next,
            format!(
                "cannot write the backup to storage location {}: {err}",
                location.name()
            ),
        )
        .await;
    }
    info!(name = %backup.name_any(), phase = ?next.phase, "backup finished");
    ctx.event(
        backup,
        next.phase != OperationPhase::Completed,
        &format!("{:?}", next.phase),
        format!(
            "{} of {} volume(s) backed up",
            sum.counts.completed, sum.counts.total
        ),
    )
    .await;
    ctx.apply_status(backup, &next).await?;
    record_end(backup, ctx, &next);
    expire_when_due(&finished, ctx).await
}

/// The backup's log: what was chosen and skipped, and how each volume went.
fn backup_log(backup: &Backup, pvbs: &[PodVolumeBackup]) -> String {
    let status = backup.status.clone().unwrap_or_default();
    let time = |t: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
        t.as_ref().map(|t| t.0.to_string()).unwrap_or_default()
    };
    let mut lines = vec![format!(
        "{} backup {} started, storage location {}",
        time(&status.start_timestamp),
        backup.name_any(),
        backup.spec.storage_location.as_deref().unwrap_or_default()
    )];
    lines.extend(status.warnings.iter().map(|w| format!("warning: {w}")));
    for pvb in pvbs {
        let pvb_status = pvb.status.clone().unwrap_or_default();
        let progress = pvb_status.progress.unwrap_or_default();
        lines.push(format!(
            "{} volume {} of pod {}/{}: {:?}, snapshot {}, {} bytes in {} files{}",
            time(&pvb_status.completion_timestamp),
            pvb.spec.volume,
            pvb.spec.pod.namespace,
            pvb.spec.pod.name,
            pvb_status.phase,
            pvb_status.snapshot_id.as_deref().unwrap_or("none"),
            progress.total_bytes,
            progress.total_files,
            pvb_status
                .message
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        ));
    }
    lines.extend(status.errors.iter().map(|e| format!("error: {e}")));
    lines.push(format!(
        "{} backup {} ended {:?}",
        time(&status.completion_timestamp),
        backup.name_any(),
        status.phase
    ));
    lines.join("\n") + "\n"
}

/// Writes the PodVolumeBackup list, the log and, last, the Backup itself.
async fn write_backup(
    backup: &Backup,
    pvbs: &[PodVolumeBackup],
    location: &ResolvedLocation,
    ctx: &Context,
) -> Result<(), StorageError> {
    let name = backup.name_any();
    let store = location.store(&ctx.store_retrier)?;
    let list = serde_json::to_vec(pvbs).map_err(StorageError::json("the PodVolumeBackups"))?;
    let metadata = serde_json::to_vec_pretty(&stored_backup(backup))
        .map_err(StorageError::json("the Backup"))?;
    store
        .put(&key::pod_volume_backups(&name), layout::gzip(&list))
        .await?;
    store
        .put(
            &key::backup_logs(&name),
            layout::gzip(backup_log(backup, pvbs).as_bytes()),
        )
        .await?;
    Ok(store.put(&key::backup_metadata(&name), metadata).await?)
}

/// The Backup as the location keeps it: name, labels, spec and status.
fn stored_backup(backup: &Backup) -> serde_json::Value {
    json!({
        "apiVersion": Backup::api_version(&()),
        "kind": Backup::kind(&()),
        "metadata": {
            "name": backup.name_any(),
            "labels": backup.labels(),
            "uid": backup.uid(),
        },
        "spec": backup.spec,
        "status": backup.status,
    })
}

async fn expire_when_due(backup: &Backup, ctx: &Context) -> Result<Action, Error> {
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

/// The finalizer: forget the backup's snapshots, remove its objects from the location, and
/// delete its PodVolumeBackups.
async fn cleanup(backup: &Backup, ctx: &Context) -> Result<Action, Error> {
    let name = backup.name_any();
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
