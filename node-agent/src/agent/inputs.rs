//! Everything a transfer needs from the cluster: the live pod and its volume's host path, the
//! storage location and its credentials, and the repository password. Nothing the custom
//! resource claims is trusted without checking it against the cluster.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ferry_shared::crd::PodReference;
use ferry_shared::names;
use ferry_shared::repository::RepositoryConfig;
use ferry_shared::secret::{SecretError, repository_password};
use ferry_shared::storage::{LocationError, LookupError, read_location, repository_location};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::ResourceExt;
use kube::api::Api;

use super::context::Context;
use super::kinds::{Specifics, TransferKind};
use crate::volume_path::{VolumePathError, VolumeRequest, find_volume_path, volume_dir};

/// Why the inputs cannot be had. Every case ends the transfer Failed with the message.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("pod {namespace}/{name} does not exist")]
    PodGone { namespace: String, name: String },
    #[error("cannot read {what}: {source}")]
    Read {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    VolumePath(#[from] VolumePathError),
    #[error(transparent)]
    Location(#[from] LookupError),
    #[error("storage location {location}: {source}")]
    Repository {
        location: String,
        #[source]
        source: LocationError,
    },
    #[error(
        "the repository {named} does not belong to storage location {location}, whose repository for namespace {namespace} is {own}"
    )]
    ForeignRepository {
        named: String,
        location: String,
        namespace: String,
        own: String,
    },
    #[error(transparent)]
    Password(#[from] SecretError),
    #[error(
        "the PodVolumeRestore has no controlling Restore owner, so there is no restore UID for its done-marker"
    )]
    NoRestoreOwner,
}

/// A failed read of `what` from the API.
fn read_failed(what: String) -> impl FnOnce(kube::Error) -> InputError {
    move |source| InputError::Read { what, source }
}

/// The resolved inputs of one transfer.
pub struct Inputs {
    pub path: PathBuf,
    pub repository: RepositoryConfig,
    pub work: Work,
}

/// What the transfer does, with what only its kind has.
pub enum Work {
    Backup {
        tags: BTreeMap<String, String>,
        /// The snapshot's label: `<namespace>/pvc/<claim UID>` for a claim, else
        /// `<namespace>/<pod>/<volume>`.
        label: String,
        parent: Option<String>,
    },
    Restore {
        snapshot: String,
        /// The UID of the controlling Restore, which names the done-marker.
        restore_uid: String,
    },
}

pub async fn resolve<K: TransferKind>(ctx: &Context, object: &K) -> Result<Inputs, InputError> {
    let reference = object.pod();
    let pod = live_pod(ctx, reference).await?;
    let path = host_path(ctx, object, &pod).await?;
    let repository = repository(ctx, object).await?;
    let work = match object.specifics() {
        Specifics::Backup { tags, parent } => {
            let label = match tags.get(names::tag::PVC_UID) {
                Some(claim) => format!("{}/pvc/{claim}", reference.namespace),
                None => format!(
                    "{}/{}/{}",
                    reference.namespace,
                    reference.name,
                    object.volume()
                ),
            };
            Work::Backup {
                tags,
                label,
                parent,
            }
        }
        Specifics::Restore {
            snapshot,
            restore_uid,
        } => Work::Restore {
            snapshot,
            restore_uid: restore_uid.ok_or(InputError::NoRestoreOwner)?,
        },
    };
    Ok(Inputs {
        path,
        repository,
        work,
    })
}

async fn live_pod(ctx: &Context, reference: &PodReference) -> Result<Pod, InputError> {
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), &reference.namespace);
    let what = format!("pod {}/{}", reference.namespace, reference.name);
    pods.get_opt(&reference.name)
        .await
        .map_err(read_failed(what))?
        .ok_or_else(|| InputError::PodGone {
            namespace: reference.namespace.clone(),
            name: reference.name.clone(),
        })
}

async fn host_path<K: TransferKind>(
    ctx: &Context,
    object: &K,
    pod: &Pod,
) -> Result<PathBuf, InputError> {
    let reference = object.pod();
    let claim_name = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.volumes.as_ref())
        .and_then(|volumes| volumes.iter().find(|v| v.name == object.volume()))
        .and_then(|volume| volume.persistent_volume_claim.as_ref())
        .map(|source| source.claim_name.clone());
    let mut claim = None;
    let mut volume = None;
    if let Some(claim_name) = claim_name {
        let claims =
            Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), &reference.namespace);
        let what = format!("claim {}/{claim_name}", reference.namespace);
        claim = claims
            .get_opt(&claim_name)
            .await
            .map_err(read_failed(what))?;
        let bound = claim
            .as_ref()
            .and_then(|claim| claim.spec.as_ref())
            .and_then(|spec| spec.volume_name.clone());
        if let Some(bound) = bound.filter(|name| !name.is_empty()) {
            let volumes = Api::<PersistentVolume>::all(ctx.client.clone());
            let what = format!("persistent volume {bound}");
            volume = volumes.get_opt(&bound).await.map_err(read_failed(what))?;
        }
    }
    let request = VolumeRequest {
        node: &ctx.node,
        pod_uid: &reference.uid,
        volume: object.volume(),
    };
    let dir = volume_dir(request, pod, claim.as_ref(), volume.as_ref())?;
    Ok(find_volume_path(&ctx.host_pods, &reference.uid, &dir)?)
}

async fn repository<K: TransferKind>(
    ctx: &Context,
    object: &K,
) -> Result<RepositoryConfig, InputError> {
    let location_name = object.storage_location();
    let (location, credentials) = read_location(&ctx.client, &ctx.namespace, location_name).await?;
    let resolved = repository_location(
        &location.spec,
        object.repository_namespace(),
        credentials.as_ref(),
    )
    .map_err(|source| InputError::Repository {
        location: location_name.to_owned(),
        source,
    })?;
    // The resource names its repository; it must be the one the location gives, or a crafted
    // resource could send the location's credentials, or the node's files, elsewhere.
    if resolved.restic_identifier() != object.repository() {
        return Err(InputError::ForeignRepository {
            named: object.repository().to_owned(),
            location: location_name.to_owned(),
            namespace: object.repository_namespace().to_owned(),
            own: resolved.restic_identifier(),
        });
    }
    let password = repository_password(&ctx.client, &ctx.namespace).await?;
    Ok(RepositoryConfig {
        location: resolved,
        password,
        cache_dir: ctx.cache_dir.clone(),
        retry_budget: ctx.storage_retry_budget,
    })
}

/// A restore starts only once its pod is on this node and the pod's restore-wait init
/// container is running, so the volume is mounted and the application is held.
pub async fn restore_may_start(ctx: &Context, reference: &PodReference) -> bool {
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), &reference.namespace);
    let Ok(Some(pod)) = pods.get_opt(&reference.name).await else {
        return false;
    };
    pod.uid().as_deref() == Some(reference.uid.as_str())
        && pod.spec.as_ref().and_then(|spec| spec.node_name.as_deref()) == Some(ctx.node.as_str())
        && restore_wait_running(&pod)
}

pub fn restore_wait_running(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|status| status.init_container_statuses.as_ref())
        .and_then(|statuses| {
            statuses
                .iter()
                .find(|status| status.name == names::RESTORE_WAIT_CONTAINER)
        })
        .and_then(|status| status.state.as_ref())
        .is_some_and(|state| state.running.is_some())
}
