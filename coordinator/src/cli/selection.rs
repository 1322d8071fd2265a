//! The flags that say what a backup or restore takes, turned into the specs' fields:
//! namespaces, resource types, cluster-scoped objects and a label selector in kubectl's syntax.

use std::collections::BTreeMap;

use clap::Args;
use ferry_shared::crd::{BackupSpec, ResourceSelection};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use super::error::CliError;

/// Which namespaces, types and objects to take.
#[derive(Debug, Clone, Default, Args)]
pub struct Selection {
    /// Namespaces to take, comma-separated; every namespace when absent.
    #[arg(long, value_delimiter = ',', value_name = "NAMESPACES")]
    pub include_namespaces: Vec<String>,
    /// Namespaces to leave out, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "NAMESPACES")]
    pub exclude_namespaces: Vec<String>,
    /// Resource types to take, comma-separated, as kubectl names them (`deployments`,
    /// `cm`, `certificates.cert-manager.io`); every type when absent.
    #[arg(long, value_delimiter = ',', value_name = "TYPES")]
    pub include_resources: Vec<String>,
    /// Resource types to leave out, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "TYPES")]
    pub exclude_resources: Vec<String>,
    /// Take every cluster-scoped object (true) or none (false). Unset: all of them when every
    /// namespace is taken, else only those the namespaced objects need.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub include_cluster_resources: Option<bool>,
    /// Only objects whose labels match, in kubectl's syntax: `app=web,tier!=cache`,
    /// `env in (prod,staging)`, `!legacy`.
    #[arg(short = 'l', long, value_name = "SELECTOR", value_parser = parse_selector)]
    pub selector: Option<LabelSelector>,
}

impl Selection {
    pub fn resources(&self) -> ResourceSelection {
        ResourceSelection {
            included_resources: self.include_resources.clone(),
            excluded_resources: self.exclude_resources.clone(),
            include_cluster_resources: self.include_cluster_resources,
        }
    }
}

/// What `backup create` and `schedule create` put into a BackupSpec.
#[derive(Debug, Clone, Default, Args)]
pub struct BackupFlags {
    #[command(flatten)]
    pub selection: Selection,
    /// How long the backup is kept, such as `72h`; the coordinator's default (720h) when
    /// absent.
    #[arg(long, value_parser = valid_duration)]
    pub ttl: Option<String>,
    /// Back up every eligible volume of the selected pods (opt-out), instead of only the
    /// volumes named in their `backup.ferry.dev/backup-volumes` annotation (opt-in).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub default_volumes_to_fs_backup: Option<bool>,
    /// The storage location to write to; the default location when absent.
    #[arg(long, value_name = "NAME")]
    pub storage_location: Option<String>,
    /// How long one volume's transfer may run, such as `2h`.
    #[arg(long, value_parser = valid_duration)]
    pub volume_timeout: Option<String>,
}

impl BackupFlags {
    pub fn spec(&self) -> BackupSpec {
        let selection = &self.selection;
        BackupSpec {
            included_namespaces: selection.include_namespaces.clone(),
            excluded_namespaces: selection.exclude_namespaces.clone(),
            resources: selection.resources(),
            label_selector: selection.selector.clone(),
            default_volumes_to_fs_backup: self.default_volumes_to_fs_backup,
            storage_location: self.storage_location.clone(),
            ttl: self.ttl.clone(),
            volume_timeout: self.volume_timeout.clone(),
            hooks: None,
        }
    }
}

/// A duration such as `90m` or `1h30m`, kept as written.
pub fn valid_duration(text: &str) -> Result<String, String> {
    crate::context::spec_duration(Some(text), "the value", std::time::Duration::ZERO)
        .map(|_| text.to_owned())
}

/// `old:new,…` namespace pairs.
pub fn namespace_mappings(pairs: &[String]) -> Result<BTreeMap<String, String>, CliError> {
    pairs
        .iter()
        .map(|pair| match pair.split_once(':') {
            Some((from, to)) if !from.is_empty() && !to.is_empty() => {
                Ok((from.to_owned(), to.to_owned()))
            }
            _ => Err(CliError::InvalidFlag(format!(
                "--namespace-mappings: {pair:?} is not old:new"
            ))),
        })
        .collect()
}

/// A label selector in kubectl's syntax: comma-separated requirements, each `k=v`, `k==v`,
/// `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k` or `!k`.
pub fn parse_selector(text: &str) -> Result<LabelSelector, String> {
    let mut labels = BTreeMap::new();
    let mut expressions = Vec::new();
    for requirement in split_requirements(text)? {
        match requirement_of(requirement)? {
            Requirement::Equals(key, value) => {
                labels.insert(key, value);
            }
            Requirement::Expression(expression) => expressions.push(expression),
        }
    }
    if labels.is_empty() && expressions.is_empty() {
        return Err("the selector is empty".to_owned());
    }
    Ok(LabelSelector {
        match_labels: (!labels.is_empty()).then_some(labels),
        match_expressions: (!expressions.is_empty()).then_some(expressions),
    })
}

/// The requirements of a selector: split at the commas outside parentheses.
fn split_requirements(text: &str) -> Result<Vec<&str>, String> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0usize, 0);
    for (at, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.checked_sub(1).ok_or("unbalanced ')'")?,
            ',' if depth == 0 => {
                parts.push(text[start..at].trim());
                start = at + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unbalanced '('".to_owned());
    }
    parts.push(text[start..].trim());
    Ok(parts.into_iter().filter(|part| !part.is_empty()).collect())
}

enum Requirement {
    Equals(String, String),
    Expression(LabelSelectorRequirement),
}

fn requirement_of(text: &str) -> Result<Requirement, String> {
    let expression = |key: &str, operator: &str, values: Option<Vec<String>>| {
        Requirement::Expression(LabelSelectorRequirement {
            key: key.trim().to_owned(),
            operator: operator.to_owned(),
            values,
        })
    };
    if let Some((key, value)) = text.split_once("!=") {
        return Ok(expression(
            key,
            "NotIn",
            Some(vec![value.trim().to_owned()]),
        ));
    }
    if let Some((key, value)) = text.split_once("==").or_else(|| text.split_once('=')) {
        return Ok(Requirement::Equals(
            key.trim().to_owned(),
            value.trim().to_owned(),
        ));
    }
    for (word, operator) in [(" notin ", "NotIn"), (" in ", "In")] {
        if let Some((key, values)) = text.split_once(word) {
            let values = values
                .trim()
                .strip_prefix('(')
                .and_then(|v| v.strip_suffix(')'))
                .ok_or_else(|| format!("{text:?}: the values must be in parentheses"))?;
            let values = values.split(',').map(|v| v.trim().to_owned()).collect();
            return Ok(expression(key, operator, Some(values)));
        }
    }
    match text.strip_prefix('!') {
        Some(key) => Ok(expression(key, "DoesNotExist", None)),
        None if !text.contains(char::is_whitespace) => Ok(expression(text, "Exists", None)),
        None => Err(format!("{text:?} is not a label requirement")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requirement(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.to_owned(),
            operator: operator.to_owned(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| (*v).to_owned()).collect()),
        }
    }

    #[test]
    fn selectors_parse_as_kubectl_reads_them() {
        let selector = parse_selector("app=web, tier==front,env in (prod, staging),track!=canary,!legacy,owned,zone notin (a)").expect("valid");
        assert_eq!(
            selector.match_labels,
            Some(BTreeMap::from([
                ("app".to_owned(), "web".to_owned()),
                ("tier".to_owned(), "front".to_owned())
            ]))
        );
        assert_eq!(
            selector.match_expressions,
            Some(vec![
                requirement("env", "In", &["prod", "staging"]),
                requirement("track", "NotIn", &["canary"]),
                requirement("legacy", "DoesNotExist", &[]),
                requirement("owned", "Exists", &[]),
                requirement("zone", "NotIn", &["a"]),
            ])
        );
    }

    #[test]
    fn malformed_selectors_are_refused() {
        for text in ["", " , ", "env in prod", "env in (a", "a b"] {
            assert!(parse_selector(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn namespace_mappings_are_old_new_pairs() {
        let pairs = ["a:b".to_owned(), "c:d".to_owned()];
        assert_eq!(
            namespace_mappings(&pairs).expect("valid"),
            BTreeMap::from([("a".into(), "b".into()), ("c".into(), "d".into())])
        );
        for bad in ["a", "a:", ":b"] {
            assert!(namespace_mappings(&[bad.to_owned()]).is_err(), "{bad}");
        }
    }
}
