//! Measures the coordinator on the test cluster: its RSS while idle, and the time and peak RSS
//! of turning one Backup of P pods with V emptyDir volumes each into P×V PodVolumeBackups,
//! from the Backup's creation, through creating and opening the namespace's repository, to the
//! last PodVolumeBackup. No node agent runs, so the figures are the coordinator's alone.
//!
//! Run it through `scripts/bench-coordinator.sh`, which builds the release binaries first.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use ferry_shared::crd::PodVolumeBackup;
use ferry_tests::bench::{self, NODE, WORKLOADS, mib};
use ferry_tests::fixtures;
use ferry_tests::harness::VolumeKind;
use ferry_tests::proc::{peak_kib, rss_kib};
use kube::api::ListParams;

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
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
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
