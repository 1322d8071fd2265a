//! Expiry: a backup past its ttl is deleted with its objects and snapshots, and maintenance
//! leaves a sound repository.

use std::fs;
use std::time::Duration;

use ferry_shared::crd::{Backup, BackupRepository};
use ferry_tests::fixtures;
use ferry_tests::harness::VolumeKind;
use ferry_tests::restic::{restic, succeed};
use ferry_tests::tree::make_rich_tree;
use kube::ResourceExt;
use kube::api::ListParams;

use crate::{NODE, PASSWORD, agent_program, coordinator_program, shop_cluster};

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_backup_is_deleted_with_its_snapshots_and_the_repository_stays_sound() {
    let (mut cluster, storage) = shop_cluster().await;
    let (_, dirs) = cluster
        .create_pod("shop", "web", NODE, vec![("data", VolumeKind::EmptyDir)])
        .await;
    make_rich_tree(&dirs[0], 7);
    cluster.start_agent(&agent_program(), NODE, &[]);
    cluster.start_coordinator(coordinator_program(), &["--maintenance-frequency", "2s"]);
    fixtures::backup("short")
        .all_volumes()
        .namespaces(["shop"])
        .ttl("3s")
        .create(&cluster)
        .await;
    let backups = cluster.api::<Backup>();
    let started = tokio::time::Instant::now();
    while backups.get_opt("short").await.unwrap().is_some() {
        assert!(
            started.elapsed() < ferry_tests::harness::DEADLINE,
            "the backup never expired\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        cluster.pvbs_of("short").await.is_empty(),
        "no orphan PodVolumeBackups"
    );
    assert!(
        !storage.join("backups/short").exists(),
        "the backup's objects are removed"
    );
    let repository = storage.join("restic").join(cluster.scoped("shop"));
    let password_file = cluster.path("password");
    fs::write(&password_file, PASSWORD).unwrap();
    let listed =
        succeed(restic(repository.to_str().unwrap(), &password_file).args(["snapshots", "--json"]));
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout).trim(),
        "[]",
        "the snapshots are forgotten"
    );
    // Maintenance prunes after the deletion, and restic finds the repository sound.
    let deleted = k8s_openapi::jiff::Timestamp::now();
    let repositories = cluster.api::<BackupRepository>();
    let name = repositories
        .list(&ListParams::default())
        .await
        .unwrap()
        .items[0]
        .name_any();
    cluster
        .wait_for(
            &repositories,
            &name,
            "maintained after the deletion",
            |repo: &BackupRepository| {
                repo.status
                    .as_ref()
                    .and_then(|status| status.last_maintenance_time.as_ref())
                    .is_some_and(|time| time.0 > deleted)
            },
        )
        .await;
    succeed(restic(repository.to_str().unwrap(), &password_file).args(["check", "--read-data"]));
    cluster
        .coordinator()
        .metrics_showing("ferry_repository_maintenance_total{result=\"success\"}")
        .await;
}
