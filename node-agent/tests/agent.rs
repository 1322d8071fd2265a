//! `ferry-node-agent run` against the Kubernetes test server, with the harness playing the
//! kubelet: PodVolumeBackups and PodVolumeRestores made as the coordinator makes them are
//! claimed, transferred, published and finished by the real binary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use ferry_node_agent::marker;
use ferry_shared::crd::PodVolumeTransfer;
use ferry_shared::crd::{
    PodReference, PodVolumeBackup, PodVolumeBackupSpec, PodVolumePhase, PodVolumeRestore,
    PodVolumeRestoreSpec, Restore,
};
use ferry_shared::names;
use ferry_shared::repository::{
    OpenMode, ProgressCounters, Repository, RepositoryConfig, RepositoryLocation,
};
use ferry_tests::fixtures;
use ferry_tests::harness::{Cluster, VolumeKind, assert_promtool_accepts};
use ferry_tests::proc::children;
use ferry_tests::tree::{assert_same_tree, make_files, make_rich_tree};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, PostParams};
use kube::{Resource, ResourceExt};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const AGENT: &str = env!("CARGO_BIN_EXE_ferry-node-agent");
const HELPER: &str = env!("CARGO_BIN_EXE_ferry-restore-helper");
const WORKLOADS: &str = "shop";
const PASSWORD: &str = "agent-test-password";

/// A cluster with one filesystem storage location, the repository password, and the workload
/// namespace.
async fn cluster() -> (Cluster, PathBuf) {
    let cluster = Cluster::start().await;
    cluster.create_namespace(WORKLOADS).await;
    let storage = cluster.create_default_storage(PASSWORD).await;
    // The coordinator creates a namespace's repository before it asks for backups.
    let repository = storage.join("restic").join(cluster.scoped(WORKLOADS));
    Repository::open(
        &RepositoryConfig {
            location: RepositoryLocation::Local {
                path: repository.clone(),
            },
            password: PASSWORD.to_owned(),
            cache_dir: None,
            retry_budget: std::time::Duration::ZERO,
        },
        OpenMode::CreateIfMissing,
        ProgressCounters::new(),
    )
    .expect("create the repository");
    (cluster, repository)
}

/// A running pod on `node` with one emptyDir volume, `data`, holding `files` files of `size`
/// bytes.
async fn pod_with_files(
    cluster: &Cluster,
    name: &str,
    node: &str,
    files: usize,
    size: usize,
    seed: u64,
) -> Pod {
    let (pod, dirs) = cluster
        .create_pod(WORKLOADS, name, node, vec![("data", VolumeKind::EmptyDir)])
        .await;
    make_files(&dirs[0], files, size, seed);
    pod
}

/// An S3 storage location, with keys, for bucket `b` at `endpoint`.
async fn create_s3_location(cluster: &Cluster, name: &str, endpoint: &str) {
    let secret = format!("{name}-keys");
    cluster.create_s3_secret(&secret, "test", "test").await;
    fixtures::s3_location(name, endpoint, "b")
        .credential(&secret)
        .create(cluster)
        .await;
}

/// A PodVolumeRestore as the coordinator makes it: owned by its Restore, labelled for node-a.
async fn create_restore_request(
    cluster: &Cluster,
    restore: &Restore,
    pod: &Pod,
    volume: &str,
    snapshot: &str,
    repository: &Path,
) -> PodVolumeRestore {
    let mut pvr = PodVolumeRestore::new(
        "",
        PodVolumeRestoreSpec {
            pod: fixtures::pod_reference(pod),
            volume: volume.to_owned(),
            storage_location: "default".to_owned(),
            repository: repository.display().to_string(),
            snapshot_id: snapshot.to_owned(),
            source_namespace: cluster.scoped(WORKLOADS),
        },
    );
    pvr.metadata.name = None;
    pvr.metadata.generate_name = Some(format!("{}-", restore.name_any()));
    pvr.metadata.labels = Some(BTreeMap::from([(
        names::label::NODE.to_owned(),
        cluster.scoped("node-a"),
    )]));
    pvr.metadata.owner_references = Some(vec![
        restore.controller_owner_ref(&()).expect("owner reference"),
    ]);
    cluster
        .api::<PodVolumeRestore>()
        .create(&PostParams::default(), &pvr)
        .await
        .unwrap()
}

/// A new pod `app-0-restored` with one emptyDir volume `data`, held by its running restore-wait
/// container.
async fn pod_held_for_restore(cluster: &Cluster) -> (Pod, Vec<PathBuf>) {
    let (pod, dirs) = cluster
        .create_pod(
            WORKLOADS,
            "app-0-restored",
            "node-a",
            vec![("data", VolumeKind::EmptyDir)],
        )
        .await;
    cluster
        .set_pod_status(&pod, "Pending", Some(names::RESTORE_WAIT_CONTAINER))
        .await;
    (pod, dirs)
}

/// A PodVolumeBackup of the backup `nightly`, of `pod`'s `volume`, into `repository`.
async fn create_backup(
    cluster: &Cluster,
    pod: &Pod,
    volume: &str,
    repository: &Path,
) -> PodVolumeBackup {
    let spec = PodVolumeBackupSpec {
        tags: BTreeMap::from([
            ("backup".to_owned(), "nightly".to_owned()),
            ("ns".to_owned(), WORKLOADS.to_owned()),
            ("volume".to_owned(), volume.to_owned()),
        ]),
        ..fixtures::volume_backup(pod, volume, repository.display().to_string())
    };
    cluster.create_backup_request("nightly", spec).await
}

fn snapshot_of(pvb: &PodVolumeBackup) -> String {
    let status = pvb.status.clone().unwrap_or_default();
    assert_eq!(status.phase, PodVolumePhase::Completed, "{status:?}");
    status.snapshot_id.expect("a snapshot ID")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backs_up_and_restores_an_empty_dir_and_a_csi_claim() {
    let (mut cluster, repository) = cluster().await;
    cluster.add_node("node-a").await;
    cluster.start_agent(
        Path::new(AGENT),
        "node-a",
        &["--progress-interval", "200ms"],
    );
    // The claim and its CSI volume, as a provisioner would have bound them.
    cluster
        .create_bound_claim(WORKLOADS, "data-app-0", "pvc-0a1b")
        .await;
    let data = VolumeKind::CsiClaim {
        claim: "data-app-0".to_owned(),
        volume: "pvc-0a1b".to_owned(),
    };
    let (pod, dirs) = cluster
        .create_pod(
            WORKLOADS,
            "app-0",
            "node-a",
            vec![("cache", VolumeKind::EmptyDir), ("data", data)],
        )
        .await;
    make_rich_tree(&dirs[0], 1);
    make_files(&dirs[1], 40, 100_000, 2);
    let snapshots = both_volumes_are_backed_up(&cluster, &pod, &repository).await;
    let (restore_uid, new_dirs) =
        both_volumes_are_restored_into_a_new_pod(&cluster, &snapshots, &repository).await;
    let restores_dir = new_dirs[0].parent().unwrap();
    let helper = Command::new(HELPER)
        .arg(&restore_uid)
        .arg("--restores-dir")
        .arg(restores_dir)
        .args(["--timeout", "10s"])
        .output()
        .unwrap();
    assert!(
        helper.status.success(),
        "{}",
        String::from_utf8_lossy(&helper.stderr)
    );
    assert_same_tree(&dirs[0], &new_dirs[0]);
    assert_same_tree(&dirs[1], &new_dirs[1]);

    let metrics = cluster.agent("node-a").metrics_text();
    assert!(
        metrics.contains(
            r#"ferry_pod_volume_operations_total{operation="backup",result="completed"} 2"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"ferry_pod_volume_operations_total{operation="restore",result="completed"} 2"#
        ),
        "{metrics}"
    );
    // Series that nothing has counted yet are there from the start, as is readiness.
    for line in [
        r#"ferry_pod_volume_operations_total{operation="backup",result="failed"} 0"#,
        r#"ferry_storage_retries_total{operation="read"} 0"#,
        "ferry_ready 1",
    ] {
        assert!(metrics.contains(line), "no {line} in:\n{metrics}");
    }
}

/// Backs up the pod's cache (an emptyDir) and data (a CSI claim) and returns their snapshots.
async fn both_volumes_are_backed_up(
    cluster: &Cluster,
    pod: &Pod,
    repository: &Path,
) -> Vec<String> {
    let mut snapshots = Vec::new();
    for volume in ["cache", "data"] {
        let pvb = create_backup(cluster, pod, volume, repository).await;
        let done = cluster
            .wait_finished::<PodVolumeBackup>(&pvb.name_any())
            .await;
        let status = done.status.clone().unwrap();
        assert_eq!(status.attempts, 1);
        let progress = status.progress.clone().unwrap();
        assert_eq!(progress.bytes_done, progress.total_bytes, "{status:?}");
        assert!(
            cluster
                .unscoped(&status.path.unwrap())
                .ends_with(if volume == "cache" {
                    "kubernetes.io~empty-dir/cache"
                } else {
                    "kubernetes.io~csi/pvc-0a1b/mount"
                })
        );
        snapshots.push(snapshot_of(&done));
    }

    snapshots
}

/// Restores the snapshots into a new pod on the same node, held by its restore-wait
/// container, and waits until both are Completed with their markers; returns the restore's
/// UID and the new pod's volume directories.
async fn both_volumes_are_restored_into_a_new_pod(
    cluster: &Cluster,
    snapshots: &[String],
    repository: &Path,
) -> (String, Vec<PathBuf>) {
    let restore = fixtures::restore("restore-1")
        .backup("nightly")
        .create(cluster)
        .await;
    let (new_pod, new_dirs) = cluster
        .create_pod(
            WORKLOADS,
            "app-0-restored",
            "node-a",
            vec![
                ("cache", VolumeKind::EmptyDir),
                ("data", VolumeKind::EmptyDir),
            ],
        )
        .await;
    let mut pvrs = Vec::new();
    for (volume, snapshot) in ["cache", "data"].iter().zip(snapshots) {
        pvrs.push(
            create_restore_request(cluster, &restore, &new_pod, volume, snapshot, repository).await,
        );
    }
    // Not yet: the restore-wait container is not running.
    cluster
        .set_pod_status(&new_pod, "Pending", Some(names::RESTORE_WAIT_CONTAINER))
        .await;
    let restore_uid = restore.uid().unwrap();
    for pvr in &pvrs {
        let done = cluster
            .wait_for(
                &cluster.api::<PodVolumeRestore>(),
                &pvr.name_any(),
                "Completed",
                |pvr| pvr.phase() == PodVolumePhase::Completed,
            )
            .await;
        let status = done.status.unwrap();
        assert_eq!(status.node, Some(cluster.scoped("node-a")));
        // The marker is written before Completed: it is there when Completed is seen.
        let volume = &new_dirs[if pvr.spec.volume == "cache" { 0 } else { 1 }];
        assert!(volume.join(".velero").join(&restore_uid).exists());
    }

    (restore_uid, new_dirs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_each_do_only_their_own_nodes_work() {
    let (mut cluster, repository) = cluster().await;
    for node in ["node-a", "node-b"] {
        cluster.add_node(node).await;
        cluster.start_agent(Path::new(AGENT), node, &[]);
    }
    let mut backups = Vec::new();
    for (node, pod_name) in [("node-a", "a-0"), ("node-b", "b-0"), ("node-a", "a-1")] {
        let (pod, dirs) = cluster
            .create_pod(
                WORKLOADS,
                pod_name,
                node,
                vec![("data", VolumeKind::EmptyDir)],
            )
            .await;
        make_files(&dirs[0], 10, 10_000, 3);
        backups.push((
            node,
            create_backup(&cluster, &pod, "data", &repository).await,
        ));
    }
    for (node, pvb) in &backups {
        let done = cluster
            .wait_finished::<PodVolumeBackup>(&pvb.name_any())
            .await;
        snapshot_of(&done);
        let status = done.status.clone().unwrap();
        assert_eq!(
            status.attempts,
            1,
            "{} was run more than once",
            done.name_any()
        );
        assert!(
            status
                .path
                .unwrap()
                .starts_with(&*cluster.host_pods(node).to_string_lossy()),
            "{} ran on the wrong node",
            done.name_any()
        );
    }
    // Both agents say they are alive, and that their watches have synced.
    for node in ["node-a", "node-b"] {
        assert_eq!(cluster.agent(node).admin("/livez").as_deref(), Some("ok"));
        let deadline = tokio::time::Instant::now() + ferry_tests::harness::DEADLINE;
        while cluster.agent(node).admin("/readyz").as_deref() != Some("ok") {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the agent on {node} never became ready\n{}",
                cluster.logs()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    let claims = |node: &str| {
        cluster
            .logs()
            .split("--- ")
            .filter(|log| log.starts_with(node))
            .map(|log| log.matches("claimed").count())
            .sum::<usize>()
    };
    assert_eq!(claims("node-a"), 2, "{}", cluster.logs());
    assert_eq!(claims("node-b"), 1, "{}", cluster.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_is_published_at_every_interval_and_ends_at_the_totals() {
    let (mut cluster, repository) = cluster().await;
    cluster.add_node("node-a").await;
    cluster.start_agent(Path::new(AGENT), "node-a", &["--progress-interval", "50ms"]);
    let pod = pod_with_files(&cluster, "app-0", "node-a", 200, 512 * 1024, 4).await;
    let pvb = create_backup(&cluster, &pod, "data", &repository).await;

    // Every status write the agent makes is seen by a watch; count those with new progress.
    let api = cluster.api::<PodVolumeBackup>();
    let mut seen = Vec::new();
    let mut gauge_while_running = None;
    let series = format!(r#"kind="done",name="{}""#, pvb.name_any());
    let stream = kube::runtime::watcher::watch_object(api.clone(), &pvb.name_any());
    futures::pin_mut!(stream);
    let deadline = tokio::time::Instant::now() + ferry_tests::harness::DEADLINE;
    while let Ok(Some(Ok(Some(object)))) =
        tokio::time::timeout_at(deadline, futures::StreamExt::next(&mut stream)).await
    {
        let status = object.status.clone().unwrap_or_default();
        if let Some(progress) = status.progress.filter(|p| p.bytes_done > 0)
            && seen.last() != Some(&progress)
        {
            if gauge_while_running.is_none() && status.phase == PodVolumePhase::InProgress {
                gauge_while_running = Some(cluster.agent("node-a").metrics_text());
            }
            seen.push(progress);
        }
        if status.phase == PodVolumePhase::Completed {
            break;
        }
    }
    assert!(
        seen.len() >= 2,
        "progress was published {} times: {seen:?}",
        seen.len()
    );
    for pair in seen.windows(2) {
        assert!(pair[0].bytes_done <= pair[1].bytes_done, "{pair:?}");
    }
    let last = seen.last().unwrap();
    assert_eq!(last.bytes_done, 200 * 512 * 1024);
    assert_eq!((last.files_done, last.total_files), (200, 200));

    // The transfer's progress series exists while it runs and is gone once it has ended.
    let running = gauge_while_running.expect("metrics while the transfer ran");
    assert!(running.contains(&series), "{running}");
    let metrics = cluster.agent("node-a").metrics_text();
    assert!(!metrics.contains(&series), "{metrics}");
    assert_promtool_accepts(&running);
    assert_promtool_accepts(&metrics);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_retries_on_restart_and_gives_up_after_its_attempts() {
    let (mut cluster, repository) = cluster().await;
    cluster.add_node("node-a").await;
    let pod = pod_with_files(&cluster, "app-0", "node-a", 300, 512 * 1024, 5).await;
    let api = cluster.api::<PodVolumeBackup>();

    // Killed while InProgress, then started again: attempt 2 completes.
    cluster.start_agent(Path::new(AGENT), "node-a", &["--progress-interval", "50ms"]);
    let pvb = create_backup(&cluster, &pod, "data", &repository).await;
    cluster
        .wait_for(&api, &pvb.name_any(), "InProgress", |pvb| {
            pvb.phase() == PodVolumePhase::InProgress
        })
        .await;
    cluster.agent("node-a").kill();
    cluster.start_agent(Path::new(AGENT), "node-a", &[]);
    let done = cluster
        .wait_finished::<PodVolumeBackup>(&pvb.name_any())
        .await;
    snapshot_of(&done);
    assert_eq!(done.status.unwrap().attempts, 2);

    // A transfer that has already used up its attempts is failed with the reason.
    cluster.agent("node-a").terminate().await;
    let stuck = create_backup(&cluster, &pod, "data", &repository).await;
    let mut status = stuck.status.clone().unwrap_or_default();
    status.phase = PodVolumePhase::InProgress;
    status.attempts = 3;
    let mut stuck = api.get(&stuck.name_any()).await.unwrap();
    stuck.status = Some(status);
    api.replace_status(&stuck.name_any(), &PostParams::default(), &stuck)
        .await
        .unwrap();
    cluster.start_agent(Path::new(AGENT), "node-a", &["--max-attempts", "3"]);
    let failed = cluster
        .wait_finished::<PodVolumeBackup>(&stuck.name_any())
        .await;
    let status = failed.status.unwrap();
    assert_eq!(status.phase, PodVolumePhase::Failed);
    assert!(
        status
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("interrupted 3 times"),
        "{status:?}"
    );
}

/// Kills the agent of node-a and its transfer processes at once, as a node crash would, and
/// waits until the transfers have stopped writing.
async fn crash_agent(cluster: &mut Cluster) {
    // The agent's `transfer` children.
    let children: Vec<Pid> = children(cluster.agent("node-a").pid())
        .into_iter()
        .map(|child| Pid::from_raw(i32::try_from(child).expect("a pid")))
        .collect();
    assert!(!children.is_empty(), "no transfer process runs");
    cluster.agent("node-a").kill();
    for child in &children {
        let _ = kill(*child, Signal::SIGKILL);
    }
    let deadline = tokio::time::Instant::now() + ferry_tests::harness::DEADLINE;
    // Reparented to init, which reaps them; until then, a zombie writes nothing either.
    let running = |pid: &Pid| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| !stat.contains(") Z "))
    };
    while children.iter().any(running) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{children:?} live on"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_interrupted_by_a_killed_agent_completes_on_retry() {
    let (mut cluster, repository) = cluster().await;
    cluster.add_node("node-a").await;
    cluster.start_agent(Path::new(AGENT), "node-a", &["--progress-interval", "50ms"]);
    // About 190 MB of incompressible data in 3000 files: a restore of a few seconds here.
    let (pod, dirs) = cluster
        .create_pod(
            WORKLOADS,
            "app-0",
            "node-a",
            vec![("data", VolumeKind::EmptyDir)],
        )
        .await;
    make_files(&dirs[0], 3000, 64 * 1024, 12);
    let pvb = create_backup(&cluster, &pod, "data", &repository).await;
    let snapshot = snapshot_of(&cluster.wait_finished(&pvb.name_any()).await);

    let restore = fixtures::restore("restore-after-crash")
        .backup("nightly")
        .create(&cluster)
        .await;
    let (new_pod, new_dirs) = pod_held_for_restore(&cluster).await;
    let pvr =
        create_restore_request(&cluster, &restore, &new_pod, "data", &snapshot, &repository).await;
    let api = cluster.api::<PodVolumeRestore>();
    cluster
        .wait_for(&api, &pvr.name_any(), "restoring", |pvr| {
            pvr.phase() == PodVolumePhase::InProgress
                && pvr
                    .status
                    .as_ref()
                    .and_then(|status| status.progress.as_ref())
                    .is_some_and(|progress| {
                        progress.bytes_done > 0 && progress.bytes_done < progress.total_bytes
                    })
        })
        .await;
    crash_agent(&mut cluster).await;
    let interrupted = api.get(&pvr.name_any()).await.unwrap().status.unwrap();
    assert_eq!(
        interrupted.phase,
        PodVolumePhase::InProgress,
        "{interrupted:?}"
    );
    let restore_uid = restore.uid().unwrap();
    assert!(!marker::marker_present(&new_dirs[0], &restore_uid));

    cluster.start_agent(Path::new(AGENT), "node-a", &["--progress-interval", "50ms"]);
    let done = cluster
        .wait_finished::<PodVolumeRestore>(&pvr.name_any())
        .await;
    let status = done.status.unwrap();
    assert_eq!(
        status.phase,
        PodVolumePhase::Completed,
        "{status:?}\n{}",
        cluster.logs()
    );
    assert_eq!(status.attempts, 2, "{status:?}");
    assert!(marker::marker_present(&new_dirs[0], &restore_uid));
    marker::remove_marker_dir(&new_dirs[0]).unwrap();
    assert_same_tree(&dirs[0], &new_dirs[0]);
}

/// A backup of `pod`'s volume `data`, into `repository` of `location`.
fn data_volume_spec(pod: &Pod, location: &str, repository: String) -> PodVolumeBackupSpec {
    PodVolumeBackupSpec {
        storage_location: location.to_owned(),
        ..fixtures::volume_backup(pod, "data", repository)
    }
}

/// Creates a PodVolumeBackup for node-a from `spec` as given, unchecked, as a careless or
/// hostile writer of custom resources might.
async fn create_raw_backup(cluster: &Cluster, spec: PodVolumeBackupSpec) -> PodVolumeBackup {
    cluster.create_backup_request("bad", spec).await
}

async fn fails_with(cluster: &Cluster, pvb: &PodVolumeBackup, expected: &str) {
    let done = cluster
        .wait_finished::<PodVolumeBackup>(&pvb.name_any())
        .await;
    let status = done.status.unwrap_or_default();
    assert_eq!(status.phase, PodVolumePhase::Failed, "{status:?}");
    let message = status.message.unwrap_or_default();
    assert!(
        message.contains(expected),
        "expected {expected:?} in the message of {}: {message}",
        pvb.name_any()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_fail_with_a_clear_message_and_the_agent_keeps_serving() {
    let (mut cluster, repository) = cluster().await;
    cluster.add_node("node-a").await;
    cluster.add_node("node-b").await;
    cluster.start_agent(
        Path::new(AGENT),
        "node-a",
        &["--storage-retry-budget", "0s"],
    );
    let pod = pod_with_files(&cluster, "app-0", "node-a", 5, 1000, 6).await;
    let (elsewhere, _) = cluster
        .create_pod(
            WORKLOADS,
            "app-b",
            "node-b",
            vec![("data", VolumeKind::EmptyDir)],
        )
        .await;
    let good = fixtures::volume_backup(&pod, "data", repository.display().to_string());
    let pvb = create_raw_backup(&cluster, good.clone()).await;
    snapshot_of(&cluster.wait_finished(&pvb.name_any()).await);

    let outside = cluster.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    create_s3_location(&cluster, "unreachable", "http://127.0.0.1:9").await;

    let cases = bad_specs(&good, &pod, &elsewhere, &outside);
    for (spec, expected) in cases {
        let pvb = create_raw_backup(&cluster, spec).await;
        fails_with(&cluster, &pvb, expected).await;
    }
    bad_passwords_fail_and_the_right_one_serves(&cluster, &good).await;
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "something was written outside"
    );
}

/// Specs that differ from `good` in one bad way each, with what the failure must say.
fn bad_specs(
    good: &PodVolumeBackupSpec,
    pod: &Pod,
    elsewhere: &Pod,
    outside: &Path,
) -> Vec<(PodVolumeBackupSpec, &'static str)> {
    vec![
        (
            PodVolumeBackupSpec {
                volume: "../data".to_owned(),
                ..good.clone()
            },
            "is not a valid name",
        ),
        (
            PodVolumeBackupSpec {
                volume: "missing".to_owned(),
                ..good.clone()
            },
            "has no volume named missing",
        ),
        (
            PodVolumeBackupSpec {
                pod: PodReference {
                    uid: "ffffffff-0000-4000-8000-000000000000".to_owned(),
                    ..fixtures::pod_reference(pod)
                },
                ..good.clone()
            },
            "the pod was replaced",
        ),
        (
            PodVolumeBackupSpec {
                pod: fixtures::pod_reference(elsewhere),
                ..good.clone()
            },
            "not on this node",
        ),
        (
            PodVolumeBackupSpec {
                repository: outside.display().to_string(),
                ..good.clone()
            },
            "does not belong to storage location default",
        ),
        (
            PodVolumeBackupSpec {
                storage_location: "unreachable".to_owned(),
                repository: format!("s3:http://127.0.0.1:9/b/restic/{}", good.pod.namespace),
                ..good.clone()
            },
            "Connection refused",
        ),
        (
            PodVolumeBackupSpec {
                storage_location: "nowhere".to_owned(),
                ..good.clone()
            },
            "storage location nowhere does not exist",
        ),
    ]
}

/// A missing Secret, then a wrong password, fail the backup; the right one again serves.
async fn bad_passwords_fail_and_the_right_one_serves(
    cluster: &Cluster,
    good: &PodVolumeBackupSpec,
) {
    let secrets = cluster.api::<k8s_openapi::api::core::v1::Secret>();
    secrets
        .delete(names::REPOSITORY_SECRET, &DeleteParams::default())
        .await
        .unwrap();
    let pvb = create_raw_backup(cluster, good.clone()).await;
    fails_with(cluster, &pvb, "does not exist").await;
    cluster.create_repository_password("wrong").await;
    let pvb = create_raw_backup(cluster, good.clone()).await;
    fails_with(cluster, &pvb, "wrong password").await;

    // Still serving: with the right password again, a backup completes.
    secrets
        .delete(names::REPOSITORY_SECRET, &DeleteParams::default())
        .await
        .unwrap();
    cluster.create_repository_password(PASSWORD).await;
    let pvb = create_raw_backup(cluster, good.clone()).await;
    snapshot_of(
        &cluster
            .wait_finished::<PodVolumeBackup>(&pvb.name_any())
            .await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_of_a_missing_snapshot_fails_and_writes_no_marker() {
    let (mut cluster, repository) = cluster().await;
    cluster.add_node("node-a").await;
    cluster.start_agent(Path::new(AGENT), "node-a", &[]);
    let pod = pod_with_files(&cluster, "app-0", "node-a", 3, 1000, 7).await;
    let pvb = create_backup(&cluster, &pod, "data", &repository).await;
    snapshot_of(&cluster.wait_finished(&pvb.name_any()).await);

    let restore = fixtures::restore("restore-2")
        .backup("nightly")
        .create(&cluster)
        .await;
    let (new_pod, new_dirs) = pod_held_for_restore(&cluster).await;
    let pvr = create_restore_request(
        &cluster,
        &restore,
        &new_pod,
        "data",
        "deadbeef",
        &repository,
    )
    .await;
    let done = cluster
        .wait_for(
            &cluster.api::<PodVolumeRestore>(),
            &pvr.name_any(),
            "Failed",
            |pvr| pvr.phase() == PodVolumePhase::Failed,
        )
        .await;
    let message = done.status.unwrap().message.unwrap_or_default();
    assert!(
        message.contains("snapshot deadbeef was not found"),
        "{message}"
    );
    assert!(!new_dirs[0].join(".velero").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_records_a_running_transfer_for_retry_and_deletion_cancels_one() {
    let (mut cluster, repository) = cluster().await;
    cluster.add_node("node-a").await;
    let pod = pod_with_files(&cluster, "app-0", "node-a", 300, 512 * 1024, 8).await;
    let api = cluster.api::<PodVolumeBackup>();
    let running = |pvb: &PodVolumeBackup| {
        pvb.status
            .as_ref()
            .and_then(|status| status.progress.as_ref())
            .is_some_and(|progress| progress.bytes_done > 0)
    };

    // SIGTERM mid-transfer: the agent stops the child and leaves the transfer InProgress with
    // a message; the next agent finishes it as attempt 2.
    cluster.start_agent(Path::new(AGENT), "node-a", &["--progress-interval", "50ms"]);
    let pvb = create_backup(&cluster, &pod, "data", &repository).await;
    cluster
        .wait_for(&api, &pvb.name_any(), "transferring", running)
        .await;
    let exit = cluster.agent("node-a").terminate().await;
    assert!(exit.success(), "{exit:?}\n{}", cluster.logs());
    let interrupted = api.get(&pvb.name_any()).await.unwrap();
    let status = interrupted.status.clone().unwrap();
    assert_eq!(status.phase, PodVolumePhase::InProgress, "{status:?}");
    assert!(
        status
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("node agent stopped"),
        "{status:?}\n{}",
        cluster.logs()
    );
    cluster.start_agent(Path::new(AGENT), "node-a", &["--progress-interval", "50ms"]);
    let done = cluster
        .wait_finished::<PodVolumeBackup>(&pvb.name_any())
        .await;
    snapshot_of(&done);
    assert_eq!(done.status.unwrap().attempts, 2);

    // Deleting a PodVolumeBackup stops its transfer (new data, so it is not over at once).
    let other = pod_with_files(&cluster, "app-1", "node-a", 400, 512 * 1024, 10).await;
    let doomed = create_backup(&cluster, &other, "data", &repository).await;
    cluster
        .wait_for(&api, &doomed.name_any(), "transferring", running)
        .await;
    api.delete(&doomed.name_any(), &DeleteParams::default())
        .await
        .unwrap();
    // The deleted transfer stops, and its progress series goes with it.
    let metrics = cluster
        .agent("node-a")
        .metrics_showing(
            r#"ferry_pod_volume_operations_total{operation="backup",result="interrupted"} 1"#,
        )
        .await;
    assert!(!metrics.contains(&doomed.name_any()), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_transfer_is_stopped_retried_and_then_failed() {
    let (mut cluster, _) = cluster().await;
    cluster.add_node("node-a").await;
    // An object store that accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    create_s3_location(&cluster, "silent", &endpoint).await;
    cluster.start_agent(
        Path::new(AGENT),
        "node-a",
        &[
            "--progress-interval",
            "100ms",
            "--stall-timeout",
            "1s",
            "--max-attempts",
            "2",
            "--storage-retry-budget",
            "0s",
        ],
    );
    let pod = pod_with_files(&cluster, "app-0", "node-a", 3, 1000, 9).await;
    let repository = format!("s3:{endpoint}/b/restic/{}", cluster.scoped(WORKLOADS));
    let pvb = create_raw_backup(&cluster, data_volume_spec(&pod, "silent", repository)).await;
    let failed = cluster
        .wait_finished::<PodVolumeBackup>(&pvb.name_any())
        .await;
    let status = failed.status.unwrap();
    assert_eq!(status.phase, PodVolumePhase::Failed, "{status:?}");
    assert_eq!(status.attempts, 2);
    assert!(
        status
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("interrupted 2 times"),
        "{status:?}"
    );
    assert!(cluster.logs().contains("no progress"), "{}", cluster.logs());
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_waiting_on_the_object_store_says_so_and_is_not_stalled() {
    let (mut cluster, _) = cluster().await;
    cluster.add_node("node-a").await;
    let bucket = ferry_tests::s3::new_bucket(&ferry_tests::s3::endpoint());
    let front = ferry_tests::fault::FaultyFront::for_test_s3();
    let repository = format!(
        "s3:{}/{bucket}/restic/{}",
        front.endpoint(),
        cluster.scoped(WORKLOADS)
    );
    let mut location = RepositoryLocation::parse(&repository).unwrap();
    if let RepositoryLocation::S3(s3) = &mut location {
        s3.access_key_id = Some(ferry_tests::s3::ACCESS_KEY_ID.to_owned());
        s3.secret_access_key = Some(ferry_tests::s3::SECRET_ACCESS_KEY.to_owned());
    }
    let config = RepositoryConfig {
        location,
        password: PASSWORD.to_owned(),
        cache_dir: None,
        retry_budget: std::time::Duration::ZERO,
    };
    // The engine blocks, and reaches S3 on a runtime of its own.
    tokio::task::spawn_blocking(move || {
        Repository::open(&config, OpenMode::CreateIfMissing, ProgressCounters::new()).map(drop)
    })
    .await
    .unwrap()
    .unwrap();
    cluster
        .create_s3_secret(
            "flaky-keys",
            ferry_tests::s3::ACCESS_KEY_ID,
            ferry_tests::s3::SECRET_ACCESS_KEY,
        )
        .await;
    fixtures::s3_location("flaky", &front.endpoint(), &bucket)
        .credential("flaky-keys")
        .create(&cluster)
        .await;
    // The stall timeout is shorter than the outage: a transfer waiting on the store within its
    // retry budget is not standing still.
    let flags = ["--progress-interval", "100ms", "--stall-timeout", "4s"];
    cluster.start_agent(Path::new(AGENT), "node-a", &flags);
    let pod = pod_with_files(&cluster, "app-0", "node-a", 20, 256 * 1024, 12).await;
    front.outage(std::time::Duration::from_secs(10));
    let pvb = create_raw_backup(&cluster, data_volume_spec(&pod, "flaky", repository)).await;

    let api = cluster.api::<PodVolumeBackup>();
    let waiting = cluster
        .wait_for(
            &api,
            &pvb.name_any(),
            "waiting for the object store",
            |pvb| {
                pvb.status.as_ref().is_some_and(|status| {
                    status.phase == PodVolumePhase::InProgress
                        && status.message.as_deref().is_some_and(|message| {
                            message.starts_with("waiting for the object store: ")
                        })
                })
            },
        )
        .await;
    assert!(
        waiting.status.unwrap().message.unwrap().contains("(retry "),
        "the wait names its retry"
    );
    let done = cluster
        .wait_finished::<PodVolumeBackup>(&pvb.name_any())
        .await;
    snapshot_of(&done);
    let status = done.status.unwrap();
    assert_eq!(status.attempts, 1, "{status:?}");
    assert_eq!(status.message, None, "{status:?}");
    let metrics = cluster.agent("node-a").metrics_text();
    assert!(
        metrics.contains("ferry_storage_retries_total{operation="),
        "{metrics}"
    );
    assert_promtool_accepts(&metrics);
}
