//! Ferry's manifests, embedded in the binary at build time so that `ferry` alone installs
//! Ferry, and the rewrites that install them into another namespace or with another image.

use serde_json::Value;

use super::InstallError;

/// `(path under deploy/, contents)` of a file of `deploy/`.
macro_rules! embed {
    ($path:literal) => {
        ($path, include_str!(concat!("../../../../deploy/", $path)))
    };
}

/// The files of `deploy/crds` and `deploy/base` that its kustomization applies, in its order.
/// A test checks this list against the kustomizations.
const FILES: &[(&str, &str)] = &[
    embed!("crds/ferry.dev_backupstoragelocations.yaml"),
    embed!("crds/ferry.dev_backups.yaml"),
    embed!("crds/ferry.dev_restores.yaml"),
    embed!("crds/ferry.dev_schedules.yaml"),
    embed!("crds/ferry.dev_backuprepositories.yaml"),
    embed!("crds/ferry.dev_podvolumebackups.yaml"),
    embed!("crds/ferry.dev_podvolumerestores.yaml"),
    embed!("crds/ferry.dev_downloadrequests.yaml"),
    embed!("crds/ferry.dev_serverstatusrequests.yaml"),
    embed!("base/namespace.yaml"),
    embed!("base/node-agent-rbac.yaml"),
    embed!("base/node-agent.yaml"),
    embed!("base/coordinator-rbac.yaml"),
    embed!("base/coordinator.yaml"),
];

/// The repository of Ferry's image, as the manifests name it.
pub const IMAGE_REPOSITORY: &str = "ghcr.io/ferry-dev/ferry";

/// The namespace the manifests install into.
const MANIFEST_NAMESPACE: &str = "ferry";

/// Every object of the embedded manifests, in the order they are applied.
pub fn objects() -> Result<Vec<Value>, InstallError> {
    let mut objects = Vec::new();
    for (path, text) in FILES {
        for document in serde_yaml::Deserializer::from_str(text) {
            let object: Value = serde::Deserialize::deserialize(document).map_err(|source| {
                InstallError::ParseManifest {
                    path: (*path).to_owned(),
                    source,
                }
            })?;
            if !object.is_null() {
                objects.push(object);
            }
        }
    }
    Ok(objects)
}

/// Moves the objects from the manifests' namespace into `namespace`: the namespaced objects,
/// the Namespace itself, and the service accounts that bindings name.
pub fn set_namespace(objects: &mut [Value], namespace: &str) {
    for object in objects {
        if kind(object) == "Namespace" {
            object["metadata"]["name"] = Value::from(namespace);
        }
        if let Some(field) = object.pointer_mut("/metadata/namespace") {
            *field = Value::from(namespace);
        }
        let subjects = object.get_mut("subjects").and_then(Value::as_array_mut);
        for subject in subjects.into_iter().flatten() {
            if subject.get("namespace").and_then(Value::as_str) == Some(MANIFEST_NAMESPACE) {
                subject["namespace"] = Value::from(namespace);
            }
        }
    }
}

/// Replaces Ferry's image wherever the objects name it (containers, and the restore helper's
/// image in the coordinator's environment) with `image`.
pub fn set_image(objects: &mut [Value], image: &str) {
    for object in objects {
        replace_strings(object, &|text| {
            is_ferry_image(text).then(|| image.to_owned())
        });
    }
}

/// The image the objects run: the first container image of Ferry's.
pub fn image(objects: &[Value]) -> Option<String> {
    objects
        .iter()
        .filter_map(|object| object.pointer("/spec/template/spec/containers/0/image"))
        .filter_map(Value::as_str)
        .next()
        .map(str::to_owned)
}

/// Whether `text` names Ferry's image, at any tag or digest.
fn is_ferry_image(text: &str) -> bool {
    text.strip_prefix(IMAGE_REPOSITORY)
        .is_some_and(|rest| rest.starts_with(':') || rest.starts_with('@'))
}

fn replace_strings(value: &mut Value, replace: &dyn Fn(&str) -> Option<String>) {
    match value {
        Value::String(text) => {
            if let Some(new) = replace(text) {
                *text = new;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| replace_strings(v, replace)),
        Value::Object(map) => map.values_mut().for_each(|v| replace_strings(v, replace)),
        _ => {}
    }
}

/// The `kind` of an object.
pub fn kind(object: &Value) -> &str {
    object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The `metadata.name` of an object.
pub fn name(object: &Value) -> &str {
    object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Whether the object is a CustomResourceDefinition.
pub fn is_crd(object: &Value) -> bool {
    kind(object) == "CustomResourceDefinition"
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::json;

    use super::*;

    /// The `resources` of a kustomization under `deploy/`.
    fn kustomization(dir: &str) -> Vec<String> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy")
            .join(dir)
            .join("kustomization.yaml");
        let text = std::fs::read_to_string(&path).expect("read kustomization");
        let value: Value = serde_yaml::from_str(&text).expect("parse kustomization");
        value["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .map(|r| r.as_str().expect("a path").to_owned())
            .collect()
    }

    #[test]
    fn the_embedded_files_are_what_the_kustomizations_apply() {
        let mut expected = Vec::new();
        for resource in kustomization("base") {
            if resource == "../crds" {
                let crds = kustomization("crds");
                expected.extend(crds.iter().map(|file| format!("crds/{file}")));
            } else {
                expected.push(format!("base/{resource}"));
            }
        }
        let embedded: Vec<&str> = FILES.iter().map(|(path, _)| *path).collect();
        assert_eq!(embedded, expected);
    }

    #[test]
    fn the_manifests_parse_crds_first_and_name_ferrys_image() {
        let objects = objects().expect("parse");
        let crds = objects.iter().take_while(|o| is_crd(o)).count();
        assert_eq!(
            crds,
            FILES.iter().filter(|(p, _)| p.starts_with("crds/")).count()
        );
        assert!(objects[crds..].iter().all(|o| !is_crd(o)));
        assert_eq!(kind(&objects[crds]), "Namespace");
        assert!(is_ferry_image(&image(&objects).expect("an image")));
    }

    #[test]
    fn set_namespace_moves_namespaced_objects_the_namespace_and_subjects() {
        let cases = [
            (
                json!({"kind": "Namespace", "metadata": {"name": "ferry"}}),
                json!({"kind": "Namespace", "metadata": {"name": "backup"}}),
            ),
            (
                json!({"kind": "Deployment", "metadata": {"name": "c", "namespace": "ferry"}}),
                json!({"kind": "Deployment", "metadata": {"name": "c", "namespace": "backup"}}),
            ),
            (
                json!({"kind": "ClusterRole", "metadata": {"name": "ferry-coordinator"}}),
                json!({"kind": "ClusterRole", "metadata": {"name": "ferry-coordinator"}}),
            ),
            (
                json!({"kind": "ClusterRoleBinding", "metadata": {"name": "b"}, "subjects": [
                    {"kind": "ServiceAccount", "name": "a", "namespace": "ferry"},
                    {"kind": "ServiceAccount", "name": "x", "namespace": "other"},
                    {"kind": "Group", "name": "g"},
                ]}),
                json!({"kind": "ClusterRoleBinding", "metadata": {"name": "b"}, "subjects": [
                    {"kind": "ServiceAccount", "name": "a", "namespace": "backup"},
                    {"kind": "ServiceAccount", "name": "x", "namespace": "other"},
                    {"kind": "Group", "name": "g"},
                ]}),
            ),
            (
                json!({"kind": "CustomResourceDefinition", "metadata": {"name": "backups.ferry.dev"},
                       "spec": {"scope": "Namespaced"}}),
                json!({"kind": "CustomResourceDefinition", "metadata": {"name": "backups.ferry.dev"},
                       "spec": {"scope": "Namespaced"}}),
            ),
        ];
        for (object, expected) in cases {
            let mut objects = [object.clone()];
            set_namespace(&mut objects, "backup");
            assert_eq!(objects[0], expected, "{object}");
        }
    }

    #[test]
    fn every_embedded_object_moves_to_the_namespace() {
        let mut objects = objects().expect("parse");
        set_namespace(&mut objects, "backup");
        let text = serde_json::to_string(&objects).expect("encode");
        assert!(!text.contains(r#""namespace":"ferry""#), "{text}");
        assert!(
            objects
                .iter()
                .any(|o| kind(o) == "Namespace" && name(o) == "backup")
        );
    }

    #[test]
    fn set_image_replaces_ferrys_image_only() {
        let cases = [
            ("ghcr.io/ferry-dev/ferry:0.1.0", "registry.example/f:2"),
            ("ghcr.io/ferry-dev/ferry@sha256:ab", "registry.example/f:2"),
            (
                "ghcr.io/ferry-dev/ferry-other:1",
                "ghcr.io/ferry-dev/ferry-other:1",
            ),
            ("ghcr.io/ferry-dev/ferry", "ghcr.io/ferry-dev/ferry"),
            ("busybox:1", "busybox:1"),
        ];
        for (before, after) in cases {
            let mut objects = [json!({"spec": {"template": {"spec": {
                "containers": [{"image": before, "env": [{"name": "X", "value": before}]}],
            }}}})];
            set_image(&mut objects, "registry.example/f:2");
            let container = &objects[0]["spec"]["template"]["spec"]["containers"][0];
            assert_eq!(container["image"], after, "{before}");
            assert_eq!(container["env"][0]["value"], after, "{before}");
        }
    }

    #[test]
    fn set_image_reaches_the_restore_helper_image() {
        let mut objects = objects().expect("parse");
        set_image(&mut objects, "registry.example/ferry:dev");
        let text = serde_json::to_string(&objects).expect("encode");
        assert!(!text.contains(IMAGE_REPOSITORY), "{text}");
        assert!(text.contains(
            r#"{"name":"FERRY_RESTORE_HELPER_IMAGE","value":"registry.example/ferry:dev"}"#
        ));
    }
}
