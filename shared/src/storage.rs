//! From a BackupStorageLocation to the repository of one workload namespace in it, at
//! `<prefix>/restic/<namespace>` (a directory of the same shape for the filesystem provider).

use std::path::PathBuf;

use kube::Client;
use kube::api::Api;

use crate::crd::{BackupStorageLocation, BackupStorageLocationSpec, StorageProvider};
use crate::repository::{RepositoryLocation, S3Location, ca_bundle};
use crate::secret::{SecretError, secret_text};

/// Why a location cannot give a repository.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocationError {
    #[error("the storage location is incomplete: {0}")]
    Incomplete(&'static str),
    #[error("namespace {0:?} is not a valid namespace name")]
    InvalidNamespace(String),
    #[error("the storage location's config.caCert {0}")]
    CaCert(String),
    #[error("the credentials file has no {0}")]
    Credentials(&'static str),
}

/// S3 keys, as read from an AWS shared-credentials file.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("S3Credentials(<redacted>)")
    }
}

/// Reads the `[default]` profile (or the only profile) of an AWS shared-credentials file, the
/// format a storage location's credential Secret holds.
pub fn parse_aws_credentials(text: &str) -> Result<S3Credentials, LocationError> {
    let mut profile: Option<&str> = None;
    let mut key = None;
    let mut secret = None;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            profile = Some(name.trim());
            continue;
        }
        if profile.is_some_and(|name| name != "default") {
            continue;
        }
        if let Some((name, value)) = line.split_once('=') {
            match name.trim() {
                "aws_access_key_id" => key = Some(value.trim().to_owned()),
                "aws_secret_access_key" => secret = Some(value.trim().to_owned()),
                _ => {}
            }
        }
    }
    Ok(S3Credentials {
        access_key_id: key.ok_or(LocationError::Credentials("aws_access_key_id"))?,
        secret_access_key: secret.ok_or(LocationError::Credentials("aws_secret_access_key"))?,
    })
}

/// Why a storage location could not be read from the cluster.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("cannot read storage location {name}: {source}")]
    Read {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("storage location {name} does not exist")]
    Missing { name: String },
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("Secret {namespace}/{secret}: {source}")]
    Credentials {
        namespace: String,
        secret: String,
        #[source]
        source: LocationError,
    },
}

impl LookupError {
    /// Whether trying again may help: the API could not be read. Otherwise the location or
    /// its Secret is missing or wrong, and only the user can mend it.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Read { .. } | Self::Secret(SecretError::Read { .. })
        )
    }
}

/// The storage location `name` in the install namespace, with the credentials its Secret holds.
pub async fn read_location(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<(BackupStorageLocation, Option<S3Credentials>), LookupError> {
    let location = Api::<BackupStorageLocation>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|source| LookupError::Read {
            name: name.to_owned(),
            source,
        })?
        .ok_or_else(|| LookupError::Missing {
            name: name.to_owned(),
        })?;
    let credentials = match &location.spec.credential {
        Some(reference) => {
            let text = secret_text(
                client,
                namespace,
                &reference.name,
                &reference.key,
                "storage credentials",
            )
            .await?;
            Some(
                parse_aws_credentials(&text).map_err(|source| LookupError::Credentials {
                    namespace: namespace.to_owned(),
                    secret: reference.name.clone(),
                    source,
                })?,
            )
        }
        None => None,
    };
    Ok((location, credentials))
}

/// The repository of `namespace` in the location, at `<prefix>/restic/<namespace>`.
pub fn repository_location(
    spec: &BackupStorageLocationSpec,
    namespace: &str,
    credentials: Option<&S3Credentials>,
) -> Result<RepositoryLocation, LocationError> {
    if !is_dns_label(namespace) {
        return Err(LocationError::InvalidNamespace(namespace.to_owned()));
    }
    location_under(
        spec,
        &format!("{REPOSITORIES_DIR}/{namespace}"),
        credentials,
    )
}

/// The root of the location's layout: the bucket's prefix, or the directory's.
pub fn location_root(
    spec: &BackupStorageLocationSpec,
    credentials: Option<&S3Credentials>,
) -> Result<RepositoryLocation, LocationError> {
    location_under(spec, "", credentials)
}

/// The top-level directory of a location that holds the repositories.
pub const REPOSITORIES_DIR: &str = "restic";

fn location_under(
    spec: &BackupStorageLocationSpec,
    relative: &str,
    credentials: Option<&S3Credentials>,
) -> Result<RepositoryLocation, LocationError> {
    let prefix = spec.prefix.as_deref().unwrap_or_default().trim_matches('/');
    let mut path = PathBuf::from(prefix);
    if !relative.is_empty() {
        path.push(relative);
    }
    match spec.provider {
        StorageProvider::Filesystem => {
            let root = spec.path.as_deref().ok_or(LocationError::Incomplete(
                "a filesystem location needs spec.path",
            ))?;
            Ok(RepositoryLocation::Local {
                path: PathBuf::from(root).join(path),
            })
        }
        StorageProvider::S3 => {
            let bucket = spec
                .bucket
                .clone()
                .filter(|bucket| !bucket.is_empty())
                .ok_or(LocationError::Incomplete(
                    "an s3 location needs spec.bucket",
                ))?;
            let credentials = credentials.ok_or(LocationError::Incomplete(
                "an s3 location needs spec.credential, a Secret key holding an AWS credentials file",
            ))?;
            let config = spec.config.clone().unwrap_or_default();
            let ca_cert = config
                .ca_cert
                .as_deref()
                .map(ca_bundle)
                .transpose()
                .map_err(LocationError::CaCert)?;
            let location = S3Location {
                // A custom endpoint is addressed path-style unless told otherwise, as MinIO and
                // most S3-compatible stores need; AWS itself is addressed by virtual host.
                virtual_host_style: config.s3_url.is_none() && !config.force_path_style,
                endpoint: config.s3_url,
                bucket,
                prefix: path.display().to_string(),
                region: config.region,
                access_key_id: Some(credentials.access_key_id.clone()),
                secret_access_key: Some(credentials.secret_access_key.clone()),
                ca_cert,
                insecure_skip_tls_verify: config.insecure_skip_tls_verify,
            };
            location.warn_if_unchecked();
            Ok(RepositoryLocation::S3(location))
        }
    }
}

/// A DNS-1123 label, what Kubernetes allows as a namespace name.
pub fn is_dns_label(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{AccessMode, S3Config};

    fn s3_spec(config: S3Config) -> BackupStorageLocationSpec {
        BackupStorageLocationSpec {
            provider: StorageProvider::S3,
            bucket: Some("backups".into()),
            prefix: Some("/cluster-a/".into()),
            config: Some(config),
            credential: None,
            path: None,
            default: false,
            access_mode: AccessMode::ReadWrite,
            sync_period: None,
            validation_frequency: None,
        }
    }

    fn keys() -> S3Credentials {
        S3Credentials {
            access_key_id: "AKID".into(),
            secret_access_key: "SECRET".into(),
        }
    }

    #[test]
    fn s3_repositories_live_under_prefix_restic_namespace() {
        let spec = s3_spec(S3Config {
            s3_url: Some("http://minio:9000".into()),
            region: Some("eu-west-1".into()),
            ..S3Config::default()
        });
        let location = repository_location(&spec, "shop", Some(&keys())).unwrap();
        assert_eq!(
            location.restic_identifier(),
            "s3:http://minio:9000/backups/cluster-a/restic/shop"
        );
        let RepositoryLocation::S3(s3) = location else {
            panic!("not S3")
        };
        assert!(!s3.virtual_host_style);
        assert_eq!(s3.region.as_deref(), Some("eu-west-1"));
    }

    #[test]
    fn filesystem_repositories_live_under_the_path() {
        let mut spec = s3_spec(S3Config::default());
        spec.provider = StorageProvider::Filesystem;
        spec.path = Some("/srv/ferry".into());
        let location = repository_location(&spec, "shop", None).unwrap();
        assert_eq!(
            location.restic_identifier(),
            "/srv/ferry/cluster-a/restic/shop"
        );
    }

    #[test]
    fn bad_namespaces_and_incomplete_locations_are_refused() {
        let spec = s3_spec(S3Config::default());
        for namespace in ["", "../etc", "a/b", "UPPER"] {
            assert!(
                repository_location(&spec, namespace, None).is_err(),
                "{namespace}"
            );
        }
        let mut no_bucket = spec.clone();
        no_bucket.bucket = None;
        assert!(repository_location(&no_bucket, "shop", Some(&keys())).is_err());
        assert!(matches!(
            repository_location(&spec, "shop", None),
            Err(LocationError::Incomplete(_))
        ));
    }

    /// A CA made for these tests alone.
    const TEST_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBkTCCATegAwIBAgIUXme1CKgbySrvvvEc4ieaPTzyRcowCgYIKoZIzj0EAwIw
HTEbMBkGA1UEAwwSRmVycnkgdW5pdCB0ZXN0IENBMCAXDTI2MTEyNjE3NTI1NVoY
DzIxMjYxMTAyMTc1MjU1WjAdMRswGQYDVQQDDBJGZXJyeSB1bml0IHRlc3QgQ0Ew
WTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAASN/vocGWlOTQnfiLXvBAV7NDV3rz+L
UrKvADEQEQ7Mjqfvmh9hUjVTZxgfVRjVYDyS9JwB3lP56sRgENBZCHZQo1MwUTAd
BgNVHQ4EFgQU59PuE4Ovuf2jZhAUTSm3iH8yeUkwHwYDVR0jBBgwFoAU59PuE4Ov
uf2jZhAUTSm3iH8yeUkwDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNIADBF
AiA4FXNDFtJ1osJ6+ydumGM0QtBhYvOBQ0mH4Wla8/fmbAIhAIXMxyWaLxrddjm5
ehT19Zz7hph4QzaMx/TN9ICjaaar
-----END CERTIFICATE-----
";

    #[test]
    fn tls_settings_reach_the_repository() {
        use base64::Engine as _;
        let encoded = base64::engine::general_purpose::STANDARD.encode(TEST_CA);
        let cases = [
            // (config.caCert, config.insecureSkipTLSVerify)
            (Some(TEST_CA.to_owned()), false),
            (Some(encoded), false),
            (None, true),
        ];
        for (ca_cert, insecure_skip_tls_verify) in cases {
            let spec = s3_spec(S3Config {
                ca_cert: ca_cert.clone(),
                insecure_skip_tls_verify,
                ..S3Config::default()
            });
            let Ok(RepositoryLocation::S3(s3)) = repository_location(&spec, "shop", Some(&keys()))
            else {
                panic!("{ca_cert:?} was refused");
            };
            assert_eq!(s3.ca_cert.as_deref(), ca_cert.is_some().then_some(TEST_CA));
            assert_eq!(s3.insecure_skip_tls_verify, insecure_skip_tls_verify);
        }
    }

    #[test]
    fn a_ca_cert_that_is_no_certificate_is_refused_with_the_field_named() {
        let cut = &TEST_CA[..TEST_CA.len() / 2];
        for bad in ["", "not a certificate", "bm90IGEgY2VydGlmaWNhdGU=", cut] {
            let spec = s3_spec(S3Config {
                ca_cert: Some(bad.to_owned()),
                ..S3Config::default()
            });
            let err = repository_location(&spec, "shop", Some(&keys())).unwrap_err();
            assert!(matches!(err, LocationError::CaCert(_)), "{bad}: {err:?}");
            assert!(err.to_string().contains("config.caCert"), "{err}");
        }
    }

    #[test]
    fn credentials_come_from_the_default_profile() {
        let text = "# keys\n[other]\naws_access_key_id = wrong\n[default]\naws_access_key_id = AKID\naws_secret_access_key=SECRET\n";
        let credentials = parse_aws_credentials(text).unwrap();
        assert_eq!(credentials.access_key_id, "AKID");
        assert_eq!(credentials.secret_access_key, "SECRET");
        assert!(!format!("{credentials:?}").contains("SECRET"));
        assert_eq!(
            parse_aws_credentials("[default]\naws_access_key_id=x\n"),
            Err(LocationError::Credentials("aws_secret_access_key"))
        );
    }
}
