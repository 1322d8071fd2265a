//! BackupRepository: one restic-format repository per (workload namespace, storage location).
//! The controller creates it (or finds it) and keeps it maintained: it forgets the snapshots of
//! backups that no longer exist, prunes in two phases and checks, never while a transfer into
//! it is running.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use ferry_shared::crd::{
    Backup, BackupRepository, BackupRepositorySpec, BackupRepositoryStatus, PodVolumeBackup,
    PodVolumePhase, PodVolumeRestore, PodVolumeTransfer, RepositoryPhase,
};
use ferry_shared::time::{after, now, until};
use kube::ResourceExt;
use kube::api::PostParams;
use kube::runtime::controller::Action;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::context::{Context, ResolvedLocation, spec_duration};
use crate::error::{Error, StorageError};
use crate::jobs::{Job, JobError, Operation};
use ferry_shared::repository::RepositoryConfig;

/// The BackupRepository name for a namespace in a location: readable, and unique even where
/// the two names joined by a dash would collide.
pub fn repository_name(namespace: &str, location: &str) -> String {
    let digest = hex::encode(Sha256::digest(format!("{namespace}/{location}")));
    let base = format!("{namespace}-{location}");
    let base = &base[..base.floor_char_boundary(240)];
    format!("{}-{}", base.trim_end_matches('-'), &digest[..6])
}

/// Creates the BackupRepository of `namespace` in `location` unless it exists, and returns it.
pub async fn ensure(
    ctx: &Context,
    namespace: &str,
    location: &str,
) -> Result<BackupRepository, kube::Error> {
    let name = repository_name(namespace, location);
    let api = ctx.api::<BackupRepository>();
    if let Some(existing) = api.get_opt(&name).await? {
        return Ok(existing);
    }
    let repository = BackupRepository::new(
        &name,
        BackupRepositorySpec {
            volume_namespace: namespace.to_owned(),
            storage_location: location.to_owned(),
            maintenance_frequency: None,
        },
    );
    match api.create(&PostParams::default(), &repository).await {
        Ok(created) => {
            info!(%name, "created BackupRepository");
            Ok(created)
        }
        Err(kube::Error::Api(status)) if status.code == 409 => api.get(&name).await,
        Err(err) => Err(err),
    }
}

pub async fn reconcile(repo: Arc<BackupRepository>, ctx: Arc<Context>) -> Result<Action, Error> {
    let status = repo.status.clone().unwrap_or_default();
    match status.phase {
        RepositoryPhase::New | RepositoryPhase::NotReady => open(&repo, &ctx, status).await,
        RepositoryPhase::Ready => maintain(&repo, &ctx, status).await,
    }
}

/// Opens the repository, creating it if the location may be written.
async fn open(
    repo: &BackupRepository,
    ctx: &Context,
    status: BackupRepositoryStatus,
) -> Result<Action, Error> {
    let result = match reached(ctx, repo).await {
        Ok((location, config)) => {
            let create = !location.read_only();
            ctx.jobs
                .run(&Job {
                    repository: config,
                    operation: Operation::Open { create },
                })
                .await
                .map_err(|err| err.to_string())
        }
        Err(err) => Err(err.to_string()),
    };
    let (phase, message, action) = match result {
        Ok(summary) => {
            info!(name = %repo.name_any(), %summary, "repository ready");
            (
                RepositoryPhase::Ready,
                None,
                Action::requeue(Duration::ZERO),
            )
        }
        Err(message) => {
            warn!(name = %repo.name_any(), %message, "repository not ready");
            if status.phase != RepositoryPhase::NotReady
                || status.message.as_ref() != Some(&message)
            {
                ctx.event(repo, true, "NotReady", message.clone()).await;
            }
            (
                RepositoryPhase::NotReady,
                Some(message),
                Action::requeue(Duration::from_secs(30)),
            )
        }
    };
    ctx.apply_status(
        repo,
        &BackupRepositoryStatus {
            phase,
            message,
            ..status
        },
    )
    .await?;
    Ok(action)
}

/// Runs maintenance when it is due and nothing transfers into the repository.
async fn maintain(
    repo: &BackupRepository,
    ctx: &Context,
    status: BackupRepositoryStatus,
) -> Result<Action, Error> {
    let frequency = match spec_duration(
        repo.spec.maintenance_frequency.as_deref(),
        "maintenanceFrequency",
        ctx.settings.maintenance_frequency,
    ) {
        Ok(frequency) => frequency,
        Err(message) => return report(repo, ctx, status, message, Action::await_change()).await,
    };
    let since = status
        .last_maintenance_time
        .clone()
        .or_else(|| repo.creation_timestamp())
        .unwrap_or_else(now);
    let due = after(&since, frequency);
    if !until(&due).is_zero() {
        return Ok(Action::requeue(until(&due)));
    }
    let (location, config) = match reached(ctx, repo).await {
        Ok((location, _)) if location.read_only() => return Ok(Action::await_change()),
        Ok(reached) => reached,
        Err(err) => {
            let retry = Action::requeue(Duration::from_secs(60));
            return report(repo, ctx, status, err.to_string(), retry).await;
        }
    };
    let Some(result) = run_maintenance(ctx, &location, config).await? else {
        info!(name = %repo.name_any(), "maintenance waits: the repository is in use");
        return Ok(Action::requeue(Duration::from_secs(30)));
    };
    ctx.metrics.maintenance_ran(result.is_ok());
    let message = match result {
        Ok(summary) => {
            info!(name = %repo.name_any(), %summary, "maintenance done");
            ctx.event(repo, false, "Maintained", summary.clone()).await;
            summary
        }
        Err(err) => {
            warn!(name = %repo.name_any(), %err, "maintenance failed");
            ctx.event(repo, true, "MaintenanceFailed", err.to_string())
                .await;
            format!("maintenance failed: {err}")
        }
    };
    let finished = now();
    let next = BackupRepositoryStatus {
        message: Some(message),
        last_maintenance_time: Some(finished.clone()),
        ..status
    };
    ctx.apply_status(repo, &next).await?;
    Ok(Action::requeue(until(&after(&finished, frequency))))
}

/// Runs the maintenance job under the repository's lock: None when the lock is taken or
/// transfers into the repository are running.
async fn run_maintenance(
    ctx: &Context,
    location: &ResolvedLocation,
    config: RepositoryConfig,
) -> Result<Option<Result<String, JobError>>, Error> {
    let identifier = config.location.restic_identifier();
    // Held until maintenance ends: no transfer into the repository is created meanwhile, and
    // those created before are seen by the check below.
    let Some(_guard) = ctx.try_lock_repository(&identifier) else {
        return Ok(None);
    };
    if transfers_running(ctx, &identifier).await? {
        return Ok(None);
    }
    let live = live_backups(ctx, location).await?;
    let job = Job {
        repository: config,
        operation: Operation::Maintain { live_backups: live },
    };
    Ok(Some(ctx.jobs.run(&job).await))
}

/// The repository's location, and how to reach and unlock the repository in it.
async fn reached(
    ctx: &Context,
    repo: &BackupRepository,
) -> Result<(ResolvedLocation, RepositoryConfig), Error> {
    let location = ctx.location(&repo.spec.storage_location).await??;
    let config = ctx
        .repository_config(&location, &repo.spec.volume_namespace)
        .await?;
    Ok((location, config))
}

/// Records why maintenance cannot run, unless the status already says so.
async fn report(
    repo: &BackupRepository,
    ctx: &Context,
    status: BackupRepositoryStatus,
    message: String,
    action: Action,
) -> Result<Action, Error> {
    if status.message.as_ref() != Some(&message) {
        let next = BackupRepositoryStatus {
            message: Some(message),
            ..status
        };
        ctx.apply_status(repo, &next).await?;
    }
    Ok(action)
}

/// Whether any PodVolumeBackup or PodVolumeRestore into the repository has not ended.
pub async fn transfers_running(ctx: &Context, identifier: &str) -> Result<bool, Error> {
    let running =
        |phase: PodVolumePhase| matches!(phase, PodVolumePhase::New | PodVolumePhase::InProgress);
    let backups = ctx
        .api::<PodVolumeBackup>()
        .list(&Default::default())
        .await?;
    // A PodVolumeBackup without a node label is a synced record that no agent will run.
    if backups.items.iter().any(|pvb| {
        pvb.spec.repository == identifier
            && running(pvb.phase())
            && pvb.labels().contains_key(ferry_shared::names::label::NODE)
    }) {
        return Ok(true);
    }
    let restores = ctx
        .api::<PodVolumeRestore>()
        .list(&Default::default())
        .await?;
    Ok(restores
        .items
        .iter()
        .any(|pvr| pvr.spec.repository == identifier && running(pvr.phase())))
}

/// The backups whose snapshots must be kept: those in the cluster, and those in the location.
async fn live_backups(
    ctx: &Context,
    location: &ResolvedLocation,
) -> Result<BTreeSet<String>, Error> {
    let mut live: BTreeSet<String> = ctx
        .api::<Backup>()
        .list(&Default::default())
        .await?
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    let store = location.store(&ctx.store_retrier)?;
    live.extend(store.backups().await.map_err(StorageError::from)?);
    Ok(live)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names_are_stable_readable_and_unique() {
        let a = repository_name("a-b", "c");
        let b = repository_name("a", "b-c");
        assert!(a.starts_with("a-b-c-") && b.starts_with("a-b-c-"));
        assert_ne!(a, b);
        assert_eq!(a, repository_name("a-b", "c"));
        let long = repository_name(&"n".repeat(63), &"l".repeat(253));
        assert!(long.len() <= 253, "{}", long.len());
    }
}
