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
use crate::context::{Context, ResolvedLocation};
use crate::error::{Error, StorageError};
use crate::plan::{self, BackupTarget, choose_volumes, volume_key};
use crate::repository;

/// PodVolumeBackups created at once.
pub(super) const CREATE_CONCURRENCY: usize = 16;

/// The pods a Backup selects.
pub(super) async fn selected_pods(backup: &Backup, ctx: &Context) -> Result<Vec<Pod>, Error> {
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
pub(super) async fn claims_of(
    ctx: &Context,
    pods: &[Pod],
) -> Result<Vec<PersistentVolumeClaim>, Error> {
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
pub(super) fn manifest<K: serde::Serialize + Resource>(object: &K) -> Result<Vec<u8>, Error> {
    let mut value = serde_json::to_value(object).map_err(StorageError::json("a manifest"))?;
    if let Some(metadata) = value.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        metadata.remove("managedFields");
    }
    Ok(serde_json::to_vec_pretty(&value).map_err(StorageError::json("a manifest"))?)
}

pub(super) async fn plan_and_create(
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
