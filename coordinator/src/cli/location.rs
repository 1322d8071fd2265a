//! `ferry location`: the BackupStorageLocations, and which is the default.

use clap::{Args, Subcommand, ValueEnum};
use ferry_shared::crd::{
    AccessMode, BackupStorageLocation, BackupStorageLocationSpec, S3Config, SecretKeyRef,
    StorageProvider,
};
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

/// The kind of storage, as a flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Provider {
    /// An S3-compatible object store.
    S3,
    /// A directory that the coordinator and every node agent can reach.
    Filesystem,
}

/// Where a location's data is; shared by `location create` and `install`.
#[derive(Debug, Clone, Args)]
pub struct LocationFlags {
    /// The kind of storage.
    #[arg(long, value_enum)]
    pub provider: Option<Provider>,
    /// The S3 bucket.
    #[arg(long)]
    pub bucket: Option<String>,
    /// A prefix inside the bucket, or below the path, for Ferry's objects.
    #[arg(long)]
    pub prefix: Option<String>,
    /// The S3 endpoint URL, such as https://minio.example:9000; AWS when absent.
    #[arg(long, value_name = "URL")]
    pub s3_url: Option<String>,
    /// The bucket's region.
    #[arg(long)]
    pub region: Option<String>,
    /// Address the bucket in the URL's path rather than its host name (MinIO and most
    /// self-hosted stores need this).
    #[arg(long)]
    pub force_path_style: bool,
    /// The directory of a filesystem location, as the coordinator and agents see it.
    #[arg(long, value_name = "DIR")]
    pub path: Option<String>,
}

impl LocationFlags {
    /// The location's spec; `None` when no provider is given.
    pub fn spec(
        &self,
        credential: Option<SecretKeyRef>,
    ) -> Result<Option<BackupStorageLocationSpec>, CliError> {
        let missing = |flag: &str, provider: &str| {
            CliError::InvalidFlag(format!("--provider {provider} needs {flag}"))
        };
        let provider = match self.provider {
            None => return Ok(None),
            Some(Provider::S3) if self.bucket.is_none() => return Err(missing("--bucket", "s3")),
            Some(Provider::Filesystem) if self.path.is_none() => {
                return Err(missing("--path", "filesystem"));
            }
            Some(Provider::S3) => StorageProvider::S3,
            Some(Provider::Filesystem) => StorageProvider::Filesystem,
        };
        let s3 = provider == StorageProvider::S3;
        Ok(Some(BackupStorageLocationSpec {
            provider,
            bucket: self.bucket.clone(),
            prefix: self.prefix.clone(),
            config: s3.then(|| S3Config {
                region: self.region.clone(),
                s3_url: self.s3_url.clone(),
                force_path_style: self.force_path_style,
                ..S3Config::default()
            }),
            credential,
            path: self.path.clone(),
            default: false,
            access_mode: AccessMode::ReadWrite,
            sync_period: None,
            validation_frequency: None,
        }))
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
        LocationCommand::SetDefault { name } => set_default(ferry, &name).await,
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
    let Some(mut spec) = args.location.spec(args.credential.clone())? else {
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
        .map_err(CliError::about(
            "BackupStorageLocation",
            &args.name,
            &ferry.namespace,
        ))?;
    if args.default {
        set_default(ferry, &args.name).await?;
    }
    write_out(&format!(
        "Storage location {} created; `ferry location get {}` shows when the coordinator has checked it.\n",
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
    write_out(&format!("Storage location {name} is the default.\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(provider: Option<Provider>) -> LocationFlags {
        LocationFlags {
            provider,
            bucket: None,
            prefix: None,
            s3_url: None,
            region: None,
            force_path_style: false,
            path: None,
        }
    }

    #[test]
    fn each_provider_needs_its_own_place() {
        assert!(flags(None).spec(None).expect("no location").is_none());
        assert!(flags(Some(Provider::S3)).spec(None).is_err());
        assert!(flags(Some(Provider::Filesystem)).spec(None).is_err());
        let s3 = LocationFlags {
            bucket: Some("b".into()),
            s3_url: Some("http://minio:9000".into()),
            force_path_style: true,
            ..flags(Some(Provider::S3))
        };
        let spec = s3.spec(None).expect("valid").expect("a location");
        assert_eq!(spec.provider, StorageProvider::S3);
        let config = spec.config.expect("S3 settings");
        assert!(config.force_path_style);
        assert_eq!(config.s3_url.as_deref(), Some("http://minio:9000"));
        let filesystem = LocationFlags {
            path: Some("/backups".into()),
            ..flags(Some(Provider::Filesystem))
        };
        let spec = filesystem.spec(None).expect("valid").expect("a location");
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
