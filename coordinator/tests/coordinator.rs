//! `ferry-coordinator run` and `ferry-node-agent run` together against the Kubernetes test
//! server, the harness playing the kubelet: backups choose the right volumes, write the storage
//! layout and chain their snapshots; a fresh cluster syncs a bucket and restores from it;
//! expired backups are deleted with their data; bad input fails validation and leaves nothing.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_shared::crd::{
    Backup, BackupRepository, BackupStorageLocation, OperationPhase, PodVolumeBackup,
    PodVolumePhase, Restore, Schedule, SchedulePhase, StorageLocationPhase,
};
use ferry_shared::names::{self, annotation, label};
use ferry_tests::harness::{Cluster, INSTALL_NAMESPACE, VolumeKind};
use ferry_tests::restic::{restic, succeed};
use ferry_tests::s3;
use ferry_tests::tree::{assert_same_tree, make_rich_tree};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

const COORDINATOR_BIN: &str = env!("CARGO_BIN_EXE_ferry-coordinator");
const PASSWORD: &str = "coordinator-test-password";
const NODE: &str = "node-a";

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

async fn create<K>(cluster: &Cluster, object: serde_json::Value) -> K
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let object: K = serde_json::from_value(object).expect("object");
    cluster
        .api::<K>()
        .create(&PostParams::default(), &object)
        .await
        .expect("create")
}

async fn create_backup(cluster: &Cluster, name: &str, spec: serde_json::Value) -> Backup {
    create(
        cluster,
        json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "Backup",
               "metadata": {"name": name, "namespace": INSTALL_NAMESPACE}, "spec": spec}),
    )
    .await
}

async fn create_restore(cluster: &Cluster, name: &str, spec: serde_json::Value) -> Restore {
    create(
        cluster,
        json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "Restore",
               "metadata": {"name": name, "namespace": INSTALL_NAMESPACE}, "spec": spec}),
    )
    .await
}

fn phase_is(phase: OperationPhase) -> impl Fn(&Backup) -> bool {
    move |backup| backup.phase() == phase
}

fn final_phase(phase: OperationPhase) -> bool {
    !matches!(phase, OperationPhase::New | OperationPhase::InProgress)
}

async fn finished_backup(cluster: &Cluster, name: &str) -> Backup {
    cluster
        .wait_for(
            &cluster.api::<Backup>(),
            name,
            "finished",
            |backup: &Backup| final_phase(backup.phase()),
        )
        .await
}

async fn finished_restore(cluster: &Cluster, name: &str) -> Restore {
    cluster
        .wait_for(
            &cluster.api::<Restore>(),
            name,
            "finished",
            |restore: &Restore| final_phase(restore.phase()),
        )
        .await
}

async fn pvbs_of(cluster: &Cluster, backup: &str) -> Vec<PodVolumeBackup> {
    let selector = format!("{}={backup}", label::BACKUP_NAME);
    let mut pvbs = cluster
        .api::<PodVolumeBackup>()
        .list(&ListParams::default().labels(&selector))
        .await
        .expect("list PodVolumeBackups")
        .items;
    pvbs.sort_by_key(|pvb| (pvb.spec.pod.name.clone(), pvb.spec.volume.clone()));
    pvbs
}

fn volumes_of(pvbs: &[PodVolumeBackup]) -> Vec<String> {
    pvbs.iter()
        .map(|pvb| format!("{}/{}", pvb.spec.pod.name, pvb.spec.volume))
        .collect()
}

/// The coordinator's metrics once they show `line`: counters move just after the status that
/// a test waits for is written.
async fn metrics_showing(cluster: &mut Cluster, line: &str) -> String {
    let waiting = tokio::time::Instant::now();
    loop {
        let metrics = cluster.coordinator().metrics_text();
        if metrics.contains(line) {
            return metrics;
        }
        assert!(
            waiting.elapsed() < ferry_tests::harness::DEADLINE,
            "no {line} in:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

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
    cluster.create_namespace("shop").await;
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
    let mut cluster = Cluster::start().await;
    let storage = cluster.create_default_storage(PASSWORD).await;
    cluster.add_node(NODE).await;
    three_pods(&cluster).await;
    let agent = agent_program();
    cluster.start_agent(&agent, NODE, &["--progress-interval", "200ms"]);
    cluster.start_coordinator(Path::new(COORDINATOR_BIN), &[]);

    // Opt-out: every eligible volume, and the shared claim once.
    create_backup(
        &cluster,
        "all",
        json!({"includedNamespaces": ["shop"], "defaultVolumesToFsBackup": true}),
    )
    .await;
    let all = finished_backup(&cluster, "all").await;
    assert_eq!(
        all.phase(),
        OperationPhase::Completed,
        "{all:#?}\n{}",
        cluster.logs()
    );
    let pvbs = pvbs_of(&cluster, "all").await;
    assert_eq!(volumes_of(&pvbs), ["a/cache", "a/data", "b/shared"]);
    let status = all.status.clone().unwrap();
    assert_eq!(status.pod_volume_backups.as_ref().unwrap().completed, 3);
    assert!(status.progress.as_ref().unwrap().bytes_done > 0);
    assert_eq!(
        all.spec.storage_location.as_deref(),
        Some("default"),
        "the default location is recorded"
    );
    for pvb in &pvbs {
        assert_eq!(pvb.labels()[label::NODE], NODE);
        assert_eq!(pvb.owner_references()[0].name, "all");
        assert!(
            pvb.spec.repository.ends_with("/restic/shop"),
            "{}",
            pvb.spec.repository
        );
        assert_eq!(pvb.spec.parent_snapshot_id, None);
    }
    let claim_pvb = pvbs.iter().find(|pvb| pvb.spec.volume == "data").unwrap();
    assert!(claim_pvb.spec.tags.contains_key(names::tag::PVC_UID));
    assert_eq!(claim_pvb.annotations()[annotation::PVC_NAME], "data-a");

    // The layout: manifests, the PodVolumeBackup list, the log, and the backup itself.
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
    let mut paths: Vec<&str> = manifests.iter().map(|(path, _)| path.as_str()).collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        [
            "resources/persistentvolumeclaims/namespaces/shop/data-a.json",
            "resources/persistentvolumeclaims/namespaces/shop/shared.json",
            "resources/pods/namespaces/shop/a.json",
            "resources/pods/namespaces/shop/b.json",
            "resources/pods/namespaces/shop/c.json",
        ]
    );
    let stored: Backup =
        serde_json::from_slice(&fs::read(dir.join("ferry-backup.json")).unwrap()).unwrap();
    assert_eq!(stored.phase(), OperationPhase::Completed);
    let repository = storage.join("restic/shop");
    let password_file = cluster.path("password");
    fs::write(&password_file, PASSWORD).unwrap();
    let snapshots =
        succeed(restic(repository.to_str().unwrap(), &password_file).args(["snapshots", "--json"]));
    let snapshots: Vec<serde_json::Value> = serde_json::from_slice(&snapshots.stdout).unwrap();
    assert_eq!(snapshots.len(), 3, "restic lists the three snapshots");

    // Opt-in: only the annotated volumes; a name the pod lacks is skipped with its reason.
    let pods = Api::<Pod>::namespaced(cluster.client(), "shop");
    let a = pods.get("a").await.unwrap();
    annotate(&cluster, &a, annotation::BACKUP_VOLUMES, "cache,nope").await;
    create_backup(&cluster, "picked", json!({"includedNamespaces": ["shop"]})).await;
    let picked = finished_backup(&cluster, "picked").await;
    assert_eq!(picked.phase(), OperationPhase::Completed, "{picked:#?}");
    assert_eq!(volumes_of(&pvbs_of(&cluster, "picked").await), ["a/cache"]);
    assert_eq!(
        picked.status.unwrap().warnings,
        ["volume nope of pod shop/a skipped: the pod has no volume of that name"]
    );
    // The opt-in backup took a's cache again, with the first backup's snapshot as parent.
    let cache_parent = pvbs_of(&cluster, "picked").await[0]
        .spec
        .parent_snapshot_id
        .clone();
    let first_cache = pvbs.iter().find(|pvb| pvb.spec.volume == "cache").unwrap();
    assert_eq!(
        cache_parent,
        first_cache.status.as_ref().unwrap().snapshot_id
    );

    // A second opt-out backup of unchanged data: each volume's parent is its newest earlier
    // snapshot (for a's cache, the opt-in backup's), and the repository gains no data.
    let mut newest: BTreeMap<String, Option<String>> = pvbs
        .iter()
        .chain(&pvbs_of(&cluster, "picked").await)
        .map(|pvb| {
            (
                format!("{}/{}", pvb.spec.pod.name, pvb.spec.volume),
                pvb.status.as_ref().unwrap().snapshot_id.clone(),
            )
        })
        .collect();
    let data_before = files_under(&repository.join("data"));
    create_backup(
        &cluster,
        "again",
        json!({"includedNamespaces": ["shop"], "defaultVolumesToFsBackup": true}),
    )
    .await;
    let again = finished_backup(&cluster, "again").await;
    assert_eq!(again.phase(), OperationPhase::Completed);
    for pvb in pvbs_of(&cluster, "again").await {
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

    // The coordinator is ready and its metrics are valid Prometheus text.
    let metrics = metrics_showing(&mut cluster, "ferry_backup_total{phase=\"Completed\"} 3").await;
    assert_eq!(
        cluster.coordinator().admin("/readyz").as_deref(),
        Some("ok")
    );
    assert!(
        metrics.contains("ferry_backup_last_successful_timestamp_seconds{schedule=\"\"}"),
        "{metrics}"
    );
    let checked = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(metrics.as_bytes())?;
            child.wait_with_output()
        })
        .expect("run promtool");
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
}

async fn s3_location(cluster: &Cluster, endpoint: &str, bucket: &str) {
    cluster
        .create_secret(
            "s3-keys",
            "cloud",
            &format!(
                "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
                s3::ACCESS_KEY_ID,
                s3::SECRET_ACCESS_KEY
            ),
        )
        .await;
    cluster
        .create_location(
            "default",
            json!({"provider": "s3", "bucket": bucket, "prefix": "cluster", "default": true,
                   "config": {"s3Url": endpoint, "region": "us-east-1"},
                   "credential": {"name": "s3-keys", "key": "cloud"},
                   "syncPeriod": "1s"}),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fresh_cluster_syncs_the_bucket_and_restores_into_a_mapped_namespace() {
    let endpoint = s3::endpoint();
    let bucket = s3::new_bucket(&endpoint);
    let reference = tempfile::tempdir().unwrap();

    // The first cluster backs up and then is lost.
    {
        let mut cluster = Cluster::start().await;
        cluster.create_repository_password(PASSWORD).await;
        s3_location(&cluster, &endpoint, &bucket).await;
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
        make_rich_tree(&reference.path().join("cache"), 1);
        make_rich_tree(&reference.path().join("data"), 2);
        cluster.start_agent(&agent_program(), NODE, &["--progress-interval", "200ms"]);
        cluster.start_coordinator(Path::new(COORDINATOR_BIN), &[]);
        create_backup(
            &cluster,
            "before-the-fire",
            json!({"defaultVolumesToFsBackup": true, "includedNamespaces": ["shop"]}),
        )
        .await;
        let backup = finished_backup(&cluster, "before-the-fire").await;
        assert_eq!(
            backup.phase(),
            OperationPhase::Completed,
            "{backup:#?}\n{}",
            cluster.logs()
        );
    }

    // A new cluster with the same password and bucket finds the backup and its volumes.
    let mut cluster = Cluster::start().await;
    cluster.create_repository_password(PASSWORD).await;
    s3_location(&cluster, &endpoint, &bucket).await;
    cluster.add_node("node-b").await;
    cluster.start_agent(
        &agent_program(),
        "node-b",
        &["--progress-interval", "200ms"],
    );
    cluster.start_coordinator(Path::new(COORDINATOR_BIN), &[]);
    let synced = cluster
        .wait_for(
            &cluster.api::<Backup>(),
            "before-the-fire",
            "synced as Completed",
            phase_is(OperationPhase::Completed),
        )
        .await;
    assert_eq!(synced.annotations()[annotation::SYNCED_FROM], "default");
    let pvbs = pvbs_of(&cluster, "before-the-fire").await;
    assert_eq!(volumes_of(&pvbs), ["db-0/cache", "db-0/data"]);
    assert!(
        pvbs.iter()
            .all(|pvb| pvb.phase() == PodVolumePhase::Completed
                && !pvb.labels().contains_key(label::NODE))
    );

    create_restore(
        &cluster,
        "after-the-fire",
        json!({"backupName": "before-the-fire", "namespaceMapping": {"shop": "shop-restored"}}),
    )
    .await;
    let pods = Api::<Pod>::namespaced(cluster.client(), "shop-restored");
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
    let restore = finished_restore(&cluster, "after-the-fire").await;
    assert_eq!(
        restore.phase(),
        OperationPhase::Completed,
        "{restore:#?}\n{}",
        cluster.logs()
    );
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
        assert_same_tree(&reference.path().join(volume), dir);
    }

    // The restore's results and log are in the bucket, and the metrics count it.
    let store = ferry_shared::layout::ObjectStore::open(
        &ferry_shared::repository::RepositoryLocation::S3(ferry_shared::repository::S3Location {
            endpoint: Some(endpoint.clone()),
            bucket: bucket.clone(),
            prefix: "cluster".into(),
            access_key_id: Some(s3::ACCESS_KEY_ID.into()),
            secret_access_key: Some(s3::SECRET_ACCESS_KEY.into()),
            ..Default::default()
        }),
        ferry_shared::retry::Retrier::unobserved(std::time::Duration::ZERO),
    )
    .unwrap();
    let results = store
        .get(&ferry_shared::layout::key::restore_results(
            "after-the-fire",
        ))
        .await
        .unwrap()
        .expect("restore results in the bucket");
    let results = String::from_utf8(ferry_shared::layout::gunzip(&results).unwrap()).unwrap();
    assert!(results.contains("pods/shop-restored/db-0"), "{results}");
    let log = store
        .get(&ferry_shared::layout::key::restore_logs("after-the-fire"))
        .await
        .unwrap()
        .expect("restore log in the bucket");
    let log = String::from_utf8(ferry_shared::layout::gunzip(&log).unwrap()).unwrap();
    assert!(
        log.contains("restore after-the-fire ended Completed"),
        "{log}"
    );
    metrics_showing(&mut cluster, "ferry_restore_total{phase=\"Completed\"} 1").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_backup_is_deleted_with_its_snapshots_and_the_repository_stays_sound() {
    let mut cluster = Cluster::start().await;
    let storage = cluster.create_default_storage(PASSWORD).await;
    cluster.add_node(NODE).await;
    cluster.create_namespace("shop").await;
    let (_, dirs) = cluster
        .create_pod("shop", "web", NODE, vec![("data", VolumeKind::EmptyDir)])
        .await;
    make_rich_tree(&dirs[0], 7);
    cluster.start_agent(&agent_program(), NODE, &[]);
    cluster.start_coordinator(
        Path::new(COORDINATOR_BIN),
        &["--maintenance-frequency", "2s"],
    );
    create_backup(
        &cluster,
        "short",
        json!({"defaultVolumesToFsBackup": true, "includedNamespaces": ["shop"], "ttl": "3s"}),
    )
    .await;
    let backups = cluster.api::<Backup>();
    let started = tokio::time::Instant::now();
    while backups.get_opt("short").await.unwrap().is_some() {
        assert!(
            started.elapsed() < ferry_tests::harness::DEADLINE,
            "the backup never expired\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        pvbs_of(&cluster, "short").await.is_empty(),
        "no orphan PodVolumeBackups"
    );
    assert!(
        !storage.join("backups/short").exists(),
        "the backup's objects are removed"
    );
    let repository = storage.join("restic/shop");
    let password_file = cluster.path("password");
    fs::write(&password_file, PASSWORD).unwrap();
    let listed =
        succeed(restic(repository.to_str().unwrap(), &password_file).args(["snapshots", "--json"]));
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout).trim(),
        "[]",
        "the snapshots are forgotten"
    );
    // Maintenance prunes after the deletion, and restic finds the repository sound.
    let deleted = k8s_openapi::jiff::Timestamp::now();
    let repositories = cluster.api::<BackupRepository>();
    let name = repositories
        .list(&ListParams::default())
        .await
        .unwrap()
        .items[0]
        .name_any();
    cluster
        .wait_for(
            &repositories,
            &name,
            "maintained after the deletion",
            |repo: &BackupRepository| {
                repo.status
                    .as_ref()
                    .and_then(|status| status.last_maintenance_time.as_ref())
                    .is_some_and(|time| time.0 > deleted)
            },
        )
        .await;
    succeed(restic(repository.to_str().unwrap(), &password_file).args(["check", "--read-data"]));
    metrics_showing(
        &mut cluster,
        "ferry_repository_maintenance_total{result=\"success\"}",
    )
    .await;
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

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_fails_validation_clearly_and_leaves_nothing_behind() {
    let mut cluster = Cluster::start().await;
    let storage = cluster.create_default_storage(PASSWORD).await;
    // What is left of an earlier backup named `taken`.
    let leftover = storage.join("backups/taken/taken-resources.tar.gz");
    fs::create_dir_all(leftover.parent().unwrap()).unwrap();
    fs::write(&leftover, b"old").unwrap();
    // A directory that holds something other than Ferry's layout.
    let shared = cluster.path("shared");
    fs::create_dir_all(shared.join("photos")).unwrap();
    fs::write(shared.join("photos/cat.jpg"), b"meow").unwrap();
    cluster
        .create_location("crowded", json!({"provider": "filesystem", "path": shared}))
        .await;
    cluster.add_node(NODE).await;
    cluster.create_namespace("shop").await;
    cluster
        .create_pod("shop", "web", NODE, vec![("data", VolumeKind::EmptyDir)])
        .await;
    cluster
        .create_location("archive", json!({"provider": "filesystem", "path": cluster.path("archive"), "accessMode": "ReadOnly"}))
        .await;
    cluster
        .create_secret(
            "keys",
            "cloud",
            "[default]\naws_access_key_id = a\naws_secret_access_key = b\n",
        )
        .await;
    cluster
        .create_location(
            "nowhere",
            json!({"provider": "s3", "bucket": "b", "config": {"s3Url": "http://127.0.0.1:9"},
                                            "credential": {"name": "keys", "key": "cloud"}}),
        )
        .await;
    cluster.start_coordinator(
        Path::new(COORDINATOR_BIN),
        &["--storage-retry-budget", "0s"],
    );

    let backup_cases = [
        (
            "to-missing",
            json!({"storageLocation": "missing"}),
            "storage location missing does not exist",
        ),
        (
            "to-archive",
            json!({"storageLocation": "archive"}),
            "storage location archive is ReadOnly",
        ),
        (
            "to-nowhere",
            json!({"storageLocation": "nowhere"}),
            "storage location nowhere is unreachable",
        ),
        (
            "bad-ttl",
            json!({"ttl": "forever"}),
            "ttl \"forever\" is not a duration",
        ),
    ];
    for (name, spec, _) in &backup_cases {
        create_backup(&cluster, name, spec.clone()).await;
    }
    create_backup(&cluster, "taken", json!({})).await;
    let taken = finished_backup(&cluster, "taken")
        .await
        .status
        .unwrap_or_default();
    assert_failed_validation(
        "taken",
        taken.phase,
        &taken.validation_errors,
        "a backup named taken already exists in storage location default",
    );
    assert_eq!(
        fs::read(&leftover).unwrap(),
        b"old",
        "the earlier backup's objects stay"
    );
    for (name, _, expected) in backup_cases {
        let backup = finished_backup(&cluster, name).await;
        let status = backup.status.unwrap_or_default();
        assert_failed_validation(name, status.phase, &status.validation_errors, expected);
        assert!(pvbs_of(&cluster, name).await.is_empty());
        assert!(!storage.join("backups").join(name).exists());
    }

    let restore_cases = [
        (
            "both",
            json!({"backupName": "a", "scheduleName": "b"}),
            "not both",
        ),
        ("neither", json!({}), "give backupName or scheduleName"),
        (
            "ghost",
            json!({"backupName": "ghost"}),
            "backup ghost does not exist",
        ),
        (
            "failed",
            json!({"backupName": "to-missing"}),
            "backup to-missing is FailedValidation",
        ),
    ];
    for (name, spec, _) in &restore_cases {
        create_restore(&cluster, name, spec.clone()).await;
    }
    for (name, _, expected) in restore_cases {
        let restore = finished_restore(&cluster, name).await;
        let status = restore.status.unwrap_or_default();
        assert_failed_validation(name, status.phase, &status.validation_errors, expected);
    }
    assert!(
        Api::<Pod>::namespaced(cluster.client(), "shop")
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len()
            == 1
    );

    create::<Schedule>(
        &cluster,
        json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "Schedule",
               "metadata": {"name": "sometimes", "namespace": INSTALL_NAMESPACE},
               "spec": {"schedule": "every day at 3", "template": {}}}),
    )
    .await;
    let schedule = cluster
        .wait_for(
            &cluster.api::<Schedule>(),
            "sometimes",
            "FailedValidation",
            |s: &Schedule| s.phase() == SchedulePhase::FailedValidation,
        )
        .await;
    let errors = schedule.status.unwrap().validation_errors.join("; ");
    assert!(errors.contains("give five"), "{errors}");

    // The unreachable location is reported Unavailable with the cause.
    let nowhere = cluster
        .wait_for(
            &cluster.api::<BackupStorageLocation>(),
            "nowhere",
            "Unavailable",
            |l: &BackupStorageLocation| {
                l.status.as_ref().and_then(|s| s.phase) == Some(StorageLocationPhase::Unavailable)
            },
        )
        .await;
    assert!(nowhere.status.unwrap().message.is_some());
    let phase_of = |phase: StorageLocationPhase| {
        move |l: &BackupStorageLocation| l.status.as_ref().and_then(|s| s.phase) == Some(phase)
    };
    let locations = cluster.api::<BackupStorageLocation>();
    let crowded = cluster
        .wait_for(
            &locations,
            "crowded",
            "Unavailable",
            phase_of(StorageLocationPhase::Unavailable),
        )
        .await;
    let message = crowded.status.unwrap().message.unwrap();
    assert!(
        message.contains("photos") && message.contains("not Ferry's layout"),
        "{message}"
    );
    cluster
        .wait_for(
            &locations,
            "default",
            "Available",
            phase_of(StorageLocationPhase::Available),
        )
        .await;
    create_backup(
        &cluster,
        "to-crowded",
        json!({"storageLocation": "crowded"}),
    )
    .await;
    let refused = finished_backup(&cluster, "to-crowded").await;
    let status = refused.status.unwrap_or_default();
    assert_failed_validation(
        "to-crowded",
        status.phase,
        &status.validation_errors,
        "not Ferry's layout",
    );
    assert!(shared.join("photos/cat.jpg").is_file() && !shared.join("backups").exists());
    assert!(cluster.coordinator().log().contains("coordinator started"));
}

/// The pods of `namespace` that a restore made.
async fn restored_pods(cluster: &Cluster, namespace: &str) -> Vec<String> {
    Api::<Pod>::namespaced(cluster.client(), namespace)
        .list(&ListParams::default().labels(label::RESTORE_NAME))
        .await
        .expect("list pods")
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn restores_into_protected_namespaces_fail_validation_and_create_nothing() {
    let mut cluster = Cluster::start().await;
    cluster.create_default_storage(PASSWORD).await;
    cluster.add_node(NODE).await;
    cluster.create_namespace("shop").await;
    // Pods without volumes to back up: the backups complete with their manifests alone.
    for namespace in ["shop", "kube-system"] {
        cluster
            .create_pod(namespace, "web", NODE, vec![("data", VolumeKind::EmptyDir)])
            .await;
    }
    cluster.start_coordinator(
        Path::new(COORDINATOR_BIN),
        &["--storage-retry-budget", "0s"],
    );
    for (name, spec) in [
        ("shop-only", json!({"includedNamespaces": ["shop"]})),
        ("everything", json!({})),
    ] {
        create_backup(&cluster, name, spec).await;
        let backup = finished_backup(&cluster, name).await;
        assert_eq!(
            backup.phase(),
            OperationPhase::Completed,
            "{backup:#?}\n{}",
            cluster.logs()
        );
    }
    // The source pod is gone, so anything in kube-system afterwards was made by a restore.
    cluster
        .delete_pod(
            &Api::<Pod>::namespaced(cluster.client(), "kube-system")
                .get("web")
                .await
                .unwrap(),
        )
        .await;

    let cases = [
        (
            "mapped-to-kube-system",
            json!({"backupName": "shop-only", "namespaceMapping": {"shop": "kube-system"}}),
            "kube-system (namespaceMapping from shop)",
        ),
        (
            "mapped-to-install",
            json!({"backupName": "everything", "namespaceMapping": {"shop": INSTALL_NAMESPACE}}),
            "namespace ferry (namespaceMapping from shop)",
        ),
        (
            "included",
            json!({"backupName": "everything", "includedNamespaces": ["kube-system"]}),
            "namespace kube-system:",
        ),
        // Neither the Restore nor the Backup names namespaces: found in the manifests.
        (
            "whole-backup",
            json!({"backupName": "everything"}),
            "namespace kube-system:",
        ),
    ];
    for (name, spec, _) in &cases {
        create_restore(&cluster, name, spec.clone()).await;
    }
    for (name, _, expected) in cases {
        let restore = finished_restore(&cluster, name).await;
        let status = restore.status.unwrap_or_default();
        assert_failed_validation(name, status.phase, &status.validation_errors, expected);
        assert_failed_validation(
            name,
            status.phase,
            &status.validation_errors,
            "--restore-namespace-denylist",
        );
    }
    for namespace in ["kube-system", INSTALL_NAMESPACE, "shop"] {
        assert!(
            restored_pods(&cluster, namespace).await.is_empty(),
            "{namespace}"
        );
    }
    assert!(
        Api::<Pod>::namespaced(cluster.client(), "kube-system")
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );

    // The same restore goes through once the shop namespace is all it writes to.
    create_restore(
        &cluster,
        "shop-again",
        json!({"backupName": "everything", "includedNamespaces": ["shop"],
               "namespaceMapping": {"shop": "shop-2"}}),
    )
    .await;
    let restore = finished_restore(&cluster, "shop-again").await;
    assert_eq!(
        restore.phase(),
        OperationPhase::Completed,
        "{restore:#?}\n{}",
        cluster.logs()
    );
    assert_eq!(restored_pods(&cluster, "shop-2").await, ["web"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_schedule_makes_backups_from_its_template_and_a_restore_can_name_it() {
    let mut cluster = Cluster::start().await;
    cluster.create_default_storage(PASSWORD).await;
    cluster.add_node(NODE).await;
    cluster.create_namespace("shop").await;
    let (_, dirs) = cluster
        .create_pod("shop", "web", NODE, vec![("data", VolumeKind::EmptyDir)])
        .await;
    make_rich_tree(&dirs[0], 3);
    cluster.start_agent(&agent_program(), NODE, &[]);
    cluster.start_coordinator(Path::new(COORDINATOR_BIN), &[]);
    create::<Schedule>(
        &cluster,
        json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "Schedule",
               "metadata": {"name": "nightly", "namespace": INSTALL_NAMESPACE},
               "spec": {"schedule": "0 0 * * *", "template": {"includedNamespaces": ["shop"], "defaultVolumesToFsBackup": true}}}),
    )
    .await;
    let schedule = cluster
        .wait_for(
            &cluster.api::<Schedule>(),
            "nightly",
            "to make a backup",
            |s: &Schedule| {
                s.status
                    .as_ref()
                    .is_some_and(|status| status.last_backup.is_some())
            },
        )
        .await;
    assert_eq!(schedule.phase(), SchedulePhase::Enabled);
    // A new schedule backs up at once, for its latest due time; the next is a day away.
    let made = cluster
        .api::<Backup>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert_eq!(made.len(), 1);
    let name = made[0].name_any();
    assert!(
        name.starts_with("nightly-") && name.len() == "nightly-".len() + 14,
        "{name}"
    );
    assert_eq!(made[0].labels()[label::SCHEDULE_NAME], "nightly");
    let backup = finished_backup(&cluster, &name).await;
    assert_eq!(backup.phase(), OperationPhase::Completed);
    cluster
        .api::<Schedule>()
        .patch(
            "nightly",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": true}})),
        )
        .await
        .unwrap();

    create_restore(
        &cluster,
        "latest",
        json!({"scheduleName": "nightly", "namespaceMapping": {"shop": "shop-2"}}),
    )
    .await;
    cluster
        .wait_for(
            &Api::<Pod>::namespaced(cluster.client(), "shop-2"),
            "web",
            "restored",
            |_: &Pod| true,
        )
        .await;
    let restore = cluster.api::<Restore>().get("latest").await.unwrap();
    assert_eq!(
        restore.status.unwrap().backup_name.as_deref(),
        Some(name.as_str())
    );
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

#[tokio::test(flavor = "multi_thread")]
async fn failed_and_timed_out_volumes_make_a_backup_partially_failed() {
    let mut cluster = Cluster::start().await;
    let storage = cluster.create_default_storage(PASSWORD).await;
    cluster.add_node(NODE).await;
    cluster.create_namespace("shop").await;
    for pod in ["a", "b", "c"] {
        cluster
            .create_pod("shop", pod, NODE, vec![("data", VolumeKind::EmptyDir)])
            .await;
    }
    // No node agent: the test writes the transfers' status itself.
    cluster.start_coordinator(Path::new(COORDINATOR_BIN), &[]);
    create_backup(
        &cluster,
        "mixed",
        json!({"includedNamespaces": ["shop"], "defaultVolumesToFsBackup": true, "volumeTimeout": "1h"}),
    )
    .await;
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
    let pvbs = pvbs_of(&cluster, "mixed").await;
    let two_hours_ago =
        k8s_openapi::jiff::Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_hours(2);
    set_pvb_status(
        &cluster,
        &pvbs[0],
        json!({"phase": "Failed", "message": "disk read error"}),
    )
    .await;
    set_pvb_status(
        &cluster,
        &pvbs[1],
        json!({"phase": "InProgress", "startTimestamp": two_hours_ago.to_string()}),
    )
    .await;
    set_pvb_status(
        &cluster,
        &pvbs[2],
        json!({"phase": "Completed", "snapshotID": "0123abcd"}),
    )
    .await;

    let backup = finished_backup(&cluster, "mixed").await;
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
    assert_eq!(status.timed_out_volumes, ["shop/b/data"]);
    let errors = status.errors.join("; ");
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
        volumes_of(&pvbs_of(&cluster, "mixed").await),
        ["a/data", "c/data"]
    );
    let stored: Backup =
        serde_json::from_slice(&fs::read(storage.join("backups/mixed/ferry-backup.json")).unwrap())
            .unwrap();
    assert_eq!(stored.phase(), OperationPhase::PartiallyFailed);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restore_leaves_existing_objects_alone_unless_told_to_update_them() {
    let mut cluster = Cluster::start().await;
    cluster.create_default_storage(PASSWORD).await;
    cluster.add_node(NODE).await;
    cluster.create_namespace("shop").await;
    cluster.create_bound_claim("shop", "data", "pv-data").await;
    let claim = VolumeKind::CsiClaim {
        claim: "data".into(),
        volume: "pv-data".into(),
    };
    cluster
        .create_pod("shop", "web", NODE, vec![("data", claim)])
        .await;
    cluster.start_coordinator(Path::new(COORDINATOR_BIN), &[]);
    create_backup(
        &cluster,
        "b1",
        json!({"includedNamespaces": ["shop"], "defaultVolumesToFsBackup": true}),
    )
    .await;
    cluster
        .wait_for(
            &cluster.api::<Backup>(),
            "b1",
            "to create its transfer",
            |b: &Backup| {
                b.status
                    .as_ref()
                    .and_then(|s| s.pod_volume_backups.as_ref())
                    .is_some()
            },
        )
        .await;
    let pvb = pvbs_of(&cluster, "b1").await.remove(0);
    set_pvb_status(
        &cluster,
        &pvb,
        json!({"phase": "Completed", "snapshotID": "0123abcd"}),
    )
    .await;
    assert_eq!(
        finished_backup(&cluster, "b1").await.phase(),
        OperationPhase::Completed
    );

    // The pod and claim still exist: the default policy keeps them and restores no data.
    create_restore(&cluster, "keep", json!({"backupName": "b1"})).await;
    let kept = finished_restore(&cluster, "keep").await;
    assert_eq!(kept.phase(), OperationPhase::Completed, "{kept:#?}");
    let warnings = kept.status.unwrap().warnings;
    assert_eq!(
        warnings,
        [
            "persistentvolumeclaims/shop/data already exists; left alone",
            "pods/shop/web already exists; left alone"
        ]
    );
    let pod = Api::<Pod>::namespaced(cluster.client(), "shop")
        .get("web")
        .await
        .unwrap();
    assert!(!pod.labels().contains_key(label::RESTORE_NAME));

    // `update` brings back the backed-up labels and annotations, and marks the objects.
    create_restore(
        &cluster,
        "refresh",
        json!({"backupName": "b1", "existingResourcePolicy": "update"}),
    )
    .await;
    let refreshed = finished_restore(&cluster, "refresh").await;
    assert_eq!(
        refreshed.phase(),
        OperationPhase::Completed,
        "{refreshed:#?}"
    );
    let pod = Api::<Pod>::namespaced(cluster.client(), "shop")
        .get("web")
        .await
        .unwrap();
    assert_eq!(pod.labels()[label::RESTORE_NAME], "refresh");
    assert_eq!(
        pod.spec.unwrap().node_name.as_deref(),
        Some(NODE),
        "the running pod is untouched"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_leader_runs_controllers_and_a_successor_takes_over() {
    let mut cluster = Cluster::start().await;
    let lease_args = |identity: &'static str| {
        [
            "--leader-elect",
            "--lease-duration",
            "3s",
            "--identity",
            identity,
        ]
    };
    let first = cluster
        .start_coordinator(Path::new(COORDINATOR_BIN), &lease_args("first"))
        .pid();
    let leases = cluster.api::<k8s_openapi::api::coordination::v1::Lease>();
    let holder = |name: &'static str| {
        move |lease: &k8s_openapi::api::coordination::v1::Lease| {
            lease
                .spec
                .as_ref()
                .and_then(|spec| spec.holder_identity.as_deref())
                == Some(name)
        }
    };
    cluster
        .wait_for(
            &leases,
            "ferry-coordinator",
            "held by first",
            holder("first"),
        )
        .await;
    cluster.start_coordinator(Path::new(COORDINATOR_BIN), &lease_args("second"));
    let waiting = tokio::time::Instant::now();
    while !cluster
        .coordinator()
        .log()
        .contains("waiting for the leader Lease")
    {
        assert!(
            waiting.elapsed() < ferry_tests::harness::DEADLINE,
            "{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The standby runs no controllers until it leads.
    assert!(!cluster.coordinator().log().contains("coordinator started"));

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    cluster
        .wait_for(
            &leases,
            "ferry-coordinator",
            "held by second",
            holder("second"),
        )
        .await;
    create_backup(
        &cluster,
        "after-handover",
        json!({"storageLocation": "missing"}),
    )
    .await;
    let backup = finished_backup(&cluster, "after-handover").await;
    assert_eq!(
        backup.phase(),
        OperationPhase::FailedValidation,
        "the new leader's controllers run"
    );
    assert!(cluster.coordinator().log().contains("became the leader"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_password_secret_stops_the_coordinator_instead_of_making_a_new_one() {
    let mut cluster = Cluster::start().await;
    create::<BackupRepository>(
        &cluster,
        json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "BackupRepository",
               "metadata": {"name": "shop-default-abc123", "namespace": INSTALL_NAMESPACE},
               "spec": {"volumeNamespace": "shop", "storageLocation": "default"}}),
    )
    .await;
    let coordinator = cluster.start_coordinator(Path::new(COORDINATOR_BIN), &[]);
    let status = coordinator.exited().await;
    assert!(!status.success());
    let log = coordinator.log();
    assert!(
        log.contains("ferry-repo-credentials is missing, but repositories exist"),
        "{log}"
    );
    let secrets = cluster.api::<k8s_openapi::api::core::v1::Secret>();
    assert!(
        secrets
            .get_opt(names::REPOSITORY_SECRET)
            .await
            .unwrap()
            .is_none(),
        "no new password"
    );

    // On a fresh install the coordinator makes one, once.
    let mut fresh = Cluster::start().await;
    fresh.start_coordinator(Path::new(COORDINATOR_BIN), &[]);
    let secrets = fresh.api::<k8s_openapi::api::core::v1::Secret>();
    let made = fresh
        .wait_for(&secrets, names::REPOSITORY_SECRET, "generated", |_| true)
        .await;
    let password = &made.data.unwrap()[names::REPOSITORY_PASSWORD_KEY].0;
    assert_eq!(password.len(), 64, "32 random bytes, hex-encoded");
    assert!(
        fresh
            .coordinator()
            .log()
            .contains("Keep a copy outside the cluster")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn repository_jobs_run_apart_and_stop_at_their_limits() {
    use ferry_coordinator::jobs::{Job, JobRunner, Operation};
    use ferry_shared::repository::{RepositoryConfig, RepositoryLocation, S3Location};
    let dir = tempfile::tempdir().unwrap();
    let config = |location| RepositoryConfig {
        location,
        password: PASSWORD.to_owned(),
        cache_dir: None,
        retry_budget: std::time::Duration::ZERO,
    };
    let local = |name: &str| RepositoryLocation::Local {
        path: dir.path().join(name),
    };
    let runner = JobRunner {
        program: PathBuf::from(COORDINATOR_BIN),
        memory_limit: None,
        timeout: Duration::from_secs(60),
        retries: ferry_shared::retry::CountedRetries(
            ferry_shared::retry::retries_metric().unwrap(),
        ),
    };
    let opened = runner
        .run(&Job {
            repository: config(local("repo")),
            operation: Operation::Open { create: true },
        })
        .await
        .unwrap();
    assert!(opened.contains("opens"), "{opened}");
    let password_file = dir.path().join("password");
    fs::write(&password_file, PASSWORD).unwrap();
    succeed(restic(dir.path().join("repo").to_str().unwrap(), &password_file).arg("snapshots"));

    let gone = runner
        .run(&Job {
            repository: config(local("gone")),
            operation: Operation::Forget {
                snapshot_ids: vec!["0123abcd".into()],
            },
        })
        .await
        .unwrap();
    assert!(gone.contains("nothing to forget"), "{gone}");
    let refused = runner
        .run(&Job {
            repository: config(local("gone")),
            operation: Operation::Open { create: false },
        })
        .await
        .unwrap_err();
    assert!(refused.contains("gone"), "{refused}");

    // An object store that accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_store = RepositoryLocation::S3(S3Location {
        endpoint: Some(format!("http://{}", silent.local_addr().unwrap())),
        bucket: "b".into(),
        access_key_id: Some("a".into()),
        secret_access_key: Some("s".into()),
        ..S3Location::default()
    });
    let stalled = JobRunner {
        timeout: Duration::from_secs(1),
        ..runner.clone()
    }
    .run(&Job {
        repository: config(silent_store),
        operation: Operation::Open { create: false },
    })
    .await
    .unwrap_err();
    assert!(stalled.contains("did not finish within 1s"), "{stalled}");

    // Creating a key takes 32 MiB for its key derivation; 8 MiB is not enough.
    let starved = JobRunner {
        memory_limit: Some(8 << 20),
        ..runner
    }
    .run(&Job {
        repository: config(local("small")),
        operation: Operation::Open { create: true },
    })
    .await
    .unwrap_err();
    assert!(starved.contains("memory"), "{starved}");
}
