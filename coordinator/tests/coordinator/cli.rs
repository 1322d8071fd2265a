//! The `ferry` command line against the test cluster, as a script runs it: no terminal, its
//! output captured. Each test starts the real coordinator and plays the node agent.

use std::path::Path;
use std::process::Stdio;

use ferry_shared::crd::{
    Backup, BackupStorageLocation, ExistingResourcePolicy, PodVolumeBackup, Restore, Schedule,
};
use ferry_shared::names::annotation;
use ferry_tests::apiserver::TestApiServer;
use ferry_tests::harness::{COORDINATOR_SERVICE, Cluster, DEADLINE};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

use std::time::Duration;

use ferry_shared::layout::{ObjectStore, gunzip, key};

use crate::requests::{backed_up_and_restored, local_store};
use crate::{
    NODE, SERVICE_PROXY, agent_program, coordinator_program, s3_shop_cluster, set_pvb_status,
    shop_cluster, shop_cluster_on_test_server, web_pod_on_a_claim,
};

pub(crate) fn ferry() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ferry"))
}

/// The pod `shop/web` with its volume `data` on a bound claim, opting in `data` and a volume
/// it does not have, and the coordinator started.
async fn web_pod(cluster: &mut Cluster) {
    web_pod_on_a_claim(cluster).await;
    Api::<Pod>::namespaced(cluster.client(), &cluster.scoped("shop"))
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {annotation::BACKUP_VOLUMES: "data,gone"}}}),
            ),
        )
        .await
        .expect("annotate the pod");
    cluster.start_coordinator(coordinator_program(), &[]);
}

/// The one PodVolumeBackup of `backup`, once the coordinator has made it.
async fn only_pvb(cluster: &Cluster, backup: &str) -> PodVolumeBackup {
    cluster
        .wait_for(
            &cluster.api::<Backup>(),
            backup,
            "to create its transfer",
            |b: &Backup| {
                b.status
                    .as_ref()
                    .is_some_and(|s| s.pod_volume_backups.is_some())
            },
        )
        .await;
    cluster.pvbs_of(backup).await.remove(0)
}

/// Reads `lines` until one contains `wanted`; every line read is appended to `seen`.
async fn read_until(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    wanted: &str,
    seen: &mut String,
) {
    let found = tokio::time::timeout(DEADLINE, async {
        while let Some(line) = lines.next_line().await.expect("read the output") {
            seen.push_str(&line);
            seen.push('\n');
            if line.contains(wanted) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "no line with {wanted:?} in:\n{seen}");
}

#[tokio::test]
async fn backup_create_wait_prints_progress_lines_then_a_summary() {
    let (mut cluster, _storage) = shop_cluster().await;
    web_pod(&mut cluster).await;
    let mut command = tokio::process::Command::from(cluster.ferry_command(ferry()));
    let shop = cluster.scoped("shop");
    let args = [
        "backup",
        "create",
        "b1",
        "--include-namespaces",
        &shop,
        "--wait",
    ];
    let mut child = command
        .args(args)
        .args(["--progress-interval", "1s"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start ferry");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let pvb = only_pvb(&cluster, "b1").await;
    let progress = json!({"totalBytes": 1000, "bytesDone": 250, "totalFiles": 4, "filesDone": 1});
    set_pvb_status(
        &cluster,
        &pvb,
        json!({"phase": "InProgress", "progress": progress}),
    )
    .await;

    let mut seen = String::new();
    read_until(
        &mut lines,
        "InProgress: 250 B of 1000 B (25%), 1 of 4 files",
        &mut seen,
    )
    .await;
    read_until(
        &mut lines,
        &format!(
            "  {}/web/data: 250 B of 1000 B (25%)",
            cluster.scoped("shop")
        ),
        &mut seen,
    )
    .await;
    let done = json!({"phase": "Completed", "snapshotID": "0123abcd",
                      "progress": {"totalBytes": 1000, "bytesDone": 1000, "totalFiles": 4, "filesDone": 4}});
    set_pvb_status(&cluster, &pvb, done).await;
    read_until(&mut lines, "Backup b1 Completed", &mut seen).await;
    let status = child.wait().await.expect("ferry exits");
    while let Ok(Some(line)) = lines.next_line().await {
        seen.push_str(&line);
        seen.push('\n');
    }
    assert!(
        status.success(),
        "ferry failed:\n{seen}\n{}",
        cluster.logs()
    );
    let seen = cluster.unscoped(&seen);
    assert!(seen.contains("1 volume(s), 1000 B, 4 file(s)"), "{seen}");
    assert!(
        seen.contains("Warnings:\n  volume gone of pod shop/web skipped"),
        "{seen}"
    );
    assert!(
        !seen.contains('\x1b'),
        "escape codes without a terminal:\n{seen}"
    );

    describe_details_shows_each_volume_and_each_skipped_volume(&cluster).await;
    reads_round_trip_through_json_and_yaml(&cluster).await;
}

#[tokio::test]
async fn a_wait_ends_when_its_backup_is_deleted() {
    let (mut cluster, _storage) = shop_cluster().await;
    web_pod(&mut cluster).await;
    let mut command = tokio::process::Command::from(cluster.ferry_command(ferry()));
    let child = command
        .args([
            "backup",
            "create",
            "doomed",
            "--include-namespaces",
            &cluster.scoped("shop"),
            "--wait",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ferry");
    only_pvb(&cluster, "doomed").await;
    cluster
        .api::<Backup>()
        .delete("doomed", &Default::default())
        .await
        .expect("delete the backup");
    let out = tokio::time::timeout(DEADLINE, child.wait_with_output())
        .await
        .expect("ferry stops waiting")
        .expect("ferry's output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr,
        "error: Backup doomed was deleted while waiting for it\n"
    );
}

async fn describe_details_shows_each_volume_and_each_skipped_volume(cluster: &Cluster) {
    let text = cluster
        .ferry(ferry(), &["backup", "describe", "b1", "--details"])
        .await;
    let text = text.success();
    for expected in [
        "Phase:",
        "Completed",
        "Pod volumes:",
        "1 (1 completed, 0 failed), 1000 B, 4 file(s)",
        "Pod volume backups:",
        "POD",
        "SNAPSHOT",
        &format!(
            "Skipped volumes:\n  {}/web/gone: the pod has no volume of that name",
            cluster.scoped("shop")
        ),
    ] {
        assert!(text.contains(expected), "no {expected:?} in:\n{text}");
    }
    let web = format!("{}/web", cluster.scoped("shop"));
    let row = text
        .lines()
        .find(|line| line.starts_with(&format!("{web} ")))
        .unwrap_or_else(|| panic!("no row for the volume in:\n{text}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        [
            cells[0], cells[1], cells[3], cells[4], cells[5], cells[6], cells[8]
        ],
        [
            web.as_str(),
            "data",
            "Completed",
            "1000",
            "B",
            "4",
            "0123abcd"
        ],
        "{row}"
    );
    let brief = cluster.ferry(ferry(), &["backup", "describe", "b1"]).await;
    assert!(
        !brief.success().contains("Pod volume backups:"),
        "{brief:?}"
    );
}

async fn reads_round_trip_through_json_and_yaml(cluster: &Cluster) {
    let stored = cluster.api::<Backup>().get("b1").await.expect("the backup");
    let json = cluster
        .ferry(ferry(), &["backup", "get", "b1", "-o", "json"])
        .await;
    let parsed: Backup = serde_json::from_str(json.success()).expect("a Backup in JSON");
    assert_eq!(parsed, stored);
    let yaml = cluster
        .ferry(ferry(), &["backup", "get", "b1", "-o", "yaml"])
        .await;
    let parsed: Backup = serde_yaml::from_str(yaml.success()).expect("a Backup in YAML");
    assert_eq!(parsed, stored);
    let list = cluster
        .ferry(ferry(), &["backup", "get", "-o", "json"])
        .await;
    let list: serde_json::Value = serde_json::from_str(list.success()).expect("a List");
    assert_eq!(list["kind"], "List");
    let items: Vec<Backup> = serde_json::from_value(list["items"].clone()).expect("Backups");
    assert_eq!(items, [stored]);
    let table = cluster.ferry(ferry(), &["backup", "get"]).await;
    let table = table.success();
    assert!(table.starts_with("NAME "), "{table}");
    assert!(
        table
            .lines()
            .nth(1)
            .is_some_and(|row| row.starts_with("b1 ") && row.contains("Completed")),
        "{table}"
    );
}

#[tokio::test]
async fn a_backup_that_fails_exits_1_and_prints_why() {
    let (mut cluster, _storage) = shop_cluster().await;
    cluster.start_coordinator(coordinator_program(), &[]);
    let args = [
        "backup",
        "create",
        "lost",
        "--storage-location",
        "nowhere",
        "--wait",
    ];
    let out = cluster.ferry(ferry(), &args).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stdout.contains("Backup lost FailedValidation"),
        "{out:?}"
    );
    assert!(out.stdout.contains("Validation errors:\n  "), "{out:?}");
    assert!(out.stdout.contains("nowhere"), "{out:?}");
    assert_eq!(out.stderr, "error: Backup lost ended FailedValidation\n");

    let again = cluster.ferry(ferry(), &["backup", "create", "lost"]).await;
    assert_eq!(again.code, Some(1));
    assert_eq!(
        again.stderr,
        format!(
            "error: Backup \"lost\" already exists in namespace \"{}\"\n",
            cluster.namespace()
        )
    );
}

#[tokio::test]
async fn every_error_is_one_line_and_exit_code_1() {
    let (cluster, _storage) = shop_cluster().await;
    let missing = |kind: &str| {
        format!(
            "error: {kind} \"ghost\" does not exist in namespace \"{}\"",
            cluster.namespace()
        )
    };
    let (ghost_backup, ghost_schedule) = (missing("Backup"), missing("Schedule"));
    let cases: [(&[&str], &str); 8] = [
        (
            &[
                "backup",
                "create",
                "b",
                "--wait",
                "--progress-interval",
                "0s",
            ],
            "error: invalid value '0s' for '--progress-interval <PROGRESS_INTERVAL>': the interval must be 1s or more",
        ),
        (
            &["-n", "nowhere", "backup", "get"],
            "error: namespace \"nowhere\" does not exist: Ferry is not installed there",
        ),
        (&["backup", "describe", "ghost"], ghost_backup.as_str()),
        (&["schedule", "describe", "ghost"], ghost_schedule.as_str()),
        (
            &["backup", "create", "b", "--ttl", "forever"],
            "error: invalid value 'forever' for '--ttl <TTL>'",
        ),
        (
            &["backup", "create", "b", "--selector", "env in prod"],
            "error: invalid value 'env in prod' for '--selector <SELECTOR>'",
        ),
        (
            &[
                "restore",
                "create",
                "r",
                "--from-backup",
                "b",
                "--namespace-mappings",
                "a",
            ],
            "error: --namespace-mappings: \"a\" is not old:new",
        ),
        (
            &["schedule", "create", "s", "--schedule", "3 * *"],
            "error: --schedule: schedule \"3 * *\" has 3 fields",
        ),
    ];
    for (args, start) in cases {
        let out = cluster.ferry(ferry(), args).await;
        assert_eq!(out.code, Some(1), "{args:?}: {out:?}");
        assert!(out.stderr.starts_with(start), "{args:?}: {out:?}");
        assert_eq!(out.stderr.lines().count(), 1, "{args:?}: {out:?}");
    }
    let no_source = cluster.ferry(ferry(), &["restore", "create", "r"]).await;
    assert_eq!(no_source.code, Some(1), "{no_source:?}");
    assert_eq!(no_source.stderr.lines().count(), 1, "{no_source:?}");
}

#[tokio::test]
async fn a_cluster_out_of_reach_is_said_in_one_line() {
    let (cluster, _storage) = shop_cluster().await;
    let unreachable = tempfile::tempdir().expect("dir");
    let kubeconfig = unreachable.path().join("kubeconfig");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    let port = closed.local_addr().expect("address").port();
    drop(closed);
    std::fs::write(&kubeconfig, format!("apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: 'http://127.0.0.1:{port}'}}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\nusers:\n- name: u\n  user: {{}}\n")).expect("kubeconfig");
    let out = cluster
        .ferry(
            ferry(),
            &[
                "--kubeconfig",
                kubeconfig.to_str().expect("utf-8"),
                "backup",
                "get",
            ],
        )
        .await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.starts_with("error: cannot reach the cluster"),
        "{out:?}"
    );
    assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
}

#[tokio::test]
async fn without_ferrys_crds_every_command_says_to_install() {
    let server = TestApiServer::builder().start().await.expect("server");
    let dir = tempfile::tempdir().expect("dir");
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let out = tokio::process::Command::new(ferry())
        .args([
            "--kubeconfig",
            kubeconfig.to_str().expect("utf-8"),
            "backup",
            "get",
        ])
        .env("NO_PROXY", "127.0.0.1,localhost")
        .output()
        .await
        .expect("run ferry");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: Ferry is not installed in this cluster (its CRDs are missing): run `ferry install`\n"
    );
}

#[tokio::test]
async fn schedules_are_made_paused_and_deleted_as_the_flags_say() {
    let (cluster, _storage) = shop_cluster().await;
    let schedule = ["schedule", "create", "nightly", "--schedule", "0 3 * * *"];
    let out = cluster
        .ferry(
            ferry(),
            &[
                &schedule[..],
                &[
                    "--include-namespaces",
                    &cluster.scoped("shop"),
                    "--ttl",
                    "72h",
                    "-l",
                    "app=web",
                ],
            ]
            .concat(),
        )
        .await;
    out.success();
    let made = cluster
        .api::<Schedule>()
        .get("nightly")
        .await
        .expect("schedule");
    assert_eq!(
        made.spec.template.included_namespaces,
        [cluster.scoped("shop")]
    );
    assert_eq!(made.spec.template.ttl.as_deref(), Some("72h"));
    assert!(!made.spec.paused);
    cluster
        .ferry(ferry(), &["schedule", "pause", "nightly"])
        .await
        .success();
    let paused = cluster
        .api::<Schedule>()
        .get("nightly")
        .await
        .expect("schedule");
    assert!(paused.spec.paused);
    cluster
        .ferry(ferry(), &["schedule", "unpause", "nightly"])
        .await
        .success();
    let unpaused = cluster
        .api::<Schedule>()
        .get("nightly")
        .await
        .expect("schedule");
    assert!(!unpaused.spec.paused);

    let delete = cluster
        .ferry(ferry(), &["schedule", "delete", "nightly"])
        .await;
    assert_eq!(delete.code, Some(1), "{delete:?}");
    assert!(delete.stderr.contains("add --confirm"), "{delete:?}");
    cluster
        .api::<Schedule>()
        .get("nightly")
        .await
        .expect("still there");
    cluster
        .ferry(ferry(), &["schedule", "delete", "nightly", "--confirm"])
        .await
        .success();
    assert!(
        cluster
            .api::<Schedule>()
            .get_opt("nightly")
            .await
            .expect("get")
            .is_none()
    );
}

#[tokio::test]
async fn restores_are_made_as_the_flags_say() {
    let (cluster, _storage) = shop_cluster().await;
    let schedule = ["schedule", "create", "nightly", "--schedule", "0 3 * * *"];
    cluster.ferry(ferry(), &schedule).await.success();
    let restore = [
        "restore",
        "create",
        "back",
        "--from-backup",
        "b1",
        "--namespace-mappings",
        "shop:shop-2,a:b",
        "--existing-resource-policy",
        "update",
    ];
    cluster.ferry(ferry(), &restore).await.success();
    let made = cluster.api::<Restore>().get("back").await.expect("restore");
    assert_eq!(made.spec.backup_name.as_deref(), Some("b1"));
    assert_eq!(
        made.spec.namespace_mapping.get("shop").map(String::as_str),
        Some("shop-2")
    );
    assert_eq!(
        made.spec.existing_resource_policy,
        ExistingResourcePolicy::Update
    );
    let from_schedule = cluster
        .ferry(
            ferry(),
            &["restore", "create", "--from-schedule", "nightly"],
        )
        .await;
    from_schedule.success();
    let restores = cluster
        .api::<Restore>()
        .list(&Default::default())
        .await
        .expect("list");
    assert!(restores.items.iter().any(|r| {
        r.spec.schedule_name.as_deref() == Some("nightly")
            && r.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with("nightly-"))
    }));
}

#[tokio::test]
async fn locations_are_made_and_chosen_as_default() {
    let (cluster, storage) = shop_cluster().await;
    let second = storage.with_file_name("second");
    let location = [
        "location",
        "create",
        "second",
        "--provider",
        "filesystem",
        "--path",
        second.to_str().expect("utf-8"),
        "--default",
    ];
    cluster.ferry(ferry(), &location).await.success();
    let locations = cluster.api::<BackupStorageLocation>();
    assert!(locations.get("second").await.expect("second").spec.default);
    assert!(
        !locations
            .get("default")
            .await
            .expect("default")
            .spec
            .default
    );
    cluster
        .ferry(ferry(), &["location", "set-default", "default"])
        .await
        .success();
    assert!(!locations.get("second").await.expect("second").spec.default);
    assert!(
        locations
            .get("default")
            .await
            .expect("default")
            .spec
            .default
    );
    let table = cluster.ferry(ferry(), &["location", "get"]).await;
    assert!(table.success().contains("filesystem"), "{table:?}");
}

/// The file at `key` of `store`, gunzipped, as text.
async fn held_text(store: &ObjectStore, key: &str) -> String {
    let held = store
        .get(key)
        .await
        .expect("read the location")
        .expect("the file");
    String::from_utf8(gunzip(&held).expect("gzip")).expect("text")
}

#[tokio::test]
async fn logs_and_objects_come_from_a_filesystem_location_without_its_credentials() {
    let Some((mut cluster, storage)) = shop_cluster_on_test_server(SERVICE_PROXY).await else {
        return;
    };
    backed_up_and_restored(&mut cluster).await;
    let store = local_store(&storage);

    let log = cluster.ferry(ferry(), &["backup", "logs", "b1"]).await;
    let log = log.success();
    assert!(log.contains("b1"), "{log}");
    assert_eq!(log, held_text(&store, &key::backup_logs("b1")).await);
    let log = cluster.ferry(ferry(), &["restore", "logs", "r1"]).await;
    assert_eq!(
        log.success(),
        held_text(&store, &key::restore_logs("r1")).await
    );
    let results = cluster.ferry(ferry(), &["restore", "results", "r1"]).await;
    assert_eq!(
        results.success(),
        held_text(&store, &key::restore_results("r1")).await
    );

    let tarball = cluster.path("b1.tar.gz");
    let file = tarball.to_str().expect("utf-8");
    let saved = cluster
        .ferry(ferry(), &["backup", "download", "b1", "--file", file])
        .await;
    saved.success();
    let held = store
        .get(&key::resources("b1"))
        .await
        .expect("read")
        .expect("the tarball");
    assert_eq!(std::fs::read(&tarball).expect("the download"), held);
    let again = cluster
        .ferry(ferry(), &["backup", "download", "b1", "--file", file])
        .await;
    assert_eq!(again.code, Some(1), "{again:?}");
    assert!(again.stderr.contains("add --force"), "{again:?}");

    let ghost = cluster.ferry(ferry(), &["backup", "logs", "ghost"]).await;
    assert_eq!(ghost.code, Some(1), "{ghost:?}");
    assert!(
        ghost.stderr.starts_with("error: ") && ghost.stderr.contains("\"ghost\" does not exist"),
        "{ghost:?}"
    );
    assert_eq!(ghost.stderr.lines().count(), 1, "{ghost:?}");
}

#[tokio::test]
async fn a_coordinator_out_of_reach_fails_a_download_at_once() {
    let Some((mut cluster, _storage)) = shop_cluster_on_test_server(SERVICE_PROXY).await else {
        return;
    };
    backed_up_and_restored(&mut cluster).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    let address = closed.local_addr().expect("address");
    drop(closed);
    cluster.register_service(cluster.namespace(), COORDINATOR_SERVICE, address);
    let logs = cluster.ferry(ferry(), &["backup", "logs", "b1"]);
    let out = tokio::time::timeout(DEADLINE, logs)
        .await
        .expect("the download fails without retrying for minutes");
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr
            .starts_with("error: the download failed: error trying to reach service"),
        "{out:?}"
    );
    assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
}

#[tokio::test]
async fn logs_come_from_an_s3_location_through_presigned_urls() {
    let (mut cluster, store) = s3_shop_cluster().await;
    backed_up_and_restored(&mut cluster).await;
    let log = cluster.ferry(ferry(), &["backup", "logs", "b1"]).await;
    let held = held_text(&store, &key::backup_logs("b1")).await;
    assert_eq!(log.success(), held);
    let log = cluster.ferry(ferry(), &["restore", "logs", "r1"]).await;
    let held = held_text(&store, &key::restore_logs("r1")).await;
    assert_eq!(log.success(), held);
}

/// Runs `ferry version -o json` until it shows the node agents as `wanted`, `(node, ready)`,
/// and returns that output.
async fn agents_until(cluster: &Cluster, wanted: &[(&str, bool)]) -> serde_json::Value {
    let wanted: Vec<(String, bool)> = wanted
        .iter()
        .map(|(node, ready)| (cluster.scoped(node), *ready))
        .collect();
    let started = tokio::time::Instant::now();
    loop {
        let out = cluster.ferry(ferry(), &["version", "-o", "json"]).await;
        let parsed: serde_json::Value = serde_json::from_str(out.success()).expect("JSON");
        let seen: Vec<(String, bool)> = parsed["server"]["nodeAgents"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                (
                    a["node"].as_str().unwrap_or_default().to_owned(),
                    a["ready"] == true,
                )
            })
            .collect();
        if seen == wanted {
            return parsed;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "agents never {wanted:?}: {parsed}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn version_lists_the_node_agents_and_notices_one_that_stopped() {
    let (mut cluster, _) = shop_cluster().await;
    cluster.add_node("node-b").await;
    let node_b = cluster.scoped("node-b");
    for node in [NODE, "node-b"] {
        cluster.start_agent(&agent_program(), node, &["--heartbeat-interval", "1s"]);
    }
    cluster.start_coordinator(coordinator_program(), &[]);
    let version = env!("CARGO_PKG_VERSION");
    let parsed = agents_until(&cluster, &[(NODE, true), ("node-b", true)]).await;
    assert_eq!(parsed["clientVersion"], version);
    assert_eq!(parsed["server"]["serverVersion"], version);

    let table = cluster.ferry(ferry(), &["version"]).await;
    let table = table.success();
    assert!(
        table.contains(&format!("CLIENT VERSION\n{version}\n")),
        "{table}"
    );
    let row = table
        .lines()
        .find(|l| l.starts_with(&format!("{node_b} ")))
        .unwrap_or_else(|| panic!("{table}"));
    assert_eq!(
        row.split_whitespace().take(3).collect::<Vec<_>>(),
        [node_b.as_str(), version, "true"]
    );

    cluster.agent("node-b").terminate().await;
    agents_until(&cluster, &[(NODE, true), ("node-b", false)]).await;
    let table = cluster.ferry(ferry(), &["version"]).await;
    let table = table.success();
    let row = table
        .lines()
        .find(|l| l.starts_with(&format!("{node_b} ")))
        .unwrap_or_else(|| panic!("{table}"));
    assert_eq!(row.split_whitespace().nth(2), Some("false"), "{table}");
}
