//! Creating a restore's objects: read the backup's objects, plan what to restore and where,
//! lock the repositories, create the objects stage by stage (each pod with the
//! PodVolumeRestores of its volumes), and record what became of each.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ferry_shared::crd::{
    Backup, PodReference, PodVolumePhase, PodVolumeRestore, PodVolumeRestoreSpec,
    PodVolumeTransfer, Restore, RestoreStatus,
};
use ferry_shared::layout::{self, key};
use ferry_shared::names::{self, label};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, ListParams, PostParams};
use kube::core::Selector;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use tracing::info;

use super::finish::fail;
use super::plan::{self, BackedUp, ManifestError, RestorePlan, Selection, read_items};
use super::run::{Run, Snapshots};
use super::validate::reject;
use crate::context::{Context, Locked, ResolvedLocation};
use crate::error::{Error, StorageError};
use crate::plan::generate_name_prefix;
use crate::protected;
use crate::resources::{ClusterScope, NamespaceFilter, ResourceFilter, ServedType, discover};
use ferry_shared::storage::LookupError;

pub(super) async fn create_objects(
    restore: &Restore,
    ctx: &Context,
    status: RestoreStatus,
) -> Result<Action, Error> {
    let backup_name = status.backup_name.clone().unwrap_or_default();
    let source = match read_source(ctx, &backup_name).await? {
        Ok(source) => source,
        Err(err) => return fail(restore, ctx, status, err.to_string()).await,
    };
    let snapshots = snapshots_of(ctx, &source.backup).await?;
    let (selection, warnings) = selection(restore, ctx, &source.items).await?;
    let with_data = plan::claims_with_data(&source.items, &snapshots);
    let plan = plan::plan(&source.items, &selection, &with_data);
    // Known only now when neither the Restore nor the Backup names its namespaces.
    let placements: Vec<(String, String)> = (plan.sources().into_iter())
        .map(|source| {
            let target = protected::mapped(&restore.spec.namespace_mapping, &source);
            (source, target)
        })
        .collect();
    let denylist = ctx.settings.denied_restore_namespaces();
    if let Some(denied) = protected::denied(&placements, &denylist) {
        return reject(restore, ctx, status, vec![denied]).await;
    }
    // Held until the PodVolumeRestores exist, so that no maintenance prunes the repositories
    // they read from in between.
    let guards = match ctx.lock_repositories(&source.location, &pod_sources(&plan)) {
        Locked::Held { guards, .. } => guards,
        Locked::Busy(namespace) => {
            info!(name = %restore.name_any(), %namespace, "waiting for repository maintenance to end");
            return Ok(Action::requeue(Duration::from_secs(5)));
        }
        Locked::Failed(message) => return fail(restore, ctx, status, message).await,
    };
    let targets = placements.into_iter().map(|(_, target)| target).collect();
    let mut run = Run::new(
        restore,
        ctx,
        &source,
        &plan,
        &snapshots,
        targets,
        status.clone(),
    );
    run.warnings = warnings;
    for stage in &plan.stages {
        run.stage(stage).await?;
    }
    run.ensure_namespaces().await?;
    create_missing(ctx, &run).await?;
    drop(guards);
    run.finish(&source.location).await
}

/// What a restore's objects are made from: the backup, its location, and its objects.
pub(super) struct Source {
    pub backup: Backup,
    pub location: ResolvedLocation,
    pub location_name: String,
    pub items: Vec<BackedUp>,
}

/// Why the backup a restore reads cannot be read; the restore fails with it.
#[derive(Debug, thiserror::Error)]
enum SourceError {
    #[error("backup {0} no longer exists")]
    Gone(String),
    #[error(transparent)]
    Location(#[from] LookupError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("the objects of backup {backup} are missing from storage location {location}")]
    Missing { backup: String, location: String },
    #[error("the objects of backup {backup} cannot be read: {source}")]
    Unreadable {
        backup: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}

/// Reads the backup's objects from its location; `Ok(Err(_))` when the restore cannot go on.
async fn read_source(
    ctx: &Context,
    backup_name: &str,
) -> Result<Result<Source, SourceError>, Error> {
    let Some(backup) = ctx.api::<Backup>().get_opt(backup_name).await? else {
        return Ok(Err(SourceError::Gone(backup_name.to_owned())));
    };
    let location_name = backup.spec.storage_location.clone().unwrap_or_default();
    let location = match ctx.location(&location_name).await? {
        Ok(location) => location,
        Err(err) => return Ok(Err(err.into())),
    };
    let files = async {
        let store = location.store(&ctx.store_retrier)?;
        let tarball = (store.get(&key::resources(backup_name)).await)
            .map_err(StorageError::from)?
            .ok_or_else(|| SourceError::Missing {
                backup: backup_name.to_owned(),
                location: location_name.clone(),
            })?;
        layout::untar_gz(&tarball).map_err(|source| SourceError::Unreadable {
            backup: backup_name.to_owned(),
            source,
        })
    };
    Ok(files.await.and_then(|files| {
        Ok(Source {
            items: read_items(files)?,
            backup,
            location,
            location_name,
        })
    }))
}

/// The Restore's filters, resolved against the types the cluster serves and those of the
/// backup (whose definitions may not be restored yet); names that match neither are warnings.
async fn selection(
    restore: &Restore,
    ctx: &Context,
    items: &[BackedUp],
) -> Result<(Selection, Vec<String>), Error> {
    let discovered = discover(&ctx.client).await?;
    let mut types = discovered.types;
    for item in items {
        let known =
            (types.iter()).any(|t| t.group == item.path.group && t.plural == item.path.resource);
        if !known && let Some(served) = backed_up_type(item) {
            types.push(served);
        }
    }
    let spec = &restore.spec;
    let (resources, mut warnings) = ResourceFilter::resolve(&spec.resources, &types);
    warnings.extend(discovered.warnings);
    let namespaces = NamespaceFilter::new(&spec.included_namespaces, &spec.excluded_namespaces);
    let selector = match &spec.label_selector {
        Some(selector) => Some(Selector::try_from(selector.clone())?),
        None => None,
    };
    let selection = Selection {
        scope: ClusterScope::of(spec.resources.include_cluster_resources, &namespaces),
        namespaces,
        resources,
        selector,
    };
    Ok((selection, warnings))
}

/// A type as the backup's objects tell it.
fn backed_up_type(item: &BackedUp) -> Option<ServedType> {
    let api_version = item.text("/apiVersion")?;
    let kind = item.text("/kind")?.to_owned();
    Some(ServedType {
        group: item.path.group.clone(),
        version: api_version
            .rsplit('/')
            .next()
            .unwrap_or(api_version)
            .to_owned(),
        plural: item.path.resource.clone(),
        singular: kind.to_lowercase(),
        kind,
        short_names: Vec::new(),
        namespaced: item.path.namespace.is_some(),
        verbs: Vec::new(),
    })
}

/// The namespaces whose repositories the restored pods' volumes come from.
fn pod_sources(plan: &RestorePlan<'_>) -> BTreeSet<String> {
    (plan.stage("pods"))
        .filter_map(|item| item.path.namespace.clone())
        .collect()
}

/// The PodVolumeRestore of one volume of a restored pod.
pub(super) fn pod_volume_restore(
    restore: &Restore,
    owner: &OwnerReference,
    spec: PodVolumeRestoreSpec,
) -> PodVolumeRestore {
    let name = restore.name_any();
    let mut pvr = PodVolumeRestore::new("", spec);
    pvr.metadata.name = None;
    pvr.metadata.generate_name = Some(format!("{}-", generate_name_prefix(&name)));
    pvr.metadata.labels = Some(BTreeMap::from([
        (label::RESTORE_NAME.to_owned(), names::label_value(&name)),
        (
            label::RESTORE_UID.to_owned(),
            restore.uid().unwrap_or_default(),
        ),
        (label::POD_UID.to_owned(), pvr.spec.pod.uid.clone()),
    ]));
    pvr.metadata.owner_references = Some(vec![owner.clone()]);
    pvr
}

/// The spec of the PodVolumeRestore that fills `volume` of the restored pod.
pub(super) fn transfer_spec(
    source: &Source,
    pod: &PodReference,
    source_namespace: &str,
    volume: (&str, &str),
    repository: String,
) -> PodVolumeRestoreSpec {
    PodVolumeRestoreSpec {
        pod: pod.clone(),
        volume: volume.0.to_owned(),
        storage_location: source.location_name.clone(),
        repository,
        snapshot_id: volume.1.to_owned(),
        source_namespace: source_namespace.to_owned(),
    }
}

/// Creates the PodVolumeRestores that an earlier pass of this restore did not.
async fn create_missing(ctx: &Context, run: &Run<'_>) -> Result<(), Error> {
    let api = ctx.api::<PodVolumeRestore>();
    let selector = format!("{}={}", label::RESTORE_UID, run.identity().uid);
    let existing: BTreeSet<(String, String)> = api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .into_iter()
        .map(|pvr| (pvr.spec.pod.uid, pvr.spec.volume))
        .collect();
    for pvr in &run.pvrs {
        if !existing.contains(&(pvr.spec.pod.uid.clone(), pvr.spec.volume.clone())) {
            api.create(&PostParams::default(), pvr).await?;
        }
    }
    Ok(())
}

/// The snapshot of each backed-up volume, by (namespace, pod name, volume).
async fn snapshots_of(ctx: &Context, backup: &Backup) -> Result<Snapshots, Error> {
    let pvbs = crate::backup::owned_pod_volume_backups(ctx, backup).await?;
    Ok(pvbs
        .into_iter()
        .filter(|pvb| pvb.phase() == PodVolumePhase::Completed)
        .filter_map(|pvb| {
            let snapshot = pvb.status.as_ref()?.snapshot_id.clone()?;
            Some((
                (pvb.spec.pod.namespace, pvb.spec.pod.name, pvb.spec.volume),
                snapshot,
            ))
        })
        .collect())
}

/// Creates the namespace unless it exists.
pub(super) async fn ensure_namespace(ctx: &Context, name: &str) -> Result<(), Error> {
    let api = Api::<Namespace>::all(ctx.client.clone());
    if api.get_opt(name).await?.is_some() {
        return Ok(());
    }
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    match api.create(&PostParams::default(), &namespace).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// The owner reference that ties the PodVolumeRestores to their Restore.
pub(super) fn owner_of(restore: &Restore) -> Result<OwnerReference, Error> {
    restore.controller_owner_ref(&()).ok_or(Error::Incomplete {
        kind: "Restore",
        field: "UID",
    })
}
