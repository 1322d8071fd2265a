//! What a restored object looks like, made from its backed-up version: what the cluster set is
//! dropped, namespaces are mapped, and each kind loses what would clash with the cluster it
//! comes back to. Pure; the pod's own rules are in [`super::pod`].

use std::collections::{BTreeMap, BTreeSet};

use ferry_shared::layout::ItemPath;
use ferry_shared::names::{self, label};
use serde_json::{Map, Value, json};

use crate::protected;

/// Annotations the control plane puts on a claim while binding it.
pub const BINDING_ANNOTATIONS: [&str; 5] = [
    "pv.kubernetes.io/bind-completed",
    "pv.kubernetes.io/bound-by-controller",
    "volume.kubernetes.io/selected-node",
    "volume.kubernetes.io/storage-provisioner",
    "volume.beta.kubernetes.io/storage-provisioner",
];

/// Labels the Job controller's selector generation adds; the API server makes them again.
const JOB_GENERATED_LABELS: [&str; 2] = ["controller-uid", "batch.kubernetes.io/controller-uid"];

/// Who is restoring: the Restore's name and UID and the backup's name, for labels and the
/// done-marker.
#[derive(Debug, Clone, Copy)]
pub struct RestoreIdentity<'a> {
    pub name: &'a str,
    pub uid: &'a str,
    pub backup: &'a str,
}

/// What the rules need to know beyond the object itself.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    pub identity: RestoreIdentity<'a>,
    pub namespace_mapping: &'a BTreeMap<String, String>,
    pub preserve_node_ports: bool,
    /// Names of the PersistentVolumes restored; a claim bound to any other is recreated
    /// unbound, so the cluster provisions it a new volume.
    pub restored_volumes: &'a BTreeSet<String>,
}

/// What becomes of one backed-up object.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Restore(Value),
    Skip(&'static str),
}

impl Rules<'_> {
    pub fn namespace(&self, namespace: &str) -> String {
        protected::mapped(self.namespace_mapping, namespace)
    }

    /// The object to create in place of `object`, stored at `path`.
    pub fn restored(&self, path: &ItemPath, object: &Value) -> Outcome {
        if let Some(reason) = left_alone(path, object) {
            return Outcome::Skip(reason);
        }
        let mut restored = object.clone();
        if let Some(map) = restored.as_object_mut() {
            map.remove("status");
        }
        self.reset_metadata(path, &mut restored);
        match (path.group.as_str(), path.resource.as_str()) {
            ("", "services") => self.service(&mut restored),
            ("", "persistentvolumeclaims") => self.claim(&mut restored),
            ("", "persistentvolumes") => self.volume(&mut restored),
            ("", "serviceaccounts") => service_account(&mut restored, &path.name),
            ("", "secrets") => token_secret(&mut restored),
            ("", "namespaces") => set(
                &mut restored,
                "/metadata/name",
                json!(self.namespace(&path.name)),
            ),
            ("batch", "jobs") => job(&mut restored),
            ("rbac.authorization.k8s.io", "rolebindings" | "clusterrolebindings") => {
                self.subjects(&mut restored);
            }
            _ => {}
        }
        Outcome::Restore(restored)
    }

    /// Keeps the name, the mapped namespace, the labels and the annotations; adds the restore's
    /// labels. Everything the cluster set goes: uid, resourceVersion, creationTimestamp,
    /// generation, managedFields, ownerReferences, selfLink, finalizers.
    fn reset_metadata(&self, path: &ItemPath, object: &mut Value) {
        let old = object.get("metadata").cloned().unwrap_or_else(|| json!({}));
        let mut labels = old
            .get("labels")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for (key, value) in [
            (label::RESTORE_NAME, names::label_value(self.identity.name)),
            (label::RESTORE_UID, self.identity.uid.to_owned()),
            (label::BACKUP_NAME, names::label_value(self.identity.backup)),
        ] {
            labels.insert(key.to_owned(), json!(value));
        }
        let mut metadata = Map::new();
        metadata.insert("name".to_owned(), json!(path.name));
        if let Some(namespace) = &path.namespace {
            metadata.insert("namespace".to_owned(), json!(self.namespace(namespace)));
        }
        metadata.insert("labels".to_owned(), Value::Object(labels));
        if let Some(annotations) = old.get("annotations").filter(|a| a.is_object()) {
            metadata.insert("annotations".to_owned(), annotations.clone());
        }
        set(object, "/metadata", Value::Object(metadata));
    }

    /// A Service gets a new cluster IP unless headless, and new node ports unless kept.
    fn service(&self, service: &mut Value) {
        let Some(spec) = map_at(service, "/spec") else {
            return;
        };
        if spec.get("clusterIP").and_then(Value::as_str) != Some("None") {
            spec.remove("clusterIP");
            spec.remove("clusterIPs");
        }
        if self.preserve_node_ports {
            return;
        }
        spec.remove("healthCheckNodePort");
        for port in maps_in(service, "/spec/ports") {
            port.remove("nodePort");
        }
    }

    /// A claim bound to a volume that is not restored comes back unbound.
    fn claim(&self, claim: &mut Value) {
        let volume = claim.pointer("/spec/volumeName").and_then(Value::as_str);
        if volume.is_some_and(|volume| self.restored_volumes.contains(volume)) {
            return;
        }
        if let Some(spec) = map_at(claim, "/spec") {
            spec.remove("volumeName");
        }
        if let Some(annotations) = map_at(claim, "/metadata/annotations") {
            annotations.retain(|key, _| !BINDING_ANNOTATIONS.contains(&key.as_str()));
        }
    }

    /// A restored volume is reserved for its claim in the claim's new namespace.
    fn volume(&self, volume: &mut Value) {
        let Some(claim_ref) = map_at(volume, "/spec/claimRef") else {
            return;
        };
        for key in ["uid", "resourceVersion"] {
            claim_ref.remove(key);
        }
        if let Some(namespace) = claim_ref.get("namespace").and_then(Value::as_str) {
            let mapped = self.namespace(namespace);
            claim_ref.insert("namespace".to_owned(), json!(mapped));
        }
    }

    /// Binding subjects that name a namespace follow the mapping.
    fn subjects(&self, binding: &mut Value) {
        for subject in maps_in(binding, "/subjects") {
            if let Some(namespace) = subject.get("namespace").and_then(Value::as_str) {
                let mapped = self.namespace(namespace);
                subject.insert("namespace".to_owned(), json!(mapped));
            }
        }
    }
}

/// Objects the cluster makes for itself, which a restore leaves to it.
fn left_alone(path: &ItemPath, object: &Value) -> Option<&'static str> {
    let labels = object.pointer("/metadata/labels");
    match (path.group.as_str(), path.resource.as_str()) {
        ("", "configmaps") if path.name == "kube-root-ca.crt" => {
            Some("the cluster makes it in every namespace")
        }
        ("discovery.k8s.io", "endpointslices")
            if labels
                .and_then(|l| l.get("endpointslice.kubernetes.io/managed-by"))
                .is_some() =>
        {
            Some("the cluster makes it for its Service")
        }
        _ => None,
    }
}

/// A Job's generated selector and its labels go; the API server generates them again.
fn job(job: &mut Value) {
    if job.pointer("/spec/manualSelector").and_then(Value::as_bool) == Some(true) {
        return;
    }
    if let Some(spec) = map_at(job, "/spec") {
        spec.remove("selector");
    }
    if let Some(labels) = map_at(job, "/spec/template/metadata/labels") {
        labels.retain(|key, _| !JOB_GENERATED_LABELS.contains(&key.as_str()));
    }
}

/// A ServiceAccount loses the references to its generated token Secrets.
fn service_account(account: &mut Value, name: &str) {
    let generated = format!("{name}-token-");
    let Some(map) = account.as_object_mut() else {
        return;
    };
    if let Some(Value::Array(secrets)) = map.get_mut("secrets") {
        secrets.retain(|secret| {
            !(secret.get("name").and_then(Value::as_str)).is_some_and(|s| s.starts_with(&generated))
        });
        if secrets.is_empty() {
            map.remove("secrets");
        }
    }
}

/// A service-account token Secret loses its token and its account's old UID; the cluster
/// fills it in again for the restored account.
fn token_secret(secret: &mut Value) {
    if secret.get("type").and_then(Value::as_str) != Some("kubernetes.io/service-account-token") {
        return;
    }
    if let Some(map) = secret.as_object_mut() {
        map.remove("data");
    }
    if let Some(annotations) = map_at(secret, "/metadata/annotations") {
        annotations.remove("kubernetes.io/service-account.uid");
    }
}

/// The object at `pointer`, if there is one.
fn map_at<'v>(value: &'v mut Value, pointer: &str) -> Option<&'v mut Map<String, Value>> {
    value.pointer_mut(pointer).and_then(Value::as_object_mut)
}

/// The objects in the list at `pointer`.
fn maps_in<'v>(
    value: &'v mut Value,
    pointer: &str,
) -> impl Iterator<Item = &'v mut Map<String, Value>> {
    (value.pointer_mut(pointer).and_then(Value::as_array_mut))
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
}

fn set(object: &mut Value, pointer: &str, value: Value) {
    if let Some(slot) = object.pointer_mut(pointer) {
        *slot = value;
    } else if let (Some(map), Some(key)) = (object.as_object_mut(), pointer.strip_prefix('/')) {
        map.insert(key.to_owned(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(group: &str, resource: &str, namespace: Option<&str>, name: &str) -> ItemPath {
        ItemPath {
            group: group.to_owned(),
            resource: resource.to_owned(),
            namespace: namespace.map(str::to_owned),
            name: name.to_owned(),
        }
    }

    fn restore(path: &ItemPath, object: Value, preserve_node_ports: bool) -> Outcome {
        let mapping = BTreeMap::from([("shop".to_owned(), "shop2".to_owned())]);
        let volumes = BTreeSet::from(["pv-kept".to_owned()]);
        let rules = Rules {
            identity: RestoreIdentity {
                name: "r1",
                uid: "ru-1",
                backup: "b1",
            },
            namespace_mapping: &mapping,
            preserve_node_ports,
            restored_volumes: &volumes,
        };
        rules.restored(path, &object)
    }

    fn restored(path: &ItemPath, object: Value) -> Value {
        match restore(path, object, false) {
            Outcome::Restore(value) => value,
            Outcome::Skip(reason) => panic!("skipped: {reason}"),
        }
    }

    #[test]
    fn metadata_keeps_names_labels_and_annotations_and_gains_the_restores_labels() {
        let object = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "cfg", "namespace": "shop", "uid": "u", "resourceVersion": "7",
                "creationTimestamp": "2026-01-01T00:00:00Z", "generation": 3, "selfLink": "/x",
                "managedFields": [{}], "finalizers": ["f"], "labels": {"app": "web"},
                "annotations": {"team": "a"},
                "ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "o", "uid": "o"}]},
            "data": {"k": "v"},
            "status": {"x": 1},
        });
        let value = restored(&path("", "configmaps", Some("shop"), "cfg"), object);
        assert_eq!(
            value,
            json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "cfg", "namespace": "shop2",
                    "labels": {"app": "web", "ferry.dev/restore-name": "r1",
                        "ferry.dev/restore-uid": "ru-1", "ferry.dev/backup-name": "b1"},
                    "annotations": {"team": "a"}},
                "data": {"k": "v"},
            })
        );
    }

    /// (path, backed-up object, pointer, value after restore; None when removed)
    type Case = (ItemPath, Value, &'static str, Option<Value>);

    fn check(cases: Vec<Case>) {
        for (at, object, pointer, expected) in cases {
            let value = restored(&at, object.clone());
            assert_eq!(
                value.pointer(pointer).cloned(),
                expected,
                "{at:?} {object} → {value}"
            );
        }
    }

    #[test]
    fn services_claims_and_volumes_lose_what_would_clash_with_the_cluster() {
        check(vec![
            (
                path("", "services", Some("shop"), "web"),
                json!({"spec": {"clusterIP": "10.96.0.9", "clusterIPs": ["10.96.0.9"], "ports": [{"port": 80, "nodePort": 30080}]}}),
                "/spec/clusterIP",
                None,
            ),
            (
                path("", "services", Some("shop"), "web"),
                json!({"spec": {"clusterIP": "10.96.0.9", "ports": [{"port": 80, "nodePort": 30080}]}}),
                "/spec/ports/0/nodePort",
                None,
            ),
            (
                path("", "services", Some("shop"), "db"),
                json!({"spec": {"clusterIP": "None", "clusterIPs": ["None"]}}),
                "/spec/clusterIPs",
                Some(json!(["None"])),
            ),
            (
                path("", "persistentvolumeclaims", Some("shop"), "data"),
                json!({"metadata": {"annotations": {"pv.kubernetes.io/bind-completed": "yes", "team": "a"}}, "spec": {"volumeName": "pv-1"}}),
                "/metadata/annotations",
                Some(json!({"team": "a"})),
            ),
            (
                path("", "persistentvolumeclaims", Some("shop"), "data"),
                json!({"spec": {"volumeName": "pv-1"}}),
                "/spec/volumeName",
                None,
            ),
            (
                path("", "persistentvolumeclaims", Some("shop"), "kept"),
                json!({"spec": {"volumeName": "pv-kept"}}),
                "/spec/volumeName",
                Some(json!("pv-kept")),
            ),
            (
                path("", "persistentvolumes", None, "pv-kept"),
                json!({"spec": {"claimRef": {"namespace": "shop", "name": "kept", "uid": "u", "resourceVersion": "1"}}}),
                "/spec/claimRef",
                Some(json!({"namespace": "shop2", "name": "kept"})),
            ),
        ]);
    }

    #[test]
    fn jobs_accounts_tokens_and_bindings_lose_what_the_cluster_made() {
        check(vec![
            (
                path("batch", "jobs", Some("shop"), "migrate"),
                json!({"spec": {"selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u"}},
                    "template": {"metadata": {"labels": {"controller-uid": "u", "batch.kubernetes.io/controller-uid": "u", "job-name": "migrate"}}}}}),
                "/spec",
                Some(json!({"template": {"metadata": {"labels": {"job-name": "migrate"}}}})),
            ),
            (
                path("batch", "jobs", Some("shop"), "manual"),
                json!({"spec": {"manualSelector": true, "selector": {"matchLabels": {"app": "m"}}}}),
                "/spec/selector",
                Some(json!({"matchLabels": {"app": "m"}})),
            ),
            (
                path("", "serviceaccounts", Some("shop"), "app"),
                json!({"secrets": [{"name": "app-token-x7k2p"}, {"name": "registry"}]}),
                "/secrets",
                Some(json!([{"name": "registry"}])),
            ),
            (
                path("", "serviceaccounts", Some("shop"), "app"),
                json!({"secrets": [{"name": "app-token-x7k2p"}]}),
                "/secrets",
                None,
            ),
            (
                path("", "secrets", Some("shop"), "app-token"),
                json!({"type": "kubernetes.io/service-account-token", "data": {"token": "dA=="},
                    "metadata": {"annotations": {"kubernetes.io/service-account.name": "app", "kubernetes.io/service-account.uid": "u"}}}),
                "/data",
                None,
            ),
            (
                path(
                    "rbac.authorization.k8s.io",
                    "rolebindings",
                    Some("shop"),
                    "read",
                ),
                json!({"subjects": [{"kind": "ServiceAccount", "name": "app", "namespace": "shop"}, {"kind": "User", "name": "ann"}]}),
                "/subjects",
                Some(
                    json!([{"kind": "ServiceAccount", "name": "app", "namespace": "shop2"}, {"kind": "User", "name": "ann"}]),
                ),
            ),
            (
                path("", "namespaces", None, "shop"),
                json!({"spec": {"finalizers": ["kubernetes"]}}),
                "/metadata/name",
                Some(json!("shop2")),
            ),
        ]);
    }

    #[test]
    fn node_ports_stay_when_asked_and_the_clusters_own_objects_are_left_to_it() {
        let service =
            json!({"spec": {"clusterIP": "10.96.0.9", "ports": [{"port": 80, "nodePort": 30080}]}});
        let Outcome::Restore(kept) =
            restore(&path("", "services", Some("shop"), "web"), service, true)
        else {
            panic!("skipped");
        };
        assert_eq!(kept.pointer("/spec/ports/0/nodePort"), Some(&json!(30080)));
        assert_eq!(kept.pointer("/spec/clusterIP"), None);
        let root_ca = path("", "configmaps", Some("shop"), "kube-root-ca.crt");
        assert!(matches!(
            restore(&root_ca, json!({}), false),
            Outcome::Skip(_)
        ));
        let slice = path(
            "discovery.k8s.io",
            "endpointslices",
            Some("shop"),
            "web-abc",
        );
        let managed = json!({"metadata": {"labels": {"endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}}});
        assert!(matches!(restore(&slice, managed, false), Outcome::Skip(_)));
    }
}
