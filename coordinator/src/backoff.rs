//! How long a reconcile that failed waits before its next try: a pause per object that doubles
//! with each failure in a row, up to a limit, and starts over after a success.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use kube::{Resource, ResourceExt};

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
    pub fn failed(&self, key: String) -> Duration {
        let mut failures = self.failures();
        let count = failures.entry(key).or_default();
        let pause = FIRST_RETRY.saturating_mul(2_u32.saturating_pow(*count));
        *count = count.saturating_add(1);
        pause.min(LAST_RETRY)
    }

    pub fn succeeded(&self, key: &str) {
        self.failures().remove(key);
    }
}

pub fn key<K: Resource<DynamicType = ()>>(object: &K) -> String {
    format!("{}/{}", K::kind(&()), object.name_any())
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
