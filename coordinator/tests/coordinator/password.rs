//! The repository password: a coordinator that finds repositories but no password Secret stops
//! rather than make a new password; on a fresh install it makes one.

use ferry_shared::crd::{BackupRepository, BackupRepositorySpec};
use ferry_shared::names;
use ferry_tests::harness::Cluster;
use k8s_openapi::api::core::v1::Secret;

use crate::coordinator_program;

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_password_secret_stops_the_coordinator_instead_of_making_a_new_one() {
    let mut cluster = Cluster::start().await;
    cluster
        .create(&BackupRepository::new(
            "shop-default-abc123",
            BackupRepositorySpec {
                volume_namespace: "shop".to_owned(),
                storage_location: "default".to_owned(),
                ..BackupRepositorySpec::default()
            },
        ))
        .await;
    let coordinator = cluster.start_coordinator(coordinator_program(), &[]);
    let status = coordinator.exited().await;
    assert!(!status.success());
    let log = coordinator.log();
    assert!(
        log.contains("ferry-repo-credentials is missing, but repositories exist"),
        "{log}"
    );
    let secrets = cluster.api::<Secret>();
    assert!(
        secrets
            .get_opt(names::REPOSITORY_SECRET)
            .await
            .unwrap()
            .is_none(),
        "no new password"
    );

    // On a fresh install the coordinator makes one, once.
    let mut fresh = Cluster::start().await;
    fresh.start_coordinator(coordinator_program(), &[]);
    let secrets = fresh.api::<Secret>();
    let made = fresh
        .wait_for(&secrets, names::REPOSITORY_SECRET, "generated", |_| true)
        .await;
    let password = &made.data.unwrap()[names::REPOSITORY_PASSWORD_KEY].0;
    assert_eq!(password.len(), 64, "32 random bytes, hex-encoded");
    assert!(
        fresh
            .coordinator()
            .log()
            .contains("Keep a copy outside the cluster")
    );
}
