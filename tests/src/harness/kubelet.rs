//! The kubelet, the scheduler and a provisioner as the harness plays them, through the API
//! alone: nodes that are Ready, pods bound through `pods/binding` and their status written
//! through `pods/status`, claims bound to CSI volumes, the volume directories of pods under each
//! node's `host_pods`, and, on the test server, the commands of `pods/exec`.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStatus, Node, PersistentVolume,
    PersistentVolumeClaim, Pod, PodSpec, PodStatus, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;

use super::names::TEST_ID_LABEL;
use super::{Cluster, DEADLINE};
use crate::apiserver::ExecRequest;

/// The coordinator's Deployment and the node agents' DaemonSet, as `ferry install` names them.
const INSTALLED_COORDINATOR: &str = "ferry-coordinator";
const INSTALLED_NODE_AGENT: &str = "ferry-node-agent";

/// The kubelet's plugin directory of a volume kind.
pub enum VolumeKind {
    EmptyDir,
    /// A PVC bound to a CSI persistent volume of this name.
    CsiClaim {
        claim: String,
        volume: String,
    },
}

/// Where the harness's container runtime runs a pod's commands: the directory of the pod's
/// first volume, once the harness has made it, or else a scratch directory of the pod's own.
#[derive(Debug, Clone)]
pub(super) struct ExecDirs {
    /// The first volume directory of each pod, by pod uid.
    first_volumes: Arc<Mutex<HashMap<String, PathBuf>>>,
    /// Where the scratch directories are made, one per pod uid.
    scratch: PathBuf,
}

impl ExecDirs {
    /// Directories whose scratch ones are made in `scratch`.
    pub(super) fn new(scratch: PathBuf) -> Self {
        Self {
            first_volumes: Arc::default(),
            scratch,
        }
    }

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
    pub(super) fn dir(&self, uid: &str) -> Result<PathBuf, String> {
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
    pub(super) fn command(&self, request: &ExecRequest) -> Result<tokio::process::Command, String> {
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

impl Cluster {
    /// The directory that the harness's exec handler runs a pod's commands in: the directory
    /// of its first volume, when [`Cluster::create_pod`] or [`Cluster::run_restored_pod`] made
    /// it, or else a scratch directory of the pod's own, made now.
    pub fn exec_dir(&self, pod: &Pod) -> PathBuf {
        self.exec_dirs
            .dir(&pod.uid().expect("pod uid"))
            .expect("the pod's exec directory")
    }

    /// The kubelet pods directory of the node `node`, as the test names it.
    pub fn host_pods(&self, node: &str) -> PathBuf {
        self.node_pods(&self.scoped(node))
    }

    /// The kubelet pods directory of the node `stored`, as the server names it.
    fn node_pods(&self, stored: &str) -> PathBuf {
        self.dir.path().join("nodes").join(stored).join("pods")
    }

    /// Registers the node `name` as its kubelet would, Ready with room for pods, and makes its
    /// pods directory. It is labelled with the test's id, and tainted with it so that a
    /// scheduler never places a pod there: the harness binds the test's pods itself.
    pub async fn add_node(&self, name: &str) {
        fs::create_dir_all(self.host_pods(name)).expect("pods directory");
        let stored = self.scoped(name);
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": stored, "labels": self.names.labels()},
            "spec": {"taints": [{"key": TEST_ID_LABEL, "value": self.names.id(),
                                 "effect": "NoSchedule"}]},
        }))
        .expect("node");
        let nodes = Api::<Node>::all(self.client());
        nodes
            .create(&PostParams::default(), &node)
            .await
            .expect("create node");
        let room = json!({"pods": "110", "cpu": "4", "memory": "8Gi"});
        let status = json!({"status": {
            "capacity": room, "allocatable": room,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "played by the Ferry test harness"}],
        }});
        nodes
            .patch_status(&stored, &PatchParams::default(), &Patch::Merge(status))
            .await
            .expect("set node status");
    }

    /// Plays the workload controllers and the kubelet for an install, in the background: once
    /// the coordinator's Deployment and the node agents' DaemonSet exist in the install
    /// namespace, marks them ready as their controllers do once the pods run (one ready
    /// coordinator, and a ready agent on every node). The test starts the real processes
    /// itself. The task fails if they never appear.
    pub fn run_installed_workloads(&self) -> tokio::task::JoinHandle<()> {
        let client = self.client();
        let namespace = self.namespace.clone();
        tokio::spawn(async move {
            let nodes = Api::<Node>::all(client.clone())
                .list(&ListParams::default())
                .await
                .expect("list nodes")
                .items
                .len();
            let deployments = Api::<Deployment>::namespaced(client.clone(), &namespace);
            let generation = appeared(&deployments, INSTALLED_COORDINATOR).await;
            let status = json!({"observedGeneration": generation, "replicas": 1,
                "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1});
            set_status(&deployments, INSTALLED_COORDINATOR, status).await;
            let daemonsets = Api::<DaemonSet>::namespaced(client, &namespace);
            let generation = appeared(&daemonsets, INSTALLED_NODE_AGENT).await;
            let status = json!({"observedGeneration": generation, "desiredNumberScheduled": nodes,
                "currentNumberScheduled": nodes, "updatedNumberScheduled": nodes,
                "numberReady": nodes, "numberAvailable": nodes, "numberMisscheduled": 0});
            set_status(&daemonsets, INSTALLED_NODE_AGENT, status).await;
        })
    }

    /// Creates the claim `claim` in `namespace`, bound to the CSI persistent volume `volume`
    /// (both as the test names them), as a provisioner would have made them. Its storage class
    /// is none, so that no provisioner of a real cluster takes it.
    pub async fn create_bound_claim(&self, namespace: &str, claim: &str, volume: &str) {
        let namespace = self.scoped(namespace);
        let volume = self.scoped(volume);
        let claims = Api::<PersistentVolumeClaim>::namespaced(self.client(), &namespace);
        let claim: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": claim, "namespace": namespace},
            "spec": {"accessModes": ["ReadWriteOnce"], "volumeName": volume,
                     "storageClassName": "", "resources": {"requests": {"storage": "1Gi"}}},
        }))
        .expect("claim");
        claims
            .create(&PostParams::default(), &claim)
            .await
            .expect("create claim");
        self.create_csi_volume(&volume).await;
    }

    /// Creates a 1Gi CSI persistent volume named `name` as the server stores it, as a
    /// provisioner would, labelled with the test's id.
    async fn create_csi_volume(&self, name: &str) {
        let volume: PersistentVolume = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": self.names.labels()},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                     "csi": {"driver": "csi.example.com", "volumeHandle": name}},
        }))
        .expect("volume");
        Api::<PersistentVolume>::all(self.client())
            .create(&PostParams::default(), &volume)
            .await
            .expect("create persistent volume");
    }

    /// Plays the scheduler, the provisioner and the kubelet for a pod that a restore created
    /// in `namespace`: binds its unbound claims to fresh CSI volumes, binds the pod to `node`
    /// (both as the test names them), makes its volume directories and starts its first init
    /// container. Returns the pod and each volume's directory by volume name.
    pub async fn run_restored_pod(
        &self,
        namespace: &str,
        name: &str,
        node: &str,
    ) -> (Pod, BTreeMap<String, PathBuf>) {
        let namespace = &self.scoped(namespace);
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
        self.bind_pod(namespace, name, &self.scoped(node)).await;
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

    /// Binds a pod to `node` through its `binding` subresource, as the scheduler does, unless
    /// a scheduler bound it there first.
    async fn bind_pod(&self, namespace: &str, name: &str, node: &str) {
        let binding = json!({
            "apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": name, "namespace": namespace},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        });
        let pods = Api::<Pod>::namespaced(self.client(), namespace);
        let bound = pods
            .create_subresource::<_, serde_json::Value>(
                "binding",
                name,
                &PostParams::default(),
                &binding,
            )
            .await;
        match bound {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {
                let pod = pods.get(name).await.expect("read the bound pod");
                let on = pod.spec.and_then(|spec| spec.node_name);
                assert_eq!(
                    on.as_deref(),
                    Some(node),
                    "a scheduler bound {namespace}/{name} elsewhere"
                );
            }
            Err(err) => panic!("bind pod {namespace}/{name}: {err}"),
        }
    }

    /// Creates a running pod `name` in `namespace` on `node` (both as the test names them),
    /// whose volumes exist on the node, as the kubelet would have made them, and returns it
    /// with the host directory of each volume. Its node selector is the test's id, as the
    /// pods a restore makes from it keep, so that a scheduler of a real cluster leaves those
    /// for the harness to bind.
    pub async fn create_pod(
        &self,
        namespace: &str,
        name: &str,
        node: &str,
        volumes_of: Vec<(&str, VolumeKind)>,
    ) -> (Pod, Vec<PathBuf>) {
        let mut pod_volumes = Vec::new();
        for (volume, kind) in &volumes_of {
            let source = match kind {
                VolumeKind::EmptyDir => json!({"name": volume, "emptyDir": {}}),
                VolumeKind::CsiClaim { claim, .. } => {
                    json!({"name": volume, "persistentVolumeClaim": {"claimName": claim}})
                }
            };
            pod_volumes.push(serde_json::from_value::<Volume>(source).expect("volume"));
        }
        let namespace = &self.scoped(namespace);
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(namespace.to_owned()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: Some(self.scoped(node)),
                node_selector: Some(self.names.labels()),
                containers: vec![Container {
                    name: "app".to_owned(),
                    image: Some("app:1".to_owned()),
                    volume_mounts: Some(
                        volumes_of
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
        let volumes = self.host_pods(node).join(&uid).join("volumes");
        let mut dirs = Vec::new();
        for (volume, kind) in &volumes_of {
            let dir = match kind {
                VolumeKind::EmptyDir => volumes.join("kubernetes.io~empty-dir").join(volume),
                VolumeKind::CsiClaim { volume, .. } => volumes
                    .join("kubernetes.io~csi")
                    .join(self.scoped(volume))
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
            let _ = fs::remove_dir_all(self.node_pods(&node).join(uid));
        }
    }
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
