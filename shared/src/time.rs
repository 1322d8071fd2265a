//! Times as the Kubernetes API writes them: now, a time plus a duration, the time left until a
//! deadline, and a time in Unix seconds.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff;

/// This moment.
pub fn now() -> Time {
    Time(jiff::Timestamp::now())
}

/// `time` plus `duration`, or far in the future when that does not fit.
pub fn after(time: &Time, duration: Duration) -> Time {
    let span = jiff::SignedDuration::try_from(duration).unwrap_or(jiff::SignedDuration::MAX);
    Time(time.0.checked_add(span).unwrap_or(jiff::Timestamp::MAX))
}

/// `time` in seconds since the Unix epoch, as metrics give times.
pub fn unix_seconds(time: &Time) -> f64 {
    time.0.as_millisecond() as f64 / 1000.0
}

/// How long until `time`, zero if it has passed.
pub fn until(time: &Time) -> Duration {
    let now = jiff::Timestamp::now();
    Duration::try_from(time.0.duration_since(now)).unwrap_or(Duration::ZERO)
}
