//! The CRDs: their shape, the committed manifests, and how the types read and write JSON.

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;

use ferry_shared::crd::PodVolumeTransfer;
use ferry_shared::crd::{
    self, Backup, BackupStorageLocation, OperationPhase, PodVolumeBackup, PodVolumePhase,
    PodVolumeRestore, Restore, StorageProvider,
};
use ferry_shared::names;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::{Value, json};

#[test]
fn deploy_crds_match_the_generated_manifests() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds");
    let files = crd::deploy_files().expect("render CRDs");
    let fix = format!("run `{}` from the workspace root", crd::CRDGEN_COMMAND);
    for (file_name, want) in &files {
        let path = dir.join(file_name);
        let got = fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}; {fix}", path.display()));
        assert!(
            &got == want,
            "{} differs from the generated manifest; {fix}",
            path.display()
        );
    }
    let generated: BTreeSet<&str> = files.iter().map(|(name, _)| name.as_str()).collect();
    let entries = fs::read_dir(&dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    for entry in entries {
        let name = entry.expect("directory entry").file_name();
        let name = name.to_string_lossy();
        assert!(
            generated.contains(name.as_ref()),
            "{name} in {} is not generated; delete it and {fix}",
            dir.display()
        );
    }
}

#[test]
fn every_crd_is_namespaced_in_ferry_dev_v1alpha1_with_a_status_subresource() {
    let crds = crd::crds();
    assert_eq!(crds.len(), 9);
    let mut short_names = BTreeSet::new();
    for crd in &crds {
        let kind = &crd.spec.names.kind;
        assert_eq!(crd.spec.group, names::API_GROUP, "{kind}");
        assert_eq!(crd.spec.scope, "Namespaced", "{kind}");
        let [version] = crd.spec.versions.as_slice() else {
            panic!("{kind} has {} versions", crd.spec.versions.len());
        };
        assert_eq!(version.name, names::API_VERSION, "{kind}");
        assert!(version.served && version.storage, "{kind}");
        let subresources = version.subresources.as_ref();
        assert!(
            subresources.is_some_and(|s| s.status.is_some()),
            "{kind} has no status subresource"
        );
        let columns = printer_columns(crd);
        assert!(columns.iter().any(|c| c == "Phase"), "{kind}");
        assert_eq!(columns.last().map(String::as_str), Some("Age"), "{kind}");
        for short_name in crd.spec.names.short_names.iter().flatten() {
            assert!(short_names.insert(short_name.clone()), "{short_name} twice");
        }
    }
    let want: BTreeSet<String> = ["bsl", "fbk", "frs", "fsch", "brepo", "pvb", "pvr"]
        .map(String::from)
        .into();
    assert_eq!(short_names, want);
}

#[test]
fn pod_volume_printer_columns_show_phase_node_and_bytes() {
    let want = ["Phase", "Node", "Bytes Done", "Total Bytes", "Age"];
    for (crd, node_path) in [
        (PodVolumeBackup::crd(), ".spec.node"),
        (PodVolumeRestore::crd(), ".status.node"),
    ] {
        assert_eq!(printer_columns(&crd), want, "{}", crd.spec.names.kind);
        let columns = crd.spec.versions[0]
            .additional_printer_columns
            .as_deref()
            .unwrap_or_default();
        let paths: Vec<&str> = columns.iter().map(|c| c.json_path.as_str()).collect();
        assert_eq!(
            paths,
            [
                ".status.phase",
                node_path,
                ".status.progress.bytesDone",
                ".status.progress.totalBytes",
                ".metadata.creationTimestamp",
            ],
            "{}",
            crd.spec.names.kind
        );
    }
}

#[test]
fn pod_volume_backup_uses_camel_case_and_round_trips() {
    let doc = json!({
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "PodVolumeBackup",
        "metadata": {"name": "nightly-x7k2p", "namespace": "ferry"},
        "spec": {
            "node": "worker-1",
            "pod": {"namespace": "shop", "name": "db-0", "uid": "1b7e-uid"},
            "volume": "data",
            "storageLocation": "default",
            "repository": "s3:http://s3.local/bucket/ferry/restic/shop",
            "tags": {"backup": "nightly", "ns": "shop", "pvc-uid": "9f3c-uid"},
            "parentSnapshotID": "1a2b3c4d"
        },
        "status": {
            "phase": "Completed",
            "path": "/host_pods/1b7e-uid/volumes/kubernetes.io~csi/pvc-9f3c/mount",
            "snapshotID": "5e6f7a8b",
            "startTimestamp": "2024-01-01T03:00:00Z",
            "completionTimestamp": "2024-01-01T03:01:40Z",
            "progress": {
                "totalBytes": 4096,
                "bytesDone": 4096,
                "totalFiles": 3,
                "filesDone": 3,
                "bytesPerSecond": 41
            },
            "attempts": 1,
            "warnings": ["cannot read /lost+found: permission denied"]
        }
    });
    let pvb: PodVolumeBackup = serde_json::from_value(doc.clone()).expect("parse PVB");
    assert_eq!(pvb.spec.parent_snapshot_id.as_deref(), Some("1a2b3c4d"));
    assert_eq!(pvb.spec.storage_location, "default");
    let status = pvb.status.as_ref().expect("status");
    assert_eq!(status.snapshot_id.as_deref(), Some("5e6f7a8b"));
    assert_eq!(status.phase, PodVolumePhase::Completed);
    assert_eq!(status.progress.as_ref().map(|p| p.bytes_done), Some(4096));

    let written = serde_json::to_value(&pvb).expect("write PVB");
    assert_eq!(written, doc);
    let again: PodVolumeBackup = serde_json::from_value(written).expect("parse again");
    assert_eq!(again, pvb);
}

#[test]
fn storage_location_spells_its_config_keys_like_the_design() {
    let doc = json!({
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "BackupStorageLocation",
        "metadata": {"name": "default", "namespace": "ferry"},
        "spec": {
            "provider": "s3",
            "bucket": "backups",
            "prefix": "ferry",
            "config": {
                "region": "us-east-1",
                "s3Url": "http://minio:9000",
                "forcePathStyle": true,
                "insecureSkipTLSVerify": true
            },
            "credential": {"name": "cloud-credentials", "key": "cloud"},
            "default": true,
            "accessMode": "ReadOnly",
            "syncPeriod": "1m",
            "validationFrequency": "1m"
        },
        "status": {"phase": "Available", "lastValidationTime": "2024-01-01T03:00:00Z"}
    });
    let bsl: BackupStorageLocation = serde_json::from_value(doc.clone()).expect("parse BSL");
    assert_eq!(bsl.spec.provider, StorageProvider::S3);
    let config = bsl.spec.config.as_ref().expect("config");
    assert!(config.insecure_skip_tls_verify && config.force_path_style);
    assert_eq!(serde_json::to_value(&bsl).expect("write BSL"), doc);
}

#[test]
fn a_missing_or_empty_phase_means_new() {
    let pvb = |status: Value| {
        serde_json::from_value::<PodVolumeBackup>(json!({
            "apiVersion": "ferry.dev/v1alpha1",
            "kind": "PodVolumeBackup",
            "metadata": {"name": "b-1"},
            "spec": {
                "node": "n", "pod": {"namespace": "ns", "name": "p", "uid": "u"},
                "volume": "v", "storageLocation": "default", "repository": "r"
            },
            "status": status
        }))
        .expect("parse PVB")
    };
    assert_eq!(pvb(Value::Null).phase(), PodVolumePhase::New);
    assert_eq!(pvb(json!({})).phase(), PodVolumePhase::New);
    assert_eq!(pvb(json!({"phase": ""})).phase(), PodVolumePhase::New);
    assert_eq!(
        pvb(json!({"phase": "InProgress"})).phase(),
        PodVolumePhase::InProgress
    );

    let backup: Backup = serde_json::from_value(json!({
        "apiVersion": "ferry.dev/v1alpha1", "kind": "Backup",
        "metadata": {"name": "nightly"}, "spec": {}, "status": {"errors": []}
    }))
    .expect("parse Backup");
    assert_eq!(backup.phase(), OperationPhase::New);
}

#[test]
fn an_empty_restore_spec_is_accepted_for_the_coordinator_to_validate() {
    let restore: Restore = serde_json::from_value(json!({
        "apiVersion": "ferry.dev/v1alpha1", "kind": "Restore",
        "metadata": {"name": "r"}, "spec": {}
    }))
    .expect("parse Restore");
    assert_eq!(restore.spec, Default::default());
    let schema = &Restore::crd().spec.versions[0].schema;
    let spec =
        serde_json::to_value(schema).expect("schema")["openAPIV3Schema"]["properties"]["spec"]
            .clone();
    assert_eq!(spec.get("required"), None);
}

fn printer_columns(crd: &CustomResourceDefinition) -> Vec<String> {
    crd.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.clone())
        .collect()
}
