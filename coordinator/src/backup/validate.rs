//! Starting a Backup: its spec and storage location checked, then InProgress, or
//! FailedValidation with every reason.

use std::time::Duration;

use ferry_shared::crd::{Backup, BackupStatus, OperationPhase};
use ferry_shared::layout::layout_problem;
use ferry_shared::retry::Retrier;
use ferry_shared::time::{after, now};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use kube::core::Selector;
use kube::runtime::controller::Action;
use serde_json::json;
use tracing::{info, warn};

use crate::context::{Context, ResolvedLocation, spec_duration};
use crate::error::Error;
use crate::hooks::plan::backup_spec_errors;

/// What the spec alone says is wrong.
pub fn spec_errors(backup: &Backup) -> Vec<String> {
    let spec = &backup.spec;
    let mut errors = Vec::new();
    for (value, field) in [(&spec.ttl, "ttl"), (&spec.volume_timeout, "volumeTimeout")] {
        if let Err(err) = spec_duration(value.as_deref(), field, Duration::ZERO) {
            errors.push(err);
        }
    }
    if let Some(selector) = &spec.label_selector
        && let Err(err) = Selector::try_from(selector.clone())
    {
        errors.push(format!("labelSelector is not valid: {err}"));
    }
    errors.extend(spec.hooks.iter().flat_map(backup_spec_errors));
    for namespace in spec
        .included_namespaces
        .iter()
        .chain(&spec.excluded_namespaces)
    {
        if namespace != "*" && !ferry_shared::storage::is_dns_label(namespace) {
            errors.push(format!("{namespace:?} is not a namespace name"));
        }
    }
    errors
}

/// A Backup that passed validation: the storage location it writes to.
struct ValidBackup {
    location: String,
    /// Whether the location is the default one, which the Backup did not name.
    by_default: bool,
}

/// Validates, then moves the Backup to InProgress, or to FailedValidation with the reasons.
pub(super) async fn start(backup: &Backup, ctx: &Context) -> Result<Action, Error> {
    let started = now();
    let ttl = spec_duration(
        backup.spec.ttl.as_deref(),
        "ttl",
        ctx.settings.default_backup_ttl,
    )
    .unwrap_or(ctx.settings.default_backup_ttl);
    let expiration = after(&started, ttl);
    let valid = match validate(backup, ctx).await? {
        Ok(valid) => valid,
        Err(errors) => {
            failed_validation(backup, ctx, errors, started, expiration).await?;
            return Ok(Action::await_change());
        }
    };
    let name = backup.name_any();
    if valid.by_default {
        // The default location becomes the backup's own, as if the user had named it.
        ctx.api::<Backup>()
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"storageLocation": valid.location}})),
            )
            .await?;
    }
    info!(%name, "backup started");
    let note = format!("backing up to storage location {}", valid.location);
    ctx.event(backup, false, "Started", note).await;
    let status = BackupStatus {
        phase: OperationPhase::InProgress,
        start_timestamp: Some(started),
        expiration: Some(expiration),
        ..BackupStatus::default()
    };
    ctx.apply_status(backup, &status).await?;
    Ok(Action::await_change())
}

/// The Backup's spec and storage location checked: valid, or every reason it is not.
async fn validate(
    backup: &Backup,
    ctx: &Context,
) -> Result<Result<ValidBackup, Vec<String>>, Error> {
    let mut errors = spec_errors(backup);
    let named = backup
        .spec
        .storage_location
        .clone()
        .filter(|name| !name.is_empty());
    let by_default = named.is_none();
    let location = match named {
        Some(name) => Some(name),
        None => match ctx.default_location().await? {
            Ok(name) => Some(name),
            Err(err) => {
                errors.push(err);
                None
            }
        },
    };
    if let Some(name) = &location {
        match ctx.location(name).await? {
            Err(err) => errors.push(err.to_string()),
            Ok(location) if location.read_only() => errors.push(format!(
                "storage location {name} is ReadOnly; backups cannot be written to it"
            )),
            Ok(location) => {
                if let Err(err) = writable(&location, &backup.name_any(), &ctx.store_retrier).await
                {
                    errors.push(err);
                }
            }
        }
    }
    Ok(match location {
        Some(location) if errors.is_empty() => Ok(ValidBackup {
            location,
            by_default,
        }),
        _ => Err(errors),
    })
}

/// Ends the Backup FailedValidation with the reasons.
async fn failed_validation(
    backup: &Backup,
    ctx: &Context,
    errors: Vec<String>,
    started: Time,
    expiration: Time,
) -> Result<(), Error> {
    warn!(name = %backup.name_any(), ?errors, "backup failed validation");
    ctx.event(backup, true, "FailedValidation", errors.join("; "))
        .await;
    let status = BackupStatus {
        phase: OperationPhase::FailedValidation,
        validation_errors: errors,
        completion_timestamp: Some(started),
        expiration: Some(expiration),
        ..BackupStatus::default()
    };
    ctx.apply_status(backup, &status).await?;
    ctx.metrics
        .backup_ended(OperationPhase::FailedValidation, 0.0);
    Ok(())
}

/// Whether the backup `name` may be written to the location: it answers, holds Ferry's layout
/// and no backup of that name.
async fn writable(
    location: &ResolvedLocation,
    name: &str,
    retrier: &Retrier,
) -> Result<(), String> {
    let store = location.store(retrier).map_err(|err| err.to_string())?;
    let location = location.name();
    let unreachable = |err: ferry_shared::layout::StoreError| {
        format!("storage location {location} is unreachable: {err}")
    };
    let top_level = store.top_level().await.map_err(unreachable)?;
    if let Some(problem) = layout_problem(&top_level) {
        return Err(format!(
            "storage location {location} is unusable: {problem}"
        ));
    }
    if store.has_backup(name).await.map_err(unreachable)? {
        return Err(format!(
            "a backup named {name} already exists in storage location {location}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn backup(spec: serde_json::Value) -> Backup {
        serde_json::from_value(json!({
            "apiVersion": "ferry.dev/v1alpha1",
            "kind": "Backup",
            "metadata": {"name": "b"},
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn a_spec_is_refused_for_each_bad_field_with_its_name() {
        let cases = [
            (json!({}), vec![]),
            (json!({"ttl": "72h", "volumeTimeout": "30m"}), vec![]),
            (
                json!({"ttl": "forever"}),
                vec!["ttl \"forever\" is not a duration such as 720h"],
            ),
            (
                json!({"volumeTimeout": "soon"}),
                vec!["volumeTimeout \"soon\" is not a duration"],
            ),
            (
                json!({"labelSelector": {"matchExpressions": [{"key": "app", "operator": "Near"}]}}),
                vec!["labelSelector is not valid"],
            ),
            (
                json!({"includedNamespaces": ["shop", "*", "Bad_Name"], "excludedNamespaces": ["x/y"]}),
                vec![
                    "\"Bad_Name\" is not a namespace name",
                    "\"x/y\" is not a namespace name",
                ],
            ),
            (
                json!({"ttl": "1 fortnight", "includedNamespaces": ["-"]}),
                vec!["ttl \"1 fortnight\"", "\"-\" is not a namespace name"],
            ),
        ];
        for (spec, expected) in cases {
            let errors = spec_errors(&backup(spec.clone()));
            assert_eq!(errors.len(), expected.len(), "{spec}: {errors:?}");
            for (error, expected) in errors.iter().zip(expected) {
                assert!(
                    error.contains(expected),
                    "{spec}: {error:?} lacks {expected:?}"
                );
            }
        }
    }
}
