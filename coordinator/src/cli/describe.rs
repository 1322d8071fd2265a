//! `describe`: a readable account of one object, as `Label:  value` lines and indented
//! sections, and the table of its volumes' transfers.

use ferry_shared::crd::{HookRecords, PodVolumeTransfer, ResourceSelection};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::operation::Summary;
use super::output::{Table, bytes, list, short_duration, time};
use crate::hooks::report::records_log;

/// The text of a description, built a line at a time.
#[derive(Default)]
pub struct Description {
    lines: Vec<(usize, String, String)>,
}

impl Description {
    /// A `label: value` line at the top level.
    pub fn field(&mut self, label: &str, value: impl Into<String>) -> &mut Self {
        self.lines.push((0, label.to_owned(), value.into()));
        self
    }

    /// A `label: value` line inside the section above.
    pub fn sub(&mut self, label: &str, value: impl Into<String>) -> &mut Self {
        self.lines.push((1, label.to_owned(), value.into()));
        self
    }

    /// A section heading, or a list of lines under a heading when `items` is not empty.
    pub fn items(&mut self, heading: &str, items: &[String]) -> &mut Self {
        if !items.is_empty() {
            self.lines.push((0, heading.to_owned(), String::new()));
            for item in items {
                self.lines.push((1, String::new(), item.clone()));
            }
        }
        self
    }

    /// The name, namespace and labels of an object.
    pub fn metadata(&mut self, metadata: &ObjectMeta) -> &mut Self {
        let labels: Vec<String> = metadata
            .labels
            .iter()
            .flatten()
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        self.field("Name", metadata.name.clone().unwrap_or_default())
            .field("Namespace", metadata.namespace.clone().unwrap_or_default())
            .field("Labels", list(&labels))
            .field("Created", time(metadata.creation_timestamp.as_ref()))
    }

    /// What a Backup or Restore takes.
    pub fn selection(
        &mut self,
        included: &[String],
        excluded: &[String],
        resources: &ResourceSelection,
        selector: Option<&LabelSelector>,
    ) -> &mut Self {
        let all = |items: &[String]| {
            if items.is_empty() {
                "*".to_owned()
            } else {
                items.join(", ")
            }
        };
        let cluster = match resources.include_cluster_resources {
            None => "auto (all when every namespace is taken, else the related ones)",
            Some(true) => "all",
            Some(false) => "none",
        };
        self.field("Namespaces", "")
            .sub("Included", all(included))
            .sub("Excluded", list(excluded))
            .field("Resources", "")
            .sub("Included", all(&resources.included_resources))
            .sub("Excluded", list(&resources.excluded_resources))
            .sub("Cluster-scoped", cluster)
            .field("Label selector", selector_text(selector))
    }

    /// How a Backup or Restore went.
    pub fn outcome(&mut self, summary: &Summary<'_>, items_done: &str) -> &mut Self {
        let transfers = &summary.transfers;
        self.field("Phase", format!("{:?}", summary.phase))
            .field("Started", time(summary.started))
            .field("Completed", time(summary.completed))
            .field("Total items", summary.total_items.to_string())
            .field(
                &format!("Items {items_done}"),
                summary.items_done.to_string(),
            )
            .field(
                "Pod volumes",
                format!(
                    "{} ({} completed, {} failed), {}, {} file(s)",
                    transfers.total,
                    transfers.completed,
                    transfers.failed,
                    bytes(summary.volumes.bytes_done),
                    summary.volumes.files_done
                ),
            )
            .items("Validation errors", summary.validation_errors)
            .items("Errors", summary.errors)
            .items("Warnings", summary.warnings)
    }

    /// How many hooks ran and failed, and the pods whose post hooks are still to run.
    pub fn hooks(&mut self, records: &HookRecords) -> &mut Self {
        let mut text = format!(
            "{} attempted, {} failed",
            records.hooks_attempted, records.hooks_failed
        );
        if !records.pending_post_hooks.is_empty() {
            let pods = records.pending_post_hooks.len();
            text.push_str(&format!(", post hooks of {pods} pod(s) still to run"));
        }
        self.field("Hooks", text)
    }

    pub fn render(&self) -> String {
        let width = self
            .lines
            .iter()
            .map(|(depth, label, _)| depth * 2 + label.len())
            .max()
            .unwrap_or(0)
            + 2;
        let mut text = String::new();
        for (depth, label, value) in &self.lines {
            let indent = "  ".repeat(*depth);
            let line = if label.is_empty() {
                format!("{indent}{value}")
            } else if value.is_empty() {
                format!("{indent}{label}:")
            } else {
                let head = format!("{indent}{label}:");
                format!("{head:width$}{value}", width = width + 1)
            };
            text.push_str(line.trim_end());
            text.push('\n');
        }
        text
    }
}

/// A label selector in kubectl's syntax, or `<none>`.
pub fn selector_text(selector: Option<&LabelSelector>) -> String {
    let Some(selector) = selector else {
        return "<none>".to_owned();
    };
    let mut parts: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    for expression in selector.match_expressions.iter().flatten() {
        let values = expression.values.clone().unwrap_or_default().join(",");
        parts.push(match expression.operator.as_str() {
            "Exists" => expression.key.clone(),
            "DoesNotExist" => format!("!{}", expression.key),
            operator => format!("{} {} ({values})", expression.key, operator.to_lowercase()),
        });
    }
    list(&parts)
}

/// Each hook run as the operation's log shows it, or `  <none>`.
pub fn hook_runs(records: &HookRecords) -> String {
    if records.hook_runs.is_empty() {
        return "  <none>\n".to_owned();
    }
    (records_log(records).iter())
        .map(|line| format!("  {line}\n"))
        .collect()
}

/// One row per transfer: where, how far, how it ended.
pub fn transfers_table<T: PodVolumeTransfer>(transfers: &[T]) -> Table {
    let mut table = Table::new(&[
        "POD", "VOLUME", "NODE", "PHASE", "BYTES", "FILES", "DURATION", "SNAPSHOT", "MESSAGE",
    ]);
    for transfer in transfers {
        let status = transfer.status().cloned().unwrap_or_default();
        let progress = status.progress.clone().unwrap_or_default();
        let took = match (&status.start_timestamp, &status.completion_timestamp) {
            (Some(start), Some(end)) => short_duration(
                (end.0.as_second() - start.0.as_second())
                    .max(0)
                    .unsigned_abs(),
            ),
            _ => "-".to_owned(),
        };
        let pod = transfer.pod();
        table.row(vec![
            format!("{}/{}", pod.namespace, pod.name),
            transfer.volume().to_owned(),
            status.node.clone().unwrap_or_else(|| "-".into()),
            format!("{:?}", status.phase),
            bytes(progress.bytes_done),
            progress.files_done.to_string(),
            took,
            status.snapshot_id.clone().unwrap_or_else(|| "-".into()),
            status.message.clone().unwrap_or_default(),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
    use std::collections::BTreeMap;

    #[test]
    fn fields_line_up_and_sections_indent() {
        let mut description = Description::default();
        description
            .field("Name", "b1")
            .field("Namespaces", "")
            .sub("Included", "app")
            .items("Errors", &["it broke".to_owned()])
            .items("Warnings", &[]);
        assert_eq!(
            description.render(),
            "Name:        b1\nNamespaces:\n  Included:  app\nErrors:\n  it broke\n"
        );
    }

    #[test]
    fn selectors_print_as_kubectl_reads_them() {
        let selector = LabelSelector {
            match_labels: Some(BTreeMap::from([("app".into(), "web".into())])),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "env".into(),
                    operator: "In".into(),
                    values: Some(vec!["a".into(), "b".into()]),
                },
                LabelSelectorRequirement {
                    key: "legacy".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
            ]),
        };
        assert_eq!(
            selector_text(Some(&selector)),
            "app=web, env in (a,b), !legacy"
        );
        assert_eq!(selector_text(None), "<none>");
    }
}
