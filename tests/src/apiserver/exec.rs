//! `pods/exec`: `GET` or `POST /api/v1/namespaces/<ns>/pods/<name>/exec?command=...` runs a
//! command in a container of a running pod and streams its output over a websocket, as the
//! real server (which hands the connection to the kubelet of the pod's node) does.
//!
//! Before the upgrade, a request is refused as a real cluster refuses it: the RBAC authorizer
//! asks for `create` on `pods/exec` whatever the method; a pod that does not exist is 404; the
//! registry's `ExecLocation` picks the container and wants a node; the kubelet wants the
//! container running, a command and at least one stream. Each refusal is a 400 `Status`.
//!
//! After the upgrade, the channel protocol of `k8s.io/apimachinery`'s `wsstream` is spoken
//! (`v5.channel.k8s.io` when offered, else `v4.channel.k8s.io`): every binary frame starts with
//! its channel, 0 stdin, 1 stdout, 2 stderr, 3 the final `Status`, and v5's 255 closes a
//! channel. What the kubelet hands the container runtime, the test server hands the handler a
//! test registered ([`TestApiServer::on_exec`](super::TestApiServer::on_exec)): it returns the
//! process to run in place of the container's. The process is killed, with every process it
//! started, when the client goes away or the session ends.

use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, PoisonError, RwLock};

use axum::Extension;
use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::stream::{BoxStream, SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;
use tokio_util::io::ReaderStream;
use tokio_util::sync::CancellationToken;

use super::authn::User;
use super::authz::{self, Attributes};
use super::errors::{ApiError, GroupResource};
use super::handlers::App;
use super::store::ObjectKey;

/// The channels of the stream protocol (`remotecommand/constants.go`).
const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const STATUS: u8 = 3;
/// v5: a frame `[255, channel]` closes the channel.
const CLOSE: u8 = 255;

/// One exec, as the handler a test registered sees it.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
    /// The pod as the server stores it.
    pub object: Value,
    /// The container the command runs in: the one the request named, or the pod's only one.
    pub container: String,
    /// The command and its arguments, never empty.
    pub command: Vec<String>,
}

/// What stands for the container runtime: it makes the process of an exec, or says why it
/// cannot, as an OCI runtime error does.
pub type ExecHandler = dyn Fn(&ExecRequest) -> Result<Command, String> + Send + Sync;

/// The handler a test registered; exec fails while there is none.
#[derive(Default)]
pub struct Runtime {
    handler: RwLock<Option<Arc<ExecHandler>>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let registered = self
            .handler
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some();
        f.debug_struct("Runtime")
            .field("registered", &registered)
            .finish()
    }
}

impl Runtime {
    /// Makes `handler` run every exec from now on, in place of the one before.
    pub fn register(&self, handler: Arc<ExecHandler>) {
        *self.handler.write().unwrap_or_else(PoisonError::into_inner) = Some(handler);
    }

    fn command(&self, request: &ExecRequest) -> Result<Command, String> {
        let handler = self
            .handler
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match handler {
            Some(handler) => handler(request),
            None => Err(
                "the test API server has no exec handler; register one with \
                 TestApiServer::on_exec"
                    .to_owned(),
            ),
        }
    }
}

/// The query of an exec request (`PodExecOptions`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct ExecOptions {
    command: Vec<String>,
    container: Option<String>,
    streams: Streams,
}

/// The streams a client attaches.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Streams {
    stdin: bool,
    stdout: bool,
    stderr: bool,
}

/// `strconv.ParseBool`'s true, which the parameter codec reads booleans with.
fn is_true(value: &str) -> bool {
    matches!(value, "1" | "t" | "T" | "true" | "TRUE" | "True")
}

impl ExecOptions {
    /// The options of a query; `command` repeats, once per argument. The kubelet has no
    /// terminal to give, and with `tty` it drops stderr, as the real one does.
    fn parse(query: &[(String, String)]) -> Self {
        let mut options = Self::default();
        let mut tty = false;
        for (key, value) in query {
            match key.as_str() {
                "command" => options.command.push(value.clone()),
                "container" if !value.is_empty() => options.container = Some(value.clone()),
                "stdin" => options.streams.stdin = is_true(value),
                "stdout" => options.streams.stdout = is_true(value),
                "stderr" => options.streams.stderr = is_true(value),
                "tty" => tty = is_true(value),
                _ => {}
            }
        }
        options.streams.stderr &= !tty;
        options
    }
}

fn pods() -> GroupResource {
    GroupResource {
        group: String::new(),
        resource: "pods".to_owned(),
    }
}

/// The names of a list of containers, as `getContainerNames` joins them.
fn container_names(pod: &Value, list: &str) -> Vec<String> {
    pod.pointer(&format!("/spec/{list}"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str))
        .map(str::to_owned)
        .collect()
}

/// The container an exec runs in (`streamLocation`): the one named, which the pod must have,
/// or the pod's only container.
fn container(pod: &Value, name: &str, wanted: Option<&str>) -> Result<String, ApiError> {
    let containers = container_names(pod, "containers");
    if let Some(wanted) = wanted {
        return match containers.iter().any(|c| c == wanted) {
            true => Ok(wanted.to_owned()),
            false => Err(ApiError::bad_request(format!(
                "container {wanted} is not valid for pod {name}"
            ))),
        };
    }
    match containers.as_slice() {
        [only] => Ok(only.clone()),
        [] => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {name}"
        ))),
        many => {
            let mut message = format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                many.join(" ")
            );
            let init = container_names(pod, "initContainers");
            if !init.is_empty() {
                message.push_str(&format!(
                    " or one of the init containers: [{}]",
                    init.join(" ")
                ));
            }
            Err(ApiError::bad_request(message))
        }
    }
}

/// Whether the pod can run a command now. `kubectl exec` refuses a completed pod itself; the
/// server wants a node for the pod (`streamLocation`), and that node's kubelet a running
/// container.
fn check_running(pod: &Value, name: &str, container: &str) -> Result<(), ApiError> {
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("Pending");
    if matches!(phase, "Succeeded" | "Failed") {
        return Err(ApiError::bad_request(format!(
            "cannot exec into a container in a completed pod; current phase is {phase}"
        )));
    }
    let node = pod.pointer("/spec/nodeName").and_then(Value::as_str);
    if node.is_none_or(str::is_empty) {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    if phase != "Running" {
        return Err(ApiError::bad_request(format!(
            "unable to upgrade connection: container not found ({container:?})"
        )));
    }
    Ok(())
}

/// What the kubelet wants of the options: a command (as `kubectl exec` says), and at least one
/// stream (`remotecommand.NewOptions`).
fn check_options(options: &ExecOptions) -> Result<(), ApiError> {
    if options.command.is_empty() {
        return Err(ApiError::bad_request(
            "you must specify at least one command for the container",
        ));
    }
    let Streams {
        stdin,
        stdout,
        stderr,
    } = options.streams;
    if !(stdin || stdout || stderr) {
        return Err(ApiError::bad_request(
            "you must specify at least 1 of stdin, stdout, stderr",
        ));
    }
    Ok(())
}

/// The channel protocol of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    V4,
    /// v4 and the close of a channel, which lets a client end stdin.
    V5,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Self::V4 => "v4.channel.k8s.io",
            Self::V5 => "v5.channel.k8s.io",
        }
    }

    /// The newest protocol the client offers.
    fn choose(offered: &[&HeaderValue]) -> Option<Self> {
        [Self::V5, Self::V4]
            .into_iter()
            .find(|protocol| offered.iter().any(|o| *o == protocol.name()))
    }
}

/// Serves one exec request.
pub async fn handle(
    State(app): State<Arc<App>>,
    Extension(user): Extension<User>,
    Path((namespace, name)): Path<(String, String)>,
    Query(query): Query<Vec<(String, String)>>,
    request: Request,
) -> Response {
    let options = ExecOptions::parse(&query);
    match upgrade(&app, &user, namespace, name, options, request).await {
        Ok(response) | Err(response) => response,
    }
}

/// The exec of a request from `user` that passes every check: the pod it runs in, and what it
/// runs.
fn admit(
    app: &App,
    user: &User,
    namespace: String,
    name: String,
    options: &ExecOptions,
) -> Result<ExecRequest, ApiError> {
    let attributes = Attributes {
        verb: "create",
        group: String::new(),
        resource: "pods".to_owned(),
        subresource: Some("exec".to_owned()),
        namespace: Some(namespace.clone()),
        name: Some(name.clone()),
    };
    let pod = {
        let state = app.store.lock();
        authz::authorize(&state, user, &attributes)?;
        let key = ObjectKey {
            namespace: namespace.clone(),
            name: name.clone(),
        };
        state
            .get(&(String::new(), "pods".to_owned()), &key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&pods(), &name))?
    };
    let container = container(&pod, &name, options.container.as_deref())?;
    check_running(&pod, &name, &container)?;
    check_options(options)?;
    Ok(ExecRequest {
        namespace,
        pod: name,
        object: pod,
        container,
        command: options.command.clone(),
    })
}

/// Checks the request, then upgrades the connection and runs the session on it.
async fn upgrade(
    app: &App,
    user: &User,
    namespace: String,
    name: String,
    options: ExecOptions,
    request: Request,
) -> Result<Response, Response> {
    if !matches!(*request.method(), Method::GET | Method::POST) {
        let resource = GroupResource {
            group: String::new(),
            resource: "pods/exec".to_owned(),
        };
        let method = request.method().as_str();
        return Err(ApiError::method_not_allowed(method, &resource).into_response());
    }
    let exec = admit(app, user, namespace, name, &options).map_err(IntoResponse::into_response)?;
    // A websocket upgrade is a GET to axum; the real server takes a POST's upgrade too.
    let (mut parts, _) = request.into_parts();
    parts.method = Method::GET;
    let websocket = WebSocketUpgrade::from_request_parts(&mut parts, &())
        .await
        .map_err(|_| ApiError::bad_request("Upgrade request required").into_response())?;
    let offered: Vec<_> = websocket.requested_protocols().collect();
    let Some(protocol) = Protocol::choose(&offered) else {
        // The kubelet's websocket handshake refuses other protocols with a bare 403.
        let offered: Vec<_> = offered.iter().filter_map(|o| o.to_str().ok()).collect();
        let message = format!(
            "requested protocol(s) are not supported: [{}]; supports [{} {}]",
            offered.join(" "),
            Protocol::V5.name(),
            Protocol::V4.name()
        );
        return Err((StatusCode::FORBIDDEN, message).into_response());
    };
    let session = Session {
        command: app.runtime.command(&exec),
        command_line: exec.command,
        streams: options.streams,
        protocol,
    };
    let shutdown = app.watch.shutdown.clone();
    Ok(websocket
        .protocols([protocol.name()])
        .on_upgrade(move |socket| session.run(socket, shutdown)))
}

/// A binary frame on `channel`.
fn frame(channel: u8, data: &[u8]) -> Message {
    let mut bytes = Vec::with_capacity(data.len() + 1);
    bytes.push(channel);
    bytes.extend_from_slice(data);
    Message::Binary(bytes.into())
}

/// The `Status` of a command that exited with 0.
fn success() -> Value {
    json!({"metadata": {}, "status": "Success"})
}

/// The `Status` of a command that exited otherwise, as the kubelet's `ServeExec` writes it from
/// the runtime's `CodeExitError`. A signal ends a process in a container with 128 plus the
/// signal, as runc reports it.
fn exited(command_line: &[String], status: ExitStatus) -> Value {
    let code = match (status.code(), status.signal()) {
        (Some(0), _) => return success(),
        (Some(code), _) => code,
        (None, signal) => 128 + signal.unwrap_or_default(),
    };
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!(
            "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
            command_line.join(" ")
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

/// The `Status` of a command the runtime could not run (`NewInternalError`).
fn not_run(why: &str) -> Value {
    let error = format!("error executing command in container: {why}");
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("Internal error occurred: {error}"),
        "reason": "InternalError",
        "details": {"causes": [{"message": error}]},
        "code": 500,
    })
}

type Sink = SplitSink<WebSocket, Message>;
type Incoming = SplitStream<WebSocket>;

/// An upgraded exec: what to run, and how to speak to the client.
struct Session {
    /// The handler's process, or why it has none.
    command: Result<Command, String>,
    command_line: Vec<String>,
    streams: Streams,
    protocol: Protocol,
}

impl Session {
    /// Opens the channels, runs the command, and ends with its `Status` and a close; or, when
    /// the client goes away or the server stops first, kills it.
    async fn run(self, socket: WebSocket, shutdown: CancellationToken) {
        let (mut sink, mut incoming) = socket.split();
        let open = [
            (self.streams.stdout, STDOUT),
            (self.streams.stderr, STDERR),
            (true, STATUS),
        ];
        // wsstream opens each channel it writes on with an empty frame.
        for (_, channel) in open.into_iter().filter(|(open, _)| *open) {
            if sink.send(frame(channel, &[])).await.is_err() {
                return;
            }
        }
        let status = match start(self.command, self.streams) {
            Ok(mut process) => tokio::select! {
                status = process.pump(&mut sink, &mut incoming, self.protocol) => {
                    status.map(|exit| match exit {
                        Ok(exit) => exited(&self.command_line, exit),
                        Err(error) => not_run(&error.to_string()),
                    })
                }
                () = shutdown.cancelled() => None,
            },
            Err(status) => Some(status),
        };
        if let Some(status) = status {
            let _ = sink
                .send(frame(STATUS, status.to_string().as_bytes()))
                .await;
            let _ = sink.close().await;
        }
    }
}

/// Starts the handler's process in a process group of its own, with the attached streams
/// piped and the others null; or the `Status` of why it cannot run.
fn start(command: Result<Command, String>, streams: Streams) -> Result<Process, Value> {
    let piped = |attached: bool| match attached {
        true => Stdio::piped(),
        false => Stdio::null(),
    };
    let mut command = command.map_err(|why| not_run(&why))?;
    command
        .stdin(piped(streams.stdin))
        .stdout(piped(streams.stdout))
        .stderr(piped(streams.stderr))
        .kill_on_drop(true)
        .process_group(0);
    let mut child = command.spawn().map_err(|error| {
        let program = command.as_std().get_program();
        not_run(&format!(
            "OCI runtime exec failed: exec failed: unable to start container process: \
             exec: {program:?}: {error}"
        ))
    })?;
    let group = child
        .id()
        .and_then(|pid| i32::try_from(pid).ok())
        .map(|pid| ProcessGroup(Pid::from_raw(pid)));
    let stdout = child
        .stdout
        .take()
        .map(|out| ReaderStream::new(out).map(|chunk| (STDOUT, chunk)).boxed());
    let stderr = child
        .stderr
        .take()
        .map(|err| ReaderStream::new(err).map(|chunk| (STDERR, chunk)).boxed());
    Ok(Process {
        stdin: child.stdin.take().map(forward_stdin),
        output: futures::stream::select_all(stdout.into_iter().chain(stderr)),
        child,
        _group: group,
    })
}

/// Writes what the client sends on stdin to the process, in order and apart from the
/// session's loop, so that a process that does not read cannot hold its output back. The
/// process's stdin closes once the sender is dropped and what it sent is written.
fn forward_stdin(mut stdin: ChildStdin) -> mpsc::UnboundedSender<Bytes> {
    let (sender, mut receiver) = mpsc::unbounded_channel::<Bytes>();
    tokio::spawn(async move {
        while let Some(bytes) = receiver.recv().await {
            if stdin.write_all(&bytes).await.is_err() {
                break;
            }
        }
    });
    sender
}

/// Kills what is left of a command's process group once its session ends, as the end of a
/// container takes everything an exec started with it.
struct ProcessGroup(Pid);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        let _ = killpg(self.0, Signal::SIGKILL);
    }
}

/// A running command: killed, with its process group, when dropped.
struct Process {
    child: Child,
    _group: Option<ProcessGroup>,
    /// Where stdin goes, while the client may still write to it.
    stdin: Option<mpsc::UnboundedSender<Bytes>>,
    /// Stdout and stderr, each chunk with its channel.
    output: futures::stream::SelectAll<BoxStream<'static, (u8, std::io::Result<Bytes>)>>,
}

impl Process {
    /// Streams the output to the client and its stdin to the process until the process has
    /// exited and its output is closed; `None` when the client goes away first.
    async fn pump(
        &mut self,
        sink: &mut Sink,
        incoming: &mut Incoming,
        protocol: Protocol,
    ) -> Option<std::io::Result<ExitStatus>> {
        let mut exit = None;
        let mut output_open = true;
        loop {
            if !output_open && exit.is_some() {
                return exit;
            }
            tokio::select! {
                chunk = self.output.next(), if output_open => match chunk {
                    Some((channel, Ok(bytes))) => {
                        if sink.send(frame(channel, &bytes)).await.is_err() {
                            return None;
                        }
                    }
                    Some((_, Err(_))) => {}
                    None => output_open = false,
                },
                waited = self.child.wait(), if exit.is_none() => exit = Some(waited),
                message = incoming.next() => {
                    if !self.input(message, protocol) {
                        return None;
                    }
                }
            }
        }
    }

    /// Applies a frame from the client: data for stdin, or v5's close of stdin. False once the
    /// client has closed the connection or lost it.
    fn input(&mut self, message: Option<Result<Message, axum::Error>>, protocol: Protocol) -> bool {
        let data = match message {
            Some(Ok(Message::Binary(data))) => data,
            Some(Ok(Message::Close(_)) | Err(_)) | None => return false,
            Some(Ok(_)) => return true,
        };
        match data.split_first() {
            Some((&STDIN, bytes)) => {
                if let Some(stdin) = &self.stdin {
                    let _ = stdin.send(Bytes::copy_from_slice(bytes));
                }
            }
            Some((&CLOSE, [STDIN])) if protocol == Protocol::V5 => self.stdin = None,
            _ => {}
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn message(error: ApiError) -> Value {
        let status = error.status();
        assert_eq!(status["code"], 400);
        assert_eq!(status["reason"], "BadRequest");
        status["message"].clone()
    }

    #[test]
    fn the_query_gives_the_command_in_order_the_container_and_the_streams() {
        let options = ExecOptions::parse(&query(&[
            ("command", "sh"),
            ("container", "app"),
            ("command", "-c"),
            ("stdout", "true"),
            ("stdin", "1"),
            ("command", "echo hi"),
            ("stderr", "false"),
        ]));
        assert_eq!(options.command, ["sh", "-c", "echo hi"]);
        assert_eq!(options.container.as_deref(), Some("app"));
        let streams = Streams {
            stdin: true,
            stdout: true,
            stderr: false,
        };
        assert_eq!(options.streams, streams);
        let tty = ExecOptions::parse(&query(&[("stderr", "true"), ("tty", "true")]));
        assert!(!tty.streams.stderr, "a terminal has no stderr");
    }

    #[test]
    fn the_container_is_the_one_named_or_the_only_one() {
        let one = json!({"spec": {"containers": [{"name": "app"}]}});
        assert_eq!(container(&one, "p", None).unwrap(), "app");
        assert_eq!(container(&one, "p", Some("app")).unwrap(), "app");
        assert_eq!(
            message(container(&one, "p", Some("log")).unwrap_err()),
            "container log is not valid for pod p"
        );
        let two = json!({"spec": {
            "containers": [{"name": "app"}, {"name": "log"}],
            "initContainers": [{"name": "setup"}],
        }});
        assert_eq!(
            message(container(&two, "p", None).unwrap_err()),
            "a container name must be specified for pod p, choose one of: [app log] \
             or one of the init containers: [setup]"
        );
        assert_eq!(
            message(container(&json!({"spec": {}}), "p", None).unwrap_err()),
            "a container name must be specified for pod p"
        );
    }

    #[test]
    fn only_a_running_pod_on_a_node_runs_commands() {
        let pod = |node: Option<&str>, phase: &str| json!({"spec": {"nodeName": node}, "status": {"phase": phase}});
        assert!(check_running(&pod(Some("n"), "Running"), "p", "c").is_ok());
        let cases = [
            (
                pod(Some("n"), "Failed"),
                "cannot exec into a container in a completed pod; current phase is Failed",
            ),
            (pod(None, "Pending"), "pod p does not have a host assigned"),
            (
                pod(Some("n"), "Pending"),
                "unable to upgrade connection: container not found (\"c\")",
            ),
        ];
        for (pod, want) in cases {
            assert_eq!(message(check_running(&pod, "p", "c").unwrap_err()), want);
        }
    }

    #[test]
    fn the_kubelet_wants_a_command_and_a_stream() {
        let mut options = ExecOptions {
            command: vec!["true".to_owned()],
            ..ExecOptions::default()
        };
        assert_eq!(
            message(check_options(&options).unwrap_err()),
            "you must specify at least 1 of stdin, stdout, stderr"
        );
        options.streams.stdin = true;
        assert!(check_options(&options).is_ok());
        options.command.clear();
        assert_eq!(
            message(check_options(&options).unwrap_err()),
            "you must specify at least one command for the container"
        );
    }

    #[test]
    fn v5_is_chosen_over_v4_and_nothing_else_is_spoken() {
        let offer = |names: &[&'static str]| -> Option<Protocol> {
            let values: Vec<HeaderValue> =
                names.iter().map(|n| HeaderValue::from_static(n)).collect();
            Protocol::choose(&values.iter().collect::<Vec<_>>())
        };
        let both = ["v4.channel.k8s.io", "v5.channel.k8s.io"];
        assert_eq!(offer(&both), Some(Protocol::V5));
        assert_eq!(offer(&["v4.channel.k8s.io"]), Some(Protocol::V4));
        assert_eq!(offer(&["channel.k8s.io", "base64.channel.k8s.io"]), None);
        assert_eq!(offer(&[]), None);
    }

    #[test]
    fn the_final_status_is_the_kubelets() {
        let command = ["sh".to_owned(), "-c".to_owned(), "exit 3".to_owned()];
        assert_eq!(
            exited(&command, ExitStatus::from_raw(0)),
            json!({"metadata": {}, "status": "Success"})
        );
        assert_eq!(
            exited(&command, ExitStatus::from_raw(3 << 8)),
            json!({
                "metadata": {},
                "status": "Failure",
                "message": "command terminated with non-zero exit code: error executing \
                            command [sh -c exit 3], exit code 3",
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": "3"}]},
            })
        );
        let killed = exited(&command, ExitStatus::from_raw(9));
        assert_eq!(killed["details"]["causes"][0]["message"], "137");
        assert_eq!(
            not_run("boom"),
            json!({
                "metadata": {},
                "status": "Failure",
                "message": "Internal error occurred: error executing command in container: boom",
                "reason": "InternalError",
                "details": {"causes": [{"message": "error executing command in container: boom"}]},
                "code": 500,
            })
        );
    }
}
