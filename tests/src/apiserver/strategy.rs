//! The per-kind rules of the real registry strategies: what create fills in (`PrepareForCreate`
//! and defaulting), what an update through the main resource or `/status` may change
//! (`PrepareForUpdate`), and when `metadata.generation` moves.

use base64::Engine;
use serde_json::{Map, Value, json};

use super::resources::{Builtin, Origin, ResourceType};

/// Which endpoint a write came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Main,
    Status,
}

pub fn object_at<'a>(object: &'a mut Value, key: &str) -> Option<&'a mut Map<String, Value>> {
    let map = object.as_object_mut()?;
    let entry = map.entry(key.to_owned()).or_insert_with(|| json!({}));
    if !entry.is_object() {
        *entry = json!({});
    }
    entry.as_object_mut()
}

fn default_field(map: &mut Map<String, Value>, key: &str, value: Value) {
    map.entry(key.to_owned()).or_insert(value);
}

/// The defaults the built-in types' `SetDefaults_*` functions give, for the fields Ferry and the
/// test harness read; applied to every write, as decoding does.
pub fn apply_defaults(resource: &ResourceType, object: &mut Value) {
    match resource.builtin() {
        Some(Builtin::Pod) => {
            let Some(spec) = object_at(object, "spec") else {
                return;
            };
            default_field(spec, "restartPolicy", json!("Always"));
            default_field(spec, "dnsPolicy", json!("ClusterFirst"));
            default_field(spec, "schedulerName", json!("default-scheduler"));
            default_field(spec, "terminationGracePeriodSeconds", json!(30));
            default_field(spec, "securityContext", json!({}));
            for list in ["containers", "initContainers"] {
                if let Some(Value::Array(containers)) = spec.get_mut(list) {
                    for container in containers.iter_mut().filter_map(Value::as_object_mut) {
                        let image = container.get("image").and_then(Value::as_str).unwrap_or("");
                        let latest = !image.rsplit('/').next().unwrap_or("").contains(':')
                            || image.ends_with(":latest");
                        let pull = if latest { "Always" } else { "IfNotPresent" };
                        default_field(container, "imagePullPolicy", json!(pull));
                        default_field(
                            container,
                            "terminationMessagePath",
                            json!("/dev/termination-log"),
                        );
                        default_field(container, "terminationMessagePolicy", json!("File"));
                        default_field(container, "resources", json!({}));
                    }
                }
            }
        }
        Some(Builtin::PersistentVolumeClaim) => {
            if let Some(spec) = object_at(object, "spec") {
                default_field(spec, "volumeMode", json!("Filesystem"));
            }
        }
        Some(Builtin::PersistentVolume) => {
            if let Some(spec) = object_at(object, "spec") {
                default_field(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
                default_field(spec, "volumeMode", json!("Filesystem"));
            }
        }
        Some(Builtin::Secret) => {
            let Some(map) = object.as_object_mut() else {
                return;
            };
            default_field(map, "type", json!("Opaque"));
            if let Some(Value::Object(string_data)) = map.remove("stringData") {
                let data = map.entry("data").or_insert_with(|| json!({}));
                if let Some(data) = data.as_object_mut() {
                    for (k, v) in string_data {
                        let text = v.as_str().unwrap_or_default();
                        data.insert(
                            k,
                            json!(base64::engine::general_purpose::STANDARD.encode(text)),
                        );
                    }
                }
            }
        }
        Some(Builtin::Namespace) => {
            let name = object
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            if let Some(labels) = object
                .get_mut("metadata")
                .and_then(|m| object_at(m, "labels"))
            {
                labels.insert("kubernetes.io/metadata.name".to_owned(), json!(name));
            }
        }
        _ => {}
    }
}

/// `GetPodQOS`: BestEffort without requests or limits, Guaranteed when every container limits
/// cpu and memory at its requests, Burstable otherwise.
fn pod_qos(pod: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .filter_map(|l| pod.pointer(&format!("/spec/{l}")).and_then(Value::as_array))
        .flatten()
        .collect();
    let quantity = |c: &Value, kind: &str, resource: &str| -> Option<Value> {
        c.pointer(&format!("/resources/{kind}/{resource}")).cloned()
    };
    let any_set = containers.iter().any(|c| {
        ["requests", "limits"].iter().any(|k| {
            ["cpu", "memory"]
                .iter()
                .any(|r| quantity(c, k, r).is_some())
        })
    });
    if !any_set {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|c| {
        ["cpu", "memory"].iter().all(|r| {
            let limit = quantity(c, "limits", r);
            limit.is_some() && quantity(c, "requests", r).is_none_or(|req| Some(req) == limit)
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// `PrepareForCreate`: what a create may not set, and what the server sets itself.
pub fn prepare_for_create(resource: &ResourceType, version: &str, object: &mut Value, now: &str) {
    if resource.origin == Origin::Custom
        && resource.has_status(version)
        && let Some(map) = object.as_object_mut()
    {
        map.remove("status");
    }
    if resource.has_generation()
        && let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut)
    {
        meta.insert("generation".to_owned(), json!(1));
    }
    let status = match resource.builtin() {
        Some(Builtin::Pod) => Some(json!({"phase": "Pending", "qosClass": pod_qos(object)})),
        Some(Builtin::Namespace) => {
            if let Some(spec) = object_at(object, "spec") {
                spec.insert("finalizers".to_owned(), json!(["kubernetes"]));
            }
            Some(json!({"phase": "Active"}))
        }
        Some(Builtin::PersistentVolumeClaim | Builtin::PersistentVolume) => {
            Some(json!({"phase": "Pending"}))
        }
        Some(Builtin::CustomResourceDefinition) => Some(crd_status(object, now)),
        _ => None,
    };
    if let (Some(status), Some(map)) = (status, object.as_object_mut()) {
        map.insert("status".to_owned(), status);
    }
}

/// The status the apiextensions controllers give an accepted, established CRD.
fn crd_status(crd: &Value, now: &str) -> Value {
    let storage = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .and_then(|vs| {
            vs.iter()
                .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        })
        .and_then(|v| v.get("name"))
        .cloned()
        .unwrap_or(Value::Null);
    json!({
        "acceptedNames": crd.pointer("/spec/names").cloned().unwrap_or_else(|| json!({})),
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": now},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": now},
        ],
        "storedVersions": [storage],
    })
}

/// The part of an object whose change bumps `metadata.generation`: everything but metadata, and
/// but status when status is a subresource.
fn generation_content(resource: &ResourceType, version: &str, object: &Value) -> Value {
    let mut content = object.clone();
    if let Some(map) = content.as_object_mut() {
        map.remove("metadata");
        map.remove("apiVersion");
        map.remove("kind");
        if resource.has_status(version) {
            map.remove("status");
        }
    }
    content
}

/// `PrepareForUpdate` of the main resource or of `/status`, and the generation bump.
pub fn prepare_for_update(
    resource: &ResourceType,
    version: &str,
    part: Part,
    old: &Value,
    new: &mut Value,
) {
    let has_status = resource.has_status(version);
    match part {
        Part::Main => {
            if has_status && let Some(map) = new.as_object_mut() {
                match old.get("status") {
                    Some(status) => map.insert("status".to_owned(), status.clone()),
                    None => map.remove("status"),
                };
            }
            if resource.builtin() == Some(Builtin::Namespace)
                && let Some(finalizers) = old.pointer("/spec/finalizers").cloned()
                && let Some(spec) = object_at(new, "spec")
            {
                spec.insert("finalizers".to_owned(), finalizers);
            }
        }
        Part::Status if resource.origin == Origin::Custom => {
            let status = new.get("status").cloned();
            let managed = new.pointer("/metadata/managedFields").cloned();
            *new = old.clone();
            if let Some(map) = new.as_object_mut() {
                match status {
                    Some(status) => map.insert("status".to_owned(), status),
                    None => map.remove("status"),
                };
            }
            if let (Some(managed), Some(meta)) = (
                managed,
                new.get_mut("metadata").and_then(Value::as_object_mut),
            ) {
                meta.insert("managedFields".to_owned(), managed);
            }
        }
        Part::Status => {
            if let Some(map) = new.as_object_mut() {
                match old.get("spec") {
                    Some(spec) => map.insert("spec".to_owned(), spec.clone()),
                    None => map.remove("spec"),
                };
            }
            if resource.builtin() == Some(Builtin::Pod)
                && let Some(meta) = new.get_mut("metadata").and_then(Value::as_object_mut)
            {
                for field in ["ownerReferences", "deletionTimestamp"] {
                    match old.pointer(&format!("/metadata/{field}")) {
                        Some(v) => meta.insert(field.to_owned(), v.clone()),
                        None => meta.remove(field),
                    };
                }
            }
        }
    }
    if let Some(meta) = new.get_mut("metadata").and_then(Value::as_object_mut) {
        match old.pointer("/metadata/generation") {
            Some(generation) => meta.insert("generation".to_owned(), generation.clone()),
            None => meta.remove("generation"),
        };
    }
    if resource.has_generation()
        && generation_content(resource, version, old) != generation_content(resource, version, new)
    {
        let next = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            + 1;
        if let Some(meta) = new.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("generation".to_owned(), json!(next));
        }
    }
}

/// `CheckGracefulDelete`: the grace period a deletion waits, for the kinds that have one. A pod
/// that is not scheduled or has terminated goes at once.
pub fn grace_period(
    resource: &ResourceType,
    object: &Value,
    requested: Option<i64>,
) -> Option<i64> {
    if resource.builtin() != Some(Builtin::Pod) {
        return None;
    }
    let mut period = requested
        .or_else(|| {
            object
                .pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
        })
        .unwrap_or(0);
    let unscheduled = object
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty);
    let terminated = matches!(
        object.pointer("/status/phase").and_then(Value::as_str),
        Some("Failed" | "Succeeded")
    );
    if unscheduled || terminated {
        period = 0;
    }
    Some(if period < 0 { 1 } else { period })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resources::Registry;

    fn pods() -> ResourceType {
        Registry::with_builtins()
            .find("", "v1", "pods")
            .unwrap()
            .as_ref()
            .clone()
    }

    #[test]
    fn pod_qos_follows_requests_and_limits() {
        let none = json!({"spec": {"containers": [{"name": "a"}]}});
        let equal = json!({"spec": {"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}});
        let some = json!({"spec": {"containers": [{"resources": {"requests": {"cpu": "1"}}}]}});
        assert_eq!(pod_qos(&none), "BestEffort");
        assert_eq!(pod_qos(&equal), "Guaranteed");
        assert_eq!(pod_qos(&some), "Burstable");
    }

    #[test]
    fn pod_status_writes_keep_the_spec_and_main_writes_keep_the_status() {
        let pods = pods();
        let old = json!({"metadata": {"generation": 1}, "spec": {"nodeName": "a"}, "status": {"phase": "Pending"}});
        let mut main = json!({"metadata": {"generation": 1}, "spec": {"nodeName": "a"}, "status": {"phase": "Running"}});
        prepare_for_update(&pods, "v1", Part::Main, &old, &mut main);
        assert_eq!(main["status"]["phase"], "Pending");
        let mut status = json!({"metadata": {"labels": {"x": "y"}}, "spec": {"nodeName": "b"}, "status": {"phase": "Running"}});
        prepare_for_update(&pods, "v1", Part::Status, &old, &mut status);
        assert_eq!(status["spec"]["nodeName"], "a");
        assert_eq!(status["status"]["phase"], "Running");
        assert_eq!(status["metadata"]["labels"]["x"], "y");
        assert_eq!(status["metadata"]["generation"], 1);
    }

    #[test]
    fn only_scheduled_running_pods_are_deleted_gracefully() {
        let pods = pods();
        let bound = json!({"spec": {"nodeName": "a", "terminationGracePeriodSeconds": 30}});
        let unbound = json!({"spec": {"terminationGracePeriodSeconds": 30}});
        let done = json!({"spec": {"nodeName": "a"}, "status": {"phase": "Succeeded"}});
        assert_eq!(grace_period(&pods, &bound, None), Some(30));
        assert_eq!(grace_period(&pods, &bound, Some(0)), Some(0));
        assert_eq!(grace_period(&pods, &unbound, None), Some(0));
        assert_eq!(grace_period(&pods, &done, Some(5)), Some(0));
    }
}
