//! Ferry's processes as the harness runs them: the node agents and the coordinator as child
//! processes with their logs and admin servers, and the `ferry` command line.

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{COORDINATOR_SERVICE, COORDINATOR_SERVICE_PORT, Cluster, DEADLINE, Server};

/// The role of the coordinator among the harness's processes, in their logs.
const COORDINATOR: &str = "coordinator";

/// What a finished command printed, and its exit code.
#[derive(Debug, Clone)]
pub struct CommandOutput {
    /// The exit code; `None` when a signal ended it.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl From<std::process::Output> for CommandOutput {
    fn from(output: std::process::Output) -> Self {
        Self {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl CommandOutput {
    /// The stdout of a command that must have succeeded; panics with its stderr otherwise.
    pub fn success(&self) -> &str {
        assert_eq!(self.code, Some(0), "command failed: {self:?}");
        &self.stdout
    }
}

/// A Ferry process the harness started: a node agent or the coordinator.
pub struct Process {
    /// The node of a node agent, or `coordinator`.
    role: String,
    metrics: SocketAddr,
    child: Child,
    log: PathBuf,
}

impl Cluster {
    /// Starts `ferry-node-agent run` for `node` (as the test names it), with `args` added.
    pub fn start_agent(&mut self, program: &Path, node: &str, args: &[&str]) -> &mut Process {
        let host_pods = self.host_pods(node);
        let stored = self.scoped(node);
        let kubeconfig = (self.identities.as_ref()).map(|identities| identities.node_agent.clone());
        self.start_process(
            program,
            node,
            kubeconfig,
            args,
            &[
                ("NODE_NAME", stored.as_ref()),
                ("FERRY_HOST_PODS", host_pods.as_os_str()),
            ],
        )
    }

    /// Starts `ferry-coordinator run`, with `args` added. It is [`Cluster::coordinator`] until
    /// another is started, and `coordinator` in the logs. The Service [`COORDINATOR_SERVICE`]
    /// (port `http`, [`COORDINATOR_SERVICE_PORT`]) is made if missing, and its endpoint is this
    /// coordinator's HTTP server, so that the service proxy reaches it as in a cluster. On an
    /// external server, whose service proxy cannot reach the harness's processes, there is
    /// no Service.
    pub fn start_coordinator(&mut self, program: &Path, args: &[&str]) -> &mut Process {
        if let Server::Local(server) = &self.server {
            server
                .ensure_service(
                    &self.namespace,
                    COORDINATOR_SERVICE,
                    "http",
                    COORDINATOR_SERVICE_PORT,
                )
                .expect("create the coordinator's Service");
        }
        let kubeconfig =
            (self.identities.as_ref()).map(|identities| identities.coordinator.clone());
        let process = self.start_process(program, COORDINATOR, kubeconfig, args, &[]);
        let address = process.metrics;
        if let Server::Local(server) = &self.server {
            server.register_service(&self.namespace, COORDINATOR_SERVICE, address);
        }
        self.process(COORDINATOR).expect("just started")
    }

    fn start_process(
        &mut self,
        program: &Path,
        role: &str,
        kubeconfig: Option<PathBuf>,
        args: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> &mut Process {
        let metrics = free_port();
        let log = self.path(&format!("{role}-{}.log", self.processes.len()));
        let log_file = fs::File::create(&log).expect("process log");
        let child = Command::new(program)
            .arg("run")
            .args(args)
            .envs(env.iter().copied())
            .env(
                "KUBECONFIG",
                kubeconfig.unwrap_or_else(|| self.kubeconfig.clone()),
            )
            .env("FERRY_NAMESPACE", &self.namespace)
            .env("FERRY_METRICS_ADDRESS", metrics.to_string())
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|err| panic!("start {}: {err}", program.display()));
        self.processes.push(Process {
            role: role.to_owned(),
            metrics,
            child,
            log,
        });
        self.processes.last_mut().expect("just pushed")
    }

    /// The node agent last started on `node`.
    pub fn agent(&mut self, node: &str) -> &mut Process {
        self.process(node).expect("no agent on that node")
    }

    /// The coordinator last started.
    pub fn coordinator(&mut self) -> &mut Process {
        self.process(COORDINATOR)
            .expect("no coordinator was started")
    }

    fn process(&mut self, role: &str) -> Option<&mut Process> {
        self.processes
            .iter_mut()
            .rev()
            .find(|process| process.role == role)
    }

    /// The `ferry` command line `program`, set to work on this cluster, its stdin closed.
    pub fn ferry_command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        command
            .env("KUBECONFIG", &self.kubeconfig)
            .env("FERRY_NAMESPACE", &self.namespace)
            .env("NO_PROXY", "127.0.0.1,localhost")
            .stdin(Stdio::null());
        command
    }

    /// Runs the `ferry` command line `program` against this cluster with `args`, its output
    /// captured, as a script without a terminal runs it. The test server goes on serving
    /// meanwhile.
    pub async fn ferry(&self, program: &Path, args: &[&str]) -> CommandOutput {
        let output = tokio::process::Command::from(self.ferry_command(program))
            .args(args)
            .output()
            .await
            .unwrap_or_else(|err| panic!("run {}: {err}", program.display()));
        CommandOutput::from(output)
    }

    /// Every process's log, each headed by its role, for a failure message.
    pub fn logs(&self) -> String {
        self.processes
            .iter()
            .map(|process| {
                format!(
                    "--- {} ({}):\n{}",
                    process.role,
                    process.log.display(),
                    process.log()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Process {
    /// Sends SIGTERM and waits for the process to exit, without blocking the runtime that
    /// serves the API the process still talks to while it stops.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for process") {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the process to exit by itself, and returns how it ended. Past the deadline
    /// the test fails with its log.
    pub async fn exited(&mut self) -> std::process::ExitStatus {
        let started = tokio::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for process") {
                return status;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "{} never exited:\n{}",
                self.role,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the process at once, as a node crash or an OOM kill would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Where the process serves `/metrics`.
    pub fn metrics_address(&self) -> SocketAddr {
        self.metrics
    }

    /// The process's `/metrics` text.
    pub fn metrics_text(&self) -> String {
        self.admin("/metrics").unwrap_or_default()
    }

    /// The process's `/metrics` text once it shows `line`: counters move just after the status
    /// that a test waits for is written. Past the deadline the test fails with the metrics.
    pub async fn metrics_showing(&self, line: &str) -> String {
        let started = tokio::time::Instant::now();
        loop {
            let metrics = self.metrics_text();
            if metrics.contains(line) {
                return metrics;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "no {line} in the metrics of {}:\n{metrics}\n{}",
                self.role,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The body of a path of the process's admin server, or None unless it answers 200.
    pub fn admin(&self, path: &str) -> Option<String> {
        let output = Command::new("curl")
            .args(["-sf", "--noproxy", "*"])
            .arg(format!("http://{}{path}", self.metrics))
            .output()
            .expect("run curl");
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    }
}
/// `promtool check metrics`, Prometheus's own linter, accepts the exposition.
pub fn assert_promtool_accepts(metrics: &str) {
    use std::io::Write;
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; scripts/install-test-deps.sh installs it)");
    promtool
        .stdin
        .take()
        .expect("promtool's stdin")
        .write_all(metrics.as_bytes())
        .expect("write to promtool");
    let output = promtool.wait_with_output().expect("run promtool");
    assert!(
        output.status.success(),
        "promtool: {}{}\n{metrics}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A port nothing listens on right now.
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("find a free port")
}
