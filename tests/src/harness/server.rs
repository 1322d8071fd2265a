//! The API server a cluster runs against: the test server in this process, or an external one
//! named by [`KUBECONFIG_ENV`], shared with every other test that runs meanwhile. On an
//! external server the harness applies Ferry's CRDs itself, and removes what a test made when
//! the test ends, whether it passed or not.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_shared::crd::{
    Backup, BackupRepository, BackupStorageLocation, DownloadRequest, PodVolumeBackup,
    PodVolumeRestore, Restore, Schedule, ServerStatusRequest,
};
use k8s_openapi::api::core::v1::{Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;

use super::DEADLINE;
use super::names::{Names, TEST_ID_LABEL};
use crate::apiserver::{self, TestApiServer};

/// The environment variable that names the kubeconfig of an external API server to run the
/// suite against, in place of the test server.
pub const KUBECONFIG_ENV: &str = "FERRY_TEST_KUBECONFIG";

/// The field manager of the harness's server-side applies.
const FIELD_MANAGER: &str = "ferry-tests";

/// The API server of a cluster.
pub(super) enum Server {
    /// The test server, in this process; it goes away with the cluster.
    Local(TestApiServer),
    /// An API server shared with other tests, and the kubeconfig that names it.
    External { client: Client, kubeconfig: PathBuf },
}

/// The kubeconfig of the external API server to use, if one is named.
pub(super) fn external_kubeconfig() -> Option<PathBuf> {
    std::env::var_os(KUBECONFIG_ENV)
        .filter(|path| !path.is_empty())
        .map(PathBuf::from)
}

impl Server {
    /// Connects to the external server of `kubeconfig` and applies Ferry's CRDs to it.
    pub(super) async fn external(kubeconfig: PathBuf) -> Self {
        let client = connect(&kubeconfig)
            .await
            .unwrap_or_else(|err| panic!("connect to {}: {err}", kubeconfig.display()));
        apply_crds(&client).await;
        Self::External { client, kubeconfig }
    }

    pub(super) fn client(&self) -> Client {
        match self {
            Self::Local(server) => server.client(),
            Self::External { client, .. } => client.clone(),
        }
    }

    /// The test server, for what only it can do; panics on an external server, where a test
    /// that needs it should have been started with [`super::Cluster::start_on_test_server`].
    pub(super) fn test_server(&self, what: &str) -> &TestApiServer {
        match self {
            Self::Local(server) => server,
            Self::External { .. } => panic!(
                "{what} needs the test server: start the test with Cluster::start_on_test_server"
            ),
        }
    }
}

/// A client for the server of `kubeconfig`, with its current context.
pub async fn connect(kubeconfig: &Path) -> Result<Client, kube::Error> {
    let config = Kubeconfig::read_from(kubeconfig).map_err(kube::Error::InferKubeconfig)?;
    let config = Config::from_custom_kubeconfig(config, &KubeConfigOptions::default())
        .await
        .map_err(kube::Error::InferKubeconfig)?;
    Client::try_from(config)
}

/// Ferry's CRDs as `deploy/crds` holds them.
pub(super) fn crds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds")
}

/// Applies `deploy/crds` by server-side apply (which changes nothing where the same ones are
/// there) and waits until each is Established.
async fn apply_crds(client: &Client) {
    let crds = apiserver::load_crds(crds_dir()).expect("read deploy/crds");
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for crd in &crds {
        let name = crd["metadata"]["name"].as_str().expect("a named CRD");
        api.patch(name, &params, &Patch::Apply(crd))
            .await
            .unwrap_or_else(|err| panic!("apply the CRD {name}: {err}"));
    }
    for crd in &crds {
        let name = crd["metadata"]["name"].as_str().expect("a named CRD");
        established(&api, name).await;
    }
}

async fn established(api: &Api<CustomResourceDefinition>, name: &str) {
    let started = tokio::time::Instant::now();
    loop {
        let crd = api.get(name).await.expect("read a CRD");
        let conditions = crd.status.and_then(|status| status.conditions);
        if conditions
            .iter()
            .flatten()
            .any(|condition| condition.type_ == "Established" && condition.status == "True")
        {
            return;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "the CRD {name} never became Established"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Removes what the test of `names` made on the external server of `kubeconfig`: its
/// namespaces (after force-deleting their pods, which no kubelet confirms, and dropping the
/// finalizers that no controller of the test's is left to remove), and its nodes, persistent
/// volumes, cluster roles and bindings. It does not wait for the namespaces to be gone, which
/// takes the namespace controller. Runs on a thread and runtime of its own, since it is called
/// from `Drop`, also while a failed test unwinds; it reports errors and never panics.
pub(super) fn clean_up(kubeconfig: &Path, names: &Names) {
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            let result = match runtime {
                Ok(runtime) => runtime.block_on(remove_test_objects(kubeconfig, names)),
                Err(err) => Err(format!("start a runtime: {err}")),
            };
            if let Err(err) = result {
                eprintln!("cleaning up test {}: {err}", names.id());
            }
        });
    });
}

async fn remove_test_objects(kubeconfig: &Path, names: &Names) -> Result<(), String> {
    let client = connect(kubeconfig).await.map_err(text)?;
    let namespaces = Api::<Namespace>::all(client.clone());
    for namespace in namespaces
        .list(&ListParams::default())
        .await
        .map_err(text)?
    {
        let name = namespace.name_any();
        if names.owns(&name) {
            empty_namespace(&client, &name).await?;
            delete(&namespaces, &name).await?;
        }
    }
    remove_cluster_objects::<Node>(&client, names).await?;
    remove_cluster_objects::<PersistentVolume>(&client, names).await?;
    remove_cluster_objects::<ClusterRoleBinding>(&client, names).await?;
    remove_cluster_objects::<ClusterRole>(&client, names).await
}

/// Force-deletes the pods of `namespace` and drops the finalizers of what would keep it
/// Terminating: Ferry's objects and claims.
async fn empty_namespace(client: &Client, namespace: &str) -> Result<(), String> {
    let pods = Api::<Pod>::namespaced(client.clone(), namespace);
    for pod in pods.list(&ListParams::default()).await.map_err(text)? {
        let force = DeleteParams::default().grace_period(0);
        ignore_missing(pods.delete(&pod.name_any(), &force).await.map(|_| ()))?;
    }
    unfinalize::<Backup>(client, namespace).await?;
    unfinalize::<Restore>(client, namespace).await?;
    unfinalize::<Schedule>(client, namespace).await?;
    unfinalize::<PodVolumeBackup>(client, namespace).await?;
    unfinalize::<PodVolumeRestore>(client, namespace).await?;
    unfinalize::<BackupStorageLocation>(client, namespace).await?;
    unfinalize::<BackupRepository>(client, namespace).await?;
    unfinalize::<DownloadRequest>(client, namespace).await?;
    unfinalize::<ServerStatusRequest>(client, namespace).await?;
    unfinalize::<PersistentVolumeClaim>(client, namespace).await
}

/// Drops the finalizers of every object of kind `K` in `namespace` that has some.
async fn unfinalize<K>(client: &Client, namespace: &str) -> Result<(), String>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api = Api::<K>::namespaced(client.clone(), namespace);
    drop_finalizers(
        &api,
        api.list(&ListParams::default()).await.map_err(text)?.items,
    )
    .await
}

async fn drop_finalizers<K>(api: &Api<K>, objects: Vec<K>) -> Result<(), String>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let patch = Patch::Merge(json!({"metadata": {"finalizers": null}}));
    for object in objects
        .iter()
        .filter(|object| !object.finalizers().is_empty())
    {
        let name = object.name_any();
        let patched = api.patch(&name, &PatchParams::default(), &patch).await;
        ignore_missing(patched.map(|_| ()))?;
    }
    Ok(())
}

/// Deletes the cluster-scoped objects of kind `K` that carry the test's label or name,
/// without their finalizers.
async fn remove_cluster_objects<K>(client: &Client, names: &Names) -> Result<(), String>
where
    K: Resource<Scope = k8s_openapi::ClusterResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api = Api::<K>::all(client.clone());
    let all = api.list(&ListParams::default()).await.map_err(text)?.items;
    let mine: Vec<K> = all
        .into_iter()
        .filter(|object| {
            names.owns(&object.name_any())
                || (object.labels().get(TEST_ID_LABEL))
                    .is_some_and(|id| names.ids().any(|mine| mine == id))
        })
        .collect();
    drop_finalizers(&api, mine.clone()).await?;
    for object in &mine {
        delete(&api, &object.name_any()).await?;
    }
    Ok(())
}

async fn delete<K>(api: &Api<K>, name: &str) -> Result<(), String>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    ignore_missing(api.delete(name, &DeleteParams::default()).await.map(|_| ()))
}

/// A deletion or patch of what is already gone has nothing left to do.
fn ignore_missing(result: Result<(), kube::Error>) -> Result<(), String> {
    match result {
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        other => other.map_err(text),
    }
}

fn text(err: kube::Error) -> String {
    err.to_string()
}
