//! Creating a restore's objects: read the backup's manifests, choose what to restore and where,
//! lock the repositories, create the claims, pods and PodVolumeRestores, and record them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ferry_shared::crd::ExistingResourcePolicy;
use ferry_shared::crd::{
    Backup, PodReference, PodVolumePhase, PodVolumeRestore, PodVolumeRestoreSpec,
    PodVolumeTransfer, Restore, RestoreStatus, TransferCounts,
};
use ferry_shared::layout::{self, key};
use ferry_shared::names::{self, label};
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::core::{Selector, SelectorExt};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde_json::json;
use tracing::{info, warn};

use super::finish::{fail, watch};
use super::manifests::{
    Helper, ManifestError, Manifests, RestoreIdentity, not_restored, read_manifests,
    restored_claim, restored_pod,
};
use super::validate::reject;
use crate::context::{Context, Locked, ResolvedLocation};
use crate::error::{Error, StorageError};
use crate::plan::generate_name_prefix;
use crate::protected;
use ferry_shared::storage::LookupError;

/// What the restore did with each object, as uploaded to the location.
#[derive(Debug, Default, Serialize)]
struct Results {
    created: Vec<String>,
    updated: Vec<String>,
    existing: Vec<String>,
    skipped: Vec<String>,
}

pub(super) fn selected(
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
    let chosen = Chosen::of(restore, &source.manifests);
    // Known only now when neither the Restore nor the Backup names its namespaces.
    let placements = chosen.placements(restore);
    let denylist = ctx.settings.denied_restore_namespaces();
    if let Some(denied) = protected::denied(&placements, &denylist) {
        return reject(restore, ctx, status, vec![denied]).await;
    }
    // Held until the PodVolumeRestores exist, so that no maintenance prunes the repositories
    // they read from in between.
    let guards = match ctx.lock_repositories(&source.location, &chosen.sources()) {
        Locked::Held { guards, .. } => guards,
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

#[cfg(test)]
mod tests {
    use super::*;

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
