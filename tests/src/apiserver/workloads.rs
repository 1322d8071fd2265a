//! The rules of the pod controllers' registries: the selector an apps workload must have
//! (`apps/validation`), the selector a Job generates from its uid (`registry/batch/job`), and the
//! pod template checks every controller shares.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::errors::{FieldError, FieldProblem};
use super::resources::Strategy;
use super::selectors::{LabelSelector, labels_of};
use super::strategy::{child_map, object_at};
use super::validation::{self, render, render_label_selector, render_string_map};

/// The labels a generated Job selector and its pod template carry.
const CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
const LEGACY_CONTROLLER_UID: &str = "controller-uid";
const JOB_NAME: &str = "batch.kubernetes.io/job-name";
const LEGACY_JOB_NAME: &str = "job-name";

fn manual_selector(job: &Value) -> bool {
    job.pointer("/spec/manualSelector").and_then(Value::as_bool) == Some(true)
}

fn selector(object: &Value) -> Option<&Value> {
    object.pointer("/spec/selector").filter(|s| !s.is_null())
}

/// `generateSelector`, which the Job strategy runs before it validates a new Job without
/// `spec.manualSelector`: the template gets the Job's name and uid labels (where it has none of
/// its own), and the selector the uid label.
pub fn generate_job_selector(job: &mut Value) {
    if manual_selector(job) {
        return;
    }
    let name = job.pointer("/metadata/name").cloned().unwrap_or(json!(""));
    let uid = job.pointer("/metadata/uid").cloned().unwrap_or(json!(""));
    let Some(spec) = object_at(job, "spec") else {
        return;
    };
    if let Some(labels) = child_map(spec, "template")
        .and_then(|t| child_map(t, "metadata"))
        .and_then(|m| child_map(m, "labels"))
    {
        for (key, value) in [
            (LEGACY_JOB_NAME, &name),
            (JOB_NAME, &name),
            (LEGACY_CONTROLLER_UID, &uid),
            (CONTROLLER_UID, &uid),
        ] {
            labels.entry(key).or_insert_with(|| value.clone());
        }
    }
    if let Some(match_labels) =
        child_map(spec, "selector").and_then(|s| child_map(s, "matchLabels"))
    {
        match_labels.entry(CONTROLLER_UID).or_insert(uid);
    }
}

/// `ValidateHasLabel`: the template must carry `key` with the value the Job's own name or uid
/// gives it.
fn has_label(job: &Value, key: &str, want: &str) -> Option<FieldError> {
    let labels = job.pointer("/spec/template/metadata/labels");
    let field = format!("spec.template.metadata.labels[{key}]");
    match labels.and_then(|l| l.get(key)).and_then(Value::as_str) {
        None => Some(FieldError::required(field, want)),
        Some(have) if have != want => Some(FieldError::invalid(
            field,
            render_string_map(labels),
            format!("must be '{want}'"),
        )),
        Some(_) => None,
    }
}

/// `ValidateGeneratedSelector`: a Job without `manualSelector` must carry the labels its
/// selector was generated from, and a selector of its own is refused.
pub fn generated_selector_errors(job: &Value) -> Vec<FieldError> {
    if manual_selector(job) || job.pointer("/spec/template/metadata/labels").is_none() {
        return Vec::new();
    }
    let Some(selector) = selector(job) else {
        return Vec::new();
    };
    let text = |field: &str| {
        job.pointer(&format!("/metadata/{field}"))
            .and_then(Value::as_str)
            .unwrap_or("")
    };
    let (name, uid) = (text("name"), text("uid"));
    let mut errors: Vec<FieldError> = [
        (LEGACY_CONTROLLER_UID, uid),
        (LEGACY_JOB_NAME, name),
        (CONTROLLER_UID, uid),
        (JOB_NAME, name),
    ]
    .iter()
    .filter_map(|(key, want)| has_label(job, key, want))
    .collect();
    let expected = BTreeMap::from([(CONTROLLER_UID.to_owned(), uid.to_owned())]);
    if LabelSelector::from_object(selector).is_some_and(|s| !s.matches(&expected)) {
        errors.push(FieldError::invalid(
            "spec.selector",
            render_label_selector(selector),
            "`selector` not auto-generated",
        ));
    }
    errors
}

/// The word `empty selector is invalid for ...` names a kind with (ReplicaSets reuse the
/// Deployments' message); `None` for Jobs, which accept an empty selector.
pub fn empty_selector_word(kind: &str) -> Option<&'static str> {
    match kind {
        "Deployment" | "ReplicaSet" => Some("deployment"),
        "StatefulSet" => Some("statefulset"),
        "DaemonSet" => Some("daemonset"),
        _ => None,
    }
}

/// A selector with neither labels nor expressions, which selects everything.
fn is_empty_selector(selector: &Value) -> bool {
    ["matchLabels", "matchExpressions"]
        .iter()
        .all(|key| match selector.get(*key) {
            None | Some(Value::Null) => true,
            Some(Value::Object(map)) => map.is_empty(),
            Some(Value::Array(items)) => items.is_empty(),
            Some(_) => false,
        })
}

/// The selector checks of a controller's spec: a selector is required, is not empty (for the
/// apps workloads), and selects the pod template's labels.
pub fn selector_errors(object: &Value, empty_word: Option<&str>) -> Vec<FieldError> {
    let selector = selector(object);
    let mut errors = Vec::new();
    match selector {
        None => errors.push(FieldError::required("spec.selector", "")),
        Some(s) => {
            if let (true, Some(word)) = (is_empty_selector(s), empty_word) {
                errors.push(FieldError::invalid(
                    "spec.selector",
                    render_label_selector(s),
                    format!("empty selector is invalid for {word}"),
                ));
            }
        }
    }
    let parsed = selector.map(LabelSelector::from_object);
    if let (Some(s), Some(None)) = (selector, &parsed) {
        errors.push(FieldError::invalid(
            "spec.selector",
            render_label_selector(s),
            "invalid label selector",
        ));
        return errors;
    }
    let template = object
        .pointer("/spec/template")
        .cloned()
        .unwrap_or(Value::Null);
    let selects = parsed
        .flatten()
        .is_some_and(|s| s.matches(&labels_of(&template)));
    if !selects {
        errors.push(FieldError::invalid(
            "spec.template.metadata.labels",
            render_string_map(object.pointer("/spec/template/metadata/labels")),
            "`selector` does not match template `labels`",
        ));
    }
    errors
}

/// `ValidateImmutableField` of `spec.selector`, which no controller may change.
pub fn selector_update_errors(old: &Value, new: &Value) -> Vec<FieldError> {
    if selector(old) == selector(new) {
        return Vec::new();
    }
    let value = selector(new).map_or_else(|| "null".to_owned(), render_label_selector);
    vec![FieldError::invalid(
        "spec.selector",
        value,
        "field is immutable",
    )]
}

/// The checks of a controller's pod template: those of a pod's spec, and a restart policy the
/// controller supports.
pub fn template_errors(strategy: &Strategy, object: &Value) -> Vec<FieldError> {
    let Some(pointer) = strategy.pod_template else {
        return Vec::new();
    };
    let path = pointer.trim_start_matches('/').replace('/', ".");
    let spec = object.pointer(&format!("{pointer}/spec"));
    let mut errors = validation::pod_spec_errors(spec, &format!("{path}.spec"));
    let policy = spec
        .and_then(|s| s.get("restartPolicy"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if !strategy.restart_policies.contains(&policy) {
        errors.push(FieldError {
            field: format!("{path}.spec.restartPolicy"),
            problem: FieldProblem::NotSupported {
                value: render(&json!(policy)),
                supported: strategy
                    .restart_policies
                    .iter()
                    .map(|p| render(&json!(p)))
                    .collect(),
            },
        });
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resources::Registry;

    fn job(selector: Option<Value>, manual: bool) -> Value {
        let mut job = json!({
            "metadata": {"name": "backup", "uid": "u-1"},
            "spec": {"template": {"metadata": {"labels": {"app": "x"}},
                     "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}}
        });
        if let Some(selector) = selector {
            job["spec"]["selector"] = selector;
        }
        if manual {
            job["spec"]["manualSelector"] = json!(true);
        }
        job
    }

    #[test]
    fn a_job_selector_is_generated_from_its_uid() {
        let mut generated = job(None, false);
        generate_job_selector(&mut generated);
        assert_eq!(
            generated["spec"]["selector"],
            json!({"matchLabels": {CONTROLLER_UID: "u-1"}})
        );
        assert_eq!(
            generated["spec"]["template"]["metadata"]["labels"],
            json!({"app": "x", CONTROLLER_UID: "u-1", LEGACY_CONTROLLER_UID: "u-1",
                   JOB_NAME: "backup", LEGACY_JOB_NAME: "backup"})
        );
        assert!(generated_selector_errors(&generated).is_empty());
        assert!(selector_errors(&generated, None).is_empty());
    }

    #[test]
    fn a_job_selector_of_its_own_needs_manual_selector() {
        let mut own = job(Some(json!({"matchLabels": {"app": "x"}})), false);
        generate_job_selector(&mut own);
        let errors: Vec<String> = generated_selector_errors(&own)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            errors,
            [
                "spec.selector: Invalid value: &LabelSelector{MatchLabels:map[string]string{app: x,\
              batch.kubernetes.io/controller-uid: u-1,},MatchExpressions:[]LabelSelectorRequirement{},}: \
              `selector` not auto-generated"
            ]
        );
        let mut manual = job(Some(json!({"matchLabels": {"app": "x"}})), true);
        generate_job_selector(&mut manual);
        assert_eq!(
            manual["spec"]["selector"],
            json!({"matchLabels": {"app": "x"}})
        );
        assert!(generated_selector_errors(&manual).is_empty());
    }

    #[test]
    fn a_workload_selector_must_select_its_template() {
        let missing = json!({"spec": {"template": {"metadata": {"labels": {"app": "web"}}}}});
        let errors: Vec<String> = selector_errors(&missing, Some("deployment"))
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            errors,
            [
                "spec.selector: Required value",
                "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"web\"}: \
                 `selector` does not match template `labels`",
            ]
        );
        let other = json!({"spec": {"selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["db"]}]},
                                    "template": {"metadata": {"labels": {"app": "web"}}}}});
        assert_eq!(selector_errors(&other, Some("deployment")).len(), 1);
        let empty = json!({"spec": {"selector": {}, "template": {}}});
        let errors: Vec<String> = selector_errors(&empty, Some("statefulset"))
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            errors,
            [
                "spec.selector: Invalid value: &LabelSelector{MatchLabels:map[string]string{},\
              MatchExpressions:[]LabelSelectorRequirement{},}: empty selector is invalid for statefulset"
            ]
        );
    }

    #[test]
    fn a_selector_cannot_change() {
        let old = json!({"spec": {"selector": {"matchLabels": {"app": "a"}}}});
        let new = json!({"spec": {"selector": {"matchLabels": {"app": "b"}}}});
        assert!(selector_update_errors(&old, &old).is_empty());
        assert_eq!(
            selector_update_errors(&old, &new)[0].to_string(),
            "spec.selector: Invalid value: &LabelSelector{MatchLabels:map[string]string{app: b,},\
             MatchExpressions:[]LabelSelectorRequirement{},}: field is immutable"
        );
    }

    #[test]
    fn templates_need_containers_and_a_supported_restart_policy() {
        let registry = Registry::with_builtins();
        let jobs = registry.find("batch", "v1", "jobs").unwrap();
        let cron_jobs = registry.find("batch", "v1", "cronjobs").unwrap();
        let always = json!({"spec": {"template": {"spec": {"restartPolicy": "Always",
                                     "containers": [{"name": "c", "image": "i"}]}}}});
        let errors: Vec<String> = template_errors(jobs.strategy().unwrap(), &always)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            errors,
            [
                "spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \
              \"OnFailure\", \"Never\""
            ]
        );
        let empty = json!({"spec": {}});
        let errors: Vec<String> = template_errors(cron_jobs.strategy().unwrap(), &empty)
            .iter()
            .map(|e| e.field.clone())
            .collect();
        assert_eq!(
            errors,
            [
                "spec.jobTemplate.spec.template.spec.containers",
                "spec.jobTemplate.spec.template.spec.restartPolicy",
            ]
        );
    }
}
