//! A restore's post-restore exec hooks: run in each restored pod that has them once its
//! volumes are restored and the hooks' containers are Running. A hook whose container is not
//! Running within its wait timeout, counted from when the pod's data was back, fails.

use std::time::Duration;

use ferry_shared::crd::{
    HookErrorMode, HookPhase, PodReference, PodVolumePhase, PodVolumeRestore, PodVolumeTransfer,
    Restore,
};
use ferry_shared::time::now;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::Api;

use crate::context::Context;
use crate::hooks::exec::run;
use crate::hooks::plan::{InvalidHook, PodHook, restore_exec_hooks};
use crate::hooks::report::{Report, never_started, not_run, pod_name};

/// Pods whose hooks run at once.
const POD_CONCURRENCY: usize = 8;

/// What a pass over the pending pods did.
#[derive(Debug, Default)]
pub(super) struct PostRestore {
    pub report: Report,
    /// Pods whose hooks have all run, or failed.
    pub done: Vec<PodReference>,
}

/// Runs the hooks of the pending pods that are ready for them.
pub(super) async fn run_ready(
    restore: &Restore,
    ctx: &Context,
    pending: &[PodReference],
    pvrs: &[PodVolumeRestore],
) -> PostRestore {
    let passes: Vec<_> = (pending.iter())
        .filter_map(|pod| Some((pod, data_back(pod, pvrs)?)))
        .map(|(pod, since)| pod_hooks(restore, ctx, pod, since))
        .collect();
    let results: Vec<Option<(PodReference, Report)>> = futures::stream::iter(passes)
        .buffered(POD_CONCURRENCY)
        .collect()
        .await;
    let mut pass = PostRestore::default();
    for (pod, report) in results.into_iter().flatten() {
        pass.report.merge(report);
        pass.done.push(pod);
    }
    pass
}

/// When the pod's data was back: the end of its last transfer, or none while one runs.
fn data_back(pod: &PodReference, pvrs: &[PodVolumeRestore]) -> Option<Option<Time>> {
    let mut last: Option<Time> = None;
    for pvr in pvrs.iter().filter(|pvr| pvr.pod().uid == pod.uid) {
        let status = pvr.status.clone().unwrap_or_default();
        if matches!(
            status.phase,
            PodVolumePhase::New | PodVolumePhase::InProgress
        ) {
            return None;
        }
        last = last.max(status.completion_timestamp);
    }
    Some(last)
}

/// Runs the pod's hooks in order once every hook's container is Running, or once the wait is
/// over; none when the pod is to be looked at again.
async fn pod_hooks(
    restore: &Restore,
    ctx: &Context,
    reference: &PodReference,
    since: Option<Time>,
) -> Option<(PodReference, Report)> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &reference.namespace);
    let mut report = Report::default();
    let pod = match api.get_opt(&reference.name).await {
        Ok(Some(pod)) if pod.uid().as_deref() == Some(reference.uid.as_str()) => pod,
        Ok(_) => {
            let invalid = InvalidHook {
                source: "pod".to_owned(),
                on_error: HookErrorMode::Continue,
                message: "its post-restore hooks could not run: the pod is gone".to_owned(),
            };
            let name = format!("{}/{}", reference.namespace, reference.name);
            let run = not_run(&name, HookPhase::PostRestore, &invalid);
            report.add(&ctx.metrics, run, invalid.on_error);
            return Some((reference.clone(), report));
        }
        // Looked at again on the next pass.
        Err(_) => return None,
    };
    let since = since.or_else(|| pod.metadata.creation_timestamp.clone());
    let waited = since.map_or(Duration::ZERO, |since| {
        Duration::try_from(now().0.duration_since(since.0)).unwrap_or_default()
    });
    let planned = restore_exec_hooks(&pod, restore.spec.hooks.as_ref());
    let ready = |hook: &PodHook| running(&pod, &hook.container) || waited >= hook.wait_timeout;
    if !planned.iter().flatten().all(ready) {
        return None;
    }
    for hook in planned {
        let (run, on_error) = match hook {
            Err(invalid) => (
                not_run(&pod_name(&pod), HookPhase::PostRestore, &invalid),
                invalid.on_error,
            ),
            Ok(hook) if !running(&pod, &hook.container) => {
                let why = format!(
                    "container {:?} was not Running within the wait timeout of {}",
                    hook.container,
                    humantime::format_duration(hook.wait_timeout)
                );
                let run = never_started(&pod, HookPhase::PostRestore, &hook, why);
                (run, hook.on_error)
            }
            Ok(hook) => (
                run(&ctx.client, &pod, HookPhase::PostRestore, &hook).await,
                hook.on_error,
            ),
        };
        if report.add(&ctx.metrics, run, on_error) {
            break;
        }
    }
    Some((reference.clone(), report))
}

/// Whether `container` of `pod` runs: the pod is Running and the container's own state, when
/// the kubelet reports it, is running.
fn running(pod: &Pod, container: &str) -> bool {
    let Some(status) = &pod.status else {
        return false;
    };
    if status.phase.as_deref() != Some("Running") {
        return false;
    }
    let states = status.container_statuses.iter().flatten();
    match states.into_iter().find(|state| state.name == container) {
        Some(state) => state.state.as_ref().is_some_and(|s| s.running.is_some()),
        None => true,
    }
}
