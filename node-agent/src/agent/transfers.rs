//! The controller of pod-volume transfers on this node, for PodVolumeBackups and
//! PodVolumeRestores alike: decide, claim with a resourceVersion precondition, run the transfer
//! in a child process, publish its progress, and finish it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_shared::crd::{PodVolumePhase, PodVolumeTransferStatus as TransferStatus, Progress};
use ferry_shared::names;
use ferry_shared::repository::{BackupRequest, RestoreRequest};
use ferry_shared::time::now;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::context::Context;
use super::inputs::{self, InputError, Inputs, Work};
use super::kinds::TransferKind;
use super::metrics::{Finish, Operation};
use crate::decision::{Decision, Observed, decide};
use crate::transfer::{Event, Job, Operation as JobOperation, Outcome};

/// A reconcile failure: only API errors, which are retried.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("cannot write the status of {operation} {name}: {source}")]
    WriteStatus {
        operation: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
}

pub fn error_policy<K: TransferKind>(
    object: Arc<K>,
    error: &ReconcileError,
    _ctx: Arc<Context>,
) -> Action {
    warn!(name = %object.name_any(), %error, "reconcile failed, retrying");
    Action::requeue(Duration::from_secs(5))
}

fn field_manager() -> PatchParams {
    PatchParams::apply(names::field_manager::NODE_AGENT).force()
}

/// Writes the whole status the agent owns, by server-side apply.
async fn apply_status<K: TransferKind>(
    api: &Api<K>,
    name: &str,
    status: &TransferStatus,
) -> Result<(), kube::Error> {
    let mut status_json = serde_json::to_value(status).map_err(kube::Error::SerdeError)?;
    // A message that no longer holds (a wait on the object store that is over) is cleared, not
    // left behind by the write that set it.
    if status.message.is_none() {
        status_json["message"] = serde_json::Value::Null;
    }
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status_json,
    });
    api.patch_status(name, &field_manager(), &Patch::Apply(patch))
        .await
        .map(|_| ())
}

/// How often a transfer that runs here is looked at again.
const RUNNING_RECHECK: Duration = Duration::from_secs(5);

pub async fn reconcile<K: TransferKind>(
    object: Arc<K>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let name = object.name_any();
    let status = object.status().cloned().unwrap_or_default();
    let running_here = ctx.running().contains_key(&(K::OPERATION, name.clone()));
    let decision = decide(Observed {
        phase: status.phase,
        attempts: status.attempts,
        running_here,
        max_attempts: ctx.max_attempts,
    });
    match decision {
        // An attempt's last status write can reach the watch before the attempt has left the
        // running list, and no change follows it: looking again later keeps an interrupted or
        // stalled transfer from waiting forever for its next attempt.
        Decision::Nothing if running_here => Ok(Action::requeue(RUNNING_RECHECK)),
        Decision::Nothing => Ok(Action::await_change()),
        Decision::Fail { message } => {
            let api = Api::<K>::namespaced(ctx.client.clone(), &ctx.namespace);
            let failed = TransferStatus {
                phase: PodVolumePhase::Failed,
                message: Some(message),
                completion_timestamp: Some(now()),
                ..status
            };
            apply_status(&api, &name, &failed).await.map_err(|source| {
                ReconcileError::WriteStatus {
                    operation: K::OPERATION.as_str(),
                    name,
                    source,
                }
            })?;
            Ok(Action::await_change())
        }
        // Shutting down: it is left for the next start.
        Decision::Run { .. } if ctx.shutdown.is_cancelled() => Ok(Action::await_change()),
        Decision::Run { .. } => {
            if K::OPERATION == Operation::Restore
                && !inputs::restore_may_start(&ctx, object.pod()).await
            {
                // The pod watch reconciles this again when the pod changes.
                return Ok(Action::await_change());
            }
            let token = ctx.shutdown.child_token();
            ctx.running()
                .insert((K::OPERATION, name.clone()), token.clone());
            ctx.tasks.spawn(run::<K>(ctx.clone(), name, token));
            Ok(Action::await_change())
        }
    }
}

/// How a transfer attempt ended other than by completing.
enum Stop {
    Failed(String),
    /// The agent is shutting down: the transfer stays InProgress, to be retried on restart.
    Shutdown,
    /// The resource is gone; nothing to record.
    Deleted,
    /// Its progress stopped moving; it stays InProgress and is tried again.
    Stalled,
}

/// What the agent keeps between a running transfer's events.
struct Follow {
    /// The status message while the transfer is not waiting on the object store.
    message: Option<String>,
    /// When the transfer last showed that it is alive: its counters moved, or it is waiting on
    /// the object store within its retry budget.
    last_change: Instant,
    last_done: (u64, u64),
}

impl Follow {
    fn new(message: Option<String>) -> Self {
        Self {
            message,
            last_change: Instant::now(),
            last_done: (0, 0),
        }
    }

    /// Takes in one event of the transfer; returns whether the status should be written now.
    fn event<K: TransferKind>(
        &mut self,
        ctx: &Context,
        name: &str,
        status: &mut TransferStatus,
        event: Event,
    ) -> bool {
        match event {
            Event::Progress(report) => {
                let counters = report.counters;
                let done = (counters.bytes_done, counters.files_done);
                if done != self.last_done || report.waiting.is_some() {
                    self.last_done = done;
                    self.last_change = Instant::now();
                }
                ctx.metrics.progress(
                    K::OPERATION,
                    &ctx.namespace,
                    name,
                    counters.bytes_done,
                    counters.bytes_total,
                );
                status.progress = Some(Progress {
                    total_bytes: counters.bytes_total,
                    bytes_done: counters.bytes_done,
                    total_files: counters.files_total,
                    files_done: counters.files_done,
                    bytes_per_second: report.bytes_per_second,
                });
                status.message = match report.waiting {
                    Some(wait) => Some(wait.to_string()),
                    None => self.message.clone(),
                };
                true
            }
            // The status shows the wait from the next progress report, which carries it.
            Event::Waiting(wait) => {
                ctx.metrics.storage_retry(&wait);
                self.last_change = Instant::now();
                false
            }
            Event::Warning { message } => {
                if !status.warnings.contains(&message) {
                    status.warnings.push(message);
                }
                false
            }
            Event::Completed(_) | Event::Failed { .. } => false,
        }
    }
}

/// One transfer, from waiting for a slot to its final status.
async fn run<K: TransferKind>(ctx: Arc<Context>, name: String, token: CancellationToken) {
    let api = Api::<K>::namespaced(ctx.client.clone(), &ctx.namespace);
    let permit = tokio::select! {
        permit = ctx.slots.clone().acquire_owned() => permit.ok(),
        () = token.cancelled() => None,
    };
    if permit.is_some()
        && let Some((object, status)) = claim(&api, &ctx, &name).await
    {
        attempt(&ctx, &api, &object, status, &token).await;
    }
    ctx.running().remove(&(K::OPERATION, name));
}

/// Claims the transfer for this node: InProgress, with the next attempt number, written with
/// the resourceVersion the decision was made on, so no two agents can both claim it.
async fn claim<K: TransferKind>(
    api: &Api<K>,
    ctx: &Context,
    name: &str,
) -> Option<(K, TransferStatus)> {
    let mut object = match api.get_opt(name).await {
        Ok(Some(object)) => object,
        Ok(None) => return None,
        Err(err) => {
            warn!(%name, %err, "cannot read the transfer to claim it");
            return None;
        }
    };
    let status = object.status().cloned().unwrap_or_default();
    let Decision::Run { attempt } = decide(Observed {
        phase: status.phase,
        attempts: status.attempts,
        running_here: false,
        max_attempts: ctx.max_attempts,
    }) else {
        return None;
    };
    let claimed = TransferStatus {
        phase: PodVolumePhase::InProgress,
        node: Some(ctx.node.clone()),
        start_timestamp: Some(now()),
        attempts: attempt,
        message: (attempt > 1).then(|| format!("attempt {attempt} of {}", ctx.max_attempts)),
        ..TransferStatus::default()
    };
    *object.status_mut() = Some(claimed.clone());
    let params = PostParams {
        field_manager: Some(names::field_manager::NODE_AGENT.to_owned()),
        ..PostParams::default()
    };
    match api.replace_status(name, &params, &object).await {
        Ok(object) => {
            info!(%name, attempt, "claimed");
            Some((object, claimed))
        }
        Err(kube::Error::Api(status)) if status.code == 409 => {
            info!(%name, "changed while being claimed; it will be looked at again");
            None
        }
        Err(err) => {
            warn!(%name, %err, "cannot claim");
            None
        }
    }
}

async fn attempt<K: TransferKind>(
    ctx: &Context,
    api: &Api<K>,
    object: &K,
    mut status: TransferStatus,
    token: &CancellationToken,
) {
    let name = object.name_any();
    let started = Instant::now();
    ctx.metrics.started(K::OPERATION);
    let result = transfer(ctx, api, object, &mut status, token).await;
    let (result_label, transferred) = match &result {
        Ok(outcome) => ("completed", Some(transferred(outcome))),
        Err(Stop::Failed(_)) => ("failed", None),
        Err(_) => ("interrupted", None),
    };
    info!(%name, result = result_label, "transfer ended");
    ctx.metrics.finished(
        K::OPERATION,
        Finish {
            namespace: &ctx.namespace,
            name: &name,
            result: result_label,
            seconds: started.elapsed().as_secs_f64(),
            transferred,
        },
    );
    let finished = match result {
        Ok(outcome) => {
            finish_completed(&mut status, outcome);
            Some(status)
        }
        Err(Stop::Failed(message)) => {
            warn!(%name, %message, "transfer failed");
            Some(TransferStatus {
                phase: PodVolumePhase::Failed,
                message: Some(message),
                completion_timestamp: Some(now()),
                ..status
            })
        }
        Err(Stop::Shutdown) => Some(TransferStatus {
            message: Some(
                "interrupted: the node agent stopped; the transfer is tried again when it starts"
                    .to_owned(),
            ),
            ..status
        }),
        Err(Stop::Stalled) => Some(TransferStatus {
            message: Some(format!(
                "stopped: no progress for {}; it is tried again",
                humantime::format_duration(ctx.stall_timeout)
            )),
            ..status
        }),
        Err(Stop::Deleted) => None,
    };
    if let Some(finished) = finished
        && let Err(err) = apply_status(api, &name, &finished).await
    {
        warn!(%name, %err, "cannot write the final status");
    }
}

fn transferred(outcome: &Outcome) -> (u64, u64) {
    match outcome {
        Outcome::Backup(backup) => (backup.bytes, backup.files),
        Outcome::Restore(restore) => (restore.bytes, restore.files),
    }
}

fn finish_completed(status: &mut TransferStatus, outcome: Outcome) {
    status.phase = PodVolumePhase::Completed;
    status.completion_timestamp = Some(now());
    let (bytes, files, warnings) = match outcome {
        Outcome::Backup(backup) => {
            status.message = backup
                .snapshot_id
                .is_none()
                .then(|| "volume was empty so no snapshot was taken".to_owned());
            status.snapshot_id = backup.snapshot_id;
            (backup.bytes, backup.files, backup.warnings)
        }
        Outcome::Restore(restore) => {
            status.message = None;
            (restore.bytes, restore.files, restore.warnings)
        }
    };
    let rate = status.progress.as_ref().map_or(0, |p| p.bytes_per_second);
    status.progress = Some(Progress {
        total_bytes: bytes,
        bytes_done: bytes,
        total_files: files,
        files_done: files,
        bytes_per_second: rate,
    });
    status.warnings = warnings;
}

/// The transfer process's job for `object`, from its resolved inputs.
fn job<K: TransferKind>(ctx: &Context, object: &K, inputs: Inputs) -> Job {
    let operation = match inputs.work {
        Work::Backup {
            tags,
            label,
            parent,
        } => JobOperation::Backup {
            request: BackupRequest {
                source: inputs.path,
                tags,
                label: Some(label),
                parent: parent.into(),
            },
            create_repository: false,
        },
        Work::Restore {
            snapshot,
            restore_uid,
        } => JobOperation::Restore {
            request: RestoreRequest {
                snapshot,
                target: inputs.path,
                // Every attempt of this PodVolumeRestore owns the same claim, so a retry after
                // a crash finishes what the last attempt left.
                owner: object.uid(),
                resume: true,
            },
            restore_uid: Some(restore_uid),
        },
    };
    Job {
        repository: inputs.repository,
        operation,
        progress_interval: ctx.progress_interval,
    }
}

/// Resolves the inputs, runs the child, and publishes its progress until it ends.
async fn transfer<K: TransferKind>(
    ctx: &Context,
    api: &Api<K>,
    object: &K,
    status: &mut TransferStatus,
    token: &CancellationToken,
) -> Result<Outcome, Stop> {
    let name = object.name_any();
    let inputs = (inputs::resolve(ctx, object).await)
        .map_err(|err: InputError| Stop::Failed(err.to_string()))?;
    status.path = Some(inputs.path.display().to_string());
    if let Work::Restore { snapshot, .. } = &inputs.work {
        status.snapshot_id = Some(snapshot.clone());
    }
    let job = job::<K>(ctx, object, inputs);
    if apply_status(api, &name, status).await.is_err() {
        return Err(Stop::Deleted);
    }

    let (events, mut received) = mpsc::unbounded_channel();
    let stop = token.child_token();
    let run = ctx.process.run(
        &job,
        move |event| {
            let _ = events.send(event.clone());
        },
        stop.clone().cancelled_owned(),
    );
    tokio::pin!(run);
    let mut follow = Follow::new(status.message.clone());
    let mut deleted = false;
    let mut stalled = false;
    let result = loop {
        let stall_at = tokio::time::Instant::from_std(follow.last_change + ctx.stall_timeout);
        tokio::select! {
            result = &mut run => break result,
            Some(event) = received.recv() => {
                if follow.event::<K>(ctx, &name, status, event)
                    && let Err(kube::Error::Api(err)) = apply_status(api, &name, status).await
                    && err.code == 404
                {
                    deleted = true;
                    stop.cancel();
                }
            },
            () = tokio::time::sleep_until(stall_at), if !stop.is_cancelled() => {
                warn!(
                    %name,
                    "no progress for {}; stopping the transfer",
                    humantime::format_duration(ctx.stall_timeout)
                );
                stalled = true;
                stop.cancel();
            }
        }
    };
    match result {
        Ok(outcome) => Ok(outcome),
        Err(err) if !err.is_cancelled() => Err(Stop::Failed(err.to_string())),
        Err(_) if deleted => Err(Stop::Deleted),
        Err(_) if stalled => Err(Stop::Stalled),
        Err(_) if ctx.shutdown.is_cancelled() => Err(Stop::Shutdown),
        Err(_) => Err(Stop::Deleted),
    }
}
