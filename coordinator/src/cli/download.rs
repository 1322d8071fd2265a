//! Reading a file of a backup or restore from its storage location without credentials to it:
//! a DownloadRequest, which the coordinator answers with a short-lived URL, then a GET of that
//! URL, straight to the object store or through the API server's service proxy.

use std::time::Duration;

use ferry_shared::crd::{
    DownloadRequest, DownloadRequestPhase, DownloadRequestSpec, DownloadTarget, DownloadTargetKind,
};
use ferry_shared::download::{self, ServiceUrl};
use futures::AsyncReadExt;

use super::connect::Ferry;
use super::error::{CliError, root_cause};
use super::request::ask;

/// How long the coordinator has to answer a request.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// The bytes of `kind` of the Backup or Restore `name`, as the location holds them (gzipped).
pub async fn fetch(
    ferry: &Ferry,
    kind: DownloadTargetKind,
    name: &str,
) -> Result<Vec<u8>, CliError> {
    let request = DownloadRequest::new(
        "",
        DownloadRequestSpec {
            target: DownloadTarget {
                kind,
                name: name.to_owned(),
            },
        },
    );
    let prefix = format!("{}-", request_prefix(name));
    let answered = |r: &DownloadRequest| r.phase() != DownloadRequestPhase::New;
    let answer = ask(ferry, request, &prefix, ANSWER_TIMEOUT, answered)
        .await?
        .status
        .unwrap_or_default();
    match (answer.phase, answer.download_url) {
        (DownloadRequestPhase::Processed, Some(url)) => get(ferry, &url).await,
        _ => Err(CliError::Download(answer.message.unwrap_or_else(|| {
            format!("the coordinator has nothing to download for {name}")
        }))),
    }
}

/// A name prefix for a request, short enough for generateName to add its suffix.
fn request_prefix(name: &str) -> &str {
    let end = name.floor_char_boundary(200);
    name[..end].trim_end_matches(['-', '.'])
}

/// GETs a download URL: through the API server for a Service inside the cluster, else
/// straight.
async fn get(ferry: &Ferry, url: &str) -> Result<Vec<u8>, CliError> {
    let failed = |err: &(dyn std::error::Error + 'static)| {
        let cause = match err.downcast_ref::<kube::Error>() {
            Some(kube::Error::Api(status)) => status.message.clone(),
            _ => root_cause(err),
        };
        CliError::Download(format!("the download failed: {cause}"))
    };
    // Only the coordinator's own downloads go through the API server: a presigned URL of an
    // object store inside the cluster signs its host, which the proxy would change.
    let coordinator = ServiceUrl::parse(url).filter(|service| {
        service.namespace == ferry.namespace && service.path.starts_with(download::PATH_PREFIX)
    });
    if let Some(service) = coordinator {
        let request = http::Request::get(service.proxy_path())
            .body(Vec::new())
            .map_err(|err| failed(&err))?;
        let mut body = ferry
            .client
            .request_stream(request)
            .await
            .map_err(|err| failed(&err))?;
        let mut bytes = Vec::new();
        body.read_to_end(&mut bytes)
            .await
            .map_err(|err| failed(&err))?;
        return Ok(bytes);
    }
    let response = reqwest::get(url).await.map_err(|err| failed(&err))?;
    let status = response.status();
    let bytes = response.bytes().await.map_err(|err| failed(&err))?;
    if !status.is_success() {
        let text = String::from_utf8_lossy(&bytes);
        return Err(CliError::Download(format!(
            "the download failed with {status}: {}",
            text.lines().next().unwrap_or_default()
        )));
    }
    Ok(bytes.to_vec())
}

/// The gunzipped text of a log or results file.
pub fn gunzipped(bytes: &[u8]) -> Result<Vec<u8>, CliError> {
    ferry_shared::layout::gunzip(bytes)
        .map_err(|err| CliError::Download(format!("the file is not gzip: {err}")))
}
