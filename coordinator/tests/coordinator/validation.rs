//! Bad input: Backups, Restores and Schedules that cannot run fail validation with a clear
//! reason and leave nothing behind; storage locations that cannot be used are Unavailable.
//! What a spec alone gets wrong is tested where it is checked, in the validation's unit tests;
//! here are the checks that need the cluster or the object store.

use std::fs;
use std::path::{Path, PathBuf};

use ferry_shared::crd::{
    Backup, BackupStorageLocation, Restore, Schedule, SchedulePhase, StorageLocationPhase,
};
use ferry_tests::fixtures;
use ferry_tests::harness::{Cluster, VolumeKind};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

use crate::{NODE, assert_failed_validation, coordinator_program, shop_cluster};

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_fails_validation_clearly_and_leaves_nothing_behind() {
    let (mut cluster, storage) = shop_cluster().await;
    let shared = unusable_places(&mut cluster, &storage).await;
    backups_fail_validation(&cluster, &storage).await;
    restores_fail_validation(&cluster).await;
    a_bad_schedule_fails_validation(&cluster).await;
    unusable_locations_are_unavailable(&cluster, &shared).await;
    assert!(cluster.coordinator().log().contains("coordinator started"));
}

/// Leftovers of an earlier backup, a directory that holds other things, and locations that
/// are missing, ReadOnly or unreachable; then the coordinator. Returns the crowded directory.
async fn unusable_places(cluster: &mut Cluster, storage: &Path) -> PathBuf {
    // What is left of an earlier backup named `taken`.
    let leftover = storage.join("backups/taken/taken-resources.tar.gz");
    fs::create_dir_all(leftover.parent().unwrap()).unwrap();
    fs::write(&leftover, b"old").unwrap();
    // A directory that holds something other than Ferry's layout.
    let shared = cluster.path("shared");
    fs::create_dir_all(shared.join("photos")).unwrap();
    fs::write(shared.join("photos/cat.jpg"), b"meow").unwrap();
    fixtures::filesystem_location("crowded", &shared)
        .create(cluster)
        .await;
    cluster
        .create_pod("shop", "web", NODE, vec![("data", VolumeKind::EmptyDir)])
        .await;
    fixtures::filesystem_location("archive", &cluster.path("archive"))
        .read_only()
        .create(cluster)
        .await;
    cluster.create_s3_secret("keys", "a", "b").await;
    fixtures::s3_location("nowhere", "http://127.0.0.1:9", "b")
        .credential("keys")
        .create(cluster)
        .await;
    cluster.start_coordinator(coordinator_program(), &["--storage-retry-budget", "0s"]);

    shared
}

/// Backups to locations that cannot take them fail validation and write nothing.
async fn backups_fail_validation(cluster: &Cluster, storage: &Path) {
    let leftover = storage.join("backups/taken/taken-resources.tar.gz");
    let backup_cases = [
        (
            fixtures::backup("to-missing").location("missing"),
            "storage location missing does not exist",
        ),
        (
            fixtures::backup("to-archive").location("archive"),
            "storage location archive is ReadOnly",
        ),
        (
            fixtures::backup("to-nowhere").location("nowhere"),
            "storage location nowhere is unreachable",
        ),
    ];
    for (backup, _) in &backup_cases {
        backup.create(cluster).await;
    }
    fixtures::backup("taken").create(cluster).await;
    let taken = cluster
        .wait_finished::<Backup>("taken")
        .await
        .status
        .unwrap_or_default();
    assert_failed_validation(
        "taken",
        taken.phase,
        &taken.validation_errors,
        "a backup named taken already exists in storage location default",
    );
    assert_eq!(
        fs::read(&leftover).unwrap(),
        b"old",
        "the earlier backup's objects stay"
    );
    for (backup, expected) in backup_cases {
        let name = backup.name();
        let backup = cluster.wait_finished::<Backup>(&name).await;
        let status = backup.status.unwrap_or_default();
        assert_failed_validation(&name, status.phase, &status.validation_errors, expected);
        assert!(cluster.pvbs_of(&name).await.is_empty());
        assert!(!storage.join("backups").join(&name).exists());
    }
}

/// Restores of backups that cannot be restored fail validation and create nothing.
async fn restores_fail_validation(cluster: &Cluster) {
    let restore_cases = [
        (
            fixtures::restore("ghost").backup("ghost"),
            "backup ghost does not exist",
        ),
        (
            fixtures::restore("failed").backup("to-missing"),
            "backup to-missing is FailedValidation",
        ),
    ];
    for (restore, _) in &restore_cases {
        restore.create(cluster).await;
    }
    for (restore, expected) in restore_cases {
        let name = restore.name();
        let restore = cluster.wait_finished::<Restore>(&name).await;
        let status = restore.status.unwrap_or_default();
        assert_failed_validation(&name, status.phase, &status.validation_errors, expected);
    }
    assert!(
        Api::<Pod>::namespaced(cluster.client(), &cluster.scoped("shop"))
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len()
            == 1
    );
}

/// A schedule with a bad cron expression fails validation.
async fn a_bad_schedule_fails_validation(cluster: &Cluster) {
    fixtures::schedule("sometimes", "every day at 3")
        .create(cluster)
        .await;
    let schedule = cluster
        .wait_for(
            &cluster.api::<Schedule>(),
            "sometimes",
            "FailedValidation",
            |s: &Schedule| s.phase() == SchedulePhase::FailedValidation,
        )
        .await;
    let errors = schedule.status.unwrap().validation_errors.join("; ");
    assert!(errors.contains("give five"), "{errors}");
}

/// Unreachable and crowded locations are Unavailable with the cause, and refuse backups.
async fn unusable_locations_are_unavailable(cluster: &Cluster, shared: &Path) {
    // The unreachable location is reported Unavailable with the cause.
    let nowhere = cluster
        .wait_for(
            &cluster.api::<BackupStorageLocation>(),
            "nowhere",
            "Unavailable",
            |l: &BackupStorageLocation| {
                l.status.as_ref().and_then(|s| s.phase) == Some(StorageLocationPhase::Unavailable)
            },
        )
        .await;
    assert!(nowhere.status.unwrap().message.is_some());
    let phase_of = |phase: StorageLocationPhase| {
        move |l: &BackupStorageLocation| l.status.as_ref().and_then(|s| s.phase) == Some(phase)
    };
    let locations = cluster.api::<BackupStorageLocation>();
    let crowded = cluster
        .wait_for(
            &locations,
            "crowded",
            "Unavailable",
            phase_of(StorageLocationPhase::Unavailable),
        )
        .await;
    let message = crowded.status.unwrap().message.unwrap();
    assert!(
        message.contains("photos") && message.contains("not Ferry's layout"),
        "{message}"
    );
    cluster
        .wait_for(
            &locations,
            "default",
            "Available",
            phase_of(StorageLocationPhase::Available),
        )
        .await;
    fixtures::backup("to-crowded")
        .location("crowded")
        .create(cluster)
        .await;
    let refused = cluster.wait_finished::<Backup>("to-crowded").await;
    let status = refused.status.unwrap_or_default();
    assert_failed_validation(
        "to-crowded",
        status.phase,
        &status.validation_errors,
        "not Ferry's layout",
    );
    assert!(shared.join("photos/cat.jpg").is_file() && !shared.join("backups").exists());
}
