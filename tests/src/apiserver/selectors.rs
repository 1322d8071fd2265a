//! Label and field selectors, parsed and matched as `apimachinery/pkg/labels` and
//! `apimachinery/pkg/fields` do.

use std::collections::BTreeMap;

use serde_json::Value;

use super::errors::ApiError;
use super::resources::ServedVersion;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Operator {
    Equals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

#[derive(Debug, Clone)]
struct Requirement {
    key: String,
    operator: Operator,
    values: Vec<String>,
}

/// A parsed `labelSelector`: every requirement must hold.
#[derive(Debug, Clone, Default)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        let mut requirements = Vec::new();
        for term in split_top_level(text) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            requirements.push(parse_requirement(term).map_err(|why| {
                ApiError::bad_request(format!("unable to parse requirement: {why}"))
            })?);
        }
        Ok(Self { requirements })
    }

    /// A `metav1.LabelSelector` object (`matchLabels` and `matchExpressions`) as
    /// `LabelSelectorAsSelector` reads it; `None` for one it cannot read.
    pub fn from_object(selector: &Value) -> Option<Self> {
        let mut requirements = Vec::new();
        if let Some(labels) = selector.get("matchLabels").filter(|v| !v.is_null()) {
            for (key, value) in labels.as_object()? {
                requirements.push(Requirement {
                    key: key.clone(),
                    operator: Operator::Equals,
                    values: vec![value.as_str()?.to_owned()],
                });
            }
        }
        if let Some(expressions) = selector.get("matchExpressions").filter(|v| !v.is_null()) {
            for expression in expressions.as_array()? {
                let operator = match expression.get("operator").and_then(Value::as_str)? {
                    "In" => Operator::In,
                    "NotIn" => Operator::NotIn,
                    "Exists" => Operator::Exists,
                    "DoesNotExist" => Operator::DoesNotExist,
                    _ => return None,
                };
                requirements.push(Requirement {
                    key: expression.get("key").and_then(Value::as_str)?.to_owned(),
                    operator,
                    values: super::validation::strings(expression.get("values")),
                });
            }
        }
        Some(Self { requirements })
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| {
            let value = labels.get(&r.key);
            match r.operator {
                Operator::Equals | Operator::In => value.is_some_and(|v| r.values.contains(v)),
                Operator::NotEquals | Operator::NotIn => {
                    value.is_none_or(|v| !r.values.contains(v))
                }
                Operator::Exists => value.is_some(),
                Operator::DoesNotExist => value.is_none(),
                Operator::GreaterThan | Operator::LessThan => {
                    let (Some(have), Some(bound)) = (
                        value.and_then(|v| v.parse::<i64>().ok()),
                        r.values.first().and_then(|v| v.parse::<i64>().ok()),
                    ) else {
                        return false;
                    };
                    if r.operator == Operator::GreaterThan {
                        have > bound
                    } else {
                        have < bound
                    }
                }
            }
        })
    }
}

/// Splits at commas outside parentheses, so `a in (x,y),b` is two terms.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&text[start..]);
    terms
}

fn parse_requirement(term: &str) -> Result<Requirement, String> {
    if let Some(key) = term.strip_prefix('!') {
        let key = key.trim();
        validate_key(key)?;
        return Ok(Requirement {
            key: key.to_owned(),
            operator: Operator::DoesNotExist,
            values: Vec::new(),
        });
    }
    for (word, operator) in [(" notin ", Operator::NotIn), (" in ", Operator::In)] {
        if let Some(at) = term.find(word) {
            let key = term[..at].trim();
            validate_key(key)?;
            let set = term[at + word.len()..].trim();
            let inner = set
                .strip_prefix('(')
                .and_then(|s| s.strip_suffix(')'))
                .ok_or_else(|| format!("found '{set}', expected: '('"))?;
            let values: Vec<String> = inner.split(',').map(|v| v.trim().to_owned()).collect();
            for v in &values {
                validate_value(v)?;
            }
            return Ok(Requirement {
                key: key.to_owned(),
                operator,
                values,
            });
        }
    }
    for (symbol, operator) in [
        ("!=", Operator::NotEquals),
        ("==", Operator::Equals),
        ("=", Operator::Equals),
        (">", Operator::GreaterThan),
        ("<", Operator::LessThan),
    ] {
        if let Some((key, value)) = term.split_once(symbol) {
            let (key, value) = (key.trim(), value.trim());
            validate_key(key)?;
            if matches!(operator, Operator::GreaterThan | Operator::LessThan) {
                value.parse::<i64>().map_err(|_| {
                    format!("for 'Gt', 'Lt' operators, the value must be an integer: {value}")
                })?;
            } else {
                validate_value(value)?;
            }
            return Ok(Requirement {
                key: key.to_owned(),
                operator,
                values: vec![value.to_owned()],
            });
        }
    }
    validate_key(term)?;
    Ok(Requirement {
        key: term.to_owned(),
        operator: Operator::Exists,
        values: Vec::new(),
    })
}

fn is_name_part(s: &str, max: usize) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= max
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A label key is a qualified name: an optional DNS-subdomain prefix and `/`, then a name part.
fn validate_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(super::validation::is_dns_subdomain);
    if prefix_ok && is_name_part(name, 63) {
        Ok(())
    } else {
        Err(format!(
            "key: Invalid value: \"{key}\": name part must consist of alphanumeric characters, '-', '_' \
             or '.', and must start and end with an alphanumeric character"
        ))
    }
}

fn validate_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_name_part(value, 63) {
        Ok(())
    } else {
        Err(format!(
            "values[0][{value}]: Invalid value: \"{value}\": a valid label must be an empty string or consist \
             of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
        ))
    }
}

#[derive(Debug, Clone)]
struct FieldTerm {
    path: Vec<String>,
    absent: &'static str,
    value: String,
    negated: bool,
}

/// A parsed `fieldSelector`, resolved against the labels the resource supports.
#[derive(Debug, Clone, Default)]
pub struct FieldSelector {
    terms: Vec<FieldTerm>,
}

impl FieldSelector {
    /// Parses `text` and checks each label against what the version supports, answering
    /// `field label not supported: <label>` as the conversion functions do.
    pub fn parse(text: &str, version: &ServedVersion) -> Result<Self, ApiError> {
        let mut terms = Vec::new();
        for term in split_unescaped(text, ',') {
            if term.is_empty() {
                continue;
            }
            let (label, value, negated) = if let Some((l, v)) = split_once_unescaped(&term, "!=") {
                (l, v, true)
            } else if let Some((l, v)) = split_once_unescaped(&term, "==") {
                (l, v, false)
            } else if let Some((l, v)) = split_once_unescaped(&term, "=") {
                (l, v, false)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{text}'; can't understand '{term}'"
                )));
            };
            let label = label.trim();
            let (path, absent) = match label {
                "metadata.name" | "metadata.namespace" => {
                    (label.split('.').map(str::to_owned).collect(), "")
                }
                _ => match version.field_labels.iter().find(|f| f.label == label) {
                    Some(f) => (f.path.clone(), f.absent),
                    None => {
                        return Err(ApiError::bad_request(format!(
                            "field label not supported: {label}"
                        )));
                    }
                },
            };
            terms.push(FieldTerm {
                path,
                absent,
                value: unescape(&value),
                negated,
            });
        }
        Ok(Self { terms })
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.terms.iter().all(|t| {
            let mut at = object;
            let mut found = true;
            for step in &t.path {
                match at.get(step) {
                    Some(next) => at = next,
                    None => {
                        found = false;
                        break;
                    }
                }
            }
            let actual = match (found, at) {
                (true, Value::String(s)) => s.clone(),
                (true, Value::Bool(b)) => b.to_string(),
                (true, Value::Number(n)) => n.to_string(),
                _ => t.absent.to_owned(),
            };
            (actual == t.value) != t.negated
        })
    }
}

/// Splits on `sep` where it is not escaped by a backslash, keeping the escapes.
fn split_unescaped(text: &str, sep: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut escaped = false;
    for c in text.chars() {
        if escaped {
            current.push(c);
            escaped = false;
        } else if c == '\\' {
            current.push(c);
            escaped = true;
        } else if c == sep {
            parts.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
    }
    parts.push(current);
    parts
}

fn split_once_unescaped(term: &str, operator: &str) -> Option<(String, String)> {
    let mut escaped = false;
    for (i, c) in term.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        if c == '\\' {
            escaped = true;
            continue;
        }
        if term[i..].starts_with(operator) {
            return Some((term[..i].to_owned(), term[i + operator.len()..].to_owned()));
        }
    }
    None
}

fn unescape(value: &str) -> String {
    let mut out = String::new();
    let mut escaped = false;
    for c in value.chars() {
        if !escaped && c == '\\' {
            escaped = true;
        } else {
            out.push(c);
            escaped = false;
        }
    }
    out
}

/// The labels of an object, for matching.
pub fn labels_of(object: &Value) -> BTreeMap<String, String> {
    object
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// A label and a field selector together, as list and watch apply them.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Selection {
    pub fn matches(&self, object: &Value) -> bool {
        self.labels.matches(&labels_of(object)) && self.fields.matches(object)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn label_selectors_match_as_apimachinery_does() {
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], bool);
        let cases: &[Case] = &[
            ("app=web", &[("app", "web")], true),
            ("app==web", &[("app", "db")], false),
            ("app!=web", &[], true),
            ("app!=web", &[("app", "web")], false),
            ("env in (prod, staging)", &[("env", "staging")], true),
            ("env in (prod,staging),tier", &[("env", "prod")], false),
            ("env notin (prod)", &[], true),
            ("env notin (prod)", &[("env", "prod")], false),
            ("tier", &[("tier", "")], true),
            ("!tier", &[("tier", "x")], false),
            ("!tier,app=web", &[("app", "web")], true),
            ("replicas>2", &[("replicas", "3")], true),
            ("replicas<2", &[("replicas", "3")], false),
            ("", &[], true),
        ];
        for (selector, have, want) in cases {
            let parsed = LabelSelector::parse(selector).unwrap();
            assert_eq!(
                parsed.matches(&labels(have)),
                *want,
                "{selector} on {have:?}"
            );
        }
    }

    #[test]
    fn label_selector_objects_match_as_label_selector_as_selector_reads_them() {
        let selector = json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]},
                                 {"key": "env", "operator": "Exists"}]
        });
        let parsed = LabelSelector::from_object(&selector).unwrap();
        assert!(parsed.matches(&labels(&[("app", "web"), ("env", "")])));
        assert!(!parsed.matches(&labels(&[("app", "web"), ("env", ""), ("tier", "db")])));
        assert!(!parsed.matches(&labels(&[("app", "web")])));
        assert!(
            LabelSelector::from_object(&json!({}))
                .unwrap()
                .matches(&labels(&[]))
        );
        let odd = json!({"matchExpressions": [{"key": "a", "operator": "Gt"}]});
        assert!(LabelSelector::from_object(&odd).is_none());
    }

    #[test]
    fn malformed_label_selectors_are_rejected() {
        for selector in ["app=we b", "env in prod", "-app", "a>b"] {
            assert!(LabelSelector::parse(selector).is_err(), "{selector}");
        }
    }

    #[test]
    fn field_selectors_read_supported_labels_only() {
        let version = ServedVersion {
            name: "v1".into(),
            schema: None,
            status: true,
            field_labels: vec![],
        };
        let pod = json!({"metadata": {"name": "a", "namespace": "ns"}});
        assert!(
            FieldSelector::parse("metadata.name=a,metadata.namespace==ns", &version)
                .unwrap()
                .matches(&pod)
        );
        assert!(
            !FieldSelector::parse("metadata.name!=a", &version)
                .unwrap()
                .matches(&pod)
        );
        let err = FieldSelector::parse("spec.foo=x", &version).unwrap_err();
        assert_eq!(
            err.status()["message"],
            "field label not supported: spec.foo"
        );
    }
}
