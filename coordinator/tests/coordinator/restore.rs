//! Restores: into protected namespaces they fail validation and create nothing; over objects
//! that exist they leave them alone unless told to update them.

use ferry_shared::crd::{Backup, Restore};
use ferry_shared::names::label;
use ferry_tests::fixtures;
use ferry_tests::harness::{Cluster, VolumeKind};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use crate::{
    NODE, assert_failed_validation, backed_up_web_pod, completed, coordinator_program,
    shop_cluster, shop_cluster_on,
};

/// The pods of `namespace` (as the test names it) that a restore made.
async fn restored_pods(cluster: &Cluster, namespace: &str) -> Vec<String> {
    Api::<Pod>::namespaced(cluster.client(), &cluster.scoped(namespace))
        .list(&ListParams::default().labels(label::RESTORE_NAME))
        .await
        .expect("list pods")
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect()
}

/// Backs up `shop` alone and everything, each with a pod without volumes to back up (the
/// backups complete with their manifests alone), then deletes the source pod in kube-system,
/// so that anything there afterwards was made by a restore.
async fn backups_of_shop_and_kube_system(cluster: &mut Cluster) {
    for namespace in ["shop", "kube-system"] {
        cluster
            .create_pod(namespace, "web", NODE, vec![("data", VolumeKind::EmptyDir)])
            .await;
    }
    cluster.start_coordinator(coordinator_program(), &["--storage-retry-budget", "0s"]);
    for backup in [
        fixtures::backup("shop-only").namespaces(["shop"]),
        fixtures::backup("everything"),
    ] {
        backup.create(cluster).await;
        completed::<Backup>(cluster, &backup.name()).await;
    }
    cluster
        .delete_pod(
            &Api::<Pod>::namespaced(cluster.client(), &cluster.scoped("kube-system"))
                .get("web")
                .await
                .unwrap(),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn restores_into_protected_namespaces_fail_validation_and_create_nothing() {
    let needs = "backups of every namespace of the cluster, kube-system among them";
    let Some(cluster) = Cluster::start_on_test_server(needs).await else {
        return;
    };
    let (mut cluster, _) = shop_cluster_on(cluster).await;
    backups_of_shop_and_kube_system(&mut cluster).await;
    let install = cluster.namespace().to_owned();
    let shop = cluster.scoped("shop");
    let cases = [
        (
            fixtures::restore("mapped-to-kube-system")
                .backup("shop-only")
                .map_namespace("shop", "kube-system"),
            format!("kube-system (namespaceMapping from {shop})"),
        ),
        (
            fixtures::restore("mapped-to-install")
                .backup("everything")
                .map_namespace("shop", "ferry"),
            format!("namespace {install} (namespaceMapping from {shop})"),
        ),
        (
            fixtures::restore("included")
                .backup("everything")
                .namespaces(["kube-system"]),
            "namespace kube-system:".to_owned(),
        ),
        // Neither the Restore nor the Backup names namespaces: found in the backup's objects,
        // which hold every namespace.
        (
            fixtures::restore("whole-backup").backup("everything"),
            format!("namespaces {install}, kube-node-lease, kube-public, kube-system: they are"),
        ),
    ];
    for (restore, _) in &cases {
        restore.create(&cluster).await;
    }
    for (restore, expected) in cases {
        let name = restore.name();
        let restore = cluster.wait_finished::<Restore>(&name).await;
        let status = restore.status.unwrap_or_default();
        assert_failed_validation(&name, status.phase, &status.validation_errors, &expected);
        assert_failed_validation(
            &name,
            status.phase,
            &status.validation_errors,
            "--restore-namespace-denylist",
        );
    }
    for namespace in ["kube-system", "ferry", "shop"] {
        assert!(
            restored_pods(&cluster, namespace).await.is_empty(),
            "{namespace}"
        );
    }
    assert!(
        Api::<Pod>::namespaced(cluster.client(), &cluster.scoped("kube-system"))
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );

    // The same restore goes through once the shop namespace is all it writes to.
    fixtures::restore("shop-again")
        .backup("everything")
        .namespaces(["shop"])
        .map_namespace("shop", "shop-2")
        .create(&cluster)
        .await;
    completed::<Restore>(&cluster, "shop-again").await;
    assert_eq!(restored_pods(&cluster, "shop-2").await, ["web"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restore_leaves_existing_objects_alone_unless_told_to_update_them() {
    let (mut cluster, _) = shop_cluster().await;
    backed_up_web_pod(&mut cluster, "b1").await;

    // The pod and claim still exist: the default policy keeps them and restores no data. The
    // claim holds all the restore would set (it comes back unbound, for its data is in a
    // pod-volume backup), so only the pod, which would gain the restore-wait container, differs.
    fixtures::restore("keep")
        .backup("b1")
        .create(&cluster)
        .await;
    let kept = completed::<Restore>(&cluster, "keep").await;
    let warnings = kept.status.unwrap().warnings;
    assert_eq!(
        warnings,
        [format!(
            "pods/{}/web already exists and differs from the backup; left alone",
            cluster.scoped("shop")
        )]
    );
    let pod = Api::<Pod>::namespaced(cluster.client(), &cluster.scoped("shop"))
        .get("web")
        .await
        .unwrap();
    assert!(!pod.labels().contains_key(label::RESTORE_NAME));

    // `update` patches what the API server allows: a pod's spec is not, so it gets the
    // backed-up labels and annotations and the restore's own, with a warning.
    fixtures::restore("refresh")
        .backup("b1")
        .update_existing()
        .create(&cluster)
        .await;
    completed::<Restore>(&cluster, "refresh").await;
    let pod = Api::<Pod>::namespaced(cluster.client(), &cluster.scoped("shop"))
        .get("web")
        .await
        .unwrap();
    assert_eq!(pod.labels()[label::RESTORE_NAME], "refresh");
    assert_eq!(
        pod.spec.unwrap().node_name.as_deref(),
        Some(cluster.scoped(NODE).as_str()),
        "the running pod is untouched"
    );
}
