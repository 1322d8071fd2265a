//! `ferry location`: the BackupStorageLocations, and which is the default.

use clap::{Args, Subcommand, ValueEnum};
use ferry_shared::crd::{
    AccessMode, BackupStorageLocation, BackupStorageLocationSpec, S3Config, SecretKeyRef,
    StorageProvider,
};
use ferry_shared::repository::read_ca_bundle;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use super::connect::Ferry;
use super::error::CliError;
use super::output::{Table, age, print, write_out};

#[derive(Debug, Subcommand)]
pub enum LocationCommand {
    /// List the storage locations, or show the ones named.
    Get {
        /// Locations to show; every location when none is named.
        names: Vec<String>,
    },
    /// Create a storage location.
    Create(Box<CreateArgs>),
    /// Make a location the default, the one Backups use when they name none.
    SetDefault {
        /// The storage location's name.
        name: String,
    },
}

/// The kind of a storage location, as a flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Provider {
    /// An S3 bucket: AWS, MinIO, or any S3-compatible service.
    S3,
    /// A directory that the coordinator and every node agent can reach.
    Filesystem,
}

/// Where a location keeps its data; `location create` and `install` take these flags.
#[derive(Debug, Clone, Default, Args)]
pub struct LocationFlags {
    /// The kind of storage.
    #[arg(long, value_enum)]
    pub provider: Option<Provider>,
    /// The bucket of an s3 location (required with --provider s3).
    #[arg(long)]
    pub bucket: Option<String>,
    /// The key prefix in the bucket under which Ferry writes, so clusters can share a bucket.
    #[arg(long)]
    pub prefix: Option<String>,
    /// The endpoint of an S3-compatible service, such as https://minio.example:9000; AWS when
    /// absent.
    #[arg(long, value_name = "URL")]
    pub s3_url: Option<String>,
    /// The region of the bucket, such as us-east-1.
    #[arg(long)]
    pub region: Option<String>,
    /// Address the bucket as <s3-url>/<bucket>, as MinIO and most self-hosted services need.
    #[arg(long)]
    pub force_path_style: bool,
    /// A PEM file of the CA certificates that may have signed the S3 endpoint's certificate,
    /// such as a private CA's; the location keeps them as config.caCert.
    #[arg(long, value_name = "FILE", value_parser = read_ca_bundle)]
    pub s3_ca_cert: Option<String>,
    /// Accept any TLS certificate from the S3 endpoint, unchecked: for tests only.
    #[arg(long)]
    pub s3_insecure_skip_tls_verify: bool,
    /// The directory of a filesystem location (required with --provider filesystem); the
    /// coordinator and every node agent must see it at this path.
    #[arg(long)]
    pub path: Option<String>,
}

impl LocationFlags {
    /// Refuses flags that do not fit together; `s3_only` are the caller's own flags that only
    /// an s3 location takes, with whether each was given.
    pub fn check(&self, s3_only: &[(&'static str, bool)]) -> Result<(), String> {
        let s3_only = [
            &[
                ("--bucket", self.bucket.is_some()),
                ("--s3-url", self.s3_url.is_some()),
                ("--region", self.region.is_some()),
                ("--force-path-style", self.force_path_style),
                ("--s3-ca-cert", self.s3_ca_cert.is_some()),
                (
                    "--s3-insecure-skip-tls-verify",
                    self.s3_insecure_skip_tls_verify,
                ),
            ][..],
            s3_only,
        ]
        .concat();
        let given = |flags: &[(&'static str, bool)]| {
            flags
                .iter()
                .find(|(_, given)| *given)
                .map(|(flag, _)| *flag)
        };
        match self.provider {
            None => {
                let any = [
                    &s3_only[..],
                    &[
                        ("--prefix", self.prefix.is_some()),
                        ("--path", self.path.is_some()),
                    ],
                ]
                .concat();
                given(&any).map_or(Ok(()), |flag| Err(format!("{flag} needs --provider")))
            }
            Some(Provider::S3) if self.bucket.is_none() => {
                Err("--provider s3 needs --bucket".to_owned())
            }
            Some(Provider::S3) if self.path.is_some() => {
                Err("--path is for --provider filesystem; s3 takes --bucket".to_owned())
            }
            Some(Provider::Filesystem) if self.path.is_none() => {
                Err("--provider filesystem needs --path".to_owned())
            }
            Some(Provider::Filesystem) => {
                given(&s3_only).map_or(Ok(()), |flag| Err(format!("{flag} is for --provider s3")))
            }
            Some(Provider::S3) => Ok(()),
        }
    }

    /// The spec of the location these checked flags describe, not yet the default; `None`
    /// without `--provider`.
    pub fn spec(&self, credential: Option<SecretKeyRef>) -> Option<BackupStorageLocationSpec> {
        let config = S3Config {
            region: self.region.clone(),
            s3_url: self.s3_url.clone(),
            force_path_style: self.force_path_style,
            insecure_skip_tls_verify: self.s3_insecure_skip_tls_verify,
            ca_cert: self.s3_ca_cert.clone(),
        };
        Some(BackupStorageLocationSpec {
            provider: match self.provider? {
                Provider::S3 => StorageProvider::S3,
                Provider::Filesystem => StorageProvider::Filesystem,
            },
            bucket: self.bucket.clone(),
            prefix: self.prefix.clone(),
            config: (config != S3Config::default()).then_some(config),
            credential,
            path: self.path.clone(),
            default: false,
            access_mode: AccessMode::ReadWrite,
            sync_period: None,
            validation_frequency: None,
        })
    }
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The location's name.
    name: String,
    #[command(flatten)]
    location: LocationFlags,
    /// The Secret key that holds the S3 credentials (an AWS shared-credentials file), as
    /// SECRET=KEY, in the install namespace.
    #[arg(long, value_name = "SECRET=KEY", value_parser = parse_secret_key)]
    credential: Option<SecretKeyRef>,
    /// Make it the default location.
    #[arg(long)]
    default: bool,
    /// Only restore from it: nothing is ever written to it.
    #[arg(long)]
    read_only: bool,
}

fn parse_secret_key(text: &str) -> Result<SecretKeyRef, String> {
    match text.split_once('=') {
        Some((name, key)) if !name.is_empty() && !key.is_empty() => Ok(SecretKeyRef {
            name: name.to_owned(),
            key: key.to_owned(),
        }),
        _ => Err(format!("{text:?} is not SECRET=KEY")),
    }
}

pub async fn run(ferry: &Ferry, command: LocationCommand) -> Result<(), CliError> {
    match command {
        LocationCommand::Get { names } => get(ferry, &names).await,
        LocationCommand::Create(args) => create(ferry, *args).await,
        LocationCommand::SetDefault { name } => {
            set_default(ferry, &name).await?;
            write_out(&format!("Storage location {name} is the default.\n"))
        }
    }
}

async fn get(ferry: &Ferry, names: &[String]) -> Result<(), CliError> {
    let locations: Vec<BackupStorageLocation> =
        ferry.named_or_all("BackupStorageLocation", names).await?;
    print(&locations, names.len() == 1, ferry.format, |locations| {
        let mut table = Table::new(&[
            "NAME",
            "PROVIDER",
            "WHERE",
            "PHASE",
            "ACCESS",
            "DEFAULT",
            "LAST VALIDATED",
            "AGE",
        ]);
        for location in locations {
            let spec = &location.spec;
            let status = location.status.clone().unwrap_or_default();
            let place = match spec.provider {
                StorageProvider::S3 => spec.bucket.clone().unwrap_or_default(),
                StorageProvider::Filesystem => spec.path.clone().unwrap_or_default(),
            };
            let prefix = spec
                .prefix
                .as_deref()
                .map(|p| format!("/{p}"))
                .unwrap_or_default();
            table.row(vec![
                location.name_any(),
                format!("{:?}", spec.provider).to_lowercase(),
                format!("{place}{prefix}"),
                status
                    .phase
                    .map_or_else(|| "Unknown".to_owned(), |p| format!("{p:?}")),
                format!("{:?}", spec.access_mode),
                spec.default.to_string(),
                age(status.last_validation_time.as_ref()),
                age(location.metadata.creation_timestamp.as_ref()),
            ]);
        }
        table
    })
}

async fn create(ferry: &Ferry, args: CreateArgs) -> Result<(), CliError> {
    let credential = [("--credential", args.credential.is_some())];
    args.location
        .check(&credential)
        .map_err(CliError::InvalidFlag)?;
    let Some(mut spec) = args.location.spec(args.credential.clone()) else {
        return Err(CliError::InvalidFlag(
            "--provider is needed: s3 or filesystem".to_owned(),
        ));
    };
    spec.default = args.default;
    if args.read_only {
        spec.access_mode = AccessMode::ReadOnly;
    }
    let location = BackupStorageLocation::new(&args.name, spec);
    ferry
        .api::<BackupStorageLocation>()
        .create(&PostParams::default(), &location)
        .await
        .map_err(CliError::creating(
            "BackupStorageLocation",
            &args.name,
            &ferry.namespace,
        ))?;
    if args.default {
        set_default(ferry, &args.name).await?;
    }
    let default = if args.default { ", the default" } else { "" };
    write_out(&format!(
        "Storage location {}{default} created; `ferry location get {}` shows when the coordinator has checked it.\n",
        args.name, args.name
    ))
}

/// Makes `name` the only default location.
async fn set_default(ferry: &Ferry, name: &str) -> Result<(), CliError> {
    let api = ferry.api::<BackupStorageLocation>();
    ferry
        .get::<BackupStorageLocation>("BackupStorageLocation", name)
        .await?;
    let all: Vec<BackupStorageLocation> = ferry.named_or_all("BackupStorageLocation", &[]).await?;
    for location in all {
        let default = location.name_any() == name;
        if location.spec.default == default {
            continue;
        }
        let patch = json!({"spec": {"default": default}});
        api.patch(
            &location.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(CliError::from_kube)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3() -> LocationFlags {
        LocationFlags {
            provider: Some(Provider::S3),
            bucket: Some("b".into()),
            ..LocationFlags::default()
        }
    }

    fn filesystem() -> LocationFlags {
        LocationFlags {
            provider: Some(Provider::Filesystem),
            path: Some("/backups".into()),
            ..LocationFlags::default()
        }
    }

    /// A case: its name, the flags, the caller's s3-only flags, and the refusal expected.
    type Case = (
        &'static str,
        LocationFlags,
        &'static [(&'static str, bool)],
        Option<&'static str>,
    );

    #[test]
    fn location_flags_must_fit_together() {
        const KEYS: &[(&str, bool)] = &[("--secret-file", true)];
        let cases: [Case; 10] = [
            ("nothing", LocationFlags::default(), &[], None),
            ("s3", s3(), KEYS, None),
            ("filesystem", filesystem(), &[], None),
            (
                "s3 without a bucket",
                LocationFlags {
                    bucket: None,
                    ..s3()
                },
                &[],
                Some("--provider s3 needs --bucket"),
            ),
            (
                "filesystem without a path",
                LocationFlags {
                    path: None,
                    ..filesystem()
                },
                &[],
                Some("--provider filesystem needs --path"),
            ),
            (
                "a bucket without a provider",
                LocationFlags {
                    bucket: Some("b".into()),
                    ..LocationFlags::default()
                },
                &[],
                Some("--bucket needs --provider"),
            ),
            (
                "a path without a provider",
                LocationFlags {
                    path: Some("/x".into()),
                    ..LocationFlags::default()
                },
                &[],
                Some("--path needs --provider"),
            ),
            (
                "keys for a directory",
                filesystem(),
                KEYS,
                Some("--secret-file is for --provider s3"),
            ),
            (
                "a path for s3",
                LocationFlags {
                    path: Some("/x".into()),
                    ..s3()
                },
                &[],
                Some("--path is for --provider filesystem; s3 takes --bucket"),
            ),
            (
                "a CA for a directory",
                LocationFlags {
                    s3_ca_cert: Some("PEM".into()),
                    ..filesystem()
                },
                &[],
                Some("--s3-ca-cert is for --provider s3"),
            ),
        ];
        for (name, flags, s3_only, expected) in cases {
            assert_eq!(flags.check(s3_only).err().as_deref(), expected, "{name}");
        }
    }

    #[test]
    fn the_spec_says_what_the_flags_say() {
        assert!(LocationFlags::default().spec(None).is_none());
        let given = LocationFlags {
            s3_url: Some("http://minio:9000".into()),
            force_path_style: true,
            s3_ca_cert: Some("PEM".into()),
            s3_insecure_skip_tls_verify: true,
            ..s3()
        };
        let spec = given.spec(None).expect("a location");
        assert_eq!(spec.provider, StorageProvider::S3);
        let config = spec.config.expect("S3 settings");
        assert!(config.force_path_style);
        assert_eq!(config.s3_url.as_deref(), Some("http://minio:9000"));
        assert_eq!(config.ca_cert.as_deref(), Some("PEM"));
        assert!(config.insecure_skip_tls_verify);
        let spec = filesystem().spec(None).expect("a location");
        assert_eq!(
            (spec.path.as_deref(), spec.config),
            (Some("/backups"), None)
        );
    }

    #[test]
    fn credentials_are_named_secret_equals_key() {
        let reference = parse_secret_key("s3-keys=cloud").expect("valid");
        assert_eq!(
            (reference.name.as_str(), reference.key.as_str()),
            ("s3-keys", "cloud")
        );
        for bad in ["s3-keys", "=cloud", "s3-keys="] {
            assert!(parse_secret_key(bad).is_err(), "{bad}");
        }
    }
}
