//! Which hooks a pod runs: from its annotations (Ferry's spelling or Velero's) or, for a phase
//! it has no annotations for, from the resource hooks of the Backup or Restore that select it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ferry_shared::crd::{
    BackupHooks, ExecHook, HookErrorMode, HookPhase, HookSelection, RestoreExecHook, RestoreHooks,
};
use ferry_shared::names::{RESTORE_WAIT_CONTAINER, hook};
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::ResourceExt;
use kube::core::{Selector, SelectorExt};

use crate::context::spec_duration;
use crate::resources::NamespaceFilter;

/// How long an exec hook may run when nothing says.
pub const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a post-restore hook waits for its pod's data and container when nothing says.
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(600);
/// The name of an init container made from annotations that name none.
pub const DEFAULT_INIT_CONTAINER: &str = "restore-hook";
/// The source of hooks that come from the pod's annotations.
pub const FROM_ANNOTATIONS: &str = "annotations";

/// An exec hook of one pod, its defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodHook {
    /// The resource hook's name, or [`FROM_ANNOTATIONS`].
    pub source: String,
    /// The container to run in; empty when the pod has none.
    pub container: String,
    pub command: Vec<String>,
    pub on_error: HookErrorMode,
    pub timeout: Duration,
    /// How long to wait for the pod to be ready for it (post-restore hooks only).
    pub wait_timeout: Duration,
}

/// A hook that cannot run as written, such as an annotation that is not a duration; it counts
/// as failed under its own error mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidHook {
    pub source: String,
    pub on_error: HookErrorMode,
    pub message: String,
}

/// One hook as planned.
pub type Planned = Result<PodHook, InvalidHook>;

/// The exec hooks `pod` runs in a backup phase (`Pre` or `Post`). A pod that has finished
/// (Succeeded or Failed, a Job's pod say) runs only the hooks its annotations ask for.
pub fn backup_hooks(pod: &Pod, phase: HookPhase, spec: Option<&BackupHooks>) -> Vec<Planned> {
    let prefixes = match phase {
        HookPhase::Pre => hook::BACKUP_PRE,
        _ => hook::BACKUP_POST,
    };
    if let Some(annotated) = annotated_exec(pod, prefixes, "timeout", HookErrorMode::Fail) {
        return vec![annotated];
    }
    if finished(pod) {
        return Vec::new();
    }
    let resources = spec.map(|hooks| hooks.resources.as_slice()).unwrap_or(&[]);
    resources
        .iter()
        .filter(|resource| selects(&resource.selection, pod))
        .flat_map(|resource| {
            let hooks = match phase {
                HookPhase::Pre => &resource.pre,
                _ => &resource.post,
            };
            let source = &resource.selection.name;
            hooks
                .iter()
                .map(move |hook| backup_exec(pod, source, &hook.exec))
        })
        .collect()
}

/// The post-restore exec hooks of a restored pod.
pub fn restore_exec_hooks(pod: &Pod, spec: Option<&RestoreHooks>) -> Vec<Planned> {
    let annotated = annotated_exec(
        pod,
        hook::RESTORE_POST,
        "exec-timeout",
        HookErrorMode::Continue,
    );
    if let Some(annotated) = annotated {
        return vec![annotated];
    }
    let resources = spec.map(|hooks| hooks.resources.as_slice()).unwrap_or(&[]);
    resources
        .iter()
        .filter(|resource| selects(&resource.selection, pod))
        .flat_map(|resource| {
            let source = &resource.selection.name;
            let execs = resource.post_hooks.iter().filter_map(|h| h.exec.as_ref());
            execs.map(move |exec| restore_exec(pod, source, exec))
        })
        .collect()
}

/// The init containers a restored pod runs after `restore-wait`, or why its annotations
/// cannot make one.
pub fn restore_init_containers(
    pod: &Pod,
    spec: Option<&RestoreHooks>,
) -> Result<Vec<Container>, String> {
    if let Some(container) = annotated_init_container(pod)? {
        return Ok(vec![container]);
    }
    let resources = spec.map(|hooks| hooks.resources.as_slice()).unwrap_or(&[]);
    Ok(resources
        .iter()
        .filter(|resource| selects(&resource.selection, pod))
        .flat_map(|resource| &resource.post_hooks)
        .filter_map(|hook| hook.init.as_ref())
        .flat_map(|init| init.init_containers.iter().cloned())
        .collect())
}

/// What is wrong with a Backup's resource hooks, for FailedValidation.
pub fn backup_spec_errors(hooks: &BackupHooks) -> Vec<String> {
    let mut errors = Vec::new();
    for (index, resource) in hooks.resources.iter().enumerate() {
        let field = format!("hooks.resources[{index}]");
        errors.extend(selection_errors(&field, &resource.selection));
        let phases = [("pre", &resource.pre), ("post", &resource.post)];
        for (phase, hooks) in phases {
            for (at, hook) in hooks.iter().enumerate() {
                let field = format!("{field}.{phase}[{at}].exec");
                let exec = &hook.exec;
                errors.extend(command_error(&field, &exec.command));
                errors.extend(duration_error(&field, &exec.timeout, "timeout"));
            }
        }
    }
    errors
}

/// What is wrong with a Restore's resource hooks, for FailedValidation.
pub fn restore_spec_errors(hooks: &RestoreHooks) -> Vec<String> {
    let mut errors = Vec::new();
    for (index, resource) in hooks.resources.iter().enumerate() {
        let field = format!("hooks.resources[{index}]");
        errors.extend(selection_errors(&field, &resource.selection));
        let mut names = BTreeSet::new();
        for (at, hook) in resource.post_hooks.iter().enumerate() {
            let field = format!("{field}.postHooks[{at}]");
            if hook.init.is_none() && hook.exec.is_none() {
                errors.push(format!("{field} has neither init nor exec"));
            }
            for container in hook.init.iter().flat_map(|init| &init.init_containers) {
                errors.extend(init_container_error(&field, container, &mut names));
            }
            let Some(exec) = &hook.exec else { continue };
            let field = format!("{field}.exec");
            errors.extend(command_error(&field, &exec.command));
            errors.extend(duration_error(&field, &exec.exec_timeout, "execTimeout"));
            errors.extend(duration_error(&field, &exec.wait_timeout, "waitTimeout"));
        }
    }
    errors
}

/// What is wrong with an init container of a restore hook: no name, a name taken by an
/// earlier one of `names` or by `restore-wait`, or no image.
fn init_container_error(
    field: &str,
    container: &Container,
    names: &mut BTreeSet<String>,
) -> Option<String> {
    let name = container.name.trim();
    if name.is_empty() {
        return Some(format!("{field}.init: an init container has no name"));
    }
    if name == RESTORE_WAIT_CONTAINER || !names.insert(name.to_owned()) {
        return Some(format!(
            "{field}.init: the init container name {name:?} is taken"
        ));
    }
    let image = container.image.as_deref().unwrap_or_default();
    image
        .trim()
        .is_empty()
        .then(|| format!("{field}.init: init container {name} has no image"))
}

fn selection_errors(field: &str, selection: &HookSelection) -> Vec<String> {
    let mut errors = Vec::new();
    if selection.name.trim().is_empty() {
        errors.push(format!("{field}.name is empty"));
    }
    if let Some(selector) = &selection.label_selector
        && let Err(err) = Selector::try_from(selector.clone())
    {
        errors.push(format!("{field}.labelSelector is not valid: {err}"));
    }
    errors
}

fn command_error(field: &str, command: &[String]) -> Option<String> {
    (command.is_empty() || command[0].trim().is_empty())
        .then(|| format!("{field}.command is empty"))
}

/// Why the duration `value` of `name` is not a duration above zero, if it is not.
fn duration_error(field: &str, value: &Option<String>, name: &str) -> Option<String> {
    match spec_duration(value.as_deref(), name, DEFAULT_EXEC_TIMEOUT) {
        Err(err) => Some(format!("{field}: {err}")),
        Ok(duration) if duration.is_zero() => Some(format!("{field}: {name} is zero")),
        Ok(_) => None,
    }
}

fn finished(pod: &Pod) -> bool {
    let phase = pod
        .status
        .as_ref()
        .and_then(|status| status.phase.as_deref());
    matches!(phase, Some("Succeeded" | "Failed"))
}

/// Whether a resource hook applies to `pod`.
fn selects(selection: &HookSelection, pod: &Pod) -> bool {
    let names_pods = |list: &[String]| {
        list.iter()
            .any(|name| matches!(name.as_str(), "*" | "pods" | "pod" | "po"))
    };
    let namespaces = NamespaceFilter::new(
        &selection.included_namespaces,
        &selection.excluded_namespaces,
    );
    let labels = match &selection.label_selector {
        None => true,
        Some(selector) => Selector::try_from(selector.clone())
            .is_ok_and(|selector| selector.matches(pod.labels())),
    };
    namespaces.selects(&pod.namespace().unwrap_or_default())
        && (selection.included_resources.is_empty() || names_pods(&selection.included_resources))
        && !names_pods(&selection.excluded_resources)
        && labels
}

fn backup_exec(pod: &Pod, source: &str, exec: &ExecHook) -> Planned {
    let on_error = exec.on_error.unwrap_or(HookErrorMode::Fail);
    let invalid = |message| InvalidHook {
        source: source.to_owned(),
        on_error,
        message,
    };
    let timeout =
        spec_duration(exec.timeout.as_deref(), "timeout", DEFAULT_EXEC_TIMEOUT).map_err(invalid)?;
    Ok(PodHook {
        source: source.to_owned(),
        container: container_or_first(pod, exec.container.as_deref()),
        command: exec.command.clone(),
        on_error,
        timeout,
        wait_timeout: Duration::ZERO,
    })
}

fn restore_exec(pod: &Pod, source: &str, exec: &RestoreExecHook) -> Planned {
    let on_error = exec.on_error.unwrap_or(HookErrorMode::Continue);
    let invalid = |message| InvalidHook {
        source: source.to_owned(),
        on_error,
        message,
    };
    let timeout = spec_duration(
        exec.exec_timeout.as_deref(),
        "execTimeout",
        DEFAULT_EXEC_TIMEOUT,
    )
    .map_err(invalid)?;
    let wait_timeout = spec_duration(
        exec.wait_timeout.as_deref(),
        "waitTimeout",
        DEFAULT_WAIT_TIMEOUT,
    )
    .map_err(invalid)?;
    Ok(PodHook {
        source: source.to_owned(),
        container: container_or_first(pod, exec.container.as_deref()),
        command: exec.command.clone(),
        on_error,
        timeout,
        wait_timeout,
    })
}

/// The named container, or the pod's first one.
fn container_or_first(pod: &Pod, named: Option<&str>) -> String {
    match named.map(str::trim).filter(|name| !name.is_empty()) {
        Some(name) => name.to_owned(),
        None => (pod.spec.iter().flat_map(|spec| spec.containers.first()))
            .map(|container| container.name.clone())
            .next()
            .unwrap_or_default(),
    }
}

/// The annotations, by field, of the first spelling among `prefixes` in which the pod sets
/// the field `trigger`.
fn annotations_of<'a>(
    pod: &'a Pod,
    prefixes: &[&str],
    trigger: &str,
) -> Option<(String, Fields<'a>)> {
    prefixes.iter().find_map(|prefix| {
        let start = format!("{prefix}/");
        let fields: Fields = (pod.annotations().iter())
            .filter_map(|(key, value)| Some((key.strip_prefix(&start)?, value.as_str())))
            .collect();
        fields
            .contains_key(trigger)
            .then(|| ((*prefix).to_owned(), fields))
    })
}

type Fields<'a> = BTreeMap<&'a str, &'a str>;

/// The exec hook of the annotations with one of `prefixes`, whose timeout is the field
/// `timeout_field`; none when the pod sets no `command` with them.
fn annotated_exec(
    pod: &Pod,
    prefixes: &[&str],
    timeout_field: &str,
    default_mode: HookErrorMode,
) -> Option<Planned> {
    let (prefix, fields) = annotations_of(pod, prefixes, "command")?;
    let invalid = |on_error, message: String| InvalidHook {
        source: FROM_ANNOTATIONS.to_owned(),
        on_error,
        message: format!("annotation {prefix}/{message}"),
    };
    let on_error = match fields.get("on-error").map(|mode| mode.trim()) {
        None | Some("") => default_mode,
        Some("Continue") => HookErrorMode::Continue,
        Some("Fail") => HookErrorMode::Fail,
        Some(other) => {
            let message = format!("on-error: {other:?} is neither Continue nor Fail");
            return Some(Err(invalid(default_mode, message)));
        }
    };
    Some(annotated_hook(pod, &fields, on_error, timeout_field).map_err(|m| invalid(on_error, m)))
}

/// The exec hook of annotation `fields`, or which field is wrong and why.
fn annotated_hook(
    pod: &Pod,
    fields: &Fields,
    on_error: HookErrorMode,
    timeout_field: &str,
) -> Result<PodHook, String> {
    let duration = |field: &str, default| spec_duration(fields.get(field).copied(), field, default);
    let command = command(fields.get("command").copied().unwrap_or_default())
        .map_err(|err| format!("command: {err}"))?;
    Ok(PodHook {
        source: FROM_ANNOTATIONS.to_owned(),
        container: container_or_first(pod, fields.get("container").copied()),
        command,
        on_error,
        timeout: duration(timeout_field, DEFAULT_EXEC_TIMEOUT)?,
        wait_timeout: duration("wait-timeout", DEFAULT_WAIT_TIMEOUT)?,
    })
}

/// A command annotation: a JSON array of strings, or one string run as a single argument.
fn command(text: &str) -> Result<Vec<String>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("it is missing or empty".to_owned());
    }
    if !text.starts_with('[') {
        return Ok(vec![text.to_owned()]);
    }
    match serde_json::from_str::<Vec<String>>(text) {
        Ok(argv) if !argv.is_empty() => Ok(argv),
        Ok(_) => Err("it is an empty list".to_owned()),
        Err(err) => Err(format!("{text:?} is not a JSON list of strings: {err}")),
    }
}

/// The init container of the pod's restore annotations, with the volume mounts of the pod's
/// first container so that it sees the restored data. Without a command it runs its image's
/// entrypoint.
fn annotated_init_container(pod: &Pod) -> Result<Option<Container>, String> {
    let found = (["container-image", "command", "container-name"].iter())
        .find_map(|trigger| annotations_of(pod, hook::RESTORE_INIT, trigger));
    let Some((prefix, fields)) = found else {
        return Ok(None);
    };
    let image = fields.get("container-image").map(|image| image.trim());
    let Some(image) = image.filter(|image| !image.is_empty()) else {
        return Err(format!(
            "annotation {prefix}/container-image is missing or empty"
        ));
    };
    let command = match fields.get("command") {
        None => None,
        Some(text) => {
            Some(command(text).map_err(|err| format!("annotation {prefix}/command: {err}"))?)
        }
    };
    let name = (fields.get("container-name").map(|name| name.trim()))
        .filter(|name| !name.is_empty())
        .unwrap_or(DEFAULT_INIT_CONTAINER);
    let mounts = (pod.spec.iter().flat_map(|spec| spec.containers.first()))
        .flat_map(|container| container.volume_mounts.clone())
        .next();
    Ok(Some(Container {
        name: name.to_owned(),
        image: Some(image.to_owned()),
        command,
        volume_mounts: mounts,
        ..Container::default()
    }))
}

#[cfg(test)]
mod tests {
    use ferry_shared::crd::{
        BackupHook, BackupResourceHook, InitRestoreHook, RestorePostHook, RestoreResourceHook,
    };
    use k8s_openapi::api::core::v1::{PodSpec, VolumeMount};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
    use serde_json::json;

    use super::*;

    fn pod(namespace: &str, labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> Pod {
        let map = |pairs: &[(&str, &str)]| {
            (pairs.iter())
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>()
        };
        let mut pod = Pod::default();
        pod.metadata.name = Some("db-0".to_owned());
        pod.metadata.namespace = Some(namespace.to_owned());
        pod.metadata.labels = Some(map(labels));
        pod.metadata.annotations = Some(map(annotations));
        let container = |name: &str| Container {
            name: name.to_owned(),
            volume_mounts: Some(vec![VolumeMount {
                name: "data".to_owned(),
                mount_path: "/var/lib/data".to_owned(),
                ..VolumeMount::default()
            }]),
            ..Container::default()
        };
        pod.spec = Some(PodSpec {
            containers: vec![container("db"), container("sidecar")],
            ..PodSpec::default()
        });
        pod
    }

    fn exec(container: Option<&str>, command: &[&str]) -> ExecHook {
        ExecHook {
            container: container.map(str::to_owned),
            command: command.iter().map(|c| (*c).to_owned()).collect(),
            ..ExecHook::default()
        }
    }

    fn resource(name: &str, namespaces: &[&str], app: Option<&str>) -> HookSelection {
        HookSelection {
            name: name.to_owned(),
            included_namespaces: namespaces.iter().map(|n| (*n).to_owned()).collect(),
            label_selector: app.map(|app| LabelSelector {
                match_labels: Some([("app".to_owned(), app.to_owned())].into()),
                ..LabelSelector::default()
            }),
            ..HookSelection::default()
        }
    }

    fn spec_hooks() -> BackupHooks {
        let hook = |command: &str| BackupHook {
            exec: exec(None, &[command]),
        };
        BackupHooks {
            resources: vec![
                BackupResourceHook {
                    selection: resource("shop-db", &["shop"], Some("db")),
                    pre: vec![hook("freeze"), hook("flush")],
                    post: vec![hook("thaw")],
                },
                BackupResourceHook {
                    selection: resource("everywhere", &[], None),
                    pre: vec![hook("sync")],
                    post: vec![],
                },
            ],
        }
    }

    fn commands(planned: &[Planned]) -> Vec<String> {
        (planned.iter())
            .map(|hook| match hook {
                Ok(hook) => format!(
                    "{}:{}:{}",
                    hook.source,
                    hook.container,
                    hook.command.join(" ")
                ),
                Err(invalid) => format!("invalid:{}", invalid.message),
            })
            .collect()
    }

    #[test]
    fn backup_hooks_come_from_annotations_of_either_spelling_or_from_the_selecting_resources() {
        let spec = spec_hooks();
        let pre = |pod: &Pod| commands(&backup_hooks(pod, HookPhase::Pre, Some(&spec)));
        let post = |pod: &Pod| commands(&backup_hooks(pod, HookPhase::Post, Some(&spec)));
        let selected = pod("shop", &[("app", "db")], &[]);
        assert_eq!(
            pre(&selected),
            [
                "shop-db:db:freeze",
                "shop-db:db:flush",
                "everywhere:db:sync"
            ]
        );
        assert_eq!(post(&selected), ["shop-db:db:thaw"]);
        assert_eq!(
            pre(&pod("shop", &[("app", "web")], &[])),
            ["everywhere:db:sync"]
        );
        assert_eq!(
            pre(&pod("other", &[("app", "db")], &[])),
            ["everywhere:db:sync"]
        );
        let ferry = pod(
            "shop",
            &[("app", "db")],
            &[
                ("pre.hook.backup.ferry.dev/container", "sidecar"),
                (
                    "pre.hook.backup.ferry.dev/command",
                    r#"["sh", "-c", "sync"]"#,
                ),
                ("pre.hook.backup.velero.io/command", "ignored"),
            ],
        );
        assert_eq!(pre(&ferry), ["annotations:sidecar:sh -c sync"]);
        assert_eq!(
            post(&ferry),
            ["shop-db:db:thaw"],
            "annotations win per phase"
        );
        let velero = pod(
            "shop",
            &[],
            &[("post.hook.backup.velero.io/command", "/bin/thaw now")],
        );
        assert_eq!(post(&velero), ["annotations:db:/bin/thaw now"]);
        assert!(backup_hooks(&velero, HookPhase::Pre, None).is_empty());
    }

    #[test]
    fn annotation_defaults_and_malformed_values() {
        let planned = |annotations: &[(&str, &str)]| {
            backup_hooks(&pod("shop", &[], annotations), HookPhase::Pre, None).remove(0)
        };
        let hook = planned(&[("pre.hook.backup.ferry.dev/command", "true")]).unwrap();
        assert_eq!(
            (hook.on_error, hook.timeout),
            (HookErrorMode::Fail, DEFAULT_EXEC_TIMEOUT)
        );
        let hook = planned(&[
            ("pre.hook.backup.ferry.dev/command", "true"),
            ("pre.hook.backup.ferry.dev/on-error", "Continue"),
            ("pre.hook.backup.ferry.dev/timeout", "2m"),
        ])
        .unwrap();
        assert_eq!(
            (hook.on_error, hook.timeout),
            (HookErrorMode::Continue, Duration::from_secs(120))
        );
        let cases = [
            (
                ("timeout", "soon"),
                "annotation pre.hook.backup.ferry.dev/timeout \"soon\"",
            ),
            (
                ("on-error", "Ignore"),
                "on-error: \"Ignore\" is neither Continue nor Fail",
            ),
            (("command", "[\"sh\", 1]"), "is not a JSON list of strings"),
            (("command", "[]"), "command: it is an empty list"),
        ];
        for ((field, value), expected) in cases {
            let key = format!("pre.hook.backup.ferry.dev/{field}");
            let mut annotations = vec![(key.as_str(), value)];
            if field != "command" {
                annotations.push(("pre.hook.backup.ferry.dev/command", "true"));
            }
            let invalid = planned(&annotations).unwrap_err();
            assert!(invalid.message.contains(expected), "{}", invalid.message);
        }
        let empty = planned(&[("pre.hook.backup.ferry.dev/command", " ")]);
        assert!(
            empty
                .unwrap_err()
                .message
                .contains("command: it is missing or empty")
        );
    }

    #[test]
    fn annotations_without_a_command_leave_the_spec_hooks_and_velero_s_older_keys_count() {
        let spec = spec_hooks();
        let pre = |pod: &Pod| commands(&backup_hooks(pod, HookPhase::Pre, Some(&spec)));
        let no_command = pod(
            "shop",
            &[("app", "db")],
            &[("pre.hook.backup.ferry.dev/container", "sidecar")],
        );
        assert_eq!(
            pre(&no_command),
            [
                "shop-db:db:freeze",
                "shop-db:db:flush",
                "everywhere:db:sync"
            ]
        );
        let older = pod(
            "shop",
            &[],
            &[("hook.backup.velero.io/command", "/bin/quiesce")],
        );
        assert_eq!(pre(&older), ["annotations:db:/bin/quiesce"]);
    }

    #[test]
    fn a_finished_pod_runs_only_the_hooks_its_annotations_ask_for() {
        let spec = spec_hooks();
        let mut job = pod("shop", &[("app", "db")], &[]);
        job.status = Some(k8s_openapi::api::core::v1::PodStatus {
            phase: Some("Succeeded".to_owned()),
            ..Default::default()
        });
        assert!(backup_hooks(&job, HookPhase::Pre, Some(&spec)).is_empty());
        let annotations = [("pre.hook.backup.ferry.dev/command", "true")];
        job.metadata.annotations = Some(
            (annotations.iter())
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        assert_eq!(
            commands(&backup_hooks(&job, HookPhase::Pre, Some(&spec))),
            ["annotations:db:true"]
        );
    }

    #[test]
    fn malformed_spec_hooks_are_validation_errors() {
        let mut spec = spec_hooks();
        spec.resources[0].pre[1].exec.command.clear();
        spec.resources[0].post[0].exec.timeout = Some("later".to_owned());
        spec.resources[1].selection.label_selector = Some(LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "app".to_owned(),
                operator: "Near".to_owned(),
                values: None,
            }]),
            ..LabelSelector::default()
        });
        spec.resources[1].selection.name.clear();
        spec.resources[1].pre[0].exec.timeout = Some("0s".to_owned());
        let errors = backup_spec_errors(&spec);
        assert_eq!(errors.len(), 5, "{errors:?}");
        assert_eq!(errors[0], "hooks.resources[0].pre[1].exec.command is empty");
        assert!(errors[1].starts_with("hooks.resources[0].post[0].exec: timeout \"later\""));
        assert_eq!(errors[2], "hooks.resources[1].name is empty");
        assert!(errors[3].starts_with("hooks.resources[1].labelSelector is not valid"));
        assert_eq!(errors[4], "hooks.resources[1].pre[0].exec: timeout is zero");
        assert!(backup_spec_errors(&spec_hooks()).is_empty());
        let restore = RestoreHooks {
            resources: vec![RestoreResourceHook {
                selection: resource("r", &[], None),
                post_hooks: vec![
                    RestorePostHook::default(),
                    RestorePostHook {
                        init: None,
                        exec: Some(RestoreExecHook {
                            command: vec!["check".to_owned()],
                            wait_timeout: Some("never".to_owned()),
                            ..RestoreExecHook::default()
                        }),
                    },
                    RestorePostHook {
                        init: Some(InitRestoreHook {
                            init_containers: serde_json::from_value(json!([
                                {"name": "warm", "image": "cache:1"},
                                {"name": "warm", "image": "cache:1"},
                                {"name": "restore-wait", "image": "cache:1"},
                                {"name": "bare"},
                            ]))
                            .unwrap(),
                        }),
                        exec: None,
                    },
                ],
            }],
        };
        let errors = restore_spec_errors(&restore);
        assert_eq!(
            errors,
            [
                "hooks.resources[0].postHooks[0] has neither init nor exec",
                "hooks.resources[0].postHooks[1].exec: waitTimeout \"never\" is not a duration \
                 such as 720h: expected number at 0",
                "hooks.resources[0].postHooks[2].init: the init container name \"warm\" is taken",
                "hooks.resources[0].postHooks[2].init: the init container name \"restore-wait\" \
                 is taken",
                "hooks.resources[0].postHooks[2].init: init container bare has no image",
            ]
        );
    }

    #[test]
    fn resource_hooks_that_exclude_pods_apply_to_nothing() {
        let mut spec = spec_hooks();
        spec.resources[1].selection.excluded_resources = vec!["pods".to_owned()];
        spec.resources[0].selection.included_resources = vec!["deployments".to_owned()];
        let selected = pod("shop", &[("app", "db")], &[]);
        assert!(backup_hooks(&selected, HookPhase::Pre, Some(&spec)).is_empty());
    }

    #[test]
    fn restore_exec_hooks_default_to_continue_and_wait_for_ten_minutes() {
        let annotated = pod(
            "shop",
            &[],
            &[
                (
                    "post.hook.restore.velero.io/command",
                    r#"["psql", "-c", "select 1"]"#,
                ),
                ("post.hook.restore.velero.io/wait-timeout", "1m"),
                ("post.hook.restore.velero.io/exec-timeout", "5s"),
            ],
        );
        let hook = restore_exec_hooks(&annotated, None).remove(0).unwrap();
        assert_eq!(hook.on_error, HookErrorMode::Continue);
        assert_eq!(
            (hook.timeout, hook.wait_timeout),
            (Duration::from_secs(5), Duration::from_secs(60))
        );
        let spec = RestoreHooks {
            resources: vec![RestoreResourceHook {
                selection: resource("check", &["shop"], None),
                post_hooks: vec![RestorePostHook {
                    init: None,
                    exec: Some(RestoreExecHook {
                        command: vec!["check".to_owned()],
                        on_error: Some(HookErrorMode::Fail),
                        ..RestoreExecHook::default()
                    }),
                }],
            }],
        };
        let plain = pod("shop", &[], &[]);
        let hook = restore_exec_hooks(&plain, Some(&spec)).remove(0).unwrap();
        assert_eq!(
            (hook.source.as_str(), hook.on_error, hook.wait_timeout),
            ("check", HookErrorMode::Fail, DEFAULT_WAIT_TIMEOUT)
        );
        assert!(restore_exec_hooks(&pod("other", &[], &[]), Some(&spec)).is_empty());
    }

    #[test]
    fn restore_init_containers_from_annotations_see_the_first_containers_volumes() {
        let annotated = pod(
            "shop",
            &[],
            &[
                ("init.hook.restore.ferry.dev/container-image", "busybox"),
                (
                    "init.hook.restore.ferry.dev/command",
                    r#"["sh", "-c", "chown -R 999 /var/lib/data"]"#,
                ),
            ],
        );
        let containers = restore_init_containers(&annotated, None).unwrap();
        assert_eq!(containers.len(), 1);
        let container = &containers[0];
        assert_eq!(container.name, DEFAULT_INIT_CONTAINER);
        assert_eq!(container.image.as_deref(), Some("busybox"));
        assert_eq!(container.volume_mounts.as_ref().unwrap()[0].name, "data");
        let no_image = pod(
            "shop",
            &[],
            &[("init.hook.restore.ferry.dev/command", "true")],
        );
        let err = restore_init_containers(&no_image, None).unwrap_err();
        assert_eq!(
            err,
            "annotation init.hook.restore.ferry.dev/container-image is missing or empty"
        );
        let entrypoint = pod(
            "shop",
            &[],
            &[("init.hook.restore.velero.io/container-image", "warmer:2")],
        );
        let containers = restore_init_containers(&entrypoint, None).unwrap();
        assert_eq!(containers[0].command, None, "the image's entrypoint runs");
        let from_spec: Container = serde_json::from_value(json!({
            "name": "warm", "image": "cache:1", "args": ["--warm"]
        }))
        .unwrap();
        let spec = RestoreHooks {
            resources: vec![RestoreResourceHook {
                selection: resource("warm", &[], None),
                post_hooks: vec![RestorePostHook {
                    init: Some(InitRestoreHook {
                        init_containers: vec![from_spec.clone()],
                    }),
                    exec: None,
                }],
            }],
        };
        let plain = pod("shop", &[], &[]);
        assert_eq!(
            restore_init_containers(&plain, Some(&spec)).unwrap(),
            [from_spec]
        );
    }
}
