//! Authorization as the real server's authorizers answer a request: the request's attributes
//! read from its path (`RequestInfoFactory`), a user in `system:masters` allowed everything, any
//! other what the stored RBAC objects grant it ([`super::rbac`]), and a denial a 403 whose
//! message and details are those of `responsewriters.Forbidden`. A test can deny a verb on a
//! resource to every user, the administrator included ([`Rule`]).

use super::authn::User;
use super::errors::{ApiError, GroupResource};
use super::rbac::{self, Decision};
use super::store::State;

/// A verb on a resource of a group that a test denies to everyone; `*` matches anything, as in
/// an RBAC rule. A resource `plural/subresource` names a subresource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub verb: String,
    pub group: String,
    pub resource: String,
}

/// What the authorizer is asked about a resource request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    pub verb: &'static str,
    pub group: String,
    pub resource: String,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    /// The object's name: from the path, or from a `metadata.name=` field selector of a list or
    /// watch.
    pub name: Option<String>,
}

impl Attributes {
    /// `resource` or `resource/subresource`, as RBAC rules and messages name it.
    pub fn resource_path(&self) -> String {
        match &self.subresource {
            Some(sub) => format!("{}/{sub}", self.resource),
            None => self.resource.clone(),
        }
    }
}

impl Rule {
    fn matches(&self, attributes: &Attributes) -> bool {
        let fits = |rule: &str, value: &str| rule == "*" || rule == value;
        fits(&self.verb, attributes.verb)
            && fits(&self.group, &attributes.group)
            && fits(&self.resource, &attributes.resource_path())
    }
}

/// `forbiddenMessage`: who cannot do what, where.
fn forbidden_message(user: &User, attributes: &Attributes) -> String {
    let action = format!(
        "User {:?} cannot {} resource {:?} in API group {:?}",
        user.name,
        attributes.verb,
        attributes.resource_path(),
        attributes.group
    );
    match &attributes.namespace {
        Some(namespace) => format!("{action} in the namespace {namespace:?}"),
        None => format!("{action} at the cluster scope"),
    }
}

/// `responsewriters.Forbidden`'s message: the authorizer's reason, when it gives one, follows.
fn with_reason(message: String, reason: Option<String>) -> String {
    match reason {
        Some(reason) => format!("{message}: {reason}"),
        None => message,
    }
}

/// What the authorizers say of a resource request: a test's denial first, then the privileged
/// group, then RBAC.
fn decide(state: &State, user: &User, attributes: &Attributes) -> Decision {
    if state.forbidden.iter().any(|rule| rule.matches(attributes)) {
        Decision::NoOpinion { reason: None }
    } else if user.is_privileged() {
        Decision::Allow
    } else {
        rbac::decide_resource(state, user, attributes)
    }
}

/// Nothing when `user` may make a resource request, its 403 otherwise.
pub fn authorize(state: &State, user: &User, attributes: &Attributes) -> Result<(), ApiError> {
    let Decision::NoOpinion { reason } = decide(state, user, attributes) else {
        return Ok(());
    };
    let resource = GroupResource {
        group: attributes.group.clone(),
        resource: attributes.resource.clone(),
    };
    Err(ApiError::forbidden_request(
        &resource,
        attributes.name.as_deref(),
        &with_reason(forbidden_message(user, attributes), reason),
    ))
}

/// Nothing when `user` may make a request for no resource (discovery, health, or a path the
/// server does not serve), with `verb` its method in lower case; its 403 otherwise.
pub fn authorize_path(state: &State, user: &User, verb: &str, path: &str) -> Result<(), ApiError> {
    if user.is_privileged() {
        return Ok(());
    }
    let Decision::NoOpinion { reason } = rbac::decide_path(state, user, verb, path) else {
        return Ok(());
    };
    let message = format!("User {:?} cannot {verb} path {path:?}", user.name);
    Err(ApiError::forbidden_path(&with_reason(message, reason)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resources::Registry;

    fn rule(verb: &str, group: &str, resource: &str) -> Rule {
        Rule {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
        }
    }

    /// A server with nothing stored but the rules a test forbids.
    fn forbidding(rules: &[Rule]) -> State {
        let mut state = State::new(Registry::with_builtins(), 10);
        state.forbidden = rules.to_vec();
        state
    }

    fn attributes(verb: &'static str, group: &str, resource: &str) -> Attributes {
        Attributes {
            verb,
            group: group.into(),
            resource: resource.into(),
            subresource: None,
            namespace: None,
            name: None,
        }
    }

    fn admin_may(rules: &[Rule], attributes: &Attributes) -> Result<(), ApiError> {
        authorize(&forbidding(rules), &User::admin(), attributes)
    }

    #[test]
    fn a_forbidden_list_at_the_cluster_scope() {
        let rules = [rule("list", "apps", "deployments")];
        let status = admin_may(&rules, &attributes("list", "apps", "deployments"))
            .unwrap_err()
            .status();
        assert_eq!(status["code"], 403);
        assert_eq!(status["reason"], "Forbidden");
        assert_eq!(
            status["message"],
            "deployments.apps is forbidden: User \"system:admin\" \
             cannot list resource \"deployments\" in API group \"apps\" at the cluster scope"
        );
        assert_eq!(
            status["details"],
            serde_json::json!({"group": "apps", "kind": "deployments"})
        );
        assert!(admin_may(&rules, &attributes("get", "apps", "deployments")).is_ok());
        assert!(admin_may(&rules, &attributes("list", "", "deployments")).is_ok());
    }

    #[test]
    fn a_forbidden_get_in_a_namespace_names_the_object() {
        let rules = [rule("get", "", "secrets")];
        let mut get = attributes("get", "", "secrets");
        get.namespace = Some("app".into());
        get.name = Some("token".into());
        let status = admin_may(&rules, &get).unwrap_err().status();
        assert_eq!(
            status["message"],
            "secrets \"token\" is forbidden: User \"system:admin\" \
             cannot get resource \"secrets\" in API group \"\" in the namespace \"app\""
        );
        assert_eq!(
            status["details"],
            serde_json::json!({"name": "token", "group": "", "kind": "secrets"})
        );
    }

    #[test]
    fn subresources_and_wildcards_match_as_rbac_rules_do() {
        let mut status = attributes("update", "", "pods");
        status.subresource = Some("status".into());
        assert!(admin_may(&[rule("update", "", "pods")], &status).is_ok());
        let denied = admin_may(&[rule("update", "", "pods/status")], &status).unwrap_err();
        assert!(
            denied.status()["message"]
                .as_str()
                .unwrap()
                .contains("cannot update resource \"pods/status\"")
        );
        assert!(
            admin_may(
                &[rule("*", "*", "*")],
                &attributes("watch", "batch", "jobs")
            )
            .is_err()
        );
    }

    #[test]
    fn a_service_account_without_bindings_may_discover_and_nothing_else() {
        let state = forbidding(&[]);
        let agent = User::service_account("t1", "ferry-node-agent");
        let status = authorize(&state, &agent, &attributes("list", "", "pods"))
            .unwrap_err()
            .status();
        assert_eq!(
            status["message"],
            "pods is forbidden: User \"system:serviceaccount:t1:ferry-node-agent\" \
             cannot list resource \"pods\" in API group \"\" at the cluster scope"
        );
        for path in [
            "/api",
            "/api/v1",
            "/apis/apps/v1",
            "/version",
            "/openapi/v2",
        ] {
            assert!(
                authorize_path(&state, &agent, "get", path).is_ok(),
                "{path}"
            );
        }
        let metrics = authorize_path(&state, &agent, "get", "/metrics").unwrap_err();
        assert_eq!(
            metrics.status()["message"],
            "forbidden: User \"system:serviceaccount:t1:ferry-node-agent\" cannot get path \"/metrics\""
        );
        assert_eq!(metrics.status()["details"], serde_json::json!({}));
        assert!(authorize_path(&state, &agent, "post", "/api").is_err());
        assert!(authorize_path(&state, &User::admin(), "get", "/metrics").is_ok());
    }
}
