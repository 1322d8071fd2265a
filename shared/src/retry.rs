//! One retry policy for every request to object storage: the engine's reads and writes, and the
//! coordinator's layout, sync and repository jobs.
//!
//! A request that fails for a reason that may pass (a refused, reset or dropped connection, a
//! timeout, HTTP 5xx, 429, S3's SlowDown) is tried again after an exponential backoff with
//! jitter, for as long as its budget lasts. Anything else (authorization, a missing bucket, other
//! 4xx) fails at once. Each wait is told to a [`RetryObserver`], so progress can say that a
//! transfer is waiting rather than stuck.

use std::error::Error as _;
use std::fmt;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use opendal::ErrorKind;
use prometheus::{IntCounterVec, Opts};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// How long one request may go on being retried, unless configured otherwise.
pub const DEFAULT_RETRY_BUDGET: Duration = Duration::from_secs(300);

/// The first pause after a failure; each later one doubles, up to [`MAX_DELAY`], and jitter adds
/// up to as much again. The cap is low so that a transfer goes on within seconds of the store's
/// return: a backup's packs are uploaded one at a time, so the whole backup waits for the one
/// being retried, and a 20 s outage cost 9 s more than the outage itself with a cap of 15 s.
const FIRST_DELAY: Duration = Duration::from_millis(500);
const MAX_DELAY: Duration = Duration::from_secs(2);

/// A request waiting on the object store: what failed, and when it is tried again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoreWait {
    /// The kind of request: read, write, list, stat or delete.
    pub operation: String,
    pub cause: String,
    /// The number of this retry of the request, from 1.
    pub retry: u32,
    /// Milliseconds until the retry.
    pub next_in_millis: u64,
}

impl fmt::Display for StoreWait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "waiting for the object store: {} (retry {}, next in {:.1} s)",
            self.cause,
            self.retry,
            Duration::from_millis(self.next_in_millis).as_secs_f64()
        )
    }
}

/// Hears of every retry, and of the end of each request that was retried.
pub trait RetryObserver: Send + Sync {
    /// A request failed for a reason that may pass, and is tried again after the wait.
    fn waiting(&self, wait: &StoreWait);
    /// A request that was retried ended: it succeeded, or it gave up.
    fn ended(&self, operation: &str, succeeded: bool);
}

/// An observer for callers that only want the retries.
struct Unobserved;

impl RetryObserver for Unobserved {
    fn waiting(&self, _wait: &StoreWait) {}
    fn ended(&self, _operation: &str, _succeeded: bool) {}
}

/// `ferry_storage_retries_total{operation}`: the retries of requests to object storage, with
/// a series for each kind of request from the start.
pub fn retries_metric() -> prometheus::Result<IntCounterVec> {
    let retries = IntCounterVec::new(
        Opts::new(
            "ferry_storage_retries_total",
            "Requests to object storage tried again after a failure that may pass (a refused or dropped connection, a timeout, 5xx, 429, SlowDown), by request: read, write, list, stat or delete.",
        ),
        &["operation"],
    )?;
    for operation in ["read", "write", "list", "stat", "delete"] {
        retries.with_label_values(&[operation]);
    }
    Ok(retries)
}

/// Counts each retry in the metric and logs it.
#[derive(Clone, Debug)]
pub struct CountedRetries(pub IntCounterVec);

impl CountedRetries {
    /// Counts retries that another process made and reported.
    pub fn add(&self, operation: &str, retries: u64) {
        self.0.with_label_values(&[operation]).inc_by(retries);
    }
}

impl RetryObserver for CountedRetries {
    fn waiting(&self, wait: &StoreWait) {
        self.0.with_label_values(&[wait.operation.as_str()]).inc();
        tracing::warn!(operation = %wait.operation, retry = wait.retry, "{wait}");
    }

    fn ended(&self, operation: &str, succeeded: bool) {
        if succeeded {
            tracing::info!(%operation, "the object store answers again");
        }
    }
}

/// A request that failed for good: at once, or once its budget was spent.
#[derive(Debug)]
pub struct RequestFailure {
    pub error: opendal::Error,
    pub retries: u32,
    pub elapsed: Duration,
}

impl RequestFailure {
    pub fn kind(&self) -> ErrorKind {
        self.error.kind()
    }
}

impl fmt::Display for RequestFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut cause = cause(&self.error);
        if untrusted_certificate(&self.error).is_some() {
            cause.push_str(
                "; the object store's TLS certificate was not trusted: give the CA that signed it as the storage location's config.caCert (--s3-ca-cert on the command line)",
            );
        } else if self.kind() == ErrorKind::PermissionDenied {
            cause.push_str(
                "; the object store refused the request: check the access key, the secret key and the bucket's policy",
            );
        }
        if self.retries == 0 {
            return f.write_str(&cause);
        }
        write!(
            f,
            "{cause}; still failing after {} retries over {} (the storage retry budget)",
            self.retries,
            humantime::format_duration(Duration::from_secs(self.elapsed.as_secs()))
        )
    }
}

impl std::error::Error for RequestFailure {}

/// Runs requests to object storage under the retry policy.
#[derive(Clone)]
pub struct Retrier {
    budget: Duration,
    observer: Arc<dyn RetryObserver>,
}

impl fmt::Debug for Retrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retrier")
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl Retrier {
    /// Retries each request for up to `budget`, telling `observer` of every wait.
    pub fn new(budget: Duration, observer: Arc<dyn RetryObserver>) -> Self {
        Self { budget, observer }
    }

    /// Retries each request for up to `budget`, telling nobody.
    pub fn unobserved(budget: Duration) -> Self {
        Self::new(budget, Arc::new(Unobserved))
    }

    /// The same policy with a budget of at most `budget`, for a caller that must answer
    /// sooner than a transfer need.
    pub fn within(&self, budget: Duration) -> Self {
        Self::new(self.budget.min(budget), self.observer.clone())
    }

    /// Runs `request` until it succeeds, fails for good, or its budget is spent.
    pub async fn run<T, F, Fut>(
        &self,
        operation: &'static str,
        mut request: F,
    ) -> Result<T, RequestFailure>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = opendal::Result<T>>,
    {
        let started = Instant::now();
        let mut delays = ExponentialBuilder::new()
            .with_min_delay(FIRST_DELAY)
            .with_max_delay(MAX_DELAY)
            .with_jitter()
            .without_max_times()
            .build();
        let mut retries = 0;
        loop {
            let error = match request().await {
                Ok(value) => {
                    if retries > 0 {
                        self.observer.ended(operation, true);
                    }
                    return Ok(value);
                }
                Err(error) => error,
            };
            let elapsed = started.elapsed();
            let delay = next_delay(transient(&error), elapsed, self.budget, delays.next());
            let Some(delay) = delay else {
                if retries > 0 {
                    self.observer.ended(operation, false);
                }
                return Err(RequestFailure {
                    error,
                    retries,
                    elapsed,
                });
            };
            retries += 1;
            self.observer.waiting(&StoreWait {
                operation: operation.to_owned(),
                cause: cause(&error),
                retry: retries,
                next_in_millis: delay.as_millis().try_into().unwrap_or(u64::MAX),
            });
            tokio::time::sleep(delay).await;
        }
    }
}

/// The pause before the next try, or None to give up: the error will not pass, or the budget is
/// spent. The last pause is cut short so that the last try falls at the end of the budget.
fn next_delay(
    transient: bool,
    elapsed: Duration,
    budget: Duration,
    proposed: Option<Duration>,
) -> Option<Duration> {
    let left = budget.checked_sub(elapsed).filter(|left| !left.is_zero())?;
    transient.then_some(proposed?.min(left))
}

/// Whether a failed request may succeed if tried again. A certificate that was not trusted
/// will not be trusted on the next try either.
fn transient(error: &opendal::Error) -> bool {
    if untrusted_certificate(error).is_some() {
        return false;
    }
    error.is_temporary()
        || error.kind() == ErrorKind::RateLimited
        || io_error_kinds(error).any(|kind| {
            matches!(
                kind,
                io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::NotConnected
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::TimedOut
                    | io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::Interrupted
            )
        })
}

/// The causes of `error`, outermost first.
fn causes<'a>(
    error: &'a opendal::Error,
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(error.source(), |cause| (*cause).source())
}

/// The TLS error of the object store's certificate, when the client did not accept it. TLS
/// errors come wrapped in I/O errors, which hide what they wrap from the chain of sources.
fn untrusted_certificate(error: &opendal::Error) -> Option<&rustls::Error> {
    fn unwrapped<'a>(cause: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
        match cause.downcast_ref::<io::Error>() {
            Some(io) => unwrapped(io.get_ref()?),
            None => cause.downcast_ref::<rustls::Error>(),
        }
    }
    causes(error)
        .find_map(unwrapped)
        .filter(|tls| matches!(tls, rustls::Error::InvalidCertificate(_)))
}

fn io_error_kinds(error: &opendal::Error) -> impl Iterator<Item = io::ErrorKind> + '_ {
    causes(error)
        .filter_map(|cause| cause.downcast_ref::<io::Error>())
        .map(io::Error::kind)
}

/// What went wrong, in a line: opendal's kind, then the HTTP status and S3 error code when the
/// store answered, or the innermost cause when it did not, which is where "connection refused"
/// or "broken pipe" is found.
fn cause(error: &opendal::Error) -> String {
    let kind = error.kind();
    // opendal keeps the response's status only in its own rendering of the error.
    let shown = error.to_string();
    if let Some(status) = quoted(&shown, "response: Parts { status: ", ',') {
        let message = error.message();
        return match quoted(message, "code: \"", '"') {
            Some(code) => {
                let text = quoted(message, "message: \"", '"').unwrap_or_default();
                format!("{kind}: HTTP {status} {code}: {text}")
            }
            None if message.is_empty() => format!("{kind}: HTTP {status}"),
            None => format!("{kind}: HTTP {status}: {message}"),
        };
    }
    let mut text = format!("{kind} ({})", error.message());
    if let Some(root) = causes(error).last() {
        text.push_str(": ");
        text.push_str(&root.to_string());
    }
    text
}

/// The text in `haystack` between `start` and the next `end`.
fn quoted<'a>(haystack: &'a str, start: &str, end: char) -> Option<&'a str> {
    let rest = &haystack[haystack.find(start)? + start.len()..];
    Some(&rest[..rest.find(end)?])
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn pauses_follow_the_backoff_until_the_budget_is_spent() {
        let cases = [
            // (transient, elapsed, budget, proposed, expected)
            (true, S(0), S(300), Some(S(1)), Some(S(1))),
            (true, S(290), S(300), Some(S(15)), Some(S(10))),
            (true, S(300), S(300), Some(S(1)), None),
            (true, S(301), S(300), Some(S(1)), None),
            (false, S(0), S(300), Some(S(1)), None),
            (true, S(0), S(0), Some(S(1)), None),
            (true, S(0), S(300), None, None),
        ];
        for (transient, elapsed, budget, proposed, expected) in cases {
            assert_eq!(
                next_delay(transient, elapsed, budget, proposed),
                expected,
                "{transient} {elapsed:?} {budget:?} {proposed:?}"
            );
        }
    }

    #[test]
    fn outages_and_throttling_are_transient_and_refusals_are_not() {
        let refused = opendal::Error::new(ErrorKind::Unexpected, "send http request")
            .set_source(io::Error::from(io::ErrorKind::ConnectionRefused));
        let broken = opendal::Error::new(ErrorKind::Unexpected, "write")
            .set_source(io::Error::from(io::ErrorKind::BrokenPipe));
        let unavailable = opendal::Error::new(ErrorKind::Unexpected, "503").set_temporary();
        let slow_down = opendal::Error::new(ErrorKind::RateLimited, "SlowDown");
        assert!(transient(&refused));
        assert!(transient(&broken));
        assert!(transient(&unavailable));
        assert!(transient(&slow_down));

        let denied = opendal::Error::new(ErrorKind::PermissionDenied, "SignatureDoesNotMatch");
        let missing = opendal::Error::new(ErrorKind::NotFound, "NoSuchKey");
        let bad = opendal::Error::new(ErrorKind::Unexpected, "400 Bad Request")
            .set_source(io::Error::from(io::ErrorKind::InvalidData));
        assert!(!transient(&denied));
        assert!(!transient(&missing));
        assert!(!transient(&bad));
        assert_eq!(
            cause(&refused),
            "Unexpected (send http request): connection refused"
        );
    }

    #[test]
    fn an_answer_of_the_store_is_named_by_its_status_and_code() {
        let slow_down = opendal::Error::new(
            ErrorKind::RateLimited,
            r#"S3Error { code: "SlowDown", message: "Please reduce your request rate.", resource: "", request_id: "" }"#,
        )
        .with_context("response", "Parts { status: 503, version: HTTP/1.1, headers: {} }");
        assert_eq!(
            cause(&slow_down),
            "RateLimited: HTTP 503 SlowDown: Please reduce your request rate."
        );
        let head = opendal::Error::new(ErrorKind::PermissionDenied, "").with_context(
            "response",
            "Parts { status: 403, version: HTTP/1.1, headers: {} }",
        );
        assert_eq!(cause(&head), "PermissionDenied: HTTP 403");
    }

    #[derive(Default)]
    struct Heard {
        waits: Mutex<Vec<StoreWait>>,
        ended: Mutex<Vec<bool>>,
    }

    impl RetryObserver for Heard {
        fn waiting(&self, wait: &StoreWait) {
            self.waits.lock().unwrap().push(wait.clone());
        }
        fn ended(&self, _operation: &str, succeeded: bool) {
            self.ended.lock().unwrap().push(succeeded);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_is_retried_until_it_succeeds_and_each_wait_is_told() {
        let heard = Arc::new(Heard::default());
        let retrier = Retrier::new(S(300), heard.clone());
        let tries = AtomicU32::new(0);
        let value = retrier
            .run("write", || async {
                match tries.fetch_add(1, Ordering::Relaxed) {
                    0..3 => Err(opendal::Error::new(ErrorKind::RateLimited, "SlowDown")),
                    _ => Ok(7),
                }
            })
            .await
            .unwrap();
        assert_eq!(value, 7);
        let waits = heard.waits.lock().unwrap();
        let retries: Vec<u32> = waits.iter().map(|wait| wait.retry).collect();
        assert_eq!(retries, [1, 2, 3]);
        assert_eq!(waits[0].operation, "write");
        assert!(
            waits[0].to_string().starts_with(
                "waiting for the object store: RateLimited (SlowDown) (retry 1, next in"
            )
        );
        assert_eq!(*heard.ended.lock().unwrap(), [true]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lasting_outage_fails_once_the_budget_is_spent_naming_it() {
        let heard = Arc::new(Heard::default());
        let retrier = Retrier::new(S(60), heard.clone());
        let failure = retrier
            .run("read", || async {
                Err::<(), _>(
                    opendal::Error::new(ErrorKind::Unexpected, "send http request")
                        .set_source(io::Error::from(io::ErrorKind::ConnectionRefused)),
                )
            })
            .await
            .unwrap_err();
        assert!(failure.retries > 3, "{failure:?}");
        assert!(failure.elapsed >= S(60), "{failure:?}");
        let text = failure.to_string();
        assert!(text.contains("connection refused"), "{text}");
        assert!(text.contains("over 1m"), "{text}");
        assert_eq!(*heard.ended.lock().unwrap(), [false]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_fails_at_once() {
        let tries = AtomicU32::new(0);
        let failure = Retrier::unobserved(S(300))
            .run("list", || async {
                tries.fetch_add(1, Ordering::Relaxed);
                Err::<(), _>(opendal::Error::new(
                    ErrorKind::PermissionDenied,
                    "InvalidAccessKeyId",
                ))
            })
            .await
            .unwrap_err();
        assert_eq!(tries.load(Ordering::Relaxed), 1);
        assert_eq!(failure.retries, 0);
        assert_eq!(failure.kind(), ErrorKind::PermissionDenied);
    }
}
