//! Why a reconcile failed. Such failures are retried with a growing pause; failures that belong
//! to the user's object (a bad spec, an unreachable location) go into its status instead.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
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

/// The first pause after a failure; each further failure in a row doubles it.
const FIRST_RETRY: Duration = Duration::from_secs(5);
/// The longest pause.
const LAST_RETRY: Duration = Duration::from_secs(300);

/// Failures in a row, per object.
#[derive(Debug, Default)]
pub struct Backoff(Mutex<HashMap<String, u32>>);

impl Backoff {
    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records one more failure and returns how long to wait before the next try.
    fn failed(&self, key: String) -> Duration {
        let mut failures = self.failures();
        let count = failures.entry(key).or_default();
        let pause = FIRST_RETRY.saturating_mul(2_u32.saturating_pow(*count));
        *count = count.saturating_add(1);
        pause.min(LAST_RETRY)
    }

    fn succeeded(&self, key: &str) {
        self.failures().remove(key);
    }
}

fn key<K: Resource<DynamicType = ()>>(object: &K) -> String {
    format!("{}/{}", K::kind(&()), object.name_any())
}

/// Runs `reconcile`, and forgets the object's earlier failures when it succeeds.
pub async fn settled<K, F, Fut>(
    object: Arc<K>,
    ctx: Arc<Context>,
    reconcile: F,
) -> Result<Action, Error>
where
    K: Resource<DynamicType = ()>,
    F: FnOnce(Arc<K>, Arc<Context>) -> Fut,
    Fut: Future<Output = Result<Action, Error>>,
{
    let key = key(&*object);
    let result = reconcile(object, ctx.clone()).await;
    if result.is_ok() {
        ctx.backoff.succeeded(&key);
    }
    result
}

pub fn error_policy<K: Resource<DynamicType = ()>>(
    object: Arc<K>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    let pause = ctx.backoff.failed(key(&*object));
    warn!(name = %object.name_any(), %error, retry_in = ?pause, "reconcile failed");
    Action::requeue(pause)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_a_limit_and_reset_on_success() {
        let backoff = Backoff::default();
        let pauses: Vec<u64> = (0..9)
            .map(|_| backoff.failed("Backup/a".into()).as_secs())
            .collect();
        assert_eq!(pauses, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(backoff.failed("Backup/b".into()).as_secs(), 5);
        backoff.succeeded("Backup/a");
        assert_eq!(backoff.failed("Backup/a".into()).as_secs(), 5);
    }
}
