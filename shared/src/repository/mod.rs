//! Ferry's restic-format repository engine, on rustic_core. It takes paths, a repository and a
//! progress sink, and knows nothing of Kubernetes. Its calls block: run them off any async
//! runtime.

mod archive;
mod backend;
mod backup;
mod claim;
mod crypto;
mod error;
mod index;
mod key;
mod location;
mod logger;
mod maintenance;
mod progress;
mod restore;
mod source;
mod target;
mod trees;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustic_backend::LocalBackend;
use rustic_core::{
    Credentials, OpenStatus, Repository as RusticRepository, RepositoryBackends, RepositoryOptions,
    WriteBackend,
};
use serde::{Deserialize, Serialize};

pub use backup::{BackupOutcome, BackupRequest, Parent};
pub use error::EngineError;
pub use location::{
    RepositoryLocation, S3Location, UNCHECKED_TLS, ca_bundle, read_ca_bundle, trusting,
};
pub use logger::EngineLogger;
pub use maintenance::{CheckReport, PruneReport, SnapshotInfo};
pub use progress::{ProgressCounters, ProgressSnapshot};
pub use restore::{RestoreOutcome, RestoreRequest, Restored};

use crate::retry::Retrier;
use error::describe;
use progress::CounterBars;

/// How to reach and unlock one repository.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryConfig {
    pub location: RepositoryLocation,
    pub password: String,
    /// rustic's cache of trees and index files; no cache when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_dir: Option<PathBuf>,
    /// How long one object-storage request may go on being retried while the store is out
    /// of reach ([`crate::retry`]).
    #[serde(default = "default_retry_budget")]
    pub retry_budget: Duration,
}

impl fmt::Debug for RepositoryConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RepositoryConfig")
            .field("location", &self.location)
            .field("password", &"<redacted>")
            .field("cache_dir", &self.cache_dir)
            .field("retry_budget", &self.retry_budget)
            .finish()
    }
}

fn default_retry_budget() -> Duration {
    crate::retry::DEFAULT_RETRY_BUDGET
}

/// Whether opening may create a repository that does not exist yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Fail when there is no repository at the location.
    Existing,
    /// Create the repository when there is none.
    CreateIfMissing,
}

/// An opened repository.
pub struct Repository {
    repo: RusticRepository<OpenStatus>,
    backends: RepositoryBackends,
    location: String,
    counters: Arc<ProgressCounters>,
}

impl Repository {
    /// Opens the repository, creating it first if `mode` allows and there is none. `counters`
    /// receives the progress of every transfer run through this handle.
    pub fn open(
        config: &RepositoryConfig,
        mode: OpenMode,
        counters: Arc<ProgressCounters>,
    ) -> Result<Self, EngineError> {
        let location = config.location.restic_identifier();
        let backends =
            backends(config, counters.clone()).map_err(|cause| EngineError::OpenBackend {
                location: location.clone(),
                cause,
            })?;
        let options = match &config.cache_dir {
            Some(dir) => RepositoryOptions::default().cache_dir(dir.clone()),
            None => RepositoryOptions::default().no_cache(true),
        };
        let repo =
            RusticRepository::new_with_progress(&options, &backends, CounterBars(counters.clone()))
                .map_err(|err| EngineError::OpenBackend {
                    location: location.clone(),
                    cause: describe(&err),
                })?;
        let exists = repo
            .config_id()
            .map_err(|err| EngineError::OpenRepository {
                location: location.clone(),
                cause: describe(&err),
            })?
            .is_some();
        let credentials = Credentials::password(&config.password);
        let repo = match (exists, mode) {
            (true, _) => repo.open(&credentials).map_err(|err| {
                if err.is_incorrect_password() {
                    EngineError::WrongPassword {
                        location: location.clone(),
                    }
                } else {
                    EngineError::OpenRepository {
                        location: location.clone(),
                        cause: describe(&err),
                    }
                }
            })?,
            (false, OpenMode::CreateIfMissing) => {
                key::create(repo, &backends.repository(), &config.password).map_err(|cause| {
                    EngineError::InitRepository {
                        location: location.clone(),
                        cause,
                    }
                })?
            }
            (false, OpenMode::Existing) => {
                return Err(EngineError::NoRepository { location });
            }
        };
        Ok(Self {
            repo,
            backends,
            location,
            counters,
        })
    }

    /// The identifier a user gives `restic -r` for this repository.
    pub fn location(&self) -> &str {
        &self.location
    }

    pub fn counters(&self) -> &Arc<ProgressCounters> {
        &self.counters
    }

    fn read_error(&self, what: &str) -> impl Fn(Box<rustic_core::RusticError>) -> EngineError {
        let what = what.to_owned();
        move |err| EngineError::ReadRepository {
            what: what.clone(),
            cause: describe(&err),
        }
    }
}

/// The backend of the repository: a directory through rustic's own, or object storage through
/// Ferry's, whose waits on the store are told to `counters`.
fn backends(
    config: &RepositoryConfig,
    counters: Arc<ProgressCounters>,
) -> Result<RepositoryBackends, String> {
    let backend: Arc<dyn WriteBackend> = match &config.location {
        RepositoryLocation::Local { path } => Arc::new(
            LocalBackend::new(path.display().to_string(), []).map_err(|err| describe(&err))?,
        ),
        RepositoryLocation::S3(_) => {
            let operator = config.location.operator()?;
            let retrier = Retrier::new(config.retry_budget, counters);
            Arc::new(
                backend::StoreBackend::new(operator, retrier, config.location.restic_identifier())
                    .map_err(|err| format!("cannot start the object-store client: {err}"))?,
            )
        }
    };
    Ok(RepositoryBackends::new(backend, None))
}
