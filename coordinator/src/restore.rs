//! The Restore controller: validate → read the backup's manifests from the location →
//! recreate PVCs (binding stripped) and Pods (restore-wait init container first) → one
//! PodVolumeRestore per volume with a snapshot, labelled for its node once the pod is bound →
//! aggregate → write the results and log to the location.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use ferry_shared::crd::ExistingResourcePolicy;
use ferry_shared::crd::{
    Backup, OperationPhase, PodReference, PodVolumePhase, PodVolumeRestore, PodVolumeRestoreSpec,
    PodVolumeTransfer, Restore, RestoreStatus, TransferCounts,
};
use ferry_shared::layout::{self, key};
use ferry_shared::names::{self, label};
use ferry_shared::time::now;
use k8s_openapi::api::core::v1::{
    Capabilities, Container, Namespace, PersistentVolumeClaim, Pod, ResourceRequirements,
    SeccompProfile, SecurityContext, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::core::{Selector, SelectorExt};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde_json::json;
use tracing::{info, warn};

use crate::context::{Context, ResolvedLocation};
use crate::error::{Error, StorageError};
use crate::overdue::{Tally, tally};
use crate::plan::{generate_name_prefix, union};
use crate::protected;
use ferry_shared::storage::LookupError;

pub async fn reconcile(cached: Arc<Restore>, ctx: Arc<Context>) -> Result<Action, Error> {
    // The watch cache may not show the status this controller wrote last; every step works on
    // the Restore as it is now, so no step runs twice.
    let Some(restore) = ctx.api::<Restore>().get_opt(&cached.name_any()).await? else {
        return Ok(Action::await_change());
    };
    let status = restore.status.clone().unwrap_or_default();
    match status.phase {
        OperationPhase::New => start(&restore, &ctx).await,
        OperationPhase::InProgress if status.pod_volume_restores.is_none() => {
            create_objects(&restore, &ctx, status).await
        }
        OperationPhase::InProgress => watch(&restore, &ctx, status).await,
        _ => Ok(Action::await_change()),
    }
}

/// The backup a Restore names, or the newest Completed backup of its schedule.
fn choose_backup(
    spec_backup: Option<&str>,
    schedule: Option<&str>,
    backups: &[Backup],
) -> Result<String, String> {
    match (
        spec_backup.filter(|b| !b.is_empty()),
        schedule.filter(|s| !s.is_empty()),
    ) {
        (Some(_), Some(_)) => Err("give either backupName or scheduleName, not both".to_owned()),
        (None, None) => Err("give backupName or scheduleName".to_owned()),
        (Some(name), None) => {
            let backup = backups
                .iter()
                .find(|backup| backup.name_any() == name)
                .ok_or_else(|| format!("backup {name} does not exist"))?;
            if backup.metadata.deletion_timestamp.is_some() {
                return Err(format!("backup {name} is being deleted"));
            }
            match backup.phase() {
                OperationPhase::Completed | OperationPhase::PartiallyFailed => Ok(name.to_owned()),
                phase => Err(format!(
                    "backup {name} is {phase:?}; only Completed or PartiallyFailed backups can be restored"
                )),
            }
        }
        (None, Some(schedule)) => backups
            .iter()
            .filter(|backup| {
                backup.labels().get(label::SCHEDULE_NAME) == Some(&names::label_value(schedule))
                    && backup.phase() == OperationPhase::Completed
                    && backup.metadata.deletion_timestamp.is_none()
            })
            .max_by_key(|backup| {
                backup
                    .status
                    .as_ref()
                    .and_then(|s| s.completion_timestamp.clone())
                    .map(|t| t.0)
            })
            .map(ResourceExt::name_any)
            .ok_or_else(|| format!("schedule {schedule} has no Completed backup")),
    }
}

async fn start(restore: &Restore, ctx: &Context) -> Result<Action, Error> {
    let spec = &restore.spec;
    let backups = ctx
        .api::<Backup>()
        .list(&ListParams::default())
        .await?
        .items;
    let mut errors = Vec::new();
    let backup = choose_backup(
        spec.backup_name.as_deref(),
        spec.schedule_name.as_deref(),
        &backups,
    )
    .map_err(|err| errors.push(err))
    .ok();
    for (from, to) in &spec.namespace_mapping {
        if !ferry_shared::storage::is_dns_label(to) {
            errors.push(format!(
                "namespaceMapping {from}: {to:?} is not a namespace name"
            ));
        }
    }
    if let Some(selector) = &spec.label_selector
        && let Err(err) = Selector::try_from(selector.clone())
    {
        errors.push(format!("labelSelector is not valid: {err}"));
    }
    let backup_spec = backups
        .iter()
        .find(|candidate| Some(candidate.name_any()) == backup)
        .map(|backup| &backup.spec);
    let targets = protected::spec_targets(spec, backup_spec);
    if let Some(denied) = protected::denied(&targets, &ctx.settings.denied_restore_namespaces()) {
        errors.push(denied);
    }
    if !errors.is_empty() {
        return reject(restore, ctx, RestoreStatus::default(), errors).await;
    }
    let started = now();
    ctx.event(
        restore,
        false,
        "Started",
        format!(
            "restoring from backup {}",
            backup.clone().unwrap_or_default()
        ),
    )
    .await;
    ctx.apply_status(
        restore,
        &RestoreStatus {
            phase: OperationPhase::InProgress,
            backup_name: backup,
            start_timestamp: Some(started),
            ..RestoreStatus::default()
        },
    )
    .await?;
    Ok(Action::await_change())
}

/// Ends a Restore FailedValidation with `errors`, keeping what `status` already records.
async fn reject(
    restore: &Restore,
    ctx: &Context,
    status: RestoreStatus,
    errors: Vec<String>,
) -> Result<Action, Error> {
    warn!(name = %restore.name_any(), ?errors, "restore failed validation");
    ctx.event(restore, true, "FailedValidation", errors.join("; "))
        .await;
    ctx.apply_status(
        restore,
        &RestoreStatus {
            phase: OperationPhase::FailedValidation,
            validation_errors: errors,
            completion_timestamp: Some(now()),
            ..status
        },
    )
    .await?;
    ctx.metrics.restore_ended(OperationPhase::FailedValidation);
    Ok(Action::await_change())
}

async fn fail(
    restore: &Restore,
    ctx: &Context,
    status: RestoreStatus,
    error: String,
) -> Result<Action, Error> {
    warn!(name = %restore.name_any(), %error, "restore failed");
    ctx.event(restore, true, "Failed", error.clone()).await;
    let mut errors = status.errors.clone();
    errors.push(error);
    ctx.apply_status(
        restore,
        &RestoreStatus {
            phase: OperationPhase::Failed,
            completion_timestamp: Some(now()),
            errors,
            ..status
        },
    )
    .await?;
    ctx.metrics.restore_ended(OperationPhase::Failed);
    Ok(Action::await_change())
}

/// The Pods and PVCs of a backup's resources tarball.
#[derive(Debug, Default)]
pub struct Manifests {
    pub pods: Vec<Pod>,
    pub claims: Vec<PersistentVolumeClaim>,
}

/// A file of the resources tarball that is not a manifest.
#[derive(Debug, thiserror::Error)]
#[error("{path} is not a valid manifest: {source}")]
pub struct ManifestError {
    path: String,
    #[source]
    source: serde_json::Error,
}

pub fn read_manifests(files: Vec<(String, Vec<u8>)>) -> Result<Manifests, ManifestError> {
    let mut manifests = Manifests::default();
    for (path, bytes) in files {
        let parse_error = |source| ManifestError {
            path: path.clone(),
            source,
        };
        if path.starts_with("resources/pods/") {
            manifests
                .pods
                .push(serde_json::from_slice(&bytes).map_err(parse_error)?);
        } else if path.starts_with("resources/persistentvolumeclaims/") {
            manifests
                .claims
                .push(serde_json::from_slice(&bytes).map_err(parse_error)?);
        }
    }
    Ok(manifests)
}

/// Who is restoring: the Restore's name and UID, for labels and the done-marker.
pub struct RestoreIdentity<'a> {
    pub name: &'a str,
    pub uid: &'a str,
}

/// The restore-wait init container's image and command.
pub struct Helper<'a> {
    pub image: &'a str,
    pub command: &'a str,
}

/// Metadata for a recreated object: its name, labels and annotations, in the target namespace,
/// labelled with the restore; everything the cluster assigned is dropped.
fn restored_metadata(
    metadata: &ObjectMeta,
    namespace: &str,
    restore: &RestoreIdentity<'_>,
) -> ObjectMeta {
    let mut labels = metadata.labels.clone().unwrap_or_default();
    labels.insert(
        label::RESTORE_NAME.to_owned(),
        names::label_value(restore.name),
    );
    labels.insert(label::RESTORE_UID.to_owned(), restore.uid.to_owned());
    ObjectMeta {
        name: metadata.name.clone(),
        namespace: Some(namespace.to_owned()),
        labels: Some(labels),
        annotations: metadata.annotations.clone(),
        ..ObjectMeta::default()
    }
}

/// Annotations the control plane puts on a claim while binding it.
const BINDING_ANNOTATIONS: [&str; 5] = [
    "pv.kubernetes.io/bind-completed",
    "pv.kubernetes.io/bound-by-controller",
    "volume.kubernetes.io/selected-node",
    "volume.kubernetes.io/storage-provisioner",
    "volume.beta.kubernetes.io/storage-provisioner",
];

/// A claim as it is recreated: unbound, so the cluster provisions a fresh volume.
pub fn restored_claim(
    claim: &PersistentVolumeClaim,
    namespace: &str,
    restore: &RestoreIdentity<'_>,
) -> PersistentVolumeClaim {
    let mut metadata = restored_metadata(&claim.metadata, namespace, restore);
    if let Some(annotations) = &mut metadata.annotations {
        annotations.retain(|key, _| !BINDING_ANNOTATIONS.contains(&key.as_str()));
    }
    let mut spec = claim.spec.clone().unwrap_or_default();
    spec.volume_name = None;
    PersistentVolumeClaim {
        metadata,
        spec: Some(spec),
        status: None,
    }
}

/// Why a backed-up pod is not recreated, if it is not.
pub fn not_restored(pod: &Pod) -> Option<&'static str> {
    let phase = pod
        .status
        .as_ref()
        .and_then(|status| status.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return Some("it had already finished");
    }
    if pod
        .annotations()
        .contains_key("kubernetes.io/config.mirror")
    {
        return Some("it is a mirror pod, which the kubelet makes");
    }
    None
}

/// A pod as it is recreated: unscheduled, without owners, and with the restore-wait init
/// container first when `restored_volumes` are to be filled.
pub fn restored_pod(
    pod: &Pod,
    namespace: &str,
    restore: &RestoreIdentity<'_>,
    restored_volumes: &[String],
    helper: &Helper<'_>,
) -> Pod {
    let mut spec = pod.spec.clone().unwrap_or_default();
    spec.node_name = None;
    // The service-account token volume is added again by the API server.
    let token_volume = |name: &str| name.starts_with("kube-api-access-");
    if let Some(volumes) = &mut spec.volumes {
        volumes.retain(|volume| !token_volume(&volume.name));
    }
    for container in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        if let Some(mounts) = &mut container.volume_mounts {
            mounts.retain(|mount| !token_volume(&mount.name));
        }
    }
    let mut init = spec.init_containers.take().unwrap_or_default();
    init.retain(|container| container.name != names::RESTORE_WAIT_CONTAINER);
    if !restored_volumes.is_empty() {
        init.insert(
            0,
            restore_wait_container(restore.uid, restored_volumes, helper),
        );
    }
    spec.init_containers = (!init.is_empty()).then_some(init);
    Pod {
        metadata: restored_metadata(&pod.metadata, namespace, restore),
        spec: Some(spec),
        status: None,
    }
}

fn restore_wait_container(restore_uid: &str, volumes: &[String], helper: &Helper<'_>) -> Container {
    let quantities = |cpu: &str, memory: &str| {
        BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu.to_owned())),
            ("memory".to_owned(), Quantity(memory.to_owned())),
        ])
    };
    Container {
        name: names::RESTORE_WAIT_CONTAINER.to_owned(),
        image: Some(helper.image.to_owned()),
        command: Some(vec![helper.command.to_owned()]),
        args: Some(vec![restore_uid.to_owned()]),
        volume_mounts: Some(
            volumes
                .iter()
                .map(|volume| VolumeMount {
                    name: volume.clone(),
                    mount_path: format!("/restores/{volume}"),
                    ..VolumeMount::default()
                })
                .collect(),
        ),
        resources: Some(ResourceRequirements {
            requests: Some(quantities("10m", "16Mi")),
            limits: Some(quantities("100m", "64Mi")),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(i64::from(names::RESTORE_HELPER_USER)),
            // The node agent gives the done-markers to this user and group, so the helper can
            // remove them; without a group the runtime would run it in group 0.
            run_as_group: Some(i64::from(names::RESTORE_HELPER_USER)),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Capabilities::default()
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                ..SeccompProfile::default()
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

/// What the restore did with each object, as uploaded to the location.
#[derive(Debug, Default, Serialize)]
struct Results {
    created: Vec<String>,
    updated: Vec<String>,
    existing: Vec<String>,
    skipped: Vec<String>,
}

fn selected(
    restore: &Restore,
    selector: Option<&Selector>,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    let namespaces = &restore.spec.included_namespaces;
    (namespaces.is_empty() || namespaces.iter().any(|ns| ns == namespace || ns == "*"))
        && selector.is_none_or(|selector| selector.matches(labels))
}

fn target_namespace(restore: &Restore, namespace: &str) -> String {
    protected::mapped(&restore.spec.namespace_mapping, namespace)
}

/// Creates `object`, or deals with the one of the same name as the policy says. Returns
/// whether this restore created it.
async fn create_or_keep<K>(
    api: &Api<K>,
    object: &K,
    policy: ExistingResourcePolicy,
    what: String,
    results: &mut Results,
    warnings: &mut Vec<String>,
) -> Result<Option<K>, Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + Serialize + std::fmt::Debug,
{
    match api.create(&PostParams::default(), object).await {
        Ok(created) => {
            results.created.push(what);
            Ok(Some(created))
        }
        Err(kube::Error::Api(status)) if status.code == 409 => {
            // Made by this restore on an earlier pass that did not get to record it.
            let existing = api.get_opt(&object.name_any()).await?;
            let ours = object
                .meta()
                .labels
                .as_ref()
                .and_then(|l| l.get(label::RESTORE_UID));
            if let Some(existing) = existing
                && existing.labels().get(label::RESTORE_UID) == ours
            {
                results.created.push(what);
                return Ok(Some(existing));
            }
            match policy {
                ExistingResourcePolicy::None => {
                    warnings.push(format!("{what} already exists; left alone"));
                    results.existing.push(what);
                }
                ExistingResourcePolicy::Update => {
                    let patch = json!({"metadata": {
                        "labels": object.meta().labels,
                        "annotations": object.meta().annotations,
                    }});
                    api.patch(
                        &object.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(patch),
                    )
                    .await?;
                    warnings.push(format!(
                        "{what} already exists; its labels and annotations were updated, its spec and data left alone"
                    ));
                    results.updated.push(what);
                }
            }
            Ok(None)
        }
        Err(err) => Err(err.into()),
    }
}

async fn create_objects(
    restore: &Restore,
    ctx: &Context,
    status: RestoreStatus,
) -> Result<Action, Error> {
    let backup_name = status.backup_name.clone().unwrap_or_default();
    let source = match read_source(ctx, &backup_name).await? {
        Ok(source) => source,
        Err(err) => return fail(restore, ctx, status, err.to_string()).await,
    };
    let chosen = Chosen::of(restore, &source.manifests);
    // Known only now when neither the Restore nor the Backup names its namespaces.
    let placements = chosen.placements(restore);
    let denylist = ctx.settings.denied_restore_namespaces();
    if let Some(denied) = protected::denied(&placements, &denylist) {
        return reject(restore, ctx, status, vec![denied]).await;
    }
    // Held until the PodVolumeRestores exist, so that no maintenance prunes the repositories
    // they read from in between.
    let guards = match lock_repositories(ctx, &source.location, &chosen.sources()) {
        Locked::Held(guards) => guards,
        Locked::Busy(namespace) => {
            info!(name = %restore.name_any(), %namespace, "waiting for repository maintenance to end");
            return Ok(Action::requeue(Duration::from_secs(5)));
        }
        Locked::Failed(message) => return fail(restore, ctx, status, message).await,
    };
    let targets: BTreeSet<String> = placements.into_iter().map(|(_, target)| target).collect();
    for namespace in &targets {
        ensure_namespace(ctx, namespace).await?;
    }
    let snapshots = snapshots_of(ctx, &source.backup).await?;
    let mut creating = Creating::new(restore, ctx);
    creating.claims(&chosen.claims).await?;
    let pvrs = match creating.pods(&chosen.pods, &snapshots, &source).await? {
        Ok(pvrs) => pvrs,
        Err(err) => return fail(restore, ctx, status, err.to_string()).await,
    };
    create_missing(ctx, &creating.identity, &pvrs).await?;
    drop(guards);
    objects_created(creating, status, &source.location, pvrs.len()).await
}

/// What a restore's objects are made from: the backup, its location, and its manifests.
struct Source {
    backup: Backup,
    location: ResolvedLocation,
    location_name: String,
    manifests: Manifests,
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
    #[error("the manifests of backup {backup} are missing from storage location {location}")]
    Missing { backup: String, location: String },
    #[error("the manifests of backup {backup} cannot be read: {source}")]
    Unreadable {
        backup: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}

/// Reads the backup's manifests from its location; `Ok(Err(_))` when the restore cannot go on.
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
            manifests: read_manifests(files)?,
            backup,
            location,
            location_name,
        })
    }))
}

/// The claims and pods of the manifests that a restore selects.
struct Chosen<'m> {
    claims: Vec<&'m PersistentVolumeClaim>,
    pods: Vec<&'m Pod>,
}

impl<'m> Chosen<'m> {
    fn of(restore: &Restore, manifests: &'m Manifests) -> Self {
        let selector = restore
            .spec
            .label_selector
            .clone()
            .and_then(|selector| Selector::try_from(selector).ok());
        let chosen = |namespace: Option<String>, labels: &BTreeMap<String, String>| {
            selected(
                restore,
                selector.as_ref(),
                &namespace.unwrap_or_default(),
                labels,
            )
        };
        Self {
            claims: (manifests.claims.iter())
                .filter(|claim| chosen(claim.namespace(), claim.labels()))
                .collect(),
            pods: (manifests.pods.iter())
                .filter(|pod| chosen(pod.namespace(), pod.labels()))
                .collect(),
        }
    }

    /// Each namespace the chosen objects come from, with the one they are restored into.
    fn placements(&self, restore: &Restore) -> Vec<(String, String)> {
        let claims = self.claims.iter().map(|claim| claim.namespace());
        let pods = self.pods.iter().map(|pod| pod.namespace());
        claims
            .chain(pods)
            .map(Option::unwrap_or_default)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(|source| {
                let target = target_namespace(restore, &source);
                (source, target)
            })
            .collect()
    }

    /// The namespaces whose repositories the chosen pods' volumes are restored from.
    fn sources(&self) -> BTreeSet<String> {
        (self.pods.iter())
            .map(|pod| pod.namespace().unwrap_or_default())
            .collect()
    }
}

/// How taking the locks of a restore's repositories went.
enum Locked {
    Held(Vec<tokio::sync::OwnedMutexGuard<()>>),
    /// Maintenance holds the repository of this namespace.
    Busy(String),
    Failed(String),
}

fn lock_repositories(
    ctx: &Context,
    location: &ResolvedLocation,
    sources: &BTreeSet<String>,
) -> Locked {
    let mut guards = Vec::new();
    for source in sources {
        let identifier = match location.repository(source) {
            Ok(repository) => repository.restic_identifier(),
            Err(err) => return Locked::Failed(err.to_string()),
        };
        let Some(guard) = ctx.try_lock_repository(&identifier) else {
            return Locked::Busy(source.clone());
        };
        guards.push(guard);
    }
    Locked::Held(guards)
}

/// One restore's creation of its claims and pods, with what it found along the way.
struct Creating<'a> {
    restore: &'a Restore,
    ctx: &'a Context,
    identity: RestoreIdentity<'a>,
    results: Results,
    warnings: Vec<String>,
}

impl<'a> Creating<'a> {
    fn new(restore: &'a Restore, ctx: &'a Context) -> Self {
        Self {
            restore,
            ctx,
            identity: RestoreIdentity {
                name: restore.meta().name.as_deref().unwrap_or_default(),
                uid: restore.meta().uid.as_deref().unwrap_or_default(),
            },
            results: Results::default(),
            warnings: Vec::new(),
        }
    }

    async fn claims(&mut self, claims: &[&PersistentVolumeClaim]) -> Result<(), Error> {
        let policy = self.restore.spec.existing_resource_policy;
        for claim in claims {
            let target = target_namespace(self.restore, &claim.namespace().unwrap_or_default());
            let api = Api::<PersistentVolumeClaim>::namespaced(self.ctx.client.clone(), &target);
            let what = format!("persistentvolumeclaims/{target}/{}", claim.name_any());
            let restored = restored_claim(claim, &target, &self.identity);
            create_or_keep(
                &api,
                &restored,
                policy,
                what,
                &mut self.results,
                &mut self.warnings,
            )
            .await?;
        }
        Ok(())
    }

    /// Creates the pods, and returns the PodVolumeRestores of their volumes with a snapshot;
    /// `Ok(Err(message))` when the restore cannot go on.
    async fn pods(
        &mut self,
        pods: &[&Pod],
        snapshots: &BTreeMap<(String, String, String), String>,
        source: &Source,
    ) -> Result<Result<Vec<PodVolumeRestore>, StorageError>, Error> {
        let owner = self
            .restore
            .controller_owner_ref(&())
            .ok_or(Error::Incomplete {
                kind: "Restore",
                field: "UID",
            })?;
        let mut pvrs = Vec::new();
        for pod in pods {
            let namespace = pod.namespace().unwrap_or_default();
            let volumes: Vec<(String, String)> = (pod.spec.iter())
                .flat_map(|spec| spec.volumes.iter().flatten())
                .filter_map(|volume| {
                    let key = (namespace.clone(), pod.name_any(), volume.name.clone());
                    Some((volume.name.clone(), snapshots.get(&key)?.clone()))
                })
                .collect();
            let Some(created) = self.pod(pod, &volumes).await? else {
                continue;
            };
            let repository = match source.location.repository(&namespace) {
                Ok(repository) => repository.restic_identifier(),
                Err(err) => return Ok(Err(err)),
            };
            for (volume, snapshot) in volumes {
                let spec = PodVolumeRestoreSpec {
                    pod: PodReference {
                        namespace: target_namespace(self.restore, &namespace),
                        name: created.name_any(),
                        uid: created.uid().unwrap_or_default(),
                    },
                    volume,
                    storage_location: source.location_name.clone(),
                    repository: repository.clone(),
                    snapshot_id: snapshot,
                    source_namespace: namespace.clone(),
                };
                pvrs.push(pod_volume_restore(&self.identity, &owner, spec));
            }
        }
        Ok(Ok(pvrs))
    }

    /// Creates one pod with the restore-wait container for `volumes`; None when it is not this
    /// restore's to restore into.
    async fn pod(&mut self, pod: &Pod, volumes: &[(String, String)]) -> Result<Option<Pod>, Error> {
        let target = target_namespace(self.restore, &pod.namespace().unwrap_or_default());
        let what = format!("pods/{target}/{}", pod.name_any());
        if let Some(reason) = not_restored(pod) {
            self.results.skipped.push(format!("{what}: {reason}"));
            return Ok(None);
        }
        let helper = Helper {
            image: &self.ctx.settings.restore_helper_image,
            command: &self.ctx.settings.restore_helper_command,
        };
        let names: Vec<String> = volumes.iter().map(|(volume, _)| volume.clone()).collect();
        let api = Api::<Pod>::namespaced(self.ctx.client.clone(), &target);
        let recreated = restored_pod(pod, &target, &self.identity, &names, &helper);
        let policy = self.restore.spec.existing_resource_policy;
        create_or_keep(
            &api,
            &recreated,
            policy,
            what,
            &mut self.results,
            &mut self.warnings,
        )
        .await
    }
}

/// Creates the PodVolumeRestores that an earlier pass of this restore did not.
async fn create_missing(
    ctx: &Context,
    identity: &RestoreIdentity<'_>,
    pvrs: &[PodVolumeRestore],
) -> Result<(), Error> {
    let api = ctx.api::<PodVolumeRestore>();
    let selector = format!("{}={}", label::RESTORE_UID, identity.uid);
    let existing: BTreeSet<(String, String)> = api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .into_iter()
        .map(|pvr| (pvr.spec.pod.uid, pvr.spec.volume))
        .collect();
    for pvr in pvrs {
        if !existing.contains(&(pvr.spec.pod.uid.clone(), pvr.spec.volume.clone())) {
            api.create(&PostParams::default(), pvr).await?;
        }
    }
    Ok(())
}

/// Records what was created: the results in the location, an Event, and the status that moves
/// the restore on to watching its volumes.
async fn objects_created(
    creating: Creating<'_>,
    status: RestoreStatus,
    location: &ResolvedLocation,
    volumes: usize,
) -> Result<Action, Error> {
    let Creating {
        restore,
        ctx,
        identity,
        results,
        warnings,
    } = creating;
    if !location.read_only() {
        upload_results(ctx, location, &identity, &results).await;
    }
    let total = u32::try_from(volumes).unwrap_or(u32::MAX);
    info!(name = %identity.name, total, created = results.created.len(), "restore objects created");
    ctx.event(
        restore,
        false,
        "ObjectsCreated",
        format!(
            "{} object(s) created, {total} volume(s) to restore",
            results.created.len()
        ),
    )
    .await;
    let status = RestoreStatus {
        pod_volume_restores: Some(TransferCounts {
            total,
            ..TransferCounts::default()
        }),
        warnings,
        ..status
    };
    ctx.apply_status(restore, &status).await?;
    if total == 0 {
        return watch(restore, ctx, status).await;
    }
    Ok(Action::await_change())
}

fn pod_volume_restore(
    identity: &RestoreIdentity<'_>,
    owner: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
    spec: PodVolumeRestoreSpec,
) -> PodVolumeRestore {
    let mut pvr = PodVolumeRestore::new("", spec);
    pvr.metadata.name = None;
    pvr.metadata.generate_name = Some(format!("{}-", generate_name_prefix(identity.name)));
    pvr.metadata.labels = Some(BTreeMap::from([
        (
            label::RESTORE_NAME.to_owned(),
            names::label_value(identity.name),
        ),
        (label::RESTORE_UID.to_owned(), identity.uid.to_owned()),
        (label::POD_UID.to_owned(), pvr.spec.pod.uid.clone()),
    ]));
    pvr.metadata.owner_references = Some(vec![owner.clone()]);
    pvr
}

/// The snapshot of each backed-up volume, by (namespace, pod name, volume).
async fn snapshots_of(
    ctx: &Context,
    backup: &Backup,
) -> Result<BTreeMap<(String, String, String), String>, Error> {
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

async fn ensure_namespace(ctx: &Context, name: &str) -> Result<(), Error> {
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

async fn upload_results(
    ctx: &Context,
    location: &ResolvedLocation,
    identity: &RestoreIdentity<'_>,
    results: &Results,
) {
    let upload = async {
        let store = location.store(&ctx.store_retrier)?;
        let body = serde_json::to_vec_pretty(results).map_err(StorageError::json("the results"))?;
        Ok::<_, StorageError>(
            store
                .put(&key::restore_results(identity.name), layout::gzip(&body))
                .await?,
        )
    };
    if let Err(err) = upload.await {
        warn!(name = %identity.name, %err, "cannot write the restore results");
    }
}

async fn watch(restore: &Restore, ctx: &Context, status: RestoreStatus) -> Result<Action, Error> {
    let uid = restore.uid().unwrap_or_default();
    let api = ctx.api::<PodVolumeRestore>();
    let selector = format!("{}={uid}", label::RESTORE_UID);
    let pvrs = api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items;
    for pvr in &pvrs {
        if pvr.labels().contains_key(label::NODE) {
            continue;
        }
        let pods = Api::<Pod>::namespaced(ctx.client.clone(), &pvr.spec.pod.namespace);
        let node = pods
            .get_opt(&pvr.spec.pod.name)
            .await?
            .filter(|pod| pod.uid().as_deref() == Some(pvr.spec.pod.uid.as_str()))
            .and_then(|pod| pod.spec.and_then(|spec| spec.node_name));
        if let Some(node) = node {
            api.patch(
                &pvr.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {label::NODE: node}}})),
            )
            .await?;
        }
    }
    let limit = ctx.settings.default_volume_timeout;
    let planned = status
        .pod_volume_restores
        .as_ref()
        .map_or(0, |counts| counts.total);
    let Tally {
        kept: pvrs,
        timed_out,
        sum,
        next_deadline,
    } = tally(
        &api,
        pvrs,
        limit,
        planned,
        &status.timed_out_volumes,
        |volume| {
            format!(
                "volume {volume} was not restored within {}",
                humantime::format_duration(limit)
            )
        },
    )
    .await?;
    let mut next = RestoreStatus {
        pod_volume_restores: Some(sum.counts.clone()),
        progress: Some(sum.progress.clone()),
        warnings: union(status.warnings.clone(), sum.warnings.clone()),
        timed_out_volumes: timed_out,
        ..status.clone()
    };
    if !sum.finished() {
        if next != status {
            ctx.apply_status(restore, &next).await?;
        }
        // Pods are watched too; this is only a safety net for a missed binding.
        let safety_net = Duration::from_secs(30);
        return Ok(Action::requeue(
            next_deadline.map_or(safety_net, |due| due.min(safety_net)),
        ));
    }
    next.phase = sum.final_phase();
    next.completion_timestamp = Some(now());
    next.errors.extend(sum.errors.clone());
    upload_log(restore, ctx, &next, &pvrs).await;
    info!(name = %restore.name_any(), phase = ?next.phase, "restore finished");
    ctx.event(
        restore,
        next.phase != OperationPhase::Completed,
        &format!("{:?}", next.phase),
        format!(
            "{} of {} volume(s) restored",
            sum.counts.completed, sum.counts.total
        ),
    )
    .await;
    ctx.apply_status(restore, &next).await?;
    ctx.metrics.restore_ended(next.phase);
    Ok(Action::await_change())
}

async fn upload_log(
    restore: &Restore,
    ctx: &Context,
    status: &RestoreStatus,
    pvrs: &[PodVolumeRestore],
) {
    let name = restore.name_any();
    let Some(backup) = status.backup_name.as_deref() else {
        return;
    };
    let Ok(Some(backup)) = ctx.api::<Backup>().get_opt(backup).await else {
        return;
    };
    let Ok(Ok(location)) = ctx
        .location(backup.spec.storage_location.as_deref().unwrap_or_default())
        .await
    else {
        return;
    };
    if location.read_only() {
        return;
    }
    let mut lines = vec![format!("restore {name} from backup {}", backup.name_any())];
    lines.extend(status.warnings.iter().map(|w| format!("warning: {w}")));
    for pvr in pvrs {
        let pvr_status = pvr.status.clone().unwrap_or_default();
        lines.push(format!(
            "volume {} of pod {}/{} from snapshot {}: {:?}{}",
            pvr.spec.volume,
            pvr.spec.pod.namespace,
            pvr.spec.pod.name,
            pvr.spec.snapshot_id,
            pvr_status.phase,
            pvr_status
                .message
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        ));
    }
    lines.extend(status.errors.iter().map(|e| format!("error: {e}")));
    lines.push(format!("restore {name} ended {:?}", status.phase));
    let upload = async {
        let store = location.store(&ctx.store_retrier)?;
        let log = layout::gzip((lines.join("\n") + "\n").as_bytes());
        Ok::<_, StorageError>(store.put(&key::restore_logs(&name), log).await?)
    };
    if let Err(err) = upload.await {
        warn!(%name, %err, "cannot write the restore log");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup(name: &str, phase: OperationPhase, schedule: Option<&str>, finished: i64) -> Backup {
        let mut backup = Backup::new(name, Default::default());
        if let Some(schedule) = schedule {
            backup.metadata.labels = Some(BTreeMap::from([(
                label::SCHEDULE_NAME.to_owned(),
                schedule.to_owned(),
            )]));
        }
        backup.status = Some(ferry_shared::crd::BackupStatus {
            phase,
            completion_timestamp: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::from_second(finished).unwrap(),
            )),
            ..Default::default()
        });
        backup
    }

    #[test]
    fn the_backup_is_named_or_the_newest_completed_of_the_schedule() {
        let backups = [
            backup("daily-1", OperationPhase::Completed, Some("daily"), 10),
            backup("daily-2", OperationPhase::Completed, Some("daily"), 20),
            backup(
                "daily-3",
                OperationPhase::PartiallyFailed,
                Some("daily"),
                30,
            ),
            backup("manual", OperationPhase::Failed, None, 5),
        ];
        assert_eq!(
            choose_backup(None, Some("daily"), &backups),
            Ok("daily-2".into())
        );
        assert_eq!(
            choose_backup(Some("daily-3"), None, &backups),
            Ok("daily-3".into())
        );
        let mut deleting = backups.to_vec();
        deleting[1].metadata.deletion_timestamp = deleting[1]
            .status
            .as_ref()
            .unwrap()
            .completion_timestamp
            .clone();
        assert_eq!(
            choose_backup(None, Some("daily"), &deleting),
            Ok("daily-1".into())
        );
        assert!(
            choose_backup(Some("daily-2"), None, &deleting)
                .unwrap_err()
                .contains("being deleted")
        );
        for (name, schedule, error) in [
            (Some("a"), Some("b"), "not both"),
            (None, None, "give backupName or scheduleName"),
            (Some("missing"), None, "does not exist"),
            (Some("manual"), None, "is Failed"),
            (None, Some("weekly"), "has no Completed backup"),
        ] {
            let err = choose_backup(name, schedule, &backups).unwrap_err();
            assert!(err.contains(error), "{err}");
        }
    }

    fn identity() -> RestoreIdentity<'static> {
        RestoreIdentity {
            name: "r1",
            uid: "ru-1",
        }
    }

    #[test]
    fn claims_are_recreated_unbound_in_the_mapped_namespace() {
        let claim: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": "data", "namespace": "shop", "uid": "old", "resourceVersion": "9",
                "annotations": {"pv.kubernetes.io/bind-completed": "yes", "team": "a"},
                "finalizers": ["kubernetes.io/pvc-protection"]},
            "spec": {"volumeName": "pv-1", "accessModes": ["ReadWriteOnce"]},
            "status": {"phase": "Bound"},
        }))
        .unwrap();
        let restored = restored_claim(&claim, "shop-copy", &identity());
        assert_eq!(restored.metadata.namespace.as_deref(), Some("shop-copy"));
        assert_eq!(restored.metadata.uid, None);
        assert_eq!(restored.metadata.resource_version, None);
        assert_eq!(restored.metadata.finalizers, None);
        assert_eq!(restored.spec.as_ref().unwrap().volume_name, None);
        assert!(restored.status.is_none());
        let annotations = restored.metadata.annotations.unwrap();
        assert_eq!(annotations.len(), 1, "{annotations:?}");
        assert_eq!(
            restored.metadata.labels.unwrap()[label::RESTORE_UID],
            "ru-1"
        );
    }

    #[test]
    fn pods_are_recreated_unscheduled_with_the_restore_wait_container_first() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "old",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": "rs"}]},
            "spec": {
                "nodeName": "n1",
                "initContainers": [{"name": "restore-wait", "image": "old"}, {"name": "migrate"}],
                "containers": [{"name": "app", "volumeMounts": [
                    {"name": "data", "mountPath": "/data"},
                    {"name": "kube-api-access-x1", "mountPath": "/var/run/secrets"}]}],
                "volumes": [
                    {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
                    {"name": "kube-api-access-x1", "projected": {"sources": []}}],
            },
            "status": {"phase": "Running"},
        }))
        .unwrap();
        let helper = Helper {
            image: "ferry:1",
            command: "/usr/local/bin/ferry-restore-helper",
        };
        let restored = restored_pod(&pod, "shop", &identity(), &["data".to_owned()], &helper);
        assert_eq!(restored.metadata.owner_references, None);
        assert_eq!(restored.metadata.uid, None);
        assert!(restored.status.is_none());
        let spec = restored.spec.unwrap();
        assert_eq!(spec.node_name, None);
        assert_eq!(spec.volumes.unwrap().len(), 1);
        assert_eq!(spec.containers[0].volume_mounts.as_ref().unwrap().len(), 1);
        let init = spec.init_containers.unwrap();
        let names: Vec<&str> = init.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["restore-wait", "migrate"]);
        let wait = &init[0];
        assert_eq!(wait.args.as_deref(), Some(&["ru-1".to_owned()][..]));
        assert_eq!(wait.image.as_deref(), Some("ferry:1"));
        assert_eq!(
            wait.volume_mounts.as_ref().unwrap()[0].mount_path,
            "/restores/data"
        );
        let security = wait.security_context.as_ref().unwrap();
        assert_eq!(security.run_as_non_root, Some(true));
        assert_eq!(security.run_as_user, Some(65532));
        assert_eq!(security.run_as_group, Some(65532));
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert!(wait.resources.as_ref().unwrap().limits.is_some());
        let without_data = restored_pod(&pod, "shop", &identity(), &[], &helper);
        let init = without_data.spec.unwrap().init_containers.unwrap();
        assert_eq!(init.len(), 1, "no restore-wait without volumes to restore");
    }

    #[test]
    fn finished_and_mirror_pods_are_not_restored() {
        let pod = |phase: &str, annotations: serde_json::Value| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": "p", "annotations": annotations}, "status": {"phase": phase}})).unwrap()
        };
        assert!(not_restored(&pod("Succeeded", json!({}))).is_some());
        assert!(not_restored(&pod("Failed", json!({}))).is_some());
        assert!(
            not_restored(&pod("Running", json!({"kubernetes.io/config.mirror": "x"}))).is_some()
        );
        assert!(not_restored(&pod("Running", json!({}))).is_none());
    }

    fn manifests() -> Manifests {
        let object = |namespace: &str, name: &str, app: &str| ObjectMeta {
            namespace: Some(namespace.to_owned()),
            name: Some(name.to_owned()),
            labels: Some(BTreeMap::from([("app".to_owned(), app.to_owned())])),
            ..ObjectMeta::default()
        };
        Manifests {
            pods: vec![
                Pod {
                    metadata: object("shop", "web-0", "web"),
                    ..Pod::default()
                },
                Pod {
                    metadata: object("shop", "db-0", "db"),
                    ..Pod::default()
                },
                Pod {
                    metadata: object("blog", "web-0", "web"),
                    ..Pod::default()
                },
            ],
            claims: vec![PersistentVolumeClaim {
                metadata: object("files", "data", "web"),
                ..PersistentVolumeClaim::default()
            }],
        }
    }

    #[test]
    fn a_restore_chooses_by_namespace_and_label_and_places_by_its_mapping() {
        let manifests = manifests();
        let web = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
                match_labels: Some(BTreeMap::from([("app".to_owned(), "web".to_owned())])),
                ..Default::default()
            },
        );
        // (included namespaces, selector, placements, chosen pods, sources)
        type Case<'a> = (
            &'a [&'a str],
            Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
            &'a [(&'a str, &'a str)],
            &'a [&'a str],
            &'a [&'a str],
        );
        let cases: [Case<'_>; 4] = [
            (
                &[],
                None,
                &[("blog", "blog"), ("files", "files2"), ("shop", "shop2")],
                &["shop/web-0", "shop/db-0", "blog/web-0"],
                &["blog", "shop"],
            ),
            (
                &["shop"],
                None,
                &[("shop", "shop2")],
                &["shop/web-0", "shop/db-0"],
                &["shop"],
            ),
            (
                &["*"],
                web.clone(),
                &[("blog", "blog"), ("files", "files2"), ("shop", "shop2")],
                &["shop/web-0", "blog/web-0"],
                &["blog", "shop"],
            ),
            (&["files"], web, &[("files", "files2")], &[], &[]),
        ];
        for (included, selector, placements, pods, sources) in cases {
            let mut restore = Restore::new("r", Default::default());
            restore.spec.included_namespaces = included.iter().map(|ns| (*ns).to_owned()).collect();
            restore.spec.label_selector = selector;
            restore.spec.namespace_mapping = BTreeMap::from([
                ("shop".to_owned(), "shop2".to_owned()),
                ("files".to_owned(), "files2".to_owned()),
            ]);
            let chosen = Chosen::of(&restore, &manifests);
            let placed: Vec<(String, String)> = placements
                .iter()
                .map(|(from, to)| ((*from).to_owned(), (*to).to_owned()))
                .collect();
            assert_eq!(chosen.placements(&restore), placed, "{included:?}");
            let names: Vec<String> = chosen
                .pods
                .iter()
                .map(|pod| format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any()))
                .collect();
            assert_eq!(names, pods, "{included:?}");
            let expected: BTreeSet<String> = sources.iter().map(|ns| (*ns).to_owned()).collect();
            assert_eq!(chosen.sources(), expected, "{included:?}");
        }
    }
}
