//! Following a backup's PodVolumeBackups to its end: the sum of their progress, the stored
//! record of the backup in the location, and the end it reaches.

use std::time::Duration;

use ferry_shared::crd::{
    Backup, BackupProgress, BackupStatus, HookPhase, OperationPhase, PodVolumeBackup,
};
use ferry_shared::layout::{self, key};
use ferry_shared::names::label;
use ferry_shared::time::{now, unix_seconds};
use kube::api::ListParams;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use super::expire::expire_when_due;
use super::hooks::{run_due_post_hooks, run_post_hooks_now};
use crate::context::{Context, ResolvedLocation, spec_duration};
use crate::error::{Error, StorageError};
use crate::hooks::report::{log_lines, unkept};
use crate::overdue::{Tally, tally};
use crate::plan::union;

/// How soon the post hooks of a pod that could not be read are tried again.
const POST_HOOKS_RETRY: Duration = Duration::from_secs(10);

/// Ends the backup Failed, removing whatever it wrote to the location.
pub(super) async fn fail(
    backup: &Backup,
    ctx: &Context,
    status: BackupStatus,
    error: String,
) -> Result<Action, Error> {
    let name = backup.name_any();
    warn!(%name, %error, "backup failed");
    if let Ok(Ok(location)) = ctx
        .location(backup.spec.storage_location.as_deref().unwrap_or_default())
        .await
        && let Ok(store) = location.store(&ctx.store_retrier)
        && let Err(err) = store.delete_dir(&key::backup_dir(&name)).await
    {
        warn!(%name, %err, "cannot remove the failed backup's objects");
    }
    ctx.event(backup, true, "Failed", error.clone()).await;
    let mut status = status;
    run_post_hooks_now(backup, ctx, &mut status).await;
    let mut errors = status.errors.clone();
    errors.push(error);
    let status = BackupStatus {
        phase: OperationPhase::Failed,
        completion_timestamp: Some(now()),
        errors,
        ..status
    };
    ctx.apply_status(backup, &status).await?;
    record_end(ctx, &status);
    Ok(Action::await_change())
}

fn record_end(ctx: &Context, status: &BackupStatus) {
    let seconds = |time: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
        time.as_ref().map(unix_seconds).unwrap_or_default()
    };
    let finished = seconds(&status.completion_timestamp);
    ctx.metrics
        .backup_ended(status.phase, finished - seconds(&status.start_timestamp));
}

/// Sums the backup's PodVolumeBackups into its status, stopping those past their time, and
/// ends the backup once every one has ended.
pub(super) async fn watch(
    backup: &Backup,
    ctx: &Context,
    location: &ResolvedLocation,
    status: BackupStatus,
) -> Result<Action, Error> {
    let Tally {
        kept,
        timed_out,
        sum,
        next_deadline,
    } = tally_transfers(backup, ctx, &status).await?;
    let mut next = BackupStatus {
        pod_volume_backups: Some(sum.counts.clone()),
        progress: Some(BackupProgress {
            volumes: sum.progress.clone(),
            ..status.progress.clone().unwrap_or_default()
        }),
        warnings: union(status.warnings.clone(), sum.warnings.clone()),
        timed_out_volumes: timed_out,
        ..status.clone()
    };
    run_due_post_hooks(backup, ctx, &mut next, &kept).await?;
    if !sum.finished() || !next.hooks.pending_post_hooks.is_empty() {
        if next != status {
            ctx.apply_status(backup, &next).await?;
        }
        // With every transfer ended, only post hooks of pods that could not be read are left.
        return Ok(match (sum.finished(), next_deadline) {
            (true, _) => Action::requeue(POST_HOOKS_RETRY),
            (false, Some(due)) => Action::requeue(due),
            (false, None) => Action::await_change(),
        });
    }
    next.completion_timestamp = Some(now());
    next.errors = union(next.errors, sum.errors.clone());
    next.phase = sum.final_phase(&next.errors);
    let mut finished = backup.clone();
    finished.status = Some(next.clone());
    if let Err(err) = write_backup(&finished, &kept, location, ctx).await {
        let location = location.name();
        let message = format!("cannot write the backup to storage location {location}: {err}");
        return fail(backup, ctx, next, message).await;
    }
    info!(name = %backup.name_any(), phase = ?next.phase, "backup finished");
    let note = format!(
        "{} of {} volume(s) backed up",
        sum.counts.completed, sum.counts.total
    );
    let warning = next.phase != OperationPhase::Completed;
    ctx.event(backup, warning, &format!("{:?}", next.phase), note)
        .await;
    ctx.apply_status(backup, &next).await?;
    record_end(ctx, &next);
    expire_when_due(&finished, ctx).await
}

/// The backup's PodVolumeBackups, those past the volume timeout stopped, and their sum.
async fn tally_transfers(
    backup: &Backup,
    ctx: &Context,
    status: &BackupStatus,
) -> Result<Tally<PodVolumeBackup>, Error> {
    let uid = backup.uid().unwrap_or_default();
    let api = ctx.api::<PodVolumeBackup>();
    let selector = format!("{}={uid}", label::BACKUP_UID);
    let pvbs = api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items;
    let timeout = spec_duration(
        backup.spec.volume_timeout.as_deref(),
        "volumeTimeout",
        ctx.settings.default_volume_timeout,
    )
    .unwrap_or(ctx.settings.default_volume_timeout);
    let planned = (status.pod_volume_backups.as_ref()).map_or(0, |counts| counts.total);
    let stopped = |volume: &str| {
        let timeout = humantime::format_duration(timeout);
        format!("volume {volume} timed out after {timeout}")
    };
    let recorded = &status.timed_out_volumes;
    Ok(tally(&api, pvbs, timeout, planned, recorded, stopped).await?)
}

/// The backup's log: what was chosen and skipped, and how each volume went.
fn backup_log(backup: &Backup, pvbs: &[PodVolumeBackup]) -> String {
    let status = backup.status.clone().unwrap_or_default();
    let time = |t: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
        t.as_ref().map(|t| t.0.to_string()).unwrap_or_default()
    };
    let mut lines = vec![format!(
        "{} backup {} started, storage location {}",
        time(&status.start_timestamp),
        backup.name_any(),
        backup.spec.storage_location.as_deref().unwrap_or_default()
    )];
    let items = status.progress.as_ref().map_or(0, |p| p.items_backed_up);
    lines.push(format!(
        "{items} object(s) written to the backup's resources"
    ));
    lines.extend(status.warnings.iter().map(|w| format!("warning: {w}")));
    let hooks = &status.hooks.hook_runs;
    let (pre, post): (Vec<_>, Vec<_>) = hooks.iter().partition(|run| run.phase == HookPhase::Pre);
    lines.extend(pre.into_iter().flat_map(log_lines));
    for pvb in pvbs {
        let pvb_status = pvb.status.clone().unwrap_or_default();
        let progress = pvb_status.progress.unwrap_or_default();
        lines.push(format!(
            "{} volume {} of pod {}/{}: {:?}, snapshot {}, {} bytes in {} files{}",
            time(&pvb_status.completion_timestamp),
            pvb.spec.volume,
            pvb.spec.pod.namespace,
            pvb.spec.pod.name,
            pvb_status.phase,
            pvb_status.snapshot_id.as_deref().unwrap_or("none"),
            progress.total_bytes,
            progress.total_files,
            pvb_status
                .message
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        ));
    }
    lines.extend(post.into_iter().flat_map(log_lines));
    lines.extend(unkept(&status.hooks));
    lines.extend(status.errors.iter().map(|e| format!("error: {e}")));
    lines.push(format!(
        "{} backup {} ended {:?}",
        time(&status.completion_timestamp),
        backup.name_any(),
        status.phase
    ));
    lines.join("\n") + "\n"
}

/// Writes the PodVolumeBackup list, the log and, last, the Backup itself.
async fn write_backup(
    backup: &Backup,
    pvbs: &[PodVolumeBackup],
    location: &ResolvedLocation,
    ctx: &Context,
) -> Result<(), StorageError> {
    let name = backup.name_any();
    let store = location.store(&ctx.store_retrier)?;
    let list = serde_json::to_vec(pvbs).map_err(StorageError::json("the PodVolumeBackups"))?;
    let metadata = serde_json::to_vec_pretty(&stored_backup(backup))
        .map_err(StorageError::json("the Backup"))?;
    store
        .put(&key::pod_volume_backups(&name), layout::gzip(&list))
        .await?;
    store
        .put(
            &key::backup_logs(&name),
            layout::gzip(backup_log(backup, pvbs).as_bytes()),
        )
        .await?;
    Ok(store.put(&key::backup_metadata(&name), metadata).await?)
}

/// The Backup as the location keeps it: name, labels, spec and status.
fn stored_backup(backup: &Backup) -> serde_json::Value {
    json!({
        "apiVersion": Backup::api_version(&()),
        "kind": Backup::kind(&()),
        "metadata": {
            "name": backup.name_any(),
            "labels": backup.labels(),
            "uid": backup.uid(),
        },
        "spec": backup.spec,
        "status": backup.status,
    })
}
