//! `ferry install` and `ferry uninstall` on a cluster Ferry was never installed on: what they
//! apply and delete, that the install runs backups, the repository password they never
//! replace, a dry run, a wait that times out, and flags refused before anything is applied.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use ferry_shared::crd::{Backup, BackupStorageLocation, StorageProvider};
use ferry_shared::names;
use ferry_tests::harness::{Cluster, CommandOutput, VolumeKind};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams};
use serde_json::Value;

use crate::{NODE, agent_program, completed, coordinator_program};

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");
const IMAGE: &str = "registry.example/ferry:test";

async fn ferry(cluster: &Cluster, args: &[&str]) -> CommandOutput {
    cluster.ferry(Path::new(FERRY), args).await
}

/// The one line a failed command printed, after asserting it failed with exit code 1.
fn failure(output: &CommandOutput) -> String {
    assert_eq!(output.code, Some(1), "{output:?}");
    let lines: Vec<&str> = output.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {output:?}");
    lines[0].to_owned()
}

/// The names of the CRDs the cluster has.
async fn crds(cluster: &Cluster) -> Vec<String> {
    Api::<CustomResourceDefinition>::all(cluster.client())
        .list(&ListParams::default())
        .await
        .expect("list CRDs")
        .items
        .into_iter()
        .filter_map(|crd| crd.metadata.name)
        .collect()
}

async fn namespace_exists(cluster: &Cluster, name: &str) -> bool {
    Api::<Namespace>::all(cluster.client())
        .get_opt(name)
        .await
        .expect("read namespace")
        .is_some()
}

/// The repository password the cluster holds.
async fn stored_password(cluster: &Cluster) -> String {
    let secret = cluster
        .api::<Secret>()
        .get(names::REPOSITORY_SECRET)
        .await
        .expect("the password Secret");
    let bytes = &secret.data.expect("data")[names::REPOSITORY_PASSWORD_KEY].0;
    String::from_utf8(bytes.clone()).expect("UTF-8")
}

async fn coordinator_image(cluster: &Cluster) -> String {
    let deployment = cluster
        .api::<Deployment>()
        .get("ferry-coordinator")
        .await
        .expect("the coordinator's Deployment");
    let value = serde_json::to_value(deployment).expect("encode");
    value["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .expect("an image")
        .to_owned()
}

#[tokio::test]
async fn install_runs_backups_and_uninstall_keeps_their_data() {
    let Some(mut cluster) = Cluster::start_empty().await else {
        return;
    };
    cluster.add_node(NODE).await;
    let storage = cluster.path("storage");
    let password_file = cluster.path("password");
    fs::write(&password_file, "install-test-password\nignored\n").expect("password file");
    let workloads = cluster.run_installed_workloads();
    let storage_arg = storage.to_str().expect("UTF-8 path");
    let installed = ferry(
        &cluster,
        &[
            "install",
            "--provider",
            "filesystem",
            "--path",
            storage_arg,
            "--password-file",
            password_file.to_str().expect("UTF-8 path"),
            "--image",
            IMAGE,
        ],
    )
    .await;
    let stdout = installed.success();
    workloads.await.expect("the workloads were marked ready");
    assert!(
        stdout.contains(&format!(
            "Ferry is installed in namespace {}",
            cluster.namespace()
        )),
        "{stdout}"
    );
    assert!(stdout.contains("ferry backup create"), "{stdout}");
    assert!(
        stdout.contains("the coordinator and the node agent are ready"),
        "{stdout}"
    );
    everything_is_installed(&cluster, storage_arg).await;
    let backup_file = a_backup_completes(&mut cluster, &storage).await;
    uninstall_removes_ferry_and_keeps_the_data(&mut cluster, &backup_file).await;
}

/// The CRDs, namespace, RBAC, workloads with the image given, Secrets and location exist.
async fn everything_is_installed(cluster: &Cluster, storage: &str) {
    let crds = crds(cluster).await;
    for kind in [
        "backups",
        "restores",
        "backupstoragelocations",
        "podvolumebackups",
    ] {
        assert!(crds.contains(&format!("{kind}.ferry.dev")), "{crds:?}");
    }
    assert!(namespace_exists(cluster, cluster.namespace()).await);
    for name in ["ferry-coordinator", "ferry-node-agent"] {
        let role = Api::<ClusterRole>::all(cluster.client()).get(name).await;
        assert!(role.is_ok(), "ClusterRole {name}");
        let binding = Api::<ClusterRoleBinding>::all(cluster.client())
            .get(name)
            .await
            .expect("ClusterRoleBinding");
        let subject = &binding.subjects.expect("subjects")[0];
        assert_eq!(subject.namespace.as_deref(), Some(cluster.namespace()));
    }
    assert_eq!(coordinator_image(cluster).await, IMAGE);
    let deployment = cluster.api::<Deployment>().get("ferry-coordinator").await;
    let deployment = serde_json::to_value(deployment.expect("Deployment")).expect("encode");
    let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .expect("env")
        .clone();
    let helper = env
        .iter()
        .find(|e| e["name"] == "FERRY_RESTORE_HELPER_IMAGE")
        .expect("the restore helper's image");
    assert_eq!(helper["value"], IMAGE);
    let managers = &deployment["metadata"]["managedFields"];
    assert!(managers.to_string().contains("ferry-install"), "{managers}");
    let agents = cluster.api::<DaemonSet>().get("ferry-node-agent").await;
    let agents = serde_json::to_value(agents.expect("DaemonSet")).expect("encode");
    assert_eq!(
        agents["spec"]["template"]["spec"]["containers"][0]["image"],
        IMAGE
    );
    assert_eq!(stored_password(cluster).await, "install-test-password");
    let location = cluster
        .api::<BackupStorageLocation>()
        .get("default")
        .await
        .expect("the default location");
    assert_eq!(location.spec.provider, StorageProvider::Filesystem);
    assert_eq!(location.spec.path.as_deref(), Some(storage));
    assert!(location.spec.default);
}

/// The real coordinator and node agent, started as the installed workloads would run them,
/// complete a backup made with `ferry backup create --wait`; returns a file the backup wrote to the storage location.
async fn a_backup_completes(cluster: &mut Cluster, storage: &Path) -> std::path::PathBuf {
    cluster.start_coordinator(coordinator_program(), &[]);
    cluster.start_agent(&agent_program(), NODE, &["--progress-interval", "200ms"]);
    cluster.create_namespace("shop").await;
    let (_, dirs) = cluster
        .create_pod("shop", "web", NODE, vec![("data", VolumeKind::EmptyDir)])
        .await;
    fs::write(dirs[0].join("page.html"), "<h1>shop</h1>").expect("volume data");
    let shop = cluster.scoped("shop");
    let args = [
        "backup",
        "create",
        "first",
        "--include-namespaces",
        &shop,
        "--default-volumes-to-fs-backup",
        "--wait",
    ];
    let created = ferry(cluster, &args).await;
    let stdout = created.success();
    assert!(stdout.contains("Backup first Completed"), "{stdout}");
    let backup = completed::<Backup>(cluster, "first").await;
    assert_eq!(
        backup.status.unwrap().pod_volume_backups.unwrap().completed,
        1
    );
    let written = storage.join("backups/first/ferry-backup.json");
    assert!(written.exists(), "{}", written.display());
    written
}

/// Uninstall refuses without --confirm and a terminal; with it, takes the namespace, cluster
/// RBAC and CRDs, and leaves the data.
async fn uninstall_removes_ferry_and_keeps_the_data(cluster: &mut Cluster, backup_file: &Path) {
    let refused = failure(&ferry(cluster, &["uninstall"]).await);
    assert!(refused.contains("add --confirm"), "{refused}");
    assert!(namespace_exists(cluster, cluster.namespace()).await);
    assert!(!crds(cluster).await.is_empty());

    // The kubelet stops the pods once uninstall deletes their workloads; these processes are
    // those pods.
    cluster.coordinator().terminate().await;
    cluster.agent(NODE).terminate().await;
    let uninstalled = ferry(
        cluster,
        &["uninstall", "--confirm", "--wait", "--timeout", "30s"],
    )
    .await;
    let stdout = uninstalled.success();
    assert!(
        stdout.contains("data in the storage locations is kept"),
        "{stdout}"
    );
    assert!(stdout.contains("took the finalizer"), "{stdout}");
    assert!(!namespace_exists(cluster, cluster.namespace()).await);
    assert_eq!(crds(cluster).await, Vec::<String>::new());
    for name in ["ferry-coordinator", "ferry-node-agent"] {
        let role = Api::<ClusterRole>::all(cluster.client())
            .get_opt(name)
            .await;
        assert!(role.expect("read").is_none(), "ClusterRole {name}");
        let binding = Api::<ClusterRoleBinding>::all(cluster.client())
            .get_opt(name)
            .await;
        assert!(
            binding.expect("read").is_none(),
            "ClusterRoleBinding {name}"
        );
    }
    assert!(backup_file.exists(), "the backup's data is kept");
}

#[tokio::test]
async fn a_dry_run_prints_the_rewritten_manifests_and_applies_nothing() {
    let Some(cluster) = Cluster::start_empty().await else {
        return;
    };
    let args = [
        "--namespace",
        "backup",
        "install",
        "--dry-run",
        "--provider",
        "filesystem",
        "--path",
        "/var/lib/ferry-backups",
    ];
    let printed = ferry(&cluster, &args).await.success().to_owned();
    let documents: Vec<Value> = serde_yaml::Deserializer::from_str(&printed)
        .map(|document| serde::Deserialize::deserialize(document).expect("YAML"))
        .collect();
    let kinds: Vec<&str> = documents
        .iter()
        .filter_map(|d| d["kind"].as_str())
        .collect();
    for kind in [
        "CustomResourceDefinition",
        "Namespace",
        "Deployment",
        "DaemonSet",
    ] {
        assert!(kinds.contains(&kind), "{kinds:?}");
    }
    assert_eq!(kinds.last(), Some(&"BackupStorageLocation"));
    let namespace = documents.iter().find(|d| d["kind"] == "Namespace").unwrap();
    assert_eq!(namespace["metadata"]["name"], "backup");
    assert!(!printed.contains("namespace: ferry"), "{printed}");
    let secret = documents.iter().find(|d| d["kind"] == "Secret").unwrap();
    assert_eq!(
        secret["stringData"][names::REPOSITORY_PASSWORD_KEY],
        "<redacted>"
    );
    assert!(crds(&cluster).await.is_empty(), "nothing applied");
    assert!(!namespace_exists(&cluster, "backup").await);

    // No cluster is needed at all.
    let output = Command::new(FERRY)
        .args(args)
        .env("KUBECONFIG", cluster.path("no-such-kubeconfig"))
        .stdin(Stdio::null())
        .output()
        .expect("run ferry");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), printed);
}

#[tokio::test]
async fn a_generated_password_is_shown_once_and_never_replaced() {
    let Some(cluster) = Cluster::start_empty().await else {
        return;
    };
    let first = ferry(&cluster, &["install", "--no-wait"]).await;
    let stdout = first.success();
    let password = stored_password(&cluster).await;
    assert_eq!(password.len(), 64, "32 random bytes, hex-encoded");
    assert_eq!(stdout.matches(&password).count(), 1, "{stdout}");
    assert!(stdout.contains("Keep a copy somewhere safe"), "{stdout}");
    assert!(
        stdout.contains("No storage location was created"),
        "{stdout}"
    );

    let again = ferry(&cluster, &["install", "--no-wait"]).await;
    let stdout = again.success();
    assert!(
        stdout.contains("kept the existing repository password"),
        "{stdout}"
    );
    assert!(!stdout.contains(&password), "{stdout}");
    assert_eq!(stored_password(&cluster).await, password);

    let other = cluster.path("other-password");
    fs::write(&other, "another-password\n").expect("password file");
    let other = other.to_str().expect("UTF-8 path");
    let args = [
        "install",
        "--no-wait",
        "--password-file",
        other,
        "--image",
        IMAGE,
    ];
    let refused = failure(&ferry(&cluster, &args).await);
    assert!(
        refused.contains("holds another repository password"),
        "{refused}"
    );
    assert_eq!(stored_password(&cluster).await, password);
    assert_ne!(
        coordinator_image(&cluster).await,
        IMAGE,
        "nothing was applied"
    );
}

#[tokio::test]
async fn a_wait_that_times_out_names_what_is_not_ready() {
    let Some(cluster) = Cluster::start_empty().await else {
        return;
    };
    let output = ferry(&cluster, &["install", "--timeout", "1s"]).await;
    let line = failure(&output);
    assert!(line.contains("not ready after 1s"), "{line}");
    assert!(line.contains("the coordinator is 0/1 ready"), "{line}");
    assert!(
        line.contains(&format!(
            "kubectl -n {} describe deployment ferry-coordinator",
            cluster.namespace()
        )),
        "{line}"
    );
    assert!(
        output
            .stdout
            .contains("waiting for the coordinator: 0/1 ready")
    );
}

#[tokio::test]
async fn bad_flags_are_refused_before_anything_is_applied() {
    let Some(cluster) = Cluster::start_empty().await else {
        return;
    };
    let no_keys = cluster.path("no-keys");
    fs::write(&no_keys, "[default]\nregion = us-east-1\n").expect("secret file");
    let no_keys = no_keys.to_str().expect("UTF-8 path");
    let missing = cluster.path("missing");
    let missing = missing.to_str().expect("UTF-8 path");
    let s3 = [
        "install",
        "--provider",
        "s3",
        "--bucket",
        "b",
        "--secret-file",
    ];
    let cases: [(Vec<&str>, &str); 4] = [
        (
            vec!["install", "--provider", "s3"],
            "--provider s3 needs --bucket",
        ),
        ([&s3[..], &[no_keys]].concat(), "aws_access_key_id"),
        (
            [&s3[..], &[missing]].concat(),
            "cannot read the secret file",
        ),
        (
            vec!["install", "--password-file", missing],
            "cannot read the password file",
        ),
    ];
    for (args, expected) in cases {
        let line = failure(&ferry(&cluster, &args).await);
        assert!(line.contains(expected), "{args:?}: {line}");
    }
    assert!(crds(&cluster).await.is_empty(), "nothing applied");
    assert!(!namespace_exists(&cluster, cluster.namespace()).await);
}

#[tokio::test]
async fn an_s3_location_gets_its_keys_in_a_secret() {
    let Some(cluster) = Cluster::start_empty().await else {
        return;
    };
    let keys = cluster.path("aws-credentials");
    let file = "[default]\naws_access_key_id = AKID\naws_secret_access_key = SECRET\n";
    fs::write(&keys, file).expect("secret file");
    let args = [
        "install",
        "--no-wait",
        "--provider",
        "s3",
        "--bucket",
        "ferry-backups",
        "--prefix",
        "cluster-a",
        "--s3-url",
        "http://minio.example:9000",
        "--force-path-style",
        "--secret-file",
        keys.to_str().expect("UTF-8 path"),
    ];
    let stdout = ferry(&cluster, &args).await.success().to_owned();
    assert!(!stdout.contains("SECRET"), "{stdout}");
    let secret = cluster
        .api::<Secret>()
        .get("ferry-s3-credentials")
        .await
        .expect("the credentials Secret");
    assert_eq!(secret.data.expect("data")["cloud"].0, file.as_bytes());
    let location = cluster
        .api::<BackupStorageLocation>()
        .get("default")
        .await
        .expect("the default location");
    let spec = location.spec;
    assert_eq!(spec.provider, StorageProvider::S3);
    assert_eq!(spec.bucket.as_deref(), Some("ferry-backups"));
    assert_eq!(spec.prefix.as_deref(), Some("cluster-a"));
    let config = spec.config.expect("config");
    assert_eq!(config.s3_url.as_deref(), Some("http://minio.example:9000"));
    assert!(config.force_path_style);
    let credential = spec.credential.expect("credential");
    assert_eq!(
        (credential.name.as_str(), credential.key.as_str()),
        ("ferry-s3-credentials", "cloud")
    );
}
