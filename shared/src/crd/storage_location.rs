//! BackupStorageLocation: where backups and repositories are stored.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::is_false;

/// Object storage that holds backup metadata and the restic-format repositories.
#[allow(
    clippy::duplicated_attributes,
    reason = "each printcolumn(...) repeats keys such as type_ = \"date\""
)]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "ferry.dev",
    version = "v1alpha1",
    kind = "BackupStorageLocation",
    namespaced,
    derive = "PartialEq",
    status = "BackupStorageLocationStatus",
    shortname = "bsl",
    category = "ferry",
    doc = "A place where Ferry stores backups: an S3 bucket or a directory.",
    printcolumn(name = "Provider", type_ = "string", json_path = ".spec.provider"),
    printcolumn(name = "Bucket", type_ = "string", json_path = ".spec.bucket"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Last Validated",
        type_ = "date",
        json_path = ".status.lastValidationTime"
    ),
    printcolumn(name = "Access Mode", type_ = "string", json_path = ".spec.accessMode"),
    printcolumn(name = "Default", type_ = "boolean", json_path = ".spec.default"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct BackupStorageLocationSpec {
    /// Kind of storage: `s3` (any S3-compatible service) or `filesystem` (a directory).
    pub provider: StorageProvider,
    /// Bucket that holds Ferry's data. Required for `s3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// Key prefix inside the bucket (or directory) under which Ferry writes, without slashes at
    /// either end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Connection settings for the `s3` provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<S3Config>,
    /// Secret key, in the install namespace, holding the credentials for the storage, in the AWS
    /// shared-credentials file format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<SecretKeyRef>,
    /// Directory that holds Ferry's data. Required for `filesystem`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Whether Backups that name no storage location use this one.
    #[serde(default, skip_serializing_if = "is_false")]
    pub default: bool,
    /// ReadWrite, or ReadOnly to restore from the location without ever writing to it.
    #[serde(default)]
    pub access_mode: AccessMode,
    /// How often backups found in the location are synced into the cluster, as a duration such as
    /// `1m`. Empty means the coordinator's default; `0s` turns sync off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_period: Option<String>,
    /// How often the location's availability is checked, as a duration such as `1m`. Empty means
    /// the coordinator's default; `0s` turns the check off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_frequency: Option<String>,
}

/// Kind of storage behind a BackupStorageLocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StorageProvider {
    /// An S3-compatible object store.
    S3,
    /// A directory that the coordinator and every node agent can reach.
    Filesystem,
}

/// Connection settings for an S3-compatible object store.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Config {
    /// Region of the bucket, such as `us-east-1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Endpoint URL of the S3 service, such as `https://minio.example:9000`. Empty means AWS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_url: Option<String>,
    /// Address the bucket in the path (`<endpoint>/<bucket>`) rather than in the host name, as
    /// MinIO and most self-hosted services need.
    #[serde(default, skip_serializing_if = "is_false")]
    pub force_path_style: bool,
    /// Accept any TLS certificate from the endpoint. For tests only.
    #[serde(
        default,
        rename = "insecureSkipTLSVerify",
        skip_serializing_if = "is_false"
    )]
    pub insecure_skip_tls_verify: bool,
    /// PEM-encoded CA bundle to trust for the endpoint, besides the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<String>,
}

/// A key of a Secret in the install namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    pub name: String,
    /// Key inside the Secret.
    pub key: String,
}

/// Whether Ferry may write to a BackupStorageLocation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum AccessMode {
    /// Backups and restores.
    #[default]
    ReadWrite,
    /// Restores only: no backup, repository maintenance or garbage collection writes to it.
    ReadOnly,
}

/// What the coordinator last found out about a BackupStorageLocation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupStorageLocationStatus {
    /// Result of the last availability check. Missing until the first check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<StorageLocationPhase>,
    /// Why the location is Unavailable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the availability was last checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_validation_time: Option<Time>,
    /// The generation of the spec that the last check was of: a changed spec is checked at
    /// once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the backups in the location were last synced into the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_synced_time: Option<Time>,
}

/// Availability of a BackupStorageLocation: Available when the last check reached the storage and
/// found Ferry's layout, else Unavailable (the message says why).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum StorageLocationPhase {
    /// The storage answers and its layout is valid.
    Available,
    /// The storage does not answer, or holds something other than Ferry's layout.
    Unavailable,
}
