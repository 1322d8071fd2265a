//! A small cluster for end-to-end tests: an API server, a temporary `host_pods` directory per
//! node, and Ferry's real binaries as child processes. The API server is the test server, one
//! per test, or the external one that `FERRY_TEST_KUBECONFIG` names, shared by the tests that
//! run at once: every name a test makes is its own (see [`names`]), and what it made is
//! removed when it ends. The harness plays the kubelet through the API alone: it registers
//! nodes, binds pods, sets their status, makes and removes their volume directories, and, on
//! the test server, runs the commands of `pods/exec` in them. Tests create objects through it,
//! wait for them to finish, and read the processes' logs and metrics.

mod kubelet;
pub mod names;
mod process;
mod rbac;
mod server;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ferry_shared::crd::PodVolumeTransfer;
use ferry_shared::crd::{
    Backup, OperationPhase, PodVolumeBackup, PodVolumeBackupSpec, PodVolumePhase, PodVolumeRestore,
    Restore,
};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tempfile::TempDir;

use self::kubelet::ExecDirs;
pub use self::kubelet::VolumeKind;
use self::names::Names;
pub use self::process::{CommandOutput, Process, assert_promtool_accepts};
use self::rbac::Identities;
pub use self::rbac::RBAC_ENV;
use self::server::Server;
pub use self::server::{KUBECONFIG_ENV, connect};
use crate::apiserver::{ExecRequest, TestApiServer};
use crate::fixtures;

/// The install namespace, as a test reads it; the cluster's is [`Cluster::namespace`].
const INSTALL_NAMESPACE: &str = "ferry";

/// The Service in front of the coordinator's HTTP server, as `deploy/base` names it.
pub const COORDINATOR_SERVICE: &str = "ferry-coordinator";
/// Its port.
pub const COORDINATOR_SERVICE_PORT: u16 = 8085;

/// How long a wait may take before the test fails and shows what it saw.
pub const DEADLINE: Duration = Duration::from_secs(120);

/// The environment variable naming a file that each test skipped for want of the test server
/// appends a line to, for the runner to count.
pub const SKIP_LOG_ENV: &str = "FERRY_TEST_SKIP_LOG";

/// A running test cluster.
pub struct Cluster {
    server: Server,
    names: Names,
    /// The install namespace, as the server stores it.
    namespace: String,
    dir: TempDir,
    /// The kubeconfig of the harness and the `ferry` command line.
    kubeconfig: PathBuf,
    /// Under [`RBAC_ENV`], the kubeconfigs of the processes' ServiceAccounts.
    identities: Option<Identities>,
    processes: Vec<Process>,
    exec_dirs: ExecDirs,
}

impl Cluster {
    /// Starts a cluster with Ferry's CRDs and the test's install namespace: on the API server
    /// that [`KUBECONFIG_ENV`] names if it is set, or else on a test server of its own. Under
    /// [`RBAC_ENV`], with `deploy/base`'s ServiceAccounts and RBAC for the processes.
    pub async fn start() -> Self {
        let server = match server::external_kubeconfig() {
            Some(kubeconfig) => Server::external(kubeconfig).await,
            None => Server::Local(
                TestApiServer::start(server::crds_dir())
                    .await
                    .expect("start the test API server"),
            ),
        };
        let mut cluster = Self::with_server(server);
        cluster.create_namespace(INSTALL_NAMESPACE).await;
        if rbac::wanted() {
            let client = cluster.client();
            let identities = rbac::service_accounts(
                &client,
                &cluster.names,
                &cluster.namespace,
                &cluster.kubeconfig,
                cluster.dir.path(),
            );
            cluster.identities = Some(identities.await);
        }
        cluster
    }

    /// Starts a cluster as [`Cluster::start`] does, in place of the cluster of `lost` names
    /// that the test lost: what it restores from that cluster's backups keeps their names.
    pub async fn start_after(lost: &Names) -> Self {
        let mut cluster = Self::start().await;
        cluster.names = cluster.names.clone().after(lost);
        cluster
    }

    /// Starts a cluster on a test server of its own, for a test of what only the test server
    /// does, `needs`. Under an external API server the test is skipped instead: this returns
    /// `None` and reports it (see [`SKIP_LOG_ENV`]).
    pub async fn start_on_test_server(needs: &str) -> Option<Self> {
        if server::external_kubeconfig().is_some() {
            skipped(needs);
            return None;
        }
        Some(Self::start().await)
    }

    /// Starts a test server as a cluster that Ferry was never installed on: without Ferry's
    /// CRDs and without the install namespace, for `ferry install` to make them. Skipped, as
    /// [`Cluster::start_on_test_server`] says, under an external API server, where the CRDs
    /// are shared and the cluster-wide objects of an install would be too.
    pub async fn start_empty() -> Option<Self> {
        if server::external_kubeconfig().is_some() {
            skipped("a cluster without Ferry, for ferry install");
            return None;
        }
        let server = TestApiServer::builder()
            .start()
            .await
            .expect("start the test API server");
        Some(Self::with_server(Server::Local(server)))
    }

    fn with_server(server: Server) -> Self {
        let names = Names::random();
        let dir = tempfile::tempdir().expect("cluster directory");
        let exec_dirs = ExecDirs::new(dir.path().join("exec"));
        let kubeconfig = match &server {
            Server::Local(local) => {
                let kubeconfig = dir.path().join("kubeconfig");
                local
                    .write_kubeconfig(&kubeconfig)
                    .expect("write kubeconfig");
                let runtime = exec_dirs.clone();
                local.on_exec(move |request| runtime.command(request));
                kubeconfig
            }
            Server::External { kubeconfig, .. } => kubeconfig.clone(),
        };
        Self {
            server,
            namespace: names.scoped(INSTALL_NAMESPACE),
            names,
            dir,
            kubeconfig,
            identities: None,
            processes: Vec::new(),
            exec_dirs,
        }
    }

    pub fn client(&self) -> Client {
        self.server.client()
    }

    /// The install namespace, as the server stores it.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The test's own name for `name`, a namespace, node or persistent volume as the test
    /// reads it: what the server stores, and Ferry and the command line show.
    pub fn scoped(&self, name: &str) -> String {
        self.names.scoped(name)
    }

    /// `text` with the names the test scoped read back as the test named them (see
    /// [`Names::unscoped`]).
    pub fn unscoped(&self, text: &str) -> String {
        self.names.unscoped(text)
    }

    /// `value`, a status or anything else that holds stored names, with those names read back
    /// as the test named them.
    pub fn unscoped_value<T: Serialize + DeserializeOwned>(&self, value: &T) -> T {
        let text = serde_json::to_string(value).expect("encode as JSON");
        serde_json::from_str(&self.unscoped(&text)).expect("decode from JSON")
    }

    /// The test's names.
    pub fn names(&self) -> &Names {
        &self.names
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client(), &self.namespace)
    }

    /// A directory of the test's own, removed with the cluster.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Denies `verb` on `resource` of `group` from now on, to every client, as RBAC does to the
    /// coordinator's service account without a rule for it: such requests get 403 Forbidden
    /// (see [`TestApiServer::forbid`]). Only on the test server.
    pub fn forbid(&self, verb: &str, group: &str, resource: &str) {
        self.server
            .test_server("forbid")
            .forbid(verb, group, resource);
    }

    /// Makes `handler` run the commands of `pods/exec` in place of the harness's own (see
    /// [`TestApiServer::on_exec`]). The harness's runs the command as it is, its program
    /// looked up in the test's `PATH`, in [`Cluster::exec_dir`] of the pod, with the
    /// environment variables `FERRY_TEST_POD` (`namespace/name`) and `FERRY_TEST_CONTAINER`.
    /// Only on the test server.
    pub fn on_exec(
        &self,
        handler: impl Fn(&ExecRequest) -> Result<tokio::process::Command, String>
        + Send
        + Sync
        + 'static,
    ) {
        self.server.test_server("on_exec").on_exec(handler);
    }

    /// Points the Service `name` of `namespace` (stored names) at `address`, as its endpoints
    /// (see [`TestApiServer::register_service`]). Only on the test server.
    pub fn register_service(&self, namespace: &str, name: &str, address: SocketAddr) {
        self.server
            .test_server("register_service")
            .register_service(namespace, name, address);
    }

    /// Creates the namespace `name` (as the test reads it), labelled with the test's id.
    pub async fn create_namespace(&self, name: &str) {
        let namespace = Namespace {
            metadata: kube::api::ObjectMeta {
                name: Some(self.scoped(name)),
                labels: Some(self.names.labels()),
                ..kube::api::ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(self.client())
            .create(&PostParams::default(), &namespace)
            .await
            .expect("create namespace");
    }

    /// Creates a Secret in the install namespace.
    pub async fn create_secret(&self, name: &str, key: &str, value: &str) {
        let secret: Secret = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": self.namespace},
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

impl Drop for Cluster {
    /// Stops the processes, and on an external server removes what the test made there.
    fn drop(&mut self) {
        for process in &mut self.processes {
            process.kill();
        }
        if let Server::External { kubeconfig, .. } = &self.server {
            server::clean_up(kubeconfig, &self.names);
        }
    }
}

/// Reports that the running test is skipped because it needs the test server for `needs`: on
/// stdout, and as a line of the file [`SKIP_LOG_ENV`] names, if it is set.
fn skipped(needs: &str) {
    let thread = std::thread::current();
    let test = match thread.name() {
        Some(name) if name != "main" => name.to_owned(),
        _ => std::env::args().skip(1).collect::<Vec<_>>().join(" "),
    };
    let line = format!("{test}: skipped: needs the test server ({needs})");
    println!("{line}");
    if let Some(path) = std::env::var_os(SKIP_LOG_ENV) {
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut file| writeln!(file, "{line}"));
        appended.unwrap_or_else(|err| panic!("record the skip in {}: {err}", path.display()));
    }
}
