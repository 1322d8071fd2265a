//! The node agent's Prometheus metrics (DESIGN.md §6). Labels are bounded: operation and
//! result, and for the per-transfer progress gauge the namespace and name of a transfer that is
//! running now; its series is removed when the transfer ends. Retries of requests to object
//! storage are counted by request kind.

use ferry_shared::retry::{CountedRetries, RetryObserver, StoreWait};
use prometheus::{
    GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
};

/// Which kind of transfer a series is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Backup,
    Restore,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Backup => "backup",
            Self::Restore => "restore",
        }
    }
}

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    operations: IntCounterVec,
    duration: HistogramVec,
    bytes: IntCounterVec,
    files: IntCounterVec,
    in_progress: IntGaugeVec,
    progress: GaugeVec,
    storage_retries: CountedRetries,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let operations = IntCounterVec::new(
            Opts::new(
                "ferry_pod_volume_operations_total",
                "Pod volume transfers finished, by operation and result.",
            ),
            &["operation", "result"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "ferry_pod_volume_operation_duration_seconds",
                "Time from the start of a pod volume transfer to its end.",
            )
            .buckets(vec![
                1.0,
                5.0,
                15.0,
                60.0,
                300.0,
                900.0,
                3600.0,
                4.0 * 3600.0,
                12.0 * 3600.0,
            ]),
            &["operation"],
        )?;
        let bytes = IntCounterVec::new(
            Opts::new(
                "ferry_pod_volume_bytes_total",
                "Bytes of volume data transferred by completed transfers.",
            ),
            &["operation"],
        )?;
        let files = IntCounterVec::new(
            Opts::new(
                "ferry_pod_volume_files_total",
                "Files transferred by completed transfers.",
            ),
            &["operation"],
        )?;
        let in_progress = IntGaugeVec::new(
            Opts::new(
                "ferry_pod_volume_operations_in_progress",
                "Pod volume transfers running now.",
            ),
            &["operation"],
        )?;
        let progress = GaugeVec::new(
            Opts::new(
                "ferry_pod_volume_progress_bytes",
                "Bytes done and total of each transfer running now.",
            ),
            &["operation", "namespace", "name", "kind"],
        )?;
        registry.register(Box::new(operations.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(bytes.clone()))?;
        registry.register(Box::new(files.clone()))?;
        registry.register(Box::new(in_progress.clone()))?;
        registry.register(Box::new(progress.clone()))?;
        let storage_retries = CountedRetries(ferry_shared::retry::retries_metric()?);
        registry.register(Box::new(storage_retries.0.clone()))?;
        // Every series from the start, so that the first increase shows.
        for operation in [Operation::Backup, Operation::Restore] {
            let op = operation.as_str();
            in_progress.with_label_values(&[op]).set(0);
            duration.with_label_values(&[op]);
            bytes.with_label_values(&[op]);
            files.with_label_values(&[op]);
            for result in ["completed", "failed", "interrupted"] {
                operations.with_label_values(&[op, result]);
            }
        }
        Ok(Self {
            registry,
            operations,
            duration,
            bytes,
            files,
            in_progress,
            progress,
            storage_retries,
        })
    }

    pub fn registry(&self) -> Registry {
        self.registry.clone()
    }

    pub fn started(&self, operation: Operation) {
        self.in_progress
            .with_label_values(&[operation.as_str()])
            .inc();
    }

    pub fn progress(
        &self,
        operation: Operation,
        namespace: &str,
        name: &str,
        done: u64,
        total: u64,
    ) {
        let op = operation.as_str();
        self.progress
            .with_label_values(&[op, namespace, name, "done"])
            .set(done as f64);
        self.progress
            .with_label_values(&[op, namespace, name, "total"])
            .set(total as f64);
    }

    /// A transfer's request to object storage is tried again: counted, and logged.
    pub fn storage_retry(&self, wait: &StoreWait) {
        self.storage_retries.waiting(wait);
    }

    /// Records the end of a transfer and removes its progress series.
    pub fn finished(&self, operation: Operation, finish: Finish<'_>) {
        let op = operation.as_str();
        self.in_progress.with_label_values(&[op]).dec();
        for kind in ["done", "total"] {
            let _ = self
                .progress
                .remove_label_values(&[op, finish.namespace, finish.name, kind]);
        }
        self.operations
            .with_label_values(&[op, finish.result])
            .inc();
        self.duration
            .with_label_values(&[op])
            .observe(finish.seconds);
        if let Some((bytes, files)) = finish.transferred {
            self.bytes.with_label_values(&[op]).inc_by(bytes);
            self.files.with_label_values(&[op]).inc_by(files);
        }
    }
}

/// How a transfer ended, for [`Metrics::finished`].
pub struct Finish<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    /// `completed`, `failed` or `interrupted`.
    pub result: &'a str,
    pub seconds: f64,
    /// Bytes and files, for a completed transfer.
    pub transferred: Option<(u64, u64)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_shared::retry::StoreWait;
    use prometheus::{Encoder, TextEncoder};

    fn text(metrics: &Metrics) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&metrics.registry().gather(), &mut out)
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn progress_series_exist_only_while_the_transfer_runs() {
        let metrics = Metrics::new().unwrap();
        metrics.started(Operation::Backup);
        metrics.progress(Operation::Backup, "ferry", "nightly-x7k2p", 10, 40);
        let running = text(&metrics);
        assert!(running.contains(
            r#"ferry_pod_volume_progress_bytes{kind="done",name="nightly-x7k2p",namespace="ferry",operation="backup"} 10"#
        ), "{running}");
        assert!(
            running.contains(r#"ferry_pod_volume_operations_in_progress{operation="backup"} 1"#)
        );

        metrics.finished(
            Operation::Backup,
            Finish {
                namespace: "ferry",
                name: "nightly-x7k2p",
                result: "completed",
                seconds: 3.0,
                transferred: Some((40, 2)),
            },
        );
        let done = text(&metrics);
        assert!(!done.contains("nightly-x7k2p"), "{done}");
        assert!(done.contains(
            r#"ferry_pod_volume_operations_total{operation="backup",result="completed"} 1"#
        ));
        assert!(done.contains(r#"ferry_pod_volume_bytes_total{operation="backup"} 40"#));
        assert!(done.contains(r#"ferry_pod_volume_operations_in_progress{operation="backup"} 0"#));
    }

    #[test]
    fn storage_retries_are_counted_by_request() {
        let metrics = Metrics::new().unwrap();
        let wait = |operation: &str| StoreWait {
            operation: operation.to_owned(),
            cause: "Unexpected (send http request): connection refused".to_owned(),
            retry: 1,
            next_in_millis: 500,
        };
        metrics.storage_retry(&wait("write"));
        metrics.storage_retry(&wait("write"));
        metrics.storage_retry(&wait("read"));
        let text = text(&metrics);
        assert!(
            text.contains(r#"ferry_storage_retries_total{operation="write"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"ferry_storage_retries_total{operation="read"} 1"#),
            "{text}"
        );
    }
}
