//! A restored pod: unscheduled, without its token volume, and held by the restore-wait init
//! container until its volumes are back. The rules every object follows are in
//! [`super::rules`].

use std::collections::BTreeMap;

use ferry_shared::names;
use k8s_openapi::api::core::v1::{
    Capabilities, Container, Pod, PodSpec, ResourceRequirements, SeccompProfile, SecurityContext,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::ResourceExt;

/// The restore-wait init container's image and command.
pub struct Helper<'a> {
    pub image: &'a str,
    pub command: &'a str,
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

/// A pod's spec as it is recreated: unscheduled, with the restore-wait init container first
/// when `restored_volumes` are to be filled, then the init containers of its restore hooks, so
/// that they run on the restored data.
pub fn restored_spec(
    spec: &mut PodSpec,
    restore_uid: &str,
    restored_volumes: &[String],
    helper: &Helper<'_>,
    hooks: Vec<Container>,
) {
    spec.node_name = None;
    let mut init = spec.init_containers.take().unwrap_or_default();
    // A pod backed up after an earlier restore holds these already.
    init.retain(|container| {
        container.name != names::RESTORE_WAIT_CONTAINER
            && !hooks.iter().any(|hook| hook.name == container.name)
    });
    init.splice(0..0, hooks);
    if !restored_volumes.is_empty() {
        init.insert(
            0,
            restore_wait_container(restore_uid, restored_volumes, helper),
        );
    }
    // The service-account token volume is added again by the API server.
    let token_volume = |name: &str| name.starts_with("kube-api-access-");
    if let Some(volumes) = &mut spec.volumes {
        volumes.retain(|volume| !token_volume(&volume.name));
    }
    for container in spec.containers.iter_mut().chain(init.iter_mut()) {
        if let Some(mounts) = &mut container.volume_mounts {
            mounts.retain(|mount| !token_volume(&mount.name));
        }
    }
    spec.init_containers = (!init.is_empty()).then_some(init);
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
        let mut spec = pod.spec.clone().unwrap();
        restored_spec(&mut spec, "ru-1", &["data".to_owned()], &helper, Vec::new());
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
        let mut without_data = pod.spec.unwrap();
        restored_spec(&mut without_data, "ru-1", &[], &helper, Vec::new());
        let init = without_data.init_containers.unwrap();
        assert_eq!(init.len(), 1, "no restore-wait without volumes to restore");
    }

    #[test]
    fn init_container_hooks_run_after_restore_wait_and_before_the_pods_own() {
        let spec: PodSpec = serde_json::from_value(json!({
            "initContainers": [{"name": "restore-wait"}, {"name": "fix-owner"}, {"name": "migrate"}],
            "containers": [{"name": "app"}],
        }))
        .unwrap();
        let helper = Helper {
            image: "ferry:1",
            command: "/usr/local/bin/ferry-restore-helper",
        };
        let hook = |name: &str| Container {
            name: name.to_owned(),
            image: Some("busybox".to_owned()),
            ..Container::default()
        };
        let names = |spec: PodSpec| -> Vec<String> {
            (spec.init_containers.unwrap().into_iter())
                .map(|c| c.name)
                .collect()
        };
        let mut with_data = spec.clone();
        let mut warm = hook("warm");
        warm.volume_mounts = serde_json::from_value(json!([
            {"name": "data", "mountPath": "/data"},
            {"name": "kube-api-access-x1", "mountPath": "/var/run/secrets"},
        ]))
        .unwrap();
        let hooks = vec![hook("fix-owner"), warm];
        restored_spec(&mut with_data, "ru-1", &["data".to_owned()], &helper, hooks);
        let warm_mounts = with_data.init_containers.as_ref().unwrap()[2]
            .volume_mounts
            .clone();
        assert_eq!(
            warm_mounts.unwrap().len(),
            1,
            "a hook copies the app's mounts, but not the token's, which is not restored"
        );
        assert_eq!(
            names(with_data),
            ["restore-wait", "fix-owner", "warm", "migrate"],
            "a hook container the backed-up pod already held is not doubled"
        );
        let mut without_data = spec;
        restored_spec(&mut without_data, "ru-1", &[], &helper, vec![hook("warm")]);
        assert_eq!(names(without_data), ["warm", "fix-owner", "migrate"]);
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
