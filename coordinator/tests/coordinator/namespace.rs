//! Whole namespaces: every object of a namespace backed up through discovery and restored, in a
//! safe order, into a mapped namespace with its volumes' data; the filters of Backups and
//! Restores; disaster recovery of a custom resource with its definition; bad input; and a
//! backup from before, of Pods and PVCs only, restored.

use std::fmt::Debug;
use std::fs;
use std::path::Path;

use ferry_shared::crd::{Backup, OperationPhase, PodVolumeRestore, Restore};
use ferry_shared::layout::{ItemPath, tar_gz, untar_gz};
use ferry_shared::names::{self, label};
use ferry_tests::harness::{Cluster, VolumeKind};
use ferry_tests::tree::{assert_same_tree, make_rich_tree};
use ferry_tests::{fixtures, s3};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::rbac::v1::{ClusterRole, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::{
    NODE, PASSWORD, agent_program, backed_up_web_pod, completed, coordinator_program,
    create_s3_location, shop_cluster, shop_cluster_on_test_server, synced,
};

/// What these tests need of the test server: objects of their own that are cluster-wide (a
/// CustomResourceDefinition, a ClusterRole), backups of every cluster-scoped object, and
/// `forbid`. On a shared server, tests running at once would share them.
const CLUSTER_WIDE: &str = "cluster-wide objects of its own";

/// Creates a namespaced object from its JSON in `namespace`.
async fn create_in<K>(cluster: &Cluster, namespace: &str, object: Value) -> K
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned
        + Serialize,
{
    let object: K = serde_json::from_value(object).expect("a valid object");
    Api::<K>::namespaced(cluster.client(), &cluster.scoped(namespace))
        .create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|err| panic!("create {}: {err}", K::kind(&())))
}

async fn get_in<K>(cluster: &Cluster, namespace: &str, name: &str) -> K
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned,
{
    Api::<K>::namespaced(cluster.client(), &cluster.scoped(namespace))
        .get(name)
        .await
        .unwrap_or_else(|err| panic!("{} {namespace}/{name}: {err}", K::kind(&())))
}

/// The `widgets.example.com` custom resource, namespaced, served at `v1`.
fn widget_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "Widget"),
        "widgets",
    )
}

async fn create_widget_definition(cluster: &Cluster) {
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}],
        },
    }))
    .unwrap();
    Api::<CustomResourceDefinition>::all(cluster.client())
        .create(&PostParams::default(), &crd)
        .await
        .expect("create the widget definition");
}

async fn create_widget(cluster: &Cluster, namespace: &str, name: &str, color: &str) {
    let namespace = &cluster.scoped(namespace);
    let widgets: Api<DynamicObject> =
        Api::namespaced_with(cluster.client(), namespace, &widget_resource());
    let widget: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": "web"}},
        "spec": {"color": color},
    }))
    .unwrap();
    widgets
        .create(&PostParams::default(), &widget)
        .await
        .expect("create a widget");
}

/// The objects of an application beside its pods: configuration, access, services, an
/// ingress, workloads and a custom resource.
async fn create_application(cluster: &Cluster, ns: &str) {
    create_in::<ConfigMap>(cluster, ns, json!({"metadata": {"name": "settings", "labels": {"app": "web"}}, "data": {"mode": "fast"}})).await;
    create_in::<Secret>(
        cluster,
        ns,
        json!({"metadata": {"name": "credentials"}, "stringData": {"token": "s3cr3t"}}),
    )
    .await;
    create_in::<ServiceAccount>(cluster, ns, json!({"metadata": {"name": "app"}})).await;
    create_in::<Role>(
        cluster,
        ns,
        json!({"metadata": {"name": "reader"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]}),
    )
    .await;
    create_in::<RoleBinding>(
        cluster,
        ns,
        json!({"metadata": {"name": "app-reads"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "app", "namespace": cluster.scoped(ns)}]}),
    )
    .await;
    create_in::<Service>(
        cluster,
        ns,
        json!({"metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}),
    )
    .await;
    create_in::<Service>(cluster, ns, json!({"metadata": {"name": "web-nodeport"},
        "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80, "nodePort": 30080}]}})).await;
    create_in::<Ingress>(cluster, ns, json!({"metadata": {"name": "web"},
        "spec": {"rules": [{"host": "shop.example.com", "http": {"paths": [{"path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}})).await;
    let template = |app: &str| {
        json!({"metadata": {"labels": {"app": app}},
            "spec": {"containers": [{"name": "app", "image": "app:1"}]}})
    };
    create_in::<StatefulSet>(cluster, ns, json!({"metadata": {"name": "db"},
        "spec": {"serviceName": "db", "selector": {"matchLabels": {"app": "db"}}, "template": template("db")}})).await;
    let mut web = template("web");
    create_in::<Deployment>(
        cluster,
        ns,
        json!({"metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": web.clone()}}),
    )
    .await;
    web["metadata"]["labels"]["pod-template-hash"] = json!("7c9f");
    create_in::<ReplicaSet>(cluster, ns, json!({"metadata": {"name": "web-7c9f", "labels": {"app": "web"}},
        "spec": {"selector": {"matchLabels": {"app": "web", "pod-template-hash": "7c9f"}}, "template": web}})).await;
    create_widget(cluster, ns, "blue", "blue").await;
}

/// Gives a pod the labels and owner its controller would have given it.
async fn own_pod(cluster: &Cluster, ns: &str, pod: &str, labels: Value, owner: (&str, &str, &str)) {
    let (api_version, kind, name) = owner;
    Api::<Pod>::namespaced(cluster.client(), &cluster.scoped(ns))
        .patch(
            pod,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": labels, "ownerReferences": [
                {"apiVersion": api_version, "kind": kind, "name": name, "uid": "0c5c2a36-4cb2-4c36-9e0c-5f3e0f9a1c11", "controller": true}]}})),
        )
        .await
        .expect("label the pod");
}

/// The paths in the resources tarball of `backup`, with the test's names.
fn backed_up(cluster: &Cluster, storage: &Path, backup: &str) -> Vec<String> {
    let tarball = storage.join(format!("backups/{backup}/{backup}-resources.tar.gz"));
    let mut paths: Vec<String> = untar_gz(&fs::read(tarball).expect("the resources tarball"))
        .unwrap()
        .into_iter()
        .map(|(path, _)| cluster.unscoped(&path))
        .collect();
    paths.sort();
    paths
}

/// Deletes a namespace as an accident would: its pods (the harness plays their kubelet), then
/// the namespace, and waits until it is gone.
async fn lose_namespace(cluster: &Cluster, ns: &str) {
    let ns = &cluster.scoped(ns);
    for pod in Api::<Pod>::namespaced(cluster.client(), ns)
        .list(&Default::default())
        .await
        .unwrap()
        .items
    {
        cluster.delete_pod(&pod).await;
    }
    let namespaces = Api::<Namespace>::all(cluster.client());
    namespaces
        .delete(ns, &DeleteParams::default())
        .await
        .expect("delete the namespace");
    for _ in 0..200 {
        if namespaces.get_opt(ns).await.unwrap().is_none() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("namespace {ns} is still there");
}

/// The application in `shop`, with a StatefulSet's pod on a claim and a ReplicaSet's pod on an
/// emptyDir, each volume holding a tree; returns a copy of the trees, by volume name.
async fn shop_with_data(cluster: &Cluster) -> tempfile::TempDir {
    create_widget_definition(cluster).await;
    create_application(cluster, "shop").await;
    cluster
        .create_bound_claim("shop", "data-db-0", "pv-db")
        .await;
    let claim = VolumeKind::CsiClaim {
        claim: "data-db-0".into(),
        volume: "pv-db".into(),
    };
    let (_, db) = cluster
        .create_pod("shop", "db-0", NODE, vec![("data", claim)])
        .await;
    let cache = vec![("cache", VolumeKind::EmptyDir)];
    let (_, web) = cluster
        .create_pod("shop", "web-7c9f-x2x4k", NODE, cache)
        .await;
    let statefulset = ("apps/v1", "StatefulSet", "db");
    own_pod(cluster, "shop", "db-0", json!({"app": "db"}), statefulset).await;
    let web_labels = json!({"app": "web", "pod-template-hash": "7c9f"});
    let replicaset = ("apps/v1", "ReplicaSet", "web-7c9f");
    own_pod(cluster, "shop", "web-7c9f-x2x4k", web_labels, replicaset).await;
    make_rich_tree(&db[0], 3);
    make_rich_tree(&web[0], 4);
    let reference = tempfile::tempdir().unwrap();
    make_rich_tree(&reference.path().join("data"), 3);
    make_rich_tree(&reference.path().join("cache"), 4);
    reference
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_namespace_comes_back_whole_in_a_mapped_namespace() {
    let Some((mut cluster, storage)) = shop_cluster_on_test_server(CLUSTER_WIDE).await else {
        return;
    };
    let reference = shop_with_data(&cluster).await;
    cluster.start_agent(&agent_program(), NODE, &["--progress-interval", "200ms"]);
    cluster.start_coordinator(coordinator_program(), &[]);
    let backup = fixtures::backup("whole").namespaces(["shop"]).all_volumes();
    backup.create(&cluster).await;
    let backup = completed::<Backup>(&cluster, "whole").await;
    let paths = backed_up(&cluster, &storage, "whole");
    the_backup_holds_the_namespace(&paths);
    let progress = backup.status.unwrap().progress.unwrap();
    assert_eq!(progress.items_backed_up, paths.len() as u64);
    assert_eq!(progress.total_items, paths.len() as u64);

    lose_namespace(&cluster, "shop").await;
    let restore = fixtures::restore("back")
        .backup("whole")
        .map_namespace("shop", "shop-2");
    restore.create(&cluster).await;
    the_pods_wait_for_their_data(&cluster).await;
    every_object_is_back(&cluster, &paths).await;
    the_references_follow_the_mapping(&cluster).await;

    let (_, db) = cluster.run_restored_pod("shop-2", "db-0", NODE).await;
    let (_, web) = cluster
        .run_restored_pod("shop-2", "web-7c9f-x2x4k", NODE)
        .await;
    let restore = completed::<Restore>(&cluster, "back").await;
    let progress = restore.status.unwrap().progress.unwrap();
    assert!(progress.total_items > 10, "{progress:?}");
    assert_eq!(progress.items_restored, progress.total_items);
    for (dir, volume) in [(&db["data"], "data"), (&web["cache"], "cache")] {
        fs::remove_dir_all(dir.join(".velero")).unwrap();
        assert_same_tree(&reference.path().join(volume), dir);
    }
}

/// The restored pods are unscheduled, without owners (their controllers adopt them), and held
/// by restore-wait; the claim comes back unbound, for a new volume to take the data.
async fn the_pods_wait_for_their_data(cluster: &Cluster) {
    let pods = Api::<Pod>::namespaced(cluster.client(), &cluster.scoped("shop-2"));
    for pod in ["db-0", "web-7c9f-x2x4k"] {
        let waiting = cluster
            .wait_for(&pods, pod, "created by the restore", |_: &Pod| true)
            .await;
        let spec = waiting.spec.unwrap();
        let first = &spec.init_containers.unwrap()[0];
        assert_eq!(first.name, names::RESTORE_WAIT_CONTAINER);
        assert_eq!(spec.node_name, None);
        assert_eq!(waiting.metadata.owner_references, None);
    }
    let claim: PersistentVolumeClaim = get_in(cluster, "shop-2", "data-db-0").await;
    assert_eq!(claim.spec.unwrap().volume_name, None);
}

/// The tarball keeps every object of `shop` at its type's place, with the Namespace, the
/// volume of the claim and the widgets' definition, and nothing of other namespaces.
fn the_backup_holds_the_namespace(paths: &[String]) {
    for expected in [
        "resources/configmaps/namespaces/shop/settings.json",
        "resources/secrets/namespaces/shop/credentials.json",
        "resources/serviceaccounts/namespaces/shop/app.json",
        "resources/roles.rbac.authorization.k8s.io/namespaces/shop/reader.json",
        "resources/rolebindings.rbac.authorization.k8s.io/namespaces/shop/app-reads.json",
        "resources/services/namespaces/shop/web.json",
        "resources/services/namespaces/shop/web-nodeport.json",
        "resources/ingresses.networking.k8s.io/namespaces/shop/web.json",
        "resources/statefulsets.apps/namespaces/shop/db.json",
        "resources/deployments.apps/namespaces/shop/web.json",
        "resources/replicasets.apps/namespaces/shop/web-7c9f.json",
        "resources/pods/namespaces/shop/db-0.json",
        "resources/pods/namespaces/shop/web-7c9f-x2x4k.json",
        "resources/persistentvolumeclaims/namespaces/shop/data-db-0.json",
        "resources/widgets.example.com/namespaces/shop/blue.json",
        "resources/namespaces/cluster/shop.json",
        "resources/persistentvolumes/cluster/pv-db.json",
        "resources/customresourcedefinitions.apiextensions.k8s.io/cluster/widgets.example.com.json",
    ] {
        assert!(
            paths.iter().any(|p| p == expected),
            "{expected} missing from {paths:#?}"
        );
    }
    for path in paths {
        let item = ItemPath::parse(path).unwrap_or_else(|| panic!("{path} is not an object"));
        assert!(
            item.namespace.as_deref().is_none_or(|ns| ns == "shop"),
            "{path}"
        );
        assert!(
            !path.contains("events") && !path.contains("ferry.dev"),
            "{path}"
        );
    }
}

/// Every namespaced object of the backup is in `shop-2`, labelled with the restore and the
/// backup; but the `default` ServiceAccount, which the namespace came with, as the backup's.
async fn every_object_is_back(cluster: &Cluster, paths: &[String]) {
    for item in paths.iter().filter_map(|path| ItemPath::parse(path)) {
        let Some(resource) = resource_of(&item) else {
            continue;
        };
        let api: Api<DynamicObject> =
            Api::namespaced_with(cluster.client(), &cluster.scoped("shop-2"), &resource);
        let what = item.to_path();
        let object = api
            .get(&item.name)
            .await
            .unwrap_or_else(|err| panic!("{what} not restored: {err}"));
        if what.ends_with("serviceaccounts/namespaces/shop/default.json") {
            continue;
        }
        let labels = object.labels();
        assert_eq!(
            labels.get(label::RESTORE_NAME).map(String::as_str),
            Some("back"),
            "{what}"
        );
        assert_eq!(
            labels.get(label::BACKUP_NAME).map(String::as_str),
            Some("whole"),
            "{what}"
        );
    }
}

/// The API of a namespaced object of the backup; `None` for a cluster-scoped one.
fn resource_of(item: &ItemPath) -> Option<ApiResource> {
    item.namespace.as_ref()?;
    let (version, kind) = match (item.group.as_str(), item.resource.as_str()) {
        ("", "configmaps") => ("v1", "ConfigMap"),
        ("", "secrets") => ("v1", "Secret"),
        ("", "serviceaccounts") => ("v1", "ServiceAccount"),
        ("", "services") => ("v1", "Service"),
        ("", "pods") => ("v1", "Pod"),
        ("", "persistentvolumeclaims") => ("v1", "PersistentVolumeClaim"),
        ("rbac.authorization.k8s.io", "roles") => ("v1", "Role"),
        ("rbac.authorization.k8s.io", "rolebindings") => ("v1", "RoleBinding"),
        ("networking.k8s.io", "ingresses") => ("v1", "Ingress"),
        ("apps", "statefulsets") => ("v1", "StatefulSet"),
        ("apps", "deployments") => ("v1", "Deployment"),
        ("apps", "replicasets") => ("v1", "ReplicaSet"),
        ("example.com", "widgets") => ("v1", "Widget"),
        _ => return None,
    };
    let gvk = GroupVersionKind::gvk(&item.group, version, kind);
    Some(ApiResource::from_gvk_with_plural(&gvk, &item.resource))
}

/// The content came back, and what names a namespace names the new one.
async fn the_references_follow_the_mapping(cluster: &Cluster) {
    let settings: ConfigMap = get_in(cluster, "shop-2", "settings").await;
    assert_eq!(settings.data.unwrap()["mode"], "fast");
    let credentials: Secret = get_in(cluster, "shop-2", "credentials").await;
    assert_eq!(credentials.data.unwrap()["token"].0, b"s3cr3t");
    let binding: RoleBinding = get_in(cluster, "shop-2", "app-reads").await;
    assert_eq!(
        binding.subjects.unwrap()[0].namespace.as_deref(),
        Some(cluster.scoped("shop-2").as_str())
    );
    let web: Service = get_in(cluster, "shop-2", "web").await;
    let spec = web.spec.unwrap();
    assert!(
        spec.cluster_ip
            .is_some_and(|ip| !ip.is_empty() && ip != "None")
    );
    let nodeport: Service = get_in(cluster, "shop-2", "web-nodeport").await;
    assert!(nodeport.spec.unwrap().ports.unwrap()[0].node_port.is_some());
    let ingress: Ingress = get_in(cluster, "shop-2", "web").await;
    assert_eq!(
        ingress.spec.unwrap().rules.unwrap()[0].host.as_deref(),
        Some("shop.example.com")
    );
    let widgets: Api<DynamicObject> = Api::namespaced_with(
        cluster.client(),
        &cluster.scoped("shop-2"),
        &widget_resource(),
    );
    let blue = widgets.get("blue").await.expect("the widget is back");
    assert_eq!(blue.data["spec"]["color"], "blue");
    let replicas: ReplicaSet = get_in(cluster, "shop-2", "web-7c9f").await;
    assert_eq!(
        replicas.spec.unwrap().selector.match_labels.unwrap()["pod-template-hash"],
        "7c9f"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn filters_choose_types_namespaces_labels_and_cluster_objects() {
    let Some((mut cluster, storage)) = shop_cluster_on_test_server(CLUSTER_WIDE).await else {
        return;
    };
    shop_and_blog(&cluster).await;
    cluster.start_coordinator(coordinator_program(), &[]);
    the_backup_filters_choose(&cluster, &storage).await;
    all_cluster_objects_and_an_unknown_type(&cluster, &storage).await;
    the_restore_filters_choose(&cluster).await;
}

/// Two namespaces with ConfigMaps and a Secret, labelled `app=web` or `app=db`, and a
/// ClusterRole.
async fn shop_and_blog(cluster: &Cluster) {
    cluster.create_namespace("blog").await;
    for ns in ["shop", "blog"] {
        create_in::<ConfigMap>(
            cluster,
            ns,
            json!({"metadata": {"name": "web", "labels": {"app": "web"}}}),
        )
        .await;
        create_in::<ConfigMap>(
            cluster,
            ns,
            json!({"metadata": {"name": "db", "labels": {"app": "db"}}}),
        )
        .await;
        create_in::<Secret>(
            cluster,
            ns,
            json!({"metadata": {"name": "key", "labels": {"app": "web"}}}),
        )
        .await;
    }
    Api::<ClusterRole>::all(cluster.client())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "widget-viewer"}})).unwrap(),
        )
        .await
        .unwrap();
}

/// Each Backup filter, on what the tarball holds.
async fn the_backup_filters_choose(cluster: &Cluster, storage: &Path) {
    let cases = [
        (
            fixtures::backup("types")
                .namespaces(["shop"])
                .resources(["configmaps"], []),
            vec![
                "configmaps/namespaces/shop/db",
                "configmaps/namespaces/shop/web",
                "namespaces/cluster/shop",
            ],
        ),
        (
            fixtures::backup("excluded")
                .namespaces(["shop"])
                .resources([], ["configmaps", "serviceaccounts", "namespaces"]),
            vec!["secrets/namespaces/shop/key"],
        ),
        (
            fixtures::backup("labels")
                .namespaces(["shop"])
                .selector("app", "web"),
            vec![
                "configmaps/namespaces/shop/web",
                "namespaces/cluster/shop",
                "secrets/namespaces/shop/key",
            ],
        ),
        (
            fixtures::backup("no-cluster")
                .namespaces(["shop", "blog"])
                .exclude_namespaces(["blog"])
                .resources(["secrets"], [])
                .cluster_resources(false),
            vec!["secrets/namespaces/shop/key"],
        ),
    ];
    for (backup, _) in &cases {
        backup.create(cluster).await;
    }
    for (backup, expected) in cases {
        let name = backup.name();
        completed::<Backup>(cluster, &name).await;
        let paths: Vec<String> = backed_up(cluster, storage, &name)
            .into_iter()
            .map(|p| {
                p.trim_start_matches("resources/")
                    .trim_end_matches(".json")
                    .to_owned()
            })
            .collect();
        assert_eq!(paths, expected, "{name}");
    }
}

async fn all_cluster_objects_and_an_unknown_type(cluster: &Cluster, storage: &Path) {
    // All cluster-scoped objects, and an unknown type named: a warning, the backup goes on.
    fixtures::backup("with-cluster")
        .namespaces(["shop"])
        .resources(["configmaps", "gadgets", "clusterroles"], [])
        .cluster_resources(true)
        .create(cluster)
        .await;
    let backup = completed::<Backup>(cluster, "with-cluster").await;
    let paths = backed_up(cluster, storage, "with-cluster");
    assert!(
        paths.contains(
            &"resources/clusterroles.rbac.authorization.k8s.io/cluster/widget-viewer.json"
                .to_owned()
        ),
        "{paths:?}"
    );
    assert!(!paths.iter().any(|p| p.contains("blog")), "{paths:?}");
    assert_eq!(
        backup.status.unwrap().warnings,
        ["includedResources: \"gadgets\" is not a resource type the cluster serves; it is ignored"]
    );
}

/// A restore's own filters, over a backup of both namespaces.
async fn the_restore_filters_choose(cluster: &Cluster) {
    fixtures::backup("both")
        .namespaces(["shop", "blog"])
        .create(cluster)
        .await;
    completed::<Backup>(cluster, "both").await;
    fixtures::restore("some")
        .backup("both")
        .exclude_namespaces(["blog"])
        .resources(["cm"], [])
        .selector("app", "db")
        .map_namespace("shop", "shop-copy")
        .create(cluster)
        .await;
    completed::<Restore>(cluster, "some").await;
    let restored: Vec<String> =
        Api::<ConfigMap>::namespaced(cluster.client(), &cluster.scoped("shop-copy"))
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(ResourceExt::name_any)
            .collect();
    assert_eq!(restored, ["db"]);
    let secrets = Api::<Secret>::namespaced(cluster.client(), &cluster.scoped("shop-copy"));
    assert!(secrets.get_opt("key").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fresh_cluster_gets_back_a_custom_resource_with_its_definition() {
    let endpoint = s3::endpoint();
    let bucket = s3::new_bucket(&endpoint);
    // The namespace as the first cluster named it, which the restore brings back.
    let shop = {
        let Some(mut cluster) = Cluster::start_on_test_server(CLUSTER_WIDE).await else {
            return;
        };
        cluster.create_repository_password(PASSWORD).await;
        create_s3_location(&cluster, &endpoint, &bucket).await;
        cluster.create_namespace("shop").await;
        create_widget_definition(&cluster).await;
        create_widget(&cluster, "shop", "blue", "blue").await;
        create_in::<ConfigMap>(
            &cluster,
            "shop",
            json!({"metadata": {"name": "settings"}, "data": {"mode": "fast"}}),
        )
        .await;
        cluster.start_coordinator(coordinator_program(), &[]);
        fixtures::backup("widgets")
            .namespaces(["shop"])
            .create(&cluster)
            .await;
        completed::<Backup>(&cluster, "widgets").await;
        cluster.scoped("shop")
    };
    let Some(mut cluster) = Cluster::start_on_test_server(CLUSTER_WIDE).await else {
        return;
    };
    cluster.create_repository_password(PASSWORD).await;
    create_s3_location(&cluster, &endpoint, &bucket).await;
    cluster.start_coordinator(coordinator_program(), &[]);
    synced(&cluster, "widgets").await;
    fixtures::restore("widgets-back")
        .backup("widgets")
        .create(&cluster)
        .await;
    completed::<Restore>(&cluster, "widgets-back").await;
    let definition = Api::<CustomResourceDefinition>::all(cluster.client())
        .get("widgets.example.com")
        .await
        .expect("the definition is restored");
    assert_eq!(definition.labels()[label::RESTORE_NAME], "widgets-back");
    let widgets: Api<DynamicObject> =
        Api::namespaced_with(cluster.client(), &shop, &widget_resource());
    assert_eq!(
        widgets.get("blue").await.unwrap().data["spec"]["color"],
        "blue"
    );
    let settings = Api::<ConfigMap>::namespaced(cluster.client(), &shop)
        .get("settings")
        .await
        .expect("the ConfigMap is restored");
    assert_eq!(settings.data.unwrap()["mode"], "fast");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_a_clear_warning_or_error_and_the_rest_goes_on() {
    let Some((mut cluster, _)) = shop_cluster_on_test_server(CLUSTER_WIDE).await else {
        return;
    };
    create_in::<ConfigMap>(
        &cluster,
        "shop",
        json!({"metadata": {"name": "settings"}, "data": {"mode": "fast"}}),
    )
    .await;
    create_in::<Secret>(
        &cluster,
        "shop",
        json!({"metadata": {"name": "credentials"}, "stringData": {"token": "t"}}),
    )
    .await;
    create_in::<Service>(
        &cluster,
        "shop",
        json!({"metadata": {"name": "web-nodeport"},
        "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}}),
    )
    .await;
    cluster.start_coordinator(coordinator_program(), &[]);
    fixtures::backup("app")
        .namespaces(["shop"])
        .create(&cluster)
        .await;
    completed::<Backup>(&cluster, "app").await;

    a_forbidden_type_is_a_warning(&cluster).await;
    an_object_the_server_rejects_is_an_error(&cluster).await;
    existing_objects_are_kept_or_updated(&cluster).await;
}

async fn a_forbidden_type_is_a_warning(cluster: &Cluster) {
    // A type the coordinator may not list: a warning, and the backup lacks only that type.
    cluster.forbid("list", "", "secrets");
    fixtures::backup("no-secrets")
        .namespaces(["shop"])
        .create(cluster)
        .await;
    let partial = cluster.wait_finished::<Backup>("no-secrets").await;
    let status = partial.status.unwrap();
    assert_eq!(status.phase, OperationPhase::PartiallyFailed, "{status:?}");
    assert!(
        status
            .warnings
            .iter()
            .any(|w| w.starts_with("cannot list secrets:") && w.contains("forbidden")),
        "{:?}",
        status.warnings
    );
    assert!(
        status.errors.iter().any(|e| e.contains("secrets")),
        "{:?}",
        status.errors
    );
}

async fn an_object_the_server_rejects_is_an_error(cluster: &Cluster) {
    // An object the API server rejects: the node port is still taken by the original Service.
    fixtures::restore("ports")
        .backup("app")
        .map_namespace("shop", "shop-2")
        .preserve_node_ports()
        .create(cluster)
        .await;
    let restore = cluster.wait_finished::<Restore>("ports").await;
    let status = restore.status.unwrap();
    assert_eq!(status.phase, OperationPhase::PartiallyFailed, "{status:?}");
    assert!(
        status.errors.iter().any(|e| cluster
            .unscoped(e)
            .starts_with("services/shop-2/web-nodeport:")
            && e.contains("provided port is already allocated")),
        "{:?}",
        status.errors
    );
    let settings: ConfigMap = get_in(cluster, "shop-2", "settings").await;
    assert_eq!(
        settings.data.unwrap()["mode"],
        "fast",
        "the rest is restored"
    );
}

async fn existing_objects_are_kept_or_updated(cluster: &Cluster) {
    // An existing object that differs: kept with a warning, or patched to the backed-up version.
    let configmaps = Api::<ConfigMap>::namespaced(cluster.client(), &cluster.scoped("shop"));
    let changed = Patch::Merge(json!({"data": {"mode": "slow"}}));
    configmaps
        .patch("settings", &PatchParams::default(), &changed)
        .await
        .unwrap();
    fixtures::restore("keep")
        .backup("app")
        .resources(["configmaps"], [])
        .create(cluster)
        .await;
    let kept = completed::<Restore>(cluster, "keep").await;
    assert_eq!(
        cluster.unscoped_value(&kept.status.unwrap().warnings),
        ["configmaps/shop/settings already exists and differs from the backup; left alone"]
    );
    assert_eq!(
        configmaps.get("settings").await.unwrap().data.unwrap()["mode"],
        "slow"
    );
    fixtures::restore("refresh")
        .backup("app")
        .resources(["configmaps"], [])
        .update_existing()
        .create(cluster)
        .await;
    completed::<Restore>(cluster, "refresh").await;
    let refreshed = configmaps.get("settings").await.unwrap();
    assert_eq!(refreshed.data.as_ref().unwrap()["mode"], "fast");
    assert_eq!(refreshed.labels()[label::RESTORE_NAME], "refresh");
}

/// Rewrites the resources tarball of `backup` as Ferry wrote it before backups kept every
/// object: the namespace's Pods and PVCs only, as pretty JSON of the typed objects.
async fn keep_only_pods_and_claims(cluster: &Cluster, storage: &Path, backup: &str) {
    let pod: Pod = get_in(cluster, "shop", "web").await;
    let claim: PersistentVolumeClaim = get_in(cluster, "shop", "data").await;
    let files = [
        (
            format!(
                "resources/pods/namespaces/{}/web.json",
                cluster.scoped("shop")
            ),
            serde_json::to_vec_pretty(&pod).unwrap(),
        ),
        (
            format!(
                "resources/persistentvolumeclaims/namespaces/{}/data.json",
                cluster.scoped("shop")
            ),
            serde_json::to_vec_pretty(&claim).unwrap(),
        ),
    ];
    let tarball = tar_gz(
        files
            .iter()
            .map(|(path, json)| (path.clone(), json.as_slice())),
    );
    let at = storage.join(format!("backups/{backup}/{backup}-resources.tar.gz"));
    fs::write(at, tarball.unwrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_of_pods_and_claims_only_still_restores() {
    let (mut cluster, storage) = shop_cluster().await;
    backed_up_web_pod(&mut cluster, "old").await;
    keep_only_pods_and_claims(&cluster, &storage, "old").await;
    lose_namespace(&cluster, "shop").await;

    fixtures::restore("from-old")
        .backup("old")
        .create(&cluster)
        .await;
    let pods = Api::<Pod>::namespaced(cluster.client(), &cluster.scoped("shop"));
    let waiting = cluster
        .wait_for(&pods, "web", "created by the restore", |_: &Pod| true)
        .await;
    let first = &waiting.spec.unwrap().init_containers.unwrap()[0];
    assert_eq!(first.name, names::RESTORE_WAIT_CONTAINER);
    let claim: PersistentVolumeClaim = get_in(&cluster, "shop", "data").await;
    assert_eq!(claim.spec.unwrap().volume_name, None);
    let pvrs = cluster.api::<PodVolumeRestore>();
    let transfer = |list: &[PodVolumeRestore]| list.iter().any(|pvr| pvr.spec.pod.name == "web");
    for _ in 0..100 {
        if transfer(&pvrs.list(&Default::default()).await.unwrap().items) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!(
        "no PodVolumeRestore for the restored pod\n{}",
        cluster.logs()
    );
}
