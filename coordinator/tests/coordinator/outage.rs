//! Outages of the object store: the test S3 server behind a fault-injecting front that drops and
//! refuses every connection for a while, or answers SlowDown. The location's check, its backup
//! sync and a repository job wait them out.

use std::time::Duration;

use ferry_coordinator::jobs::{Job, Operation};
use ferry_shared::crd::{
    Backup, BackupSpec, BackupStatus, BackupStorageLocation, OperationPhase, StorageLocationPhase,
};
use ferry_shared::layout::{ObjectStore, key};
use ferry_shared::repository::RepositoryConfig;
use ferry_shared::retry::{CountedRetries, Retrier, retries_metric};
use ferry_tests::fault::FaultyFront;
use ferry_tests::harness::Cluster;
use ferry_tests::s3;

use crate::{
    PASSWORD, bucket_location, coordinator_program, create_s3_location, job_runner, synced,
};

/// Puts a Completed backup into the location, straight into the test S3 server.
async fn stored_backup(bucket: &str, name: &str) {
    let location = bucket_location(&s3::endpoint(), bucket);
    let store = ObjectStore::open(&location, Retrier::unobserved(Duration::ZERO)).unwrap();
    let mut backup = Backup::new(name, BackupSpec::default());
    backup.status = Some(BackupStatus {
        phase: OperationPhase::Completed,
        ..BackupStatus::default()
    });
    store
        .put(
            &key::backup_metadata(name),
            serde_json::to_vec(&backup).unwrap(),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_location_check_and_sync_ride_out_an_outage_of_the_object_store() {
    let bucket = s3::new_bucket(&s3::endpoint());
    stored_backup(&bucket, "before-the-outage").await;
    let front = FaultyFront::for_test_s3();

    let mut cluster = Cluster::start().await;
    cluster.create_repository_password(PASSWORD).await;
    create_s3_location(&cluster, &front.endpoint(), &bucket).await;
    front.outage(Duration::from_secs(15));
    cluster.start_coordinator(coordinator_program(), &[]);

    // The backup is synced once the store answers again; until then the check waits.
    let synced = synced(&cluster, "before-the-outage").await;
    assert_eq!(synced.phase(), OperationPhase::Completed);
    // The location's status is written after its sync, so it may show only a moment later.
    let location = cluster
        .wait_for(
            &cluster.api::<BackupStorageLocation>(),
            "default",
            "checked",
            |location: &BackupStorageLocation| {
                location.status.as_ref().is_some_and(|s| s.phase.is_some())
            },
        )
        .await;
    let status = location.status.unwrap_or_default();
    assert_eq!(
        status.phase,
        Some(StorageLocationPhase::Available),
        "{status:?}"
    );
    let logs = cluster.logs();
    assert!(
        !logs.contains("storage location unavailable"),
        "the outage was reported instead of waited out:\n{logs}"
    );
    assert!(
        logs.contains("waiting for the object store"),
        "the coordinator never waited: the outage was over before it began\n{logs}"
    );
    let metrics = cluster.coordinator().metrics_text();
    assert!(
        metrics.contains(r#"ferry_storage_retries_total{operation="list"}"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repository_job_rides_out_slow_down_answers_and_reports_its_retries() {
    let bucket = s3::new_bucket(&s3::endpoint());
    let front = FaultyFront::for_test_s3();
    front.slow_down(2);
    let counted = retries_metric().unwrap();
    let runner = job_runner(Duration::from_secs(120), CountedRetries(counted.clone()));
    let opened = runner
        .run(&Job {
            repository: RepositoryConfig {
                location: bucket_location(&front.endpoint(), &bucket),
                password: PASSWORD.to_owned(),
                cache_dir: None,
                retry_budget: Duration::from_secs(60),
            },
            operation: Operation::Open { create: true },
        })
        .await
        .unwrap();
    assert!(opened.contains("opens"), "{opened}");
    assert_eq!(front.slowed_down(), 2);
    assert_eq!(counted.with_label_values(&["stat"]).get(), 2);
}
