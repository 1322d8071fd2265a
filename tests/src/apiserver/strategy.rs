//! The per-kind rules of the real registry strategies: what create fills in (`PrepareForCreate`
//! and defaulting), what an update through the main resource or `/status` may change
//! (`PrepareForUpdate`), and when `metadata.generation` moves.

use base64::Engine;
use serde_json::{Map, Value, json};

use super::resources::{Builtin, FieldDefault, ResourceType, When};
use super::{services, workloads};

/// Which endpoint a write came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Main,
    Status,
}

/// The object under `key` of a map, made an empty object when missing or not an object.
pub fn child_map<'a>(
    map: &'a mut Map<String, Value>,
    key: &str,
) -> Option<&'a mut Map<String, Value>> {
    let entry = map.entry(key.to_owned()).or_insert_with(|| json!({}));
    if !entry.is_object() {
        *entry = json!({});
    }
    entry.as_object_mut()
}

/// The object under `key` of an object, made an empty object when missing or not an object;
/// `None` only for a non-object.
pub fn object_at<'a>(object: &'a mut Value, key: &str) -> Option<&'a mut Map<String, Value>> {
    child_map(object.as_object_mut()?, key)
}

fn default_field(map: &mut Map<String, Value>, key: &str, value: Value) {
    map.entry(key.to_owned()).or_insert(value);
}

fn pointer(dotted: &str) -> String {
    format!("/{}", dotted.replace('.', "/"))
}

/// Unset, null, or an empty list: what Go's defaulting reads as not given.
fn is_absent(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => true,
        Some(Value::Array(items)) => items.is_empty(),
        Some(_) => false,
    }
}

fn holds(object: &Value, when: When) -> bool {
    match when {
        When::Always => true,
        When::Equals(path, text) => {
            serde_json::from_str::<Value>(text).ok().as_ref() == object.pointer(&pointer(path))
        }
        When::Absent(path) => is_absent(object.pointer(&pointer(path))),
        When::Present(path) => !is_absent(object.pointer(&pointer(path))),
    }
}

/// Sets the field at `steps` under `map` where it is unset: missing objects on the way are
/// created, and a `name[]` step goes into every item of the list `name`.
fn set_default(map: &mut Map<String, Value>, steps: &[&str], default: &Value) {
    let Some((step, rest)) = steps.split_first() else {
        return;
    };
    if let Some(list) = step.strip_suffix("[]") {
        if let Some(Value::Array(items)) = map.get_mut(list) {
            for item in items.iter_mut().filter_map(Value::as_object_mut) {
                set_default(item, rest, default);
            }
        }
        return;
    }
    let entry = map.entry((*step).to_owned()).or_insert(Value::Null);
    if rest.is_empty() {
        if entry.is_null() {
            *entry = default.clone();
        }
        return;
    }
    if entry.is_null() {
        *entry = json!({});
    }
    if let Some(child) = entry.as_object_mut() {
        set_default(child, rest, default);
    }
}

fn apply_field_default(object: &mut Value, field: &FieldDefault) {
    if !holds(object, field.when) {
        return;
    }
    if let (Ok(default), Some(map)) = (
        serde_json::from_str::<Value>(field.value),
        object.as_object_mut(),
    ) {
        let steps: Vec<&str> = field.path.split('.').collect();
        set_default(map, &steps, &default);
    }
}

/// `SetDefaults_PodSpec` and `SetDefaults_Container`, for the fields Ferry and the test harness
/// read: a pod's spec and every pod template's.
fn pod_spec_defaults(spec: &mut Map<String, Value>) {
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

/// `stringData` is written into `data`, base64-encoded.
fn secret_defaults(secret: &mut Value) {
    let Some(map) = secret.as_object_mut() else {
        return;
    };
    if let Some(Value::Object(string_data)) = map.remove("stringData")
        && let Some(data) = child_map(map, "data")
    {
        for (k, v) in string_data {
            let text = v.as_str().unwrap_or_default();
            data.insert(
                k,
                json!(base64::engine::general_purpose::STANDARD.encode(text)),
            );
        }
    }
}

/// `SetDefaults_Subject`: users and groups are RBAC's own.
fn subject_defaults(binding: &mut Value) {
    if let Some(Value::Array(subjects)) = binding.get_mut("subjects") {
        for subject in subjects.iter_mut().filter_map(Value::as_object_mut) {
            let kind = subject.get("kind").and_then(Value::as_str).unwrap_or("");
            let unset = subject
                .get("apiGroup")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty);
            if unset && matches!(kind, "User" | "Group") {
                subject.insert("apiGroup".to_owned(), json!("rbac.authorization.k8s.io"));
            }
        }
    }
}

/// The defaults of the built-in types' `SetDefaults_*` functions: the kind's data first, then
/// its rules in code. Applied to every write, as decoding does.
pub fn apply_defaults(resource: &ResourceType, object: &mut Value) {
    let Some(strategy) = resource.strategy() else {
        return;
    };
    for field in strategy.defaults {
        apply_field_default(object, field);
    }
    if let Some(template) = strategy.pod_template
        && let Some(spec) = object
            .pointer_mut(template)
            .and_then(|t| object_at(t, "spec"))
    {
        pod_spec_defaults(spec);
    }
    match strategy.rules {
        Some(Builtin::Pod) => {
            if let Some(spec) = object_at(object, "spec") {
                pod_spec_defaults(spec);
            }
        }
        Some(Builtin::Secret) => secret_defaults(object),
        Some(Builtin::Service) => services::apply_defaults(object),
        Some(Builtin::RoleBinding) => subject_defaults(object),
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
    if resource.is_custom()
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
    let initial = resource
        .strategy()
        .and_then(|s| s.initial_status)
        .and_then(|text| serde_json::from_str::<Value>(text).ok());
    let status = match resource.builtin() {
        Some(Builtin::Pod) => Some(json!({"phase": "Pending", "qosClass": pod_qos(object)})),
        Some(Builtin::Namespace) => {
            if let Some(spec) = object_at(object, "spec") {
                spec.insert("finalizers".to_owned(), json!(["kubernetes"]));
            }
            initial
        }
        Some(Builtin::CustomResourceDefinition) => Some(crd_status(object, now)),
        _ => initial,
    };
    if let (Some(status), Some(map)) = (status, object.as_object_mut()) {
        map.insert("status".to_owned(), status);
    }
}

/// What the strategy's `Validate` fills in before it checks a new object, once its name and
/// uid are known: a Job's generated selector.
pub fn complete_for_validation(resource: &ResourceType, object: &mut Value) {
    if resource.builtin() == Some(Builtin::Job) {
        workloads::generate_job_selector(object);
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

/// `PrepareForUpdate` of the main resource: the status (where it is a subresource) and a
/// namespace's finalizers stay as stored, and a Service drops what its old type alone needed.
fn prepare_main_update(resource: &ResourceType, has_status: bool, old: &Value, new: &mut Value) {
    if has_status && let Some(map) = new.as_object_mut() {
        match old.get("status") {
            Some(status) => map.insert("status".to_owned(), status.clone()),
            None => map.remove("status"),
        };
    }
    match resource.builtin() {
        Some(Builtin::Namespace) => {
            if let Some(finalizers) = old.pointer("/spec/finalizers").cloned()
                && let Some(spec) = object_at(new, "spec")
            {
                spec.insert("finalizers".to_owned(), finalizers);
            }
        }
        Some(Builtin::Service) => services::drop_type_dependent_fields(old, new),
        _ => {}
    }
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
        Part::Main => prepare_main_update(resource, has_status, old, new),
        Part::Status if resource.is_custom() => {
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

    fn builtin(group: &str, version: &str, plural: &str) -> ResourceType {
        Registry::with_builtins()
            .find(group, version, plural)
            .unwrap()
            .as_ref()
            .clone()
    }

    fn pods() -> ResourceType {
        builtin("", "v1", "pods")
    }

    fn deployment() -> Value {
        json!({"metadata": {"name": "web"}, "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}})
    }

    #[test]
    fn workloads_get_their_defaults_and_their_templates_the_pod_ones() {
        let deployments = builtin("apps", "v1", "deployments");
        let mut web = deployment();
        apply_defaults(&deployments, &mut web);
        let spec = &web["spec"];
        assert_eq!(spec["replicas"], 1);
        assert_eq!(spec["revisionHistoryLimit"], 10);
        assert_eq!(spec["progressDeadlineSeconds"], 600);
        assert_eq!(
            spec["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        let pod = &spec["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Always");
        assert_eq!(pod["containers"][0]["imagePullPolicy"], "IfNotPresent");

        let mut recreate = deployment();
        recreate["spec"]["strategy"] = json!({"type": "Recreate"});
        apply_defaults(&deployments, &mut recreate);
        assert_eq!(recreate["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn list_steps_default_every_item_and_conditions_pick_the_value() {
        let policies = builtin("networking.k8s.io", "v1", "networkpolicies");
        let mut egress = json!({"spec": {"egress": [{"ports": [{"port": 53}, {"port": 80, "protocol": "UDP"}]}]}});
        apply_defaults(&policies, &mut egress);
        assert_eq!(egress["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
        assert_eq!(egress["spec"]["egress"][0]["ports"][0]["protocol"], "TCP");
        assert_eq!(egress["spec"]["egress"][0]["ports"][1]["protocol"], "UDP");
        let mut ingress = json!({"spec": {"podSelector": {}}});
        apply_defaults(&policies, &mut ingress);
        assert_eq!(ingress["spec"]["policyTypes"], json!(["Ingress"]));

        let jobs = builtin("batch", "v1", "jobs");
        let mut parallel = json!({"spec": {"parallelism": 3}});
        apply_defaults(&jobs, &mut parallel);
        assert!(parallel["spec"].get("completions").is_none());
        let mut single = json!({"spec": {}});
        apply_defaults(&jobs, &mut single);
        assert_eq!(
            single["spec"],
            json!({"completions": 1, "parallelism": 1, "backoffLimit": 6, "completionMode": "NonIndexed",
                   "suspend": false, "podReplacementPolicy": "TerminatingOrFailed"})
        );
    }

    #[test]
    fn a_workload_starts_at_generation_one_and_moves_with_its_spec_only() {
        let deployments = builtin("apps", "v1", "deployments");
        let mut web = deployment();
        prepare_for_create(&deployments, "v1", &mut web, "now");
        assert_eq!(web["metadata"]["generation"], 1);
        assert_eq!(web["status"], json!({}));
        let mut labelled = web.clone();
        labelled["metadata"]["labels"] = json!({"x": "y"});
        prepare_for_update(&deployments, "v1", Part::Main, &web, &mut labelled);
        assert_eq!(labelled["metadata"]["generation"], 1);
        let mut scaled = web.clone();
        scaled["spec"]["replicas"] = json!(3);
        prepare_for_update(&deployments, "v1", Part::Main, &web, &mut scaled);
        assert_eq!(scaled["metadata"]["generation"], 2);

        let services = builtin("", "v1", "services");
        let mut svc = json!({"metadata": {"name": "web"}, "spec": {}, "status": {"x": 1}});
        prepare_for_create(&services, "v1", &mut svc, "now");
        assert!(svc["metadata"].get("generation").is_none());
        assert_eq!(svc["status"], json!({"loadBalancer": {}}));
    }

    #[test]
    fn user_and_group_subjects_belong_to_rbac() {
        let bindings = builtin("rbac.authorization.k8s.io", "v1", "rolebindings");
        let mut binding = json!({"subjects": [{"kind": "User", "name": "a"},
                                              {"kind": "ServiceAccount", "name": "b", "namespace": "c"}]});
        apply_defaults(&bindings, &mut binding);
        assert_eq!(
            binding["subjects"][0]["apiGroup"],
            "rbac.authorization.k8s.io"
        );
        assert!(binding["subjects"][1].get("apiGroup").is_none());
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
