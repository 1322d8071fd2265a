//! DownloadRequests and ServerStatusRequests: a backup's and a restore's files come through
//! the coordinator's service (filesystem locations) or a presigned URL (S3), expire with their
//! request, and the node agents' heartbeats show which agents run.

use std::process::Command;
use std::time::Duration;

use ferry_shared::crd::{
    Backup, DownloadRequest, DownloadRequestPhase, DownloadRequestSpec, DownloadTarget,
    DownloadTargetKind, NodeAgentStatus, Restore, ServerStatusRequest, ServerStatusRequestPhase,
    ServerStatusRequestStatus,
};
use ferry_shared::download::ServiceUrl;
use ferry_shared::layout::{ObjectStore, gunzip, key};
use ferry_shared::repository::RepositoryLocation;
use ferry_shared::retry::Retrier;
use ferry_tests::harness::{Cluster, DEADLINE, VolumeKind};
use ferry_tests::{fixtures, s3};
use futures::AsyncReadExt;
use kube::api::PostParams;

use crate::{
    NODE, SERVICE_PROXY, agent_program, completed, coordinator_program, s3_shop_cluster,
    shop_cluster, shop_cluster_on_test_server,
};

/// The pod `shop/web` with a volume no backup selects, so a backup completes with its objects
/// alone; then the Backup `backup` of `shop`, completed.
pub(crate) async fn completed_backup(cluster: &Cluster, backup: &str) {
    cluster
        .create_pod("shop", "web", NODE, vec![("data", VolumeKind::EmptyDir)])
        .await;
    fixtures::backup(backup)
        .namespaces(["shop"])
        .create(cluster)
        .await;
    completed::<Backup>(cluster, backup).await;
}

/// Creates a DownloadRequest for `kind` of `target` and waits until it is answered.
async fn download_request(
    cluster: &Cluster,
    name: &str,
    kind: DownloadTargetKind,
    target: &str,
) -> DownloadRequest {
    let spec = DownloadRequestSpec {
        target: DownloadTarget {
            kind,
            name: target.to_owned(),
        },
    };
    cluster.create(&DownloadRequest::new(name, spec)).await;
    cluster
        .wait_for(
            &cluster.api::<DownloadRequest>(),
            name,
            "answered",
            |request: &DownloadRequest| request.phase() != DownloadRequestPhase::New,
        )
        .await
}

/// The URL of a Processed request.
fn url_of(request: &DownloadRequest) -> String {
    let status = request.status.clone().unwrap_or_default();
    assert_eq!(status.phase, DownloadRequestPhase::Processed, "{status:?}");
    assert!(status.expiration.is_some(), "{status:?}");
    status.download_url.expect("a download URL")
}

/// GETs a filesystem location's download through the API server's service proxy, as a client
/// outside the cluster does: the bytes, or the answer's status code.
async fn through_the_proxy(cluster: &Cluster, url: &str) -> Result<Vec<u8>, u16> {
    let service = ServiceUrl::parse(url).unwrap_or_else(|| panic!("{url} is no Service URL"));
    let request = axum::http::Request::get(service.proxy_path())
        .body(Vec::new())
        .expect("request");
    match cluster.client().request_stream(request).await {
        Ok(stream) => {
            let mut bytes = Vec::new();
            futures::pin_mut!(stream);
            stream.read_to_end(&mut bytes).await.expect("read download");
            Ok(bytes)
        }
        Err(kube::Error::Api(status)) => Err(status.code),
        Err(err) => panic!("GET {url} through the proxy: {err}"),
    }
}

/// A plain GET of a presigned URL, as a client without credentials does.
fn plain_get(url: &str) -> Vec<u8> {
    let output = Command::new("curl")
        .args(["-sf", "--noproxy", "*"])
        .arg(url)
        .output()
        .expect("run curl");
    assert!(output.status.success(), "GET {url} failed: {output:?}");
    output.stdout
}

/// Asserts that `downloaded` is, ungzipped, what the location holds at `key`.
async fn assert_same_file(store: &ObjectStore, key: &str, downloaded: &[u8]) {
    let held = store
        .get(key)
        .await
        .unwrap()
        .expect("the file in the location");
    assert_eq!(
        gunzip(downloaded).expect("a gzipped download"),
        gunzip(&held).unwrap(),
        "{key}"
    );
}

pub(crate) fn local_store(path: &std::path::Path) -> ObjectStore {
    let root = RepositoryLocation::Local {
        path: path.to_owned(),
    };
    ObjectStore::open(&root, Retrier::unobserved(Duration::ZERO)).unwrap()
}

/// Starts the coordinator, then completes the Backup `b1` of `shop` (as [`completed_backup`]
/// does) and the Restore `r1` of it into `shop-copy`.
pub(crate) async fn backed_up_and_restored(cluster: &mut Cluster) {
    cluster.start_coordinator(coordinator_program(), &[]);
    completed_backup(cluster, "b1").await;
    fixtures::restore("r1")
        .backup("b1")
        .map_namespace("shop", "shop-copy")
        .create(cluster)
        .await;
    cluster.wait_finished::<Restore>("r1").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backups_and_a_restores_files_come_through_the_coordinators_service() {
    let Some((mut cluster, storage)) = shop_cluster_on_test_server(SERVICE_PROXY).await else {
        return;
    };
    backed_up_and_restored(&mut cluster).await;
    let store = local_store(&storage);
    let cases = [
        (DownloadTargetKind::BackupLog, "b1", key::backup_logs("b1")),
        (
            DownloadTargetKind::BackupContents,
            "b1",
            key::resources("b1"),
        ),
        (
            DownloadTargetKind::BackupResults,
            "b1",
            key::pod_volume_backups("b1"),
        ),
        (
            DownloadTargetKind::RestoreLog,
            "r1",
            key::restore_logs("r1"),
        ),
        (
            DownloadTargetKind::RestoreResults,
            "r1",
            key::restore_results("r1"),
        ),
    ];
    for (i, (kind, target, key)) in cases.into_iter().enumerate() {
        let request = download_request(&cluster, &format!("d{i}"), kind, target).await;
        let url = url_of(&request);
        assert!(
            url.starts_with(&format!(
                "http://ferry-coordinator.{}.svc:8085/downloads/",
                cluster.namespace()
            )),
            "{url}"
        );
        let downloaded = through_the_proxy(&cluster, &url).await.expect("download");
        assert_same_file(&store, &key, &downloaded).await;
    }
    let unknown = ServiceUrl::download(
        "ferry-coordinator",
        cluster.namespace(),
        8085,
        &"0".repeat(64),
    );
    assert_eq!(
        through_the_proxy(&cluster, &unknown.to_url()).await,
        Err(404)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_for_what_does_not_exist_fail_naming_it() {
    let Some((mut cluster, _)) = shop_cluster_on_test_server(SERVICE_PROXY).await else {
        return;
    };
    cluster.start_coordinator(coordinator_program(), &[]);
    let cases = [
        (
            DownloadTargetKind::BackupLog,
            "nope",
            "backup \"nope\" does not exist",
        ),
        (
            DownloadTargetKind::RestoreLog,
            "gone",
            "restore \"gone\" does not exist",
        ),
    ];
    for (i, (kind, target, message)) in cases.into_iter().enumerate() {
        let request = download_request(&cluster, &format!("missing-{i}"), kind, target).await;
        let status = request.status.unwrap_or_default();
        assert_eq!(status.phase, DownloadRequestPhase::Failed, "{status:?}");
        assert!(status.download_url.is_none());
        assert!(
            status
                .message
                .as_deref()
                .unwrap_or_default()
                .contains(message),
            "{status:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_download_is_refused_and_its_request_deleted() {
    let Some((mut cluster, _)) = shop_cluster_on_test_server(SERVICE_PROXY).await else {
        return;
    };
    cluster.start_coordinator(coordinator_program(), &["--download-validity", "2s"]);
    completed_backup(&cluster, "b1").await;
    let request = download_request(&cluster, "log", DownloadTargetKind::BackupLog, "b1").await;
    let url = url_of(&request);
    assert!(through_the_proxy(&cluster, &url).await.is_ok());
    let requests = cluster.api::<DownloadRequest>();
    let started = tokio::time::Instant::now();
    while requests.get_opt("log").await.unwrap().is_some() {
        assert!(
            started.elapsed() < DEADLINE,
            "the expired request was never deleted\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(through_the_proxy(&cluster, &url).await, Err(404));
}

/// The test S3 server checks no signatures (and moto's checking server takes only the
/// Authorization header, not a presigned query), so this shows that the URL is a presigned GET
/// of the right object that needs nothing more.
#[tokio::test(flavor = "multi_thread")]
async fn an_s3_locations_files_come_through_presigned_urls() {
    let (mut cluster, store) = s3_shop_cluster().await;
    cluster.start_coordinator(coordinator_program(), &[]);
    completed_backup(&cluster, "b1").await;
    let endpoint = s3::endpoint();
    let cases = [
        (DownloadTargetKind::BackupLog, key::backup_logs("b1")),
        (DownloadTargetKind::BackupContents, key::resources("b1")),
        (
            DownloadTargetKind::BackupResults,
            key::pod_volume_backups("b1"),
        ),
    ];
    for (i, (kind, key)) in cases.into_iter().enumerate() {
        let request = download_request(&cluster, &format!("s3-{i}"), kind, "b1").await;
        let url = url_of(&request);
        assert!(url.starts_with(&endpoint), "{url}");
        assert!(url.contains("X-Amz-Signature="), "{url}");
        assert_same_file(&store, &key, &plain_get(&url)).await;
    }
}

/// Asks the coordinator for its status until `wanted` holds, and returns that answer. Past the
/// deadline the test fails with the last answer.
async fn server_status(
    cluster: &Cluster,
    wanted: impl Fn(&ServerStatusRequestStatus) -> bool,
) -> ServerStatusRequestStatus {
    let requests = cluster.api::<ServerStatusRequest>();
    let started = tokio::time::Instant::now();
    loop {
        let mut request = ServerStatusRequest::new("", Default::default());
        request.metadata.name = None;
        request.metadata.generate_name = Some("status-".into());
        let created = requests
            .create(&PostParams::default(), &request)
            .await
            .expect("create a ServerStatusRequest");
        let name = created.metadata.name.expect("a generated name");
        let answered = cluster
            .wait_for(
                &requests,
                &name,
                "Processed",
                |request: &ServerStatusRequest| {
                    request.phase() == ServerStatusRequestPhase::Processed
                },
            )
            .await;
        let status = answered.status.expect("a status");
        if wanted(&status) {
            return status;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "the status never became as wanted; last: {status:#?}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Each agent as `(node, ready)`.
/// Which agents are ready, by node as the test names it.
fn readiness(cluster: &Cluster, status: &ServerStatusRequestStatus) -> Vec<(String, bool)> {
    status
        .node_agents
        .iter()
        .map(|agent: &NodeAgentStatus| (cluster.unscoped(&agent.node), agent.ready))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_status_shows_the_version_and_which_agents_run() {
    let (mut cluster, _) = shop_cluster().await;
    cluster.add_node("node-b").await;
    for node in [NODE, "node-b"] {
        cluster.start_agent(&agent_program(), node, &["--heartbeat-interval", "1s"]);
    }
    cluster.start_coordinator(coordinator_program(), &[]);
    let both = |ready: bool| vec![(NODE.to_owned(), ready), ("node-b".to_owned(), ready)];
    let status = server_status(&cluster, |status| readiness(&cluster, status) == both(true)).await;
    assert_eq!(
        status.server_version.as_deref(),
        Some(env!("CARGO_PKG_VERSION"))
    );
    assert!(status.server_start_time.is_some() && status.processed_timestamp.is_some());
    for agent in &status.node_agents {
        assert_eq!(agent.version.as_deref(), Some(env!("CARGO_PKG_VERSION")));
        assert!(agent.last_seen.is_some());
    }

    // A stopped agent lets go of its Lease before it exits.
    cluster.agent(NODE).terminate().await;
    let status = server_status(&cluster, |_| true).await;
    assert_eq!(
        readiness(&cluster, &status),
        [(NODE.to_owned(), false), ("node-b".to_owned(), true)]
    );

    // A killed one is not ready once its Lease lapses.
    cluster.agent("node-b").kill();
    server_status(&cluster, |status| {
        readiness(&cluster, status) == both(false)
    })
    .await;
}
