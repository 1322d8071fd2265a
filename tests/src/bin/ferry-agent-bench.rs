//! Measures the node agent on the test cluster, next to the restic CLI on the same data:
//!
//! - the agent's RSS while idle, and its peak RSS (and its transfer child's) during one backup
//!   of a large volume;
//! - the time from creating N PodVolumeBackups of a small volume each, in one namespace on one
//!   node, to all of them Completed, against the restic CLI run once per volume, one after
//!   another, as Velero runs it.
//!
//! Run it through `scripts/bench-agent.sh`, which builds the release binaries first.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Parser;
use ferry_shared::crd::{PodVolumeBackup, PodVolumeBackupSpec, PodVolumePhase, PodVolumeTransfer};
use ferry_tests::bench::{self, NODE, WORKLOADS, mib};
use ferry_tests::fixtures;
use ferry_tests::harness::{Cluster, VolumeKind};
use ferry_tests::proc::{children, peak_kib, rss_kib};
use ferry_tests::tree::make_files;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::ListParams;

const PASSWORD: &str = "agent-bench";

#[derive(Debug, Parser)]
#[command(about = "Measures ferry-node-agent on the test cluster against the restic CLI")]
struct Args {
    /// The ferry-node-agent binary to measure (build it with --release).
    #[arg(long)]
    agent: PathBuf,
    /// How many small volumes to back up at once.
    #[arg(long, default_value_t = 50)]
    volumes: usize,
    /// Size of each small volume, in MiB.
    #[arg(long, default_value_t = 1)]
    volume_mib: usize,
    /// Size of the large volume whose backup the agent's memory is measured on, in MiB.
    #[arg(long, default_value_t = 1024)]
    large_mib: usize,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    let (mut cluster, storage) = bench::cluster(PASSWORD).await;
    let repository = storage.join("restic").join(WORKLOADS);
    let password_file = cluster.path("password");
    fs::write(&password_file, PASSWORD).expect("password file");
    run(Command::new(&args.agent)
        .args(["init", "--repository"])
        .arg(&repository)
        .arg("--password-file")
        .arg(&password_file));

    let agent_pid = cluster.start_agent(&args.agent, NODE, &[]).pid();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_kib = rss_kib(agent_pid);

    let (pods, sources) = create_small_volumes(&cluster, &args).await;
    let ferry_many = back_up_with_agent(&cluster, &pods, &repository).await;
    let restic_many = back_up_with_restic(&cluster, &sources, &password_file);
    let large = back_up_large_volume(&cluster, &args, &repository, agent_pid).await;
    Figures {
        idle_kib,
        ferry_many,
        restic_many,
        large,
    }
    .print(&args);
}

/// What the bench measured.
struct Figures {
    /// The agent's RSS while idle.
    idle_kib: u64,
    /// The agent's time for all small volumes, their PodVolumeBackups created at once.
    ferry_many: Duration,
    /// The restic CLI's time for the same volumes, one after another.
    restic_many: Duration,
    large: LargeBackup,
}

/// The backup of the large volume: its time, and the peak RSS of the agent and of its transfer
/// child meanwhile.
struct LargeBackup {
    took: Duration,
    agent_peak_kib: u64,
    child_peak_kib: u64,
}

impl Figures {
    fn print(&self, args: &Args) {
        println!(
            "node agent, {} volumes of {} MiB each, one node:",
            args.volumes, args.volume_mib
        );
        println!(
            "  ferry agent, all PodVolumeBackups created at once: {:>7.2} s",
            self.ferry_many.as_secs_f64()
        );
        println!(
            "  restic CLI, once per volume, one after another:    {:>7.2} s",
            self.restic_many.as_secs_f64()
        );
        println!(
            "  ferry ÷ restic: {:.2}",
            self.ferry_many.as_secs_f64() / self.restic_many.as_secs_f64()
        );
        println!("node agent memory:");
        println!(
            "  idle RSS:                          {:>7.1} MiB",
            mib(self.idle_kib)
        );
        println!(
            "  agent peak RSS during a {} MiB backup: {:>7.1} MiB",
            args.large_mib,
            mib(self.large.agent_peak_kib)
        );
        println!(
            "  transfer child peak RSS:           {:>7.1} MiB (backup took {:.1} s)",
            mib(self.large.child_peak_kib),
            self.large.took.as_secs_f64()
        );
    }
}

/// Creates the pods of the small volumes, one volume each filled with test data. Returns the
/// pods and their volumes' directories.
async fn create_small_volumes(cluster: &Cluster, args: &Args) -> (Vec<Pod>, Vec<PathBuf>) {
    let mut pods = Vec::new();
    let mut sources = Vec::new();
    for i in 0..args.volumes {
        let (pod, dirs) = cluster
            .create_pod(
                WORKLOADS,
                &format!("app-{i}"),
                NODE,
                vec![("data", VolumeKind::EmptyDir)],
            )
            .await;
        make_files(&dirs[0], 4, args.volume_mib * 1024 * 1024 / 4, i as u64);
        sources.push(dirs[0].clone());
        pods.push(pod);
    }
    (pods, sources)
}

/// The time from creating a PodVolumeBackup for each pod, all at once, to all of them Completed.
async fn back_up_with_agent(cluster: &Cluster, pods: &[Pod], repository: &Path) -> Duration {
    let started = Instant::now();
    for pod in pods {
        create_backup(cluster, pod, repository).await;
    }
    wait_all_completed(cluster, pods.len()).await;
    started.elapsed()
}

/// The time the restic CLI takes to back up each source directory into a repository of its own,
/// one after another.
fn back_up_with_restic(cluster: &Cluster, sources: &[PathBuf], password_file: &Path) -> Duration {
    let repository = cluster.path("restic-repo");
    let restic = |args: &[&str]| {
        let mut command = Command::new("restic");
        command
            .arg("--repo")
            .arg(&repository)
            .arg("--password-file")
            .arg(password_file)
            .arg("--no-cache")
            .args(args);
        command
    };
    run(&mut restic(&["init"]));
    let started = Instant::now();
    for source in sources {
        run(restic(&["backup", "--host", "bench", "."]).current_dir(source));
    }
    started.elapsed()
}

/// Backs up one large volume, sampling the agent's and its transfer child's memory until the
/// backup is Completed, after the small volumes' ones.
async fn back_up_large_volume(
    cluster: &Cluster,
    args: &Args,
    repository: &Path,
    agent_pid: u32,
) -> LargeBackup {
    let (pod, dirs) = cluster
        .create_pod(
            WORKLOADS,
            "large",
            NODE,
            vec![("data", VolumeKind::EmptyDir)],
        )
        .await;
    make_files(&dirs[0], args.large_mib / 8, 8 * 1024 * 1024, 99);
    create_backup(cluster, &pod, repository).await;
    let mut agent_peak_kib = 0;
    let mut child_peak_kib = 0;
    let started = Instant::now();
    while completed(cluster).await < args.volumes + 1 {
        agent_peak_kib = agent_peak_kib.max(rss_kib(agent_pid));
        for child in children(agent_pid) {
            child_peak_kib = child_peak_kib.max(peak_kib(child));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the large backup did not finish:\n{}",
            cluster.logs()
        );
    }
    LargeBackup {
        took: started.elapsed(),
        agent_peak_kib,
        child_peak_kib,
    }
}

async fn create_backup(cluster: &Cluster, pod: &Pod, repository: &Path) {
    let spec = PodVolumeBackupSpec {
        tags: BTreeMap::from([("pod".to_owned(), pod.name_any())]),
        ..fixtures::volume_backup(pod, "data", repository.display().to_string())
    };
    cluster.create_backup_request("bench", spec).await;
}

async fn completed(cluster: &Cluster) -> usize {
    let list = cluster
        .api::<PodVolumeBackup>()
        .list(&ListParams::default())
        .await
        .expect("list PodVolumeBackups");
    for pvb in &list.items {
        assert_ne!(
            pvb.phase(),
            PodVolumePhase::Failed,
            "{} failed: {:?}",
            pvb.name_any(),
            pvb.status
        );
    }
    list.items
        .iter()
        .filter(|pvb| pvb.phase() == PodVolumePhase::Completed)
        .count()
}

async fn wait_all_completed(cluster: &Cluster, count: usize) {
    while completed(cluster).await < count {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn run(command: &mut Command) {
    let output = command.output().expect("run command");
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
