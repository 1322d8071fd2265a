//! Why a reconcile failed. Such failures are retried with a growing pause; failures that belong
//! to the user's object (a bad spec, an unreachable location) go into its status instead.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API request failed: {0}")]
    Api(#[from] kube::Error),
    #[error("{0}")]
    Storage(String),
    #[error("{0}")]
    Finalizer(String),
}
