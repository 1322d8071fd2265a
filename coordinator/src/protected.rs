//! Namespaces that Restores may not write to. A Restore creates Pods whose containers run what
//! the backup says, so a Restore into `kube-system` or into Ferry's own namespace would run
//! chosen workloads next to the cluster's and Ferry's credentials. The coordinator refuses such
//! Restores unless `--restore-namespace-denylist` allows them. Pure: the controller gives it
//! the specs and the namespaces it found.

use std::collections::{BTreeMap, BTreeSet};

use ferry_shared::crd::{BackupSpec, RestoreSpec};

/// The cluster's own namespaces, denied when the flag is not given; the install namespace is
/// added to them.
pub const DEFAULT_DENIED: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];

/// The namespaces Restores may not write to: the flag's comma list as given (empty denies
/// none), or without the flag, [`DEFAULT_DENIED`] and the install namespace.
pub fn denylist(flag: Option<&str>, install_namespace: &str) -> BTreeSet<String> {
    match flag {
        Some(list) => list
            .split(',')
            .map(str::trim)
            .filter(|namespace| !namespace.is_empty())
            .map(str::to_owned)
            .collect(),
        None => DEFAULT_DENIED
            .into_iter()
            .chain([install_namespace])
            .map(str::to_owned)
            .collect(),
    }
}

/// The namespaces a Restore will write to as far as its spec and its Backup's spec tell, each
/// with the backed-up namespace it comes from. When neither names its namespaces (both take
/// every namespace), only the targets of `namespaceMapping` are known before the backup's
/// objects are read; the controller checks the rest then. Excluded namespaces are left out.
pub fn spec_targets(restore: &RestoreSpec, backup: Option<&BackupSpec>) -> Vec<(String, String)> {
    let named = |namespaces: &[String]| {
        (!namespaces.is_empty() && !namespaces.iter().any(|ns| ns == "*"))
            .then(|| namespaces.to_vec())
    };
    let sources = named(&restore.included_namespaces)
        .or_else(|| backup.and_then(|backup| named(&backup.included_namespaces)));
    let excluded: BTreeSet<&String> = (restore.excluded_namespaces.iter())
        .chain(backup.iter().flat_map(|backup| &backup.excluded_namespaces))
        .collect();
    let targets: Vec<(String, String)> = match sources {
        Some(sources) => sources
            .into_iter()
            .map(|source| {
                let target = mapped(&restore.namespace_mapping, &source);
                (source, target)
            })
            .collect(),
        None => restore
            .namespace_mapping
            .iter()
            .map(|(source, target)| (source.clone(), target.clone()))
            .collect(),
    };
    (targets.into_iter())
        .filter(|(source, _)| !excluded.contains(source))
        .collect()
}

/// Where the objects of `source` go.
pub fn mapped(mapping: &BTreeMap<String, String>, source: &str) -> String {
    mapping
        .get(source)
        .cloned()
        .unwrap_or_else(|| source.to_owned())
}

/// The validation error for the `(source, target)` pairs whose target is denied, naming each
/// denied namespace and where it comes from, and how to go on; None when none is.
pub fn denied(targets: &[(String, String)], denylist: &BTreeSet<String>) -> Option<String> {
    let hits: BTreeSet<String> = targets
        .iter()
        .filter(|(_, target)| denylist.contains(target))
        .map(|(source, target)| {
            if source == target {
                target.clone()
            } else {
                format!("{target} (namespaceMapping from {source})")
            }
        })
        .collect();
    if hits.is_empty() {
        return None;
    }
    let (noun, it, they_are) = if hits.len() == 1 {
        ("namespace", "it", "it is")
    } else {
        ("namespaces", "them", "they are")
    };
    let listed = hits.into_iter().collect::<Vec<_>>().join(", ");
    Some(format!(
        "restores may not write to {noun} {listed}: {they_are} on the coordinator's \
         --restore-namespace-denylist (FERRY_RESTORE_NAMESPACE_DENYLIST); leave {it} out with \
         includedNamespaces or excludedNamespaces, map {it} elsewhere with namespaceMapping, \
         or take {it} off that list"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    fn strings(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    fn pairs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(source, target)| ((*source).to_owned(), (*target).to_owned()))
            .collect()
    }

    #[test]
    fn the_denylist_defaults_to_the_clusters_namespaces_and_the_install_namespace() {
        let cases: [(Option<&str>, BTreeSet<String>); 5] = [
            (
                None,
                set(&["kube-system", "kube-public", "kube-node-lease", "ferry"]),
            ),
            (Some(""), set(&[])),
            (Some("kube-system"), set(&["kube-system"])),
            (Some(" a, b ,,c "), set(&["a", "b", "c"])),
            (Some("ferry,ferry"), set(&["ferry"])),
        ];
        for (flag, expected) in cases {
            assert_eq!(denylist(flag, "ferry"), expected, "{flag:?}");
        }
    }

    #[test]
    fn targets_come_from_the_restore_then_the_backup_then_the_mapping() {
        let restore = |included: &[&str], mapping: &[(&str, &str)]| RestoreSpec {
            included_namespaces: strings(included),
            namespace_mapping: mapping
                .iter()
                .map(|(from, to)| ((*from).to_owned(), (*to).to_owned()))
                .collect(),
            ..RestoreSpec::default()
        };
        let backup = |included: &[&str]| BackupSpec {
            included_namespaces: strings(included),
            ..BackupSpec::default()
        };
        let shop = backup(&["shop", "kube-system"]);
        let everything = backup(&[]);
        let cases = [
            (
                restore(&["shop"], &[]),
                Some(&shop),
                pairs(&[("shop", "shop")]),
            ),
            (
                restore(&["shop"], &[("shop", "kube-system"), ("web", "ferry")]),
                Some(&shop),
                pairs(&[("shop", "kube-system")]),
            ),
            (
                restore(&[], &[("shop", "shop-2")]),
                Some(&shop),
                pairs(&[("shop", "shop-2"), ("kube-system", "kube-system")]),
            ),
            (
                restore(&["*"], &[]),
                Some(&shop),
                pairs(&[("shop", "shop"), ("kube-system", "kube-system")]),
            ),
            (
                restore(&[], &[("shop", "kube-public")]),
                Some(&everything),
                pairs(&[("shop", "kube-public")]),
            ),
            (restore(&[], &[]), Some(&everything), pairs(&[])),
            (
                RestoreSpec {
                    excluded_namespaces: strings(&["kube-system"]),
                    ..restore(&["*"], &[])
                },
                Some(&shop),
                pairs(&[("shop", "shop")]),
            ),
            (restore(&[], &[]), None, pairs(&[])),
        ];
        for (restore, backup, expected) in cases {
            assert_eq!(spec_targets(&restore, backup), expected, "{restore:?}");
        }
    }

    #[test]
    fn a_denied_target_names_the_namespace_its_source_and_the_flag() {
        let denylist = denylist(None, "ferry");
        let cases = [
            (pairs(&[("shop", "shop"), ("web", "web-2")]), None),
            (
                pairs(&[("shop", "shop"), ("kube-system", "kube-system")]),
                Some("namespace kube-system: it is"),
            ),
            (
                pairs(&[("shop", "ferry"), ("web", "kube-public")]),
                Some(
                    "namespaces ferry (namespaceMapping from shop), kube-public (namespaceMapping from web): they are",
                ),
            ),
        ];
        for (targets, expected) in cases {
            let message = denied(&targets, &denylist);
            match expected {
                None => assert_eq!(message, None, "{targets:?}"),
                Some(expected) => {
                    let message = message.expect("denied");
                    assert!(message.contains(expected), "{message}");
                    assert!(
                        message.contains("--restore-namespace-denylist"),
                        "{message}"
                    );
                }
            }
        }
        assert_eq!(denied(&pairs(&[("a", "kube-system")]), &set(&[])), None);
    }
}
