//! A backup's hooks around each pod: its pre hooks before its PodVolumeBackups are created
//! (a failed `Fail` hook leaves its volumes out), its post hooks once every transfer of its
//! volumes has ended, whatever their outcome.

use std::collections::BTreeMap;

use ferry_shared::crd::{
    Backup, HookErrorMode, HookPhase, PodReference, PodVolumeBackup, PodVolumePhase,
    PodVolumeTransfer, SkippedVolume,
};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, PostParams};

use crate::context::Context;
use crate::error::Error;
use crate::hooks::plan::{InvalidHook, Planned, backup_hooks};
use crate::hooks::report::{Report, not_run, run_in_order};

/// Pods whose hooks or volume backups start at once.
const POD_CONCURRENCY: usize = 8;

/// What starting the pods did.
#[derive(Debug, Default)]
pub(super) struct Started {
    /// PodVolumeBackups created.
    pub created: usize,
    /// The pre hooks' runs.
    pub report: Report,
    /// Pods whose post hooks are to run once their transfers have ended.
    pub pending_post: Vec<PodReference>,
    /// Volumes left out because their pod's pre hook failed.
    pub blocked: Vec<SkippedVolume>,
}

/// Starts each pod of the backup: its pre hooks, then, unless one failed under `Fail`, the
/// creation of its PodVolumeBackups in `to_create` (by pod UID). A pod whose volume backups
/// an earlier pass created runs no pre hooks again.
pub(super) async fn start_pods(
    backup: &Backup,
    ctx: &Context,
    pods: &[Pod],
    mut to_create: BTreeMap<String, Vec<PodVolumeBackup>>,
    started_before: &[String],
) -> Result<Started, Error> {
    let hooks = backup.spec.hooks.as_ref();
    let mut started = Started::default();
    let mut work = Vec::new();
    for pod in pods {
        let uid = pod.uid().unwrap_or_default();
        let pvbs = to_create.remove(&uid).unwrap_or_default();
        let pre = match started_before.contains(&uid) {
            true => Vec::new(),
            false => backup_hooks(pod, HookPhase::Pre, hooks),
        };
        if !backup_hooks(pod, HookPhase::Post, hooks).is_empty() {
            started.pending_post.push(reference(pod));
        }
        if !pre.is_empty() || !pvbs.is_empty() {
            work.push((pod, pre, pvbs));
        }
    }
    let api = ctx.api::<PodVolumeBackup>();
    let starts: Vec<_> = (work.into_iter())
        .map(|(pod, pre, pvbs)| start_pod(ctx, &api, pod, pre, pvbs))
        .collect();
    let results: Vec<PodStart> = futures::stream::iter(starts)
        .buffered(POD_CONCURRENCY)
        .try_collect()
        .await?;
    for result in results {
        started.created += result.created;
        started.report.merge(result.report);
        started.blocked.extend(result.blocked);
    }
    Ok(started)
}

struct PodStart {
    created: usize,
    report: Report,
    blocked: Vec<SkippedVolume>,
}

async fn start_pod(
    ctx: &Context,
    api: &Api<PodVolumeBackup>,
    pod: &Pod,
    pre: Vec<Planned>,
    pvbs: Vec<PodVolumeBackup>,
) -> Result<PodStart, Error> {
    let report = run_in_order(&ctx.client, &ctx.metrics, pod, HookPhase::Pre, pre).await;
    if report.failed() {
        let blocked = (pvbs.iter())
            .map(|pvb| SkippedVolume {
                pod: format!("{}/{}", pvb.spec.pod.namespace, pvb.spec.pod.name),
                volume: pvb.spec.volume.clone(),
                reason: "a pre hook of the pod failed".to_owned(),
            })
            .collect();
        return Ok(PodStart {
            created: 0,
            report,
            blocked,
        });
    }
    let created = pvbs.len();
    for pvb in pvbs {
        api.create(&PostParams::default(), &pvb).await?;
    }
    Ok(PodStart {
        created,
        report,
        blocked: Vec::new(),
    })
}

fn reference(pod: &Pod) -> PodReference {
    PodReference {
        namespace: pod.namespace().unwrap_or_default(),
        name: pod.name_any(),
        uid: pod.uid().unwrap_or_default(),
    }
}

/// The pods of `pending` none of whose transfers among `pvbs` is still to end.
pub(super) fn transfers_ended(
    pending: &[PodReference],
    pvbs: &[PodVolumeBackup],
) -> Vec<PodReference> {
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

/// Runs the post hooks of `pods`, as their annotations and the backup's spec say now.
pub(super) async fn run_post_hooks(
    backup: &Backup,
    ctx: &Context,
    pods: &[PodReference],
) -> Report {
    let runs: Vec<_> = (pods.iter())
        .map(|pod| post_hooks_of(backup, ctx, pod))
        .collect();
    let reports: Vec<Report> = futures::stream::iter(runs)
        .buffered(POD_CONCURRENCY)
        .collect()
        .await;
    let mut all = Report::default();
    for report in reports {
        all.merge(report);
    }
    all
}

async fn post_hooks_of(backup: &Backup, ctx: &Context, reference: &PodReference) -> Report {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &reference.namespace);
    let pod = match api.get_opt(&reference.name).await {
        Ok(Some(pod)) if pod.uid().as_deref() == Some(reference.uid.as_str()) => pod,
        found => {
            let why = match found {
                Err(err) => format!("its post hooks could not run: cannot read the pod: {err}"),
                Ok(_) => "its post hooks could not run: the pod is gone".to_owned(),
            };
            let invalid = InvalidHook {
                source: "pod".to_owned(),
                on_error: HookErrorMode::Fail,
                message: why,
            };
            let name = format!("{}/{}", reference.namespace, reference.name);
            let mut report = Report::default();
            report.add(
                &ctx.metrics,
                not_run(&name, HookPhase::Post, &invalid),
                invalid.on_error,
            );
            return report;
        }
    };
    let post = backup_hooks(&pod, HookPhase::Post, backup.spec.hooks.as_ref());
    run_in_order(&ctx.client, &ctx.metrics, &pod, HookPhase::Post, post).await
}
