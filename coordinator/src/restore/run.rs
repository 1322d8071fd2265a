//! One pass over a restore's plan: its stages in order, the objects of a stage created
//! together, the namespaces made ready before the first namespaced object, custom resource
//! definitions awaited until Established, and the end recorded.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use ferry_shared::crd::{
    PodReference, PodVolumeRestore, Restore, RestoreProgress, RestoreStatus, TransferCounts,
};
use ferry_shared::layout::{self, key};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Resource;
use kube::api::Api;
use kube::runtime::controller::Action;
use serde_json::Value;
use tracing::{info, warn};

use super::apply::{Source, ensure_namespace, owner_of, pod_volume_restore, transfer_spec};
use super::finish::watch;
use super::objects::{End, ItemEnd, Results, create_or_keep};
use super::plan::{BackedUp, RestorePlan, Stage};
use super::pod::{Helper, not_restored, restored_spec};
use super::rules::{Outcome, RestoreIdentity, Rules};
use crate::context::{Context, ResolvedLocation};
use crate::error::{Error, StorageError};
use crate::hooks::plan::{restore_exec_hooks, restore_init_containers};

/// The snapshot of each backed-up volume, by (namespace, pod name, volume).
pub type Snapshots = BTreeMap<(String, String, String), String>;

/// Objects of one stage created at once.
const CONCURRENCY: usize = 16;

/// How often a long restore writes its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// How long a restored CustomResourceDefinition may take to be Established.
const ESTABLISH_WAIT: Duration = Duration::from_secs(60);

const CRDS: &str = "customresourcedefinitions.apiextensions.k8s.io";

/// Status lines kept in the Restore's status; the results in the location have them all.
const STATUS_LINES: usize = 50;

pub(super) struct Run<'a> {
    restore: &'a Restore,
    ctx: &'a Context,
    source: &'a Source,
    snapshots: &'a Snapshots,
    rules: Rules<'a>,
    total: u64,
    /// The namespaces restored into, made ready before the first namespaced object.
    targets: BTreeSet<String>,
    namespaces_ready: bool,
    status: RestoreStatus,
    reported: Instant,
    pub results: Results,
    /// What concerns the whole restore rather than one object.
    pub warnings: Vec<String>,
    pub pvrs: Vec<PodVolumeRestore>,
    /// Pods this restore created that have post-restore exec hooks.
    pub hooked: Vec<PodReference>,
}

/// One object's end; a created pod comes with the PodVolumeRestores of its volumes, and
/// itself when it has post-restore exec hooks.
struct Restored {
    end: ItemEnd,
    pvrs: Vec<PodVolumeRestore>,
    hooked: Option<PodReference>,
}

/// A pod made ready to be restored.
struct PreparedPod {
    /// Its volumes to restore, with their snapshots.
    volumes: Vec<(String, String)>,
    /// Whether it has post-restore exec hooks.
    hooked: bool,
    warnings: Vec<String>,
}

impl<'a> Run<'a> {
    pub fn new(
        restore: &'a Restore,
        ctx: &'a Context,
        source: &'a Source,
        plan: &'a RestorePlan<'a>,
        snapshots: &'a Snapshots,
        targets: BTreeSet<String>,
        status: RestoreStatus,
    ) -> Self {
        let identity = RestoreIdentity {
            name: restore.meta().name.as_deref().unwrap_or_default(),
            uid: restore.meta().uid.as_deref().unwrap_or_default(),
            backup: source.backup.meta().name.as_deref().unwrap_or_default(),
        };
        let mut results = Results::default();
        results.skipped.extend(plan.skipped.iter().cloned());
        Self {
            rules: Rules {
                identity,
                namespace_mapping: &restore.spec.namespace_mapping,
                preserve_node_ports: restore.spec.preserve_node_ports.unwrap_or(false),
                restored_volumes: &plan.restored_volumes,
            },
            restore,
            ctx,
            source,
            snapshots,
            total: (plan.len() + plan.skipped.len()) as u64,
            targets,
            namespaces_ready: false,
            status,
            reported: Instant::now(),
            results,
            warnings: Vec::new(),
            pvrs: Vec::new(),
            hooked: Vec::new(),
        }
    }

    pub fn identity(&self) -> RestoreIdentity<'a> {
        self.rules.identity
    }

    /// Creates the objects of one stage, then waits for what the next stages need.
    pub async fn stage(&mut self, stage: &Stage<'_>) -> Result<(), Error> {
        if stage.resource != CRDS && stage.resource != "namespaces" {
            self.ensure_namespaces().await?;
        }
        let this = &*self;
        // By index: a closure that takes a borrowed item trips the compiler's proof that the
        // reconcile future is Send.
        let ends: Vec<Restored> = futures::stream::iter(0..stage.items.len())
            .map(|at| this.restore_item(stage.items[at]))
            .buffer_unordered(CONCURRENCY)
            .try_collect()
            .await?;
        let mut definitions = Vec::new();
        for Restored { end, pvrs, hooked } in ends {
            if stage.resource == CRDS && !matches!(end.end, End::Failed(_) | End::Skipped(_)) {
                definitions.push(end.what.rsplit('/').next().unwrap_or_default().to_owned());
            }
            self.results.record(&end);
            self.pvrs.extend(pvrs);
            self.hooked.extend(hooked);
        }
        self.await_established(&definitions).await?;
        self.report_progress().await
    }

    /// Creates every namespace restored into that does not exist yet.
    pub async fn ensure_namespaces(&mut self) -> Result<(), Error> {
        if !self.namespaces_ready {
            for namespace in &self.targets {
                ensure_namespace(self.ctx, namespace).await?;
            }
            self.namespaces_ready = true;
        }
        Ok(())
    }

    /// Restores one object.
    async fn restore_item(&self, item: &BackedUp) -> Result<Restored, Error> {
        let namespace = (item.path.namespace.as_deref()).map(|ns| self.rules.namespace(ns));
        let resource = item.path.group_resource();
        let what = match &namespace {
            Some(ns) => format!("{resource}/{ns}/{}", item.path.name),
            // A Namespace object follows the mapping too.
            None if resource == "namespaces" => {
                format!("{resource}/{}", self.rules.namespace(&item.path.name))
            }
            None => format!("{resource}/{}", item.path.name),
        };
        let finish = |end, warnings| Restored {
            end: ItemEnd {
                what: what.clone(),
                namespace: namespace.clone(),
                end,
                warnings,
            },
            pvrs: Vec::new(),
            hooked: None,
        };
        let object = match item.object() {
            Ok(object) => object,
            Err(err) => {
                let end = End::Failed(format!("not a valid object: {err}"));
                return Ok(finish(end, Vec::new()));
            }
        };
        let mut restored = match self.rules.restored(&item.path, &object) {
            Outcome::Restore(restored) => restored,
            Outcome::Skip(reason) => {
                return Ok(finish(End::Skipped(reason.to_owned()), Vec::new()));
            }
        };
        let prepared = match item.path.group_resource() == "pods" {
            false => None,
            true => match self.pod(item, &object, &mut restored) {
                Ok(prepared) => Some(prepared),
                Err(end) => return Ok(finish(end, Vec::new())),
            },
        };
        let policy = self.restore.spec.existing_resource_policy;
        let end = create_or_keep(&self.ctx.client, item, restored, policy).await?;
        let Some(prepared) = prepared else {
            return Ok(finish(end, Vec::new()));
        };
        let created = match &end {
            End::Created(created) => Some(PodReference {
                namespace: created.namespace.clone().unwrap_or_default(),
                name: created.name.clone(),
                uid: created.uid.clone(),
            }),
            _ => None,
        };
        let pvrs = match &created {
            Some(pod) => self.transfers(item, pod, &prepared.volumes)?,
            None => Vec::new(),
        };
        Ok(Restored {
            pvrs,
            hooked: created.filter(|_| prepared.hooked),
            ..finish(end, prepared.warnings)
        })
    }

    /// Makes `restored` a pod that waits for its volumes, then runs its init-container hooks;
    /// returns those volumes with their snapshots, or why the pod is not restored.
    fn pod(
        &self,
        item: &BackedUp,
        object: &Value,
        restored: &mut Value,
    ) -> Result<PreparedPod, End> {
        let parse = |value: &Value| serde_json::from_value::<Pod>(value.clone());
        let (backed_up, mut pod) = match (parse(object), parse(restored)) {
            (Ok(backed_up), Ok(pod)) => (backed_up, pod),
            (Err(err), _) | (_, Err(err)) => {
                return Err(End::Failed(format!("not a valid pod: {err}")));
            }
        };
        if let Some(reason) = not_restored(&backed_up) {
            return Err(End::Skipped(reason.to_owned()));
        }
        let namespace = item.path.namespace.clone().unwrap_or_default();
        let volumes: Vec<(String, String)> = (backed_up.spec.iter())
            .flat_map(|spec| spec.volumes.iter().flatten())
            .filter_map(|volume| {
                let key = (
                    namespace.clone(),
                    item.path.name.clone(),
                    volume.name.clone(),
                );
                Some((volume.name.clone(), self.snapshots.get(&key)?.clone()))
            })
            .collect();
        let helper = Helper {
            image: &self.ctx.settings.restore_helper_image,
            command: &self.ctx.settings.restore_helper_command,
        };
        let names: Vec<String> = volumes.iter().map(|(volume, _)| volume.clone()).collect();
        let hooks = self.restore.spec.hooks.as_ref();
        let (init_hooks, warnings) = match restore_init_containers(&pod, hooks) {
            Ok(containers) => (containers, Vec::new()),
            Err(err) => (
                Vec::new(),
                vec![format!("its init hook is not added: {err}")],
            ),
        };
        let hooked = !restore_exec_hooks(&pod, hooks).is_empty();
        if let Some(spec) = &mut pod.spec {
            restored_spec(spec, self.rules.identity.uid, &names, &helper, init_hooks);
        }
        *restored = serde_json::to_value(&pod)
            .map_err(|err| End::Failed(format!("not a valid pod: {err}")))?;
        Ok(PreparedPod {
            volumes,
            hooked,
            warnings,
        })
    }

    /// The PodVolumeRestores of a pod this restore created.
    fn transfers(
        &self,
        item: &BackedUp,
        pod: &PodReference,
        volumes: &[(String, String)],
    ) -> Result<Vec<PodVolumeRestore>, Error> {
        if volumes.is_empty() {
            return Ok(Vec::new());
        }
        let source_namespace = item.path.namespace.clone().unwrap_or_default();
        let repository = (self.source.location.repository(&source_namespace))
            .map_err(Error::Storage)?
            .restic_identifier();
        let owner = owner_of(self.restore)?;
        Ok(volumes
            .iter()
            .map(|(volume, snapshot)| {
                let spec = transfer_spec(
                    self.source,
                    pod,
                    &source_namespace,
                    (volume, snapshot),
                    repository.clone(),
                );
                pod_volume_restore(self.restore, &owner, spec)
            })
            .collect())
    }

    /// Waits until each named CustomResourceDefinition is Established, so its objects can be
    /// created; one that is not in time is a warning.
    async fn await_established(&mut self, names: &[String]) -> Result<(), Error> {
        let api = Api::<CustomResourceDefinition>::all(self.ctx.client.clone());
        for name in names {
            let deadline = Instant::now() + ESTABLISH_WAIT;
            while !established(api.get_opt(name).await?.as_ref()) {
                if Instant::now() > deadline {
                    self.warnings.push(format!(
                        "CustomResourceDefinition {name} was not Established within {}s; its objects may fail",
                        ESTABLISH_WAIT.as_secs()
                    ));
                    break;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        Ok(())
    }

    /// The progress so far, written at most every [`PROGRESS_EVERY`].
    async fn report_progress(&mut self) -> Result<(), Error> {
        if self.reported.elapsed() < PROGRESS_EVERY {
            return Ok(());
        }
        self.reported = Instant::now();
        let status = RestoreStatus {
            progress: Some(self.progress()),
            ..self.status.clone()
        };
        self.ctx.apply_status(self.restore, &status).await?;
        Ok(())
    }

    fn progress(&self) -> RestoreProgress {
        RestoreProgress {
            total_items: self.total,
            items_restored: self.results.done(),
            ..RestoreProgress::default()
        }
    }

    /// Records what was created: the results in the location, an Event, and the status that
    /// moves the restore on to watching its volumes.
    pub async fn finish(self, location: &ResolvedLocation) -> Result<Action, Error> {
        if !location.read_only() {
            self.upload_results(location).await;
        }
        let total = u32::try_from(self.pvrs.len()).unwrap_or(u32::MAX);
        let created = self.results.created.len();
        let name = self.rules.identity.name;
        info!(%name, total, created, "restore objects created");
        let note = format!("{created} object(s) created, {total} volume(s) to restore");
        self.ctx
            .event(self.restore, false, "ObjectsCreated", note)
            .await;
        let warnings = self.warnings.iter().chain(self.results.warnings.all());
        let mut status = RestoreStatus {
            pod_volume_restores: Some(TransferCounts {
                total,
                ..TransferCounts::default()
            }),
            progress: Some(self.progress()),
            warnings: capped(warnings),
            errors: capped(self.results.errors.all()),
            ..self.status
        };
        status.hooks.pending_post_hooks = self.hooked;
        self.ctx.apply_status(self.restore, &status).await?;
        if total == 0 {
            return watch(self.restore, self.ctx, status).await;
        }
        Ok(Action::await_change())
    }

    async fn upload_results(&self, location: &ResolvedLocation) {
        let name = self.rules.identity.name;
        let upload = async {
            let store = location.store(&self.ctx.store_retrier)?;
            let body = serde_json::to_vec_pretty(&self.results)
                .map_err(StorageError::json("the results"))?;
            Ok::<_, StorageError>(
                store
                    .put(&key::restore_results(name), layout::gzip(&body))
                    .await?,
            )
        };
        if let Err(err) = upload.await {
            warn!(%name, %err, "cannot write the restore results");
        }
    }
}

fn established(crd: Option<&CustomResourceDefinition>) -> bool {
    (crd.and_then(|crd| crd.status.as_ref()))
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| {
            (conditions.iter()).any(|c| c.type_ == "Established" && c.status == "True")
        })
}

/// The first [`STATUS_LINES`] lines, and how many more the restore results hold.
fn capped<'s>(lines: impl Iterator<Item = &'s String>) -> Vec<String> {
    let lines: Vec<&String> = lines.collect();
    let mut kept: Vec<String> = lines
        .iter()
        .take(STATUS_LINES)
        .map(|l| (*l).clone())
        .collect();
    if lines.len() > STATUS_LINES {
        kept.push(format!(
            "… and {} more in the restore results",
            lines.len() - STATUS_LINES
        ));
    }
    kept
}
