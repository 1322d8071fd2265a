//! Why a reconcile failed. Every such failure is retried after a pause; failures that belong
//! to the user's object (a bad spec, an unreachable location) go into its status instead.

use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::runtime::controller::Action;
use tracing::warn;

use crate::context::Context;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API request failed: {0}")]
    Api(#[from] kube::Error),
    #[error("{0}")]
    Storage(String),
    #[error("{0}")]
    Finalizer(String),
}

pub fn error_policy<K: kube::Resource>(
    object: Arc<K>,
    error: &Error,
    _ctx: Arc<Context>,
) -> Action {
    warn!(name = %object.name_any(), %error, "reconcile failed, retrying");
    Action::requeue(Duration::from_secs(5))
}
