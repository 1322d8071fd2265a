//! Each test's own names. Tests name namespaces, nodes and persistent volumes as they read
//! best (`shop`, `node-a`, `pv-data`); the harness makes every such name the test's own by a
//! random suffix, so that tests running at once on one shared API server never see each
//! other's objects. The harness's methods and the fixtures take the names a test reads; what
//! the API server returns holds the names it stores, which [`Names::scoped`] gives.

use std::collections::BTreeMap;

use rand::Rng;
use serde_json::Value;

/// The label on every object the harness makes outside a test's namespaces (nodes, persistent
/// volumes, cluster roles and their bindings): the test's id, for cleaning them up.
pub const TEST_ID_LABEL: &str = "test.ferry.dev/id";

/// How long a test's id is: 36^6 ids, enough for tests that run at once.
const ID_LENGTH: usize = 6;

/// A test's names: its id, the suffix of every name it makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    id: String,
    /// The ids of the clusters that the test lost before this one, whose names its objects
    /// (restored from their backups) may still carry.
    earlier: Vec<String>,
}

impl Names {
    /// A fresh random id of lowercase letters and digits.
    pub fn random() -> Self {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut rng = rand::rng();
        let id = (0..ID_LENGTH)
            .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
            .collect();
        Self {
            id,
            earlier: Vec::new(),
        }
    }

    /// These names, in a cluster that comes after `lost` in the same test: names made by
    /// `lost` are left as they are in what the test selects, and are this test's to clean up.
    pub fn after(mut self, lost: &Names) -> Self {
        self.earlier.push(lost.id.clone());
        self.earlier.extend(lost.earlier.iter().cloned());
        self
    }

    /// The test's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The name the server stores for the test's `name`: `name-<id>`; but the namespaces
    /// that every cluster has, `default` and `kube-*`, are the cluster's.
    pub fn scoped(&self, name: &str) -> String {
        if name == "default" || name.starts_with("kube-") {
            return name.to_owned();
        }
        format!("{name}-{}", self.id)
    }

    /// `text` with every name the test scoped read back as the test names it: what Ferry
    /// wrote about the test's objects, for comparing with the names the test gave.
    pub fn unscoped(&self, text: &str) -> String {
        text.replace(&format!("-{}", self.id), "")
    }

    /// Whether an object's stored name is one this test made, or one that Ferry made from
    /// such a name (a restore's namespace mapping keeps the suffix at the end).
    pub fn owns(&self, stored: &str) -> bool {
        self.ids().any(|id| made_by(stored, id))
    }

    /// The test's id and those of the clusters it lost before.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.id.as_str()).chain(self.earlier.iter().map(String::as_str))
    }

    /// The labels that mark a cluster-scoped object as this test's.
    pub fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([(TEST_ID_LABEL.to_owned(), self.id.clone())])
    }

    /// `key=value` of [`TEST_ID_LABEL`], for listing this test's objects.
    pub fn selector(&self) -> String {
        format!("{TEST_ID_LABEL}={}", self.id)
    }

    /// A namespace that a Backup, Restore or hook selects: scoped when it is a name; a
    /// pattern such as `*`, or a value that is no valid name (which a test gives to see it
    /// refused), stays as it is.
    pub fn selected_namespace(&self, namespace: &str) -> String {
        let lost = self.earlier.iter().any(|id| made_by(namespace, id));
        if is_dns_label(namespace) && !lost {
            self.scoped(namespace)
        } else {
            namespace.to_owned()
        }
    }

    /// Scopes every namespace that a spec names, at any depth: the `includedNamespaces` and
    /// `excludedNamespaces` lists, and both sides of a `namespaceMapping`.
    pub fn scope_namespaces(&self, spec: &mut Value) {
        match spec {
            Value::Object(fields) => {
                for (key, value) in fields.iter_mut() {
                    match (key.as_str(), value) {
                        ("includedNamespaces" | "excludedNamespaces", Value::Array(list)) => {
                            for item in list.iter_mut() {
                                self.scope_string(item);
                            }
                        }
                        ("namespaceMapping", Value::Object(mapping)) => {
                            *mapping = std::mem::take(mapping)
                                .into_iter()
                                .map(|(from, mut to)| {
                                    self.scope_string(&mut to);
                                    (self.selected_namespace(&from), to)
                                })
                                .collect();
                        }
                        (_, value) => self.scope_namespaces(value),
                    }
                }
            }
            Value::Array(items) => items
                .iter_mut()
                .for_each(|item| self.scope_namespaces(item)),
            _ => {}
        }
    }

    fn scope_string(&self, value: &mut Value) {
        if let Value::String(namespace) = value {
            *namespace = self.selected_namespace(namespace);
        }
    }
}

/// Whether `stored` is a name that the test of id `id` scoped: `<name>-<id>`.
fn made_by(stored: &str, id: &str) -> bool {
    stored
        .strip_suffix(id)
        .is_some_and(|rest| rest.ends_with('-'))
}

/// An RFC 1123 label, as namespace names are: lowercase letters, digits and `-`, starting and
/// ending with a letter or digit.
fn is_dns_label(name: &str) -> bool {
    let valid = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !name.is_empty()
        && name.chars().all(|c| valid(c) || c == '-')
        && name.starts_with(valid)
        && name.ends_with(valid)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn names() -> Names {
        Names {
            id: "x1".into(),
            earlier: Vec::new(),
        }
    }

    #[test]
    fn selections_scope_names_and_leave_patterns_and_bad_values() {
        let cases = [
            ("shop", "shop-x1"),
            ("shop-2", "shop-2-x1"),
            ("*", "*"),
            ("shop*", "shop*"),
            ("Bad_Name", "Bad_Name"),
            ("-shop", "-shop"),
            ("", ""),
            ("kube-system", "kube-system"),
            ("default", "default"),
        ];
        for (given, stored) in cases {
            assert_eq!(names().selected_namespace(given), stored, "{given}");
        }
    }

    #[test]
    fn every_namespace_a_spec_names_is_scoped_at_any_depth() {
        let mut spec = json!({
            "includedNamespaces": ["shop", "*"],
            "excludedNamespaces": ["blog"],
            "namespaceMapping": {"shop": "shop-2"},
            "hooks": {"resources": [{"includedNamespaces": ["shop"], "name": "shop"}]},
            "labelSelector": {"matchLabels": {"includedNamespaces": "shop"}},
        });
        names().scope_namespaces(&mut spec);
        assert_eq!(
            spec,
            json!({
                "includedNamespaces": ["shop-x1", "*"],
                "excludedNamespaces": ["blog-x1"],
                "namespaceMapping": {"shop-x1": "shop-2-x1"},
                "hooks": {"resources": [{"includedNamespaces": ["shop-x1"], "name": "shop"}]},
                "labelSelector": {"matchLabels": {"includedNamespaces": "shop"}},
            })
        );
    }

    #[test]
    fn text_about_scoped_names_reads_back_as_the_test_named_them() {
        let names = names();
        let text = format!(
            "pod {}/db on {}",
            names.scoped("shop"),
            names.scoped("node-a")
        );
        assert_eq!(names.unscoped(&text), "pod shop/db on node-a");
    }

    #[test]
    fn a_test_owns_the_names_it_scoped_only() {
        let names = names();
        assert!(names.owns(&names.scoped("shop")));
        assert!(names.owns("shop-2-x1"));
        assert!(!names.owns("shop-2-y1"));
        assert!(!names.owns("shopx1"));
        assert!(!names.owns("x1"));
    }

    #[test]
    fn a_cluster_after_a_lost_one_leaves_its_names_and_owns_them() {
        let lost = names();
        let fresh = Names {
            id: "y2".into(),
            earlier: Vec::new(),
        }
        .after(&lost);
        assert_eq!(fresh.selected_namespace("shop-x1"), "shop-x1");
        assert_eq!(fresh.selected_namespace("shop"), "shop-y2");
        assert!(fresh.owns("pv-data-x1") && fresh.owns("shop-y2"));
        assert!(!fresh.owns("shop-z3"));
    }

    #[test]
    fn random_ids_are_short_lowercase_labels() {
        let id = Names::random().id;
        assert_eq!(id.len(), ID_LENGTH);
        assert!(is_dns_label(&id), "{id}");
    }
}
