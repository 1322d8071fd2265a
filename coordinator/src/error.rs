//! Why a reconcile failed. Such failures are retried with a growing pause; failures that belong
//! to the user's object (a bad spec, an unusable location) go into its status instead, as the
//! message of a [`StorageError`] or of a validation.

use ferry_shared::layout::StoreError;
use ferry_shared::secret::SecretError;
use ferry_shared::storage::{LocationError, LookupError};
use kube::core::ParseExpressionError;
use kube::runtime::finalizer;

use crate::jobs::JobError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API request failed: {0}")]
    Api(#[from] kube::Error),
    /// A storage location or its credentials could not be read from the cluster.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// The repository password could not be read.
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A repository job failed.
    #[error("cannot {action}: {source}")]
    Job {
        action: String,
        #[source]
        source: JobError,
    },
    #[error("labelSelector: {0}")]
    Selector(#[from] ParseExpressionError),
    /// The API server returned an object without a field it always sets.
    #[error("the {kind} has no {field}")]
    Incomplete {
        kind: &'static str,
        field: &'static str,
    },
    #[error(transparent)]
    Finalizer(Box<finalizer::Error<Error>>),
    #[error(transparent)]
    Token(#[from] crate::downloads::TokenError),
}

impl From<finalizer::Error<Error>> for Error {
    fn from(error: finalizer::Error<Error>) -> Self {
        Self::Finalizer(Box::new(error))
    }
}

/// Why the objects of a storage location could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage location {location}: {source}")]
    Location {
        location: String,
        #[source]
        source: LocationError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot pack or unpack an archive: {0}")]
    Archive(#[from] std::io::Error),
    #[error("{what} is not valid JSON: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
}

impl StorageError {
    /// A JSON error, saying what was being read or written.
    pub fn json(what: impl Into<String>) -> impl FnOnce(serde_json::Error) -> Self {
        let what = what.into();
        move |source| Self::Json { what, source }
    }
}
