//! The Backup controller: validate → collect the objects (discovery, filters) → choose volumes
//! → ensure repositories → write the objects → create PodVolumeBackups → aggregate their
//! status → write the backup to the storage location, `ferry-backup.json` last. Expired or deleted Backups go through a
//! finalizer that forgets their snapshots and removes their objects from the location.

mod collect;
mod create;
mod expire;
mod finish;
mod hooks;
mod validate;

use std::sync::Arc;

use ferry_shared::crd::{Backup, OperationPhase};
use ferry_shared::names::{self};
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};

use crate::context::Context;
use crate::error::Error;
use create::plan_and_create;
pub use expire::owned_pod_volume_backups;
use expire::{cleanup, expire_when_due};
use finish::{fail, watch};
pub use validate::spec_errors;
use validate::start;

pub async fn reconcile(backup: Arc<Backup>, ctx: Arc<Context>) -> Result<Action, Error> {
    let api = ctx.api::<Backup>();
    finalizer(&api, names::BACKUP_FINALIZER, backup, |event| async {
        match event {
            FinalizerEvent::Apply(backup) => apply(&backup, &ctx).await,
            FinalizerEvent::Cleanup(backup) => cleanup(&backup, &ctx).await,
        }
    })
    .await
    .map_err(Error::from)
}

async fn apply(cached: &Backup, ctx: &Context) -> Result<Action, Error> {
    // The watch cache may not show the status this controller wrote last; every step works on
    // the Backup as it is now, so no step runs twice.
    let Some(backup) = ctx.api::<Backup>().get_opt(&cached.name_any()).await? else {
        return Ok(Action::await_change());
    };
    let backup = &backup;
    // A Backup brought in by sync records a finished backup; sync writes its status.
    if backup
        .annotations()
        .contains_key(names::annotation::SYNCED_FROM)
        && backup.phase() == OperationPhase::New
    {
        return Ok(Action::await_change());
    }
    match backup.phase() {
        OperationPhase::New => start(backup, ctx).await,
        OperationPhase::InProgress => progress(backup, ctx).await,
        _ => expire_when_due(backup, ctx).await,
    }
}

async fn progress(backup: &Backup, ctx: &Context) -> Result<Action, Error> {
    let status = backup.status.clone().unwrap_or_default();
    let location_name = backup.spec.storage_location.clone().unwrap_or_default();
    let location = match ctx.location(&location_name).await? {
        Ok(location) => location,
        Err(err) => return fail(backup, ctx, status, err.to_string()).await,
    };
    match status.pod_volume_backups {
        None => plan_and_create(backup, ctx, &location, status).await,
        Some(_) => watch(backup, ctx, &location, status).await,
    }
}
