//! What a restore creates, and in which order: the backup's objects that the Restore's filters
//! select, with the cluster-scoped ones its scope asks for, in stages by type. Pure.

use std::collections::{BTreeMap, BTreeSet};

use ferry_shared::layout::ItemPath;
use kube::core::{Selector, SelectorExt};
use serde_json::Value;

use crate::resources::{ClusterScope, NamespaceFilter, ResourceFilter, never_moved};

/// Types restored first, in this order; every other type follows, by name. A type's objects
/// are created once those of the types before it exist: custom resources after their
/// definitions, claims after volumes, pods after what they mount and before their owners.
const PRIORITIES: [&str; 11] = [
    "customresourcedefinitions.apiextensions.k8s.io",
    "namespaces",
    "storageclasses.storage.k8s.io",
    "persistentvolumes",
    "persistentvolumeclaims",
    "serviceaccounts",
    "secrets",
    "configmaps",
    "limitranges",
    "pods",
    "replicasets.apps",
];

/// The fields of an object that the plan reads; the rest waits in its JSON until the object
/// is restored, for parsed objects take several times the memory of their JSON.
const SUMMARY: [&str; 10] = [
    "/apiVersion",
    "/kind",
    "/metadata/labels",
    "/spec/volumeName",
    "/spec/claimRef/namespace",
    "/spec/claimRef/name",
    "/spec/persistentVolumeReclaimPolicy",
    "/spec/group",
    "/spec/names/plural",
    "/spec/volumes",
];

/// One object of the backup's resources tarball: its JSON, and the fields the plan reads.
#[derive(Debug, Clone, PartialEq)]
pub struct BackedUp {
    pub path: ItemPath,
    summary: Value,
    json: Vec<u8>,
}

impl BackedUp {
    pub fn from_json(path: ItemPath, json: Vec<u8>) -> Result<Self, serde_json::Error> {
        let object: Value = serde_json::from_slice(&json)?;
        let mut summary = Value::Object(serde_json::Map::new());
        for pointer in SUMMARY {
            if let Some(value) = object.pointer(pointer) {
                put(&mut summary, pointer, value.clone());
            }
        }
        Ok(Self {
            path,
            summary,
            json,
        })
    }

    /// The whole object, parsed again.
    pub fn object(&self) -> Result<Value, serde_json::Error> {
        serde_json::from_slice(&self.json)
    }

    fn labels(&self) -> BTreeMap<String, String> {
        (self.summary.pointer("/metadata/labels"))
            .and_then(|labels| serde_json::from_value(labels.clone()).ok())
            .unwrap_or_default()
    }

    /// A text field among those the plan reads (see [`SUMMARY`]).
    pub fn text(&self, pointer: &str) -> Option<&str> {
        self.summary.pointer(pointer).and_then(Value::as_str)
    }

    /// The claims a backed-up pod mounts, by volume name.
    pub fn claims(&self) -> impl Iterator<Item = (&str, &str)> {
        (self
            .summary
            .pointer("/spec/volumes")
            .and_then(Value::as_array))
        .into_iter()
        .flatten()
        .filter_map(|volume| {
            let name = volume.get("name")?.as_str()?;
            let claim = volume
                .pointer("/persistentVolumeClaim/claimName")?
                .as_str()?;
            Some((name, claim))
        })
    }
}

/// Sets the field at `pointer`, making the objects on the way.
fn put(root: &mut Value, pointer: &str, value: Value) {
    let mut at = root;
    let mut keys = pointer.trim_start_matches('/').split('/').peekable();
    while let Some(key) = keys.next() {
        let Some(map) = at.as_object_mut() else {
            return;
        };
        if keys.peek().is_none() {
            map.insert(key.to_owned(), value);
            return;
        }
        at = map
            .entry(key.to_owned())
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
    }
}

/// A file of the resources tarball that is not a manifest.
#[derive(Debug, thiserror::Error)]
#[error("{path} is not a valid manifest: {source}")]
pub struct ManifestError {
    path: String,
    #[source]
    source: serde_json::Error,
}

/// The objects of a resources tarball; files that are not objects are ignored.
pub fn read_items(files: Vec<(String, Vec<u8>)>) -> Result<Vec<BackedUp>, ManifestError> {
    (files.into_iter())
        .filter_map(|(name, bytes)| Some((ItemPath::parse(&name)?, name, bytes)))
        .map(|(path, name, bytes)| {
            BackedUp::from_json(path, bytes).map_err(|source| ManifestError { path: name, source })
        })
        .collect()
}

/// The backed-up claims (namespace, name) whose data a pod-volume backup holds: those a pod
/// mounts as a volume with a snapshot.
pub fn claims_with_data(
    items: &[BackedUp],
    snapshots: &BTreeMap<(String, String, String), String>,
) -> BTreeSet<(String, String)> {
    (items.iter())
        .filter(|item| item.path.group_resource() == "pods")
        .flat_map(|pod| {
            let namespace = pod.path.namespace.clone().unwrap_or_default();
            pod.claims()
                .filter(|(volume, _)| {
                    let key = (
                        namespace.clone(),
                        pod.path.name.clone(),
                        (*volume).to_owned(),
                    );
                    snapshots.contains_key(&key)
                })
                .map(|(_, claim)| (namespace.clone(), claim.to_owned()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// What a Restore selects of a backup.
pub struct Selection {
    pub namespaces: NamespaceFilter,
    pub resources: ResourceFilter,
    pub scope: ClusterScope,
    pub selector: Option<Selector>,
}

/// Objects of one type, created together.
#[derive(Debug)]
pub struct Stage<'a> {
    /// `<plural>.<group>`, or `<plural>` for the core group.
    pub resource: String,
    pub items: Vec<&'a BackedUp>,
}

/// The restore's objects in order, and those it leaves out with the reason.
#[derive(Debug, Default)]
pub struct RestorePlan<'a> {
    pub stages: Vec<Stage<'a>>,
    /// Names of the PersistentVolumes restored.
    pub restored_volumes: BTreeSet<String>,
    pub skipped: Vec<String>,
}

impl RestorePlan<'_> {
    /// The namespaces the restored objects come from.
    pub fn sources(&self) -> BTreeSet<String> {
        (self.stages.iter())
            .flat_map(|stage| &stage.items)
            .filter_map(|item| item.path.namespace.clone())
            .chain(self.stage("namespaces").map(|item| item.path.name.clone()))
            .collect()
    }

    /// The objects of one type.
    pub fn stage(&self, resource: &str) -> impl Iterator<Item = &BackedUp> {
        (self.stages.iter())
            .filter(move |stage| stage.resource == resource)
            .flat_map(|stage| stage.items.iter().copied())
    }

    pub fn len(&self) -> usize {
        self.stages.iter().map(|stage| stage.items.len()).sum()
    }
}

/// Chooses and orders the objects of `items` that `selection` restores. `claims_with_data` are
/// the backed-up claims (namespace, name) whose data a pod-volume backup holds: their volumes
/// are not restored, as the cluster provisions new ones for the data to go into.
pub fn plan<'a>(
    items: &'a [BackedUp],
    selection: &Selection,
    claims_with_data: &BTreeSet<(String, String)>,
) -> RestorePlan<'a> {
    let chosen: Vec<&BackedUp> = (items.iter())
        .filter(|item| !never_moved(&item.path.group, &item.path.resource))
        .filter(|item| item.path.namespace.is_some() && selects(selection, item))
        .collect();
    let mut plan = RestorePlan::default();
    let claims = claims_by_volume(items);
    let cluster = cluster_items(items, selection, &chosen, &claims);
    let mut all = chosen;
    for item in cluster {
        match volume_left_out(item, claims.get(&item.path.name), claims_with_data) {
            Some(reason) => plan
                .skipped
                .push(format!("persistentvolumes/{}: {reason}", item.path.name)),
            None => {
                if item.path.group_resource() == "persistentvolumes" {
                    plan.restored_volumes.insert(item.path.name.clone());
                }
                all.push(item);
            }
        }
    }
    all.sort_by_key(|item| (rank(&item.path.group_resource()), &item.path));
    for item in all {
        let resource = item.path.group_resource();
        match plan.stages.last_mut() {
            Some(stage) if stage.resource == resource => stage.items.push(item),
            _ => plan.stages.push(Stage {
                resource,
                items: vec![item],
            }),
        }
    }
    plan
}

fn rank(resource: &str) -> (usize, String) {
    let at = PRIORITIES.iter().position(|p| *p == resource);
    (at.unwrap_or(PRIORITIES.len()), resource.to_owned())
}

/// Whether a namespaced object, or a cluster-scoped one under scope All, is selected.
fn selects(selection: &Selection, item: &BackedUp) -> bool {
    let in_namespace =
        (item.path.namespace.as_deref()).is_none_or(|ns| selection.namespaces.selects(ns));
    in_namespace
        && selection.resources.selects(&item.path.group_resource())
        && (selection.selector.as_ref()).is_none_or(|selector| selector.matches(&item.labels()))
}

/// The claim (namespace, name) of each backed-up volume, by the volume's name: as the claim's
/// `volumeName` says, else as the volume's `claimRef` does.
fn claims_by_volume(items: &[BackedUp]) -> BTreeMap<String, (String, String)> {
    let mut claims = BTreeMap::new();
    for item in items {
        let (volume, claim) = match item.path.group_resource().as_str() {
            "persistentvolumeclaims" => {
                let Some(volume) = item.text("/spec/volumeName") else {
                    continue;
                };
                let namespace = item.path.namespace.clone().unwrap_or_default();
                (volume.to_owned(), (namespace, item.path.name.clone()))
            }
            "persistentvolumes" => {
                let claim =
                    (item.text("/spec/claimRef/namespace")).zip(item.text("/spec/claimRef/name"));
                let Some((namespace, name)) = claim else {
                    continue;
                };
                (
                    item.path.name.clone(),
                    (namespace.to_owned(), name.to_owned()),
                )
            }
            _ => continue,
        };
        claims.entry(volume).or_insert(claim);
    }
    claims
}

/// The cluster-scoped objects the scope takes: all that are selected, or those the chosen
/// namespaced objects need (their Namespaces, the volumes of their claims, the definitions of
/// their kinds), unless their type is excluded by name.
fn cluster_items<'a>(
    items: &'a [BackedUp],
    selection: &Selection,
    chosen: &[&BackedUp],
    claims_by_volume: &BTreeMap<String, (String, String)>,
) -> Vec<&'a BackedUp> {
    let cluster = (items.iter())
        .filter(|item| item.path.namespace.is_none())
        .filter(|item| !never_moved(&item.path.group, &item.path.resource));
    match selection.scope {
        ClusterScope::Nothing => Vec::new(),
        ClusterScope::All => cluster.filter(|item| selects(selection, item)).collect(),
        ClusterScope::Related => {
            let namespaces: BTreeSet<&str> = chosen
                .iter()
                .filter_map(|item| item.path.namespace.as_deref())
                .collect();
            let claims: BTreeSet<(String, String)> = (chosen.iter())
                .filter(|item| item.path.group_resource() == "persistentvolumeclaims")
                .filter_map(|item| Some((item.path.namespace.clone()?, item.path.name.clone())))
                .collect();
            let kinds: BTreeSet<(&str, &str)> = (chosen.iter())
                .map(|item| (item.path.group.as_str(), item.path.resource.as_str()))
                .collect();
            cluster
                .filter(|item| !selection.resources.excludes(&item.path.group_resource()))
                .filter(|item| match item.path.group_resource().as_str() {
                    "namespaces" => namespaces.contains(item.path.name.as_str()),
                    "persistentvolumes" => (claims_by_volume.get(&item.path.name))
                        .is_some_and(|claim| claims.contains(claim)),
                    "customresourcedefinitions.apiextensions.k8s.io" => (item.text("/spec/group"))
                        .zip(item.text("/spec/names/plural"))
                        .is_some_and(|kind| kinds.contains(&kind)),
                    _ => false,
                })
                .collect()
        }
    }
}

/// Why a backed-up PersistentVolume is not restored, if it is not.
fn volume_left_out(
    item: &BackedUp,
    claim: Option<&(String, String)>,
    claims_with_data: &BTreeSet<(String, String)>,
) -> Option<&'static str> {
    if item.path.group_resource() != "persistentvolumes" {
        return None;
    }
    if claim.is_some_and(|claim| claims_with_data.contains(claim)) {
        return Some("its claim's data comes from a pod volume backup, into a new volume");
    }
    if item.text("/spec/persistentVolumeReclaimPolicy") == Some("Delete") {
        return Some(
            "its reclaim policy is Delete, so its storage went with its claim; the claim gets a new volume",
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::resources::ServedType;
    use ferry_shared::crd::ResourceSelection;

    fn item(
        group: &str,
        resource: &str,
        namespace: Option<&str>,
        name: &str,
        object: Value,
    ) -> BackedUp {
        let path = ItemPath {
            group: group.to_owned(),
            resource: resource.to_owned(),
            namespace: namespace.map(str::to_owned),
            name: name.to_owned(),
        };
        BackedUp::from_json(path, serde_json::to_vec(&object).unwrap()).unwrap()
    }

    fn labelled(app: &str) -> Value {
        json!({"metadata": {"labels": {"app": app}}})
    }

    fn backup() -> Vec<BackedUp> {
        vec![
            item("apps", "deployments", Some("shop"), "web", labelled("web")),
            item(
                "apps",
                "replicasets",
                Some("shop"),
                "web-1",
                labelled("web"),
            ),
            item("", "pods", Some("shop"), "web-1-a", labelled("web")),
            item("", "services", Some("shop"), "web", labelled("web")),
            item("", "configmaps", Some("shop"), "cfg", labelled("db")),
            item("", "secrets", Some("blog"), "key", labelled("web")),
            item(
                "",
                "persistentvolumeclaims",
                Some("shop"),
                "data",
                json!({"metadata": {"labels": {"app": "db"}}, "spec": {"volumeName": "pv-data"}}),
            ),
            item(
                "",
                "persistentvolumeclaims",
                Some("shop"),
                "logs",
                labelled("db"),
            ),
            item("", "events", Some("shop"), "web.1", json!({})),
            item("example.com", "widgets", Some("shop"), "w", labelled("web")),
            item("", "namespaces", None, "shop", json!({})),
            item("", "namespaces", None, "blog", json!({})),
            item(
                "",
                "persistentvolumes",
                None,
                "pv-data",
                json!({"spec": {"persistentVolumeReclaimPolicy": "Retain"}}),
            ),
            item(
                "",
                "persistentvolumes",
                None,
                "pv-logs",
                json!({"spec": {"claimRef": {"namespace": "shop", "name": "logs"}, "persistentVolumeReclaimPolicy": "Retain"}}),
            ),
            item(
                "",
                "persistentvolumes",
                None,
                "pv-gone",
                json!({"spec": {"claimRef": {"namespace": "old", "name": "x"}, "persistentVolumeReclaimPolicy": "Delete"}}),
            ),
            item(
                "apiextensions.k8s.io",
                "customresourcedefinitions",
                None,
                "widgets.example.com",
                json!({"spec": {"group": "example.com", "names": {"plural": "widgets"}}}),
            ),
            item(
                "apiextensions.k8s.io",
                "customresourcedefinitions",
                None,
                "gadgets.example.com",
                json!({"spec": {"group": "example.com", "names": {"plural": "gadgets"}}}),
            ),
            item(
                "rbac.authorization.k8s.io",
                "clusterroles",
                None,
                "view-widgets",
                json!({}),
            ),
        ]
    }

    fn types() -> Vec<ServedType> {
        [
            ("apps", "deployments", "Deployment"),
            ("", "configmaps", "ConfigMap"),
            ("", "secrets", "Secret"),
            ("", "pods", "Pod"),
            ("example.com", "widgets", "Widget"),
        ]
        .into_iter()
        .map(|(group, plural, kind)| ServedType {
            group: group.to_owned(),
            version: "v1".to_owned(),
            plural: plural.to_owned(),
            singular: kind.to_lowercase(),
            kind: kind.to_owned(),
            short_names: Vec::new(),
            namespaced: true,
            verbs: Vec::new(),
        })
        .collect()
    }

    fn selection(
        namespaces: &[&str],
        excluded: &[&str],
        resources: &[&str],
        include_cluster: Option<bool>,
        app: Option<&str>,
    ) -> Selection {
        let strings = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let namespaces = NamespaceFilter::new(&strings(namespaces), &strings(excluded));
        let naming = ResourceSelection {
            included_resources: strings(resources),
            ..ResourceSelection::default()
        };
        let (resources, _) = ResourceFilter::resolve(&naming, &types());
        Selection {
            scope: ClusterScope::of(include_cluster, &namespaces),
            namespaces,
            resources,
            selector: app.map(|app| Selector::from_iter([("app".to_owned(), app.to_owned())])),
        }
    }

    fn restored(plan: &RestorePlan<'_>) -> Vec<String> {
        (plan.stages.iter())
            .flat_map(|stage| &stage.items)
            .map(|item| match &item.path.namespace {
                Some(ns) => format!("{}/{ns}/{}", item.path.group_resource(), item.path.name),
                None => format!("{}/{}", item.path.group_resource(), item.path.name),
            })
            .collect()
    }

    #[test]
    fn objects_come_back_in_a_safe_order() {
        let items = backup();
        let with_data = BTreeSet::from([("shop".to_owned(), "data".to_owned())]);
        let plan = plan(&items, &selection(&[], &[], &[], None, None), &with_data);
        assert_eq!(
            restored(&plan),
            [
                "customresourcedefinitions.apiextensions.k8s.io/gadgets.example.com",
                "customresourcedefinitions.apiextensions.k8s.io/widgets.example.com",
                "namespaces/blog",
                "namespaces/shop",
                "persistentvolumes/pv-logs",
                "persistentvolumeclaims/shop/data",
                "persistentvolumeclaims/shop/logs",
                "secrets/blog/key",
                "configmaps/shop/cfg",
                "pods/shop/web-1-a",
                "replicasets.apps/shop/web-1",
                "clusterroles.rbac.authorization.k8s.io/view-widgets",
                "deployments.apps/shop/web",
                "services/shop/web",
                "widgets.example.com/shop/w",
            ]
        );
        assert_eq!(
            plan.restored_volumes,
            BTreeSet::from(["pv-logs".to_owned()])
        );
        assert_eq!(plan.skipped.len(), 2, "{:?}", plan.skipped);
        assert!(plan.skipped[0].starts_with("persistentvolumes/pv-data: its claim's data"));
        assert_eq!(
            plan.sources(),
            BTreeSet::from(["blog".to_owned(), "shop".to_owned()])
        );
    }

    #[test]
    fn filters_choose_namespaces_types_labels_and_cluster_objects() {
        let items = backup();
        let none = BTreeSet::new();
        // (namespaces, excluded namespaces, resources, includeClusterResources, app label, restored)
        type Case<'a> = (
            &'a [&'a str],
            &'a [&'a str],
            &'a [&'a str],
            Option<bool>,
            Option<&'a str>,
            &'a [&'a str],
        );
        let cases: [Case<'_>; 5] = [
            (
                &["blog"],
                &[],
                &[],
                None,
                None,
                &["namespaces/blog", "secrets/blog/key"],
            ),
            (
                &["shop"],
                &[],
                &["deployments", "configmaps"],
                Some(false),
                None,
                &["configmaps/shop/cfg", "deployments.apps/shop/web"],
            ),
            (
                &["*"],
                &["shop"],
                &["secrets"],
                Some(true),
                None,
                &["secrets/blog/key"],
            ),
            (
                &["shop"],
                &[],
                &[],
                None,
                Some("db"),
                &[
                    "namespaces/shop",
                    "persistentvolumes/pv-data",
                    "persistentvolumes/pv-logs",
                    "persistentvolumeclaims/shop/data",
                    "persistentvolumeclaims/shop/logs",
                    "configmaps/shop/cfg",
                ],
            ),
            (
                &["shop"],
                &[],
                &["widgets.example.com"],
                None,
                None,
                &[
                    "customresourcedefinitions.apiextensions.k8s.io/widgets.example.com",
                    "namespaces/shop",
                    "widgets.example.com/shop/w",
                ],
            ),
        ];
        for (namespaces, excluded, resources, cluster, app, expected) in cases {
            let chosen = selection(namespaces, excluded, resources, cluster, app);
            let plan = plan(&items, &chosen, &none);
            assert_eq!(
                restored(&plan),
                expected,
                "{namespaces:?} {resources:?} {cluster:?} {app:?}"
            );
        }
    }
}
