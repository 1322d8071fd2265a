//! A backup's hooks around each pod: its pre hooks before its PodVolumeBackups are created (a
//! failed `Fail` hook leaves its volumes out), its post hooks once every transfer of its
//! volumes has ended, whatever their outcome, or when the backup ends some other way. The
//! status records each step before the next, so that no hook runs twice and no post hook is
//! forgotten.

use std::collections::BTreeMap;

use ferry_shared::crd::{
    Backup, BackupStatus, HookErrorMode, HookPhase, PodReference, PodVolumeBackup, PodVolumePhase,
    PodVolumeTransfer, PreHooksEnd, SkippedVolume,
};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::Api;

use crate::context::Context;
use crate::error::Error;
use crate::hooks::plan::{InvalidHook, backup_hooks};
use crate::hooks::report::{Report, not_run, run_in_order};
use crate::plan::VolumeChoice;

/// Pods whose hooks run at once.
const POD_CONCURRENCY: usize = 8;

/// Why a pod's volumes are left out when its pre hook failed.
pub const BLOCKED: &str = "a pre hook of the pod failed";

/// Runs the pre hooks of the pods that have not run them yet. The status records first the
/// pods whose post hooks are due however the backup ends, then how each pod's pre hooks ended.
pub(super) async fn run_pre_hooks(
    backup: &Backup,
    ctx: &Context,
    pods: &[Pod],
    mut status: BackupStatus,
) -> Result<BackupStatus, Error> {
    let hooks = backup.spec.hooks.as_ref();
    let ran = &status.hooks.pre_hooks_ran;
    let due: Vec<_> = (pods.iter())
        .filter(|pod| !ran.contains_key(&pod.uid().unwrap_or_default()))
        .map(|pod| (pod, backup_hooks(pod, HookPhase::Pre, hooks)))
        .filter(|(_, pre)| !pre.is_empty())
        .collect();
    let pending: Vec<PodReference> = (pods.iter())
        .filter(|pod| !backup_hooks(pod, HookPhase::Post, hooks).is_empty())
        .map(reference)
        .collect();
    if due.is_empty() && status.hooks.pending_post_hooks == pending {
        return Ok(status);
    }
    status.hooks.pending_post_hooks = pending;
    ctx.apply_status(backup, &status).await?;
    let runs: Vec<_> = (due.into_iter())
        .map(|(pod, pre)| async move {
            let report = run_in_order(&ctx.client, &ctx.metrics, pod, HookPhase::Pre, pre).await;
            (pod.uid().unwrap_or_default(), report)
        })
        .collect();
    let ended: Vec<(String, Report)> = futures::stream::iter(runs)
        .buffered(POD_CONCURRENCY)
        .collect()
        .await;
    for (uid, report) in ended {
        let end = match report.failed() {
            true => PreHooksEnd::Blocked,
            false => PreHooksEnd::Passed,
        };
        status.hooks.pre_hooks_ran.insert(uid, end);
        report.record(&mut status.hooks, &mut status.errors, &mut status.warnings);
    }
    ctx.apply_status(backup, &status).await?;
    Ok(status)
}

/// `choice` with the volumes of the pods whose pre hooks failed moved to its skipped volumes.
pub(super) fn leave_out_blocked(
    choice: VolumeChoice,
    ran: &BTreeMap<String, PreHooksEnd>,
) -> VolumeChoice {
    let blocked = |uid: &String| ran.get(uid) == Some(&PreHooksEnd::Blocked);
    let (left_out, chosen): (Vec<_>, Vec<_>) =
        (choice.chosen.into_iter()).partition(|volume| blocked(&volume.pod.uid));
    let mut skipped = choice.skipped;
    skipped.extend(left_out.into_iter().map(|volume| SkippedVolume {
        pod: format!("{}/{}", volume.pod.namespace, volume.pod.name),
        volume: volume.volume,
        reason: BLOCKED.to_owned(),
    }));
    VolumeChoice { chosen, skipped }
}

fn reference(pod: &Pod) -> PodReference {
    PodReference {
        namespace: pod.namespace().unwrap_or_default(),
        name: pod.name_any(),
        uid: pod.uid().unwrap_or_default(),
    }
}

/// Runs the post hooks of the pending pods none of whose transfers among `pvbs` is still to
/// end, and records them in `next` and in the Backup's status before anything else happens.
pub(super) async fn run_due_post_hooks(
    backup: &Backup,
    ctx: &Context,
    next: &mut BackupStatus,
    pvbs: &[PodVolumeBackup],
) -> Result<(), Error> {
    let due = transfers_ended(&next.hooks.pending_post_hooks, pvbs);
    if due.is_empty() {
        return Ok(());
    }
    let (report, done) = run_post_hooks(backup, ctx, &due, false).await;
    next.hooks
        .pending_post_hooks
        .retain(|pod| !done.contains(pod));
    report.record(&mut next.hooks, &mut next.errors, &mut next.warnings);
    Ok(ctx.apply_status(backup, next).await?)
}

/// Runs the post hooks of every pending pod, the backup ending before their transfers did.
pub(super) async fn run_post_hooks_now(backup: &Backup, ctx: &Context, status: &mut BackupStatus) {
    let pending = std::mem::take(&mut status.hooks.pending_post_hooks);
    if pending.is_empty() {
        return;
    }
    let (report, _) = run_post_hooks(backup, ctx, &pending, true).await;
    report.record(&mut status.hooks, &mut status.errors, &mut status.warnings);
}

/// Runs the post hooks still pending of a Backup that is being deleted before it ended, as
/// its status says now.
pub(super) async fn run_post_hooks_on_deletion(
    backup: &Backup,
    ctx: &Context,
) -> Result<(), Error> {
    let Some(current) = ctx.api::<Backup>().get_opt(&backup.name_any()).await? else {
        return Ok(());
    };
    let mut status = current.status.clone().unwrap_or_default();
    if status.hooks.pending_post_hooks.is_empty() {
        return Ok(());
    }
    run_post_hooks_now(&current, ctx, &mut status).await;
    Ok(ctx.apply_status(&current, &status).await?)
}

/// The pods of `pending` none of whose transfers among `pvbs` is still to end.
fn transfers_ended(pending: &[PodReference], pvbs: &[PodVolumeBackup]) -> Vec<PodReference> {
    let running = |pod: &PodReference| {
        pvbs.iter().any(|pvb| {
            pvb.pod().uid == pod.uid
                && matches!(
                    pvb.status.as_ref().map(|s| s.phase).unwrap_or_default(),
                    PodVolumePhase::New | PodVolumePhase::InProgress
                )
        })
    };
    pending
        .iter()
        .filter(|pod| !running(pod))
        .cloned()
        .collect()
}

/// Runs the post hooks of `pods`, as their annotations and the backup's spec say now; returns
/// their runs and the pods done. A pod that cannot be read is done only on the `last_chance`.
async fn run_post_hooks(
    backup: &Backup,
    ctx: &Context,
    pods: &[PodReference],
    last_chance: bool,
) -> (Report, Vec<PodReference>) {
    let runs: Vec<_> = (pods.iter())
        .map(|pod| post_hooks_of(backup, ctx, pod, last_chance))
        .collect();
    let ended: Vec<Option<(PodReference, Report)>> = futures::stream::iter(runs)
        .buffered(POD_CONCURRENCY)
        .collect()
        .await;
    let mut all = Report::default();
    let mut done = Vec::new();
    for (pod, report) in ended.into_iter().flatten() {
        all.merge(report);
        done.push(pod);
    }
    (all, done)
}

async fn post_hooks_of(
    backup: &Backup,
    ctx: &Context,
    reference: &PodReference,
    last_chance: bool,
) -> Option<(PodReference, Report)> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &reference.namespace);
    let (why, on_error) = match api.get_opt(&reference.name).await {
        Ok(Some(pod)) if pod.uid().as_deref() == Some(reference.uid.as_str()) => {
            let post = backup_hooks(&pod, HookPhase::Post, backup.spec.hooks.as_ref());
            let report = run_in_order(&ctx.client, &ctx.metrics, &pod, HookPhase::Post, post);
            return Some((reference.clone(), report.await));
        }
        // Nothing is left to release in a pod that is gone: a warning.
        Ok(_) => ("the pod is gone".to_owned(), HookErrorMode::Continue),
        Err(err) if last_chance => (format!("cannot read the pod: {err}"), HookErrorMode::Fail),
        Err(_) => return None,
    };
    let invalid = InvalidHook {
        source: "pod".to_owned(),
        on_error,
        message: format!("its post hooks could not run: {why}"),
    };
    let name = format!("{}/{}", reference.namespace, reference.name);
    let mut report = Report::default();
    report.add(
        &ctx.metrics,
        not_run(&name, HookPhase::Post, &invalid),
        on_error,
    );
    Some((reference.clone(), report))
}

#[cfg(test)]
mod tests {
    use ferry_shared::crd::PodReference;

    use super::*;
    use crate::plan::ChosenVolume;

    fn volume(pod: &str, uid: &str, volume: &str) -> ChosenVolume {
        ChosenVolume {
            pod: PodReference {
                namespace: "shop".to_owned(),
                name: pod.to_owned(),
                uid: uid.to_owned(),
            },
            node: "n1".to_owned(),
            volume: volume.to_owned(),
            claim: None,
        }
    }

    #[test]
    fn the_volumes_of_blocked_pods_are_left_out_with_the_reason() {
        let choice = VolumeChoice {
            chosen: vec![
                volume("db", "u1", "data"),
                volume("db", "u1", "wal"),
                volume("web", "u2", "cache"),
                volume("cache", "u3", "data"),
            ],
            skipped: vec![],
        };
        let ran = BTreeMap::from([
            ("u1".to_owned(), PreHooksEnd::Blocked),
            ("u2".to_owned(), PreHooksEnd::Passed),
        ]);
        let choice = leave_out_blocked(choice, &ran);
        let chosen: Vec<&str> = (choice.chosen.iter())
            .map(|v| v.pod.name.as_str())
            .collect();
        assert_eq!(chosen, ["web", "cache"]);
        let skipped: Vec<String> = choice.skipped.iter().map(ToString::to_string).collect();
        assert_eq!(
            skipped,
            [
                "volume data of pod shop/db skipped: a pre hook of the pod failed",
                "volume wal of pod shop/db skipped: a pre hook of the pod failed",
            ]
        );
    }
}
