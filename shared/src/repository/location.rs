//! Where a repository lives, in Ferry's own terms, and its translation into an opendal operator
//! and into the identifier a user gives the restic CLI.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use opendal::{HttpTransporter, OperationContext, Operator};
use opendal_http_transport_reqwest::ReqwestTransport;
use serde::{Deserialize, Serialize};

/// A restic-format repository on a local filesystem or in an S3 bucket.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum RepositoryLocation {
    /// A directory on a local (or mounted) filesystem.
    Local {
        /// The repository's directory.
        path: PathBuf,
    },
    /// A prefix in an S3 bucket.
    S3(S3Location),
}

/// An S3 repository: the bucket, the repository's prefix inside it, and how to reach it.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct S3Location {
    /// The S3 endpoint URL, such as `http://minio.example:9000`; AWS itself when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The bucket name.
    pub bucket: String,
    /// The repository's prefix inside the bucket, such as `ferry/restic/shop`.
    #[serde(default)]
    pub prefix: String,
    /// The region; `us-east-1` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Address buckets as `<bucket>.<host>` instead of `<host>/<bucket>`.
    #[serde(default)]
    pub virtual_host_style: bool,
    /// The access key ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    /// The secret access key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<String>,
    /// PEM certificates of the CAs that may have signed the endpoint's certificate, trusted
    /// besides the system's own, as [`ca_bundle`] gives them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<String>,
    /// Accept any certificate from the endpoint, unchecked.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_tls_verify: bool,
}

impl fmt::Debug for S3Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Location")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .field("virtual_host_style", &self.virtual_host_style)
            .field("ca_cert", &self.ca_cert.as_ref().map(|_| "<set>"))
            .field("insecure_skip_tls_verify", &self.insecure_skip_tls_verify)
            .field(
                "access_key_id",
                &self.access_key_id.as_ref().map(|_| "<set>"),
            )
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl fmt::Debug for RepositoryLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local { path } => f.debug_struct("Local").field("path", path).finish(),
            Self::S3(s3) => s3.fmt(f),
        }
    }
}

impl fmt::Display for RepositoryLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.restic_identifier())
    }
}

/// The region used when none is given, as the AWS SDKs do.
const DEFAULT_REGION: &str = "us-east-1";

impl RepositoryLocation {
    /// Reads a repository argument as a user would write it for the restic CLI: a local path,
    /// or `s3:<endpoint>/<bucket>[/<prefix>]` with an `http://` or `https://` endpoint (or a bare
    /// host, which means https). Credentials and the region come separately.
    pub fn parse(repository: &str) -> Result<Self, String> {
        let Some(rest) = repository.strip_prefix("s3:") else {
            let path = repository.strip_prefix("local:").unwrap_or(repository);
            if path.is_empty() {
                return Err("the repository path is empty".to_owned());
            }
            return Ok(Self::Local {
                path: PathBuf::from(path),
            });
        };
        let (scheme, rest) = match rest.split_once("://") {
            Some((scheme @ ("http" | "https"), rest)) => (scheme, rest),
            Some((other, _)) => {
                return Err(format!(
                    "unsupported S3 endpoint scheme `{other}` in `{repository}`: use http or https"
                ));
            }
            None => ("https", rest),
        };
        let mut parts = rest.splitn(3, '/');
        let host = parts.next().unwrap_or_default();
        let bucket = parts.next().unwrap_or_default();
        let prefix = parts.next().unwrap_or_default().trim_matches('/');
        if host.is_empty() || bucket.is_empty() {
            return Err(format!(
                "`{repository}` is not an S3 repository of the form s3:http://host:port/bucket/prefix"
            ));
        }
        Ok(Self::S3(S3Location {
            endpoint: Some(format!("{scheme}://{host}")),
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            ..S3Location::default()
        }))
    }

    /// The identifier a user gives `restic -r` to reach the same repository.
    pub fn restic_identifier(&self) -> String {
        match self {
            Self::Local { path } => path.display().to_string(),
            Self::S3(s3) => {
                let endpoint = s3.endpoint.clone().unwrap_or_else(|| {
                    format!(
                        "s3.{}.amazonaws.com",
                        s3.region.as_deref().unwrap_or(DEFAULT_REGION)
                    )
                });
                let mut id = format!("s3:{}/{}", endpoint.trim_end_matches('/'), s3.bucket);
                let prefix = s3.prefix.trim_matches('/');
                if !prefix.is_empty() {
                    id.push('/');
                    id.push_str(prefix);
                }
                id
            }
        }
    }

    /// An opendal operator rooted at this location, with no retries of its own (they are
    /// [`crate::retry`]'s). An S3 operator has an HTTP client of its own, whose connections
    /// live and die with it, and which gives up on a store that can no longer be reached, so
    /// that a lost store is a failure that can be retried rather than a hang.
    pub fn operator(&self) -> Result<Operator, String> {
        let operator = match self {
            Self::Local { path } => Operator::from_iter::<opendal::services::Fs>([(
                "root".to_owned(),
                path.display().to_string(),
            )]),
            Self::S3(s3) => Operator::from_iter::<opendal::services::S3>(s3.opendal_options()),
        }
        .map_err(|err| err.to_string())?;
        let Self::S3(s3) = self else {
            return Ok(operator);
        };
        let transport = HttpTransporter::new(ReqwestTransport::new(s3.http_client()?));
        Ok(operator.with_context(OperationContext::new().with_http_transport(transport)))
    }
}

/// `builder`, set to trust the CA certificates `ca_cert` (PEM) besides the system's roots, or to
/// check no certificate when `insecure`: for an object store, and for its presigned URLs.
pub fn trusting(
    mut builder: reqwest::ClientBuilder,
    ca_cert: Option<&str>,
    insecure: bool,
) -> Result<reqwest::ClientBuilder, String> {
    if let Some(pem) = ca_cert {
        let certificates = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
            .map_err(|err| format!("the CA certificates do not parse: {err}"))?;
        builder = builder.tls_certs_merge(certificates);
    }
    Ok(builder.tls_danger_accept_invalid_certs(insecure))
}

/// Reads a CA bundle from a file named by a flag, checked as [`ca_bundle`] checks it.
pub fn read_ca_bundle(path: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|err| format!("cannot read {path}: {err}"))?;
    ca_bundle(&text).map_err(|err| format!("{path} {err}"))
}

/// A CA bundle as a storage location or a flag gives it, as PEM text: PEM itself, or PEM
/// encoded once more in base64, as Kubernetes objects often carry certificates. It must hold
/// at least one certificate, and each must parse.
pub fn ca_bundle(text: &str) -> Result<String, String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    let pem = if text.contains(BEGIN) {
        text.to_owned()
    } else {
        let compact: String = text.split_whitespace().collect();
        base64::engine::general_purpose::STANDARD
            .decode(compact)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .filter(|decoded| decoded.contains(BEGIN))
            .ok_or_else(|| {
                format!("holds no PEM certificate ({BEGIN}), neither plain nor base64-encoded")
            })?
    };
    let certificates = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
        .map_err(|err| format!("holds a certificate that does not parse: {err}"))?;
    if certificates.is_empty() {
        return Err(format!(
            "holds no whole certificate between {BEGIN} and its end"
        ));
    }
    Ok(pem)
}

/// What a location that skips the certificate check is warned of.
pub const UNCHECKED_TLS: &str = "insecureSkipTLSVerify is set: the object store's TLS certificate is not checked, so anyone between here and the store can read and change the backups";

/// How long a connection to the object store may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a connection that waits is probed.
const KEEPALIVE: Duration = Duration::from_secs(30);
/// How long sent data or a probe may go unacknowledged before the connection counts as lost:
/// the store's host or the network between is gone, however slowly the store was answering.
const UNACKNOWLEDGED_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a request may wait for its answer, upload included, or for the next bytes of the
/// answer's body, from a store that acknowledges everything and answers nothing. Long enough
/// for a 128 MiB pack over a link of 220 KiB/s.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(600);

impl S3Location {
    /// Says in the log, once per endpoint and process, that the endpoint's certificate is not
    /// checked, if it is not.
    pub fn warn_if_unchecked(&self) {
        static WARNED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
        if !self.insecure_skip_tls_verify {
            return;
        }
        let endpoint = self.endpoint.clone().unwrap_or_else(|| "AWS".to_owned());
        let mut warned = WARNED
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if warned.insert(endpoint.clone()) {
            tracing::warn!(%endpoint, "{UNCHECKED_TLS}");
        }
    }

    /// The HTTP client of an operator: it trusts the location's CAs besides the system's, or
    /// no certificate check at all when told so, and gives up on a store that can no longer
    /// be reached.
    fn http_client(&self) -> Result<reqwest::Client, String> {
        let builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_keepalive(KEEPALIVE)
            .tcp_user_timeout(UNACKNOWLEDGED_TIMEOUT)
            .read_timeout(ANSWER_TIMEOUT);
        trusting(
            builder,
            self.ca_cert.as_deref(),
            self.insecure_skip_tls_verify,
        )?
        .build()
        .map_err(|err| format!("cannot set up the HTTP client: {err}"))
    }

    /// The options of opendal's S3 service for this location, rooted at its prefix.
    fn opendal_options(&self) -> BTreeMap<String, String> {
        let mut options = BTreeMap::from([
            ("bucket".to_owned(), self.bucket.clone()),
            (
                "root".to_owned(),
                format!("/{}", self.prefix.trim_matches('/')),
            ),
            (
                "region".to_owned(),
                self.region
                    .clone()
                    .unwrap_or_else(|| DEFAULT_REGION.to_owned()),
            ),
            // Only what Ferry is given counts: no ambient AWS profile or instance role.
            ("disable_config_load".to_owned(), "true".to_owned()),
            ("disable_ec2_metadata".to_owned(), "true".to_owned()),
            (
                "enable_virtual_host_style".to_owned(),
                self.virtual_host_style.to_string(),
            ),
        ]);
        if let Some(endpoint) = &self.endpoint {
            options.insert("endpoint".to_owned(), endpoint.clone());
        }
        if let Some(key) = &self.access_key_id {
            options.insert("access_key_id".to_owned(), key.clone());
        }
        if let Some(secret) = &self.secret_access_key {
            options.insert("secret_access_key".to_owned(), secret.clone());
        }
        options
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_local_paths_and_s3_identifiers() {
        let cases = [
            ("/srv/repo", "/srv/repo"),
            ("local:/srv/repo", "/srv/repo"),
            (
                "s3:http://127.0.0.1:9000/bucket",
                "s3:http://127.0.0.1:9000/bucket",
            ),
            (
                "s3:http://127.0.0.1:9000/bucket/restic/shop/",
                "s3:http://127.0.0.1:9000/bucket/restic/shop",
            ),
            (
                "s3:minio.example/bucket/p",
                "s3:https://minio.example/bucket/p",
            ),
        ];
        for (input, identifier) in cases {
            let location = RepositoryLocation::parse(input).expect(input);
            assert_eq!(location.restic_identifier(), identifier, "{input}");
        }
    }

    #[test]
    fn rejects_malformed_repositories() {
        for input in ["", "s3:", "s3:http://host", "s3:ftp://host/bucket"] {
            assert!(RepositoryLocation::parse(input).is_err(), "{input}");
        }
    }

    #[test]
    fn aws_identifier_names_the_regional_endpoint() {
        let location = RepositoryLocation::S3(S3Location {
            bucket: "b".into(),
            prefix: "/ferry/restic/ns/".into(),
            region: Some("eu-west-1".into()),
            ..S3Location::default()
        });
        assert_eq!(
            location.restic_identifier(),
            "s3:s3.eu-west-1.amazonaws.com/b/ferry/restic/ns"
        );
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let location = RepositoryLocation::S3(S3Location {
            bucket: "b".into(),
            access_key_id: Some("AKIDEXAMPLE".into()),
            secret_access_key: Some("very-secret".into()),
            ..S3Location::default()
        });
        let shown = format!("{location:?}");
        assert!(
            !shown.contains("very-secret") && !shown.contains("AKIDEXAMPLE"),
            "{shown}"
        );
    }

    #[test]
    fn s3_options_point_opendal_at_the_prefix() {
        let RepositoryLocation::S3(s3) =
            RepositoryLocation::parse("s3:http://127.0.0.1:9000/bucket/a/b").unwrap()
        else {
            panic!("not S3");
        };
        let options = s3.opendal_options();
        assert_eq!(options["root"], "/a/b");
        assert_eq!(options["bucket"], "bucket");
        assert_eq!(options["endpoint"], "http://127.0.0.1:9000");
    }
}
