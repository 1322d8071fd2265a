//! Which types, namespaces and cluster-scoped objects a Backup or Restore selects. Pure, with
//! the names resolved against the types discovery found.

use std::collections::BTreeSet;

use ferry_shared::crd::ResourceSelection;
use ferry_shared::names;

use super::ServedType;

/// Types no backup keeps and no restore creates: what the cluster makes for itself (events,
/// nodes, leases, attachment records) and Ferry's own kinds.
pub fn never_moved(group: &str, plural: &str) -> bool {
    group == names::API_GROUP
        || matches!(
            (group, plural),
            ("" | "events.k8s.io", "events")
                | ("", "nodes" | "componentstatuses")
                | ("coordination.k8s.io", "leases")
                | ("storage.k8s.io", "csinodes" | "volumeattachments")
        )
}

/// A Backup's or Restore's `includedResources` and `excludedResources`, resolved to the
/// `<plural>.<group>` names of the types they match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceFilter {
    /// `None`: every type.
    included: Option<BTreeSet<String>>,
    excluded: BTreeSet<String>,
}

impl ResourceFilter {
    /// Resolves the names against `types`: a plural, singular, kind or short name, alone or
    /// followed by `.<group>`, or `*`. A name that matches no type is a warning and is ignored.
    pub fn resolve(selection: &ResourceSelection, types: &[ServedType]) -> (Self, Vec<String>) {
        let (included, excluded) = (&selection.included_resources, &selection.excluded_resources);
        let mut warnings = Vec::new();
        let mut matching = |field: &str, names: &[String]| -> BTreeSet<String> {
            let mut found = BTreeSet::new();
            for name in names.iter().filter(|name| name.as_str() != "*") {
                let lowered = name.to_lowercase();
                let matched: Vec<String> = (types.iter())
                    .filter(|t| names_type(&lowered, t))
                    .map(ServedType::group_resource)
                    .collect();
                if matched.is_empty() {
                    warnings.push(format!(
                        "{field}: {name:?} is not a resource type the cluster serves; it is ignored"
                    ));
                }
                found.extend(matched);
            }
            found
        };
        let every = included.is_empty() || included.iter().any(|name| name == "*");
        let filter = Self {
            included: (!every).then(|| matching("includedResources", included)),
            excluded: matching("excludedResources", excluded),
        };
        (filter, warnings)
    }

    /// Whether objects of the type `<plural>.<group>` are selected.
    pub fn selects(&self, group_resource: &str) -> bool {
        !self.excluded.contains(group_resource)
            && self
                .included
                .as_ref()
                .is_none_or(|included| included.contains(group_resource))
    }

    /// Whether the type is excluded by name; objects that others need are kept unless it is.
    pub fn excludes(&self, group_resource: &str) -> bool {
        self.excluded.contains(group_resource)
    }
}

/// Whether `name` (lowercased) names the type, alone or qualified by its group.
fn names_type(name: &str, served: &ServedType) -> bool {
    let kind = served.kind.to_lowercase();
    let mut candidates = [served.plural.as_str(), served.singular.as_str(), &kind]
        .into_iter()
        .chain(served.short_names.iter().map(String::as_str));
    candidates.any(|candidate| {
        name == candidate
            || (!served.group.is_empty()
                && name
                    .strip_prefix(candidate)
                    .and_then(|rest| rest.strip_prefix('.'))
                    == Some(served.group.as_str()))
    })
}

/// A Backup's or Restore's `includedNamespaces` and `excludedNamespaces`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceFilter {
    included: Vec<String>,
    excluded: Vec<String>,
}

impl NamespaceFilter {
    pub fn new(included: &[String], excluded: &[String]) -> Self {
        Self {
            included: included.to_vec(),
            excluded: excluded.to_vec(),
        }
    }

    /// The namespaces named, or `None` when every namespace is included.
    pub fn named(&self) -> Option<&[String]> {
        let all = self.included.is_empty() || self.included.iter().any(|ns| ns == "*");
        (!all).then_some(self.included.as_slice())
    }

    /// Every namespace, none excluded.
    pub fn everything(&self) -> bool {
        self.named().is_none() && self.excluded.is_empty()
    }

    pub fn selects(&self, namespace: &str) -> bool {
        !self.excluded.iter().any(|ns| ns == namespace)
            && self
                .named()
                .is_none_or(|named| named.iter().any(|ns| ns == namespace))
    }
}

/// Which cluster-scoped objects are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterScope {
    /// Every one the resource filter selects.
    All,
    /// Only those the namespaced objects need: their Namespaces, the PersistentVolumes bound
    /// to their claims and the CustomResourceDefinitions of their kinds.
    Related,
    /// None.
    Nothing,
}

impl ClusterScope {
    /// `includeClusterResources`: unset means all of them when every namespace is selected.
    pub fn of(include: Option<bool>, namespaces: &NamespaceFilter) -> Self {
        match include {
            Some(true) => Self::All,
            Some(false) => Self::Nothing,
            None if namespaces.everything() => Self::All,
            None => Self::Related,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(group: &str, plural: &str, kind: &str, short: &[&str]) -> ServedType {
        ServedType {
            group: group.to_owned(),
            version: "v1".to_owned(),
            plural: plural.to_owned(),
            singular: kind.to_lowercase(),
            kind: kind.to_owned(),
            short_names: short.iter().map(|s| (*s).to_owned()).collect(),
            namespaced: true,
            verbs: vec!["list".to_owned()],
        }
    }

    fn types() -> Vec<ServedType> {
        vec![
            served("", "configmaps", "ConfigMap", &["cm"]),
            served("", "secrets", "Secret", &[]),
            served("apps", "deployments", "Deployment", &["deploy"]),
            served("", "events", "Event", &["ev"]),
            served("events.k8s.io", "events", "Event", &["ev"]),
        ]
    }

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn naming(included: &[&str], excluded: &[&str]) -> ResourceSelection {
        ResourceSelection {
            included_resources: strings(included),
            excluded_resources: strings(excluded),
            include_cluster_resources: None,
        }
    }

    const ALL: [&str; 5] = [
        "configmaps",
        "secrets",
        "deployments.apps",
        "events",
        "events.events.k8s.io",
    ];

    #[test]
    fn resource_names_resolve_like_kubectl_and_unknown_ones_are_warnings() {
        // (included, excluded, selected types, warnings)
        type Case<'a> = (&'a [&'a str], &'a [&'a str], &'a [&'a str], usize);
        let cases: [Case<'_>; 8] = [
            (&[], &[], &ALL, 0),
            (
                &["*"],
                &["secrets"],
                &[
                    "configmaps",
                    "deployments.apps",
                    "events",
                    "events.events.k8s.io",
                ],
                0,
            ),
            (&["deployments"], &[], &["deployments.apps"], 0),
            (
                &["deployments.apps", "cm"],
                &[],
                &["configmaps", "deployments.apps"],
                0,
            ),
            (
                &["Deployment", "secret"],
                &[],
                &["secrets", "deployments.apps"],
                0,
            ),
            (&["deployments.batch"], &[], &[], 1),
            (&["gadgets", "configmaps"], &["widgets"], &["configmaps"], 2),
            (&["ev"], &[], &["events", "events.events.k8s.io"], 0),
        ];
        for (included, excluded, selected, warnings) in cases {
            let (filter, found) = ResourceFilter::resolve(&naming(included, excluded), &types());
            let chosen: Vec<&str> = ALL.into_iter().filter(|t| filter.selects(t)).collect();
            assert_eq!(chosen, selected, "{included:?} {excluded:?}");
            assert_eq!(
                found.len(),
                warnings,
                "{included:?} {excluded:?}: {found:?}"
            );
        }
        let (_, found) = ResourceFilter::resolve(&naming(&["gadgets"], &[]), &types());
        assert_eq!(
            found,
            [
                "includedResources: \"gadgets\" is not a resource type the cluster serves; it is ignored"
            ]
        );
    }

    #[test]
    fn namespaces_and_cluster_scope() {
        let every = NamespaceFilter::new(&[], &[]);
        let star = NamespaceFilter::new(&strings(&["*"]), &strings(&["kube-system"]));
        let named = NamespaceFilter::new(&strings(&["shop", "blog"]), &strings(&["blog"]));
        assert!(every.everything() && every.selects("x"));
        assert!(!star.everything() && star.selects("x") && !star.selects("kube-system"));
        assert!(named.selects("shop") && !named.selects("blog") && !named.selects("x"));
        // (includeClusterResources, namespaces, scope)
        let cases = [
            (None, &every, ClusterScope::All),
            (None, &star, ClusterScope::Related),
            (None, &named, ClusterScope::Related),
            (Some(true), &named, ClusterScope::All),
            (Some(false), &every, ClusterScope::Nothing),
        ];
        for (include, namespaces, scope) in cases {
            assert_eq!(
                ClusterScope::of(include, namespaces),
                scope,
                "{include:?} {namespaces:?}"
            );
        }
    }

    #[test]
    fn events_nodes_leases_and_ferrys_kinds_never_move() {
        for (group, plural) in [
            ("", "events"),
            ("events.k8s.io", "events"),
            ("", "nodes"),
            ("coordination.k8s.io", "leases"),
            ("ferry.dev", "backups"),
        ] {
            assert!(never_moved(group, plural), "{group}/{plural}");
        }
        for (group, plural) in [("", "pods"), ("apps", "deployments"), ("", "namespaces")] {
            assert!(!never_moved(group, plural), "{group}/{plural}");
        }
    }
}
