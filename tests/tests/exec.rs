//! `pods/exec` on the test API server, driven by `kube`'s own websocket client (`Api::exec`), as
//! the coordinator's hooks drive it: the command's output and its final `Status` come back as
//! the kubelet sends them, a request a real cluster refuses is refused with its `Status`, and
//! a command whose client goes away is killed with everything it started. Commands run through
//! the harness's handler, in the pod's first volume directory.

use std::path::Path;
use std::time::Duration;

use axum::http::Request;
use ferry_tests::harness::{Cluster, VolumeKind};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams, AttachedProcess, PostParams};
use kube::core::Status;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A failure guard for waits, never a timing assertion.
const GUARD: Duration = Duration::from_secs(20);
const NAMESPACE: &str = "app";
const NODE: &str = "node-a";

/// A cluster with the namespace `app` and the running pod `web` on `node-a`, whose one
/// container `app` mounts the emptyDir `data`; and that volume's directory.
/// None, and the test skipped, under an external API server: these are the test server's own.
async fn cluster_with_web() -> Option<(Cluster, Pod, std::path::PathBuf)> {
    let cluster = Cluster::start_on_test_server("its exec").await?;
    cluster.create_namespace(NAMESPACE).await;
    cluster.add_node(NODE).await;
    let (pod, mut dirs) = cluster
        .create_pod(NAMESPACE, "web", NODE, vec![("data", VolumeKind::EmptyDir)])
        .await;
    Some((cluster, pod, dirs.remove(0)))
}

fn pods(cluster: &Cluster) -> Api<Pod> {
    Api::namespaced(cluster.client(), &cluster.scoped(NAMESPACE))
}

async fn exec(cluster: &Cluster, pod: &str, command: &[&str]) -> AttachedProcess {
    pods(cluster)
        .exec(pod, command.to_vec(), &AttachParams::default())
        .await
        .unwrap_or_else(|err| panic!("exec {command:?}: {err}"))
}

/// What an exec printed on stdout and stderr, and its final `Status` as the client read it.
async fn finish(mut attached: AttachedProcess) -> (String, String, Value) {
    let mut stdout = attached.stdout().expect("stdout");
    let mut stderr = attached.stderr().expect("stderr");
    let status = attached.take_status().expect("status");
    let (mut out, mut err) = (String::new(), String::new());
    let (read_out, read_err, status) = tokio::time::timeout(GUARD, async {
        tokio::join!(
            stdout.read_to_string(&mut out),
            stderr.read_to_string(&mut err),
            status
        )
    })
    .await
    .expect("the exec never ended");
    read_out.expect("read stdout");
    read_err.expect("read stderr");
    attached.join().await.expect("the exec's connection");
    let status = status.expect("a Status on the error channel");
    let mut status = serde_json::to_value(status).expect("status");
    // The type meta is the client type's own: the kubelet's Status has none.
    if let Some(fields) = status.as_object_mut() {
        fields.remove("apiVersion");
        fields.remove("kind");
    }
    (out, err, status)
}

/// The API error that refused an exec.
fn refusal(result: Result<AttachedProcess, kube::Error>) -> Box<Status> {
    match result {
        Err(kube::Error::Api(status)) => status,
        Err(other) => panic!("expected an API error, got {other:?}"),
        Ok(_) => panic!("expected an API error, the exec was upgraded"),
    }
}

/// Creates the pod `name` from `spec`, and sets its phase if given.
async fn create_pod(cluster: &Cluster, name: &str, spec: serde_json::Value, phase: Option<&str>) {
    let pod: Pod =
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).expect("pod");
    let pod = pods(cluster)
        .create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
    if let Some(phase) = phase {
        cluster.set_pod_status(&pod, phase, None).await;
    }
}

/// `ServeExec`: stdout and stderr come back on their own channels, the command runs in the
/// pod's volume directory with the pod and container named in its environment, and exit code 0
/// ends with a Success `Status`.
#[tokio::test]
async fn a_command_streams_stdout_and_stderr_apart_and_succeeds() {
    let Some((cluster, _, volume)) = cluster_with_web().await else {
        return;
    };
    let script = "echo out; echo err >&2; echo \"$FERRY_TEST_POD $FERRY_TEST_CONTAINER\" > marker";
    let attached = exec(&cluster, "web", &["sh", "-c", script]).await;
    let (stdout, stderr, status) = finish(attached).await;
    assert_eq!(stdout, "out\n");
    assert_eq!(stderr, "err\n");
    assert_eq!(status, json!({"metadata": {}, "status": "Success"}));
    let marker = std::fs::read_to_string(volume.join("marker")).expect("the marker");
    assert_eq!(cluster.unscoped(&marker), "app/web app\n");
}

/// `ServeExec`: a non-zero exit is a Failure with reason NonZeroExitCode, the runtime's message,
/// and the code as the ExitCode cause.
#[tokio::test]
async fn a_non_zero_exit_is_reported_with_its_code() {
    let Some((cluster, _, _)) = cluster_with_web().await else {
        return;
    };
    let attached = exec(&cluster, "web", &["sh", "-c", "echo partial; exit 3"]).await;
    let (stdout, _, status) = finish(attached).await;
    assert_eq!(stdout, "partial\n");
    let message = "command terminated with non-zero exit code: error executing command \
                   [sh -c echo partial; exit 3], exit code 3";
    assert_eq!(
        status,
        json!({
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": "3"}]},
        })
    );
}

/// `ServeExec`: a command the runtime cannot start, or a runtime error, is an InternalError
/// Failure without an exit code; a test's own handler replaces the harness's.
#[tokio::test]
async fn a_command_that_cannot_run_fails_with_the_runtimes_error() {
    let Some((cluster, _, _)) = cluster_with_web().await else {
        return;
    };
    let attached = exec(&cluster, "web", &["ferry-no-such-program"]).await;
    let (_, _, status) = finish(attached).await;
    assert_eq!(
        (&status["status"], &status["reason"]),
        (&json!("Failure"), &json!("InternalError"))
    );
    assert_eq!(status["code"], 500);
    assert!(
        status["details"]
            .get("causes")
            .is_some_and(|causes| causes[0].get("reason").is_none())
    );
    let message = status["message"].as_str().expect("a message");
    assert!(
        message.starts_with(
            "Internal error occurred: error executing command in container: OCI runtime exec \
             failed: exec failed: unable to start container process: exec: \"ferry-no-such-program\""
        ),
        "{message}"
    );

    cluster.on_exec(|request| Err(format!("no image for {}", request.container)));
    let (_, _, status) = finish(exec(&cluster, "web", &["true"]).await).await;
    assert_eq!(status["reason"], "InternalError");
    assert_eq!(
        status["message"],
        "Internal error occurred: error executing command in container: no image for app"
    );
}

/// v5.channel.k8s.io: what the client writes on stdin reaches the command, and closing stdin
/// (the close frame of channel 0) is its end of file.
#[tokio::test]
async fn stdin_reaches_the_command_until_the_client_closes_it() {
    let Some((cluster, _, _)) = cluster_with_web().await else {
        return;
    };
    let params = AttachParams::default().stdin(true);
    let mut attached = pods(&cluster)
        .exec("web", ["sh", "-c", "cat; echo done"], &params)
        .await
        .expect("exec");
    let mut stdin = attached.stdin().expect("stdin");
    stdin.write_all(b"hello\n").await.expect("write stdin");
    stdin.shutdown().await.expect("close stdin");
    drop(stdin);
    let (stdout, _, status) = finish(attached).await;
    assert_eq!(stdout, "hello\ndone\n");
    assert_eq!(status["status"], "Success");
}

/// Whether the process `pid` still runs: it exists and is no zombie waiting to be reaped.
fn alive(pid: &str) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
    !state.is_some_and(|rest| rest.starts_with('Z'))
}

/// The pids a command wrote to `file`, once it has written `count` of them.
async fn written_pids(file: &Path, count: usize) -> Vec<String> {
    let started = tokio::time::Instant::now();
    loop {
        let pids: Vec<String> = std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        if pids.len() == count {
            return pids;
        }
        assert!(
            started.elapsed() < GUARD,
            "the command never wrote its pids"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The kubelet ends an exec whose client is gone: the command and the processes it started
/// are killed when the client drops its attached process.
#[tokio::test]
async fn a_hanging_command_is_killed_with_its_children_when_the_client_goes_away() {
    let Some((cluster, _, volume)) = cluster_with_web().await else {
        return;
    };
    let script = "echo $$ > pids; sleep 1000 & echo $! >> pids; wait";
    let attached = exec(&cluster, "web", &["sh", "-c", script]).await;
    let pids = written_pids(&volume.join("pids"), 2).await;
    assert!(pids.iter().all(|pid| alive(pid)), "{pids:?} run");
    drop(attached);
    let started = tokio::time::Instant::now();
    while pids.iter().any(|pid| alive(pid)) {
        assert!(started.elapsed() < GUARD, "{pids:?} still run");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `streamLocation` and the kubelet: a missing pod is 404; a completed pod, a pod without a node
/// or not yet running, and a container the pod does not have are 400 with the real message.
#[tokio::test]
async fn an_exec_where_no_container_runs_is_refused() {
    let Some((cluster, _, _)) = cluster_with_web().await else {
        return;
    };
    let spec = |node: Option<&str>| {
        let mut spec = json!({"containers": [{"name": "app", "image": "app:1"}]});
        if let Some(node) = node {
            spec["nodeName"] = json!(node);
        }
        spec
    };
    create_pod(&cluster, "done", spec(Some(NODE)), Some("Succeeded")).await;
    create_pod(&cluster, "unscheduled", spec(None), None).await;
    create_pod(&cluster, "starting", spec(Some(NODE)), Some("Pending")).await;
    let cases = [
        ("gone", None, 404, "pods \"gone\" not found"),
        (
            "done",
            None,
            400,
            "cannot exec into a container in a completed pod; current phase is Succeeded",
        ),
        (
            "unscheduled",
            None,
            400,
            "pod unscheduled does not have a host assigned",
        ),
        (
            "starting",
            None,
            400,
            "unable to upgrade connection: container not found (\"app\")",
        ),
        (
            "web",
            Some("sidecar"),
            400,
            "container sidecar is not valid for pod web",
        ),
    ];
    for (pod, container, code, message) in cases {
        let params = AttachParams {
            container: container.map(str::to_owned),
            ..AttachParams::default()
        };
        let status = refusal(pods(&cluster).exec(pod, ["true"], &params).await);
        assert_eq!(
            (status.code, status.message.as_str()),
            (code, message),
            "{pod}"
        );
    }
}

/// `streamLocation`: without a container name, a pod of several containers refuses the exec
/// and names them; the named one runs.
#[tokio::test]
async fn a_pod_of_several_containers_needs_the_container_named() {
    let Some((cluster, _, _)) = cluster_with_web().await else {
        return;
    };
    let spec = json!({
        "nodeName": NODE,
        "containers": [{"name": "app", "image": "app:1"}, {"name": "log", "image": "log:1"}],
    });
    create_pod(&cluster, "pair", spec, Some("Running")).await;
    let status = refusal(
        pods(&cluster)
            .exec("pair", ["true"], &AttachParams::default())
            .await,
    );
    assert_eq!(status.code, 400);
    assert_eq!(status.reason, "BadRequest");
    assert_eq!(
        status.message,
        "a container name must be specified for pod pair, choose one of: [app log]"
    );
    let params = AttachParams::default().container("log");
    let attached = pods(&cluster)
        .exec("pair", ["sh", "-c", "echo $FERRY_TEST_CONTAINER"], &params)
        .await
        .expect("exec in the named container");
    assert_eq!(finish(attached).await.0, "log\n");
}

/// RBAC sees an exec as `create` on `pods/exec`; without it, the exec is 403 Forbidden.
#[tokio::test]
async fn a_forbidden_exec_is_403() {
    let Some((cluster, _, _)) = cluster_with_web().await else {
        return;
    };
    cluster.forbid("create", "", "pods/exec");
    let status = refusal(
        pods(&cluster)
            .exec("web", ["true"], &AttachParams::default())
            .await,
    );
    assert_eq!(status.code, 403);
    assert_eq!(status.reason, "Forbidden");
    assert_eq!(
        cluster.unscoped(&status.message),
        "pods \"web\" is forbidden: User \"system:admin\" \
         cannot create resource \"pods/exec\" in API group \"\" in the namespace \"app\""
    );
}

/// The upgrade-aware proxy wants an upgrade (400 "Upgrade request required"), and the kubelet's
/// websocket handshake a channel protocol it speaks (a bare 403 otherwise).
#[tokio::test]
async fn an_exec_without_a_websocket_of_the_channel_protocol_is_refused() {
    let Some((cluster, _, _)) = cluster_with_web().await else {
        return;
    };
    let path = format!(
        "/api/v1/namespaces/{}/pods/web/exec?command=true&stdout=true",
        cluster.scoped(NAMESPACE)
    );
    let plain = Request::get(&path).body(Vec::new()).expect("request");
    match cluster.client().request_text(plain).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 400);
            assert_eq!(status.message, "Upgrade request required");
        }
        other => panic!("expected a 400, got {other:?}"),
    }
    let upgrade = Request::get(&path)
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("sec-websocket-protocol", "channel.k8s.io")
        .body(kube::client::Body::from(Vec::new()))
        .expect("request");
    let response = cluster.client().send(upgrade).await.expect("a response");
    assert_eq!(response.status(), 403);
}
