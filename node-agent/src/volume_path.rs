//! Finding a pod volume on the host, by the kubelet's layout:
//! `<host pods>/<pod UID>/volumes/<plugin>/<dir>`, where `<dir>` is the volume name (plus
//! `/mount` for inline CSI), or for a PVC the PV name (plus `/mount` for a CSI PV).
//!
//! The agent runs as root with the host's pods directory mounted, and the names it gets come
//! from custom resources that anyone with write access to them can craft. So nothing from a CR
//! is trusted: the pod must be the live pod on this node, the volume one of its volumes with a
//! DNS-1123 name and none that the API server fills (Secrets, ConfigMaps, tokens, the downward
//! API), and the resolved path, symlinks resolved, must lie under that pod's own volumes directory.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod, Volume};

/// Why a volume cannot be resolved, or must not be.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VolumePathError {
    #[error(
        "pod {namespace}/{name} has UID {live}, not {requested}: the pod was replaced since the request was made"
    )]
    PodUidMismatch {
        namespace: String,
        name: String,
        live: String,
        requested: String,
    },
    #[error("pod {namespace}/{name} runs on node {actual:?}, not on this node {expected}")]
    WrongNode {
        namespace: String,
        name: String,
        actual: Option<String>,
        expected: String,
    },
    #[error("{what} {value:?} is not a valid name: {why}")]
    InvalidName {
        what: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("pod {namespace}/{name} has no volume named {volume}")]
    NoSuchVolume {
        namespace: String,
        name: String,
        volume: String,
    },
    #[error("volume {volume} is a PVC, but claim {claim} is not bound to a persistent volume yet")]
    ClaimNotBound { volume: String, claim: String },
    #[error("volume {volume} uses claim {claim}, but the request was resolved without it")]
    ClaimMissing { volume: String, claim: String },
    #[error(
        "volume {volume} is a block device (volumeMode Block); only filesystem volumes can be backed up"
    )]
    BlockVolume { volume: String },
    #[error("volume {volume} is a hostPath volume; Ferry does not back up host directories")]
    HostPathVolume { volume: String },
    #[error(
        "volume {volume} is a {kind} volume; Ferry never reads or writes volumes that Kubernetes fills from the API server (secret, projected, configMap, downwardAPI, service-account tokens): back up their source objects instead"
    )]
    ApiServerVolume { volume: String, kind: &'static str },
    #[error("no directory of volume {volume} was found under {}: is the pod running on this node, and is --host-pods the kubelet's pods directory?", pattern.display())]
    NotFound { volume: String, pattern: PathBuf },
    #[error("volume {volume} matches more than one directory ({}); refusing to guess", found.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    Ambiguous { volume: String, found: Vec<PathBuf> },
    #[error("volume {volume} resolves to {}, outside its pod's volumes directory {}", resolved.display(), volumes.display())]
    OutsidePodVolumes {
        volume: String,
        resolved: PathBuf,
        volumes: PathBuf,
    },
    #[error("cannot read {}: {cause}", path.display())]
    Io { path: PathBuf, cause: String },
}

/// The directory of a volume under `<pod UID>/volumes/<plugin>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeDir {
    pub volume: String,
    /// The volume name or PV name, with `/mount` for CSI.
    pub dir: PathBuf,
}

/// What the request claims, checked against what the cluster says.
#[derive(Debug, Clone, Copy)]
pub struct VolumeRequest<'a> {
    pub node: &'a str,
    pub pod_uid: &'a str,
    pub volume: &'a str,
}

/// Checks the request against the live pod (and for a PVC, its claim and volume) and works
/// out the volume's directory name. Pure: no file system, no API calls.
pub fn volume_dir(
    request: VolumeRequest<'_>,
    pod: &Pod,
    claim: Option<&PersistentVolumeClaim>,
    persistent_volume: Option<&PersistentVolume>,
) -> Result<VolumeDir, VolumePathError> {
    let volume = requested_volume(request, pod)?;
    let volume_name = request.volume.to_owned();
    if volume.host_path.is_some() {
        return Err(VolumePathError::HostPathVolume {
            volume: volume_name,
        });
    }
    if let Some(kind) = api_server_kind(volume) {
        return Err(VolumePathError::ApiServerVolume {
            volume: volume_name,
            kind,
        });
    }
    let dir = match &volume.persistent_volume_claim {
        Some(source) => claim_dir(&volume_name, &source.claim_name, claim, persistent_volume)?,
        None => {
            let mut dir = PathBuf::from(&volume.name);
            if volume.csi.is_some() {
                dir.push("mount");
            }
            dir
        }
    };
    Ok(VolumeDir {
        volume: volume_name,
        dir,
    })
}

/// The requested volume of the live pod, once the request's names are well formed and its pod
/// UID and node are the pod's.
fn requested_volume<'p>(
    request: VolumeRequest<'_>,
    pod: &'p Pod,
) -> Result<&'p Volume, VolumePathError> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    check_label("volume name", request.volume)?;
    check_uid(request.pod_uid)?;
    let live_uid = pod.metadata.uid.clone().unwrap_or_default();
    if live_uid != request.pod_uid {
        return Err(VolumePathError::PodUidMismatch {
            namespace,
            name,
            live: live_uid,
            requested: request.pod_uid.to_owned(),
        });
    }
    let node = pod.spec.as_ref().and_then(|spec| spec.node_name.clone());
    if node.as_deref() != Some(request.node) {
        return Err(VolumePathError::WrongNode {
            namespace,
            name,
            actual: node,
            expected: request.node.to_owned(),
        });
    }
    pod.spec
        .as_ref()
        .and_then(|spec| spec.volumes.as_ref())
        .and_then(|volumes| volumes.iter().find(|v| v.name == request.volume))
        .ok_or_else(|| VolumePathError::NoSuchVolume {
            namespace,
            name,
            volume: request.volume.to_owned(),
        })
}

/// The directory of a claim's volume: its persistent volume's name, once the claim is bound
/// to a filesystem volume that is no hostPath.
fn claim_dir(
    volume_name: &str,
    claim_name: &str,
    claim: Option<&PersistentVolumeClaim>,
    persistent_volume: Option<&PersistentVolume>,
) -> Result<PathBuf, VolumePathError> {
    let volume = || volume_name.to_owned();
    let claim = claim.ok_or_else(|| VolumePathError::ClaimMissing {
        volume: volume(),
        claim: claim_name.to_owned(),
    })?;
    let claim_spec = claim.spec.as_ref();
    if claim_spec.and_then(|spec| spec.volume_mode.as_deref()) == Some("Block") {
        return Err(VolumePathError::BlockVolume { volume: volume() });
    }
    let pv_name = claim_spec
        .and_then(|spec| spec.volume_name.clone())
        .filter(|pv| !pv.is_empty())
        .ok_or_else(|| VolumePathError::ClaimNotBound {
            volume: volume(),
            claim: claim_name.to_owned(),
        })?;
    check_subdomain("persistent volume name", &pv_name)?;
    let pv_spec = persistent_volume.and_then(|pv| pv.spec.as_ref());
    if pv_spec.is_some_and(|spec| spec.host_path.is_some()) {
        return Err(VolumePathError::HostPathVolume { volume: volume() });
    }
    if pv_spec.and_then(|spec| spec.volume_mode.as_deref()) == Some("Block") {
        return Err(VolumePathError::BlockVolume { volume: volume() });
    }
    let mut dir = PathBuf::from(&pv_name);
    if pv_spec.is_some_and(|spec| spec.csi.is_some()) {
        dir.push("mount");
    }
    Ok(dir)
}

/// The kind of a volume that the kubelet fills from the API server, if it is one. Their data is
/// not the pod's: reading it would hand a PodVolumeBackup's author the pod's Secrets and its
/// service-account token. A token volume is known by its type (projected, or secret in old
/// clusters) and also by the names the API server gives it, in case a type is ever added.
fn api_server_kind(volume: &Volume) -> Option<&'static str> {
    if volume.secret.is_some() {
        Some("secret")
    } else if volume.projected.is_some() {
        Some("projected")
    } else if volume.config_map.is_some() {
        Some("configMap")
    } else if volume.downward_api.is_some() {
        Some("downwardAPI")
    } else if volume.name.starts_with("default-token")
        || volume.name.starts_with("kube-api-access-")
    {
        Some("service-account token")
    } else {
        None
    }
}

/// Finds `<root>/<pod UID>/volumes/*/<dir>`, which must match exactly one directory, and
/// returns it with symlinks resolved, after checking it still lies under
/// `<root>/<pod UID>/volumes/`: a volume directory that links to another pod's volume must not
/// hand that volume to this pod's request.
pub fn find_volume_path(
    root: &Path,
    pod_uid: &str,
    volume: &VolumeDir,
) -> Result<PathBuf, VolumePathError> {
    check_uid(pod_uid)?;
    let io_error = |path: &Path, err: io::Error| VolumePathError::Io {
        path: path.to_owned(),
        cause: err.to_string(),
    };
    let root = root.canonicalize().map_err(|err| io_error(root, err))?;
    let volumes = root.join(pod_uid).join("volumes");
    let pattern = volumes.join("*").join(&volume.dir);
    let plugins = match fs::read_dir(&volumes) {
        Ok(plugins) => plugins,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return Err(VolumePathError::NotFound {
                volume: volume.volume.clone(),
                pattern,
            });
        }
        Err(err) => return Err(io_error(&volumes, err)),
    };
    let mut found = Vec::new();
    for plugin in plugins {
        let plugin = plugin.map_err(|err| io_error(&volumes, err))?;
        let candidate = plugin.path().join(&volume.dir);
        if fs::metadata(&candidate).is_ok_and(|meta| meta.is_dir()) {
            found.push(candidate);
        }
    }
    let path = match found.len() {
        0 => {
            return Err(VolumePathError::NotFound {
                volume: volume.volume.clone(),
                pattern,
            });
        }
        1 => found.remove(0),
        _ => {
            found.sort();
            return Err(VolumePathError::Ambiguous {
                volume: volume.volume.clone(),
                found,
            });
        }
    };
    let resolved = path.canonicalize().map_err(|err| io_error(&path, err))?;
    // The kubelet's own directories hold no symlinks, so the canonical form of `volumes` is
    // under the canonical root; a pod UID directory that is itself a link is refused with it.
    // Two components at least: `<plugin>/<dir>`, never a plugin directory itself.
    let depth = resolved
        .strip_prefix(&volumes)
        .map_or(0, |rest| rest.components().count());
    if depth < 2 {
        return Err(VolumePathError::OutsidePodVolumes {
            volume: volume.volume.clone(),
            resolved,
            volumes,
        });
    }
    Ok(resolved)
}

/// A DNS-1123 label: what Kubernetes allows as a volume name.
fn check_label(what: &'static str, value: &str) -> Result<(), VolumePathError> {
    let invalid = |why| {
        Err(VolumePathError::InvalidName {
            what,
            value: value.to_owned(),
            why,
        })
    };
    if value.is_empty() || value.len() > 63 {
        return invalid("it must be 1 to 63 characters long");
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return invalid("it may hold only lowercase letters, digits and '-'");
    }
    if value.starts_with('-') || value.ends_with('-') {
        return invalid("it must start and end with a letter or digit");
    }
    Ok(())
}

/// A DNS-1123 subdomain: what Kubernetes allows as a persistent volume name.
fn check_subdomain(what: &'static str, value: &str) -> Result<(), VolumePathError> {
    if value.len() > 253 {
        return Err(VolumePathError::InvalidName {
            what,
            value: value.to_owned(),
            why: "it must be at most 253 characters long",
        });
    }
    value
        .split('.')
        .try_for_each(|label| check_label(what, label))
}

/// A pod UID as the API server makes them: hex digits and dashes, so it is one path component.
fn check_uid(uid: &str) -> Result<(), VolumePathError> {
    if uid.is_empty() || uid.len() > 64 || !uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
    {
        return Err(VolumePathError::InvalidName {
            what: "pod UID",
            value: uid.to_owned(),
            why: "a pod UID holds only hex digits and '-'",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        CSIPersistentVolumeSource, CSIVolumeSource, ConfigMapVolumeSource, DownwardAPIVolumeSource,
        EmptyDirVolumeSource, HostPathVolumeSource, PersistentVolumeClaimSpec,
        PersistentVolumeClaimVolumeSource, PersistentVolumeSpec, PodSpec, ProjectedVolumeSource,
        SecretVolumeSource,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    const UID: &str = "0a1b2c3d-0000-4000-8000-00000000abcd";
    const NODE: &str = "node-a";

    fn pod(volumes: Vec<Volume>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("app-0".into()),
                namespace: Some("shop".into()),
                uid: Some(UID.into()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: Some(NODE.into()),
                volumes: Some(volumes),
                ..PodSpec::default()
            }),
            ..Pod::default()
        }
    }

    fn empty_dir(name: &str) -> Volume {
        Volume {
            name: name.into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        }
    }

    fn pvc_volume(name: &str, claim: &str) -> Volume {
        Volume {
            name: name.into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.into(),
                read_only: None,
            }),
            ..Volume::default()
        }
    }

    fn claim(pv: Option<&str>, mode: Option<&str>) -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            spec: Some(PersistentVolumeClaimSpec {
                volume_name: pv.map(Into::into),
                volume_mode: mode.map(Into::into),
                ..PersistentVolumeClaimSpec::default()
            }),
            ..PersistentVolumeClaim::default()
        }
    }

    fn csi_pv() -> PersistentVolume {
        PersistentVolume {
            spec: Some(PersistentVolumeSpec {
                csi: Some(CSIPersistentVolumeSource {
                    driver: "ebs.csi.aws.com".into(),
                    volume_handle: "vol-1".into(),
                    ..CSIPersistentVolumeSource::default()
                }),
                ..PersistentVolumeSpec::default()
            }),
            ..PersistentVolume::default()
        }
    }

    fn request(volume: &str) -> VolumeRequest<'_> {
        VolumeRequest {
            node: NODE,
            pod_uid: UID,
            volume,
        }
    }

    #[test]
    fn directory_names_follow_the_kubelet_layout() {
        let inline_csi = Volume {
            name: "scratch".into(),
            csi: Some(CSIVolumeSource {
                driver: "inline.csi".into(),
                ..CSIVolumeSource::default()
            }),
            ..Volume::default()
        };
        let pod = pod(vec![
            empty_dir("cache"),
            inline_csi,
            pvc_volume("data", "data-app-0"),
        ]);
        let bound = claim(Some("pvc-123"), None);
        let cases: [(&str, Option<&PersistentVolume>, &str); 4] = [
            ("cache", None, "cache"),
            ("scratch", None, "scratch/mount"),
            ("data", None, "pvc-123"),
            ("data", Some(&csi_pv()), "pvc-123/mount"),
        ];
        for (volume, pv, expected) in cases {
            let dir = volume_dir(request(volume), &pod, Some(&bound), pv).unwrap();
            assert_eq!(dir.dir, PathBuf::from(expected), "{volume}");
        }
    }

    #[test]
    fn requests_that_do_not_match_the_live_pod_are_refused() {
        let pod = pod(vec![
            empty_dir("cache"),
            pvc_volume("data", "data-app-0"),
            Volume {
                name: "host".into(),
                host_path: Some(HostPathVolumeSource {
                    path: "/etc".into(),
                    type_: None,
                }),
                ..Volume::default()
            },
        ]);
        let other_uid = "ffffffff-0000-4000-8000-000000000000";
        let cases: Vec<(VolumeRequest<'_>, Option<PersistentVolumeClaim>, &str)> = vec![
            (request("../etc"), None, "is not a valid name"),
            (request("a/b"), None, "is not a valid name"),
            (request("Cache"), None, "is not a valid name"),
            (request("missing"), None, "has no volume named missing"),
            (request("host"), None, "hostPath"),
            (
                VolumeRequest {
                    pod_uid: other_uid,
                    ..request("cache")
                },
                None,
                "the pod was replaced",
            ),
            (
                VolumeRequest {
                    pod_uid: "../../etc",
                    ..request("cache")
                },
                None,
                "pod UID",
            ),
            (
                VolumeRequest {
                    node: "node-b",
                    ..request("cache")
                },
                None,
                "not on this node node-b",
            ),
            (request("data"), Some(claim(None, None)), "not bound"),
            (
                request("data"),
                Some(claim(Some("pvc-1"), Some("Block"))),
                "block device",
            ),
            (
                request("data"),
                Some(claim(Some("../x"), None)),
                "is not a valid name",
            ),
            (request("data"), None, "resolved without it"),
        ];
        for (request, claim, expected) in cases {
            let err = volume_dir(request, &pod, claim.as_ref(), None).unwrap_err();
            assert!(err.to_string().contains(expected), "{request:?}: {err}");
        }
    }

    #[test]
    fn volumes_the_api_server_fills_are_refused_by_type_and_by_token_name() {
        let typed = |name: &str, set: fn(&mut Volume)| {
            let mut volume = Volume {
                name: name.into(),
                ..Volume::default()
            };
            set(&mut volume);
            volume
        };
        let volumes = vec![
            typed("creds", |v| v.secret = Some(SecretVolumeSource::default())),
            typed("token", |v| {
                v.projected = Some(ProjectedVolumeSource::default())
            }),
            typed("settings", |v| {
                v.config_map = Some(ConfigMapVolumeSource::default())
            }),
            typed("podinfo", |v| {
                v.downward_api = Some(DownwardAPIVolumeSource::default())
            }),
            empty_dir("default-token-x7k2p"),
            empty_dir("kube-api-access-9zt4q"),
            empty_dir("token-cache"),
        ];
        let pod = pod(volumes);
        let cases = [
            ("creds", Some("volume creds is a secret volume")),
            ("token", Some("volume token is a projected volume")),
            ("settings", Some("volume settings is a configMap volume")),
            ("podinfo", Some("volume podinfo is a downwardAPI volume")),
            (
                "default-token-x7k2p",
                Some("volume default-token-x7k2p is a service-account token volume"),
            ),
            (
                "kube-api-access-9zt4q",
                Some("volume kube-api-access-9zt4q is a service-account token volume"),
            ),
            ("token-cache", None),
        ];
        for (volume, refused) in cases {
            let found = volume_dir(request(volume), &pod, None, None);
            match refused {
                Some(expected) => {
                    let err = found.unwrap_err();
                    assert!(
                        matches!(err, VolumePathError::ApiServerVolume { .. }),
                        "{volume}: {err:?}"
                    );
                    assert!(err.to_string().starts_with(expected), "{volume}: {err}");
                }
                None => assert_eq!(found.unwrap().dir, PathBuf::from(volume)),
            }
        }
    }

    fn volumes_dir(root: &Path, plugin: &str) -> PathBuf {
        let dir = root.join(UID).join("volumes").join(plugin);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn dir(name: &str) -> VolumeDir {
        VolumeDir {
            volume: "data".into(),
            dir: PathBuf::from(name),
        }
    }

    #[test]
    fn exactly_one_directory_must_match() {
        let root = tempfile::tempdir().unwrap();
        let found = find_volume_path(root.path(), UID, &dir("data"));
        assert!(
            matches!(found, Err(VolumePathError::NotFound { .. })),
            "{found:?}"
        );

        let plugin = volumes_dir(root.path(), "kubernetes.io~empty-dir");
        fs::create_dir(plugin.join("data")).unwrap();
        let found = find_volume_path(root.path(), UID, &dir("data")).unwrap();
        assert_eq!(found, plugin.join("data").canonicalize().unwrap());

        let other = volumes_dir(root.path(), "kubernetes.io~nfs");
        fs::create_dir(other.join("data")).unwrap();
        let found = find_volume_path(root.path(), UID, &dir("data"));
        assert!(
            matches!(found, Err(VolumePathError::Ambiguous { .. })),
            "{found:?}"
        );
    }

    fn assert_outside(root: &Path, name: &str) {
        let found = find_volume_path(root, UID, &dir(name));
        assert!(
            matches!(found, Err(VolumePathError::OutsidePodVolumes { .. })),
            "{name}: {found:?}"
        );
    }

    #[test]
    fn a_volume_directory_that_links_outside_the_root_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let plugin = volumes_dir(root.path(), "kubernetes.io~empty-dir");
        std::os::unix::fs::symlink(outside.path(), plugin.join("data")).unwrap();
        assert_outside(root.path(), "data");
    }

    #[test]
    fn a_volume_directory_that_links_into_another_pod_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let other_uid = "ffffffff-0000-4000-8000-000000000000";
        let victim = root
            .path()
            .join(other_uid)
            .join("volumes/kubernetes.io~csi/pvc-victim/mount");
        fs::create_dir_all(&victim).unwrap();
        fs::write(victim.join("secret.db"), b"not yours").unwrap();
        let plugin = volumes_dir(root.path(), "kubernetes.io~empty-dir");
        std::os::unix::fs::symlink(&victim, plugin.join("data")).unwrap();
        std::os::unix::fs::symlink("../../..", plugin.join("up")).unwrap();
        std::os::unix::fs::symlink(".", plugin.join("here")).unwrap();
        for name in ["data", "up", "here"] {
            assert_outside(root.path(), name);
        }
    }

    #[test]
    fn a_pod_directory_that_links_to_another_pod_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let other_uid = "ffffffff-0000-4000-8000-000000000000";
        let other = root.path().join(other_uid);
        fs::create_dir_all(other.join("volumes/kubernetes.io~empty-dir/data")).unwrap();
        std::os::unix::fs::symlink(&other, root.path().join(UID)).unwrap();
        assert_outside(root.path(), "data");
    }
}
