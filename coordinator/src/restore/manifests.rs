//! The objects a restore recreates, made from the backup's manifests: claims without their
//! binding, and pods held by the restore-wait init container until their volumes are back.

use std::collections::BTreeMap;

use ferry_shared::names::{self, label};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, PersistentVolumeClaim, Pod, ResourceRequirements, SeccompProfile,
    SecurityContext, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
}
