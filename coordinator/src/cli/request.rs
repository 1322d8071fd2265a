//! Asking the coordinator through a request object: create it, wait for the answer, delete
//! it. DownloadRequests and ServerStatusRequests work this way.

use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use kube::Resource;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::wait::await_condition;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::connect::Ferry;
use super::error::CliError;

/// Creates `request` (named `<prefix><suffix>`), waits up to `timeout` until `answered` says
/// the coordinator has answered it, deletes it, and returns it as answered.
pub async fn ask<K>(
    ferry: &Ferry,
    mut request: K,
    prefix: &str,
    timeout: Duration,
    answered: fn(&K) -> bool,
) -> Result<K, CliError>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + DeserializeOwned
        + Serialize
        + Send
        + Sync
        + 'static,
{
    let api = ferry.api::<K>();
    request.meta_mut().name = None;
    request.meta_mut().generate_name = Some(prefix.to_owned());
    let created = api
        .create(&PostParams::default(), &request)
        .await
        .map_err(CliError::from_kube)?;
    let name = created.meta().name.clone().unwrap_or_default();
    let waited = tokio::time::timeout(
        timeout,
        await_condition(api.clone(), &name, move |request: Option<&K>| {
            request.is_none_or(answered)
        }),
    )
    .await;
    let _ = api.delete(&name, &DeleteParams::default()).await;
    waited
        .map_err(|_| CliError::NoAnswer(timeout))?
        .map_err(|err| CliError::Refused(format!("lost the watch on the request: {err}")))?
        .ok_or_else(|| CliError::Refused(format!("the request {name} was deleted unanswered")))
}
