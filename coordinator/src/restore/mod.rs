//! The Restore controller: validate → read the backup's objects from the location → plan what
//! to restore, in a safe order (pure) → create the objects stage by stage, each made by the
//! per-kind rules (pods with the restore-wait init container first) → one PodVolumeRestore per
//! volume with a snapshot, labelled for its node once the pod is bound → aggregate → write the
//! results and log to the location.

mod apply;
mod finish;
mod hooks;
mod objects;
mod plan;
mod pod;
mod rules;
mod run;
mod validate;

use std::sync::Arc;

use ferry_shared::crd::{OperationPhase, Restore};
use kube::ResourceExt;
use kube::runtime::controller::Action;

use crate::context::Context;
use crate::error::Error;
use apply::create_objects;
use finish::watch;
use validate::start;

pub async fn reconcile(cached: Arc<Restore>, ctx: Arc<Context>) -> Result<Action, Error> {
    // The watch cache may not show the status this controller wrote last; every step works on
    // the Restore as it is now, so no step runs twice.
    let Some(restore) = ctx.api::<Restore>().get_opt(&cached.name_any()).await? else {
        return Ok(Action::await_change());
    };
    let status = restore.status.clone().unwrap_or_default();
    match status.phase {
        OperationPhase::New => start(&restore, &ctx).await,
        OperationPhase::InProgress if status.pod_volume_restores.is_none() => {
            create_objects(&restore, &ctx, status).await
        }
        OperationPhase::InProgress => watch(&restore, &ctx, status).await,
        _ => Ok(Action::await_change()),
    }
}
