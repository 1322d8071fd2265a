//! Starting a Backup: its spec and storage location checked, then InProgress, or
//! FailedValidation with every reason.

use ferry_shared::crd::{Backup, BackupStatus, OperationPhase};
use ferry_shared::layout::layout_problem;
use ferry_shared::retry::Retrier;
use ferry_shared::time::{after, now};
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use kube::core::Selector;
use kube::runtime::controller::Action;
use serde_json::json;
use tracing::{info, warn};

use super::finish::schedule_of;
use crate::context::{Context, ResolvedLocation, spec_duration};
use crate::error::Error;

/// What the spec alone says is wrong.
pub fn spec_errors(backup: &Backup, settings: &crate::config::RunArgs) -> Vec<String> {
    let spec = &backup.spec;
    let mut errors = Vec::new();
    if let Err(err) = spec_duration(spec.ttl.as_deref(), "ttl", settings.default_backup_ttl) {
        errors.push(err);
    }
    if let Err(err) = spec_duration(
        spec.volume_timeout.as_deref(),
        "volumeTimeout",
        settings.default_volume_timeout,
    ) {
        errors.push(err);
    }
    if let Some(selector) = &spec.label_selector
        && let Err(err) = Selector::try_from(selector.clone())
    {
        errors.push(format!("labelSelector is not valid: {err}"));
    }
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

/// Validates, then moves the Backup to InProgress, or to FailedValidation with the reasons.
pub(super) async fn start(backup: &Backup, ctx: &Context) -> Result<Action, Error> {
    let name = backup.name_any();
    let mut errors = spec_errors(backup, &ctx.settings);
    let location_name = match &backup.spec.storage_location {
        Some(location) if !location.is_empty() => Some(location.clone()),
        _ => match ctx.default_location().await? {
            Ok(location) => Some(location),
            Err(err) => {
                errors.push(err);
                None
            }
        },
    };
    if let Some(location_name) = &location_name {
        match ctx.location(location_name).await? {
            Err(err) => errors.push(err.to_string()),
            Ok(location) if location.read_only() => errors.push(format!(
                "storage location {location_name} is ReadOnly; backups cannot be written to it"
            )),
            Ok(location) => {
                if let Err(err) = writable(&location, &name, &ctx.store_retrier).await {
                    errors.push(err);
                }
            }
        }
    }
    let started = now();
    let ttl = spec_duration(
        backup.spec.ttl.as_deref(),
        "ttl",
        ctx.settings.default_backup_ttl,
    )
    .unwrap_or(ctx.settings.default_backup_ttl);
    let expiration = Some(after(&started, ttl));
    if !errors.is_empty() {
        warn!(%name, ?errors, "backup failed validation");
        ctx.event(backup, true, "FailedValidation", errors.join("; "))
            .await;
        ctx.apply_status(
            backup,
            &BackupStatus {
                phase: OperationPhase::FailedValidation,
                validation_errors: errors,
                completion_timestamp: Some(started),
                expiration,
                ..BackupStatus::default()
            },
        )
        .await?;
        ctx.metrics.backup_ended(
            OperationPhase::FailedValidation,
            0.0,
            &schedule_of(backup),
            0.0,
        );
        return Ok(Action::await_change());
    }
    if backup
        .spec
        .storage_location
        .as_deref()
        .unwrap_or_default()
        .is_empty()
    {
        // The default location becomes the backup's own, as if the user had named it.
        ctx.api::<Backup>()
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"storageLocation": location_name}})),
            )
            .await?;
    }
    info!(%name, "backup started");
    ctx.event(
        backup,
        false,
        "Started",
        format!(
            "backing up to storage location {}",
            location_name.unwrap_or_default()
        ),
    )
    .await;
    ctx.apply_status(
        backup,
        &BackupStatus {
            phase: OperationPhase::InProgress,
            start_timestamp: Some(started),
            expiration,
            ..BackupStatus::default()
        },
    )
    .await?;
    Ok(Action::await_change())
}

/// Whether the backup `name` may be written to the location: it answers, holds Ferry's layout
/// and no backup of that name.
pub(super) async fn writable(
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
