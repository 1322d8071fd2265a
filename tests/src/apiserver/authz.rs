//! Authorization as the real server's RBAC authorizer answers a request it denies: the request's
//! attributes read from its path (`RequestInfoFactory`), and a 403 whose message and details are
//! those of `responsewriters.Forbidden`. The server allows everything but what a test forbids.

use super::errors::{ApiError, GroupResource};

/// The user every request is taken to come from: the coordinator's service account.
pub const USER: &str = "system:serviceaccount:ferry:ferry-coordinator";

/// A denied verb on a resource of a group; `*` matches anything, as in an RBAC rule. A resource
/// `plural/subresource` names a subresource.
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
    fn resource_path(&self) -> String {
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
fn forbidden_message(attributes: &Attributes) -> String {
    let action = format!(
        "User {USER:?} cannot {} resource {:?} in API group {:?}",
        attributes.verb,
        attributes.resource_path(),
        attributes.group
    );
    match &attributes.namespace {
        Some(namespace) => format!("{action} in the namespace {namespace:?}"),
        None => format!("{action} at the cluster scope"),
    }
}

/// The 403 of a request one of `rules` denies, or nothing when none does.
pub fn authorize(rules: &[Rule], attributes: &Attributes) -> Result<(), ApiError> {
    if !rules.iter().any(|rule| rule.matches(attributes)) {
        return Ok(());
    }
    let resource = GroupResource {
        group: attributes.group.clone(),
        resource: attributes.resource.clone(),
    };
    Err(ApiError::forbidden_request(
        &resource,
        attributes.name.as_deref(),
        &forbidden_message(attributes),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(verb: &str, group: &str, resource: &str) -> Rule {
        Rule {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
        }
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

    #[test]
    fn a_forbidden_list_at_the_cluster_scope() {
        let rules = [rule("list", "apps", "deployments")];
        let status = authorize(&rules, &attributes("list", "apps", "deployments"))
            .unwrap_err()
            .status();
        assert_eq!(status["code"], 403);
        assert_eq!(status["reason"], "Forbidden");
        assert_eq!(
            status["message"],
            "deployments.apps is forbidden: User \"system:serviceaccount:ferry:ferry-coordinator\" \
             cannot list resource \"deployments\" in API group \"apps\" at the cluster scope"
        );
        assert_eq!(
            status["details"],
            serde_json::json!({"group": "apps", "kind": "deployments"})
        );
        assert!(authorize(&rules, &attributes("get", "apps", "deployments")).is_ok());
        assert!(authorize(&rules, &attributes("list", "", "deployments")).is_ok());
    }

    #[test]
    fn a_forbidden_get_in_a_namespace_names_the_object() {
        let rules = [rule("get", "", "secrets")];
        let mut get = attributes("get", "", "secrets");
        get.namespace = Some("app".into());
        get.name = Some("token".into());
        let status = authorize(&rules, &get).unwrap_err().status();
        assert_eq!(
            status["message"],
            "secrets \"token\" is forbidden: User \"system:serviceaccount:ferry:ferry-coordinator\" \
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
        assert!(authorize(&[rule("update", "", "pods")], &status).is_ok());
        let denied = authorize(&[rule("update", "", "pods/status")], &status).unwrap_err();
        assert!(
            denied.status()["message"]
                .as_str()
                .unwrap()
                .contains("cannot update resource \"pods/status\"")
        );
        assert!(
            authorize(
                &[rule("*", "*", "*")],
                &attributes("watch", "batch", "jobs")
            )
            .is_err()
        );
    }
}
