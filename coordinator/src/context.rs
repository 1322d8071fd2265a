//! What every controller of the coordinator shares.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_shared::crd::{Backup, BackupRepository, BackupStorageLocation, Restore, Schedule};
use ferry_shared::layout::ObjectStore;
use ferry_shared::names;
use ferry_shared::repository::{RepositoryConfig, RepositoryLocation};
use ferry_shared::retry::Retrier;
use ferry_shared::secret::repository_password;
use ferry_shared::storage::{
    LocationError, LookupError, S3Credentials, location_root, read_location, repository_location,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::warn;

use crate::config::RunArgs;
use crate::downloads::DownloadTable;
use crate::error::{Error, StorageError};
use crate::jobs::JobRunner;
use crate::metrics::Metrics;

pub struct Context {
    pub client: Client,
    pub namespace: String,
    pub settings: RunArgs,
    pub metrics: Metrics,
    pub jobs: JobRunner,
    pub backoff: crate::backoff::Backoff,
    /// Every request to object storage runs under it.
    pub store_retrier: Retrier,
    /// The downloads of filesystem locations that the HTTP server answers.
    pub downloads: DownloadTable,
    /// When this coordinator process started.
    pub started: Time,
    /// One event recorder per controller, by the kind it reconciles.
    recorders: HashMap<String, Recorder>,
    /// One lock per repository, by identifier. Maintenance holds it while it runs; creating
    /// transfers into a repository holds it too, so no transfer can start during a prune.
    repository_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// What the coordinator process shares with its controllers: its start and its HTTP server's
/// downloads.
pub struct Server {
    pub started: Time,
    pub downloads: DownloadTable,
}

/// A storage location with what it takes to reach it.
pub struct ResolvedLocation {
    pub location: BackupStorageLocation,
    credentials: Option<S3Credentials>,
}

impl ResolvedLocation {
    pub fn name(&self) -> String {
        self.location.name_any()
    }

    pub fn read_only(&self) -> bool {
        self.location.spec.access_mode == ferry_shared::crd::AccessMode::ReadOnly
    }

    /// The location's objects, under its prefix.
    pub fn store(&self, retrier: &Retrier) -> Result<ObjectStore, StorageError> {
        let root = location_root(&self.location.spec, self.credentials.as_ref())
            .map_err(|source| self.invalid(source))?;
        Ok(ObjectStore::open(&root, retrier.clone())?)
    }

    /// The repository of `namespace` in the location.
    pub fn repository(&self, namespace: &str) -> Result<RepositoryLocation, StorageError> {
        repository_location(&self.location.spec, namespace, self.credentials.as_ref())
            .map_err(|source| self.invalid(source))
    }

    fn invalid(&self, source: LocationError) -> StorageError {
        StorageError::Location {
            location: self.name(),
            source,
        }
    }
}

impl Context {
    pub fn new(
        client: Client,
        settings: RunArgs,
        metrics: Metrics,
        jobs: JobRunner,
        server: Server,
    ) -> Self {
        let recorders = [
            Backup::kind(&()),
            Restore::kind(&()),
            Schedule::kind(&()),
            BackupRepository::kind(&()),
            BackupStorageLocation::kind(&()),
        ]
        .into_iter()
        .map(|kind| {
            let reporter = Reporter {
                controller: format!(
                    "{}/{}",
                    names::field_manager::COORDINATOR,
                    kind.to_lowercase()
                ),
                instance: settings.identity.clone(),
            };
            (kind.into_owned(), Recorder::new(client.clone(), reporter))
        })
        .collect();
        let store_retrier = Retrier::new(
            settings.storage_retry_budget,
            Arc::new(metrics.storage_retries()),
        );
        Self {
            store_retrier,
            downloads: server.downloads,
            started: server.started,
            recorders,
            namespace: settings.namespace.clone(),
            client,
            settings,
            metrics,
            jobs,
            backoff: crate::backoff::Backoff::default(),
            repository_locks: Mutex::new(HashMap::new()),
        }
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Records an Event on `object`; a failure to record is logged, never fatal.
    pub async fn event<K>(&self, object: &K, warning: bool, reason: &str, note: String)
    where
        K: Resource<DynamicType = ()>,
    {
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_owned(),
            note: Some(note),
            action: reason.to_owned(),
            secondary: None,
        };
        let Some(recorder) = self.recorders.get(K::kind(&()).as_ref()) else {
            return;
        };
        if let Err(err) = recorder.publish(&event, &object.object_ref(&())).await {
            warn!(%err, reason, "cannot record an event");
        }
    }

    /// Writes the status of a coordinator-owned object by server-side apply.
    pub async fn apply_status<K, S>(&self, object: &K, status: &S) -> Result<(), kube::Error>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
        S: Serialize,
    {
        let patch = serde_json::json!({
            "apiVersion": K::api_version(&()),
            "kind": K::kind(&()),
            "status": status,
        });
        self.api::<K>()
            .patch_status(
                &object.name_any(),
                &PatchParams::apply(names::field_manager::COORDINATOR).force(),
                &Patch::Apply(patch),
            )
            .await
            .map(|_| ())
    }

    /// The storage location `name`, with its credentials read. The inner error says why the
    /// location cannot be used, for the status of the object that names it; the outer one is a
    /// failure to read the cluster, to be retried.
    pub async fn location(
        &self,
        name: &str,
    ) -> Result<Result<ResolvedLocation, LookupError>, Error> {
        match read_location(&self.client, &self.namespace, name).await {
            Ok((location, credentials)) => Ok(Ok(ResolvedLocation {
                location,
                credentials,
            })),
            Err(err) if err.is_transient() => Err(err.into()),
            Err(err) => Ok(Err(err)),
        }
    }

    /// The name of the location a Backup without one uses: the one marked default. The inner
    /// error says why there is none to use.
    pub async fn default_location(&self) -> Result<Result<String, String>, Error> {
        let locations = self
            .api::<BackupStorageLocation>()
            .list(&Default::default())
            .await?;
        let defaults: Vec<String> = locations
            .items
            .iter()
            .filter(|location| location.spec.default)
            .map(ResourceExt::name_any)
            .collect();
        Ok(match defaults.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(
                "no storage location is marked default; name one in spec.storageLocation"
                    .to_owned(),
            ),
            many => Err(format!(
                "several storage locations are marked default ({}); name one in spec.storageLocation",
                many.join(", ")
            )),
        })
    }

    /// How to reach and unlock the repository of `namespace` in `location`.
    pub async fn repository_config(
        &self,
        location: &ResolvedLocation,
        namespace: &str,
    ) -> Result<RepositoryConfig, Error> {
        let password = repository_password(&self.client, &self.namespace).await?;
        Ok(RepositoryConfig {
            location: location.repository(namespace)?,
            password,
            cache_dir: None,
            retry_budget: self.settings.storage_retry_budget,
        })
    }

    /// Locks the repositories of `namespaces` in `location`, all or none.
    pub fn lock_repositories<'n>(
        &self,
        location: &ResolvedLocation,
        namespaces: impl IntoIterator<Item = &'n String>,
    ) -> Locked {
        let mut guards = Vec::new();
        let mut identifiers = BTreeMap::new();
        for namespace in namespaces {
            let identifier = match location.repository(namespace) {
                Ok(repository) => repository.restic_identifier(),
                Err(err) => return Locked::Failed(err.to_string()),
            };
            let Some(guard) = self.try_lock_repository(&identifier) else {
                return Locked::Busy(namespace.clone());
            };
            guards.push(guard);
            identifiers.insert(namespace.clone(), identifier);
        }
        Locked::Held {
            guards,
            identifiers,
        }
    }

    /// The repository's lock, if nobody holds it: held by maintenance for its whole run, and
    /// by whoever creates transfers into the repository while it checks and creates them.
    pub fn try_lock_repository(
        &self,
        identifier: &str,
    ) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        let lock = self
            .repository_locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(identifier.to_owned())
            .or_default()
            .clone();
        lock.try_lock_owned().ok()
    }
}

/// The repositories of a backup or restore, locked against maintenance while its transfers are
/// created.
pub enum Locked {
    /// Every lock is held; the repositories' identifiers, by namespace.
    Held {
        guards: Vec<tokio::sync::OwnedMutexGuard<()>>,
        identifiers: BTreeMap<String, String>,
    },
    /// Maintenance holds the repository of this namespace.
    Busy(String),
    /// The location gives no repository for a namespace.
    Failed(String),
}

/// Reads a duration from a spec, such as `720h`, or the default when absent.
pub fn spec_duration(
    value: Option<&str>,
    field: &str,
    default: Duration,
) -> Result<Duration, String> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(text) => humantime::parse_duration(text)
            .map_err(|err| format!("{field} {text:?} is not a duration such as 720h: {err}")),
    }
}
