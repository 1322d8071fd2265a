//! Hooks: commands the coordinator runs in pods through `pods/exec` around their backup and
//! after their restore. The harness plays the container runtime: a command runs in the pod's
//! first volume directory on its node, so what a hook writes lands in the volume.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_shared::crd::{
    Backup, BackupStatus, PodVolumePhase, PodVolumeRestore, Restore, RestoreStatus,
};
use ferry_shared::layout::{gunzip, key};
use ferry_shared::names::{RESTORE_WAIT_CONTAINER, label};
use ferry_tests::fixtures;
use ferry_tests::harness::{Cluster, VolumeKind};
use ferry_tests::restic::{restic, succeed};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;

use crate::{
    NODE, PASSWORD, agent_program, completed, coordinator_program, shop_cluster_on_test_server,
};

/// What hooks need: the test server runs the commands of `pods/exec`, where a real cluster's
/// kubelet would run them in the containers.
const EXEC: &str = "pods/exec, which the harness plays";

/// A Running pod `namespace/name` on [`NODE`] with an emptyDir `data` holding `app.db`, with
/// `labels` and `annotations`; returns it and its volume's directory.
async fn pod_with(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
    labels: serde_json::Value,
    annotations: serde_json::Value,
) -> (Pod, PathBuf) {
    let (pod, dirs) = cluster
        .create_pod(namespace, name, NODE, vec![("data", VolumeKind::EmptyDir)])
        .await;
    fs::write(dirs[0].join("app.db"), format!("rows of {name}")).unwrap();
    let patch = json!({"metadata": {"labels": labels, "annotations": annotations}});
    let pod = Api::<Pod>::namespaced(cluster.client(), &cluster.scoped(namespace))
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .expect("label and annotate the pod");
    (pod, dirs[0].clone())
}

/// The files of the newest snapshot of the repository of `namespace`, as restic lists them.
fn snapshot_files(cluster: &Cluster, storage: &Path, namespace: &str) -> Vec<String> {
    let password_file = cluster.path("password");
    fs::write(&password_file, PASSWORD).unwrap();
    let repository = storage.join("restic").join(cluster.scoped(namespace));
    let listed =
        succeed(restic(repository.to_str().unwrap(), &password_file).args(["ls", "latest"]));
    (String::from_utf8_lossy(&listed.stdout).lines())
        .filter_map(|line| line.rsplit('/').next().map(str::to_owned))
        .collect()
}

/// The backup's log as the location keeps it, with the test's names.
fn backup_log(cluster: &Cluster, storage: &Path, backup: &str) -> String {
    let log = fs::read(storage.join(key::backup_logs(backup))).expect("the backup's log");
    cluster.unscoped(&String::from_utf8(gunzip(&log).unwrap()).unwrap())
}

/// The backup's status, with the test's names.
fn backup_status(cluster: &Cluster, backup: &Backup) -> BackupStatus {
    cluster.unscoped_value(&backup.status.clone().unwrap_or_default())
}

/// Waits until no process `pid` is left, or fails the test past the deadline.
async fn gone(pid: &str) {
    let deadline = tokio::time::Instant::now() + ferry_tests::harness::DEADLINE;
    while Path::new("/proc").join(pid).exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the hook's process {pid} is still running"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pre_hooks_run_before_the_snapshot_and_post_hooks_after_the_transfers_end() {
    let Some((mut cluster, storage)) = shop_cluster_on_test_server(EXEC).await else {
        return;
    };
    let agent = agent_program();
    cluster.start_agent(&agent, NODE, &[]);
    let (_, data) = pod_with(
        &cluster,
        "shop",
        "db",
        json!({"app": "db"}),
        json!({
            "pre.hook.backup.ferry.dev/command": r#"["sh", "-c", "echo frozen > frozen.txt"]"#,
            "post.hook.backup.velero.io/container": "app",
            "post.hook.backup.velero.io/command": r#"["sh", "-c", "echo thawed > thawed.txt"]"#,
        }),
    )
    .await;
    cluster.start_coordinator(coordinator_program(), &[]);
    fixtures::backup("quiesced")
        .namespaces(["shop"])
        .all_volumes()
        .create(&cluster)
        .await;
    let backup = completed::<Backup>(&cluster, "quiesced").await;
    let status = backup_status(&cluster, &backup);
    assert_eq!(
        (status.hooks.hooks_attempted, status.hooks.hooks_failed),
        (2, 0)
    );
    assert!(status.hooks.pending_post_hooks.is_empty());
    let files = snapshot_files(&cluster, &storage, "shop");
    assert!(files.contains(&"frozen.txt".to_owned()), "{files:?}");
    assert!(
        !files.contains(&"thawed.txt".to_owned()),
        "the post hook ran before the snapshot: {files:?}"
    );
    // The post hook ran once the transfer had ended.
    let pvb = cluster.pvbs_of("quiesced").await.remove(0);
    let ended = pvb.status.unwrap().completion_timestamp.unwrap().0;
    let thawed = fs::metadata(data.join("thawed.txt"))
        .unwrap()
        .modified()
        .unwrap();
    let thawed = jiff::Timestamp::try_from(thawed).unwrap();
    assert!(
        thawed >= ended,
        "post hook at {thawed}, transfer ended at {ended}"
    );
    let log = backup_log(&cluster, &storage, "quiesced");
    for expected in [
        r#"pre hook (annotations) in pod shop/db container app: ["sh", "-c", "echo frozen > frozen.txt"]: exit code 0"#,
        r#"post hook (annotations) in pod shop/db container app: ["sh", "-c", "echo thawed > thawed.txt"]: exit code 0"#,
    ] {
        assert!(log.contains(expected), "{expected} not in the log:\n{log}");
    }
    let described = cluster
        .ferry(
            Path::new(env!("CARGO_BIN_EXE_ferry")),
            &["backup", "describe", "quiesced", "--details"],
        )
        .await;
    let described = cluster.unscoped(described.success());
    assert!(described.contains("Hooks:"), "{described}");
    assert!(described.contains("2 attempted, 0 failed"), "{described}");
    assert!(
        described.contains("pre hook (annotations) in pod shop/db"),
        "{described}"
    );
    let metrics = cluster
        .coordinator()
        .metrics_showing(r#"ferry_hook_total{phase="post",result="success"} 1"#)
        .await;
    assert!(metrics.contains(r#"ferry_hook_total{phase="pre",result="success"} 1"#));
}

/// The pods of a rough backup, each with a pre hook: `locked` fails (and has a post hook),
/// `cache` fails but may continue, `hanging` never ends, `elsewhere` names a container it
/// lacks, and `starting` is not Running yet. Returns the volume directories of `locked` and
/// `hanging`.
async fn rough_pods(cluster: &Cluster) -> (PathBuf, PathBuf) {
    let annotated = |command: &str, extra: serde_json::Value| {
        let mut annotations = json!({"pre.hook.backup.ferry.dev/command": command});
        annotations
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        annotations
    };
    let (_, locked) = pod_with(
        cluster,
        "shop",
        "locked",
        json!({}),
        annotated(
            r#"["sh", "-c", "echo noise >&2; echo 'ERROR: cannot lock tables' >&2; exit 3"]"#,
            json!({"post.hook.backup.ferry.dev/command": r#"["sh", "-c", "echo released > released.txt"]"#}),
        ),
    )
    .await;
    pod_with(
        cluster,
        "shop",
        "cache",
        json!({}),
        annotated(
            r#"["sh", "-c", "echo 'cache busy' >&2; exit 1"]"#,
            json!({"pre.hook.backup.ferry.dev/on-error": "Continue"}),
        ),
    )
    .await;
    let (_, hanging) = pod_with(
        cluster,
        "shop",
        "hanging",
        json!({}),
        annotated(
            r#"["sh", "-c", "echo $$ > pid; echo waiting for a lock; exec sleep 1000"]"#,
            json!({"pre.hook.backup.ferry.dev/timeout": "2s"}),
        ),
    )
    .await;
    pod_with(
        cluster,
        "shop",
        "elsewhere",
        json!({}),
        annotated(
            "true",
            json!({"pre.hook.backup.ferry.dev/container": "sidecar"}),
        ),
    )
    .await;
    let (starting, _) = pod_with(
        cluster,
        "shop",
        "starting",
        json!({}),
        annotated("true", json!({})),
    )
    .await;
    cluster.set_pod_status(&starting, "Pending", None).await;
    (locked, hanging)
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_hanging_and_misdirected_hooks_are_reported_and_the_rest_goes_on() {
    let Some((mut cluster, storage)) = shop_cluster_on_test_server(EXEC).await else {
        return;
    };
    cluster.start_agent(&agent_program(), NODE, &[]);
    let (locked, hanging) = rough_pods(&cluster).await;
    cluster.start_coordinator(coordinator_program(), &[]);
    fixtures::backup("rough")
        .namespaces(["shop"])
        .all_volumes()
        .create(&cluster)
        .await;
    let backup: Backup = cluster.wait_finished("rough").await;
    let status = backup_status(&cluster, &backup);
    assert_eq!(
        backup.phase(),
        ferry_shared::crd::OperationPhase::PartiallyFailed,
        "{status:?}"
    );
    let pods: Vec<String> = (cluster.pvbs_of("rough").await.iter())
        .map(|pvb| pvb.spec.pod.name.clone())
        .collect();
    assert_eq!(
        pods,
        ["cache"],
        "only the pod whose failed hook may continue"
    );
    let error = |pod: &str| {
        (status.errors.iter())
            .find(|error| error.contains(&format!("pod shop/{pod}")))
            .unwrap_or_else(|| panic!("no error for {pod}: {:?}", status.errors))
            .clone()
    };
    assert_eq!(
        error("locked"),
        "pre hook (annotations) of pod shop/locked in container app failed: exit code 3; \
         stderr: noise | ERROR: cannot lock tables"
    );
    assert!(error("hanging").contains("did not end within its timeout of 2s"));
    assert!(error("elsewhere").contains(r#"the pod has no container "sidecar""#));
    assert!(error("starting").contains("the pod is not Running (phase Pending)"));
    assert!(
        (status.warnings.iter()).any(|w| w.contains("pod shop/cache") && w.contains("cache busy")),
        "{:?}",
        status.warnings
    );
    let skipped: Vec<&str> = (status.skipped_volumes.iter())
        .map(|s| s.pod.as_str())
        .collect();
    assert_eq!(
        skipped,
        [
            "shop/starting",
            "shop/elsewhere",
            "shop/hanging",
            "shop/locked"
        ]
    );
    assert_eq!(
        (status.hooks.hooks_attempted, status.hooks.hooks_failed),
        (6, 5)
    );
    // The post hook of the pod whose pre hook failed still releases what the pre hooks took.
    assert!(locked.join("released.txt").is_file());
    let stopped = (status.hooks.hook_runs.iter())
        .find(|run| run.pod == "shop/hanging")
        .unwrap();
    assert_eq!(
        stopped.stdout_tail, "waiting for a lock",
        "a hook stopped at its timeout keeps what it wrote"
    );
    let pid = fs::read_to_string(hanging.join("pid")).unwrap();
    gone(pid.trim()).await;
    let log = backup_log(&cluster, &storage, "rough");
    assert!(log.contains("stderr: ERROR: cannot lock tables"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn spec_hooks_select_pods_by_namespace_and_label() {
    let Some((mut cluster, _)) = shop_cluster_on_test_server(EXEC).await else {
        return;
    };
    cluster.create_namespace("other").await;
    cluster.start_agent(&agent_program(), NODE, &[]);
    let (_, db) = pod_with(&cluster, "shop", "db", json!({"app": "db"}), json!({})).await;
    let (_, web) = pod_with(&cluster, "shop", "web", json!({"app": "web"}), json!({})).await;
    let (_, other) = pod_with(&cluster, "other", "db", json!({"app": "db"}), json!({})).await;
    let (_, annotated) = pod_with(
        &cluster,
        "shop",
        "annotated",
        json!({"app": "db"}),
        json!({"pre.hook.backup.velero.io/command": r#"["sh", "-c", "echo own > own.txt"]"#}),
    )
    .await;
    cluster.start_coordinator(coordinator_program(), &[]);
    let write =
        |file: &str| json!({"exec": {"command": ["sh", "-c", format!("echo spec > {file}")]}});
    fixtures::backup("selected")
        .all_volumes()
        .namespaces(["shop", "other"])
        .hooks(json!({"resources": [{
            "name": "databases",
            "includedNamespaces": ["shop"],
            "labelSelector": {"matchLabels": {"app": "db"}},
            "pre": [write("pre.txt")],
            "post": [{"exec": {"command": ["sh", "-c", "echo spec > post.txt"], "onError": "Continue", "timeout": "10s"}}],
        }]}))
        .create(&cluster)
        .await;
    let backup = completed::<Backup>(&cluster, "selected").await;
    assert!(db.join("pre.txt").is_file() && db.join("post.txt").is_file());
    for dir in [&web, &other] {
        assert!(!dir.join("pre.txt").exists() && !dir.join("post.txt").exists());
    }
    // Annotations win for their phase; the spec's post hook still runs.
    assert!(annotated.join("own.txt").is_file() && !annotated.join("pre.txt").exists());
    assert!(annotated.join("post.txt").is_file());
    let runs = backup_status(&cluster, &backup).hooks.hook_runs;
    let mut sources: Vec<String> = (runs.iter())
        .map(|run| format!("{} {} {}", run.pod, run.phase.as_str(), run.source))
        .collect();
    sources.sort();
    assert_eq!(
        sources,
        [
            "shop/annotated post databases",
            "shop/annotated pre annotations",
            "shop/db post databases",
            "shop/db pre databases",
        ]
    );
}

/// The PodVolumeRestores of `restore`, once each has ended.
async fn restores_ended(cluster: &Cluster, restore: &str) {
    let deadline = tokio::time::Instant::now() + ferry_tests::harness::DEADLINE;
    loop {
        let pvrs = cluster
            .api::<PodVolumeRestore>()
            .list(&ListParams::default().labels(&format!("{}={restore}", label::RESTORE_NAME)))
            .await
            .unwrap()
            .items;
        let ended = |pvr: &PodVolumeRestore| {
            let phase = pvr.status.as_ref().map(|s| s.phase).unwrap_or_default();
            matches!(phase, PodVolumePhase::Completed | PodVolumePhase::Failed)
        };
        if !pvrs.is_empty() && pvrs.iter().all(ended) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{pvrs:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Backs up `shop` as `before`: the pod `db` with an init-container hook and a post-restore
/// hook in its annotations, and the pod `web` labelled `app: web`.
async fn backed_up_pods_with_restore_hooks(cluster: &mut Cluster) {
    pod_with(
        cluster,
        "shop",
        "db",
        json!({}),
        json!({
            "init.hook.restore.ferry.dev/container-image": "busybox:1.36",
            "init.hook.restore.ferry.dev/container-name": "fix-owner",
            "init.hook.restore.ferry.dev/command": r#"["chown", "-R", "999", "/data/data"]"#,
            "post.hook.restore.ferry.dev/command": r#"["sh", "-c", "cp app.db checked.txt"]"#,
        }),
    )
    .await;
    pod_with(cluster, "shop", "web", json!({"app": "web"}), json!({})).await;
    cluster.start_coordinator(coordinator_program(), &[]);
    fixtures::backup("before")
        .namespaces(["shop"])
        .all_volumes()
        .create(cluster)
        .await;
    completed::<Backup>(cluster, "before").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_hooks_run_on_the_restored_data_and_their_failures_are_reported() {
    let Some((mut cluster, _)) = shop_cluster_on_test_server(EXEC).await else {
        return;
    };
    cluster.start_agent(&agent_program(), NODE, &[]);
    backed_up_pods_with_restore_hooks(&mut cluster).await;
    fixtures::restore("after")
        .backup("before")
        .map_namespace("shop", "shop-copy")
        .hooks(json!({"resources": [{
            "name": "web-check",
            "labelSelector": {"matchLabels": {"app": "web"}},
            "postHooks": [{"exec": {"command": ["sh", "-c", "echo 'web is down' >&2; exit 7"], "onError": "Fail"}}],
        }]}))
        .create(&cluster)
        .await;
    let pods = Api::<Pod>::namespaced(cluster.client(), &cluster.scoped("shop-copy"));
    let db = cluster
        .wait_for(&pods, "db", "created by the restore", |_: &Pod| true)
        .await;
    let init: Vec<String> = (db.spec.unwrap().init_containers.unwrap().into_iter())
        .map(|container| container.name)
        .collect();
    assert_eq!(init, [RESTORE_WAIT_CONTAINER, "fix-owner"]);
    cluster
        .wait_for(&pods, "web", "created by the restore", |_: &Pod| true)
        .await;
    let mut dirs = BTreeMap::new();
    for pod in ["db", "web"] {
        let (_, volumes) = cluster.run_restored_pod("shop-copy", pod, NODE).await;
        dirs.insert(pod, volumes["data"].clone());
    }
    restores_ended(&cluster, "after").await;
    // The data is back but the pods do not run yet: no hook has run.
    let waiting: Restore = cluster.api().get("after").await.unwrap();
    let waiting = waiting.status.unwrap_or_default();
    assert_eq!(waiting.hooks.hooks_attempted, 0, "{waiting:?}");
    assert_eq!(waiting.hooks.pending_post_hooks.len(), 2, "{waiting:?}");
    assert!(!dirs["db"].join("checked.txt").exists());
    for pod in ["db", "web"] {
        let pod = pods.get(pod).await.unwrap();
        cluster.set_pod_status(&pod, "Running", None).await;
    }
    let restore: Restore = cluster.wait_finished("after").await;
    let status: RestoreStatus = cluster.unscoped_value(&restore.status.clone().unwrap_or_default());
    assert_eq!(
        restore.phase(),
        ferry_shared::crd::OperationPhase::PartiallyFailed,
        "{status:?}"
    );
    assert_eq!(
        fs::read_to_string(dirs["db"].join("checked.txt")).unwrap(),
        "rows of db",
        "the post-restore hook ran on the restored data"
    );
    assert_eq!(
        (status.hooks.hooks_attempted, status.hooks.hooks_failed),
        (2, 1)
    );
    assert_eq!(
        status.errors,
        [
            "post-restore hook (web-check) of pod shop-copy/web in container app failed: \
          exit code 7; stderr: web is down"
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_backup_before_its_transfers_end_runs_the_post_hooks_it_owes() {
    let Some((mut cluster, _)) = shop_cluster_on_test_server(EXEC).await else {
        return;
    };
    let (_, data) = pod_with(
        &cluster,
        "shop",
        "db",
        json!({}),
        json!({
            "pre.hook.backup.ferry.dev/command": r#"["sh", "-c", "echo frozen > frozen.txt"]"#,
            "post.hook.backup.ferry.dev/command": r#"["sh", "-c", "echo thawed > thawed.txt"]"#,
        }),
    )
    .await;
    cluster.start_coordinator(coordinator_program(), &[]);
    // No node agent runs: the transfer never ends.
    fixtures::backup("abandoned")
        .namespaces(["shop"])
        .all_volumes()
        .create(&cluster)
        .await;
    let backups = cluster.api::<Backup>();
    let started = |backup: &Backup| {
        (backup.status.as_ref()).is_some_and(|status| status.pod_volume_backups.is_some())
    };
    let backup = cluster
        .wait_for(&backups, "abandoned", "to create its transfer", started)
        .await;
    let pending = backup_status(&cluster, &backup).hooks.pending_post_hooks;
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert!(data.join("frozen.txt").is_file() && !data.join("thawed.txt").exists());
    backups
        .delete("abandoned", &DeleteParams::default())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + ferry_tests::harness::DEADLINE;
    while backups.get_opt("abandoned").await.unwrap().is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the backup is still there"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        fs::read_to_string(data.join("thawed.txt")).unwrap(),
        "thawed\n",
        "the post hook released the pod before the backup went"
    );
}
