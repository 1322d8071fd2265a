//! Disaster recovery: a cluster backs up to a bucket and is lost; a fresh cluster with the same
//! password and bucket syncs the backup and restores it into another namespace.

use std::fs;
use std::path::Path;

use ferry_shared::crd::PodVolumeTransfer;
use ferry_shared::crd::{Backup, PodVolumePhase, Restore};
use ferry_shared::layout::{ObjectStore, gunzip, key};
use ferry_shared::names::{self, annotation, label};
use ferry_shared::retry::Retrier;
use ferry_tests::harness::names::Names;
use ferry_tests::harness::{Cluster, VolumeKind};
use ferry_tests::tree::{assert_same_tree, make_rich_tree};
use ferry_tests::{fixtures, s3};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::Api;

use crate::{
    NODE, PASSWORD, agent_program, bucket_location, completed, coordinator_program,
    create_s3_location_trusting, synced, volumes_of,
};

/// A cluster that backs up the pod `shop/db-0`, with an emptyDir and a claim, to `bucket` and
/// is then lost. `reference` receives the data of each volume, by volume name. The location
/// trusts `ca_cert` for the endpoint, if given.
pub(crate) async fn back_up_and_lose_the_cluster(
    endpoint: &str,
    bucket: &str,
    ca_cert: Option<&str>,
    reference: &Path,
) -> Names {
    let mut cluster = Cluster::start().await;
    cluster.create_repository_password(PASSWORD).await;
    create_s3_location_trusting(&cluster, endpoint, bucket, ca_cert).await;
    cluster.add_node(NODE).await;
    cluster.create_namespace("shop").await;
    cluster.create_bound_claim("shop", "data", "pv-data").await;
    let claim = VolumeKind::CsiClaim {
        claim: "data".into(),
        volume: "pv-data".into(),
    };
    let (_, dirs) = cluster
        .create_pod(
            "shop",
            "db-0",
            NODE,
            vec![("cache", VolumeKind::EmptyDir), ("data", claim)],
        )
        .await;
    make_rich_tree(&dirs[0], 1);
    make_rich_tree(&dirs[1], 2);
    make_rich_tree(&reference.join("cache"), 1);
    make_rich_tree(&reference.join("data"), 2);
    cluster.start_agent(&agent_program(), NODE, &["--progress-interval", "200ms"]);
    cluster.start_coordinator(coordinator_program(), &[]);
    fixtures::backup("before-the-fire")
        .all_volumes()
        .namespaces(["shop"])
        .create(&cluster)
        .await;
    completed::<Backup>(&cluster, "before-the-fire").await;
    cluster.names().clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fresh_cluster_syncs_the_bucket_and_restores_into_a_mapped_namespace() {
    let endpoint = s3::endpoint();
    let bucket = s3::new_bucket(&endpoint);
    let reference = tempfile::tempdir().unwrap();
    let lost = back_up_and_lose_the_cluster(&endpoint, &bucket, None, reference.path()).await;

    let mut cluster = a_fresh_cluster_syncs_the_backup(&endpoint, &bucket, None, &lost).await;
    restore_into_a_mapped_namespace(&cluster, &lost, reference.path()).await;
    the_results_and_log_are_in_the_bucket(&cluster, &endpoint, &bucket).await;
    cluster
        .coordinator()
        .metrics_showing("ferry_restore_total{phase=\"Completed\"} 1")
        .await;
}

/// A new cluster with the same password and bucket finds the backup and its volumes.
pub(crate) async fn a_fresh_cluster_syncs_the_backup(
    endpoint: &str,
    bucket: &str,
    ca_cert: Option<&str>,
    lost: &Names,
) -> Cluster {
    let mut cluster = Cluster::start_after(lost).await;
    cluster.create_repository_password(PASSWORD).await;
    create_s3_location_trusting(&cluster, endpoint, bucket, ca_cert).await;
    cluster.add_node("node-b").await;
    cluster.start_agent(
        &agent_program(),
        "node-b",
        &["--progress-interval", "200ms"],
    );
    cluster.start_coordinator(coordinator_program(), &[]);
    let synced = synced(&cluster, "before-the-fire").await;
    assert_eq!(synced.annotations()[annotation::SYNCED_FROM], "default");
    let pvbs = cluster.pvbs_of("before-the-fire").await;
    assert_eq!(volumes_of(&pvbs), ["db-0/cache", "db-0/data"]);
    assert!(
        pvbs.iter()
            .all(|pvb| pvb.phase() == PodVolumePhase::Completed
                && !pvb.labels().contains_key(label::NODE))
    );

    cluster
}

/// Restores the synced backup into `shop-restored` and checks each volume against
/// `reference`.
pub(crate) async fn restore_into_a_mapped_namespace(
    cluster: &Cluster,
    lost: &Names,
    reference: &Path,
) {
    fixtures::restore("after-the-fire")
        .backup("before-the-fire")
        .map_namespace(&lost.scoped("shop"), "shop-restored")
        .create(cluster)
        .await;
    let pods = Api::<Pod>::namespaced(cluster.client(), &cluster.scoped("shop-restored"));
    let restored = cluster
        .wait_for(&pods, "db-0", "created by the restore", |_: &Pod| true)
        .await;
    let init = restored
        .spec
        .as_ref()
        .unwrap()
        .init_containers
        .clone()
        .unwrap();
    assert_eq!(init[0].name, names::RESTORE_WAIT_CONTAINER);
    let restore_uid = cluster
        .api::<Restore>()
        .get("after-the-fire")
        .await
        .unwrap()
        .uid()
        .unwrap();
    assert_eq!(init[0].args.as_deref(), Some(&[restore_uid.clone()][..]));
    let (_, dirs) = cluster
        .run_restored_pod("shop-restored", "db-0", "node-b")
        .await;
    let restore = completed::<Restore>(cluster, "after-the-fire").await;
    assert_eq!(
        restore
            .status
            .as_ref()
            .unwrap()
            .pod_volume_restores
            .as_ref()
            .unwrap()
            .completed,
        2
    );
    for volume in ["cache", "data"] {
        let dir = &dirs[volume];
        let marker = dir.join(".velero").join(&restore_uid);
        assert!(marker.is_file(), "no done-marker in {}", dir.display());
        fs::remove_dir_all(dir.join(".velero")).unwrap();
        assert_same_tree(&reference.join(volume), dir);
    }
}

/// The restore's results and log are in the bucket.
async fn the_results_and_log_are_in_the_bucket(cluster: &Cluster, endpoint: &str, bucket: &str) {
    let store = ObjectStore::open(
        &bucket_location(endpoint, bucket),
        Retrier::unobserved(std::time::Duration::ZERO),
    )
    .unwrap();
    let results = store
        .get(&key::restore_results("after-the-fire"))
        .await
        .unwrap()
        .expect("restore results in the bucket");
    let results = cluster.unscoped(&String::from_utf8(gunzip(&results).unwrap()).unwrap());
    assert!(results.contains("pods/shop-restored/db-0"), "{results}");
    let log = store
        .get(&key::restore_logs("after-the-fire"))
        .await
        .unwrap()
        .expect("restore log in the bucket");
    let log = String::from_utf8(gunzip(&log).unwrap()).unwrap();
    assert!(
        log.contains("restore after-the-fire ended Completed"),
        "{log}"
    );
}
