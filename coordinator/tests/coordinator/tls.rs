//! An object store behind TLS whose certificate a private CA signed: with the CA as the
//! location's `config.caCert`, a cluster backs up to it and a fresh one restores from it;
//! without, the location is Unavailable and says that the certificate was not trusted; with
//! `insecureSkipTLSVerify`, it is Available and the log warns that nothing is checked; one
//! whose `caCert` holds no certificate is Unavailable and says so.

use ferry_shared::crd::{BackupStorageLocation, StorageLocationPhase};
use ferry_shared::repository::UNCHECKED_TLS;
use ferry_tests::harness::Cluster;
use ferry_tests::{fixtures, s3};
use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::cli::ferry;
use crate::sync::{
    a_fresh_cluster_syncs_the_backup, back_up_and_lose_the_cluster, restore_into_a_mapped_namespace,
};
use crate::{PASSWORD, coordinator_program, create_s3_location_trusting};

#[tokio::test(flavor = "multi_thread")]
async fn a_location_with_its_ca_cert_backs_up_and_restores_over_tls() {
    let tls = s3::tls();
    let bucket = s3::new_bucket(&s3::endpoint());
    let ca = tls.ca_pem();
    let reference = tempfile::tempdir().unwrap();
    let lost =
        back_up_and_lose_the_cluster(&tls.endpoint, &bucket, Some(&ca), reference.path()).await;
    let cluster = a_fresh_cluster_syncs_the_backup(&tls.endpoint, &bucket, Some(&ca), &lost).await;
    restore_into_a_mapped_namespace(&cluster, &lost, reference.path()).await;
    // `ferry` fetches the logs from presigned URLs of the store, trusting the location's CA.
    let log = cluster
        .ferry(ferry(), &["backup", "logs", "before-the-fire"])
        .await;
    assert!(log.success().contains("before-the-fire"), "{log:?}");
    let log = cluster
        .ferry(ferry(), &["restore", "logs", "after-the-fire"])
        .await;
    assert!(log.success().contains("after-the-fire"), "{log:?}");
}

fn in_phase(phase: StorageLocationPhase) -> impl Fn(&BackupStorageLocation) -> bool {
    move |location| location.status.as_ref().and_then(|s| s.phase) == Some(phase)
}

#[tokio::test(flavor = "multi_thread")]
async fn without_its_ca_cert_a_location_names_the_certificate_and_skipping_the_check_warns() {
    let tls = s3::tls();
    let bucket = s3::new_bucket(&s3::endpoint());
    let mut cluster = Cluster::start().await;
    cluster.create_repository_password(PASSWORD).await;
    create_s3_location_trusting(&cluster, &tls.endpoint, &bucket, None).await;
    fixtures::s3_location("garbled", &tls.endpoint, &bucket)
        .credential("s3-keys")
        .ca_cert("not a certificate")
        .create(&cluster)
        .await;
    cluster.start_coordinator(coordinator_program(), &[]);
    let locations = cluster.api::<BackupStorageLocation>();
    let untrusted = cluster
        .wait_for(
            &locations,
            "default",
            "Unavailable",
            in_phase(StorageLocationPhase::Unavailable),
        )
        .await;
    let message = untrusted.status.unwrap().message.unwrap_or_default();
    assert!(
        message.contains("certificate was not trusted") && message.contains("config.caCert"),
        "{message}"
    );
    let garbled = cluster
        .wait_for(
            &locations,
            "garbled",
            "Unavailable",
            in_phase(StorageLocationPhase::Unavailable),
        )
        .await;
    let message = garbled.status.unwrap().message.unwrap_or_default();
    assert!(
        message.contains("config.caCert holds no PEM certificate"),
        "{message}"
    );
    assert!(
        !cluster.coordinator().log().contains(UNCHECKED_TLS),
        "a warning without insecureSkipTLSVerify"
    );

    let unchecked = json!({"spec": {"config": {"insecureSkipTLSVerify": true}}});
    locations
        .patch("default", &PatchParams::default(), &Patch::Merge(unchecked))
        .await
        .expect("set insecureSkipTLSVerify");
    cluster
        .wait_for(
            &locations,
            "default",
            "Available",
            in_phase(StorageLocationPhase::Available),
        )
        .await;
    let log = cluster.coordinator().log();
    assert!(log.contains(UNCHECKED_TLS), "no warning in:\n{log}");
}
