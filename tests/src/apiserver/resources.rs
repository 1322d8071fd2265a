//! The resource types the server serves: the built-in kinds Ferry touches and every
//! CustomResourceDefinition it is given, with the per-kind rules of their registry strategies.

use std::cmp::Ordering;
use std::sync::Arc;

use serde_json::Value;

use super::errors::GroupResource;
use super::validation::strings;

/// The built-in kinds, each with its own strategy in the real registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    Pod,
    Namespace,
    Node,
    PersistentVolume,
    PersistentVolumeClaim,
    Secret,
    ConfigMap,
    ServiceAccount,
    Event,
    EventsV1Event,
    Lease,
    CustomResourceDefinition,
}

/// Where a resource type comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Builtin(Builtin),
    Custom,
}

/// One served version of a resource type.
#[derive(Debug, Clone)]
pub struct ServedVersion {
    pub name: String,
    /// The CRD's `openAPIV3Schema`, for custom resources.
    pub schema: Option<Value>,
    /// Whether the version has the `status` subresource.
    pub status: bool,
    /// Field selector labels beyond `metadata.name` and `metadata.namespace`, with the JSON path
    /// each reads.
    pub field_labels: Vec<FieldLabel>,
}

/// A field selector label and where its value is in the object.
#[derive(Debug, Clone)]
pub struct FieldLabel {
    pub label: String,
    pub path: Vec<String>,
    /// What an absent field compares as (`false` for booleans such as `spec.hostNetwork`).
    pub absent: &'static str,
}

impl FieldLabel {
    fn at(label: &str) -> Self {
        Self {
            label: label.to_owned(),
            path: label.split('.').map(str::to_owned).collect(),
            absent: "",
        }
    }
}

/// A resource type: its names, scope, versions and strategy.
#[derive(Debug, Clone)]
pub struct ResourceType {
    pub group: String,
    /// Served versions, preferred first.
    pub versions: Vec<ServedVersion>,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub list_kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub origin: Origin,
}

impl ResourceType {
    pub fn key(&self) -> (String, String) {
        (self.group.clone(), self.plural.clone())
    }

    pub fn group_resource(&self) -> GroupResource {
        GroupResource {
            group: self.group.clone(),
            resource: self.plural.clone(),
        }
    }

    /// `Kind` for the core group, `Kind.group` otherwise, as validation messages name it.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_owned()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    pub fn version(&self, name: &str) -> Option<&ServedVersion> {
        self.versions.iter().find(|v| v.name == name)
    }

    pub fn builtin(&self) -> Option<Builtin> {
        match self.origin {
            Origin::Builtin(b) => Some(b),
            Origin::Custom => None,
        }
    }

    /// Whether the kind has a `status` subresource, so status and spec are written apart.
    pub fn has_status(&self, version: &str) -> bool {
        match self.origin {
            Origin::Custom => self.version(version).is_some_and(|v| v.status),
            Origin::Builtin(b) => matches!(
                b,
                Builtin::Pod
                    | Builtin::Namespace
                    | Builtin::Node
                    | Builtin::PersistentVolume
                    | Builtin::PersistentVolumeClaim
                    | Builtin::CustomResourceDefinition
            ),
        }
    }

    /// Kinds whose strategy sets `metadata.generation` and bumps it on spec changes.
    pub fn has_generation(&self) -> bool {
        matches!(
            self.origin,
            Origin::Custom | Origin::Builtin(Builtin::Pod | Builtin::CustomResourceDefinition)
        )
    }

    /// `AllowUnconditionalUpdate`: false for custom resources and CRDs, which must carry a
    /// resourceVersion on update.
    pub fn allow_unconditional_update(&self) -> bool {
        !matches!(
            self.origin,
            Origin::Custom | Origin::Builtin(Builtin::CustomResourceDefinition)
        )
    }

    /// `AllowCreateOnUpdate`: a PUT of a missing object creates it.
    pub fn allow_create_on_update(&self) -> bool {
        matches!(
            self.origin,
            Origin::Builtin(Builtin::Event | Builtin::EventsV1Event | Builtin::Lease)
        )
    }

    /// `ReturnDeletedObject`: a delete answers with the object rather than a success Status.
    pub fn returns_deleted_object(&self) -> bool {
        matches!(
            self.origin,
            Origin::Builtin(Builtin::Pod | Builtin::ServiceAccount)
        )
    }

    /// Strategic merge patch needs the Go struct tags of a built-in type.
    pub fn supports_strategic_merge(&self) -> bool {
        matches!(self.origin, Origin::Builtin(_))
    }

    /// Namespaces must be DNS labels; every other kind here a DNS subdomain.
    pub fn name_is_dns_label(&self) -> bool {
        self.origin == Origin::Builtin(Builtin::Namespace)
    }

    pub fn verbs(&self) -> Vec<&'static str> {
        let mut verbs = vec![
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ];
        if self.origin == Origin::Builtin(Builtin::Namespace) {
            verbs.retain(|v| *v != "deletecollection");
        }
        verbs
    }

    /// Subresources served besides the main resource, with their kind and verbs.
    pub fn subresources(&self, version: &str) -> Vec<(&'static str, String, Vec<&'static str>)> {
        let mut subresources = Vec::new();
        if self.has_status(version) {
            subresources.push(("status", self.kind.clone(), vec!["get", "patch", "update"]));
        }
        if self.origin == Origin::Builtin(Builtin::Pod) {
            subresources.push(("binding", "Binding".to_owned(), vec!["create"]));
        }
        subresources
    }
}

/// Every resource type the server serves. CRDs created through the API join it.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    types: Vec<Arc<ResourceType>>,
}

impl Registry {
    pub fn with_builtins() -> Self {
        Self {
            types: BUILTINS
                .iter()
                .map(|row| Arc::new(row.resource_type()))
                .collect(),
        }
    }

    pub fn types(&self) -> &[Arc<ResourceType>] {
        &self.types
    }

    /// The type served at `group/version` under `plural`.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.types
            .iter()
            .find(|t| t.group == group && t.plural == plural && t.version(version).is_some())
            .cloned()
    }

    /// The type stored under a group and plural.
    pub fn by_key(&self, group: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.types
            .iter()
            .find(|t| t.group == group && t.plural == plural)
            .cloned()
    }

    pub fn find_builtin(&self, builtin: Builtin) -> Option<Arc<ResourceType>> {
        self.types
            .iter()
            .find(|t| t.origin == Origin::Builtin(builtin))
            .cloned()
    }

    /// API groups in the order discovery lists them (the core group excluded), each with its
    /// served versions, preferred first.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for t in self.types.iter().filter(|t| !t.group.is_empty()) {
            let at = match groups.iter().position(|(g, _)| *g == t.group) {
                Some(at) => at,
                None => {
                    groups.push((t.group.clone(), Vec::new()));
                    groups.len() - 1
                }
            };
            for v in &t.versions {
                if !groups[at].1.contains(&v.name) {
                    groups[at].1.push(v.name.clone());
                }
            }
        }
        for (_, versions) in &mut groups {
            versions.sort_by(|a, b| compare_versions(a, b));
        }
        groups
    }

    /// Adds or replaces the type a CRD defines.
    pub fn register(&mut self, resource: ResourceType) -> Arc<ResourceType> {
        let resource = Arc::new(resource);
        self.types
            .retain(|t| !(t.group == resource.group && t.plural == resource.plural));
        self.types.push(Arc::clone(&resource));
        resource
    }

    pub fn unregister(&mut self, group: &str, plural: &str) {
        self.types
            .retain(|t| !(t.origin == Origin::Custom && t.group == group && t.plural == plural));
    }
}

/// Kubernetes version priority: GA before beta before alpha, higher numbers first, and any
/// other string last in alphabetical order.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    fn rank(v: &str) -> Option<(u8, u64, u64)> {
        let rest = v.strip_prefix('v')?;
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let major: u64 = rest[..digits].parse().ok()?;
        let tail = &rest[digits..];
        let (level, minor) = if tail.is_empty() {
            (2, 0)
        } else if let Some(n) = tail.strip_prefix("beta") {
            (1, n.parse().ok()?)
        } else if let Some(n) = tail.strip_prefix("alpha") {
            (0, n.parse().ok()?)
        } else {
            return None;
        };
        Some((level, major, minor))
    }
    match (rank(a), rank(b)) {
        (Some(x), Some(y)) => y.cmp(&x),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

/// Reads the resource type a CustomResourceDefinition object defines.
pub fn crd_resource_type(crd: &Value) -> Result<ResourceType, String> {
    let spec = crd.get("spec").ok_or("spec: Required value")?;
    let text = |v: &Value, field: &str| -> Result<String, String> {
        v.get(field)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or(format!("{field}: Required value"))
    };
    let group = text(spec, "group")?;
    let names = spec.get("names").ok_or("spec.names: Required value")?;
    let plural = text(names, "plural")?;
    let kind = text(names, "kind")?;
    let singular = text(names, "singular").unwrap_or_else(|_| kind.to_lowercase());
    let list_kind = text(names, "listKind").unwrap_or_else(|_| format!("{kind}List"));
    let namespaced = match spec.get("scope").and_then(Value::as_str) {
        Some("Namespaced") => true,
        Some("Cluster") => false,
        _ => return Err("spec.scope: Unsupported value".to_owned()),
    };
    let mut versions: Vec<ServedVersion> = spec
        .get("versions")
        .and_then(Value::as_array)
        .ok_or("spec.versions: Required value")?
        .iter()
        .filter(|v| v.get("served").and_then(Value::as_bool).unwrap_or(false))
        .map(|v| {
            let field_labels = v
                .get("selectableFields")
                .and_then(Value::as_array)
                .map(|fields| {
                    fields
                        .iter()
                        .filter_map(|f| f.get("jsonPath").and_then(Value::as_str))
                        .map(|p| FieldLabel::at(p.trim_start_matches('.')))
                        .collect()
                })
                .unwrap_or_default();
            Ok(ServedVersion {
                name: text(v, "name")?,
                schema: v.pointer("/schema/openAPIV3Schema").cloned(),
                status: v.pointer("/subresources/status").is_some(),
                field_labels,
            })
        })
        .collect::<Result<_, String>>()?;
    if versions.is_empty() {
        return Err("spec.versions: must have exactly one version marked as served".to_owned());
    }
    versions.sort_by(|a, b| compare_versions(&a.name, &b.name));
    Ok(ResourceType {
        group,
        versions,
        plural,
        singular,
        kind,
        list_kind,
        namespaced,
        short_names: strings(names.get("shortNames")),
        categories: strings(names.get("categories")),
        origin: Origin::Custom,
    })
}

/// A field selector label of a built-in kind, as the table of built-in kinds writes it.
struct BuiltinLabel {
    label: &'static str,
    /// The dotted path the label reads, which is the label itself but for `source`.
    path: &'static str,
    absent: &'static str,
}

impl BuiltinLabel {
    const fn at(label: &'static str) -> Self {
        Self {
            label,
            path: label,
            absent: "",
        }
    }

    /// A boolean field, which compares as `false` when absent.
    const fn boolean(label: &'static str) -> Self {
        Self {
            absent: "false",
            ..Self::at(label)
        }
    }

    fn field_label(&self) -> FieldLabel {
        FieldLabel {
            label: self.label.to_owned(),
            path: self.path.split('.').map(str::to_owned).collect(),
            absent: self.absent,
        }
    }
}

/// A built-in kind: what its type takes beyond what follows from the kind (singular, list kind
/// and the one version `v1`).
struct BuiltinRow {
    builtin: Builtin,
    group: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
    field_labels: &'static [BuiltinLabel],
}

impl BuiltinRow {
    fn resource_type(&self) -> ResourceType {
        let strings = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect();
        ResourceType {
            group: self.group.to_owned(),
            versions: vec![ServedVersion {
                name: "v1".to_owned(),
                schema: None,
                status: false,
                field_labels: self
                    .field_labels
                    .iter()
                    .map(BuiltinLabel::field_label)
                    .collect(),
            }],
            plural: self.plural.to_owned(),
            singular: self.kind.to_lowercase(),
            kind: self.kind.to_owned(),
            list_kind: format!("{}List", self.kind),
            namespaced: self.namespaced,
            short_names: strings(self.short_names),
            categories: strings(self.categories),
            origin: Origin::Builtin(self.builtin),
        }
    }
}

/// The built-in kinds, in the order discovery lists them.
const BUILTINS: [BuiltinRow; 12] = [
    BuiltinRow {
        builtin: Builtin::Pod,
        group: "",
        plural: "pods",
        kind: "Pod",
        namespaced: true,
        short_names: &["po"],
        categories: &["all"],
        field_labels: &[
            BuiltinLabel::at("spec.nodeName"),
            BuiltinLabel::at("spec.restartPolicy"),
            BuiltinLabel::at("spec.schedulerName"),
            BuiltinLabel::at("spec.serviceAccountName"),
            BuiltinLabel::boolean("spec.hostNetwork"),
            BuiltinLabel::at("status.phase"),
            BuiltinLabel::at("status.podIP"),
            BuiltinLabel::at("status.nominatedNodeName"),
        ],
    },
    BuiltinRow {
        builtin: Builtin::Namespace,
        group: "",
        plural: "namespaces",
        kind: "Namespace",
        namespaced: false,
        short_names: &["ns"],
        categories: &[],
        field_labels: &[BuiltinLabel::at("status.phase")],
    },
    BuiltinRow {
        builtin: Builtin::Node,
        group: "",
        plural: "nodes",
        kind: "Node",
        namespaced: false,
        short_names: &["no"],
        categories: &[],
        field_labels: &[BuiltinLabel::boolean("spec.unschedulable")],
    },
    BuiltinRow {
        builtin: Builtin::PersistentVolume,
        group: "",
        plural: "persistentvolumes",
        kind: "PersistentVolume",
        namespaced: false,
        short_names: &["pv"],
        categories: &[],
        field_labels: &[],
    },
    BuiltinRow {
        builtin: Builtin::PersistentVolumeClaim,
        group: "",
        plural: "persistentvolumeclaims",
        kind: "PersistentVolumeClaim",
        namespaced: true,
        short_names: &["pvc"],
        categories: &[],
        field_labels: &[],
    },
    BuiltinRow {
        builtin: Builtin::Secret,
        group: "",
        plural: "secrets",
        kind: "Secret",
        namespaced: true,
        short_names: &[],
        categories: &[],
        field_labels: &[BuiltinLabel::at("type")],
    },
    BuiltinRow {
        builtin: Builtin::ConfigMap,
        group: "",
        plural: "configmaps",
        kind: "ConfigMap",
        namespaced: true,
        short_names: &["cm"],
        categories: &[],
        field_labels: &[],
    },
    BuiltinRow {
        builtin: Builtin::ServiceAccount,
        group: "",
        plural: "serviceaccounts",
        kind: "ServiceAccount",
        namespaced: true,
        short_names: &["sa"],
        categories: &[],
        field_labels: &[],
    },
    BuiltinRow {
        builtin: Builtin::Event,
        group: "",
        plural: "events",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        categories: &[],
        field_labels: &[
            BuiltinLabel::at("involvedObject.kind"),
            BuiltinLabel::at("involvedObject.namespace"),
            BuiltinLabel::at("involvedObject.name"),
            BuiltinLabel::at("involvedObject.uid"),
            BuiltinLabel::at("involvedObject.apiVersion"),
            BuiltinLabel::at("involvedObject.resourceVersion"),
            BuiltinLabel::at("involvedObject.fieldPath"),
            BuiltinLabel::at("reason"),
            BuiltinLabel::at("reportingComponent"),
            BuiltinLabel::at("type"),
            BuiltinLabel {
                path: "source.component",
                ..BuiltinLabel::at("source")
            },
        ],
    },
    BuiltinRow {
        builtin: Builtin::EventsV1Event,
        group: "events.k8s.io",
        plural: "events",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        categories: &[],
        field_labels: &[],
    },
    BuiltinRow {
        builtin: Builtin::Lease,
        group: "coordination.k8s.io",
        plural: "leases",
        kind: "Lease",
        namespaced: true,
        short_names: &[],
        categories: &[],
        field_labels: &[],
    },
    BuiltinRow {
        builtin: Builtin::CustomResourceDefinition,
        group: "apiextensions.k8s.io",
        plural: "customresourcedefinitions",
        kind: "CustomResourceDefinition",
        namespaced: false,
        short_names: &["crd", "crds"],
        categories: &["api-extensions"],
        field_labels: &[],
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_by_kubernetes_priority() {
        let mut versions = vec![
            "v1alpha1", "foo", "v2beta1", "v1", "v1beta2", "v2", "v1beta1",
        ];
        versions.sort_by(|a, b| compare_versions(a, b));
        assert_eq!(
            versions,
            [
                "v2", "v1", "v2beta1", "v1beta2", "v1beta1", "v1alpha1", "foo"
            ]
        );
    }
}
