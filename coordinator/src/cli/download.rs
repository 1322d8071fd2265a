//! Reading a file of a backup or restore from its storage location without credentials to it:
//! a DownloadRequest, which the coordinator answers with a short-lived URL, then a GET of that
//! URL, straight to the object store or through the API server's service proxy.

use std::time::Duration;

use ferry_shared::crd::{
    Backup, BackupStorageLocation, DownloadRequest, DownloadRequestPhase, DownloadRequestSpec,
    DownloadTarget, DownloadTargetKind, Restore, S3Config,
};
use ferry_shared::download::{self, ServiceUrl};
use ferry_shared::repository::{ca_bundle, trusting};
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
        (DownloadRequestPhase::Processed, Some(url)) => {
            let tls = location_tls(ferry, kind, name).await;
            get(ferry, &url, &tls).await
        }
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

/// How the storage location that holds the files of the Backup or Restore `name` checks its
/// object store's certificate: its `caCert` and `insecureSkipTLSVerify`. The system's roots
/// alone when the location cannot be read.
async fn location_tls(ferry: &Ferry, kind: DownloadTargetKind, name: &str) -> S3Config {
    let backup = if kind.of_backup() {
        Some(name.to_owned())
    } else {
        let restore = ferry.api::<Restore>().get_opt(name).await.ok().flatten();
        restore.and_then(|r| r.status.and_then(|s| s.backup_name).or(r.spec.backup_name))
    };
    let location = match backup {
        Some(backup) => ferry.api::<Backup>().get_opt(&backup).await.ok().flatten(),
        None => None,
    }
    .and_then(|backup| backup.spec.storage_location);
    let config = match location {
        Some(location) => ferry
            .api::<BackupStorageLocation>()
            .get_opt(&location)
            .await
            .ok()
            .flatten(),
        None => None,
    }
    .and_then(|location| location.spec.config)
    .unwrap_or_default();
    S3Config {
        ca_cert: config
            .ca_cert
            .as_deref()
            .and_then(|pem| ca_bundle(pem).ok()),
        ..config
    }
}

/// GETs a download URL: through the API server for a Service inside the cluster, else
/// straight, trusting the storage location's CA.
async fn get(ferry: &Ferry, url: &str, tls: &S3Config) -> Result<Vec<u8>, CliError> {
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
    let client = trusting(
        reqwest::Client::builder(),
        tls.ca_cert.as_deref(),
        tls.insecure_skip_tls_verify,
    )
    .and_then(|builder| builder.build().map_err(|err| err.to_string()))
    .map_err(|err| CliError::Download(format!("cannot set up the HTTP client: {err}")))?;
    let response = client.get(url).send().await.map_err(|err| failed(&err))?;
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
