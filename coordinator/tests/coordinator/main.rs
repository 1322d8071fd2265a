//! `ferry-coordinator run`, with `ferry-node-agent run` where data moves, against the
//! Kubernetes test server, the harness playing the kubelet. One test binary, a module a topic:
//! what backups choose and write, restores, hooks, whole namespaces, syncing a bucket into a fresh cluster, expiry,
//! schedules, validation of bad input, leader election, the repository password, repository
//! jobs, outages of the object store, download and server status requests, the `ferry` command
//! line, and `ferry install` and `ferry uninstall`. What several
//! topics use is here.

mod backup;
mod cli;
mod expiry;
mod hooks;
mod install;
mod jobs;
mod leader;
mod monitoring;
mod namespace;
mod outage;
mod password;
mod requests;
mod restore;
mod schedule;
mod sync;
mod tls;
mod validation;

use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_coordinator::jobs::JobRunner;
use ferry_shared::crd::{Backup, OperationPhase, PodVolumeBackup};
use ferry_shared::layout::ObjectStore;
use ferry_shared::repository::{RepositoryLocation, S3Location};
use ferry_shared::retry::{CountedRetries, Retrier};
use ferry_tests::harness::{Cluster, Finishes, VolumeKind};
use ferry_tests::{fixtures, s3};
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use serde_json::json;

const COORDINATOR_BIN: &str = env!("CARGO_BIN_EXE_ferry-coordinator");
const PASSWORD: &str = "coordinator-test-password";
const NODE: &str = "node-a";
/// What downloads through the coordinator need of the test server: its service proxy reaches
/// the harness's coordinator, which a real API server's cannot.
const SERVICE_PROXY: &str = "the service proxy to the coordinator";
/// The prefix of the S3 storage locations in their bucket.
const PREFIX: &str = "cluster";

/// The coordinator under test.
fn coordinator_program() -> &'static Path {
    Path::new(COORDINATOR_BIN)
}

/// The node agent, built next to the coordinator by a workspace build.
fn agent_program() -> PathBuf {
    let program = Path::new(COORDINATOR_BIN).with_file_name("ferry-node-agent");
    assert!(
        program.exists(),
        "{} is missing: build the workspace (cargo build --workspace) before these tests",
        program.display()
    );
    program
}

/// A cluster with Ferry's default storage, in the directory returned, the node [`NODE`] and the
/// namespace `shop`.
async fn shop_cluster() -> (Cluster, PathBuf) {
    shop_cluster_on(Cluster::start().await).await
}

/// A cluster as [`shop_cluster`] makes it, on a test server of its own, for a test that needs
/// what only the test server does; none, and the test skipped, under an external API server.
async fn shop_cluster_on_test_server(needs: &str) -> Option<(Cluster, PathBuf)> {
    Some(shop_cluster_on(Cluster::start_on_test_server(needs).await?).await)
}

/// `cluster` made as [`shop_cluster`] makes one.
async fn shop_cluster_on(cluster: Cluster) -> (Cluster, PathBuf) {
    let storage = cluster.create_default_storage(PASSWORD).await;
    cluster.add_node(NODE).await;
    cluster.create_namespace("shop").await;
    (cluster, storage)
}

/// Waits until the Backup or Restore `name` has finished, and asserts that it Completed.
async fn completed<K: Finishes<Phase = OperationPhase>>(cluster: &Cluster, name: &str) -> K {
    cluster.wait_completed(name).await
}

/// The pod `shop/web` with its volume `data` on a bound claim, and the coordinator started;
/// then a Backup `backup` of `shop`, whose one PodVolumeBackup the test plays to Completed with
/// a snapshot, as a node agent would.
async fn backed_up_web_pod(cluster: &mut Cluster, backup: &str) {
    web_pod_on_a_claim(cluster).await;
    cluster.start_coordinator(coordinator_program(), &[]);
    fixtures::backup(backup)
        .namespaces(["shop"])
        .all_volumes()
        .create(cluster)
        .await;
    let made = |b: &Backup| {
        b.status
            .as_ref()
            .is_some_and(|s| s.pod_volume_backups.is_some())
    };
    cluster
        .wait_for(
            &cluster.api::<Backup>(),
            backup,
            "to create its transfer",
            made,
        )
        .await;
    let pvb = cluster.pvbs_of(backup).await.remove(0);
    let done = json!({"phase": "Completed", "snapshotID": "0123abcd"});
    set_pvb_status(cluster, &pvb, done).await;
    completed::<Backup>(cluster, backup).await;
}

/// The pod `shop/web` on [`NODE`], its volume `data` on the bound claim `data`.
async fn web_pod_on_a_claim(cluster: &Cluster) {
    cluster.create_bound_claim("shop", "data", "pv-data").await;
    let claim = VolumeKind::CsiClaim {
        claim: "data".into(),
        volume: "pv-data".into(),
    };
    cluster
        .create_pod("shop", "web", NODE, vec![("data", claim)])
        .await;
}

/// Waits until the backup `name` has been synced from its storage location as Completed.
async fn synced(cluster: &Cluster, name: &str) -> Backup {
    cluster
        .wait_for(
            &cluster.api::<Backup>(),
            name,
            "synced as Completed",
            |backup: &Backup| backup.phase() == OperationPhase::Completed,
        )
        .await
}

/// Each PodVolumeBackup as `<pod>/<volume>`.
fn volumes_of(pvbs: &[PodVolumeBackup]) -> Vec<String> {
    pvbs.iter()
        .map(|pvb| format!("{}/{}", pvb.spec.pod.name, pvb.spec.volume))
        .collect()
}

/// Plays the node agent: writes a PodVolumeBackup's status.
async fn set_pvb_status(cluster: &Cluster, pvb: &PodVolumeBackup, status: serde_json::Value) {
    cluster
        .api::<PodVolumeBackup>()
        .patch_status(
            &pvb.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await
        .expect("set PodVolumeBackup status");
}

fn assert_failed_validation(name: &str, phase: OperationPhase, errors: &[String], expected: &str) {
    assert_eq!(
        phase,
        OperationPhase::FailedValidation,
        "{name}: {errors:?}"
    );
    let errors = errors.join("; ");
    assert!(errors.contains(expected), "{name}: {errors}");
}

/// The default storage location: [`PREFIX`] in `bucket` of the S3 service at `endpoint`,
/// synced every second, with the test server's keys in a Secret.
async fn create_s3_location(cluster: &Cluster, endpoint: &str, bucket: &str) {
    create_s3_location_trusting(cluster, endpoint, bucket, None).await;
}

/// As [`create_s3_location`] makes it, trusting the CA `ca_cert` (PEM) for the endpoint when
/// one is given.
async fn create_s3_location_trusting(
    cluster: &Cluster,
    endpoint: &str,
    bucket: &str,
    ca_cert: Option<&str>,
) {
    cluster
        .create_s3_secret("s3-keys", s3::ACCESS_KEY_ID, s3::SECRET_ACCESS_KEY)
        .await;
    let mut location = fixtures::s3_location("default", endpoint, bucket)
        .prefix(PREFIX)
        .default_location()
        .region("us-east-1")
        .credential("s3-keys")
        .sync_period("1s");
    if let Some(pem) = ca_cert {
        location = location.ca_cert(pem);
    }
    location.create(cluster).await;
}

/// A cluster as [`shop_cluster`] makes it, but whose default storage location is a new bucket
/// of the test S3 service; returns it with the store of that location.
async fn s3_shop_cluster() -> (Cluster, ObjectStore) {
    let endpoint = s3::endpoint();
    let bucket = s3::new_bucket(&endpoint);
    let cluster = Cluster::start().await;
    cluster.create_repository_password(PASSWORD).await;
    create_s3_location(&cluster, &endpoint, &bucket).await;
    cluster.add_node(NODE).await;
    cluster.create_namespace("shop").await;
    let store = ObjectStore::open(
        &bucket_location(&endpoint, &bucket),
        Retrier::unobserved(Duration::ZERO),
    )
    .expect("the bucket's store");
    (cluster, store)
}

/// Where [`create_s3_location`] keeps its data, for reading it straight from the bucket.
fn bucket_location(endpoint: &str, bucket: &str) -> RepositoryLocation {
    RepositoryLocation::S3(S3Location {
        endpoint: Some(endpoint.to_owned()),
        bucket: bucket.to_owned(),
        prefix: PREFIX.to_owned(),
        access_key_id: Some(s3::ACCESS_KEY_ID.to_owned()),
        secret_access_key: Some(s3::SECRET_ACCESS_KEY.to_owned()),
        ..S3Location::default()
    })
}

/// Runs the coordinator's repository jobs, without a memory limit.
fn job_runner(timeout: Duration, retries: CountedRetries) -> JobRunner {
    JobRunner {
        program: PathBuf::from(COORDINATOR_BIN),
        memory_limit: None,
        timeout,
        retries,
    }
}
