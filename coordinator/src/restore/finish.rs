//! Following a restore's PodVolumeRestores to its end, and writing its log to the location.

use std::time::Duration;

use ferry_shared::crd::{
    Backup, OperationPhase, PodVolumeRestore, Restore, RestoreProgress, RestoreStatus,
};
use ferry_shared::layout::{self, key};
use ferry_shared::names::label;
use ferry_shared::time::now;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use serde_json::json;
use tracing::{info, warn};

use super::hooks::run_ready;
use crate::context::Context;
use crate::error::{Error, StorageError};
use crate::hooks::report::records_log;
use crate::overdue::{Tally, tally};
use crate::plan::union;

/// How often a restore looks again at pods whose hooks wait for their containers.
const HOOK_WAIT_CHECK: Duration = Duration::from_secs(5);

/// Labels each PodVolumeRestore for its pod's node once the pod is bound, sums them into the
/// restore's status, stopping those past their time, and ends the restore once every one has
/// ended.
pub(super) async fn watch(
    restore: &Restore,
    ctx: &Context,
    status: RestoreStatus,
) -> Result<Action, Error> {
    let uid = restore.uid().unwrap_or_default();
    let api = ctx.api::<PodVolumeRestore>();
    let selector = format!("{}={uid}", label::RESTORE_UID);
    let pvrs = api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items;
    label_for_nodes(ctx, &api, &pvrs).await?;
    let limit = ctx.settings.default_volume_timeout;
    let planned = status
        .pod_volume_restores
        .as_ref()
        .map_or(0, |counts| counts.total);
    let Tally {
        kept: pvrs,
        timed_out,
        sum,
        next_deadline,
    } = tally(
        &api,
        pvrs,
        limit,
        planned,
        &status.timed_out_volumes,
        |volume| {
            let limit = humantime::format_duration(limit);
            format!("volume {volume} was not restored within {limit}")
        },
    )
    .await?;
    let mut next = RestoreStatus {
        pod_volume_restores: Some(sum.counts.clone()),
        progress: Some(RestoreProgress {
            volumes: sum.progress.clone(),
            ..status.progress.clone().unwrap_or_default()
        }),
        warnings: union(status.warnings.clone(), sum.warnings.clone()),
        timed_out_volumes: timed_out,
        ..status.clone()
    };
    run_post_restore_hooks(restore, ctx, &mut next, &pvrs).await?;
    if !sum.finished() || !next.hooks.pending_post_hooks.is_empty() {
        if next != status {
            ctx.apply_status(restore, &next).await?;
        }
        // Pods are watched too; this is only a safety net for a missed binding, and the clock
        // of hooks that wait for their containers.
        let safety_net = match next.hooks.pending_post_hooks.is_empty() {
            true => Duration::from_secs(30),
            false => HOOK_WAIT_CHECK,
        };
        return Ok(Action::requeue(
            next_deadline.map_or(safety_net, |due| due.min(safety_net)),
        ));
    }
    next.completion_timestamp = Some(now());
    next.errors.extend(sum.errors.clone());
    next.phase = sum.final_phase(&next.errors);
    upload_log(restore, ctx, &next, &pvrs).await;
    info!(name = %restore.name_any(), phase = ?next.phase, "restore finished");
    let note = format!(
        "{} of {} volume(s) restored",
        sum.counts.completed, sum.counts.total
    );
    let warning = next.phase != OperationPhase::Completed;
    ctx.event(restore, warning, &format!("{:?}", next.phase), note)
        .await;
    ctx.apply_status(restore, &next).await?;
    ctx.metrics.restore_ended(next.phase);
    Ok(Action::await_change())
}

/// Runs the hooks of the restored pods that are ready for them, and records how they went in
/// `next` and, before anything else happens, in the Restore's status.
async fn run_post_restore_hooks(
    restore: &Restore,
    ctx: &Context,
    next: &mut RestoreStatus,
    pvrs: &[PodVolumeRestore],
) -> Result<(), Error> {
    if next.hooks.pending_post_hooks.is_empty() {
        return Ok(());
    }
    let pass = run_ready(restore, ctx, &next.hooks.pending_post_hooks, pvrs).await;
    if pass.done.is_empty() {
        return Ok(());
    }
    next.hooks
        .pending_post_hooks
        .retain(|pod| !pass.done.contains(pod));
    (pass.report).record(&mut next.hooks, &mut next.errors, &mut next.warnings);
    Ok(ctx.apply_status(restore, next).await?)
}

/// Labels the PodVolumeRestores not yet labelled with their pod's node, once the pod is bound,
/// so that the node agent there takes them up.
async fn label_for_nodes(
    ctx: &Context,
    api: &Api<PodVolumeRestore>,
    pvrs: &[PodVolumeRestore],
) -> Result<(), Error> {
    for pvr in pvrs {
        if pvr.labels().contains_key(label::NODE) {
            continue;
        }
        let pods = Api::<Pod>::namespaced(ctx.client.clone(), &pvr.spec.pod.namespace);
        let node = pods
            .get_opt(&pvr.spec.pod.name)
            .await?
            .filter(|pod| pod.uid().as_deref() == Some(pvr.spec.pod.uid.as_str()))
            .and_then(|pod| pod.spec.and_then(|spec| spec.node_name));
        if let Some(node) = node {
            api.patch(
                &pvr.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {label::NODE: node}}})),
            )
            .await?;
        }
    }
    Ok(())
}

async fn upload_log(
    restore: &Restore,
    ctx: &Context,
    status: &RestoreStatus,
    pvrs: &[PodVolumeRestore],
) {
    let name = restore.name_any();
    let Some(backup) = status.backup_name.as_deref() else {
        return;
    };
    let Ok(Some(backup)) = ctx.api::<Backup>().get_opt(backup).await else {
        return;
    };
    let Ok(Ok(location)) = ctx
        .location(backup.spec.storage_location.as_deref().unwrap_or_default())
        .await
    else {
        return;
    };
    if location.read_only() {
        return;
    }
    let items = status.progress.as_ref().map_or(0, |p| p.items_restored);
    let mut lines = vec![
        format!("restore {name} from backup {}", backup.name_any()),
        format!("{items} object(s) restored; the results list each"),
    ];
    lines.extend(status.warnings.iter().map(|w| format!("warning: {w}")));
    for pvr in pvrs {
        let pvr_status = pvr.status.clone().unwrap_or_default();
        lines.push(format!(
            "volume {} of pod {}/{} from snapshot {}: {:?}{}",
            pvr.spec.volume,
            pvr.spec.pod.namespace,
            pvr.spec.pod.name,
            pvr.spec.snapshot_id,
            pvr_status.phase,
            pvr_status
                .message
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        ));
    }
    lines.extend(records_log(&status.hooks));
    lines.extend(status.errors.iter().map(|e| format!("error: {e}")));
    lines.push(format!("restore {name} ended {:?}", status.phase));
    let upload = async {
        let store = location.store(&ctx.store_retrier)?;
        let log = layout::gzip((lines.join("\n") + "\n").as_bytes());
        Ok::<_, StorageError>(store.put(&key::restore_logs(&name), log).await?)
    };
    if let Err(err) = upload.await {
        warn!(%name, %err, "cannot write the restore log");
    }
}

pub(super) async fn fail(
    restore: &Restore,
    ctx: &Context,
    status: RestoreStatus,
    error: String,
) -> Result<Action, Error> {
    warn!(name = %restore.name_any(), %error, "restore failed");
    ctx.event(restore, true, "Failed", error.clone()).await;
    let mut errors = status.errors.clone();
    errors.push(error);
    ctx.apply_status(
        restore,
        &RestoreStatus {
            phase: OperationPhase::Failed,
            completion_timestamp: Some(now()),
            errors,
            ..status
        },
    )
    .await?;
    ctx.metrics.restore_ended(OperationPhase::Failed);
    Ok(Action::await_change())
}
