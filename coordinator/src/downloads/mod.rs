//! The DownloadRequest controller: a New request gets a short-lived URL to one file of a
//! backup or a restore in its storage location (a presigned URL of an S3 location, or a token
//! of this coordinator's `/downloads/` route for a filesystem location), or Fails with why;
//! an answered request is deleted once its time is up.
//!
//! Stages: find the file (the target, its backup, the backup's location, the object) → decide
//! ([`plan`]) → make the URL → write the status.

mod plan;
mod table;

use std::sync::Arc;
use std::time::Duration;

use ferry_shared::crd::{
    Backup, DownloadRequest, DownloadRequestPhase, DownloadRequestStatus, Restore, StorageProvider,
};
use ferry_shared::download::ServiceUrl;
use ferry_shared::layout::ObjectStore;
use ferry_shared::storage::LookupError;
use ferry_shared::time::now;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::DeleteParams;
use kube::runtime::controller::Action;
use tracing::info;

pub use table::{DownloadTable, TokenError};

use crate::context::Context;
use crate::error::Error;
use plan::{Answered, File, Next};

pub async fn reconcile(request: Arc<DownloadRequest>, ctx: Arc<Context>) -> Result<Action, Error> {
    let validity = ctx.settings.download_validity;
    let answered = Answered {
        phase: request.phase(),
        created: request.metadata.creation_timestamp.as_ref().map(|t| t.0),
        expiration: request
            .status
            .as_ref()
            .and_then(|status| status.expiration.as_ref())
            .map(|t| t.0),
    };
    match plan::next(&answered, validity, now().0) {
        Next::Answer => answer(&request, &ctx).await,
        Next::WaitFor(pause) => Ok(Action::requeue(pause)),
        Next::Delete => {
            let deleted = ctx
                .api::<DownloadRequest>()
                .delete(&request.name_any(), &DeleteParams::default())
                .await;
            match deleted {
                Ok(_) => Ok(Action::await_change()),
                Err(kube::Error::Api(status)) if status.code == 404 => Ok(Action::await_change()),
                Err(err) => Err(err.into()),
            }
        }
    }
}

/// Answers a New request: Processed with its URL, or Failed with why there is none.
async fn answer(request: &DownloadRequest, ctx: &Context) -> Result<Action, Error> {
    let found = match plan::valid_target(&request.spec.target) {
        Ok(()) => find(request, ctx).await?,
        Err(message) => Err(message),
    };
    let (expiration, validity) = plan::expiration(now().0, ctx.settings.download_validity);
    let status = match found {
        Ok(found) => match url(&found, ctx, validity).await? {
            Ok(url) => DownloadRequestStatus {
                phase: DownloadRequestPhase::Processed,
                download_url: Some(url),
                expiration: Some(Time(expiration)),
                message: None,
            },
            Err(message) => failed(message),
        },
        Err(message) => failed(message),
    };
    info!(name = %request.name_any(), phase = ?status.phase, message = ?status.message, "answered a download request");
    ctx.apply_status(request, &status).await?;
    Ok(Action::requeue(ctx.settings.download_validity))
}

fn failed(message: String) -> DownloadRequestStatus {
    DownloadRequestStatus {
        phase: DownloadRequestPhase::Failed,
        message: Some(message),
        ..DownloadRequestStatus::default()
    }
}

/// The file a request asks for, found in its location.
struct Found {
    provider: StorageProvider,
    store: ObjectStore,
    file: File,
}

/// Finds the file: the inner error says why there is none, for the status; the outer one is
/// a failure to read the cluster, to be retried.
async fn find(request: &DownloadRequest, ctx: &Context) -> Result<Result<Found, String>, Error> {
    let target = &request.spec.target;
    let backup_name = if target.kind.of_backup() {
        target.name.clone()
    } else {
        match ctx.api::<Restore>().get_opt(&target.name).await? {
            None => return Ok(Err(format!("restore \"{}\" does not exist", target.name))),
            Some(restore) => match restore_backup(&restore) {
                Some(backup) => backup,
                None => {
                    return Ok(Err(format!(
                        "restore \"{}\" names no backup yet",
                        target.name
                    )));
                }
            },
        }
    };
    let Some(backup) = ctx.api::<Backup>().get_opt(&backup_name).await? else {
        return Ok(Err(format!("backup \"{backup_name}\" does not exist")));
    };
    let location_name = match backup.spec.storage_location.clone() {
        Some(name) => name,
        None => match ctx.default_location().await? {
            Ok(name) => name,
            Err(message) => return Ok(Err(message)),
        },
    };
    let location = match ctx.location(&location_name).await? {
        Ok(location) => location,
        Err(LookupError::Missing { .. }) => {
            return Ok(Err(format!(
                "the storage location \"{location_name}\" of backup \"{backup_name}\" does not exist"
            )));
        }
        Err(err) => return Ok(Err(err.to_string())),
    };
    let store = match location.store(&ctx.store_retrier.within(plan::CHECK_BUDGET)) {
        Ok(store) => store,
        Err(err) => return Ok(Err(err.to_string())),
    };
    let file = plan::file(target);
    match store.exists(&file.key).await {
        Ok(true) => Ok(Ok(Found {
            provider: location.location.spec.provider,
            store,
            file,
        })),
        Ok(false) => Ok(Err(format!(
            "the storage location \"{location_name}\" holds no {}",
            file.description
        ))),
        Err(err) => Ok(Err(format!(
            "the storage location \"{location_name}\" is out of reach after retries: {err}"
        ))),
    }
}

/// The Backup a Restore restores from, as it recorded it or as its spec names it.
fn restore_backup(restore: &Restore) -> Option<String> {
    restore
        .status
        .as_ref()
        .and_then(|status| status.backup_name.clone())
        .or_else(|| restore.spec.backup_name.clone())
        .filter(|name| !name.is_empty())
}

/// The URL of the file for `validity`: presigned by the object store, or a token of this
/// coordinator's.
async fn url(
    found: &Found,
    ctx: &Context,
    validity: Duration,
) -> Result<Result<String, String>, Error> {
    match found.provider {
        StorageProvider::S3 => Ok(found
            .store
            .presigned_get(&found.file.key, validity)
            .await
            .map_err(|err| err.to_string())),
        StorageProvider::Filesystem => {
            let token =
                ctx.downloads
                    .insert(found.store.clone(), found.file.key.clone(), validity)?;
            let service = &ctx.settings.download_service;
            Ok(Ok(ServiceUrl::download(
                &service.name,
                &ctx.namespace,
                service.port,
                &token,
            )
            .to_url()))
        }
    }
}
