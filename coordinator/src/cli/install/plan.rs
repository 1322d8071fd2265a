//! What `ferry install` applies, decided from the flags alone: the manifests with their
//! rewrites, the default storage location with its credentials, and the repository password's
//! Secret. Nothing here touches the cluster or the files.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Args;
use ferry_shared::crd::{BackupStorageLocation, BackupStorageLocationSpec, SecretKeyRef};
use ferry_shared::names;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

use super::InstallError;
use super::manifests;
use crate::cli::location::LocationFlags;

/// The Secret that install puts the `--secret-file` into.
pub const CREDENTIALS_SECRET: &str = "ferry-s3-credentials";
/// Its key, which the storage location's `credential` names.
pub const CREDENTIALS_KEY: &str = "cloud";
/// The name of the storage location install creates.
pub const LOCATION: &str = "default";
/// What a redacted secret value shows.
const REDACTED: &str = "<redacted>";

/// The default storage location install creates, when `--provider` is given.
#[derive(Debug, Default, Args)]
pub struct StorageFlags {
    #[command(flatten)]
    pub location: LocationFlags,
    /// An AWS shared-credentials file with the keys of an s3 location; it goes into Secret
    /// ferry-s3-credentials, key cloud.
    #[arg(long, value_name = "FILE")]
    pub secret_file: Option<PathBuf>,
}

impl StorageFlags {
    /// Refuses flags that do not fit together, before any file is read.
    pub fn check(&self) -> Result<(), InstallError> {
        let s3_only = [("--secret-file", self.secret_file.is_some())];
        self.location.check(&s3_only).map_err(InstallError::Flags)
    }

    /// The default storage location of these (checked) flags, in `namespace`.
    pub fn location(&self, namespace: &str) -> Option<BackupStorageLocation> {
        let credential = self.secret_file.as_ref().map(|_| SecretKeyRef {
            name: CREDENTIALS_SECRET.to_owned(),
            key: CREDENTIALS_KEY.to_owned(),
        });
        let spec = BackupStorageLocationSpec {
            default: true,
            ..self.location.spec(credential)?
        };
        let mut location = BackupStorageLocation::new(LOCATION, spec);
        location.metadata.namespace = Some(namespace.to_owned());
        location.metadata.labels = Some(part_of_ferry());
        Some(location)
    }
}

/// Everything install applies but the repository password, in order.
#[derive(Debug)]
pub struct Plan {
    pub namespace: String,
    /// The image the workloads run.
    pub image: String,
    /// The CustomResourceDefinitions, applied and established first.
    pub crds: Vec<Value>,
    /// The namespace, RBAC, workloads and Services.
    pub objects: Vec<Value>,
    /// The storage location's Secret and the location itself, applied last.
    pub storage: Vec<Value>,
}

impl Plan {
    /// The manifests moved to `namespace`, with `image` if given, and the storage location of
    /// `flags` with the `credentials` file given for it.
    pub fn new(
        namespace: &str,
        image: Option<&str>,
        flags: &StorageFlags,
        credentials: Option<&str>,
    ) -> Result<Self, InstallError> {
        let mut objects = manifests::objects()?;
        manifests::set_namespace(&mut objects, namespace);
        if let Some(image) = image {
            manifests::set_image(&mut objects, image);
        }
        let image = manifests::image(&objects).unwrap_or_default();
        let (crds, objects) = objects.into_iter().partition(manifests::is_crd);
        let mut storage = Vec::new();
        if let Some(credentials) = credentials {
            storage.push(secret(
                namespace,
                CREDENTIALS_SECRET,
                CREDENTIALS_KEY,
                credentials,
            ));
        }
        if let Some(location) = flags.location(namespace) {
            storage.push(to_value(&location));
        }
        Ok(Self {
            namespace: namespace.to_owned(),
            image,
            crds,
            objects,
            storage,
        })
    }

    /// Every object as multi-document YAML, with `password_secret` among them and every
    /// Secret's values redacted: what `--dry-run` prints.
    pub fn render(&self, password_secret: &Value) -> Result<String, InstallError> {
        let all = self.crds.iter().chain(&self.objects);
        let all = all
            .chain(std::iter::once(password_secret))
            .chain(&self.storage);
        let mut text = String::new();
        for object in all {
            text.push_str("---\n");
            let yaml = serde_yaml::to_string(&redacted(object)).map_err(InstallError::Encode)?;
            text.push_str(&yaml);
        }
        Ok(text)
    }
}

/// What install does with the repository password.
#[derive(Debug, PartialEq, Eq)]
pub enum PasswordPlan {
    /// The Secret exists: keep it, whatever it holds.
    Keep,
    /// Create the Secret with the password of `--password-file`.
    Given(String),
    /// Create the Secret with a new random password, and show it once.
    Generate,
}

/// Decides on the repository password from the one in the cluster (`existing`) and the one of
/// `--password-file` (`given`). An existing password is never replaced: every backup made with
/// it would become unreadable.
pub fn password_plan(
    existing: Option<&str>,
    given: Option<&str>,
    namespace: &str,
) -> Result<PasswordPlan, InstallError> {
    match (existing.map(str::trim), given) {
        (Some(existing), Some(given)) if existing != given => Err(InstallError::PasswordDiffers {
            namespace: namespace.to_owned(),
        }),
        (Some(_), _) => Ok(PasswordPlan::Keep),
        (None, Some(given)) => Ok(PasswordPlan::Given(given.to_owned())),
        (None, None) => Ok(PasswordPlan::Generate),
    }
}

/// The repository password's Secret.
pub fn password_secret(namespace: &str, password: &str) -> Value {
    secret(
        namespace,
        names::REPOSITORY_SECRET,
        names::REPOSITORY_PASSWORD_KEY,
        password,
    )
}

/// An Opaque Secret in `namespace` holding `value` under `key`.
fn secret(namespace: &str, name: &str, key: &str, value: &str) -> Value {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(part_of_ferry()),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        string_data: Some(BTreeMap::from([(key.to_owned(), value.to_owned())])),
        ..Secret::default()
    };
    let mut value = to_value(&secret);
    value["apiVersion"] = Value::from("v1");
    value["kind"] = Value::from("Secret");
    value
}

fn to_value(object: &impl serde::Serialize) -> Value {
    serde_json::to_value(object).unwrap_or_default()
}

fn part_of_ferry() -> BTreeMap<String, String> {
    BTreeMap::from([("app.kubernetes.io/part-of".to_owned(), "ferry".to_owned())])
}

/// The object with every value of a Secret replaced by `<redacted>`.
fn redacted(object: &Value) -> Value {
    let mut object = object.clone();
    if manifests::kind(&object) == "Secret" {
        for field in ["stringData", "data"] {
            if let Some(map) = object.get_mut(field).and_then(Value::as_object_mut) {
                map.values_mut().for_each(|v| *v = Value::from(REDACTED));
            }
        }
    }
    object
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::cli::location::Provider;

    fn s3() -> StorageFlags {
        StorageFlags {
            location: LocationFlags {
                provider: Some(Provider::S3),
                bucket: Some("b".into()),
                ..LocationFlags::default()
            },
            secret_file: None,
        }
    }

    fn filesystem() -> StorageFlags {
        StorageFlags {
            location: LocationFlags {
                provider: Some(Provider::Filesystem),
                path: Some("/backups".into()),
                ..LocationFlags::default()
            },
            secret_file: None,
        }
    }

    #[test]
    fn keys_are_only_for_an_s3_location() {
        let keys = Some(PathBuf::from("keys"));
        let s3 = StorageFlags {
            secret_file: keys.clone(),
            ..s3()
        };
        assert!(s3.check().is_ok());
        let directory = StorageFlags {
            secret_file: keys,
            ..filesystem()
        };
        assert_eq!(
            directory
                .check()
                .err()
                .map(|err| err.to_string())
                .as_deref(),
            Some("--secret-file is for --provider s3")
        );
    }

    #[test]
    fn the_location_says_what_the_flags_say() {
        let given = StorageFlags {
            location: LocationFlags {
                prefix: Some("cluster-a".into()),
                s3_url: Some("http://minio:9000".into()),
                region: Some("eu-west-1".into()),
                force_path_style: true,
                ..s3().location
            },
            secret_file: Some("keys".into()),
        };
        let location = to_value(&given.location("backup").expect("a location"));
        assert_eq!(
            location,
            json!({
                "apiVersion": "ferry.dev/v1alpha1",
                "kind": "BackupStorageLocation",
                "metadata": {"name": "default", "namespace": "backup",
                             "labels": {"app.kubernetes.io/part-of": "ferry"}},
                "spec": {
                    "provider": "s3", "bucket": "b", "prefix": "cluster-a", "default": true,
                    "accessMode": "ReadWrite",
                    "config": {"region": "eu-west-1", "s3Url": "http://minio:9000",
                               "forcePathStyle": true},
                    "credential": {"name": "ferry-s3-credentials", "key": "cloud"},
                },
            })
        );
        let location = to_value(&filesystem().location("ferry").expect("a location"));
        assert_eq!(
            location["spec"],
            json!({"provider": "filesystem", "path": "/backups", "default": true,
                   "accessMode": "ReadWrite"})
        );
        assert!(StorageFlags::default().location("ferry").is_none());
    }

    #[test]
    fn an_existing_password_is_kept_and_never_replaced() {
        use PasswordPlan::*;
        let cases = [
            (None, None, Ok(Generate)),
            (None, Some("p"), Ok(Given("p".into()))),
            (Some("old"), None, Ok(Keep)),
            (Some("old"), Some("old"), Ok(Keep)),
            (Some("old\n"), Some("old"), Ok(Keep)),
            (Some("old"), Some("new"), Err(())),
        ];
        for (existing, given, expected) in cases {
            let got = password_plan(existing, given, "ferry").map_err(|_| ());
            assert_eq!(got, expected, "{existing:?} {given:?}");
        }
    }

    #[test]
    fn the_dry_run_shows_every_object_and_no_secret() {
        let flags = StorageFlags {
            secret_file: Some("keys".into()),
            ..s3()
        };
        let plan =
            Plan::new("backup", Some("r.example/f:1"), &flags, Some("KEYS-TEXT")).expect("plan");
        let text = plan
            .render(&password_secret("backup", "PASSWORD-TEXT"))
            .expect("render");
        let documents: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
            .map(|d| serde::Deserialize::deserialize(d).expect("YAML"))
            .collect();
        assert_eq!(
            documents.len(),
            plan.crds.len() + plan.objects.len() + 1 + plan.storage.len()
        );
        assert!(!text.contains("PASSWORD-TEXT") && !text.contains("KEYS-TEXT"));
        let secrets: Vec<&Value> = documents
            .iter()
            .filter(|d| manifests::kind(d) == "Secret")
            .collect();
        assert_eq!(secrets.len(), 2);
        assert_eq!(
            secrets[0]["stringData"],
            json!({"repository-password": "<redacted>"})
        );
        assert_eq!(secrets[1]["stringData"], json!({"cloud": "<redacted>"}));
        assert_eq!(plan.image, "r.example/f:1");
        assert!(!text.contains("namespace: ferry"));
        assert_eq!(
            manifests::kind(documents.last().unwrap()),
            "BackupStorageLocation"
        );
    }
}
