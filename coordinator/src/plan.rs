//! The pure parts of a backup: which volumes of which pods to back up, the PodVolumeBackups
//! that follow, their parents, and the Backup's status from theirs.

use std::collections::{BTreeMap, BTreeSet};

use ferry_shared::crd::{
    OperationPhase, PodReference, PodVolumeBackup, PodVolumeBackupSpec, PodVolumePhase,
    PodVolumeTransfer, Progress, SkippedVolume, TransferCounts,
};
use ferry_shared::names::{self, annotation, label, tag};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod, Volume};
use kube::ResourceExt;

/// A volume chosen for backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChosenVolume {
    pub pod: PodReference,
    pub node: String,
    pub volume: String,
    /// The claim's name and UID, for a PVC.
    pub claim: Option<(String, String)>,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct VolumeChoice {
    pub chosen: Vec<ChosenVolume>,
    pub skipped: Vec<SkippedVolume>,
}

/// Volumes an opt-out backup never takes: their contents come from the API or the node.
fn never_backed_up(volume: &Volume) -> bool {
    volume.host_path.is_some()
        || volume.secret.is_some()
        || volume.config_map.is_some()
        || volume.projected.is_some()
        || volume.downward_api.is_some()
        || volume.name.starts_with("default-token")
}

fn annotation_list(pod: &Pod, key: &str) -> Vec<String> {
    pod.annotations()
        .get(key)
        .map(|value| {
            value
                .split(',')
                .map(str::trim)
                .filter(|name| !name.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The volumes a pod asks to have backed up: the opt-in annotation (either spelling), or with
/// `opt_out` every volume but those that never are and those the excludes annotation names.
fn requested_volumes(pod: &Pod, opt_out: bool) -> Vec<String> {
    let volumes = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.volumes.clone())
        .unwrap_or_default();
    if opt_out {
        let excluded = annotation_list(pod, annotation::BACKUP_VOLUMES_EXCLUDES);
        return volumes
            .iter()
            .filter(|volume| !never_backed_up(volume) && !excluded.contains(&volume.name))
            .map(|volume| volume.name.clone())
            .collect();
    }
    let mut names = annotation_list(pod, annotation::BACKUP_VOLUMES);
    for name in annotation_list(pod, annotation::VELERO_BACKUP_VOLUMES) {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// The volumes a pod's containers mount as filesystems, and those they use as block devices.
struct Mounts {
    mounted: BTreeSet<String>,
    devices: BTreeSet<String>,
}

fn mounted_volumes(pod: &Pod) -> Mounts {
    let mut mounted = BTreeSet::new();
    let mut devices = BTreeSet::new();
    if let Some(spec) = &pod.spec {
        let init = spec.init_containers.iter().flatten();
        for container in spec.containers.iter().chain(init) {
            for mount in container.volume_mounts.iter().flatten() {
                mounted.insert(mount.name.clone());
            }
            for device in container.volume_devices.iter().flatten() {
                devices.insert(device.name.clone());
            }
        }
    }
    Mounts { mounted, devices }
}

/// Chooses the volumes to back up from `pods`, which are sorted by namespace and name for a
/// stable choice. `claims` and `volumes` hold the PVCs and PVs the pods may use.
pub fn choose_volumes(
    pods: &[Pod],
    claims: &[PersistentVolumeClaim],
    volumes: &[PersistentVolume],
    opt_out: bool,
) -> VolumeChoice {
    let mut pods: Vec<&Pod> = pods.iter().collect();
    pods.sort_by_key(|pod| (pod.namespace(), pod.name_any()));
    let mut inventory = Inventory::new(claims, volumes);
    let mut choice = VolumeChoice::default();
    for pod in pods {
        let requested = requested_volumes(pod, opt_out);
        if requested.is_empty() {
            continue;
        }
        let reference = PodReference {
            namespace: pod.namespace().unwrap_or_default(),
            name: pod.name_any(),
            uid: pod.uid().unwrap_or_default(),
        };
        let node = match running_on(pod) {
            Ok(node) => node,
            Err(reason) => {
                for volume in requested {
                    choice.skip(&reference, volume, reason.clone());
                }
                continue;
            }
        };
        let spec_volumes = pod
            .spec
            .iter()
            .flat_map(|spec| spec.volumes.iter().flatten());
        let spec_volumes: Vec<&Volume> = spec_volumes.collect();
        let mounts = mounted_volumes(pod);
        for name in requested {
            let Some(volume) = spec_volumes.iter().find(|volume| volume.name == name) else {
                choice.skip(
                    &reference,
                    name,
                    "the pod has no volume of that name".to_owned(),
                );
                continue;
            };
            match inventory.judge(&reference.namespace, volume, &mounts) {
                Verdict::Take(claim) => choice.chosen.push(ChosenVolume {
                    pod: reference.clone(),
                    node: node.clone(),
                    volume: name,
                    claim,
                }),
                Verdict::Skip(reason) => choice.skip(&reference, name, reason),
                Verdict::Shared => {}
            }
        }
    }
    choice
}

impl VolumeChoice {
    fn skip(&mut self, pod: &PodReference, volume: String, reason: String) {
        self.skipped.push(SkippedVolume {
            pod: format!("{}/{}", pod.namespace, pod.name),
            volume,
            reason,
        });
    }
}

/// The node of a Running pod, or why its volumes cannot be read.
fn running_on(pod: &Pod) -> Result<String, String> {
    let phase = pod
        .status
        .as_ref()
        .and_then(|status| status.phase.clone())
        .unwrap_or_default();
    let node = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.node_name.clone())
        .unwrap_or_default();
    if phase != "Running" || node.is_empty() {
        let phase = if phase.is_empty() { "Unknown" } else { &phase };
        return Err(format!("the pod is not Running (phase {phase})"));
    }
    Ok(node)
}

/// What becomes of one requested volume of a Running pod.
enum Verdict {
    /// Backed up, through this claim (name and UID) for a PVC.
    Take(Option<(String, String)>),
    Skip(String),
    /// Its claim is backed up through an earlier pod.
    Shared,
}

/// The claims and persistent volumes the pods may use, and the claims already chosen.
struct Inventory<'a> {
    claims: BTreeMap<(String, String), &'a PersistentVolumeClaim>,
    volumes: BTreeMap<String, &'a PersistentVolume>,
    taken: BTreeSet<(String, String)>,
}

impl<'a> Inventory<'a> {
    fn new(claims: &'a [PersistentVolumeClaim], volumes: &'a [PersistentVolume]) -> Self {
        let claim_key = |claim: &PersistentVolumeClaim| {
            (claim.namespace().unwrap_or_default(), claim.name_any())
        };
        Self {
            claims: claims
                .iter()
                .map(|claim| (claim_key(claim), claim))
                .collect(),
            volumes: volumes.iter().map(|pv| (pv.name_any(), pv)).collect(),
            taken: BTreeSet::new(),
        }
    }

    fn judge(&mut self, namespace: &str, volume: &Volume, mounts: &Mounts) -> Verdict {
        let skip = |reason: &str| Verdict::Skip(reason.to_owned());
        if volume.host_path.is_some() {
            return skip("hostPath volumes are not backed up");
        }
        if mounts.devices.contains(&volume.name) {
            return skip("block-mode volumes are not backed up");
        }
        if !mounts.mounted.contains(&volume.name) {
            return skip("no container mounts it");
        }
        match &volume.persistent_volume_claim {
            Some(source) => self.claim(namespace, &source.claim_name),
            None => Verdict::Take(None),
        }
    }

    /// A claim's volume: backed up when the claim is bound to a filesystem volume that is
    /// no hostPath, once however many pods mount it.
    fn claim(&mut self, namespace: &str, claim_name: &str) -> Verdict {
        let key = (namespace.to_owned(), claim_name.to_owned());
        let Some(claim) = self.claims.get(&key) else {
            return Verdict::Skip(format!("its claim {claim_name} does not exist"));
        };
        let spec = claim.spec.clone().unwrap_or_default();
        if spec.volume_mode.as_deref() == Some("Block") {
            return Verdict::Skip("block-mode volumes are not backed up".to_owned());
        }
        let bound = spec.volume_name.unwrap_or_default();
        if bound.is_empty() {
            return Verdict::Skip(format!("its claim {claim_name} is not bound"));
        }
        let host_path = (self.volumes.get(&bound).and_then(|pv| pv.spec.as_ref()))
            .is_some_and(|spec| spec.host_path.is_some());
        if host_path {
            return Verdict::Skip(format!(
                "its persistent volume {bound} is a hostPath volume"
            ));
        }
        let uid = claim.uid().unwrap_or_default();
        // A claim mounted by several pods is backed up once, through the first pod.
        if !self.taken.insert(key) {
            return Verdict::Shared;
        }
        Verdict::Take(Some((claim_name.to_owned(), uid)))
    }
}

/// Who a PodVolumeBackup is for: the Backup's name and UID, and where its data goes.
pub struct BackupTarget<'a> {
    pub backup_name: &'a str,
    pub backup_uid: &'a str,
    pub storage_location: &'a str,
}

/// The identity of a volume inside one backup: the pod's UID and the volume's name.
pub fn volume_key(pod_uid: &str, volume: &str) -> String {
    format!("{pod_uid}/{volume}")
}

/// The PodVolumeBackup for a chosen volume, with its labels, tags and parent. `repository` is
/// the identifier of the namespace's repository in the location; `earlier` are the
/// PodVolumeBackups that already exist, which give the parent.
pub fn pod_volume_backup(
    target: &BackupTarget<'_>,
    chosen: &ChosenVolume,
    repository: &str,
    earlier: &[PodVolumeBackup],
) -> PodVolumeBackup {
    let mut tags = BTreeMap::from([
        (tag::BACKUP.to_owned(), target.backup_name.to_owned()),
        (tag::BACKUP_UID.to_owned(), target.backup_uid.to_owned()),
        (tag::POD.to_owned(), chosen.pod.name.clone()),
        (tag::POD_UID.to_owned(), chosen.pod.uid.clone()),
        (tag::NAMESPACE.to_owned(), chosen.pod.namespace.clone()),
        (tag::VOLUME.to_owned(), chosen.volume.clone()),
    ]);
    let mut labels = BTreeMap::from([
        (
            label::BACKUP_NAME.to_owned(),
            names::label_value(target.backup_name),
        ),
        (label::BACKUP_UID.to_owned(), target.backup_uid.to_owned()),
        (label::POD_UID.to_owned(), chosen.pod.uid.clone()),
        (label::NODE.to_owned(), chosen.node.clone()),
    ]);
    let mut annotations = BTreeMap::new();
    if let Some((claim_name, claim_uid)) = &chosen.claim {
        tags.insert(tag::PVC_UID.to_owned(), claim_uid.clone());
        labels.insert(label::PVC_UID.to_owned(), claim_uid.clone());
        annotations.insert(annotation::PVC_NAME.to_owned(), claim_name.clone());
    }
    let spec = PodVolumeBackupSpec {
        node: chosen.node.clone(),
        pod: chosen.pod.clone(),
        volume: chosen.volume.clone(),
        storage_location: target.storage_location.to_owned(),
        repository: repository.to_owned(),
        tags,
        parent_snapshot_id: parent_snapshot(chosen, target.storage_location, earlier),
    };
    let mut pvb = PodVolumeBackup::new("", spec);
    pvb.metadata.name = None;
    pvb.metadata.generate_name = Some(format!("{}-", generate_name_prefix(target.backup_name)));
    pvb.metadata.labels = Some(labels);
    if !annotations.is_empty() {
        pvb.metadata.annotations = Some(annotations);
    }
    pvb
}

/// A `generateName` prefix from a name, short enough that the generated name is valid.
pub fn generate_name_prefix(name: &str) -> &str {
    &name[..name.floor_char_boundary(200)]
}

/// The snapshot to back up incrementally from: that of the newest Completed PodVolumeBackup
/// of the same claim (by UID) in the same location, or for an inline volume of the same
/// namespace, pod name and volume.
pub fn parent_snapshot(
    chosen: &ChosenVolume,
    storage_location: &str,
    earlier: &[PodVolumeBackup],
) -> Option<String> {
    earlier
        .iter()
        .filter(|pvb| pvb.spec.storage_location == storage_location)
        .filter(|pvb| pvb.phase() == PodVolumePhase::Completed)
        .filter(|pvb| match &chosen.claim {
            Some((_, claim_uid)) => pvb.spec.tags.get(tag::PVC_UID) == Some(claim_uid),
            None => {
                !pvb.spec.tags.contains_key(tag::PVC_UID)
                    && pvb.spec.pod.namespace == chosen.pod.namespace
                    && pvb.spec.pod.name == chosen.pod.name
                    && pvb.spec.volume == chosen.volume
            }
        })
        .filter_map(|pvb| {
            let status = pvb.status.as_ref()?;
            let snapshot = status.snapshot_id.clone().filter(|id| !id.is_empty())?;
            let finished = status.completion_timestamp.as_ref().map(|time| time.0);
            Some((finished, snapshot))
        })
        .max_by_key(|(finished, _)| *finished)
        .map(|(_, snapshot)| snapshot)
}

/// One transfer as the aggregation sees it: PodVolumeBackups and PodVolumeRestores alike.
#[derive(Debug, Clone, Default)]
pub struct TransferView {
    pub description: String,
    pub phase: PodVolumePhase,
    pub progress: Progress,
    pub message: Option<String>,
    pub warnings: Vec<String>,
}

/// The sum of a Backup's or Restore's transfers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Aggregate {
    pub counts: TransferCounts,
    pub progress: Progress,
    pub running: u32,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

impl Aggregate {
    /// Whether every planned transfer has ended; a planned one that is missing (deleted before
    /// it finished) has ended as failed.
    pub fn finished(&self) -> bool {
        self.running == 0
    }

    /// The final phase once finished: PartiallyFailed when a transfer failed or the Backup or
    /// Restore recorded `errors` of its own (objects it could not read or create).
    pub fn final_phase(&self, errors: &[String]) -> OperationPhase {
        if self.counts.failed > 0 || !self.errors.is_empty() || !errors.is_empty() {
            OperationPhase::PartiallyFailed
        } else {
            OperationPhase::Completed
        }
    }
}

/// Appends the items of `more` that `list` lacks, keeping the order: warnings and errors
/// recomputed on every pass are recorded once.
pub fn union(mut list: Vec<String>, more: impl IntoIterator<Item = String>) -> Vec<String> {
    for item in more {
        if !list.contains(&item) {
            list.push(item);
        }
    }
    list
}

/// Sums `transfers`, of which `planned` were created; `stopped` are the errors of those the
/// coordinator stopped and deleted for running too long.
pub fn aggregate(planned: u32, transfers: &[TransferView], stopped: &[String]) -> Aggregate {
    let mut sum = Aggregate::default();
    let mut seen = 0;
    for transfer in transfers {
        seen += 1;
        sum.progress.total_bytes += transfer.progress.total_bytes;
        sum.progress.bytes_done += transfer.progress.bytes_done;
        sum.progress.total_files += transfer.progress.total_files;
        sum.progress.files_done += transfer.progress.files_done;
        if transfer.phase == PodVolumePhase::InProgress {
            sum.progress.bytes_per_second += transfer.progress.bytes_per_second;
        }
        for warning in &transfer.warnings {
            sum.warnings
                .push(format!("{}: {warning}", transfer.description));
        }
        match transfer.phase {
            PodVolumePhase::Completed => sum.counts.completed += 1,
            PodVolumePhase::Failed => {
                sum.counts.failed += 1;
                sum.errors.push(format!(
                    "{} failed: {}",
                    transfer.description,
                    transfer.message.as_deref().unwrap_or("no reason given")
                ));
            }
            PodVolumePhase::New | PodVolumePhase::InProgress => sum.running += 1,
        }
    }
    let stopped_count = u32::try_from(stopped.len()).unwrap_or(u32::MAX);
    sum.counts.failed += stopped_count;
    sum.errors.extend(stopped.iter().cloned());
    seen += stopped_count;
    let missing = planned.saturating_sub(seen);
    if missing > 0 {
        sum.counts.failed += missing;
        sum.errors.push(format!(
            "{missing} transfer(s) were deleted before they finished"
        ));
    }
    sum.counts.total = planned.max(seen);
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    fn pod(
        name: &str,
        phase: &str,
        annotations: serde_json::Value,
        volumes: serde_json::Value,
    ) -> Pod {
        let names: Vec<String> = volumes
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap().to_owned())
            .filter(|n| n != "unmounted")
            .collect();
        let mounts: Vec<_> = names
            .iter()
            .map(|n| json!({"name": n, "mountPath": format!("/{n}")}))
            .collect();
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}"), "annotations": annotations},
            "spec": {"nodeName": "n1", "containers": [{"name": "app", "volumeMounts": mounts}], "volumes": volumes},
            "status": {"phase": phase},
        }))
        .unwrap()
    }

    fn claim(name: &str, volume: Option<&str>) -> PersistentVolumeClaim {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}")},
            "spec": {"volumeName": volume},
        }))
        .unwrap()
    }

    fn volumes() -> serde_json::Value {
        json!([
            {"name": "cache", "emptyDir": {}},
            {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
            {"name": "config", "configMap": {"name": "c"}},
            {"name": "host", "hostPath": {"path": "/var"}},
            {"name": "default-token-x", "secret": {"secretName": "t"}},
            {"name": "unmounted", "emptyDir": {}},
        ])
    }

    fn chosen(choice: &VolumeChoice) -> Vec<String> {
        choice
            .chosen
            .iter()
            .map(|c| format!("{}/{}", c.pod.name, c.volume))
            .collect()
    }

    #[test]
    fn opt_out_takes_every_eligible_volume_and_records_why_others_are_skipped() {
        let pods = [pod("web", "Running", json!({}), volumes())];
        let choice = choose_volumes(&pods, &[claim("data", Some("pv-1"))], &[], true);
        assert_eq!(chosen(&choice), ["web/cache", "web/data"]);
        assert_eq!(
            choice.skipped,
            [SkippedVolume {
                pod: "shop/web".into(),
                volume: "unmounted".into(),
                reason: "no container mounts it".into()
            }]
        );
        assert_eq!(
            choice.chosen[1].claim,
            Some(("data".into(), "uid-data".into()))
        );
    }

    #[test]
    fn opt_out_honours_the_excludes_annotation() {
        let pods = [pod(
            "web",
            "Running",
            json!({annotation::BACKUP_VOLUMES_EXCLUDES: "cache, unmounted"}),
            volumes(),
        )];
        let choice = choose_volumes(&pods, &[claim("data", Some("pv-1"))], &[], true);
        assert_eq!(chosen(&choice), ["web/data"]);
        assert!(choice.skipped.is_empty());
    }

    #[test]
    fn opt_in_takes_only_named_volumes_in_either_spelling() {
        let pods = [
            pod(
                "a",
                "Running",
                json!({annotation::BACKUP_VOLUMES: "cache,host,nope"}),
                volumes(),
            ),
            pod(
                "b",
                "Running",
                json!({annotation::VELERO_BACKUP_VOLUMES: "cache"}),
                volumes(),
            ),
            pod("c", "Running", json!({}), volumes()),
        ];
        let choice = choose_volumes(&pods, &[], &[], false);
        assert_eq!(chosen(&choice), ["a/cache", "b/cache"]);
        let reasons: Vec<String> = choice.skipped.iter().map(ToString::to_string).collect();
        assert_eq!(
            reasons,
            [
                "volume host of pod shop/a skipped: hostPath volumes are not backed up",
                "volume nope of pod shop/a skipped: the pod has no volume of that name",
            ]
        );
    }

    #[test]
    fn pods_not_running_unbound_claims_block_and_host_path_volumes_are_skipped() {
        let block: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": "data", "namespace": "shop", "uid": "u"},
            "spec": {"volumeName": "pv-1", "volumeMode": "Block"},
        }))
        .unwrap();
        let host_pv: PersistentVolume = serde_json::from_value(json!({
            "metadata": {"name": "pv-h"},
            "spec": {"hostPath": {"path": "/srv"}},
        }))
        .unwrap();
        let only_data = json!({annotation::BACKUP_VOLUMES: "data"});
        let pending = [pod("p", "Pending", only_data.clone(), volumes())];
        let choice = choose_volumes(&pending, &[], &[], false);
        assert_eq!(
            choice.skipped[0].reason,
            "the pod is not Running (phase Pending)"
        );
        for (claims, reason) in [
            (vec![block], "block-mode volumes are not backed up"),
            (vec![claim("data", None)], "its claim data is not bound"),
            (
                vec![claim("data", Some("pv-h"))],
                "its persistent volume pv-h is a hostPath volume",
            ),
            (vec![], "its claim data does not exist"),
        ] {
            let running = [pod("r", "Running", only_data.clone(), volumes())];
            let choice = choose_volumes(&running, &claims, std::slice::from_ref(&host_pv), false);
            assert!(choice.chosen.is_empty());
            assert_eq!(choice.skipped[0].reason, reason);
        }
    }

    #[test]
    fn a_claim_shared_by_two_pods_is_backed_up_once() {
        let shared = json!([{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]);
        let pods = [
            pod("b", "Running", json!({}), shared.clone()),
            pod("a", "Running", json!({}), shared),
        ];
        let choice = choose_volumes(&pods, &[claim("data", Some("pv-1"))], &[], true);
        assert_eq!(chosen(&choice), ["a/data"]);
    }

    fn earlier(
        claim_uid: Option<&str>,
        pod: &str,
        snapshot: &str,
        finished: i64,
        phase: PodVolumePhase,
    ) -> PodVolumeBackup {
        let mut tags = BTreeMap::new();
        if let Some(uid) = claim_uid {
            tags.insert(tag::PVC_UID.to_owned(), uid.to_owned());
        }
        let mut pvb = PodVolumeBackup::new(
            "x",
            PodVolumeBackupSpec {
                pod: PodReference {
                    namespace: "shop".into(),
                    name: pod.into(),
                    uid: "old".into(),
                },
                volume: "data".into(),
                storage_location: "default".into(),
                tags,
                ..PodVolumeBackupSpec::default()
            },
        );
        pvb.status = Some(ferry_shared::crd::PodVolumeTransferStatus {
            phase,
            snapshot_id: Some(snapshot.into()),
            completion_timestamp: Some(Time(jiff::Timestamp::from_second(finished).unwrap())),
            ..Default::default()
        });
        pvb
    }

    #[test]
    fn the_parent_is_the_newest_completed_backup_of_the_same_claim_or_inline_volume() {
        let claim_volume = ChosenVolume {
            pod: PodReference {
                namespace: "shop".into(),
                name: "web-7f".into(),
                uid: "new".into(),
            },
            node: "n1".into(),
            volume: "data".into(),
            claim: Some(("data".into(), "c1".into())),
        };
        let history = [
            earlier(Some("c1"), "web-1a", "old", 10, PodVolumePhase::Completed),
            earlier(
                Some("c1"),
                "web-2b",
                "newest",
                30,
                PodVolumePhase::Completed,
            ),
            earlier(Some("c1"), "web-3c", "failed", 40, PodVolumePhase::Failed),
            earlier(
                Some("c2"),
                "web-7f",
                "other-claim",
                50,
                PodVolumePhase::Completed,
            ),
            earlier(None, "web-7f", "inline", 60, PodVolumePhase::Completed),
        ];
        assert_eq!(
            parent_snapshot(&claim_volume, "default", &history).as_deref(),
            Some("newest")
        );
        assert_eq!(parent_snapshot(&claim_volume, "elsewhere", &history), None);
        let inline = ChosenVolume {
            claim: None,
            ..claim_volume
        };
        assert_eq!(
            parent_snapshot(&inline, "default", &history).as_deref(),
            Some("inline")
        );
    }

    #[test]
    fn pod_volume_backups_carry_labels_tags_and_claim() {
        let chosen = ChosenVolume {
            pod: PodReference {
                namespace: "shop".into(),
                name: "web".into(),
                uid: "p1".into(),
            },
            node: "n1".into(),
            volume: "data".into(),
            claim: Some(("data".into(), "c1".into())),
        };
        let target = BackupTarget {
            backup_name: "nightly",
            backup_uid: "b1",
            storage_location: "default",
        };
        let pvb = pod_volume_backup(&target, &chosen, "s3:x/restic/shop", &[]);
        assert_eq!(pvb.metadata.generate_name.as_deref(), Some("nightly-"));
        let labels = pvb.metadata.labels.unwrap();
        assert_eq!(labels[label::NODE], "n1");
        assert_eq!(labels[label::PVC_UID], "c1");
        assert_eq!(labels[label::BACKUP_UID], "b1");
        assert_eq!(pvb.spec.tags[tag::PVC_UID], "c1");
        assert_eq!(pvb.spec.tags[tag::NAMESPACE], "shop");
        assert_eq!(pvb.spec.tags.len(), 7);
        assert_eq!(
            pvb.metadata.annotations.unwrap()[annotation::PVC_NAME],
            "data"
        );
    }

    #[test]
    fn union_appends_only_what_is_new_in_order() {
        let list = vec!["a".to_owned(), "b".to_owned()];
        let more = ["b", "c", "a", "d"].map(str::to_owned);
        assert_eq!(union(list, more), ["a", "b", "c", "d"]);
    }

    #[test]
    fn aggregation_counts_sums_rates_of_running_transfers_and_names_failures() {
        let view = |phase, bytes, message: Option<&str>| TransferView {
            description: "pod shop/web volume data".into(),
            phase,
            progress: Progress {
                total_bytes: 100,
                bytes_done: bytes,
                bytes_per_second: 7,
                ..Progress::default()
            },
            message: message.map(str::to_owned),
            warnings: vec![],
        };
        let running = aggregate(
            2,
            &[
                view(PodVolumePhase::Completed, 100, None),
                view(PodVolumePhase::InProgress, 40, None),
            ],
            &[],
        );
        assert!(!running.finished());
        assert_eq!(running.progress.bytes_done, 140);
        assert_eq!(running.progress.total_bytes, 200);
        // Only a running transfer moves bytes now; a finished one's last rate is history.
        assert_eq!(running.progress.bytes_per_second, 7);
        let done = aggregate(
            2,
            &[
                view(PodVolumePhase::Completed, 100, None),
                view(PodVolumePhase::Failed, 0, Some("disk full")),
            ],
            &[],
        );
        assert!(done.finished());
        assert_eq!(
            done.counts,
            TransferCounts {
                total: 2,
                completed: 1,
                failed: 1
            }
        );
        assert_eq!(done.final_phase(&[]), OperationPhase::PartiallyFailed);
        assert!(
            done.errors[0].ends_with("failed: disk full"),
            "{:?}",
            done.errors
        );
        let missing = aggregate(2, &[view(PodVolumePhase::Completed, 100, None)], &[]);
        assert!(missing.finished());
        assert_eq!(missing.counts.failed, 1);
        assert!(missing.errors[0].contains("deleted before they finished"));
        let timed_out = aggregate(
            2,
            &[view(PodVolumePhase::Completed, 100, None)],
            &["shop/web/data timed out".into()],
        );
        assert_eq!(
            timed_out.counts,
            TransferCounts {
                total: 2,
                completed: 1,
                failed: 1
            }
        );
        assert_eq!(timed_out.errors, ["shop/web/data timed out"]);
        let all_good = aggregate(1, &[view(PodVolumePhase::Completed, 100, None)], &[]);
        assert_eq!(all_good.final_phase(&[]), OperationPhase::Completed);
        let lost = ["the backup lacks the objects of 1 type(s)".to_owned()];
        assert_eq!(all_good.final_phase(&lost), OperationPhase::PartiallyFailed);
    }
}
