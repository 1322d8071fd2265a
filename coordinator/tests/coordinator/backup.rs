//! Backups: which volumes they choose, opt-out and opt-in; the storage layout they write; how
//! their snapshots chain; the coordinator's metrics; and how failed and timed-out volumes make a
//! backup PartiallyFailed.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use ferry_shared::crd::{Backup, OperationPhase, PodVolumeBackup};
use ferry_shared::names::{self, annotation, label};
use ferry_tests::fixtures;
use ferry_tests::harness::{Cluster, VolumeKind, assert_promtool_accepts};
use ferry_tests::restic::{restic, succeed};
use ferry_tests::tree::make_rich_tree;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::{
    NODE, PASSWORD, agent_program, completed, coordinator_program, set_pvb_status, shop_cluster,
    volumes_of,
};

async fn annotate(cluster: &Cluster, pod: &Pod, key: &str, value: &str) {
    Api::<Pod>::namespaced(cluster.client(), &pod.namespace().unwrap())
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {key: value}}})),
        )
        .await
        .expect("annotate pod");
}

fn files_under(dir: &Path) -> usize {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_file())
        .count()
}

/// Three pods in `shop`: `a` with an emptyDir and its own claim, `b` and `c` sharing a claim.
async fn three_pods(cluster: &Cluster) -> BTreeMap<String, PathBuf> {
    cluster
        .create_bound_claim("shop", "data-a", "pv-data-a")
        .await;
    cluster
        .create_bound_claim("shop", "shared", "pv-shared")
        .await;
    let mut dirs = BTreeMap::new();
    let claim = |claim: &str, volume: &str| VolumeKind::CsiClaim {
        claim: claim.to_owned(),
        volume: volume.to_owned(),
    };
    let specs = [
        (
            "a",
            vec![
                ("cache", VolumeKind::EmptyDir),
                ("data", claim("data-a", "pv-data-a")),
            ],
        ),
        ("b", vec![("shared", claim("shared", "pv-shared"))]),
        ("c", vec![("shared", claim("shared", "pv-shared"))]),
    ];
    for (seed, (pod, volumes)) in specs.into_iter().enumerate() {
        let names: Vec<String> = volumes.iter().map(|(name, _)| (*name).to_owned()).collect();
        let (_, volume_dirs) = cluster.create_pod("shop", pod, NODE, volumes).await;
        for (name, dir) in names.into_iter().zip(volume_dirs) {
            make_rich_tree(&dir, seed as u64 * 10 + name.len() as u64);
            dirs.insert(format!("{pod}/{name}"), dir);
        }
    }
    dirs
}

#[tokio::test(flavor = "multi_thread")]
async fn backups_choose_volumes_write_the_layout_and_chain_snapshots() {
    let (mut cluster, storage) = shop_cluster().await;
    three_pods(&cluster).await;
    let agent = agent_program();
    cluster.start_agent(&agent, NODE, &["--progress-interval", "200ms"]);
    cluster.start_coordinator(coordinator_program(), &[]);
    let first = opt_out_takes_every_eligible_volume_once(&cluster).await;
    let repository = the_layout_holds_manifests_records_and_snapshots(&cluster, &storage).await;
    let picked = opt_in_takes_only_the_named_volumes(&cluster, &first).await;
    unchanged_data_chains_to_the_newest_snapshots(&cluster, &repository, &first, &picked).await;
    the_metrics_are_valid_prometheus_text(&mut cluster).await;
}

/// An opt-out backup takes every eligible volume, and the shared claim once; returns its
/// PodVolumeBackups.
async fn opt_out_takes_every_eligible_volume_once(cluster: &Cluster) -> Vec<PodVolumeBackup> {
    // Opt-out: every eligible volume, and the shared claim once.
    opt_out("all").create(cluster).await;
    let all = completed::<Backup>(cluster, "all").await;
    let pvbs = cluster.pvbs_of("all").await;
    assert_eq!(volumes_of(&pvbs), ["a/cache", "a/data", "b/shared"]);
    let status = all.status.clone().unwrap();
    assert_eq!(status.pod_volume_backups.as_ref().unwrap().completed, 3);
    assert!(status.progress.as_ref().unwrap().volumes.bytes_done > 0);
    assert_eq!(
        all.spec.storage_location.as_deref(),
        Some("default"),
        "the default location is recorded"
    );
    for pvb in &pvbs {
        assert_eq!(pvb.labels()[label::NODE], cluster.scoped(NODE));
        assert_eq!(pvb.owner_references()[0].name, "all");
        assert!(
            pvb.spec
                .repository
                .ends_with(&format!("/restic/{}", cluster.scoped("shop"))),
            "{}",
            pvb.spec.repository
        );
        assert_eq!(pvb.spec.parent_snapshot_id, None);
    }
    let claim_pvb = pvbs.iter().find(|pvb| pvb.spec.volume == "data").unwrap();
    assert!(claim_pvb.spec.tags.contains_key(names::tag::PVC_UID));
    assert_eq!(claim_pvb.annotations()[annotation::PVC_NAME], "data-a");

    pvbs
}

fn opt_out(name: &str) -> fixtures::Fixture<Backup> {
    fixtures::backup(name).namespaces(["shop"]).all_volumes()
}

/// The layout: the objects (the namespace's, and its Namespace and the volumes its claims are
/// bound to), the PodVolumeBackup list, the log, and the backup itself, and snapshots that
/// restic lists; returns the repository's path.
async fn the_layout_holds_manifests_records_and_snapshots(
    cluster: &Cluster,
    storage: &Path,
) -> PathBuf {
    let dir = storage.join("backups/all");
    for file in [
        "ferry-backup.json",
        "all-podvolumebackups.json.gz",
        "all-resources.tar.gz",
        "all-logs.gz",
    ] {
        assert!(
            dir.join(file).is_file(),
            "{file} missing in {}",
            dir.display()
        );
    }
    let manifests =
        ferry_shared::layout::untar_gz(&fs::read(dir.join("all-resources.tar.gz")).unwrap())
            .unwrap();
    let mut paths: Vec<String> = (manifests.iter())
        .map(|(path, _)| cluster.unscoped(path))
        .collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        [
            "resources/namespaces/cluster/shop.json",
            "resources/persistentvolumeclaims/namespaces/shop/data-a.json",
            "resources/persistentvolumeclaims/namespaces/shop/shared.json",
            "resources/persistentvolumes/cluster/pv-data-a.json",
            "resources/persistentvolumes/cluster/pv-shared.json",
            "resources/pods/namespaces/shop/a.json",
            "resources/pods/namespaces/shop/b.json",
            "resources/pods/namespaces/shop/c.json",
            "resources/serviceaccounts/namespaces/shop/default.json",
        ]
    );
    let stored: Backup =
        serde_json::from_slice(&fs::read(dir.join("ferry-backup.json")).unwrap()).unwrap();
    assert_eq!(stored.phase(), OperationPhase::Completed);
    let repository = storage.join("restic").join(cluster.scoped("shop"));
    let password_file = cluster.path("password");
    fs::write(&password_file, PASSWORD).unwrap();
    let snapshots =
        succeed(restic(repository.to_str().unwrap(), &password_file).args(["snapshots", "--json"]));
    let snapshots: Vec<serde_json::Value> = serde_json::from_slice(&snapshots.stdout).unwrap();
    assert_eq!(snapshots.len(), 3, "restic lists the three snapshots");

    repository
}

/// An opt-in backup takes only the annotated volumes, with the earlier snapshot as parent;
/// a name the pod lacks is skipped with its reason. Returns its PodVolumeBackups.
async fn opt_in_takes_only_the_named_volumes(
    cluster: &Cluster,
    pvbs: &[PodVolumeBackup],
) -> Vec<PodVolumeBackup> {
    let pods = Api::<Pod>::namespaced(cluster.client(), &cluster.scoped("shop"));
    let a = pods.get("a").await.unwrap();
    annotate(cluster, &a, annotation::BACKUP_VOLUMES, "cache,nope").await;
    fixtures::backup("picked")
        .namespaces(["shop"])
        .create(cluster)
        .await;
    let picked = completed::<Backup>(cluster, "picked").await;
    assert_eq!(volumes_of(&cluster.pvbs_of("picked").await), ["a/cache"]);
    assert_eq!(
        cluster.unscoped_value(&picked.status.unwrap().warnings),
        ["volume nope of pod shop/a skipped: the pod has no volume of that name"]
    );
    // The opt-in backup took a's cache again, with the first backup's snapshot as parent.
    let cache_parent = cluster.pvbs_of("picked").await[0]
        .spec
        .parent_snapshot_id
        .clone();
    let first_cache = pvbs.iter().find(|pvb| pvb.spec.volume == "cache").unwrap();
    assert_eq!(
        cache_parent,
        first_cache.status.as_ref().unwrap().snapshot_id
    );

    cluster.pvbs_of("picked").await
}

/// A second opt-out backup of unchanged data: each volume's parent is its newest earlier
/// snapshot (for a's cache, the opt-in backup's), and the repository gains no data.
async fn unchanged_data_chains_to_the_newest_snapshots(
    cluster: &Cluster,
    repository: &Path,
    pvbs: &[PodVolumeBackup],
    picked: &[PodVolumeBackup],
) {
    let mut newest: BTreeMap<String, Option<String>> = pvbs
        .iter()
        .chain(picked)
        .map(|pvb| {
            (
                format!("{}/{}", pvb.spec.pod.name, pvb.spec.volume),
                pvb.status.as_ref().unwrap().snapshot_id.clone(),
            )
        })
        .collect();
    let data_before = files_under(&repository.join("data"));
    opt_out("again").create(cluster).await;
    completed::<Backup>(cluster, "again").await;
    for pvb in cluster.pvbs_of("again").await {
        let volume = format!("{}/{}", pvb.spec.pod.name, pvb.spec.volume);
        assert_eq!(
            pvb.spec.parent_snapshot_id,
            newest.remove(&volume).unwrap(),
            "{volume}"
        );
    }
    assert_eq!(
        files_under(&repository.join("data")),
        data_before,
        "unchanged data adds no packs"
    );
}

/// The coordinator is ready and its metrics are valid Prometheus text.
async fn the_metrics_are_valid_prometheus_text(cluster: &mut Cluster) {
    let coordinator = cluster.coordinator();
    let metrics = coordinator
        .metrics_showing("ferry_backup_total{phase=\"Completed\"} 3")
        .await;
    assert_eq!(coordinator.admin("/readyz").as_deref(), Some("ok"));
    for line in [
        "ferry_ready 1",
        "ferry_backup_last_successful_timestamp_seconds{schedule=\"\"}",
        "ferry_backup_storage_location_available{location=\"default\"} 1",
        // Counters have every series from the start.
        "ferry_backup_total{phase=\"Failed\"} 0",
        "ferry_restore_total{phase=\"Completed\"} 0",
        "ferry_repository_maintenance_total{result=\"failure\"} 0",
        "ferry_storage_retries_total{operation=\"write\"} 0",
    ] {
        assert!(metrics.contains(line), "no {line} in:\n{metrics}");
    }
    assert_promtool_accepts(&metrics);
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_and_timed_out_volumes_make_a_backup_partially_failed() {
    let (mut cluster, storage) = shop_cluster().await;
    for pod in ["a", "b", "c"] {
        cluster
            .create_pod("shop", pod, NODE, vec![("data", VolumeKind::EmptyDir)])
            .await;
    }
    // No node agent: the test writes the transfers' status itself.
    cluster.start_coordinator(coordinator_program(), &[]);
    fixtures::backup("mixed")
        .namespaces(["shop"])
        .all_volumes()
        .volume_timeout("1h")
        .create(&cluster)
        .await;
    one_transfer_fails_one_runs_too_long_and_one_completes(&cluster).await;
    let backup = cluster.wait_finished::<Backup>("mixed").await;
    assert_eq!(
        backup.phase(),
        OperationPhase::PartiallyFailed,
        "{backup:#?}\n{}",
        cluster.logs()
    );
    let status = backup.status.unwrap();
    assert_eq!(
        status.pod_volume_backups.unwrap(),
        ferry_shared::crd::TransferCounts {
            total: 3,
            completed: 1,
            failed: 2
        }
    );
    assert_eq!(
        status.timed_out_volumes,
        [format!("{}/b/data", cluster.scoped("shop"))]
    );
    let errors = cluster.unscoped(&status.errors.join("; "));
    assert!(
        errors.contains("volume data of pod shop/a failed: disk read error"),
        "{errors}"
    );
    assert!(
        errors.contains("volume shop/b/data timed out after 1h"),
        "{errors}"
    );
    // The timed-out transfer was deleted, which stops its node agent's work.
    assert_eq!(
        volumes_of(&cluster.pvbs_of("mixed").await),
        ["a/data", "c/data"]
    );
    let stored: Backup =
        serde_json::from_slice(&fs::read(storage.join("backups/mixed/ferry-backup.json")).unwrap())
            .unwrap();
    assert_eq!(stored.phase(), OperationPhase::PartiallyFailed);
}

/// Once the backup "mixed" has its three transfers, writes their status as a node agent would:
/// the first Failed, the second InProgress for two hours, the third Completed.
async fn one_transfer_fails_one_runs_too_long_and_one_completes(cluster: &Cluster) {
    let started = cluster
        .wait_for(
            &cluster.api::<Backup>(),
            "mixed",
            "to create its transfers",
            |b: &Backup| {
                b.status
                    .as_ref()
                    .and_then(|s| s.pod_volume_backups.as_ref())
                    .is_some_and(|c| c.total == 3)
            },
        )
        .await;
    assert_eq!(started.phase(), OperationPhase::InProgress);
    let pvbs = cluster.pvbs_of("mixed").await;
    let two_hours_ago =
        k8s_openapi::jiff::Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_hours(2);
    set_pvb_status(
        cluster,
        &pvbs[0],
        json!({"phase": "Failed", "message": "disk read error"}),
    )
    .await;
    set_pvb_status(
        cluster,
        &pvbs[1],
        json!({"phase": "InProgress", "startTimestamp": two_hours_ago.to_string()}),
    )
    .await;
    set_pvb_status(
        cluster,
        &pvbs[2],
        json!({"phase": "Completed", "snapshotID": "0123abcd"}),
    )
    .await;
}
