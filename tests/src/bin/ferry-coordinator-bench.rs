//! Measures the coordinator on the test cluster:
//! - its RSS while idle, and the time and peak RSS of turning one Backup of P pods with V
//!   emptyDir volumes each into P×V PodVolumeBackups, from the Backup's creation, through
//!   creating and opening the namespace's repository, to the last PodVolumeBackup;
//! - with a fresh coordinator, the time and peak RSS of backing up a namespace of N objects
//!   (ConfigMaps, Secrets, Services and Deployments, a quarter each) and of restoring it into
//!   another namespace, each from the Backup's or Restore's creation to its end.
//!
//! No node agent runs, so the figures are the coordinator's alone.
//!
//! Run it through `scripts/bench-coordinator.sh`, which builds the release binaries first.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use ferry_shared::crd::{Backup, PodVolumeBackup, Restore};
use ferry_tests::bench::{self, NODE, WORKLOADS, mib};
use ferry_tests::fixtures;
use ferry_tests::harness::{Cluster, VolumeKind};
use ferry_tests::proc::{peak_kib, rss_kib};
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, ApiResource, DynamicObject, ListParams, PostParams};
use kube::core::GroupVersionKind;
use serde_json::{Value, json};

#[derive(Debug, Parser)]
#[command(about = "Measures ferry-coordinator on the test cluster")]
struct Args {
    /// The ferry-coordinator binary to measure (build it with --release).
    #[arg(long)]
    coordinator: PathBuf,
    /// Pods in the backed-up namespace.
    #[arg(long, default_value_t = 500)]
    pods: usize,
    /// emptyDir volumes per pod.
    #[arg(long, default_value_t = 2)]
    volumes: usize,
    /// Objects in the namespace backed up and restored whole; 0 leaves that measure out.
    #[arg(long, default_value_t = 10_000)]
    objects: usize,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    pod_volume_backups(&args).await;
    if args.objects > 0 {
        whole_namespace(&args).await;
    }
}

/// One Backup of many pods' volumes turned into PodVolumeBackups.
async fn pod_volume_backups(args: &Args) {
    let (mut cluster, _) = bench::cluster("coordinator-bench").await;
    let names: Vec<String> = (0..args.volumes).map(|i| format!("v{i}")).collect();
    for i in 0..args.pods {
        let volumes = names
            .iter()
            .map(|name| (name.as_str(), VolumeKind::EmptyDir))
            .collect();
        cluster
            .create_pod(WORKLOADS, &format!("app-{i}"), NODE, volumes)
            .await;
    }
    let pid = cluster.start_coordinator(&args.coordinator, &[]).pid();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = rss_kib(pid);

    let backup = fixtures::backup("measured")
        .namespaces([WORKLOADS])
        .all_volumes();
    let expected = args.pods * args.volumes;
    let pvbs = cluster.api::<PodVolumeBackup>();
    let started = Instant::now();
    backup.create(&cluster).await;
    loop {
        let made = pvbs
            .list_metadata(&ListParams::default())
            .await
            .expect("list")
            .items
            .len();
        if made >= expected {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "only {made} of {expected} PodVolumeBackups after 10 minutes\n{}",
            cluster.coordinator().log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    println!(
        "coordinator, {} pods x {} volumes:",
        args.pods, args.volumes
    );
    println!("  RSS idle             {:.1} MiB", mib(idle));
    println!("  peak RSS             {:.1} MiB", mib(peak_kib(pid)));
    println!(
        "  {expected} PodVolumeBackups created in {:.2} s ({:.0} per second)",
        elapsed.as_secs_f64(),
        expected as f64 / elapsed.as_secs_f64()
    );
}

/// Creates `count` objects in `namespace`: ConfigMaps, Secrets, Services and Deployments in
/// turn, many at once.
async fn create_objects(cluster: &Cluster, namespace: &str, count: usize) {
    let client = cluster.client();
    futures::stream::iter(0..count)
        .map(|i| {
            let client = client.clone();
            async move {
                let (resource, object) = object(i);
                let api: Api<DynamicObject> = Api::namespaced_with(client, namespace, &resource);
                let object: DynamicObject = serde_json::from_value(object).expect("an object");
                api.create(&PostParams::default(), &object).await
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await
        .expect("create the objects");
}

/// The `i`th object of the measured namespace, with its type.
fn object(i: usize) -> (ApiResource, Value) {
    let labels = json!({"app": format!("app-{}", i % 50), "tier": "bench"});
    let (group, kind, plural, body) = match i % 4 {
        0 => (
            "",
            "ConfigMap",
            "configmaps",
            json!({"data": {"settings.yaml": format!("replicas: {i}\nmode: fast\n")}}),
        ),
        1 => (
            "",
            "Secret",
            "secrets",
            json!({"stringData": {"token": format!("t-{i:08}")}}),
        ),
        2 => (
            "",
            "Service",
            "services",
            json!({"spec": {"selector": {"app": format!("app-{i}")}, "ports": [{"port": 80, "targetPort": 8080}]}}),
        ),
        _ => (
            "apps",
            "Deployment",
            "deployments",
            json!({"spec": {
            "selector": {"matchLabels": {"app": format!("app-{i}")}},
            "template": {"metadata": {"labels": {"app": format!("app-{i}")}},
                "spec": {"containers": [{"name": "app", "image": "app:1", "ports": [{"containerPort": 8080}]}]}}}}),
        ),
    };
    let resource =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, "v1", kind), plural);
    let mut object = body;
    object["apiVersion"] = json!(resource.api_version);
    object["kind"] = json!(kind);
    object["metadata"] =
        json!({"name": format!("{}-{i}", plural.trim_end_matches('s')), "labels": labels});
    (resource, object)
}

/// A namespace of many objects backed up whole, then restored into another namespace.
async fn whole_namespace(args: &Args) {
    let (mut cluster, _) = bench::cluster("coordinator-bench").await;
    let started = Instant::now();
    create_objects(&cluster, WORKLOADS, args.objects).await;
    let created = started.elapsed();
    let pid = cluster.start_coordinator(&args.coordinator, &[]).pid();
    let started = Instant::now();
    fixtures::backup("namespace")
        .namespaces([WORKLOADS])
        .create(&cluster)
        .await;
    let backup = cluster.wait_completed::<Backup>("namespace").await;
    let backed_up = started.elapsed();
    let written = (backup.status.and_then(|s| s.progress)).map_or(0, |p| p.items_backed_up);
    let backup_peak = peak_kib(pid);
    let started = Instant::now();
    fixtures::restore("namespace-copy")
        .backup("namespace")
        .map_namespace(WORKLOADS, "bench-copy")
        .create(&cluster)
        .await;
    let restore = cluster.wait_completed::<Restore>("namespace-copy").await;
    let restored = started.elapsed();
    let items = restore
        .status
        .and_then(|s| s.progress)
        .map_or(0, |p| p.items_restored);
    let per_second = |items: u64, time: Duration| items as f64 / time.as_secs_f64();
    println!("coordinator, a namespace of {} objects:", args.objects);
    println!(
        "  setup    {:.2} s to create them, 32 at a time ({:.0} per second: the test server's pace)",
        created.as_secs_f64(),
        args.objects as f64 / created.as_secs_f64()
    );
    println!(
        "  backup   {:.2} s ({:.0} items per second, {written} items), peak RSS {:.1} MiB",
        backed_up.as_secs_f64(),
        per_second(written, backed_up),
        mib(backup_peak)
    );
    println!(
        "  restore  {:.2} s ({:.0} items per second, {items} items), peak RSS {:.1} MiB",
        restored.as_secs_f64(),
        per_second(items, restored),
        mib(peak_kib(pid))
    );
}
