//! What the server checks and rewrites before it stores an object: object names, the structural
//! schema of a custom resource (pruning, defaulting, `required`, `enum`, `type`), and the few
//! built-in rules Ferry runs into. Values in messages are rendered as the Go server prints them.

use serde_json::{Map, Value};

use super::errors::{FieldError, FieldProblem};
use super::resources::NameRule;

const DNS_SUBDOMAIN_MESSAGE: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric \
    characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex \
    used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

const DNS_1035_LABEL_MESSAGE: &str = "a DNS-1035 label must consist of lower case alphanumeric \
    characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. \
    'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

const DNS_LABEL_MESSAGE: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters \
    or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used \
    for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase() | b[0].is_ascii_digit()
        && b[b.len() - 1].is_ascii_lowercase() | b[b.len() - 1].is_ascii_digit()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// Renders a value as Go's `%#v` shows it in a `field.Error`.
pub fn render(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        other => other.to_string(),
    }
}

/// A JSON string's text, quoted as Go's `%q` and `%#v` quote it.
fn quote(text: &str) -> String {
    render(&Value::String(text.to_owned()))
}

/// A `map[string]string` (labels) as `%#v` shows it: keys sorted, `(nil)` when unset.
pub fn render_string_map(value: Option<&Value>) -> String {
    let Some(map) = value.and_then(Value::as_object) else {
        return "map[string]string(nil)".to_owned();
    };
    let mut pairs: Vec<(&String, &str)> = map
        .iter()
        .map(|(k, v)| (k, v.as_str().unwrap_or("")))
        .collect();
    pairs.sort_unstable();
    let entries: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}:{}", quote(k), quote(v)))
        .collect();
    format!("map[string]string{{{}}}", entries.join(", "))
}

/// A `[]string` as `%#v` shows it.
pub fn render_strings(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| quote(s)).collect();
    format!("[]string{{{}}}", quoted.join(", "))
}

/// A `*metav1.LabelSelector` as a field error shows it, through the `String()` its generated
/// protobuf code gives it.
pub fn render_label_selector(selector: &Value) -> String {
    let mut labels: Vec<(&String, &str)> = selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k, v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    labels.sort_unstable();
    let labels: String = labels.iter().map(|(k, v)| format!("{k}: {v},")).collect();
    let expressions: String = selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|e| {
            let text = |field: &str| e.get(field).and_then(Value::as_str).unwrap_or("");
            format!(
                "LabelSelectorRequirement{{Key:{},Operator:{},Values:[{}],}},",
                text("key"),
                text("operator"),
                strings(e.get("values")).join(" ")
            )
        })
        .collect();
    format!(
        "&LabelSelector{{MatchLabels:map[string]string{{{labels}}},\
         MatchExpressions:[]LabelSelectorRequirement{{{expressions}}},}}"
    )
}

/// An RBAC `roleRef` as `%#v` shows the internal `rbac.RoleRef`.
pub fn render_role_ref(role_ref: Option<&Value>) -> String {
    let text = |field: &str| {
        quote(
            role_ref
                .and_then(|r| r.get(field))
                .and_then(Value::as_str)
                .unwrap_or(""),
        )
    };
    format!(
        "rbac.RoleRef{{APIGroup:{}, Kind:{}, Name:{}}}",
        text("apiGroup"),
        text("kind"),
        text("name")
    )
}

/// The strings of a JSON array, its other items left out; none for a missing or non-array value.
pub fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// `ValidatePathSegmentName`: anything but `.`, `..`, and names with `/` or `%`.
fn path_segment_errors(name: &str) -> Vec<String> {
    if name == "." || name == ".." {
        return vec![format!("may not be '{name}'")];
    }
    ["/", "%"]
        .iter()
        .filter(|c| name.contains(**c))
        .map(|c| format!("may not contain '{c}'"))
        .collect()
}

fn is_dns_1035_label(s: &str) -> bool {
    is_dns_label(s) && s.as_bytes()[0].is_ascii_lowercase()
}

/// `ValidateObjectMeta`'s name checks: present, and of the form the kind's rule asks for.
pub fn name_errors(name: &str, rule: NameRule) -> Vec<FieldError> {
    if name.is_empty() {
        return vec![FieldError::required(
            "metadata.name",
            "name or generateName is required",
        )];
    }
    let quoted = quote(name);
    let (max_len, valid, message): (usize, fn(&str) -> bool, &str) = match rule {
        NameRule::PathSegment => {
            return path_segment_errors(name)
                .into_iter()
                .map(|why| FieldError::invalid("metadata.name", quoted.clone(), why))
                .collect();
        }
        NameRule::Label => (63, is_dns_label, DNS_LABEL_MESSAGE),
        NameRule::Dns1035Label => (63, is_dns_1035_label, DNS_1035_LABEL_MESSAGE),
        NameRule::Subdomain => (253, is_dns_subdomain, DNS_SUBDOMAIN_MESSAGE),
    };
    if name.len() > max_len {
        return vec![FieldError::invalid(
            "metadata.name",
            quoted,
            format!("must be no more than {max_len} characters"),
        )];
    }
    if !valid(name) {
        return vec![FieldError::invalid("metadata.name", quoted, message)];
    }
    Vec::new()
}

fn type_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn flag(schema: &Value, name: &str) -> bool {
    schema.get(name).and_then(Value::as_bool).unwrap_or(false)
}

/// Drops unknown fields and nulls of non-nullable fields, then applies `default`s, as the
/// structural-schema pipeline of a custom resource does. The root's `apiVersion`, `kind` and
/// `metadata` are left alone. Returns the paths of the fields dropped as unknown.
pub fn prune_and_default(object: &mut Value, schema: &Value) -> Vec<String> {
    let mut unknown = Vec::new();
    if let Value::Object(map) = object {
        let root_props = schema.get("properties").and_then(Value::as_object);
        let mut kept = Map::new();
        for (key, value) in std::mem::take(map) {
            if matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                kept.insert(key, value);
            } else if let Some(prop) = root_props.and_then(|p| p.get(&key)) {
                let mut value = value;
                if value.is_null() && !flag(prop, "nullable") {
                    continue;
                }
                walk(&mut value, prop, &key, &mut unknown);
                kept.insert(key, value);
            } else if flag(schema, "x-kubernetes-preserve-unknown-fields") {
                kept.insert(key, value);
            } else {
                unknown.push(key);
            }
        }
        *map = kept;
        apply_defaults(map, schema, "", &mut unknown);
    }
    unknown
}

fn walk(value: &mut Value, schema: &Value, path: &str, unknown: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            let preserve = flag(schema, "x-kubernetes-preserve-unknown-fields");
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                let sub = props
                    .and_then(|p| p.get(&key))
                    .or(additional.filter(|a| a.is_object()));
                match sub {
                    Some(sub) => {
                        if map.get(&key).is_some_and(Value::is_null) && !flag(sub, "nullable") {
                            map.remove(&key);
                            continue;
                        }
                        if let Some(v) = map.get_mut(&key) {
                            walk(v, sub, &child(path, &key), unknown);
                        }
                    }
                    None if preserve || additional.is_some_and(|a| a.as_bool() == Some(true)) => {}
                    None if props.is_none() && additional.is_none() => {}
                    None => {
                        map.remove(&key);
                        unknown.push(child(path, &key));
                    }
                }
            }
            apply_defaults(map, schema, path, unknown);
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    walk(item, item_schema, &format!("{path}[{i}]"), unknown);
                }
            }
        }
        _ => {}
    }
}

fn apply_defaults(
    map: &mut Map<String, Value>,
    schema: &Value,
    path: &str,
    unknown: &mut Vec<String>,
) {
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    for (key, prop) in props {
        if map.contains_key(key) {
            continue;
        }
        if let Some(default) = prop.get("default") {
            let mut value = default.clone();
            walk(&mut value, prop, &child(path, key), unknown);
            map.insert(key.clone(), value);
        }
    }
}

/// Checks a custom resource against its schema: `type`, `enum` and `required`, through
/// `properties`, `additionalProperties` and `items`. The root's `metadata` is checked elsewhere.
pub fn schema_errors(object: &Value, schema: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if let Some(map) = object.as_object() {
        check_required(map, schema, "", &mut errors);
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (key, value) in map {
                if key == "metadata" {
                    continue;
                }
                if let Some(prop) = props.get(key) {
                    check(value, prop, key, &mut errors);
                }
            }
        }
    }
    errors
}

fn check_required(
    map: &Map<String, Value>,
    schema: &Value,
    path: &str,
    errors: &mut Vec<FieldError>,
) {
    for key in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(key) = key.as_str()
            && !map.contains_key(key)
        {
            errors.push(FieldError::required(child(path, key), ""));
        }
    }
}

fn type_matches(value: &Value, wanted: &str, schema: &Value) -> bool {
    if flag(schema, "x-kubernetes-int-or-string") {
        return matches!(type_of(value), "integer" | "string");
    }
    match (wanted, type_of(value)) {
        (_, "null") => flag(schema, "nullable"),
        ("number", "integer") => true,
        (wanted, actual) => wanted == actual,
    }
}

fn check(value: &Value, schema: &Value, path: &str, errors: &mut Vec<FieldError>) {
    if value.is_null() && flag(schema, "nullable") {
        return;
    }
    let wanted = schema.get("type").and_then(Value::as_str);
    if let Some(wanted) = wanted
        && !type_matches(value, wanted, schema)
    {
        let actual = type_of(value);
        errors.push(FieldError {
            field: path.to_owned(),
            problem: FieldProblem::TypeInvalid {
                value: render(&Value::String(actual.to_owned())),
                detail: format!("{path} in body must be of type {wanted}: \"{actual}\""),
            },
        });
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        errors.push(FieldError {
            field: path.to_owned(),
            problem: FieldProblem::NotSupported {
                value: render(value),
                supported: allowed.iter().map(render).collect(),
            },
        });
    }
    match value {
        Value::Object(map) => {
            check_required(map, schema, path, errors);
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (key, v) in map {
                if let Some(sub) = props.and_then(|p| p.get(key)).or(additional) {
                    check(v, sub, &child(path, key), errors);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check(item, item_schema, &format!("{path}[{i}]"), errors);
                }
            }
        }
        _ => {}
    }
}

/// `ValidatePodSpec`, reduced to what a pod cannot do without: containers with a name and an
/// image. `path` is where the spec is (`spec` for a pod, `spec.template.spec` for a template).
pub fn pod_spec_errors(spec: Option<&Value>, path: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    match spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array)
    {
        None => errors.push(FieldError::required(format!("{path}.containers"), "")),
        Some(list) if list.is_empty() => {
            errors.push(FieldError::required(format!("{path}.containers"), ""));
        }
        Some(list) => {
            for (i, c) in list.iter().enumerate() {
                for field in ["name", "image"] {
                    if c.get(field)
                        .and_then(Value::as_str)
                        .is_none_or(str::is_empty)
                    {
                        errors.push(FieldError::required(
                            format!("{path}.containers[{i}].{field}"),
                            "",
                        ));
                    }
                }
            }
        }
    }
    errors
}

/// `ValidateRoleBindingUpdate` and `ValidateClusterRoleBindingUpdate`: the role a binding grants
/// cannot change.
pub fn role_ref_update_errors(old: &Value, new: &Value) -> Vec<FieldError> {
    if old.get("roleRef") == new.get("roleRef") {
        return Vec::new();
    }
    vec![FieldError::invalid(
        "roleRef",
        render_role_ref(new.get("roleRef")),
        "cannot change roleRef",
    )]
}

/// `ValidatePodUpdate`: a pod's spec is immutable except for container images,
/// `activeDeadlineSeconds` and `tolerations`.
pub fn pod_update_errors(old: &Value, new: &Value) -> Vec<FieldError> {
    fn mutable_cleared(spec: Option<&Value>) -> Value {
        let mut spec = spec.cloned().unwrap_or(Value::Null);
        if let Value::Object(map) = &mut spec {
            map.remove("activeDeadlineSeconds");
            map.remove("tolerations");
            for list in ["containers", "initContainers"] {
                if let Some(Value::Array(items)) = map.get_mut(list) {
                    for item in items.iter_mut().filter_map(Value::as_object_mut) {
                        item.remove("image");
                    }
                }
            }
        }
        spec
    }
    if mutable_cleared(old.get("spec")) == mutable_cleared(new.get("spec")) {
        Vec::new()
    } else {
        vec![FieldError::forbidden(
            "spec",
            "pod updates may not change fields other than `spec.containers[*].image`,\
             `spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` \
             (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` \
             (allow it to be set to 1 if it was previously negative)",
        )]
    }
}

/// `ValidateObjectMetaUpdate`: identity fields cannot change, and a deleting object takes no new
/// finalizers.
pub fn metadata_update_errors(old: &Value, new: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    for field in ["name", "namespace", "uid"] {
        let before = old
            .pointer(&format!("/metadata/{field}"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let after = new
            .pointer(&format!("/metadata/{field}"))
            .and_then(Value::as_str)
            .unwrap_or("");
        if before != after {
            errors.push(FieldError::invalid(
                format!("metadata.{field}"),
                render(&Value::String(after.to_owned())),
                "field is immutable",
            ));
        }
    }
    if old.pointer("/metadata/deletionTimestamp").is_some() {
        let finalizers = |v: &Value| strings(v.pointer("/metadata/finalizers"));
        let before = finalizers(old);
        let added: Vec<String> = finalizers(new)
            .into_iter()
            .filter(|f| !before.contains(f))
            .collect();
        if !added.is_empty() {
            let quoted: Vec<String> = added.iter().map(|f| format!("\"{f}\"")).collect();
            errors.push(FieldError::forbidden(
                "metadata.finalizers",
                format!(
                    "no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                    quoted.join(", ")
                ),
            ));
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["node"],
                    "properties": {
                        "node": {"type": "string"},
                        "count": {"type": "integer"},
                        "mode": {"type": "string", "enum": ["Fast", "Slow"], "default": "Fast"},
                        "items": {"type": "array", "items": {
                            "type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}
                        }},
                        "tags": {"type": "object", "additionalProperties": {"type": "string"}},
                        "note": {"type": "string", "nullable": true},
                        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
                    }
                }
            }
        })
    }

    #[test]
    fn names_follow_their_kind_rule() {
        assert!(name_errors("a.b-c", NameRule::Subdomain).is_empty());
        assert!(!name_errors("a.b-c", NameRule::Label).is_empty());
        assert!(!name_errors("Upper", NameRule::Subdomain).is_empty());
        assert!(name_errors("system:controller:x", NameRule::PathSegment).is_empty());
        assert_eq!(
            name_errors("", NameRule::Subdomain)[0].to_string(),
            "metadata.name: Required value: name or generateName is required"
        );
        assert_eq!(
            name_errors("1web", NameRule::Dns1035Label)[0].to_string(),
            format!("metadata.name: Invalid value: \"1web\": {DNS_1035_LABEL_MESSAGE}")
        );
        let odd: Vec<String> = name_errors("a/b%c", NameRule::PathSegment)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            odd,
            [
                "metadata.name: Invalid value: \"a/b%c\": may not contain '/'",
                "metadata.name: Invalid value: \"a/b%c\": may not contain '%'",
            ]
        );
    }

    #[test]
    fn values_render_as_the_go_server_prints_them() {
        let labels = json!({"tier": "web", "app": "shop"});
        assert_eq!(
            render_string_map(Some(&labels)),
            "map[string]string{\"app\":\"shop\", \"tier\":\"web\"}"
        );
        assert_eq!(render_string_map(None), "map[string]string(nil)");
        assert_eq!(
            render_strings(&["10.96.0.10".to_owned()]),
            "[]string{\"10.96.0.10\"}"
        );
        let selector = json!({"matchLabels": {"b": "2", "a": "1"},
                              "matchExpressions": [{"key": "k", "operator": "In", "values": ["x", "y"]}]});
        assert_eq!(
            render_label_selector(&selector),
            "&LabelSelector{MatchLabels:map[string]string{a: 1,b: 2,},MatchExpressions:\
             []LabelSelectorRequirement{LabelSelectorRequirement{Key:k,Operator:In,Values:[x y],},},}"
        );
        let role_ref =
            json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"});
        assert_eq!(
            render_role_ref(Some(&role_ref)),
            "rbac.RoleRef{APIGroup:\"rbac.authorization.k8s.io\", Kind:\"Role\", Name:\"r\"}"
        );
    }

    #[test]
    fn a_binding_keeps_its_role_ref() {
        let old = json!({"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "a"}});
        let new = json!({"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "b"}});
        assert!(role_ref_update_errors(&old, &old).is_empty());
        assert_eq!(
            role_ref_update_errors(&old, &new)[0].to_string(),
            "roleRef: Invalid value: rbac.RoleRef{APIGroup:\"rbac.authorization.k8s.io\", Kind:\"Role\", \
             Name:\"b\"}: cannot change roleRef"
        );
    }

    #[test]
    fn pruning_drops_unknown_fields_and_defaulting_fills_absent_ones() {
        let mut object = json!({
            "apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a", "extra": 1},
            "spec": {"node": "n", "bogus": 1, "tags": {"a": "b"}, "note": null, "count": null,
                     "free": {"anything": {"goes": true}}},
            "top": 1
        });
        let unknown = prune_and_default(&mut object, &schema());
        assert_eq!(unknown, ["spec.bogus", "top"]);
        assert_eq!(
            object["spec"],
            json!({"node": "n", "tags": {"a": "b"}, "note": null, "mode": "Fast", "free": {"anything": {"goes": true}}})
        );
        assert_eq!(object["metadata"]["extra"], 1);
    }

    #[test]
    fn schema_errors_report_required_enum_and_type() {
        let object = json!({"spec": {"mode": "Medium", "count": "three", "items": [{}]}});
        let errors: Vec<String> = schema_errors(&object, &schema())
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            errors,
            [
                "spec.node: Required value",
                "spec.count: Invalid value: \"string\": spec.count in body must be of type integer: \"string\"",
                "spec.items[0].name: Required value",
                "spec.mode: Unsupported value: \"Medium\": supported values: \"Fast\", \"Slow\"",
            ]
        );
    }

    #[test]
    fn pods_may_change_only_images() {
        let old = json!({"spec": {"nodeName": "a", "containers": [{"name": "c", "image": "x"}]}});
        let image = json!({"spec": {"nodeName": "a", "containers": [{"name": "c", "image": "y"}]}});
        let node = json!({"spec": {"nodeName": "b", "containers": [{"name": "c", "image": "x"}]}});
        assert!(pod_update_errors(&old, &image).is_empty());
        assert_eq!(pod_update_errors(&old, &node).len(), 1);
    }
}
