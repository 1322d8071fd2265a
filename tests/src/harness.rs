//! A small cluster for end-to-end tests: the test API server, a temporary `host_pods` directory
//! per node, and Ferry's real binaries as child processes. The harness plays the kubelet: it
//! registers nodes, binds pods, sets their status, makes and removes their volume
//! directories, and runs the commands of `pods/exec` in them. Tests create objects through it, wait for them to finish, and read the
//! processes' logs and metrics.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ferry_shared::crd::PodVolumeTransfer;
use ferry_shared::crd::{
    Backup, OperationPhase, PodVolumeBackup, PodVolumeBackupSpec, PodVolumePhase, PodVolumeRestore,
    Restore,
};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStatus, Node, PersistentVolume,
    PersistentVolumeClaim, Pod, PodSpec, PodStatus, Secret, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tempfile::TempDir;

use crate::apiserver::{ExecRequest, TestApiServer};
use crate::fixtures;

/// Where Ferry is installed in the test cluster.
pub const INSTALL_NAMESPACE: &str = "ferry";

/// The Service in front of the coordinator's HTTP server, as `deploy/base` names it.
pub const COORDINATOR_SERVICE: &str = "ferry-coordinator";
/// Its port.
pub const COORDINATOR_SERVICE_PORT: u16 = 8085;
/// The coordinator's Deployment and the node agents' DaemonSet, as `ferry install` names them.
const INSTALLED_COORDINATOR: &str = "ferry-coordinator";
const INSTALLED_NODE_AGENT: &str = "ferry-node-agent";

/// The role of the coordinator among the harness's processes, in their logs.
const COORDINATOR: &str = "coordinator";

/// How long a wait may take before the test fails and shows what it saw.
pub const DEADLINE: Duration = Duration::from_secs(120);

/// The kubelet's plugin directory of a volume kind.
pub enum VolumeKind {
    EmptyDir,
    /// A PVC bound to a CSI persistent volume of this name.
    CsiClaim {
        claim: String,
        volume: String,
    },
}

/// A running test cluster.
pub struct Cluster {
    server: TestApiServer,
    dir: TempDir,
    kubeconfig: PathBuf,
    processes: Vec<Process>,
    exec_dirs: ExecDirs,
}

/// Where the harness's container runtime runs a pod's commands: the directory of the pod's
/// first volume, once the harness has made it, or else a scratch directory of the pod's own.
#[derive(Debug, Clone)]
struct ExecDirs {
    /// The first volume directory of each pod, by pod uid.
    first_volumes: Arc<Mutex<HashMap<String, PathBuf>>>,
    /// Where the scratch directories are made, one per pod uid.
    scratch: PathBuf,
}

impl ExecDirs {
    /// Records a volume directory made for the pod `uid`; the first one is where it runs.
    fn record(&self, uid: &str, dir: &Path) {
        self.first_volumes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(uid.to_owned())
            .or_insert_with(|| dir.to_owned());
    }

    /// The directory of the pod `uid`, made if it is a scratch one; an error once the pod's
    /// volume directory is gone, as a deleted pod's are.
    fn dir(&self, uid: &str) -> Result<PathBuf, String> {
        let volume = self
            .first_volumes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(uid)
            .cloned();
        match volume {
            Some(dir) if dir.is_dir() => Ok(dir),
            Some(dir) => Err(format!(
                "the volume directory {} of pod {uid} is gone",
                dir.display()
            )),
            None => {
                let dir = self.scratch.join(uid);
                fs::create_dir_all(&dir)
                    .map_err(|err| format!("cannot make {}: {err}", dir.display()))?;
                Ok(dir)
            }
        }
    }

    /// The harness's exec handler: runs the command as it is, its program looked up in the
    /// test's `PATH`, in the pod's directory, with `FERRY_TEST_POD` (`namespace/name`) and
    /// `FERRY_TEST_CONTAINER` set.
    fn command(&self, request: &ExecRequest) -> Result<tokio::process::Command, String> {
        let uid = request
            .object
            .pointer("/metadata/uid")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| format!("pod {} has no uid", request.pod))?;
        let (program, args) = request
            .command
            .split_first()
            .ok_or_else(|| "no command".to_owned())?;
        let mut command = tokio::process::Command::new(program);
        command
            .args(args)
            .current_dir(self.dir(uid)?)
            .env(
                "FERRY_TEST_POD",
                format!("{}/{}", request.namespace, request.pod),
            )
            .env("FERRY_TEST_CONTAINER", &request.container);
        Ok(command)
    }
}

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
    /// Starts the API server with Ferry's CRDs and creates the install namespace.
    pub async fn start() -> Self {
        let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds");
        let server = TestApiServer::start(&crds)
            .await
            .expect("start the test API server");
        server
            .create_namespace(INSTALL_NAMESPACE)
            .await
            .expect("create the install namespace");
        Self::with_server(server)
    }

    /// Starts the API server as a cluster that Ferry was never installed on: without Ferry's
    /// CRDs and without the install namespace, for `ferry install` to make them.
    pub async fn start_empty() -> Self {
        let server = TestApiServer::builder()
            .start()
            .await
            .expect("start the test API server");
        Self::with_server(server)
    }

    fn with_server(server: TestApiServer) -> Self {
        let dir = tempfile::tempdir().expect("cluster directory");
        let kubeconfig = dir.path().join("kubeconfig");
        server
            .write_kubeconfig(&kubeconfig)
            .expect("write kubeconfig");
        let exec_dirs = ExecDirs {
            first_volumes: Arc::default(),
            scratch: dir.path().join("exec"),
        };
        let runtime = exec_dirs.clone();
        server.on_exec(move |request| runtime.command(request));
        Self {
            server,
            dir,
            kubeconfig,
            processes: Vec::new(),
            exec_dirs,
        }
    }

    pub fn client(&self) -> Client {
        self.server.client()
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client(), INSTALL_NAMESPACE)
    }

    /// A directory of the test's own, removed with the cluster.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The node's kubelet pods directory.
    pub fn host_pods(&self, node: &str) -> PathBuf {
        self.dir.path().join("nodes").join(node).join("pods")
    }

    /// Denies `verb` on `resource` of `group` from now on, to every client, as RBAC does to the
    /// coordinator's service account without a rule for it: such requests get 403 Forbidden
    /// (see [`TestApiServer::forbid`]).
    pub fn forbid(&self, verb: &str, group: &str, resource: &str) {
        self.server.forbid(verb, group, resource);
    }

    /// Makes `handler` run the commands of `pods/exec` in place of the harness's own (see
    /// [`TestApiServer::on_exec`]). The harness's runs the command as it is, its program
    /// looked up in the test's `PATH`, in [`Cluster::exec_dir`] of the pod, with the
    /// environment variables `FERRY_TEST_POD` (`namespace/name`) and `FERRY_TEST_CONTAINER`.
    pub fn on_exec(
        &self,
        handler: impl Fn(&ExecRequest) -> Result<tokio::process::Command, String>
        + Send
        + Sync
        + 'static,
    ) {
        self.server.on_exec(handler);
    }

    /// The directory that the harness's exec handler runs a pod's commands in: the directory
    /// of its first volume, when [`Cluster::create_pod`] or [`Cluster::run_restored_pod`] made
    /// it, or else a scratch directory of the pod's own, made now.
    pub fn exec_dir(&self, pod: &Pod) -> PathBuf {
        self.exec_dirs
            .dir(&pod.uid().expect("pod uid"))
            .expect("the pod's exec directory")
    }

    /// Points the Service `name` of `namespace` at `address`, as its endpoints (see
    /// [`TestApiServer::register_service`]).
    pub fn register_service(&self, namespace: &str, name: &str, address: SocketAddr) {
        self.server.register_service(namespace, name, address);
    }

    pub async fn create_namespace(&self, name: &str) {
        self.server
            .create_namespace(name)
            .await
            .expect("create namespace");
    }

    /// Registers a node and makes its pods directory.
    pub async fn add_node(&self, name: &str) {
        fs::create_dir_all(self.host_pods(name)).expect("pods directory");
        let node = Node {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            ..Node::default()
        };
        Api::<Node>::all(self.client())
            .create(&PostParams::default(), &node)
            .await
            .expect("create node");
    }

    /// Creates a Secret in the install namespace.
    pub async fn create_secret(&self, name: &str, key: &str, value: &str) {
        let secret: Secret = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": INSTALL_NAMESPACE},
            "stringData": {key: value},
        }))
        .expect("secret");
        self.api::<Secret>()
            .create(&PostParams::default(), &secret)
            .await
            .expect("create secret");
    }

    /// Creates a Secret in the install namespace that holds S3 keys in the AWS credentials file
    /// format, under the key that [`fixtures::s3_location`]'s `credential` names.
    pub async fn create_s3_secret(&self, name: &str, access_key_id: &str, secret_access_key: &str) {
        let file = format!(
            "[default]\naws_access_key_id = {access_key_id}\naws_secret_access_key = {secret_access_key}\n"
        );
        self.create_secret(name, fixtures::CREDENTIALS_KEY, &file)
            .await;
    }

    /// Creates the Secret that holds the repository password.
    pub async fn create_repository_password(&self, password: &str) {
        self.create_secret(
            ferry_shared::names::REPOSITORY_SECRET,
            ferry_shared::names::REPOSITORY_PASSWORD_KEY,
            password,
        )
        .await;
    }

    /// Ferry's storage as a fresh install has it: the repository password Secret, and a
    /// default filesystem storage location in a directory of the cluster's. Returns that
    /// directory.
    pub async fn create_default_storage(&self, password: &str) -> PathBuf {
        self.create_repository_password(password).await;
        let storage = self.path("storage");
        fixtures::filesystem_location("default", &storage)
            .default_location()
            .create(self)
            .await;
        storage
    }

    /// Creates `object` in the install namespace and returns it as the server stored it.
    pub async fn create<K: Namespaced>(&self, object: &K) -> K {
        self.api::<K>()
            .create(&PostParams::default(), object)
            .await
            .unwrap_or_else(|err| panic!("create a {}: {err}", K::kind(&())))
    }

    /// The PodVolumeBackups of a Backup, by pod and volume.
    pub async fn pvbs_of(&self, backup: &str) -> Vec<PodVolumeBackup> {
        let selector = format!("{}={backup}", ferry_shared::names::label::BACKUP_NAME);
        let mut pvbs = self
            .api::<PodVolumeBackup>()
            .list(&ListParams::default().labels(&selector))
            .await
            .expect("list PodVolumeBackups")
            .items;
        pvbs.sort_by_key(|pvb| (pvb.spec.pod.name.clone(), pvb.spec.volume.clone()));
        pvbs
    }

    /// Creates a PodVolumeBackup from `spec` as the coordinator does: named `<prefix>-` plus a
    /// suffix, and labelled for the node in its spec.
    pub async fn create_backup_request(
        &self,
        prefix: &str,
        spec: PodVolumeBackupSpec,
    ) -> PodVolumeBackup {
        let node = spec.node.clone();
        let mut pvb = PodVolumeBackup::new("", spec);
        pvb.metadata.name = None;
        pvb.metadata.generate_name = Some(format!("{prefix}-"));
        pvb.metadata.labels = Some(BTreeMap::from([(
            ferry_shared::names::label::NODE.to_owned(),
            node,
        )]));
        self.create(&pvb).await
    }

    /// Starts `ferry-node-agent run` for `node`, with `args` added.
    pub fn start_agent(&mut self, program: &Path, node: &str, args: &[&str]) -> &mut Process {
        let host_pods = self.host_pods(node);
        self.start_process(
            program,
            node,
            args,
            &[
                ("NODE_NAME", node.as_ref()),
                ("FERRY_HOST_PODS", host_pods.as_os_str()),
            ],
        )
    }

    /// Starts `ferry-coordinator run`, with `args` added. It is [`Cluster::coordinator`] until
    /// another is started, and `coordinator` in the logs. The Service [`COORDINATOR_SERVICE`]
    /// (port `http`, [`COORDINATOR_SERVICE_PORT`]) is made if missing, and its endpoint is this
    /// coordinator's HTTP server, so that the service proxy reaches it as in a cluster.
    pub fn start_coordinator(&mut self, program: &Path, args: &[&str]) -> &mut Process {
        self.server
            .ensure_service(
                INSTALL_NAMESPACE,
                COORDINATOR_SERVICE,
                "http",
                COORDINATOR_SERVICE_PORT,
            )
            .expect("create the coordinator's Service");
        let process = self.start_process(program, COORDINATOR, args, &[]);
        let address = process.metrics;
        self.server
            .register_service(INSTALL_NAMESPACE, COORDINATOR_SERVICE, address);
        self.process(COORDINATOR).expect("just started")
    }

    fn start_process(
        &mut self,
        program: &Path,
        role: &str,
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
            .env("KUBECONFIG", &self.kubeconfig)
            .env("FERRY_NAMESPACE", INSTALL_NAMESPACE)
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

    /// Plays the workload controllers and the kubelet for an install, in the background: once
    /// the coordinator's Deployment and the node agents' DaemonSet exist in the install
    /// namespace, marks them ready as their controllers do once the pods run (one ready
    /// coordinator, and a ready agent on every node). The test starts the real processes
    /// itself. The task fails if they never appear.
    pub fn run_installed_workloads(&self) -> tokio::task::JoinHandle<()> {
        let client = self.client();
        tokio::spawn(async move {
            let nodes = Api::<Node>::all(client.clone())
                .list(&ListParams::default())
                .await
                .expect("list nodes")
                .items
                .len();
            let deployments = Api::<Deployment>::namespaced(client.clone(), INSTALL_NAMESPACE);
            let generation = appeared(&deployments, INSTALLED_COORDINATOR).await;
            let status = json!({"observedGeneration": generation, "replicas": 1,
                "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1});
            set_status(&deployments, INSTALLED_COORDINATOR, status).await;
            let daemonsets = Api::<DaemonSet>::namespaced(client, INSTALL_NAMESPACE);
            let generation = appeared(&daemonsets, INSTALLED_NODE_AGENT).await;
            let status = json!({"observedGeneration": generation, "desiredNumberScheduled": nodes,
                "currentNumberScheduled": nodes, "updatedNumberScheduled": nodes,
                "numberReady": nodes, "numberAvailable": nodes, "numberMisscheduled": 0});
            set_status(&daemonsets, INSTALLED_NODE_AGENT, status).await;
        })
    }

    /// Creates a claim bound to a CSI persistent volume, as a provisioner would have made them.
    pub async fn create_bound_claim(&self, namespace: &str, claim: &str, volume: &str) {
        let claims = Api::<PersistentVolumeClaim>::namespaced(self.client(), namespace);
        let claim: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": claim, "namespace": namespace},
            "spec": {"accessModes": ["ReadWriteOnce"], "volumeName": volume,
                     "resources": {"requests": {"storage": "1Gi"}}},
        }))
        .expect("claim");
        claims
            .create(&PostParams::default(), &claim)
            .await
            .expect("create claim");
        self.create_csi_volume(volume).await;
    }

    /// Creates a 1Gi CSI persistent volume, as a provisioner would.
    async fn create_csi_volume(&self, name: &str) {
        let volume: PersistentVolume = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                     "csi": {"driver": "csi.example.com", "volumeHandle": name}},
        }))
        .expect("volume");
        Api::<PersistentVolume>::all(self.client())
            .create(&PostParams::default(), &volume)
            .await
            .expect("create persistent volume");
    }

    /// Plays the scheduler, the provisioner and the kubelet for a pod that a restore created:
    /// binds its unbound claims to fresh CSI volumes, binds the pod to `node`, makes its volume
    /// directories and starts its first init container. Returns the pod and each volume's
    /// directory by volume name.
    pub async fn run_restored_pod(
        &self,
        namespace: &str,
        name: &str,
        node: &str,
    ) -> (Pod, BTreeMap<String, PathBuf>) {
        let pods = Api::<Pod>::namespaced(self.client(), namespace);
        let pod = pods.get(name).await.expect("restored pod");
        let base = self
            .host_pods(node)
            .join(pod.uid().expect("pod uid"))
            .join("volumes");
        let mut dirs = BTreeMap::new();
        let volumes = pod
            .spec
            .as_ref()
            .and_then(|spec| spec.volumes.clone())
            .unwrap_or_default();
        for volume in volumes {
            let dir = match &volume.persistent_volume_claim {
                Some(source) => {
                    let pv = self
                        .bind_restored_claim(namespace, &source.claim_name)
                        .await;
                    base.join("kubernetes.io~csi").join(pv).join("mount")
                }
                None => base.join("kubernetes.io~empty-dir").join(&volume.name),
            };
            fs::create_dir_all(&dir).expect("volume directory");
            self.exec_dirs.record(&pod.uid().expect("pod uid"), &dir);
            dirs.insert(volume.name.clone(), dir);
        }
        self.bind_pod(namespace, name, node).await;
        let pod = pods.get(name).await.expect("bound pod");
        let pod = self
            .set_pod_status(
                &pod,
                "Pending",
                Some(ferry_shared::names::RESTORE_WAIT_CONTAINER),
            )
            .await;
        (pod, dirs)
    }

    /// The persistent volume of a claim that a restore created: the one it is bound to, or a
    /// fresh CSI volume, provisioned and bound to it as a provisioner would.
    async fn bind_restored_claim(&self, namespace: &str, claim_name: &str) -> String {
        let claims = Api::<PersistentVolumeClaim>::namespaced(self.client(), namespace);
        let claim = claims.get(claim_name).await.expect("restored claim");
        if let Some(pv) = claim
            .spec
            .as_ref()
            .and_then(|spec| spec.volume_name.clone())
        {
            return pv;
        }
        let pv = format!("pvc-{}", claim.uid().expect("claim uid"));
        self.create_csi_volume(&pv).await;
        claims
            .patch(
                claim_name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"volumeName": pv}})),
            )
            .await
            .expect("bind claim");
        pv
    }

    /// Binds a pod to `node` through its `binding` subresource, as the scheduler does.
    async fn bind_pod(&self, namespace: &str, name: &str, node: &str) {
        let binding = json!({
            "apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": name, "namespace": namespace},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        });
        Api::<Pod>::namespaced(self.client(), namespace)
            .create_subresource::<_, serde_json::Value>(
                "binding",
                name,
                &PostParams::default(),
                &binding,
            )
            .await
            .expect("bind pod");
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
            .env("FERRY_NAMESPACE", INSTALL_NAMESPACE)
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

    /// Creates a running pod on `node` whose volumes exist on the node, as the kubelet would
    /// have made them, and returns it with the host directory of each volume.
    pub async fn create_pod(
        &self,
        namespace: &str,
        name: &str,
        node: &str,
        volumes: Vec<(&str, VolumeKind)>,
    ) -> (Pod, Vec<PathBuf>) {
        let mut pod_volumes = Vec::new();
        for (volume, kind) in &volumes {
            let source = match kind {
                VolumeKind::EmptyDir => json!({"name": volume, "emptyDir": {}}),
                VolumeKind::CsiClaim { claim, .. } => {
                    json!({"name": volume, "persistentVolumeClaim": {"claimName": claim}})
                }
            };
            pod_volumes.push(serde_json::from_value::<Volume>(source).expect("volume"));
        }
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(namespace.to_owned()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: Some(node.to_owned()),
                containers: vec![Container {
                    name: "app".to_owned(),
                    image: Some("app:1".to_owned()),
                    volume_mounts: Some(
                        volumes
                            .iter()
                            .map(|(volume, _)| VolumeMount {
                                name: (*volume).to_owned(),
                                mount_path: format!("/data/{volume}"),
                                ..VolumeMount::default()
                            })
                            .collect(),
                    ),
                    ..Container::default()
                }],
                volumes: Some(pod_volumes),
                ..PodSpec::default()
            }),
            ..Pod::default()
        };
        let pods = Api::<Pod>::namespaced(self.client(), namespace);
        let pod = pods
            .create(&PostParams::default(), &pod)
            .await
            .expect("create pod");
        let pod = self.set_pod_status(&pod, "Running", None).await;
        let uid = pod.uid().expect("pod uid");
        let mut dirs = Vec::new();
        for (volume, kind) in &volumes {
            let dir = match kind {
                VolumeKind::EmptyDir => self
                    .host_pods(node)
                    .join(&uid)
                    .join("volumes/kubernetes.io~empty-dir")
                    .join(volume),
                VolumeKind::CsiClaim { volume, .. } => self
                    .host_pods(node)
                    .join(&uid)
                    .join("volumes/kubernetes.io~csi")
                    .join(volume)
                    .join("mount"),
            };
            fs::create_dir_all(&dir).expect("volume directory");
            self.exec_dirs.record(&uid, &dir);
            dirs.push(dir);
        }
        (pod, dirs)
    }

    /// Sets a pod's phase, and the state of one init container if given, as the kubelet does.
    pub async fn set_pod_status(&self, pod: &Pod, phase: &str, running_init: Option<&str>) -> Pod {
        let status = PodStatus {
            phase: Some(phase.to_owned()),
            init_container_statuses: running_init.map(|name| {
                vec![ContainerStatus {
                    name: name.to_owned(),
                    image: "ferry-restore-helper".to_owned(),
                    image_id: String::new(),
                    ready: false,
                    restart_count: 0,
                    state: Some(ContainerState {
                        running: Some(ContainerStateRunning::default()),
                        ..ContainerState::default()
                    }),
                    ..ContainerStatus::default()
                }]
            }),
            ..PodStatus::default()
        };
        let pods = Api::<Pod>::namespaced(self.client(), &pod.namespace().unwrap_or_default());
        pods.patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await
        .expect("set pod status")
    }

    /// Deletes a pod and, as the kubelet does, its volume directories.
    pub async fn delete_pod(&self, pod: &Pod) {
        let pods = Api::<Pod>::namespaced(self.client(), &pod.namespace().unwrap_or_default());
        // A bound pod is deleted gracefully; the kubelet confirms with a grace period of 0.
        pods.delete(&pod.name_any(), &DeleteParams::default())
            .await
            .expect("delete pod");
        let _ = pods
            .delete(&pod.name_any(), &DeleteParams::default().grace_period(0))
            .await;
        if let (Some(node), Some(uid)) = (
            pod.spec.as_ref().and_then(|spec| spec.node_name.clone()),
            pod.uid(),
        ) {
            let _ = fs::remove_dir_all(self.host_pods(&node).join(uid));
        }
    }

    /// Waits until `condition` holds for the named object, and returns it. Past the deadline
    /// the test fails, showing the object and every process's log.
    pub async fn wait_for<K>(
        &self,
        api: &Api<K>,
        name: &str,
        what: &str,
        condition: impl Fn(&K) -> bool,
    ) -> K
    where
        K: Resource + Clone + DeserializeOwned + Debug,
    {
        let started = tokio::time::Instant::now();
        let mut last = None;
        while started.elapsed() < DEADLINE {
            match api.get_opt(name).await {
                Ok(Some(object)) if condition(&object) => return object,
                Ok(found) => last = found,
                Err(err) => panic!("reading {name}: {err}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "{name} never became {what}; last seen: {last:#?}\n{}",
            self.logs()
        );
    }

    /// Waits until the Backup, Restore, PodVolumeBackup or PodVolumeRestore `name` reaches a
    /// final phase, and returns it. Past the deadline the test fails as in [`Cluster::wait_for`].
    pub async fn wait_finished<K: Finishes>(&self, name: &str) -> K {
        self.wait_for(&self.api::<K>(), name, "finished", |object: &K| {
            object.current_phase().is_final()
        })
        .await
    }

    /// Waits until the Backup or Restore `name` has finished, and asserts that it Completed,
    /// showing the object and every process's log if not.
    pub async fn wait_completed<K: Finishes<Phase = OperationPhase>>(&self, name: &str) -> K {
        let object = self.wait_finished::<K>(name).await;
        assert_eq!(
            object.current_phase(),
            OperationPhase::Completed,
            "{object:#?}\n{}",
            self.logs()
        );
        object
    }
}

/// A kind the harness creates and reads in the install namespace.
pub trait Namespaced:
    Resource<Scope = NamespaceResourceScope, DynamicType = ()>
    + Clone
    + Debug
    + DeserializeOwned
    + Serialize
{
}

impl<K> Namespaced for K where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned
        + Serialize
{
}

/// The phase of a kind that runs to an end: some of its values are final, never left again.
pub trait Phase: Copy + PartialEq + Debug {
    fn is_final(self) -> bool;
}

impl Phase for OperationPhase {
    fn is_final(self) -> bool {
        !matches!(self, OperationPhase::New | OperationPhase::InProgress)
    }
}

impl Phase for PodVolumePhase {
    fn is_final(self) -> bool {
        matches!(self, PodVolumePhase::Completed | PodVolumePhase::Failed)
    }
}

/// A kind that runs to a final phase, which [`Cluster::wait_finished`] waits for.
pub trait Finishes: Namespaced {
    type Phase: Phase;
    /// The object's phase, New while its status has none.
    fn current_phase(&self) -> Self::Phase;
}

/// Implements [`Finishes`] for kinds whose `phase()` gives their phase.
macro_rules! finishes {
    ($($kind:ty => $phase:ty),* $(,)?) => {$(
        impl Finishes for $kind {
            type Phase = $phase;
            fn current_phase(&self) -> $phase {
                self.phase()
            }
        }
    )*};
}

finishes!(
    Backup => OperationPhase,
    Restore => OperationPhase,
    PodVolumeBackup => PodVolumePhase,
    PodVolumeRestore => PodVolumePhase,
);

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

impl Drop for Cluster {
    fn drop(&mut self) {
        for process in &mut self.processes {
            process.kill();
        }
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

/// The metadata.generation of the object `name` once it exists; panics past the deadline.
async fn appeared<K>(api: &Api<K>, name: &str) -> i64
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let started = tokio::time::Instant::now();
    while started.elapsed() < DEADLINE {
        if let Some(object) = api.get_opt(name).await.expect("read a workload") {
            return object.meta().generation.unwrap_or(1);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{name} was never created");
}

/// Writes the status of a workload, as its controller does.
async fn set_status<K>(api: &Api<K>, name: &str, status: serde_json::Value)
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await
    .unwrap_or_else(|err| panic!("set the status of {name}: {err}"));
}
