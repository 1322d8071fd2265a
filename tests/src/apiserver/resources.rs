//! The resource types the server serves: the built-in kinds (listed, with what their registry
//! strategies do that is data, in [`super::builtins`]) and every CustomResourceDefinition it is
//! given.

use std::cmp::Ordering;
use std::sync::Arc;

use serde_json::Value;

use super::builtins::BUILTINS;
use super::errors::GroupResource;
use super::validation::strings;

/// The built-in kinds whose registry strategy has rules of its own, beyond the data of their
/// row in [`BUILTINS`]. Every other built-in kind is served by the generic rules and its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    Pod,
    Namespace,
    Secret,
    Service,
    /// The `token` subresource, which issues the service account's tokens (TokenRequest).
    ServiceAccount,
    /// Deployments, StatefulSets, ReplicaSets and DaemonSets: a required selector that selects
    /// the pod template, and is immutable.
    Workload,
    /// A selector generated from the Job's uid unless `manualSelector` is set.
    Job,
    /// RoleBinding and ClusterRoleBinding: subjects' API group defaults, and an immutable
    /// `roleRef`.
    RoleBinding,
    CustomResourceDefinition,
}

/// When a [`FieldDefault`] applies. Paths are dotted, from the object's root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    Always,
    /// The field holds this value, given as JSON text.
    Equals(&'static str, &'static str),
    /// The field is unset, null or an empty list.
    Absent(&'static str),
    /// The field is set to something other than null or an empty list.
    Present(&'static str),
}

/// A default of a `SetDefaults_*` function: the value an unset field gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldDefault {
    /// The dotted path of the field; a step `name[]` goes into every item of the list `name`.
    /// Missing objects on the way are created, missing lists are not.
    pub path: &'static str,
    /// The value, as JSON text.
    pub value: &'static str,
    pub when: When,
}

impl FieldDefault {
    pub const fn always(path: &'static str, value: &'static str) -> Self {
        Self {
            path,
            value,
            when: When::Always,
        }
    }

    pub const fn when(path: &'static str, value: &'static str, when: When) -> Self {
        Self { path, value, when }
    }
}

/// Which names `ValidateObjectMeta` accepts for a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// A DNS subdomain, as most kinds.
    Subdomain,
    /// A DNS label (RFC 1123), as namespaces.
    Label,
    /// A DNS-1035 label (starting with a letter), as services.
    Dns1035Label,
    /// Any path segment (`ValidatePathSegmentName`), as the RBAC kinds, whose names hold colons.
    PathSegment,
}

/// What a built-in kind's registry strategy does that is data rather than code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Strategy {
    /// The kind's own rules in code, if it has any.
    pub rules: Option<Builtin>,
    /// A `status` subresource, written apart from the rest.
    pub status: bool,
    /// `metadata.generation`, set on create and bumped on a change of the spec.
    pub generation: bool,
    /// `ReturnDeletedObject`: a delete answers with the object rather than a Status.
    pub returns_deleted_object: bool,
    /// `AllowCreateOnUpdate`: a PUT of a missing object creates it.
    pub create_on_update: bool,
    /// `!AllowUnconditionalUpdate`: an update must carry a resourceVersion.
    pub requires_resource_version: bool,
    pub names: NameRule,
    /// Applied to every write, in order, as decoding does.
    pub defaults: &'static [FieldDefault],
    /// The status `PrepareForCreate` resets a new object's to (JSON text); `None` keeps the
    /// status given.
    pub initial_status: Option<&'static str>,
    /// The JSON pointer of the pod template whose spec gets the pod defaults and checks.
    pub pod_template: Option<&'static str>,
    /// The restart policies the pod template may have.
    pub restart_policies: &'static [&'static str],
}

impl Strategy {
    /// The generic registry's behaviour: no subresources, no generation, no defaults.
    pub const GENERIC: Self = Self {
        rules: None,
        status: false,
        generation: false,
        returns_deleted_object: false,
        create_on_update: false,
        requires_resource_version: false,
        names: NameRule::Subdomain,
        defaults: &[],
        initial_status: None,
        pod_template: None,
        restart_policies: &[],
    };
}

/// Where a resource type comes from.
#[derive(Debug, Clone, Copy)]
pub enum Origin {
    Builtin(&'static Strategy),
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
        self.strategy().and_then(|s| s.rules)
    }

    /// The strategy of a built-in kind.
    pub fn strategy(&self) -> Option<&'static Strategy> {
        match self.origin {
            Origin::Builtin(strategy) => Some(strategy),
            Origin::Custom => None,
        }
    }

    pub fn is_custom(&self) -> bool {
        matches!(self.origin, Origin::Custom)
    }

    /// Whether the kind has a `status` subresource, so status and spec are written apart.
    pub fn has_status(&self, version: &str) -> bool {
        match self.origin {
            Origin::Custom => self.version(version).is_some_and(|v| v.status),
            Origin::Builtin(strategy) => strategy.status,
        }
    }

    /// Kinds whose strategy sets `metadata.generation` and bumps it on spec changes.
    pub fn has_generation(&self) -> bool {
        self.strategy().is_none_or(|s| s.generation)
    }

    /// `AllowUnconditionalUpdate`: false for custom resources and CRDs, which must carry a
    /// resourceVersion on update.
    pub fn allow_unconditional_update(&self) -> bool {
        self.strategy()
            .is_some_and(|s| !s.requires_resource_version)
    }

    /// `AllowCreateOnUpdate`: a PUT of a missing object creates it.
    pub fn allow_create_on_update(&self) -> bool {
        self.strategy().is_some_and(|s| s.create_on_update)
    }

    /// `ReturnDeletedObject`: a delete answers with the object rather than a success Status.
    pub fn returns_deleted_object(&self) -> bool {
        self.strategy().is_some_and(|s| s.returns_deleted_object)
    }

    /// Strategic merge patch needs the Go struct tags of a built-in type.
    pub fn supports_strategic_merge(&self) -> bool {
        !self.is_custom()
    }

    /// The names the kind accepts: a DNS subdomain for custom resources.
    pub fn name_rule(&self) -> NameRule {
        self.strategy().map_or(NameRule::Subdomain, |s| s.names)
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
        if self.builtin() == Some(Builtin::Namespace) {
            verbs.retain(|v| *v != "deletecollection");
        }
        verbs
    }

    /// Subresources served besides the main resource.
    pub fn subresources(&self, version: &str) -> Vec<Subresource> {
        let mut subresources = Vec::new();
        if self.has_status(version) {
            let verbs = vec!["get", "patch", "update"];
            subresources.push(Subresource::new("status", &self.kind, verbs));
        }
        match self.builtin() {
            Some(Builtin::Pod) => {
                subresources.push(Subresource::new("binding", "Binding", vec!["create"]));
                let verbs = vec!["create", "get"];
                subresources.push(Subresource::new("exec", "PodExecOptions", verbs));
            }
            Some(Builtin::ServiceAccount) => subresources.push(Subresource {
                group_version: Some(("authentication.k8s.io", "v1")),
                ..Subresource::new("token", "TokenRequest", vec!["create"])
            }),
            _ => {}
        }
        subresources
    }
}

/// A subresource as discovery lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subresource {
    pub name: &'static str,
    pub kind: String,
    pub verbs: Vec<&'static str>,
    /// The group and version of its kind, where they are not the resource's own (a
    /// ServiceAccount's `token` takes an `authentication.k8s.io/v1` TokenRequest).
    pub group_version: Option<(&'static str, &'static str)>,
}

impl Subresource {
    fn new(name: &'static str, kind: &str, verbs: Vec<&'static str>) -> Self {
        Self {
            name,
            kind: kind.to_owned(),
            verbs,
            group_version: None,
        }
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
                .map(|kind| Arc::new(kind.resource_type()))
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
            .retain(|t| !(t.is_custom() && t.group == group && t.plural == plural));
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
