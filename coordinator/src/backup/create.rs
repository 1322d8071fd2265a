//! Creating a backup's work: the pods and claims it selects, their manifests written to the
//! location first, then one PodVolumeBackup per chosen volume.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ferry_shared::crd::{Backup, BackupStatus, PodVolumeBackup, RepositoryPhase, TransferCounts};
use ferry_shared::layout::{self, key};
use ferry_shared::names::label;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Api, ListParams, PostParams};
use kube::core::Selector;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use tracing::info;

use super::finish::{fail, watch};
use crate::context::{Context, Locked, ResolvedLocation};
use crate::error::{Error, StorageError};
use crate::plan::{self, BackupTarget, VolumeChoice, choose_volumes, volume_key};
use crate::repository;

/// PodVolumeBackups created at once.
const CREATE_CONCURRENCY: usize = 16;

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
fn manifest<K: serde::Serialize + Resource>(object: &K) -> Result<Vec<u8>, StorageError> {
    let mut value = serde_json::to_value(object).map_err(StorageError::json("a manifest"))?;
    if let Some(metadata) = value.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        metadata.remove("managedFields");
    }
    serde_json::to_vec_pretty(&value).map_err(StorageError::json("a manifest"))
}

/// Chooses the volumes, writes the manifests, then creates the PodVolumeBackups.
pub(super) async fn plan_and_create(
    backup: &Backup,
    ctx: &Context,
    location: &ResolvedLocation,
    status: BackupStatus,
) -> Result<Action, Error> {
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
    // The manifests go to the location before any data: a backup without them is useless.
    if let Err(err) = write_manifests(backup, ctx, location, &pods, &claims).await {
        let message = format!("cannot write the manifests: {err}");
        return fail(backup, ctx, status, message).await;
    }
    let created = create_pod_volume_backups(backup, ctx, location, &choice, &repositories).await?;
    drop(guards);
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

/// Writes the manifests of the selected pods and their claims to the location, as one tarball.
async fn write_manifests(
    backup: &Backup,
    ctx: &Context,
    location: &ResolvedLocation,
    pods: &[Pod],
    claims: &[PersistentVolumeClaim],
) -> Result<(), StorageError> {
    let mut files = Vec::new();
    for pod in pods {
        let namespace = pod.namespace().unwrap_or_default();
        files.push((
            key::manifest("pods", &namespace, &pod.name_any()),
            manifest(pod)?,
        ));
    }
    for claim in claims {
        let namespace = claim.namespace().unwrap_or_default();
        files.push((
            key::manifest("persistentvolumeclaims", &namespace, &claim.name_any()),
            manifest(claim)?,
        ));
    }
    let tarball = layout::tar_gz(&files)?;
    let store = location.store(&ctx.store_retrier)?;
    Ok(store
        .put(&key::resources(&backup.name_any()), tarball)
        .await?)
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
        warnings: choice.skipped.iter().map(ToString::to_string).collect(),
        ..status
    };
    ctx.apply_status(backup, &status).await?;
    if total == 0 {
        return watch(backup, ctx, location, status).await;
    }
    Ok(Action::await_change())
}
