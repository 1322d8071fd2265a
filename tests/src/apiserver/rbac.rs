//! The RBAC authorizer (`plugin/pkg/auth/authorizer/rbac`), over the Roles, ClusterRoles,
//! RoleBindings and ClusterRoleBindings the server stores, read at each request: a user may do
//! what a rule of a role bound to it allows. A ClusterRoleBinding grants its ClusterRole
//! everywhere; a RoleBinding grants its Role, or a ClusterRole, in its own namespace only. Every
//! authenticated user also gets the discovery and health paths that a real cluster's default
//! `system:discovery` and `system:public-info-viewer` bindings give it.

use serde_json::Value;

use super::authn::{AUTHENTICATED, User};
use super::authz::Attributes;
use super::store::{ObjectKey, ResourceKey, State};
use super::validation::strings;

const GROUP: &str = "rbac.authorization.k8s.io";

/// The paths the default discovery and public-info bindings let every authenticated user get.
const DISCOVERY_PATHS: [&str; 11] = [
    "/api",
    "/api/*",
    "/apis",
    "/apis/*",
    "/healthz",
    "/livez",
    "/openapi",
    "/openapi/*",
    "/readyz",
    "/version",
    "/version/",
];

/// What the authorizer says of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// No rule allows it. The reason, when there is one, names the bindings whose role could not
    /// be read (`RBAC: role.rbac.authorization.k8s.io "x" not found`).
    NoOpinion {
        reason: Option<String>,
    },
}

/// A rule of a role (`PolicyRule`); `*` in a list matches anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct PolicyRule {
    verbs: Vec<String>,
    api_groups: Vec<String>,
    /// Plurals, `plural/subresource`, `*/subresource` or `*`.
    resources: Vec<String>,
    /// When set, the only objects the rule is about; a request without a name is not one.
    resource_names: Vec<String>,
    /// Paths, or prefixes ending in `*`, of requests for no resource.
    non_resource_urls: Vec<String>,
}

fn lists(list: &[String], value: &str) -> bool {
    list.iter().any(|item| item == "*" || item == value)
}

impl PolicyRule {
    /// A rule as a stored role holds it.
    fn from_value(rule: &Value) -> Self {
        Self {
            verbs: strings(rule.get("verbs")),
            api_groups: strings(rule.get("apiGroups")),
            resources: strings(rule.get("resources")),
            resource_names: strings(rule.get("resourceNames")),
            non_resource_urls: strings(rule.get("nonResourceURLs")),
        }
    }

    /// `RuleAllows` for a resource request.
    fn allows(&self, attributes: &Attributes) -> bool {
        lists(&self.verbs, attributes.verb)
            && lists(&self.api_groups, &attributes.group)
            && self.names_resource(attributes)
            && (self.resource_names.is_empty()
                || attributes
                    .name
                    .as_ref()
                    .is_some_and(|name| self.resource_names.contains(name)))
    }

    /// `ResourceMatches`: `*`, the resource (with its subresource), or `*/<subresource>`.
    fn names_resource(&self, attributes: &Attributes) -> bool {
        let combined = attributes.resource_path();
        self.resources.iter().any(|resource| {
            resource == "*"
                || *resource == combined
                || attributes
                    .subresource
                    .as_ref()
                    .is_some_and(|sub| resource.strip_prefix("*/") == Some(sub.as_str()))
        })
    }

    /// `RuleAllows` for a request for no resource: the path, or a prefix of it ending in `*`.
    fn allows_path(&self, verb: &str, path: &str) -> bool {
        lists(&self.verbs, verb)
            && self
                .non_resource_urls
                .iter()
                .any(|url| match url.strip_suffix('*') {
                    Some(prefix) => path.starts_with(prefix),
                    None => url == path,
                })
    }
}

/// What a real cluster's default bindings give every authenticated user.
fn default_rule() -> PolicyRule {
    PolicyRule {
        verbs: vec!["get".to_owned()],
        non_resource_urls: DISCOVERY_PATHS.iter().map(|p| (*p).to_owned()).collect(),
        ..PolicyRule::default()
    }
}

fn key(plural: &str) -> ResourceKey {
    (GROUP.to_owned(), plural.to_owned())
}

fn text<'a>(object: &'a Value, field: &str) -> &'a str {
    object.get(field).and_then(Value::as_str).unwrap_or("")
}

/// `appliesTo`: whether a subject of a binding in `namespace` (empty for a ClusterRoleBinding)
/// is `user`. A ServiceAccount subject without a namespace is one of the binding's namespace.
fn names_user(subject: &Value, user: &User, namespace: &str) -> bool {
    let name = text(subject, "name");
    match text(subject, "kind") {
        "ServiceAccount" => {
            let namespace = match text(subject, "namespace") {
                "" => namespace,
                given => given,
            };
            !namespace.is_empty()
                && user.name == format!("system:serviceaccount:{namespace}:{name}")
        }
        "User" => user.name == name,
        "Group" => user.in_group(name),
        _ => false,
    }
}

/// `GetRoleReferenceRules`: the rules of a binding's `roleRef`, a ClusterRole or a Role of the
/// binding's namespace; the error the role's lister gives when there is none.
fn role_rules(state: &State, role_ref: &Value, namespace: &str) -> Result<Vec<PolicyRule>, String> {
    let name = text(role_ref, "name");
    let (plural, singular, namespace) = match text(role_ref, "kind") {
        "ClusterRole" => ("clusterroles", "clusterrole", ""),
        "Role" => ("roles", "role", namespace),
        other => return Err(format!("unsupported role reference kind: {other:?}")),
    };
    let role_key = ObjectKey {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    };
    let role = state
        .get(&key(plural), &role_key)
        .ok_or_else(|| format!("{singular}.{GROUP} {name:?} not found"))?;
    Ok(role
        .get("rules")
        .and_then(Value::as_array)
        .map(|rules| rules.iter().map(PolicyRule::from_value).collect())
        .unwrap_or_default())
}

/// The bindings that can grant a request in `namespace`, each with its own namespace, in the
/// order `VisitRulesFor` walks them: every ClusterRoleBinding, then the namespace's
/// RoleBindings.
fn bindings<'a>(state: &'a State, namespace: Option<&str>) -> Vec<(&'a Value, &'a str)> {
    let mut found: Vec<(&Value, &str)> = state
        .objects(&key("clusterrolebindings"))
        .map(|(_, binding)| (binding, ""))
        .collect();
    if let Some(namespace) = namespace {
        found.extend(
            state
                .objects(&key("rolebindings"))
                .filter(|(at, _)| at.namespace == namespace)
                .map(|(at, binding)| (binding, at.namespace.as_str())),
        );
    }
    found
}

/// Whether a rule granted to `user` in `namespace` (`None`: by ClusterRoleBindings only)
/// satisfies `allows`.
fn decide(
    state: &State,
    user: &User,
    namespace: Option<&str>,
    allows: impl Fn(&PolicyRule) -> bool,
) -> Decision {
    if user.in_group(AUTHENTICATED) && allows(&default_rule()) {
        return Decision::Allow;
    }
    let mut errors: Vec<String> = Vec::new();
    for (binding, at) in bindings(state, namespace) {
        let subjects = binding.get("subjects").and_then(Value::as_array);
        if !subjects.is_some_and(|s| s.iter().any(|subject| names_user(subject, user, at))) {
            continue;
        }
        let role_ref = binding.get("roleRef").unwrap_or(&Value::Null);
        match role_rules(state, role_ref, at) {
            Ok(rules) if rules.iter().any(&allows) => return Decision::Allow,
            Ok(_) => {}
            Err(error) if !errors.contains(&error) => errors.push(error),
            Err(_) => {}
        }
    }
    let reason = match errors.as_slice() {
        [] => None,
        [one] => Some(format!("RBAC: {one}")),
        many => Some(format!("RBAC: [{}]", many.join(", "))),
    };
    Decision::NoOpinion { reason }
}

/// The decision on a resource request.
pub fn decide_resource(state: &State, user: &User, attributes: &Attributes) -> Decision {
    decide(state, user, attributes.namespace.as_deref(), |rule| {
        rule.allows(attributes)
    })
}

/// The decision on a request for no resource, whose verb is its method in lower case.
pub fn decide_path(state: &State, user: &User, verb: &str, path: &str) -> Decision {
    decide(state, user, None, |rule| rule.allows_path(verb, path))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::apiserver::resources::Registry;

    fn request(
        verb: &'static str,
        group: &str,
        resource: &str,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> Attributes {
        let (resource, subresource) = match resource.split_once('/') {
            Some((resource, sub)) => (resource, Some(sub.to_owned())),
            None => (resource, None),
        };
        Attributes {
            verb,
            group: group.to_owned(),
            resource: resource.to_owned(),
            subresource,
            namespace: namespace.map(str::to_owned),
            name: name.map(str::to_owned),
        }
    }

    #[test]
    fn rules_match_verbs_groups_resources_and_names() {
        let pods = json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]});
        let any = json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]});
        let logs = json!({"verbs": ["get"], "apiGroups": [""], "resources": ["*/log"]});
        let named = json!({"verbs": ["get", "list", "update", "create"], "apiGroups": [""],
                           "resources": ["secrets"], "resourceNames": ["token"]});
        let exec = json!({"verbs": ["create"], "apiGroups": [""], "resources": ["pods/exec"]});
        let cases = [
            (
                &pods,
                request("get", "", "pods", Some("a"), Some("p")),
                true,
            ),
            (&pods, request("list", "", "pods", None, None), true),
            (
                &pods,
                request("delete", "", "pods", Some("a"), Some("p")),
                false,
            ),
            (
                &pods,
                request("get", "apps", "pods", Some("a"), Some("p")),
                false,
            ),
            (
                &pods,
                request("get", "", "pods/status", Some("a"), Some("p")),
                false,
            ),
            (
                &pods,
                request("get", "", "services", Some("a"), Some("s")),
                false,
            ),
            (&any, request("watch", "batch", "jobs", None, None), true),
            (
                &any,
                request("update", "", "pods/status", Some("a"), Some("p")),
                true,
            ),
            (
                &logs,
                request("get", "", "pods/log", Some("a"), Some("p")),
                true,
            ),
            (
                &logs,
                request("get", "", "pods", Some("a"), Some("p")),
                false,
            ),
            (
                &logs,
                request("get", "", "pods/exec", Some("a"), Some("p")),
                false,
            ),
            (
                &exec,
                request("create", "", "pods/exec", Some("a"), Some("p")),
                true,
            ),
            (&exec, request("create", "", "pods", Some("a"), None), false),
            (
                &named,
                request("get", "", "secrets", Some("a"), Some("token")),
                true,
            ),
            (
                &named,
                request("update", "", "secrets", Some("a"), Some("token")),
                true,
            ),
            (
                &named,
                request("get", "", "secrets", Some("a"), Some("other")),
                false,
            ),
            (
                &named,
                request("list", "", "secrets", Some("a"), None),
                false,
            ),
            (
                &named,
                request("list", "", "secrets", Some("a"), Some("token")),
                true,
            ),
            (
                &named,
                request("create", "", "secrets", Some("a"), None),
                false,
            ),
        ];
        for (rule, attributes, allowed) in cases {
            assert_eq!(
                PolicyRule::from_value(rule).allows(&attributes),
                allowed,
                "{rule} for {attributes:?}"
            );
        }
    }

    #[test]
    fn path_rules_match_paths_and_prefixes() {
        let rule = PolicyRule::from_value(&json!({"verbs": ["get"],
            "nonResourceURLs": ["/metrics", "/logs/*"]}));
        let cases = [
            ("get", "/metrics", true),
            ("get", "/metrics/x", false),
            ("get", "/logs/", true),
            ("get", "/logs/kubelet.log", true),
            ("get", "/logs", false),
            ("post", "/metrics", false),
        ];
        for (verb, path, allowed) in cases {
            assert_eq!(rule.allows_path(verb, path), allowed, "{verb} {path}");
        }
        let pods = PolicyRule::from_value(&json!({"verbs": ["*"], "resources": ["*"],
            "apiGroups": ["*"]}));
        assert!(!pods.allows_path("get", "/metrics"));
    }

    fn put(state: &mut State, plural: &str, namespace: &str, object: Value) {
        let name = text(&object["metadata"], "name").to_owned();
        let at = ObjectKey {
            namespace: namespace.to_owned(),
            name,
        };
        state.put(&key(plural), at, object);
    }

    fn binding(name: &str, role: (&str, &str), subjects: Value) -> Value {
        json!({"metadata": {"name": name}, "subjects": subjects,
               "roleRef": {"apiGroup": GROUP, "kind": role.0, "name": role.1}})
    }

    /// A reader of pods everywhere for `t1/reader`, of secrets in `a` for the group of `t1`'s
    /// service accounts, of config maps in `a` for `t1/mapper` and the user `alice`, and a
    /// binding in `b` to a Role that does not exist.
    fn cluster() -> State {
        let mut state = State::new(Registry::with_builtins(), 100);
        let rule = |resource: &str| {
            json!([{"verbs": ["get", "list"], "apiGroups": [""],
                                            "resources": [resource]}])
        };
        let pods = json!({"metadata": {"name": "pods"}, "rules": rule("pods")});
        put(&mut state, "clusterroles", "", pods);
        let secrets = json!({"metadata": {"name": "secrets"}, "rules": rule("secrets")});
        put(&mut state, "clusterroles", "", secrets);
        let maps = json!({"metadata": {"name": "maps"}, "rules": rule("configmaps")});
        put(&mut state, "roles", "a", maps);
        let reader = json!([{"kind": "ServiceAccount", "name": "reader", "namespace": "t1"}]);
        let crb = binding("pods", ("ClusterRole", "pods"), reader);
        put(&mut state, "clusterrolebindings", "", crb);
        let group = json!([{"kind": "Group", "name": "system:serviceaccounts:t1"}]);
        let rb = binding("secrets", ("ClusterRole", "secrets"), group);
        put(&mut state, "rolebindings", "a", rb);
        let mappers = json!([{"kind": "ServiceAccount", "name": "mapper", "namespace": "t1"},
                             {"kind": "User", "name": "alice"}]);
        put(
            &mut state,
            "rolebindings",
            "a",
            binding("maps", ("Role", "maps"), mappers),
        );
        let anyone = json!([{"kind": "Group", "name": "system:authenticated"}]);
        put(
            &mut state,
            "rolebindings",
            "b",
            binding("gone", ("Role", "gone"), anyone),
        );
        state
    }

    #[test]
    fn bindings_grant_their_roles_where_they_reach() {
        let state = cluster();
        let reader = User::service_account("t1", "reader");
        let mapper = User::service_account("t1", "mapper");
        let stranger = User::service_account("t2", "reader");
        let alice = User {
            name: "alice".to_owned(),
            groups: vec![AUTHENTICATED.to_owned()],
        };
        let cases = [
            (&reader, request("list", "", "pods", None, None), true),
            (
                &reader,
                request("get", "", "pods", Some("z"), Some("p")),
                true,
            ),
            (
                &reader,
                request("delete", "", "pods", Some("z"), Some("p")),
                false,
            ),
            (&stranger, request("list", "", "pods", None, None), false),
            (
                &reader,
                request("get", "", "secrets", Some("a"), Some("s")),
                true,
            ),
            (
                &mapper,
                request("list", "", "secrets", Some("a"), None),
                true,
            ),
            (
                &stranger,
                request("list", "", "secrets", Some("a"), None),
                false,
            ),
            (
                &reader,
                request("get", "", "secrets", Some("b"), Some("s")),
                false,
            ),
            (&reader, request("list", "", "secrets", None, None), false),
            (
                &mapper,
                request("list", "", "configmaps", Some("a"), None),
                true,
            ),
            (
                &alice,
                request("get", "", "configmaps", Some("a"), Some("c")),
                true,
            ),
            (
                &reader,
                request("list", "", "configmaps", Some("a"), None),
                false,
            ),
            (
                &mapper,
                request("list", "", "configmaps", Some("b"), None),
                false,
            ),
            (
                &mapper,
                request("list", "", "configmaps", None, None),
                false,
            ),
        ];
        for (user, attributes, allowed) in cases {
            let decision = decide_resource(&state, user, &attributes);
            assert_eq!(
                decision == Decision::Allow,
                allowed,
                "{} {attributes:?}: {decision:?}",
                user.name
            );
        }
    }

    #[test]
    fn a_binding_to_a_missing_role_is_the_reason() {
        let state = cluster();
        let reader = User::service_account("t1", "reader");
        let in_b = request("list", "", "configmaps", Some("b"), None);
        assert_eq!(
            decide_resource(&state, &reader, &in_b),
            Decision::NoOpinion {
                reason: Some("RBAC: role.rbac.authorization.k8s.io \"gone\" not found".to_owned())
            }
        );
        let in_a = request("list", "", "configmaps", Some("a"), None);
        assert_eq!(
            decide_resource(&state, &reader, &in_a),
            Decision::NoOpinion { reason: None }
        );
    }

    #[test]
    fn subjects_name_service_accounts_users_and_groups() {
        let agent = User::service_account("t1", "agent");
        let cases = [
            (
                json!({"kind": "ServiceAccount", "name": "agent", "namespace": "t1"}),
                "",
                true,
            ),
            (
                json!({"kind": "ServiceAccount", "name": "agent", "namespace": "t2"}),
                "t1",
                false,
            ),
            (
                json!({"kind": "ServiceAccount", "name": "agent"}),
                "t1",
                true,
            ),
            (
                json!({"kind": "ServiceAccount", "name": "agent"}),
                "",
                false,
            ),
            (
                json!({"kind": "ServiceAccount", "name": "other", "namespace": "t1"}),
                "",
                false,
            ),
            (
                json!({"kind": "User", "name": "system:serviceaccount:t1:agent"}),
                "",
                true,
            ),
            (json!({"kind": "User", "name": "agent"}), "", false),
            (
                json!({"kind": "Group", "name": "system:serviceaccounts"}),
                "",
                true,
            ),
            (
                json!({"kind": "Group", "name": "system:serviceaccounts:t1"}),
                "",
                true,
            ),
            (
                json!({"kind": "Group", "name": "system:serviceaccounts:t2"}),
                "",
                false,
            ),
            (
                json!({"kind": "Group", "name": "system:authenticated"}),
                "",
                true,
            ),
            (
                json!({"kind": "Group", "name": "system:masters"}),
                "",
                false,
            ),
        ];
        for (subject, namespace, named) in cases {
            assert_eq!(
                names_user(&subject, &agent, namespace),
                named,
                "{subject} in {namespace:?}"
            );
        }
    }
}
