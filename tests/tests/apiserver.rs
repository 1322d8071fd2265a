//! The test API server answers as a real kube-apiserver does. Each test drives it through
//! `kube`'s client or `kube::runtime::watcher` and names the Kubernetes API convention it
//! mirrors ("api-concepts" and "api-conventions" are the Kubernetes API reference documents of
//! those names).

use std::time::Duration;

use axum::http::Request;
use ferry_tests::apiserver::{TestApiServer, kubeconfig_with_token};
use ferry_tests::harness::Cluster;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, LimitRange, Namespace, Pod, ResourceQuota, Secret, Service,
    ServiceAccount,
};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{APIResource, APIResourceList};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
    WatchEvent, WatchParams,
};
use kube::core::Status;
use kube::runtime::watcher;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

const CRDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/crds");
/// A failure guard for waits, never a timing assertion.
const GUARD: Duration = Duration::from_secs(10);

async fn server() -> TestApiServer {
    TestApiServer::start(CRDS).await.unwrap()
}

fn pvb_resource() -> ApiResource {
    ApiResource {
        group: "ferry.dev".into(),
        version: "v1alpha1".into(),
        api_version: "ferry.dev/v1alpha1".into(),
        kind: "PodVolumeBackup".into(),
        plural: "podvolumebackups".into(),
    }
}

fn pvbs(server: &TestApiServer, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(server.client(), ns, &pvb_resource())
}

fn pvb(name: &str) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "PodVolumeBackup",
        "metadata": {"name": name},
        "spec": {
            "node": "node-a",
            "pod": {"name": "web-0", "namespace": "app", "uid": "u-1"},
            "repository": "s3:http://127.0.0.1/bucket/app",
            "storageLocation": "default",
            "volume": "data"
        }
    }))
    .unwrap()
}

fn pod(name: &str, labels: Value, node: Option<&str>) -> Pod {
    let mut pod = json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "app", "image": "busybox:1.36"}]}
    });
    if let Some(node) = node {
        pod["spec"]["nodeName"] = json!(node);
    }
    serde_json::from_value(pod).unwrap()
}

fn config_map(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"k": "v"}})).unwrap()
}

fn api_status(result: Result<impl std::fmt::Debug, kube::Error>) -> Box<Status> {
    match result {
        Err(kube::Error::Api(status)) => status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn raw(
    server: &TestApiServer,
    method: &str,
    path: &str,
    content_type: &str,
    body: Value,
) -> Box<Status> {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type)
        .body(serde_json::to_vec(&body).unwrap())
        .unwrap();
    api_status(server.client().request_text(request).await)
}

/// The resource `name` of a discovery list.
fn find(list: &APIResourceList, name: &str) -> APIResource {
    list.resources
        .iter()
        .find(|r| r.name == name)
        .cloned()
        .unwrap_or_else(|| panic!("{name} missing"))
}

/// api-concepts "Discovery API": `/api` and `/api/v1` list the core resources with their
/// scope, kind, verbs, short names and subresources.
#[tokio::test]
async fn discovery_describes_the_core_kinds() {
    let server = server().await;
    let client = server.client();
    let core = client.list_core_api_resources("v1").await.unwrap();
    let pods = find(&core, "pods");
    assert!(pods.namespaced);
    assert_eq!(pods.kind, "Pod");
    assert_eq!(pods.short_names, Some(vec!["po".to_owned()]));
    assert!(pods.verbs.contains(&"watch".to_owned()));
    assert!(!find(&core, "namespaces").namespaced);
    assert!(!find(&core, "persistentvolumes").namespaced);
    for sub in [
        "pods/status",
        "namespaces/status",
        "nodes/status",
        "persistentvolumeclaims/status",
    ] {
        assert_eq!(find(&core, sub).verbs, ["get", "patch", "update"]);
    }
    let exec = find(&core, "pods/exec");
    assert_eq!(
        (exec.kind.as_str(), exec.verbs),
        (
            "PodExecOptions",
            vec!["create".to_owned(), "get".to_owned()]
        )
    );
    for name in [
        "secrets",
        "events",
        "configmaps",
        "serviceaccounts",
        "persistentvolumeclaims",
    ] {
        assert!(find(&core, name).namespaced, "{name}");
    }
}

/// api-concepts "Discovery API": `/apis` and each group version list the groups' resources,
/// Ferry's own with their short names and categories, and CRDs are Established.
#[tokio::test]
async fn discovery_describes_groups_and_crds() {
    let server = server().await;
    let client = server.client();
    let groups = client.list_api_groups().await.unwrap();
    let names: Vec<&str> = groups.groups.iter().map(|g| g.name.as_str()).collect();
    for group in [
        "coordination.k8s.io",
        "events.k8s.io",
        "apiextensions.k8s.io",
        "ferry.dev",
    ] {
        assert!(names.contains(&group), "{group} in {names:?}");
    }
    let ferry = client
        .list_api_group_resources("ferry.dev/v1alpha1")
        .await
        .unwrap();
    let pvb = find(&ferry, "podvolumebackups");
    assert_eq!(
        (
            pvb.kind.as_str(),
            pvb.singular_name.as_str(),
            pvb.namespaced
        ),
        ("PodVolumeBackup", "podvolumebackup", true)
    );
    assert_eq!(pvb.short_names, Some(vec!["pvb".to_owned()]));
    assert_eq!(pvb.categories, Some(vec!["ferry".to_owned()]));
    assert_eq!(
        find(&ferry, "podvolumebackups/status").kind,
        "PodVolumeBackup"
    );
    let crds = client
        .list_api_group_resources("apiextensions.k8s.io/v1")
        .await
        .unwrap();
    assert!(!find(&crds, "customresourcedefinitions").namespaced);
    let leases = client
        .list_api_group_resources("coordination.k8s.io/v1")
        .await
        .unwrap();
    assert!(find(&leases, "leases").namespaced);

    let discovery = kube::Discovery::new(client.clone()).run().await.unwrap();
    assert!(discovery.has_group("events.k8s.io"));
    assert_eq!(client.apiserver_version().await.unwrap().major, "1");

    let crd = Api::<CustomResourceDefinition>::all(client)
        .get("podvolumebackups.ferry.dev")
        .await
        .unwrap();
    let conditions = crd.status.unwrap().conditions.unwrap();
    assert!(
        conditions
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
    );
}

/// api-conventions "Metadata" and api-concepts "Generated values": create fills `uid`,
/// `resourceVersion`, `creationTimestamp` and, for kinds with a spec, `generation`;
/// `generateName` gets five random characters.
#[tokio::test]
async fn create_fills_system_fields_and_generates_names() {
    let server = server().await;
    server.create_namespace("app").await.unwrap();
    let pods: Api<Pod> = Api::namespaced(server.client(), "app");
    let mut template = pod("", json!({}), None);
    template.metadata.name = None;
    template.metadata.generate_name = Some("web-".into());
    let created = pods
        .create(&PostParams::default(), &template)
        .await
        .unwrap();
    let name = created.metadata.name.clone().unwrap();
    assert!(name.starts_with("web-") && name.len() == 9, "{name}");
    assert!(
        name[4..]
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    );
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    let rv: u64 = created
        .metadata
        .resource_version
        .clone()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(created.status.unwrap().phase.as_deref(), Some("Pending"));

    let backup = pvbs(&server, "app")
        .create(&PostParams::default(), &pvb("b1"))
        .await
        .unwrap();
    assert_eq!(backup.metadata.generation, Some(1));
    let later: u64 = backup.metadata.resource_version.unwrap().parse().unwrap();
    assert!(later > rv);
}

/// api-concepts "Resource operations" and the Status codes of api-conventions "HTTP Status
/// codes": AlreadyExists 409, NotFound 404 (also for a namespace that does not exist, as the
/// NamespaceLifecycle admission answers), Invalid 422 for bad names.
#[tokio::test]
async fn create_rejects_duplicates_unknown_namespaces_and_bad_names() {
    let server = server().await;
    server.create_namespace("app").await.unwrap();
    let maps: Api<ConfigMap> = Api::namespaced(server.client(), "app");
    maps.create(&PostParams::default(), &config_map("one"))
        .await
        .unwrap();

    let exists = api_status(
        maps.create(&PostParams::default(), &config_map("one"))
            .await,
    );
    assert_eq!(
        (exists.code, exists.reason.as_str()),
        (409, "AlreadyExists")
    );
    assert_eq!(exists.message, "configmaps \"one\" already exists");

    let elsewhere: Api<ConfigMap> = Api::namespaced(server.client(), "nope");
    let missing = api_status(
        elsewhere
            .create(&PostParams::default(), &config_map("one"))
            .await,
    );
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
    assert_eq!(missing.message, "namespaces \"nope\" not found");

    let invalid = api_status(
        maps.create(&PostParams::default(), &config_map("Not_A_Name"))
            .await,
    );
    assert_eq!((invalid.code, invalid.reason.as_str()), (422, "Invalid"));
    assert!(
        invalid
            .message
            .starts_with("ConfigMap \"Not_A_Name\" is invalid: metadata.name: Invalid value"),
        "{}",
        invalid.message
    );

    let unnamed = api_status(
        maps.create(&PostParams::default(), &ConfigMap::default())
            .await,
    );
    assert_eq!(unnamed.code, 422);
    assert_eq!(
        unnamed.message,
        "ConfigMap \"\" is invalid: metadata.name: Required value: name or generateName is required"
    );

    let get = api_status(maps.get("absent").await);
    assert_eq!(
        (get.code, get.reason.as_str(), get.message.as_str()),
        (404, "NotFound", "configmaps \"absent\" not found")
    );
    let details = get.details.unwrap();
    assert_eq!(
        (details.name.as_str(), details.kind.as_str()),
        ("absent", "configmaps")
    );
}

/// api-concepts "Retrieving large results sets in chunks": a list carries the store's
/// resourceVersion, and `limit` pages it with `continue`.
#[tokio::test]
async fn lists_carry_a_resource_version_and_paginate() {
    let server = server().await;
    server.create_namespace("app").await.unwrap();
    let maps: Api<ConfigMap> = Api::namespaced(server.client(), "app");
    for name in ["a", "b", "c"] {
        maps.create(&PostParams::default(), &config_map(name))
            .await
            .unwrap();
    }
    let first = maps.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(first.items.len(), 2);
    assert_eq!(first.metadata.remaining_item_count, Some(1));
    let token = first.metadata.continue_.clone().unwrap();
    let rest = maps
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    let names: Vec<_> = first
        .items
        .iter()
        .chain(&rest.items)
        .filter_map(|m| m.metadata.name.clone())
        .collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert!(rest.metadata.continue_.is_none());
    assert_eq!(
        first.metadata.resource_version,
        Some(server.resource_version().to_string())
    );

    let all: Api<ConfigMap> = Api::all(server.client());
    let across = all.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        across
            .items
            .iter()
            .filter(|m| m.metadata.namespace.as_deref() == Some("app"))
            .count(),
        3
    );
}

/// api-conventions "Concurrency Control and Consistency": an update with a stale
/// resourceVersion is a 409 Conflict; custom resources must carry a resourceVersion on update,
/// while pods allow an unconditional update.
#[tokio::test]
async fn updates_are_optimistically_locked() {
    let server = server().await;
    server.create_namespace("app").await.unwrap();
    let maps: Api<ConfigMap> = Api::namespaced(server.client(), "app");
    let created = maps
        .create(&PostParams::default(), &config_map("cm"))
        .await
        .unwrap();
    let mut first = created.clone();
    first.data = Some([("k".to_owned(), "first".to_owned())].into());
    let updated = maps
        .replace("cm", &PostParams::default(), &first)
        .await
        .unwrap();
    assert_ne!(
        updated.metadata.resource_version,
        created.metadata.resource_version
    );

    let mut stale = created.clone();
    stale.data = Some([("k".to_owned(), "second".to_owned())].into());
    let conflict = api_status(maps.replace("cm", &PostParams::default(), &stale).await);
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        conflict.message,
        "Operation cannot be fulfilled on configmaps \"cm\": the object has been modified; please apply your changes to the latest version and try again"
    );

    let mut unconditional = stale;
    unconditional.metadata.resource_version = None;
    maps.replace("cm", &PostParams::default(), &unconditional)
        .await
        .unwrap();

    let backups = pvbs(&server, "app");
    let mut backup = backups
        .create(&PostParams::default(), &pvb("b1"))
        .await
        .unwrap();
    backup.metadata.resource_version = None;
    let invalid = api_status(backups.replace("b1", &PostParams::default(), &backup).await);
    assert_eq!(invalid.code, 422);
    assert_eq!(
        invalid.message,
        "podvolumebackups.ferry.dev \"b1\" is invalid: metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"
    );
    let conflict = api_status(
        backups
            .replace(
                "b1",
                &PostParams::default(),
                &DynamicObject {
                    metadata: kube::api::ObjectMeta {
                        resource_version: Some("1".into()),
                        ..backup.metadata.clone()
                    },
                    ..backup.clone()
                },
            )
            .await,
    );
    assert_eq!(
        conflict.message,
        "Operation cannot be fulfilled on podvolumebackups.ferry.dev \"b1\": the object has been modified; please apply your changes to the latest version and try again"
    );
}

/// api-concepts "Resource versions": a write that changes nothing stores nothing, so the
/// resourceVersion stays and watchers see no event.
#[tokio::test]
async fn a_no_op_update_keeps_the_resource_version() {
    let server = server().await;
    server.create_namespace("app").await.unwrap();
    let maps: Api<ConfigMap> = Api::namespaced(server.client(), "app");
    let created = maps
        .create(&PostParams::default(), &config_map("cm"))
        .await
        .unwrap();
    let same = maps
        .replace("cm", &PostParams::default(), &created)
        .await
        .unwrap();
    assert_eq!(
        same.metadata.resource_version,
        created.metadata.resource_version
    );
    let patched = maps
        .patch(
            "cm",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": "v"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        patched.metadata.resource_version,
        created.metadata.resource_version
    );
}

/// api-conventions "Spec and Status" and the CRD "status subresource": a create cannot set
/// status, writes through the main resource ignore status, writes through `/status` change only
/// status, and `metadata.generation` moves only with the spec.
#[tokio::test]
async fn the_status_subresource_separates_spec_and_status() {
    let server = server().await;
    server.create_namespace("app").await.unwrap();
    let backups = pvbs(&server, "app");
    let mut with_status = pvb("b1");
    with_status.data["status"] = json!({"phase": "Completed"});
    let created = backups
        .create(&PostParams::default(), &with_status)
        .await
        .unwrap();
    assert!(created.data.get("status").is_none());

    let status = backups
        .patch_status("b1", &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": "InProgress"}, "spec": {"node": "other"}, "metadata": {"labels": {"x": "y"}}})))
        .await
        .unwrap();
    assert_eq!(status.data["status"]["phase"], "InProgress");
    assert_eq!(status.data["spec"]["node"], "node-a");
    assert!(status.metadata.labels.is_none());
    assert_eq!(status.metadata.generation, Some(1));

    let main = backups
        .patch(
            "b1",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"phase": "Failed"}, "metadata": {"labels": {"x": "y"}}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(main.data["status"]["phase"], "InProgress");
    assert_eq!(main.metadata.labels.unwrap()["x"], "y");
    assert_eq!(main.metadata.generation, Some(1));

    let spec = backups
        .patch(
            "b1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"volume": "logs"}})),
        )
        .await
        .unwrap();
    assert_eq!(spec.metadata.generation, Some(2));
    assert_ne!(
        spec.metadata.resource_version,
        main.metadata.resource_version
    );

    let defaulted = backups
        .patch_status(
            "b1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": null, "attempts": 1}})),
        )
        .await
        .unwrap();
    assert_eq!(
        defaulted.data["status"]["phase"], "New",
        "the schema default fills an absent phase"
    );

    let pods: Api<Pod> = Api::namespaced(server.client(), "app");
    pods.create(&PostParams::default(), &pod("p", json!({}), Some("node-a")))
        .await
        .unwrap();
    let running = pods
        .patch_status(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Running"}, "spec": {"nodeName": "node-b"}})),
        )
        .await
        .unwrap();
    assert_eq!(running.status.unwrap().phase.as_deref(), Some("Running"));
    assert_eq!(running.spec.unwrap().node_name.as_deref(), Some("node-a"));
}

/// api-concepts "Patch and Apply": JSON merge patch (RFC 7386), strategic merge patch merging
/// lists by their merge key for built-in kinds (and 415 for custom resources), JSON patch
/// (RFC 6902), and 404 for a patch of a missing object.
#[tokio::test]
async fn patches_merge_as_their_content_type_says() {
    let server = server().await;
    server.create_namespace("app").await.unwrap();
    let pods: Api<Pod> = Api::namespaced(server.client(), "app");
    let mut two = pod("p", json!({"app": "web"}), None);
    two.spec
        .as_mut()
        .unwrap()
        .containers
        .push(serde_json::from_value(json!({"name": "sidecar", "image": "envoy:1"})).unwrap());
    pods.create(&PostParams::default(), &two).await.unwrap();

    let strategic = pods
        .patch("p", &PatchParams::default(), &Patch::Strategic(json!({"spec": {"containers": [{"name": "sidecar", "image": "envoy:2"}]}, "metadata": {"finalizers": ["a/b"]}})))
        .await
        .unwrap();
    let containers = strategic.spec.unwrap().containers;
    assert_eq!(containers.len(), 2);
    assert_eq!(containers[0].image.as_deref(), Some("busybox:1.36"));
    assert_eq!(containers[1].image.as_deref(), Some("envoy:2"));
    let conditions = pods
        .patch_status(
            "p",
            &PatchParams::default(),
            &Patch::Strategic(
                json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(conditions.status.unwrap().conditions.unwrap().len(), 1);

    let merged = pods
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"labels": {"app": null, "tier": "front"}, "finalizers": null}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        merged
            .metadata
            .labels
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        [("tier".to_owned(), "front".to_owned())]
    );

    let json_patch: json_patch::Patch = serde_json::from_value(
        json!([{"op": "add", "path": "/metadata/annotations", "value": {"note": "x"}}]),
    )
    .unwrap();
    let patched = pods
        .patch("p", &PatchParams::default(), &Patch::Json::<()>(json_patch))
        .await
        .unwrap();
    assert_eq!(patched.metadata.annotations.unwrap()["note"], "x");

    let unsupported = api_status(
        pvbs(&server, "app")
            .patch("x", &PatchParams::default(), &Patch::Strategic(json!({})))
            .await,
    );
    assert_eq!(
        (unsupported.code, unsupported.reason.as_str()),
        (415, "UnsupportedMediaType")
    );
    let missing = api_status(
        pods.patch("nope", &PatchParams::default(), &Patch::Merge(json!({})))
            .await,
    );
    assert_eq!(missing.code, 404);
}

/// api-concepts "Server-Side Apply": apply creates a missing object, merges the applied fields,
/// records a `managedFields` entry with `operation: Apply` per manager (and subresource), and
/// requires `fieldManager` (422 on PatchOptions otherwise).
#[tokio::test]
async fn server_side_apply_merges_and_records_the_manager() {
    let server = server().await;
    server.create_namespace("app").await.unwrap();
    let backups = pvbs(&server, "app");
    let applied = json!({
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "PodVolumeBackup",
        "metadata": {"name": "b1", "labels": {"backup": "nightly"}},
        "spec": pvb("b1").data["spec"].clone()
    });
    let created = backups
        .patch(
            "b1",
            &PatchParams::apply("ferry-coordinator"),
            &Patch::Apply(&applied),
        )
        .await
        .unwrap();
    let managed = created.metadata.managed_fields.clone().unwrap();
    let entry = managed
        .iter()
        .find(|m| m.manager.as_deref() == Some("ferry-coordinator"))
        .unwrap();
    assert_eq!(entry.operation.as_deref(), Some("Apply"));
    let fields = &entry.fields_v1.as_ref().unwrap().0;
    assert!(fields["f:spec"]["f:node"].is_object(), "{fields}");
    assert!(
        fields["f:metadata"]["f:labels"]["f:backup"].is_object(),
        "{fields}"
    );

    let status = json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "PodVolumeBackup", "status": {"phase": "InProgress"}});
    let progressed = backups
        .patch_status(
            "b1",
            &PatchParams::apply("ferry-node-agent").force(),
            &Patch::Apply(&status),
        )
        .await
        .unwrap();
    assert_eq!(progressed.data["status"]["phase"], "InProgress");
    assert_eq!(progressed.data["spec"]["node"], "node-a");
    let agent = progressed
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .find(|m| m.manager.as_deref() == Some("ferry-node-agent"))
        .unwrap();
    assert_eq!(
        (agent.operation.as_deref(), agent.subresource.as_deref()),
        (Some("Apply"), Some("status"))
    );

    let no_manager = raw(
        &server,
        "PATCH",
        "/apis/ferry.dev/v1alpha1/namespaces/app/podvolumebackups/b1",
        "application/apply-patch+yaml",
        applied,
    )
    .await;
    assert_eq!(no_manager.code, 422);
    assert_eq!(
        no_manager.message,
        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"
    );
}

/// CRD "Validation" and api-conventions "HTTP Status codes" (422 Unprocessable Entity): the
/// openAPIV3Schema's `required`, `enum` and `type` are enforced with `field.Error` causes, and
/// unknown fields are pruned.
#[tokio::test]
async fn custom_resources_are_validated_against_their_schema() {
    let server = server().await;
    server.create_namespace("app").await.unwrap();
    let backups = pvbs(&server, "app");
    let mut missing = pvb("b1");
    missing.data["spec"].as_object_mut().unwrap().remove("node");
    let invalid = api_status(backups.create(&PostParams::default(), &missing).await);
    assert_eq!((invalid.code, invalid.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        invalid.message,
        "PodVolumeBackup.ferry.dev \"b1\" is invalid: spec.node: Required value"
    );
    let details = invalid.details.unwrap();
    assert_eq!(
        (details.group.as_str(), details.kind.as_str()),
        ("ferry.dev", "PodVolumeBackup")
    );
    assert_eq!(details.causes[0].field, "spec.node");
    assert_eq!(details.causes[0].reason, "FieldValueRequired");

    let mut typed = pvb("b2");
    typed.data["spec"]["node"] = json!(7);
    let wrong_type = api_status(backups.create(&PostParams::default(), &typed).await);
    assert_eq!(
        wrong_type.message,
        "PodVolumeBackup.ferry.dev \"b2\" is invalid: spec.node: Invalid value: \"integer\": spec.node in body must be of type string: \"integer\""
    );

    let mut extra = pvb("b3");
    extra.data["spec"]["unknownField"] = json!("dropped");
    let created = backups
        .create(&PostParams::default(), &extra)
        .await
        .unwrap();
    assert!(created.data["spec"].get("unknownField").is_none());
    let bad_enum = api_status(
        backups
            .patch_status(
                "b3",
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"phase": "Bogus"}})),
            )
            .await,
    );
    assert_eq!(
        bad_enum.message,
        "PodVolumeBackup.ferry.dev \"b3\" is invalid: status.phase: Unsupported value: \"Bogus\": supported values: \"New\", \"InProgress\", \"Completed\", \"Failed\""
    );
}

/// api-concepts "Finalizers" and "Resource deletion": with finalizers, delete only sets
/// `deletionTimestamp` (grace 0); no finalizer may be added then; removing the last one deletes
/// the object. Without finalizers a custom resource's delete answers a success Status.
#[tokio::test]
async fn finalizers_hold_deletion_until_the_last_is_removed() {
    let server = server().await;
    server.create_namespace("app").await.unwrap();
    let backups = pvbs(&server, "app");
    let mut held = pvb("b1");
    held.metadata.finalizers = Some(vec!["ferry.dev/cleanup".into()]);
    backups.create(&PostParams::default(), &held).await.unwrap();

    let marked = backups
        .delete("b1", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .unwrap();
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert_eq!(marked.metadata.deletion_grace_period_seconds, Some(0));
    assert!(backups.get("b1").await.is_ok());

    let added = api_status(
        backups
            .patch(
                "b1",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": ["ferry.dev/cleanup", "x/y"]}})),
            )
            .await,
    );
    assert_eq!(added.code, 422);
    assert!(
        added
            .message
            .contains("no new finalizers can be added if the object is being deleted"),
        "{}",
        added.message
    );

    backups
        .patch(
            "b1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    assert_eq!(api_status(backups.get("b1").await).code, 404);

    backups
        .create(&PostParams::default(), &pvb("b2"))
        .await
        .unwrap();
    let status = backups
        .delete("b2", &DeleteParams::default())
        .await
        .unwrap()
        .right()
        .unwrap();
    assert_eq!(status.details.unwrap().name, "b2");
}

/// api-concepts "Graceful deletion" of pods: a pod bound to a node gets `deletionTimestamp` and
/// its grace period and stays until the kubelet deletes it with grace 0; an unbound pod goes at
/// once, and a pod delete answers with the pod.
#[tokio::test]
async fn pods_on_a_node_are_deleted_gracefully() {
    let server = server().await;
    server.create_namespace("app").await.unwrap();
    let pods: Api<Pod> = Api::namespaced(server.client(), "app");
    pods.create(
        &PostParams::default(),
        &pod("bound", json!({}), Some("node-a")),
    )
    .await
    .unwrap();
    pods.create(&PostParams::default(), &pod("unbound", json!({}), None))
        .await
        .unwrap();

    let pending = pods
        .delete("bound", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .unwrap();
    assert_eq!(pending.metadata.deletion_grace_period_seconds, Some(30));
    assert!(pods.get("bound").await.is_ok());
    let gone = pods
        .delete(
            "bound",
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..DeleteParams::default()
            },
        )
        .await
        .unwrap();
    assert!(gone.is_left());
    assert_eq!(api_status(pods.get("bound").await).code, 404);

    let immediate = pods
        .delete("unbound", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .unwrap();
    assert_eq!(immediate.metadata.name.as_deref(), Some("unbound"));
    assert_eq!(api_status(pods.get("unbound").await).code, 404);
}

/// api-concepts "Label selectors" and "Field selectors": equality and set-based label
/// requirements, `metadata.*` everywhere plus `spec.nodeName` and `status.phase` on pods, and
/// 400 for any other field.
/// Pods `a` (app=web, tier=front, on node-a), `b` (app=web, on node-b, Running) and `c`
/// (app=db, unscheduled) in namespace `app`.
async fn three_labelled_pods(server: &TestApiServer) -> Api<Pod> {
    server.create_namespace("app").await.unwrap();
    let pods: Api<Pod> = Api::namespaced(server.client(), "app");
    pods.create(
        &PostParams::default(),
        &pod("a", json!({"app": "web", "tier": "front"}), Some("node-a")),
    )
    .await
    .unwrap();
    pods.create(
        &PostParams::default(),
        &pod("b", json!({"app": "web"}), Some("node-b")),
    )
    .await
    .unwrap();
    pods.create(
        &PostParams::default(),
        &pod("c", json!({"app": "db"}), None),
    )
    .await
    .unwrap();
    pods.patch_status(
        "b",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running"}})),
    )
    .await
    .unwrap();

    pods
}

#[tokio::test]
async fn selectors_filter_lists() {
    let server = server().await;
    let pods = three_labelled_pods(&server).await;
    let names = |list: kube::api::ObjectList<Pod>| {
        list.items
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect::<Vec<_>>()
    };
    let cases = [
        (ListParams::default().labels("app=web"), vec!["a", "b"]),
        (ListParams::default().labels("app!=web"), vec!["c"]),
        (
            ListParams::default().labels("app in (db,cache),!tier"),
            vec!["c"],
        ),
        (
            ListParams::default().labels("app notin (db),tier"),
            vec!["a"],
        ),
        (
            ListParams::default().fields("spec.nodeName=node-a"),
            vec!["a"],
        ),
        (
            ListParams::default().fields("status.phase=Running"),
            vec!["b"],
        ),
        (
            ListParams::default().fields("status.phase!=Running,metadata.name!=a"),
            vec!["c"],
        ),
        (
            ListParams::default()
                .fields("metadata.namespace==app")
                .labels("app==web"),
            vec!["a", "b"],
        ),
    ];
    for (params, want) in cases {
        assert_eq!(names(pods.list(&params).await.unwrap()), want, "{params:?}");
    }
    let unsupported = api_status(pods.list(&ListParams::default().fields("spec.foo=x")).await);
    assert_eq!(
        (unsupported.code, unsupported.reason.as_str()),
        (400, "BadRequest")
    );
    assert_eq!(unsupported.message, "field label not supported: spec.foo");
    let on_crd = api_status(
        pvbs(&server, "app")
            .list(&ListParams::default().fields("spec.node=x"))
            .await,
    );
    assert_eq!(on_crd.message, "field label not supported: spec.node");
}

/// api-concepts "Namespaces" and the namespace lifecycle: deleting a namespace deletes what is
/// in it, then the namespace; the garbage collector deletes dependents of a deleted owner.
#[tokio::test]
async fn namespace_deletion_and_owner_references_cascade() {
    let server = server().await;
    server.create_namespace("app").await.unwrap();
    let maps: Api<ConfigMap> = Api::namespaced(server.client(), "app");
    let owner = maps
        .create(&PostParams::default(), &config_map("owner"))
        .await
        .unwrap();
    let mut dependent = config_map("dependent");
    dependent.metadata.owner_references = Some(vec![serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid.unwrap()
    }))
    .unwrap()]);
    maps.create(&PostParams::default(), &dependent)
        .await
        .unwrap();
    maps.delete("owner", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(api_status(maps.get("dependent").await).code, 404);

    maps.create(&PostParams::default(), &config_map("left"))
        .await
        .unwrap();
    let namespaces: Api<Namespace> = Api::all(server.client());
    let terminating = namespaces
        .delete("app", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .unwrap();
    assert!(terminating.metadata.deletion_timestamp.is_some());
    assert_eq!(api_status(maps.get("left").await).code, 404);
    assert_eq!(api_status(namespaces.get("app").await).code, 404);
}

/// api-concepts "Efficient detection of changes": a watch from a list's resourceVersion sends
/// ADDED, MODIFIED and DELETED in order, each with the resourceVersion of its change.
#[tokio::test]
async fn watch_streams_changes_in_order() {
    let server = server().await;
    server.create_namespace("app").await.unwrap();
    let maps: Api<ConfigMap> = Api::namespaced(server.client(), "app");
    let from = maps
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = maps
        .watch(&WatchParams::default(), &from)
        .await
        .unwrap()
        .boxed();

    maps.create(&PostParams::default(), &config_map("cm"))
        .await
        .unwrap();
    maps.patch(
        "cm",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "w"}})),
    )
    .await
    .unwrap();
    maps.delete("cm", &DeleteParams::default()).await.unwrap();

    let mut seen = Vec::new();
    let mut last = 0u64;
    while seen.len() < 3 {
        let event = tokio::time::timeout(GUARD, stream.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let (kind, object) = match event {
            WatchEvent::Bookmark(_) => continue,
            WatchEvent::Added(o) => ("ADDED", o),
            WatchEvent::Modified(o) => ("MODIFIED", o),
            WatchEvent::Deleted(o) => ("DELETED", o),
            other => panic!("unexpected {other:?}"),
        };
        let rv: u64 = object.metadata.resource_version.unwrap().parse().unwrap();
        assert!(rv > last);
        last = rv;
        seen.push(kind);
    }
    assert_eq!(seen, ["ADDED", "MODIFIED", "DELETED"]);
}

/// api-concepts "Semantics for watch": without a resourceVersion (or with "0") a watch starts
/// with synthetic ADDED events for the current objects; `sendInitialEvents` ends them with a
/// bookmark annotated `k8s.io/initial-events-end`; `timeoutSeconds` ends the watch.
#[tokio::test]
async fn watch_without_a_resource_version_starts_with_the_current_state() {
    let server = server().await;
    server.create_namespace("app").await.unwrap();
    let maps: Api<ConfigMap> = Api::namespaced(server.client(), "app");
    maps.create(&PostParams::default(), &config_map("existing"))
        .await
        .unwrap();
    let mut stream = maps
        .watch(&WatchParams::default().timeout(1), "0")
        .await
        .unwrap()
        .boxed();
    match tokio::time::timeout(GUARD, stream.try_next())
        .await
        .unwrap()
        .unwrap()
    {
        Some(WatchEvent::Added(cm)) => assert_eq!(cm.metadata.name.as_deref(), Some("existing")),
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        tokio::time::timeout(GUARD, stream.try_next())
            .await
            .unwrap()
            .unwrap()
            .is_none(),
        "timeoutSeconds ends the watch"
    );

    let streaming = WatchParams::streaming_lists();
    let mut stream = maps.watch(&streaming, "").await.unwrap().boxed();
    assert!(matches!(
        tokio::time::timeout(GUARD, stream.try_next())
            .await
            .unwrap()
            .unwrap(),
        Some(WatchEvent::Added(_))
    ));
    match tokio::time::timeout(GUARD, stream.try_next())
        .await
        .unwrap()
        .unwrap()
    {
        Some(WatchEvent::Bookmark(b)) => assert!(
            b.metadata
                .annotations
                .contains_key("k8s.io/initial-events-end")
        ),
        other => panic!("unexpected {other:?}"),
    }
}

/// api-concepts "Watch bookmarks": with `allowWatchBookmarks=true` the server sends BOOKMARK
/// events that carry only a resourceVersion to resume from.
#[tokio::test]
async fn watch_bookmarks_carry_a_resource_version() {
    let server = TestApiServer::builder()
        .crds_from(CRDS)
        .unwrap()
        .bookmark_interval(Duration::from_millis(50))
        .start()
        .await
        .unwrap();
    server.create_namespace("app").await.unwrap();
    let maps: Api<ConfigMap> = Api::namespaced(server.client(), "app");
    let from = maps
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = maps
        .watch(&WatchParams::default(), &from)
        .await
        .unwrap()
        .boxed();
    match tokio::time::timeout(GUARD, stream.try_next())
        .await
        .unwrap()
        .unwrap()
    {
        Some(WatchEvent::Bookmark(b)) => {
            assert!(b.metadata.resource_version.parse::<u64>().unwrap() >= from.parse().unwrap())
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// api-concepts "Resource versions" / "410 Gone responses": a watch from a resourceVersion older
/// than the kept history gets an ERROR event with a 410 Expired Status.
#[tokio::test]
async fn watch_from_a_compacted_resource_version_is_gone() {
    let server = TestApiServer::builder()
        .crds_from(CRDS)
        .unwrap()
        .history_limit(2)
        .start()
        .await
        .unwrap();
    server.create_namespace("app").await.unwrap();
    let maps: Api<ConfigMap> = Api::namespaced(server.client(), "app");
    let first = maps
        .create(&PostParams::default(), &config_map("c0"))
        .await
        .unwrap();
    for i in 1..5 {
        maps.create(&PostParams::default(), &config_map(&format!("c{i}")))
            .await
            .unwrap();
    }
    let old = first.metadata.resource_version.unwrap();
    let mut stream = maps
        .watch(&WatchParams::default(), &old)
        .await
        .unwrap()
        .boxed();
    match tokio::time::timeout(GUARD, stream.try_next())
        .await
        .unwrap()
        .unwrap()
    {
        Some(WatchEvent::Error(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
            assert!(
                status.message.starts_with("too old resource version"),
                "{}",
                status.message
            );
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// The next event of a watch that is not a bookmark.
async fn next_change(
    stream: &mut futures::stream::BoxStream<'_, kube::Result<WatchEvent<Pod>>>,
) -> WatchEvent<Pod> {
    loop {
        match tokio::time::timeout(GUARD, stream.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            WatchEvent::Bookmark(_) => {}
            event => return event,
        }
    }
}

/// api-concepts "Efficient detection of changes" with selectors: an object relabelled into a
/// watch's selector arrives as ADDED, and out of it as DELETED with its last matching state; field
/// selectors filter watches too.
#[tokio::test]
async fn relabelling_across_a_selector_adds_and_deletes() {
    let server = server().await;
    server.create_namespace("app").await.unwrap();
    let pods: Api<Pod> = Api::namespaced(server.client(), "app");
    pods.create(
        &PostParams::default(),
        &pod("p", json!({"app": "db"}), Some("node-a")),
    )
    .await
    .unwrap();
    pods.create(
        &PostParams::default(),
        &pod("q", json!({"app": "web"}), Some("node-b")),
    )
    .await
    .unwrap();
    let from = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut web = pods
        .watch(&WatchParams::default().labels("app=web"), &from)
        .await
        .unwrap()
        .boxed();
    let mut on_a = pods
        .watch(
            &WatchParams::default().fields("spec.nodeName=node-a"),
            &from,
        )
        .await
        .unwrap()
        .boxed();

    pods.patch(
        "p",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "web"}}})),
    )
    .await
    .unwrap();
    pods.patch(
        "p",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "cache"}}})),
    )
    .await
    .unwrap();

    match next_change(&mut web).await {
        WatchEvent::Added(p) => assert_eq!(p.metadata.name.as_deref(), Some("p")),
        other => panic!("unexpected {other:?}"),
    }
    match next_change(&mut web).await {
        WatchEvent::Deleted(p) => {
            assert_eq!(
                p.metadata.labels.unwrap()["app"],
                "web",
                "the last state that matched"
            );
            assert_eq!(
                p.metadata.resource_version,
                Some(server.resource_version().to_string())
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    for _ in 0..2 {
        match next_change(&mut on_a).await {
            WatchEvent::Modified(p) => assert_eq!(p.metadata.name.as_deref(), Some("p")),
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// kube-runtime's watcher over api-concepts "Efficient detection of changes": it lists, then
/// watches from the list's resourceVersion, and sees applies and deletes.
#[tokio::test]
async fn kube_watcher_lists_then_watches() {
    let server = server().await;
    server.create_namespace("app").await.unwrap();
    let backups = pvbs(&server, "app");
    backups
        .create(&PostParams::default(), &pvb("before"))
        .await
        .unwrap();
    let mut events = watcher::watcher(backups.clone(), watcher::Config::default()).boxed();
    let mut next = async || {
        tokio::time::timeout(GUARD, events.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
    };
    assert!(matches!(next().await, watcher::Event::Init));
    assert!(
        matches!(next().await, watcher::Event::InitApply(o) if o.metadata.name.as_deref() == Some("before"))
    );
    assert!(matches!(next().await, watcher::Event::InitDone));

    backups
        .create(&PostParams::default(), &pvb("after"))
        .await
        .unwrap();
    backups
        .delete("before", &DeleteParams::default())
        .await
        .unwrap();
    assert!(
        matches!(next().await, watcher::Event::Apply(o) if o.metadata.name.as_deref() == Some("after"))
    );
    assert!(
        matches!(next().await, watcher::Event::Delete(o) if o.metadata.name.as_deref() == Some("before"))
    );
}

/// api-concepts "410 Gone responses": when the server's history moves past a running watch, the
/// watch gets 410 Gone and kube's watcher recovers by listing again.
#[tokio::test]
async fn kube_watcher_relists_after_gone() {
    let server = server().await;
    server.create_namespace("app").await.unwrap();
    let backups = pvbs(&server, "app");
    backups
        .create(&PostParams::default(), &pvb("b1"))
        .await
        .unwrap();
    let config = watcher::Config::default();
    let mut events = watcher::watcher(backups.clone(), config).boxed();
    let mut next = async || {
        tokio::time::timeout(GUARD, events.next())
            .await
            .unwrap()
            .unwrap()
    };
    assert!(matches!(next().await, Ok(watcher::Event::Init)));
    assert!(matches!(next().await, Ok(watcher::Event::InitApply(_))));
    assert!(matches!(next().await, Ok(watcher::Event::InitDone)));

    backups
        .create(&PostParams::default(), &pvb("b2"))
        .await
        .unwrap();
    assert!(matches!(next().await, Ok(watcher::Event::Apply(_))));
    server.compact();
    match next().await {
        Err(watcher::Error::WatchError(status)) => assert_eq!(status.code, 410),
        other => panic!("expected 410, got {other:?}"),
    }
    assert!(matches!(next().await, Ok(watcher::Event::Init)));
    let mut relisted = Vec::new();
    loop {
        match next().await {
            Ok(watcher::Event::InitApply(o)) => relisted.extend(o.metadata.name),
            Ok(watcher::Event::InitDone) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(relisted, ["b1", "b2"]);
}

/// api-concepts "Dry-run": `dryRun=All` runs the request without storing anything.
#[tokio::test]
async fn dry_run_stores_nothing() {
    let server = server().await;
    server.create_namespace("app").await.unwrap();
    let maps: Api<ConfigMap> = Api::namespaced(server.client(), "app");
    let before = server.resource_version();
    let params = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    maps.create(&params, &config_map("cm")).await.unwrap();
    assert_eq!(api_status(maps.get("cm").await).code, 404);
    assert_eq!(server.resource_version(), before);
}

/// The kubeconfig the server writes lets any client (the real binaries included) reach it.
#[tokio::test]
async fn the_written_kubeconfig_reaches_the_server() {
    let server = server().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    server.write_kubeconfig(&path).unwrap();
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let namespaces = Api::<Namespace>::all(client)
        .list(&ListParams::default())
        .await
        .unwrap();
    let names: Vec<_> = namespaces
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert!(names.contains(&"default".to_owned()), "{names:?}");
}

/// The scheduler's `pods/binding` subresource sets `spec.nodeName` once (a second binding is a
/// 409), and a Lease, whose strategy allows create on update, can be created with a PUT.
#[tokio::test]
async fn binding_assigns_a_node_and_leases_are_created_by_put() {
    use k8s_openapi::api::coordination::v1::Lease;
    let server = server().await;
    server.create_namespace("app").await.unwrap();
    let pods: Api<Pod> = Api::namespaced(server.client(), "app");
    pods.create(&PostParams::default(), &pod("p", json!({}), None))
        .await
        .unwrap();
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"}, "target": {"kind": "Node", "name": "node-a"}});
    let path = "/api/v1/namespaces/app/pods/p/binding";
    let request = |body: &Value| {
        Request::builder()
            .method("POST")
            .uri(path)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(body).unwrap())
            .unwrap()
    };
    server
        .client()
        .request_text(request(&binding))
        .await
        .unwrap();
    let bound = pods.get("p").await.unwrap();
    assert_eq!(bound.spec.unwrap().node_name.as_deref(), Some("node-a"));
    let again = api_status(server.client().request_text(request(&binding)).await);
    assert_eq!(again.code, 409);
    assert_eq!(
        again.message,
        "Operation cannot be fulfilled on pods/binding \"p\": pod p is already assigned to node \"node-a\""
    );

    let leases: Api<Lease> = Api::namespaced(server.client(), "app");
    let lease: Lease = serde_json::from_value(
        json!({"metadata": {"name": "ferry"}, "spec": {"holderIdentity": "a"}}),
    )
    .unwrap();
    let created = leases
        .replace("ferry", &PostParams::default(), &lease)
        .await
        .unwrap();
    assert_eq!(created.spec.unwrap().holder_identity.as_deref(), Some("a"));
}

/// Creates `object`, the JSON of a `K`, in namespace `ns` through the typed client.
async fn create_in<K>(server: &TestApiServer, ns: &str, object: Value) -> Result<K, kube::Error>
where
    K: kube::Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + DeserializeOwned
        + Serialize,
{
    let object: K = serde_json::from_value(object).unwrap();
    Api::<K>::namespaced(server.client(), ns)
        .create(&PostParams::default(), &object)
        .await
}

/// A pod template whose pods carry `labels` and restart as `restart` says.
fn pod_template(labels: Value, restart: &str) -> Value {
    json!({
        "metadata": {"labels": labels},
        "spec": {"restartPolicy": restart, "containers": [{"name": "app", "image": "busybox:1.36"}]}
    })
}

/// A workload of `kind` (Deployment, StatefulSet, ReplicaSet, DaemonSet) selecting `app=<name>`.
fn workload(kind: &str, name: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": pod_template(json!({"app": name}), "Always"),
        }
    })
}

fn service(name: &str, spec: Value) -> Service {
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
}

/// api-concepts "Discovery API": the core kinds of a namespace besides pods, with their short
/// names, categories and status subresources, in name order.
#[tokio::test]
async fn discovery_lists_the_core_kinds_of_a_namespace() {
    let server = server().await;
    let core = server.client().list_core_api_resources("v1").await.unwrap();
    for (name, short) in [
        ("services", "svc"),
        ("endpoints", "ep"),
        ("limitranges", "limits"),
        ("resourcequotas", "quota"),
        ("configmaps", "cm"),
        ("serviceaccounts", "sa"),
    ] {
        let resource = find(&core, name);
        assert!(resource.namespaced, "{name}");
        assert_eq!(resource.short_names, Some(vec![short.to_owned()]), "{name}");
        assert!(
            resource.verbs.contains(&"deletecollection".to_owned()),
            "{name}"
        );
    }
    assert_eq!(
        find(&core, "services").categories,
        Some(vec!["all".to_owned()])
    );
    for sub in ["services/status", "resourcequotas/status"] {
        assert_eq!(find(&core, sub).verbs, ["get", "patch", "update"]);
    }
    assert!(core.resources.iter().all(|r| r.name != "endpoints/status"));
    let names: Vec<&str> = core.resources.iter().map(|r| r.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted);
}

/// Kinds as discovery must list them: group version, plural, kind, short name (`-` for none),
/// scope, and whether a status subresource is listed.
const GROUP_KINDS: &[&str] = &[
    "apps/v1 deployments Deployment deploy namespaced status",
    "apps/v1 statefulsets StatefulSet sts namespaced status",
    "apps/v1 replicasets ReplicaSet rs namespaced status",
    "apps/v1 daemonsets DaemonSet ds namespaced status",
    "batch/v1 jobs Job - namespaced status",
    "batch/v1 cronjobs CronJob cj namespaced status",
    "networking.k8s.io/v1 ingresses Ingress ing namespaced status",
    "networking.k8s.io/v1 networkpolicies NetworkPolicy netpol namespaced -",
    "policy/v1 poddisruptionbudgets PodDisruptionBudget pdb namespaced status",
    "autoscaling/v2 horizontalpodautoscalers HorizontalPodAutoscaler hpa namespaced status",
    "rbac.authorization.k8s.io/v1 roles Role - namespaced -",
    "rbac.authorization.k8s.io/v1 rolebindings RoleBinding - namespaced -",
    "rbac.authorization.k8s.io/v1 clusterroles ClusterRole - cluster -",
    "rbac.authorization.k8s.io/v1 clusterrolebindings ClusterRoleBinding - cluster -",
    "storage.k8s.io/v1 storageclasses StorageClass sc cluster -",
];

/// api-concepts "Discovery API": the workload, RBAC, networking, policy, autoscaling and
/// storage groups list their kinds with the real scope, short names, categories and status
/// subresources, and `kube::Discovery` resolves every one of them.
#[tokio::test]
async fn discovery_lists_the_groups_of_a_namespace() {
    let server = server().await;
    let client = server.client();
    let discovery = kube::Discovery::new(client.clone()).run().await.unwrap();
    for row in GROUP_KINDS {
        let [group_version, plural, kind, short, scope, status] =
            row.split_whitespace().collect::<Vec<_>>()[..]
        else {
            panic!("{row}");
        };
        let list = client
            .list_api_group_resources(group_version)
            .await
            .unwrap();
        let resource = find(&list, plural);
        assert_eq!(resource.kind, kind);
        assert_eq!(resource.namespaced, scope == "namespaced", "{plural}");
        let short_names = (short != "-").then(|| vec![short.to_owned()]);
        assert_eq!(resource.short_names, short_names, "{plural}");
        let status_name = format!("{plural}/status");
        let listed = list.resources.iter().any(|r| r.name == status_name);
        assert_eq!(listed, status == "status", "{plural}");
        let group = group_version.rsplit_once('/').map_or("", |(g, _)| g);
        let found = discovery.groups().any(|g| {
            g.name() == group
                && g.recommended_resources()
                    .iter()
                    .any(|(r, _)| r.kind == kind)
        });
        assert!(found, "{kind}");
    }
    let apps = client.list_api_group_resources("apps/v1").await.unwrap();
    let all = Some(vec!["all".to_owned()]);
    assert_eq!(find(&apps, "deployments").categories, all);
}

/// The cluster IP of a Service as an address.
fn cluster_ip(service: &Service) -> std::net::Ipv4Addr {
    service
        .spec
        .as_ref()
        .unwrap()
        .cluster_ip
        .as_ref()
        .unwrap()
        .parse()
        .unwrap()
}

/// Service defaulting (`SetDefaults_Service`) and allocation: a ClusterIP Service gets an IP of
/// 10.96.0.0/12 and the single-stack IPv4 family; a NodePort one a node port per port; a
/// headless one no IP.
#[tokio::test]
async fn services_are_defaulted_and_allocated() {
    let server = server().await;
    server.create_namespace("app").await.unwrap();
    let services: Api<Service> = Api::namespaced(server.client(), "app");
    let web = services
        .create(
            &PostParams::default(),
            &service("web", json!({"ports": [{"port": 80}]})),
        )
        .await
        .unwrap();
    let spec = web.spec.clone().unwrap();
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    assert_eq!(spec.session_affinity.as_deref(), Some("None"));
    assert_eq!(spec.internal_traffic_policy.as_deref(), Some("Cluster"));
    assert_eq!(spec.ip_family_policy.as_deref(), Some("SingleStack"));
    assert_eq!(spec.ip_families, Some(vec!["IPv4".to_owned()]));
    let port = &spec.ports.unwrap()[0];
    assert_eq!(port.protocol.as_deref(), Some("TCP"));
    assert_eq!(port.target_port, Some(IntOrString::Int(80)));
    let ip = cluster_ip(&web);
    let [first, second, ..] = ip.octets();
    assert!(
        first == 10 && (96..112).contains(&second),
        "{ip} in 10.96.0.0/12"
    );
    assert_eq!(spec.cluster_ips, Some(vec![ip.to_string()]));
    assert!(web.metadata.generation.is_none());

    let node_port = services
        .create(
            &PostParams::default(),
            &service(
                "edge",
                json!({"type": "NodePort", "ports": [{"port": 443}]}),
            ),
        )
        .await
        .unwrap();
    let spec = node_port.spec.unwrap();
    assert_eq!(spec.external_traffic_policy.as_deref(), Some("Cluster"));
    let allocated = spec.ports.unwrap()[0].node_port.unwrap();
    assert!((30000..=32767).contains(&allocated), "{allocated}");

    let headless = services
        .create(
            &PostParams::default(),
            &service(
                "db",
                json!({"clusterIP": "None", "selector": {"app": "db"}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        headless.spec.unwrap().cluster_ips,
        Some(vec!["None".to_owned()])
    );
}

/// The Service allocators: a cluster IP or node port in use is a 422 Invalid with the
/// allocator's reason, and deleting a Service, or its namespace, frees them again.
#[tokio::test]
async fn service_addresses_are_exclusive_until_released() {
    let server = server().await;
    server.create_namespace("app").await.unwrap();
    server.create_namespace("other").await.unwrap();
    let services: Api<Service> = Api::namespaced(server.client(), "app");
    let dns = service(
        "dns",
        json!({"clusterIP": "10.96.0.10", "ports": [{"port": 53}]}),
    );
    let edge = service(
        "edge",
        json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}),
    );
    services.create(&PostParams::default(), &dns).await.unwrap();
    services
        .create(&PostParams::default(), &edge)
        .await
        .unwrap();

    let elsewhere: Api<Service> = Api::namespaced(server.client(), "other");
    let ip_taken = api_status(elsewhere.create(&PostParams::default(), &dns).await);
    assert_eq!((ip_taken.code, ip_taken.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        ip_taken.message,
        "Service \"dns\" is invalid: spec.clusterIPs: Invalid value: []string{\"10.96.0.10\"}: \
         failed to allocate IP 10.96.0.10: provided IP is already allocated"
    );
    let port_taken = api_status(elsewhere.create(&PostParams::default(), &edge).await);
    assert_eq!(
        port_taken.message,
        "Service \"edge\" is invalid: spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"
    );
    let cause = &port_taken.details.unwrap().causes[0];
    assert_eq!(
        (cause.field.as_str(), cause.reason.as_str()),
        ("spec.ports[0].nodePort", "FieldValueInvalid")
    );

    services
        .delete("dns", &DeleteParams::default())
        .await
        .unwrap();
    elsewhere
        .create(&PostParams::default(), &dns)
        .await
        .unwrap();
    Api::<Namespace>::all(server.client())
        .delete("app", &DeleteParams::default())
        .await
        .unwrap();
    let moved = elsewhere
        .create(&PostParams::default(), &edge)
        .await
        .unwrap();
    assert_eq!(moved.spec.unwrap().ports.unwrap()[0].node_port, Some(30080));
}

/// The Service registry's update (`patchAllocatedValues`): a manifest without the allocated IP
/// and node ports keeps them, a new cluster IP is refused, a deleted Service takes its
/// Endpoints with it.
#[tokio::test]
async fn service_updates_keep_what_was_allocated() {
    let server = server().await;
    server.create_namespace("app").await.unwrap();
    let services: Api<Service> = Api::namespaced(server.client(), "app");
    let manifest = service(
        "web",
        json!({"type": "NodePort", "ports": [{"name": "http", "port": 80}]}),
    );
    let created = services
        .create(&PostParams::default(), &manifest)
        .await
        .unwrap();
    let mut again = manifest.clone();
    again.metadata.resource_version = created.metadata.resource_version.clone();
    let replaced = services
        .replace("web", &PostParams::default(), &again)
        .await
        .unwrap();
    assert_eq!(cluster_ip(&replaced), cluster_ip(&created));
    let node_port = |s: &Service| s.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].node_port;
    assert_eq!(node_port(&replaced), node_port(&created));

    let patch = json!({"spec": {"clusterIP": "10.96.0.20"}});
    let moved = api_status(
        services
            .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
            .await,
    );
    assert_eq!(
        moved.message,
        "Service \"web\" is invalid: spec.clusterIPs[0]: Invalid value: []string{\"10.96.0.20\"}: may not change once set"
    );

    let endpoints: Api<Endpoints> = Api::namespaced(server.client(), "app");
    let subsets = json!({"metadata": {"name": "web"}, "subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]});
    let created = endpoints
        .create(
            &PostParams::default(),
            &serde_json::from_value(subsets).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        created.subsets.unwrap()[0].ports.as_ref().unwrap()[0]
            .protocol
            .as_deref(),
        Some("TCP")
    );
    services
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(api_status(endpoints.get("web").await).code, 404);
}

fn job(name: &str, extra: Value) -> Value {
    let mut job = json!({"metadata": {"name": name}, "spec": {"template": pod_template(json!({"app": "x"}), "Never")}});
    if let (Some(spec), Some(extra)) = (job["spec"].as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    job
}

/// The Job registry: without `manualSelector` the selector is generated from the Job's uid and
/// its pod template labelled with it; a selector of the Job's own is refused, unless manual.
#[tokio::test]
async fn jobs_generate_their_selector() {
    let server = server().await;
    server.create_namespace("app").await.unwrap();
    let created: Job = create_in(&server, "app", job("backup", json!({})))
        .await
        .unwrap();
    let uid = created.metadata.uid.clone().unwrap();
    let spec = created.spec.clone().unwrap();
    let selector = spec.selector.unwrap().match_labels.unwrap();
    assert_eq!(
        selector,
        [("batch.kubernetes.io/controller-uid".to_owned(), uid.clone())].into()
    );
    let labels = spec.template.metadata.unwrap().labels.unwrap();
    for (key, value) in [
        ("batch.kubernetes.io/controller-uid", uid.as_str()),
        ("controller-uid", uid.as_str()),
        ("batch.kubernetes.io/job-name", "backup"),
        ("job-name", "backup"),
        ("app", "x"),
    ] {
        assert_eq!(labels.get(key).map(String::as_str), Some(value), "{key}");
    }
    assert_eq!(
        (
            spec.parallelism,
            spec.completions,
            spec.backoff_limit,
            spec.suspend
        ),
        (Some(1), Some(1), Some(6), Some(false))
    );
    assert_eq!(spec.completion_mode.as_deref(), Some("NonIndexed"));
    assert_eq!(created.metadata.generation, Some(1));

    let own = job("own", json!({"selector": {"matchLabels": {"app": "x"}}}));
    let refused = api_status(create_in::<Job>(&server, "app", own).await);
    assert_eq!((refused.code, refused.reason.as_str()), (422, "Invalid"));
    let prefix = "Job.batch \"own\" is invalid: spec.selector: Invalid value: \
                  &LabelSelector{MatchLabels:map[string]string{app: x,batch.kubernetes.io/controller-uid: ";
    assert!(refused.message.starts_with(prefix), "{}", refused.message);
    assert!(refused.message.ends_with(
        ",},MatchExpressions:[]LabelSelectorRequirement{},}: `selector` not auto-generated"
    ));

    let manual = job(
        "manual",
        json!({"manualSelector": true, "selector": {"matchLabels": {"app": "x"}}}),
    );
    let kept: Job = create_in(&server, "app", manual).await.unwrap();
    assert_eq!(
        kept.spec.unwrap().selector.unwrap().match_labels.unwrap(),
        [("app".to_owned(), "x".to_owned())].into()
    );
    let mut always = job("always", json!({}));
    always["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
    let policy = api_status(create_in::<Job>(&server, "app", always).await);
    assert_eq!(
        policy.message,
        "Job.batch \"always\" is invalid: spec.template.spec.restartPolicy: Unsupported value: \"Always\": \
         supported values: \"OnFailure\", \"Never\""
    );
}

/// apps validation: a workload's selector is required and must select its pod template, with
/// the real messages.
#[tokio::test]
async fn workloads_need_a_selector_that_selects_their_template() {
    let server = server().await;
    server.create_namespace("app").await.unwrap();
    // k8s-openapi's DeploymentSpec always has a selector, so this one goes as a dynamic object.
    let mut bare = workload("Deployment", "web");
    bare["spec"].as_object_mut().unwrap().remove("selector");
    let dynamic: Api<DynamicObject> = Api::namespaced_with(
        server.client(),
        "app",
        &ApiResource::erase::<Deployment>(&()),
    );
    let bare: DynamicObject = serde_json::from_value(bare).unwrap();
    let missing = api_status(dynamic.create(&PostParams::default(), &bare).await);
    assert_eq!((missing.code, missing.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        missing.message,
        "Deployment.apps \"web\" is invalid: [spec.selector: Required value, spec.template.metadata.labels: \
         Invalid value: map[string]string{\"app\":\"web\"}: `selector` does not match template `labels`]"
    );
    let mut other = workload("StatefulSet", "db");
    other["spec"]["selector"] = json!({"matchLabels": {"app": "cache"}});
    let mismatch = api_status(create_in::<StatefulSet>(&server, "app", other).await);
    assert_eq!(
        mismatch.message,
        "StatefulSet.apps \"db\" is invalid: spec.template.metadata.labels: Invalid value: \
         map[string]string{\"app\":\"db\"}: `selector` does not match template `labels`"
    );
    let mut empty = workload("DaemonSet", "agent");
    empty["spec"]["selector"] = json!({});
    let refused = api_status(create_in::<DaemonSet>(&server, "app", empty).await);
    assert_eq!(
        refused.message,
        "DaemonSet.apps \"agent\" is invalid: spec.selector: Invalid value: &LabelSelector{MatchLabels:\
         map[string]string{},MatchExpressions:[]LabelSelectorRequirement{},}: empty selector is invalid for daemonset"
    );
    let mut never = workload("ReplicaSet", "rs");
    never["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
    let policy = api_status(create_in::<ReplicaSet>(&server, "app", never).await);
    assert_eq!(
        policy.message,
        "ReplicaSet.apps \"rs\" is invalid: spec.template.spec.restartPolicy: Unsupported value: \"Never\": \
         supported values: \"Always\""
    );

    let web: Deployment = create_in(&server, "app", workload("Deployment", "web"))
        .await
        .unwrap();
    let deployments: Api<Deployment> = Api::namespaced(server.client(), "app");
    let patch = json!({"spec": {"selector": {"matchLabels": {"app": "web", "tier": "x"}}}});
    let immutable = api_status(
        deployments
            .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
            .await,
    );
    assert_eq!(
        immutable.message,
        "Deployment.apps \"web\" is invalid: [spec.template.metadata.labels: Invalid value: \
         map[string]string{\"app\":\"web\"}: `selector` does not match template `labels`, spec.selector: \
         Invalid value: &LabelSelector{MatchLabels:map[string]string{app: web,tier: x,},MatchExpressions:\
         []LabelSelectorRequirement{},}: field is immutable]"
    );
    assert_eq!(web.metadata.generation, Some(1));
}

/// The apps defaults (`SetDefaults_Deployment`, `_StatefulSet`, `_DaemonSet`, `_ReplicaSet`),
/// and the pod defaults of their templates.
#[tokio::test]
async fn workloads_are_defaulted() {
    let server = server().await;
    server.create_namespace("app").await.unwrap();
    let web: Deployment = create_in(&server, "app", workload("Deployment", "web"))
        .await
        .unwrap();
    let spec = web.spec.unwrap();
    assert_eq!(
        (spec.replicas, spec.revision_history_limit),
        (Some(1), Some(10))
    );
    assert_eq!(spec.progress_deadline_seconds, Some(600));
    let strategy = spec.strategy.unwrap();
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
    let rolling = strategy.rolling_update.unwrap();
    assert_eq!(rolling.max_surge, Some(IntOrString::String("25%".into())));
    let template = spec.template.spec.unwrap();
    assert_eq!(template.dns_policy.as_deref(), Some("ClusterFirst"));

    let db: StatefulSet = create_in(&server, "app", workload("StatefulSet", "db"))
        .await
        .unwrap();
    let spec = db.spec.unwrap();
    assert_eq!(spec.pod_management_policy.as_deref(), Some("OrderedReady"));
    let update = spec.update_strategy.unwrap();
    assert_eq!(update.rolling_update.unwrap().partition, Some(0));
    assert_eq!(db.status.unwrap().replicas, 0);
    let agent: DaemonSet = create_in(&server, "app", workload("DaemonSet", "agent"))
        .await
        .unwrap();
    let update = agent.spec.unwrap().update_strategy.unwrap();
    let rolling = update.rolling_update.unwrap();
    assert_eq!(rolling.max_unavailable, Some(IntOrString::Int(1)));
    let rs: ReplicaSet = create_in(&server, "app", workload("ReplicaSet", "rs"))
        .await
        .unwrap();
    assert_eq!(rs.spec.unwrap().replicas, Some(1));
}

/// `metadata.generation` of a workload: 1 on create, bumped by a change of the spec, not by
/// one of its metadata or its status.
#[tokio::test]
async fn a_workload_counts_the_generations_of_its_spec() {
    let server = server().await;
    server.create_namespace("app").await.unwrap();
    create_in::<Deployment>(&server, "app", workload("Deployment", "web"))
        .await
        .unwrap();
    let deployments: Api<Deployment> = Api::namespaced(server.client(), "app");
    let params = PatchParams::default();
    let label = json!({"metadata": {"labels": {"team": "a"}}});
    let labelled = deployments
        .patch("web", &params, &Patch::Merge(&label))
        .await
        .unwrap();
    assert_eq!(labelled.metadata.generation, Some(1));
    let status = json!({"status": {"replicas": 1}});
    let counted = deployments
        .patch_status("web", &params, &Patch::Merge(&status))
        .await
        .unwrap();
    assert_eq!(counted.metadata.generation, Some(1));
    assert_eq!(counted.status.unwrap().replicas, Some(1));
    let scale = json!({"spec": {"replicas": 3}});
    let scaled = deployments
        .patch("web", &params, &Patch::Merge(&scale))
        .await
        .unwrap();
    assert_eq!(scaled.metadata.generation, Some(2));
    assert_eq!(scaled.status.unwrap().replicas, Some(1));
}

/// The defaults and initial status of the other kinds of a namespace, and of storage classes:
/// CronJob, HorizontalPodAutoscaler, PodDisruptionBudget, Ingress, NetworkPolicy.
#[tokio::test]
async fn the_other_kinds_are_defaulted() {
    let server = server().await;
    server.create_namespace("app").await.unwrap();
    let template = pod_template(json!({}), "OnFailure");
    let cron = json!({"metadata": {"name": "nightly"}, "spec": {"schedule": "0 1 * * *",
                      "jobTemplate": {"spec": {"template": template}}}});
    let nightly: CronJob = create_in(&server, "app", cron).await.unwrap();
    let spec = nightly.spec.unwrap();
    assert_eq!(spec.concurrency_policy.as_deref(), Some("Allow"));
    let limits = (
        spec.successful_jobs_history_limit,
        spec.failed_jobs_history_limit,
    );
    assert_eq!(limits, (Some(3), Some(1)));

    let target = json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"});
    let hpa =
        json!({"metadata": {"name": "web"}, "spec": {"scaleTargetRef": target, "maxReplicas": 3}});
    let hpa: HorizontalPodAutoscaler = create_in(&server, "app", hpa).await.unwrap();
    let spec = hpa.spec.unwrap();
    assert_eq!(spec.min_replicas, Some(1));
    let metric = &spec.metrics.unwrap()[0];
    let target = &metric.resource.as_ref().unwrap().target;
    assert_eq!(target.average_utilization, Some(80));

    let selector = json!({"matchLabels": {"app": "web"}});
    let pdb =
        json!({"metadata": {"name": "web"}, "spec": {"minAvailable": 1, "selector": selector}});
    let pdb: PodDisruptionBudget = create_in(&server, "app", pdb).await.unwrap();
    assert_eq!(pdb.metadata.generation, Some(1));
    assert_eq!(pdb.status.unwrap().disruptions_allowed, 0);
    let deny = json!({"metadata": {"name": "deny"}, "spec": {"podSelector": {}}});
    let deny: NetworkPolicy = create_in(&server, "app", deny).await.unwrap();
    let types = deny.spec.unwrap().policy_types;
    assert_eq!(types, Some(vec!["Ingress".to_owned()]));

    let classes: Api<StorageClass> = Api::all(server.client());
    let class = json!({"metadata": {"name": "fast"}, "provisioner": "csi.example.com"});
    let class = serde_json::from_value(class).unwrap();
    let fast = classes
        .create(&PostParams::default(), &class)
        .await
        .unwrap();
    assert_eq!(fast.reclaim_policy.as_deref(), Some("Delete"));
    assert_eq!(fast.volume_binding_mode.as_deref(), Some("Immediate"));
}

fn role_ref(kind: &str, name: &str) -> Value {
    json!({"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name})
}

/// RBAC validation: a RoleBinding's or ClusterRoleBinding's `roleRef` cannot change; RBAC names
/// may hold colons.
#[tokio::test]
async fn role_bindings_keep_their_role_ref() {
    let server = server().await;
    server.create_namespace("app").await.unwrap();
    let rule = json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]);
    create_in::<Role>(
        &server,
        "app",
        json!({"metadata": {"name": "reader"}, "rules": rule}),
    )
    .await
    .unwrap();
    let subjects = json!([{"kind": "User", "name": "jane"}]);
    let binding = json!({"metadata": {"name": "readers"}, "roleRef": role_ref("Role", "reader"), "subjects": subjects});
    let created: RoleBinding = create_in(&server, "app", binding).await.unwrap();
    let subject = &created.subjects.clone().unwrap()[0];
    assert_eq!(
        subject.api_group.as_deref(),
        Some("rbac.authorization.k8s.io")
    );

    let bindings: Api<RoleBinding> = Api::namespaced(server.client(), "app");
    let mut changed = created.clone();
    changed.role_ref = serde_json::from_value(role_ref("Role", "writer")).unwrap();
    let refused = api_status(
        bindings
            .replace("readers", &PostParams::default(), &changed)
            .await,
    );
    assert_eq!((refused.code, refused.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        refused.message,
        "RoleBinding.rbac.authorization.k8s.io \"readers\" is invalid: roleRef: Invalid value: \
         rbac.RoleRef{APIGroup:\"rbac.authorization.k8s.io\", Kind:\"Role\", Name:\"writer\"}: cannot change roleRef"
    );
    let mut relabelled = created;
    relabelled.metadata.labels = Some([("team".to_owned(), "a".to_owned())].into());
    bindings
        .replace("readers", &PostParams::default(), &relabelled)
        .await
        .unwrap();

    let roles: Api<ClusterRole> = Api::all(server.client());
    let role: ClusterRole =
        serde_json::from_value(json!({"metadata": {"name": "system:ferry:reader"}, "rules": rule}))
            .unwrap();
    roles.create(&PostParams::default(), &role).await.unwrap();
    let cluster_bindings: Api<ClusterRoleBinding> = Api::all(server.client());
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "ferry:readers"}, "roleRef": role_ref("ClusterRole", "system:ferry:reader")
    }))
    .unwrap();
    cluster_bindings
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let patch = json!({"roleRef": role_ref("ClusterRole", "view")});
    let refused = api_status(
        cluster_bindings
            .patch(
                "ferry:readers",
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await,
    );
    assert!(refused.message.starts_with(
        "ClusterRoleBinding.rbac.authorization.k8s.io \"ferry:readers\" is invalid: roleRef"
    ));
}

/// An object of the kind `K` with its type, named `name` unless `body` names it.
fn of<K: kube::Resource<DynamicType = ()>>(name: &str, mut body: Value) -> (ApiResource, Value) {
    if body.pointer("/metadata/name").is_none() {
        body["metadata"] = json!({"name": name});
    }
    (ApiResource::erase::<K>(&()), body)
}

/// One object of each namespaced kind a namespace's backup holds, with its type.
fn namespace_content() -> Vec<(ApiResource, Value)> {
    let node_port =
        json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30090}]}});
    let selector = json!({"matchLabels": {"app": "web"}});
    let target = json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"});
    let backend = json!({"service": {"name": "edge", "port": {"number": 80}}});
    let job_template = json!({"spec": {"template": pod_template(json!({}), "Never")}});
    let robot = json!({"kind": "ServiceAccount", "name": "robot", "namespace": "app"});
    let binding = json!({"roleRef": role_ref("Role", "reader"), "subjects": [robot]});
    vec![
        of::<Service>("edge", node_port),
        of::<Endpoints>("edge", json!({"subsets": []})),
        of::<ConfigMap>("settings", json!({"data": {"k": "v"}})),
        of::<Secret>("token", json!({"stringData": {"k": "v"}})),
        of::<ServiceAccount>("robot", json!({})),
        of::<LimitRange>("limits", json!({"spec": {"limits": []}})),
        of::<ResourceQuota>("quota", json!({"spec": {}})),
        of::<Deployment>("web", workload("Deployment", "web")),
        of::<StatefulSet>("db", workload("StatefulSet", "db")),
        of::<ReplicaSet>("rs", workload("ReplicaSet", "rs")),
        of::<DaemonSet>("agent", workload("DaemonSet", "agent")),
        of::<Job>("once", job("once", json!({}))),
        of::<CronJob>(
            "nightly",
            json!({"spec": {"schedule": "0 1 * * *", "jobTemplate": job_template}}),
        ),
        of::<HorizontalPodAutoscaler>(
            "web",
            json!({"spec": {"scaleTargetRef": target, "maxReplicas": 3}}),
        ),
        of::<PodDisruptionBudget>(
            "web",
            json!({"spec": {"minAvailable": 1, "selector": selector}}),
        ),
        of::<Ingress>("web", json!({"spec": {"defaultBackend": backend}})),
        of::<NetworkPolicy>("deny", json!({"spec": {"podSelector": {}}})),
        of::<Role>("reader", json!({"rules": []})),
        of::<RoleBinding>("readers", binding),
    ]
}

/// The namespace lifecycle over every namespaced kind: deleting a namespace deletes all its
/// objects, whatever their kind, and what its Services held is free again.
#[tokio::test]
async fn namespace_deletion_removes_every_kind() {
    let server = server().await;
    server.create_namespace("app").await.unwrap();
    for (resource, mut object) in namespace_content() {
        object["apiVersion"] = json!(resource.api_version);
        object["kind"] = json!(resource.kind);
        let api: Api<DynamicObject> = Api::namespaced_with(server.client(), "app", &resource);
        let object: DynamicObject = serde_json::from_value(object).unwrap();
        api.create(&PostParams::default(), &object)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", resource.kind));
    }
    Api::<Namespace>::all(server.client())
        .delete("app", &DeleteParams::default())
        .await
        .unwrap();
    for (resource, _) in namespace_content() {
        let api: Api<DynamicObject> = Api::all_with(server.client(), &resource);
        let items = api.list(&ListParams::default()).await.unwrap().items;
        let left: Vec<_> = items
            .iter()
            .filter(|o| o.metadata.namespace.as_deref() == Some("app"))
            .collect();
        assert!(left.is_empty(), "{}: {left:?}", resource.kind);
    }
    server.create_namespace("next").await.unwrap();
    let (services, edge) = namespace_content().swap_remove(0);
    let edge: DynamicObject = serde_json::from_value(edge).unwrap();
    Api::<DynamicObject>::namespaced_with(server.client(), "next", &services)
        .create(&PostParams::default(), &edge)
        .await
        .unwrap();
}

/// The RBAC authorizer's answer to a request it denies: 403 Forbidden, naming the user, verb,
/// resource, group and scope, with the object's name when the request has one.
#[tokio::test]
async fn forbidden_requests_get_the_authorizers_answer() {
    let Some(cluster) = Cluster::start_on_test_server("forbid").await else {
        return;
    };
    cluster.create_namespace("app").await;
    cluster.forbid("list", "apps", "deployments");
    cluster.forbid("get", "", "secrets");
    let everywhere = api_status(
        Api::<Deployment>::all(cluster.client())
            .list(&ListParams::default())
            .await,
    );
    assert_eq!(
        (everywhere.code, everywhere.reason.as_str()),
        (403, "Forbidden")
    );
    assert_eq!(
        everywhere.message,
        "deployments.apps is forbidden: User \"system:admin\" cannot list \
         resource \"deployments\" in API group \"apps\" at the cluster scope"
    );
    let details = everywhere.details.unwrap();
    assert_eq!(
        (
            details.group.as_str(),
            details.kind.as_str(),
            details.name.as_str()
        ),
        ("apps", "deployments", "")
    );
    let in_app: Api<Deployment> = Api::namespaced(cluster.client(), &cluster.scoped("app"));
    let namespaced = api_status(in_app.list(&ListParams::default()).await);
    assert!(
        cluster
            .unscoped(&namespaced.message)
            .ends_with("in API group \"apps\" in the namespace \"app\""),
        "{}",
        namespaced.message
    );
    let web: Deployment = serde_json::from_value(workload("Deployment", "web")).unwrap();
    in_app.create(&PostParams::default(), &web).await.unwrap();

    let secrets: Api<Secret> = Api::namespaced(cluster.client(), &cluster.scoped("app"));
    let named = api_status(secrets.get("token").await);
    assert_eq!(
        cluster.unscoped(&named.message),
        "secrets \"token\" is forbidden: User \"system:admin\" cannot get \
         resource \"secrets\" in API group \"\" in the namespace \"app\""
    );
    assert_eq!(named.details.unwrap().name, "token");
    assert!(
        secrets
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

/// An upstream for the service proxy: answers 201, typed `text/x-echo`, with the method, the
/// path and query, and the body it got.
async fn echo_upstream() -> std::net::SocketAddr {
    use axum::extract::Request as AxumRequest;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let echo = |request: AxumRequest| async move {
        let (parts, body) = request.into_parts();
        let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        let text = format!(
            "{} {} {}",
            parts.method,
            parts.uri,
            String::from_utf8_lossy(&body)
        );
        (
            axum::http::StatusCode::CREATED,
            [("content-type", "text/x-echo")],
            text,
        )
    };
    let router = axum::Router::new().fallback(echo);
    tokio::spawn(async move { axum::serve(listener, router).await });
    address
}

/// A plain HTTP request to the server, for what the kube client does not show: the status
/// code, the headers and the raw body.
async fn plain(
    server: &TestApiServer,
    method: reqwest::Method,
    path: &str,
    body: &str,
) -> (u16, String, String) {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let answer = client
        .request(method, format!("{}{path}", server.url()))
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let code = answer.status().as_u16();
    let content_type = answer
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (code, content_type, answer.text().await.unwrap())
}

/// The API server's service proxy ("Manually constructing apiserver proxy URLs" in the
/// Kubernetes documentation, and the service REST storage's ResourceLocation): a Service that
/// does not exist is NotFound; one without endpoints, or without the port named, is
/// ServiceUnavailable; otherwise every method reaches the endpoint and its answer comes back
/// as it is.
#[tokio::test]
async fn the_service_proxy_forwards_to_the_endpoint_of_an_existing_port() {
    let server = server().await;
    let proxy =
        |id: &str, rest: &str| format!("/api/v1/namespaces/default/services/{id}/proxy{rest}");
    let missing = api_status(
        server
            .client()
            .request_text(
                Request::get(proxy("web:http", "/a"))
                    .body(Vec::new())
                    .unwrap(),
            )
            .await,
    );
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
    assert_eq!(missing.message, "services \"web\" not found");

    let spec = json!({"ports": [{"name": "http", "port": 8080}]});
    Api::<Service>::namespaced(server.client(), "default")
        .create(&PostParams::default(), &service("web", spec))
        .await
        .unwrap();
    let (code, _, body) = plain(&server, reqwest::Method::GET, &proxy("web:http", "/a"), "").await;
    assert_eq!(code, 503, "{body}");
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "ServiceUnavailable");
    assert_eq!(
        status["message"],
        "no endpoints available for service \"web\""
    );

    server.register_service("default", "web", echo_upstream().await);
    for id in ["web", "web:http", "web:8080", "http:web:8080"] {
        let (code, content_type, body) =
            plain(&server, reqwest::Method::GET, &proxy(id, "/a/b?x=1"), "").await;
        assert_eq!(
            (code, content_type.as_str(), body.as_str()),
            (201, "text/x-echo", "GET /a/b?x=1 "),
            "{id}"
        );
    }
    let (_, _, body) = plain(
        &server,
        reqwest::Method::PUT,
        &proxy("web", "/c"),
        "payload",
    )
    .await;
    assert_eq!(body, "PUT /c payload");

    let (code, _, body) = plain(&server, reqwest::Method::GET, &proxy("web:9090", "/a"), "").await;
    assert_eq!(code, 503);
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        status["message"],
        "no service port \"9090\" found for service \"web\""
    );
}

/// A TokenRequest for the service account `namespace/name`, living `seconds` when given.
async fn request_token(
    server: &TestApiServer,
    namespace: &str,
    name: &str,
    seconds: Option<i64>,
) -> Result<TokenRequest, kube::Error> {
    let request = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: seconds,
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    Api::<ServiceAccount>::namespaced(server.client(), namespace)
        .create_token_request(name, &PostParams::default(), &request)
        .await
}

/// A client as a child process makes it from `kubeconfig`.
async fn client_from(kubeconfig: kube::config::Kubeconfig) -> kube::Client {
    let options = kube::config::KubeConfigOptions::default();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

/// A client that sends `token`, from [`kubeconfig_with_token`].
async fn client_with_token(server: &TestApiServer, token: &str) -> kube::Client {
    let kubeconfig = kubeconfig_with_token(server.url(), token);
    client_from(kube::config::Kubeconfig::from_yaml(&kubeconfig).unwrap()).await
}

async fn create_service_account(server: &TestApiServer, namespace: &str, name: &str) {
    let account = ServiceAccount {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<ServiceAccount>::namespaced(server.client(), namespace)
        .create(&PostParams::default(), &account)
        .await
        .unwrap();
}

/// The TokenRequest API (the ServiceAccount's `token` subresource, "Managing Service Accounts"
/// in the Kubernetes documentation): discovery lists it; a missing service account is 404; a
/// request gets itself back with the token, the API server's audience and its expiry (an hour
/// unless asked), as a 201; a life under ten minutes is invalid.
#[tokio::test]
async fn token_requests_issue_tokens_for_existing_service_accounts() {
    let server = server().await;
    let core = server.client().list_core_api_resources("v1").await.unwrap();
    let token = find(&core, "serviceaccounts/token");
    assert_eq!(
        (
            token.kind.as_str(),
            token.group.as_deref(),
            token.version.as_deref(),
            token.verbs,
            token.namespaced
        ),
        (
            "TokenRequest",
            Some("authentication.k8s.io"),
            Some("v1"),
            vec!["create".to_owned()],
            true
        )
    );

    let missing = api_status(request_token(&server, "default", "ghost", None).await);
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
    assert_eq!(missing.message, "serviceaccounts \"ghost\" not found");

    create_service_account(&server, "default", "agent").await;
    let before = jiff::Timestamp::now();
    let issued = request_token(&server, "default", "agent", None)
        .await
        .unwrap();
    let status = issued.status.unwrap();
    assert!(status.token.len() >= 32, "{}", status.token);
    let life = status.expiration_timestamp.0.duration_since(before);
    assert!(life.as_secs() >= 3599 && life.as_secs() <= 3601, "{life:?}");
    assert_eq!(
        issued.spec.audiences,
        ["https://kubernetes.default.svc.cluster.local"]
    );
    assert_eq!(issued.spec.expiration_seconds, Some(3600));
    assert_eq!(
        (
            issued.metadata.name.as_deref(),
            issued.metadata.namespace.as_deref()
        ),
        (Some("agent"), Some("default"))
    );
    let longer = request_token(&server, "default", "agent", Some(7200))
        .await
        .unwrap();
    let longer = longer.status.unwrap();
    assert_ne!(longer.token, status.token);
    let life = longer.expiration_timestamp.0.duration_since(before);
    assert!(life.as_secs() >= 7199 && life.as_secs() <= 7201, "{life:?}");

    let short = api_status(request_token(&server, "default", "agent", Some(60)).await);
    assert_eq!((short.code, short.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        short.message,
        "TokenRequest.authentication.k8s.io \"\" is invalid: spec.expirationSeconds: \
         Invalid value: 60: may not specify a duration less than 10 minutes"
    );

    let path = "/api/v1/namespaces/default/serviceaccounts/agent/token";
    let (code, _, body) = plain(&server, reqwest::Method::POST, path, "{}").await;
    assert_eq!(code, 201, "{body}");
    let created: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (&created["apiVersion"], &created["kind"]),
        (&json!("authentication.k8s.io/v1"), &json!("TokenRequest"))
    );
    let (code, _, _) = plain(&server, reqwest::Method::GET, path, "").await;
    assert_eq!(code, 405);
}

/// The service account `t1/ferry-node-agent`, in a server with the namespaces `t1`, `a` and
/// `b`, and a client with its token, through the kubeconfig a child process would read.
async fn node_agent(server: &TestApiServer) -> kube::Client {
    for namespace in ["t1", "a", "b"] {
        server.create_namespace(namespace).await.unwrap();
    }
    create_service_account(server, "t1", "ferry-node-agent").await;
    let token = request_token(server, "t1", "ferry-node-agent", None)
        .await
        .unwrap()
        .status
        .unwrap()
        .token;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    server.write_kubeconfig_with_token(&path, &token).unwrap();
    client_from(kube::config::Kubeconfig::read_from(&path).unwrap()).await
}

/// What the node agent's 403 names.
const NODE_AGENT: &str = "User \"system:serviceaccount:t1:ferry-node-agent\"";

/// Binds to the node agent the ClusterRole `pod-reader` (list and watch pods) with a
/// ClusterRoleBinding, and the Role `maps` of `a` (get, list and watch config maps) with a
/// RoleBinding in `a`.
async fn grant_node_agent(server: &TestApiServer) {
    let rule = |verbs: &[&str], resource: &str| {
        json!({"verbs": verbs, "apiGroups": [""],
               "resources": [resource]})
    };
    let subjects = json!([{"kind": "ServiceAccount", "name": "ferry-node-agent",
                           "namespace": "t1"}]);
    let role_ref = |kind: &str, name: &str| {
        json!({"apiGroup": "rbac.authorization.k8s.io",
               "kind": kind, "name": name})
    };
    let pods = rule(&["list", "watch"], "pods");
    let cluster_role = json!({"metadata": {"name": "pod-reader"}, "rules": [pods]});
    let cluster_binding = json!({"metadata": {"name": "pod-reader"}, "subjects": subjects,
                                 "roleRef": role_ref("ClusterRole", "pod-reader")});
    let params = PostParams::default();
    let admin = server.client();
    let cluster_role: ClusterRole = serde_json::from_value(cluster_role).unwrap();
    Api::all(admin.clone())
        .create(&params, &cluster_role)
        .await
        .unwrap();
    let cluster_binding: ClusterRoleBinding = serde_json::from_value(cluster_binding).unwrap();
    Api::all(admin)
        .create(&params, &cluster_binding)
        .await
        .unwrap();
    let maps = rule(&["get", "list", "watch"], "configmaps");
    let role = json!({"metadata": {"name": "maps"}, "rules": [maps]});
    let binding = json!({"metadata": {"name": "maps"}, "subjects": subjects,
                         "roleRef": role_ref("Role", "maps")});
    create_in::<Role>(server, "a", role).await.unwrap();
    create_in::<RoleBinding>(server, "a", binding)
        .await
        .unwrap();
}

/// RBAC ("Using RBAC Authorization" in the Kubernetes documentation): a service account that
/// nothing is bound to may discover the API and nothing else, and a denial is the authorizer's
/// 403 naming it; creating a token is `create` on `serviceaccounts/token`.
#[tokio::test]
async fn a_service_account_without_bindings_may_only_discover() {
    let server = server().await;
    let agent = node_agent(&server).await;
    let core = agent.list_core_api_resources("v1").await.unwrap();
    assert!(find(&core, "pods").namespaced);
    agent.list_api_groups().await.unwrap();
    agent.apiserver_version().await.unwrap();

    let pods = api_status(
        Api::<Pod>::all(agent.clone())
            .list(&ListParams::default())
            .await,
    );
    assert_eq!((pods.code, pods.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        pods.message,
        format!(
            "pods is forbidden: {NODE_AGENT} cannot list resource \"pods\" in API group \"\" \
             at the cluster scope"
        )
    );
    let tokens = api_status(
        Api::<ServiceAccount>::namespaced(agent, "t1")
            .create_token_request(
                "ferry-node-agent",
                &PostParams::default(),
                &TokenRequest::default(),
            )
            .await,
    );
    assert_eq!(
        tokens.message,
        format!(
            "serviceaccounts \"ferry-node-agent\" is forbidden: {NODE_AGENT} cannot create \
             resource \"serviceaccounts/token\" in API group \"\" in the namespace \"t1\""
        )
    );
}

/// RBAC: a ClusterRoleBinding grants its ClusterRole in every namespace and at the cluster
/// scope; a RoleBinding grants its Role in its own namespace only, and only the verbs the role
/// lists; a watch is authorized as one.
#[tokio::test]
async fn role_and_cluster_role_bindings_grant_where_they_reach() {
    let server = server().await;
    let agent = node_agent(&server).await;
    grant_node_agent(&server).await;
    let everywhere = ListParams::default();
    Api::<Pod>::all(agent.clone())
        .list(&everywhere)
        .await
        .unwrap();
    Api::<Pod>::namespaced(agent.clone(), "b")
        .list(&everywhere)
        .await
        .unwrap();

    let maps_a: Api<ConfigMap> = Api::namespaced(agent.clone(), "a");
    let mut changes = maps_a
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    Api::<ConfigMap>::namespaced(server.client(), "a")
        .create(&PostParams::default(), &config_map("seen"))
        .await
        .unwrap();
    let first = tokio::time::timeout(GUARD, changes.next()).await.unwrap();
    assert!(matches!(first, Some(Ok(WatchEvent::Added(_)))), "{first:?}");
    assert_eq!(maps_a.list(&everywhere).await.unwrap().items.len(), 1);
    maps_a.get("seen").await.unwrap();

    let create = api_status(
        maps_a
            .create(&PostParams::default(), &config_map("cm"))
            .await,
    );
    assert_eq!(
        create.message,
        format!(
            "configmaps is forbidden: {NODE_AGENT} cannot create resource \"configmaps\" in API \
             group \"\" in the namespace \"a\""
        )
    );
    let maps_b: Api<ConfigMap> = Api::namespaced(agent.clone(), "b");
    let elsewhere = api_status(maps_b.list(&everywhere).await);
    assert_eq!(
        elsewhere.message,
        format!(
            "configmaps is forbidden: {NODE_AGENT} cannot list resource \"configmaps\" in API \
             group \"\" in the namespace \"b\""
        )
    );
    let watch_b = api_status(maps_b.watch(&WatchParams::default(), "0").await.map(|_| ()));
    assert!(
        watch_b
            .message
            .contains("cannot watch resource \"configmaps\""),
        "{}",
        watch_b.message
    );
    let all_maps = api_status(Api::<ConfigMap>::all(agent).list(&everywhere).await);
    assert!(
        all_maps.message.ends_with("at the cluster scope"),
        "{}",
        all_maps.message
    );
}

/// RBAC reads the bindings at each request: a deleted RoleBinding grants nothing more. A
/// test's `forbid` denies what a binding grants, naming the service account.
#[tokio::test]
async fn bindings_grant_until_deleted_and_forbid_still_denies() {
    let server = server().await;
    let agent = node_agent(&server).await;
    grant_node_agent(&server).await;
    let maps_a: Api<ConfigMap> = Api::namespaced(agent.clone(), "a");
    maps_a.list(&ListParams::default()).await.unwrap();
    Api::<RoleBinding>::namespaced(server.client(), "a")
        .delete("maps", &DeleteParams::default())
        .await
        .unwrap();
    let revoked = api_status(maps_a.list(&ListParams::default()).await);
    assert_eq!((revoked.code, revoked.reason.as_str()), (403, "Forbidden"));

    let pods = Api::<Pod>::all(agent);
    pods.list(&ListParams::default()).await.unwrap();
    server.forbid("list", "", "pods");
    let forbidden = api_status(pods.list(&ListParams::default()).await);
    assert_eq!(
        forbidden.message,
        format!(
            "pods is forbidden: {NODE_AGENT} cannot list resource \"pods\" in API group \"\" \
             at the cluster scope"
        )
    );
}

/// The authentication filter: a token the server never issued, or whose service account was
/// deleted, is 401 Unauthorized on every path (objects, discovery, exec, the service proxy),
/// while a request without credentials is the administrator's.
#[tokio::test]
async fn unknown_tokens_are_unauthorized() {
    let server = server().await;
    create_service_account(&server, "default", "gone").await;
    let token = request_token(&server, "default", "gone", None)
        .await
        .unwrap()
        .status
        .unwrap()
        .token;
    let gone = client_with_token(&server, &token).await;
    gone.list_core_api_versions().await.unwrap();
    Api::<ServiceAccount>::namespaced(server.client(), "default")
        .delete("gone", &DeleteParams::default())
        .await
        .unwrap();

    let bogus = client_with_token(&server, "not-a-token").await;
    for client in [bogus, gone] {
        let status = api_status(
            Api::<Pod>::all(client.clone())
                .list(&ListParams::default())
                .await,
        );
        assert_eq!((status.code, status.reason.as_str()), (401, "Unauthorized"));
        let discovery = client.list_core_api_versions().await;
        assert!(
            matches!(&discovery, Err(kube::Error::Api(status)) if status.code == 401),
            "{discovery:?}"
        );
    }
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    for (path, token) in [
        ("/api/v1/pods", token.as_str()),
        (
            "/api/v1/namespaces/default/pods/p/exec?command=true&stdout=true",
            "not-a-token",
        ),
        (
            "/api/v1/namespaces/default/services/web/proxy/",
            "not-a-token",
        ),
        ("/version", "not-a-token"),
    ] {
        let answer = http
            .get(format!("{}{path}", server.url()))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status().as_u16(), 401, "{path}");
        assert_eq!(
            answer.json::<Value>().await.unwrap(),
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": "Unauthorized", "reason": "Unauthorized", "code": 401}),
            "{path}"
        );
    }
    Api::<Pod>::all(server.client())
        .list(&ListParams::default())
        .await
        .unwrap();
}
