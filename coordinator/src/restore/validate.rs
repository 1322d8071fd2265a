//! Starting a Restore: the backup it reads, checked with the rest of its spec, or the
//! reasons it fails validation.

use std::collections::BTreeSet;

use ferry_shared::crd::{Backup, OperationPhase, Restore, RestoreSpec, RestoreStatus};
use ferry_shared::names::{self, label};
use ferry_shared::time::now;
use kube::ResourceExt;
use kube::api::ListParams;
use kube::core::Selector;
use kube::runtime::controller::Action;
use tracing::warn;

use crate::context::Context;
use crate::error::Error;
use crate::hooks::plan::restore_spec_errors;
use crate::protected;

/// The backup a Restore names, or the newest Completed backup of its schedule.
fn choose_backup(
    spec_backup: Option<&str>,
    schedule: Option<&str>,
    backups: &[Backup],
) -> Result<String, String> {
    match (
        spec_backup.filter(|b| !b.is_empty()),
        schedule.filter(|s| !s.is_empty()),
    ) {
        (Some(_), Some(_)) => Err("give either backupName or scheduleName, not both".to_owned()),
        (None, None) => Err("give backupName or scheduleName".to_owned()),
        (Some(name), None) => {
            let backup = backups
                .iter()
                .find(|backup| backup.name_any() == name)
                .ok_or_else(|| format!("backup {name} does not exist"))?;
            if backup.metadata.deletion_timestamp.is_some() {
                return Err(format!("backup {name} is being deleted"));
            }
            match backup.phase() {
                OperationPhase::Completed | OperationPhase::PartiallyFailed => Ok(name.to_owned()),
                phase => Err(format!(
                    "backup {name} is {phase:?}; only Completed or PartiallyFailed backups can be restored"
                )),
            }
        }
        (None, Some(schedule)) => backups
            .iter()
            .filter(|backup| {
                backup.labels().get(label::SCHEDULE_NAME) == Some(&names::label_value(schedule))
                    && backup.phase() == OperationPhase::Completed
                    && backup.metadata.deletion_timestamp.is_none()
            })
            .max_by_key(|backup| {
                backup
                    .status
                    .as_ref()
                    .and_then(|s| s.completion_timestamp.clone())
                    .map(|t| t.0)
            })
            .map(ResourceExt::name_any)
            .ok_or_else(|| format!("schedule {schedule} has no Completed backup")),
    }
}

/// Validates, then moves the Restore to InProgress, or to FailedValidation with the reasons.
pub(super) async fn start(restore: &Restore, ctx: &Context) -> Result<Action, Error> {
    let backups = ctx
        .api::<Backup>()
        .list(&ListParams::default())
        .await?
        .items;
    let denied = ctx.settings.denied_restore_namespaces();
    let backup = match validate(&restore.spec, &backups, &denied) {
        Ok(valid) => valid.backup,
        Err(errors) => return reject(restore, ctx, RestoreStatus::default(), errors).await,
    };
    let note = format!("restoring from backup {backup}");
    ctx.event(restore, false, "Started", note).await;
    let status = RestoreStatus {
        phase: OperationPhase::InProgress,
        backup_name: Some(backup),
        start_timestamp: Some(now()),
        ..RestoreStatus::default()
    };
    ctx.apply_status(restore, &status).await?;
    Ok(Action::await_change())
}

/// A Restore that passed validation: the backup it reads.
#[derive(Debug, PartialEq, Eq)]
struct ValidRestore {
    backup: String,
}

/// Checks a Restore's spec against the `backups` there are and the namespaces restores may
/// not write to: valid, or every reason it is not.
fn validate(
    spec: &RestoreSpec,
    backups: &[Backup],
    denied: &BTreeSet<String>,
) -> Result<ValidRestore, Vec<String>> {
    let mut errors = Vec::new();
    let backup = choose_backup(
        spec.backup_name.as_deref(),
        spec.schedule_name.as_deref(),
        backups,
    )
    .map_err(|err| errors.push(err))
    .ok();
    for (from, to) in &spec.namespace_mapping {
        if !ferry_shared::storage::is_dns_label(to) {
            errors.push(format!(
                "namespaceMapping {from}: {to:?} is not a namespace name"
            ));
        }
    }
    if let Some(selector) = &spec.label_selector
        && let Err(err) = Selector::try_from(selector.clone())
    {
        errors.push(format!("labelSelector is not valid: {err}"));
    }
    errors.extend(spec.hooks.iter().flat_map(restore_spec_errors));
    let backup_spec = backups
        .iter()
        .find(|candidate| Some(candidate.name_any()) == backup)
        .map(|backup| &backup.spec);
    let targets = protected::spec_targets(spec, backup_spec);
    if let Some(denied) = protected::denied(&targets, denied) {
        errors.push(denied);
    }
    match backup {
        Some(backup) if errors.is_empty() => Ok(ValidRestore { backup }),
        _ => Err(errors),
    }
}

/// Ends a Restore FailedValidation with `errors`, keeping what `status` already records.
pub(super) async fn reject(
    restore: &Restore,
    ctx: &Context,
    status: RestoreStatus,
    errors: Vec<String>,
) -> Result<Action, Error> {
    warn!(name = %restore.name_any(), ?errors, "restore failed validation");
    ctx.event(restore, true, "FailedValidation", errors.join("; "))
        .await;
    ctx.apply_status(
        restore,
        &RestoreStatus {
            phase: OperationPhase::FailedValidation,
            validation_errors: errors,
            completion_timestamp: Some(now()),
            ..status
        },
    )
    .await?;
    ctx.metrics.restore_ended(OperationPhase::FailedValidation);
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn backup(name: &str, phase: OperationPhase, schedule: Option<&str>, finished: i64) -> Backup {
        let mut backup = Backup::new(name, Default::default());
        if let Some(schedule) = schedule {
            backup.metadata.labels = Some(BTreeMap::from([(
                label::SCHEDULE_NAME.to_owned(),
                schedule.to_owned(),
            )]));
        }
        backup.status = Some(ferry_shared::crd::BackupStatus {
            phase,
            completion_timestamp: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::from_second(finished).unwrap(),
            )),
            ..Default::default()
        });
        backup
    }

    #[test]
    fn the_backup_is_named_or_the_newest_completed_of_the_schedule() {
        let backups = [
            backup("daily-1", OperationPhase::Completed, Some("daily"), 10),
            backup("daily-2", OperationPhase::Completed, Some("daily"), 20),
            backup(
                "daily-3",
                OperationPhase::PartiallyFailed,
                Some("daily"),
                30,
            ),
            backup("manual", OperationPhase::Failed, None, 5),
        ];
        assert_eq!(
            choose_backup(None, Some("daily"), &backups),
            Ok("daily-2".into())
        );
        assert_eq!(
            choose_backup(Some("daily-3"), None, &backups),
            Ok("daily-3".into())
        );
        let mut deleting = backups.to_vec();
        deleting[1].metadata.deletion_timestamp = deleting[1]
            .status
            .as_ref()
            .unwrap()
            .completion_timestamp
            .clone();
        assert_eq!(
            choose_backup(None, Some("daily"), &deleting),
            Ok("daily-1".into())
        );
        assert!(
            choose_backup(Some("daily-2"), None, &deleting)
                .unwrap_err()
                .contains("being deleted")
        );
        for (name, schedule, error) in [
            (Some("a"), Some("b"), "not both"),
            (None, None, "give backupName or scheduleName"),
            (Some("missing"), None, "does not exist"),
            (Some("manual"), None, "is Failed"),
            (None, Some("weekly"), "has no Completed backup"),
        ] {
            let err = choose_backup(name, schedule, &backups).unwrap_err();
            assert!(err.contains(error), "{err}");
        }
    }

    fn spec(spec: serde_json::Value) -> RestoreSpec {
        serde_json::from_value(spec).unwrap()
    }

    #[test]
    fn a_restore_is_valid_or_refused_with_every_reason() {
        let backups = [
            backup("daily-1", OperationPhase::Completed, Some("daily"), 10),
            backup("manual", OperationPhase::Failed, None, 5),
        ];
        let denied: BTreeSet<String> = ["kube-system".to_owned()].into();
        assert_eq!(
            validate(&spec(json!({"backupName": "daily-1"})), &backups, &denied),
            Ok(ValidRestore {
                backup: "daily-1".into()
            })
        );
        assert_eq!(
            validate(&spec(json!({"scheduleName": "daily"})), &backups, &denied),
            Ok(ValidRestore {
                backup: "daily-1".into()
            })
        );
        let cases = [
            (
                json!({"backupName": "a", "scheduleName": "b"}),
                vec!["not both"],
            ),
            (json!({}), vec!["give backupName or scheduleName"]),
            (
                json!({"backupName": "ghost"}),
                vec!["backup ghost does not exist"],
            ),
            (
                json!({"backupName": "manual"}),
                vec!["backup manual is Failed"],
            ),
            (
                json!({"backupName": "daily-1", "namespaceMapping": {"shop": "Shop_2"}}),
                vec!["namespaceMapping shop: \"Shop_2\" is not a namespace name"],
            ),
            (
                json!({"backupName": "daily-1", "labelSelector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}}),
                vec!["labelSelector is not valid"],
            ),
            (
                json!({"backupName": "daily-1", "includedNamespaces": ["shop"], "namespaceMapping": {"shop": "kube-system"}}),
                vec!["kube-system"],
            ),
            (
                json!({"scheduleName": "weekly", "namespaceMapping": {"a": "B"}}),
                vec![
                    "schedule weekly has no Completed backup",
                    "\"B\" is not a namespace name",
                ],
            ),
        ];
        for (given, expected) in cases {
            let errors = validate(&spec(given.clone()), &backups, &denied).unwrap_err();
            assert_eq!(errors.len(), expected.len(), "{given}: {errors:?}");
            for (error, expected) in errors.iter().zip(expected) {
                assert!(
                    error.contains(expected),
                    "{given}: {error:?} lacks {expected:?}"
                );
            }
        }
    }
}
