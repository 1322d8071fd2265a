//! DownloadRequest: a client's request for a short-lived URL to one file of a backup or a
//! restore in its storage location, so that reading a log needs no credentials to the bucket.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Which file to download.
#[allow(
    clippy::duplicated_attributes,
    reason = "each printcolumn(...) repeats keys such as type_ = \"date\""
)]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "ferry.dev",
    version = "v1alpha1",
    kind = "DownloadRequest",
    namespaced,
    derive = "PartialEq",
    status = "DownloadRequestStatus",
    category = "ferry",
    doc = "A request for a short-lived URL to a backup's or a restore's log, objects or results.",
    printcolumn(name = "Kind", type_ = "string", json_path = ".spec.target.kind"),
    printcolumn(name = "Name", type_ = "string", json_path = ".spec.target.name"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Expiration", type_ = "date", json_path = ".status.expiration"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct DownloadRequestSpec {
    pub target: DownloadTarget,
}

/// One file of a backup or of a restore.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DownloadTarget {
    pub kind: DownloadTargetKind,
    /// Name of the Backup or the Restore.
    pub name: String,
}

/// The files a DownloadRequest may ask for, as Velero names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum DownloadTargetKind {
    /// The backup's log, gzipped.
    BackupLog,
    /// The backup's objects: the gzipped tarball of `resources/…` JSON files.
    BackupContents,
    /// The backup's PodVolumeBackups as they ended, a gzipped JSON array.
    BackupResults,
    /// The restore's log, gzipped.
    RestoreLog,
    /// What the restore did with each object, gzipped JSON.
    RestoreResults,
}

impl DownloadTargetKind {
    /// Whether the target is a Backup's file (else a Restore's).
    pub fn of_backup(self) -> bool {
        matches!(
            self,
            Self::BackupLog | Self::BackupContents | Self::BackupResults
        )
    }
}

/// The answer to a DownloadRequest.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DownloadRequestStatus {
    /// Processed once `downloadURL` is set, Failed when there is nothing to download. Missing
    /// means New.
    #[serde(default)]
    pub phase: DownloadRequestPhase,
    /// Where the file can be fetched with a plain GET until `expiration`: a presigned URL of
    /// the object store, or for a filesystem location the coordinator's
    /// `http://<service>.<namespace>.svc:<port>/downloads/<token>`, which a client outside the
    /// cluster reaches through the API server's service proxy.
    #[serde(
        default,
        rename = "downloadURL",
        skip_serializing_if = "Option::is_none"
    )]
    pub download_url: Option<String>,
    /// When the URL stops working; the request is deleted soon after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<Time>,
    /// Why the request Failed: the target or its file does not exist, or the location cannot
    /// be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Phase of a DownloadRequest. A missing or empty phase means New.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum DownloadRequestPhase {
    /// Not yet answered by the coordinator.
    #[default]
    #[serde(alias = "")]
    New,
    /// The download URL is set.
    Processed,
    /// There is nothing to download; the message says why.
    Failed,
}

impl DownloadRequest {
    /// The phase, New when the status or its phase is missing.
    pub fn phase(&self) -> DownloadRequestPhase {
        self.status.as_ref().map(|s| s.phase).unwrap_or_default()
    }
}
