//! Builders for the objects that tests create in the install namespace. Each starts from an
//! empty spec, so an object holds only what its test sets. The namespaces a spec names are
//! those the test reads, made the test's own when the object is created (see
//! [`crate::harness::names`]):
//!
//! ```ignore
//! fixtures::backup("nightly").namespaces(["shop"]).all_volumes().ttl("1h").create(&cluster).await;
//! fixtures::restore("after").backup("nightly").map_namespace("shop", "shop-2").create(&cluster).await;
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use ferry_shared::crd::{
    AccessMode, Backup, BackupSpec, BackupStorageLocation, ExistingResourcePolicy, PodReference,
    PodVolumeBackupSpec, ResourceSelection, Restore, RestoreSpec, S3Config, Schedule, ScheduleSpec,
    SecretKeyRef, StorageProvider,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;
use serde_json::json;

use crate::harness::{Cluster, Namespaced};

/// The key of the Secret that an S3 location's `credential` names, as
/// [`Cluster::create_s3_secret`] writes it.
pub const CREDENTIALS_KEY: &str = "cloud";

/// An object in the making, created by [`Fixture::create`].
#[derive(Clone, Debug)]
pub struct Fixture<K>(K);

impl<K: Namespaced> Fixture<K> {
    fn new(object: K) -> Self {
        Self(object)
    }

    pub fn name(&self) -> String {
        self.0.name_any()
    }

    /// The object as `cluster` stores it: in its install namespace, and with the namespaces
    /// that its spec names made the test's own.
    pub fn object(&self, cluster: &Cluster) -> K {
        let mut value = serde_json::to_value(&self.0).expect("a fixture as JSON");
        cluster.names().scope_namespaces(&mut value);
        let mut object: K = serde_json::from_value(value).expect("a fixture from JSON");
        object.meta_mut().namespace = Some(cluster.namespace().to_owned());
        object
    }

    /// Creates the object, and returns it as the server stored it.
    pub async fn create(&self, cluster: &Cluster) -> K {
        cluster.create(&self.object(cluster)).await
    }
}

/// A Backup of every namespace to the default location, of the volumes that pods opt in.
pub fn backup(name: &str) -> Fixture<Backup> {
    Fixture::new(Backup::new(name, BackupSpec::default()))
}

/// A Schedule on the cron expression `cron`, whose Backups are as [`backup`] makes them.
pub fn schedule(name: &str, cron: &str) -> Fixture<Schedule> {
    Fixture::new(Schedule::new(
        name,
        ScheduleSpec {
            schedule: cron.to_owned(),
            template: BackupSpec::default(),
            paused: false,
        },
    ))
}

/// A kind whose spec is, or holds, the spec of a Backup.
pub trait BackupTemplate {
    fn backup_spec(&mut self) -> &mut BackupSpec;
}

impl BackupTemplate for Backup {
    fn backup_spec(&mut self) -> &mut BackupSpec {
        &mut self.spec
    }
}

impl BackupTemplate for Schedule {
    fn backup_spec(&mut self) -> &mut BackupSpec {
        &mut self.spec.template
    }
}

impl<K: BackupTemplate> Fixture<K> {
    /// `includedNamespaces`.
    pub fn namespaces<'a>(mut self, namespaces: impl IntoIterator<Item = &'a str>) -> Self {
        self.0.backup_spec().included_namespaces = namespaces.into_iter().map(Into::into).collect();
        self
    }

    /// `defaultVolumesToFsBackup: true`: every volume that can be backed up (opt-out).
    pub fn all_volumes(mut self) -> Self {
        self.0.backup_spec().default_volumes_to_fs_backup = Some(true);
        self
    }

    /// `storageLocation`.
    pub fn location(mut self, name: &str) -> Self {
        self.0.backup_spec().storage_location = Some(name.to_owned());
        self
    }

    /// `hooks`: resource hooks, written as JSON as a user writes them.
    pub fn hooks(mut self, hooks: serde_json::Value) -> Self {
        self.0.backup_spec().hooks = Some(serde_json::from_value(hooks).expect("backup hooks"));
        self
    }

    /// `ttl`, a duration such as `1h`.
    pub fn ttl(mut self, ttl: &str) -> Self {
        self.0.backup_spec().ttl = Some(ttl.to_owned());
        self
    }

    /// `volumeTimeout`, a duration such as `1h`.
    pub fn volume_timeout(mut self, timeout: &str) -> Self {
        self.0.backup_spec().volume_timeout = Some(timeout.to_owned());
        self
    }

    /// `excludedNamespaces`.
    pub fn exclude_namespaces<'a>(mut self, namespaces: impl IntoIterator<Item = &'a str>) -> Self {
        self.0.backup_spec().excluded_namespaces = strings(namespaces);
        self
    }

    /// A `labelSelector` that matches `key=value`.
    pub fn selector(mut self, key: &str, value: &str) -> Self {
        self.0.backup_spec().label_selector = Some(match_labels(key, value));
        self
    }
}

/// A kind that takes resource types and cluster-scoped objects: a Backup, the template of a
/// Schedule, a Restore.
pub trait SelectsResources {
    fn resource_selection(&mut self) -> &mut ResourceSelection;
}

impl<K: BackupTemplate> SelectsResources for K {
    fn resource_selection(&mut self) -> &mut ResourceSelection {
        &mut self.backup_spec().resources
    }
}

impl SelectsResources for Restore {
    fn resource_selection(&mut self) -> &mut ResourceSelection {
        &mut self.spec.resources
    }
}

impl<K: SelectsResources> Fixture<K> {
    /// `includedResources` and `excludedResources`.
    pub fn resources<'a>(
        mut self,
        included: impl IntoIterator<Item = &'a str>,
        excluded: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let selection = self.0.resource_selection();
        selection.included_resources = strings(included);
        selection.excluded_resources = strings(excluded);
        self
    }

    /// `includeClusterResources`.
    pub fn cluster_resources(mut self, include: bool) -> Self {
        self.0.resource_selection().include_cluster_resources = Some(include);
        self
    }
}

fn strings<'a>(list: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    list.into_iter().map(Into::into).collect()
}

fn match_labels(key: &str, value: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([(key.to_owned(), value.to_owned())])),
        ..LabelSelector::default()
    }
}

/// A Restore that names no backup yet: it fails validation until given one.
pub fn restore(name: &str) -> Fixture<Restore> {
    Fixture::new(Restore::new(name, RestoreSpec::default()))
}

impl Fixture<Restore> {
    /// `backupName`.
    pub fn backup(mut self, name: &str) -> Self {
        self.0.spec.backup_name = Some(name.to_owned());
        self
    }

    /// `scheduleName`.
    pub fn schedule(mut self, name: &str) -> Self {
        self.0.spec.schedule_name = Some(name.to_owned());
        self
    }

    /// `includedNamespaces`.
    pub fn namespaces<'a>(mut self, namespaces: impl IntoIterator<Item = &'a str>) -> Self {
        self.0.spec.included_namespaces = namespaces.into_iter().map(Into::into).collect();
        self
    }

    /// A `namespaceMapping` entry: the backup's namespace `from` is restored into `to`.
    pub fn map_namespace(mut self, from: &str, to: &str) -> Self {
        self.0
            .spec
            .namespace_mapping
            .insert(from.to_owned(), to.to_owned());
        self
    }

    /// `existingResourcePolicy: update`.
    pub fn update_existing(mut self) -> Self {
        self.0.spec.existing_resource_policy = ExistingResourcePolicy::Update;
        self
    }

    /// `excludedNamespaces`.
    pub fn exclude_namespaces<'a>(mut self, namespaces: impl IntoIterator<Item = &'a str>) -> Self {
        self.0.spec.excluded_namespaces = strings(namespaces);
        self
    }

    /// `preserveNodePorts: true`.
    pub fn preserve_node_ports(mut self) -> Self {
        self.0.spec.preserve_node_ports = Some(true);
        self
    }

    /// `hooks`: resource hooks, written as JSON as a user writes them.
    pub fn hooks(mut self, hooks: serde_json::Value) -> Self {
        self.0.spec.hooks = Some(serde_json::from_value(hooks).expect("restore hooks"));
        self
    }

    /// A `labelSelector` that matches `key=value`.
    pub fn selector(mut self, key: &str, value: &str) -> Self {
        self.0.spec.label_selector = Some(match_labels(key, value));
        self
    }
}

/// A read-write BackupStorageLocation in the directory `path`.
pub fn filesystem_location(name: &str, path: &Path) -> Fixture<BackupStorageLocation> {
    let mut location = location(name, StorageProvider::Filesystem);
    location.0.spec.path = Some(path.to_str().expect("a UTF-8 path").to_owned());
    location
}

/// A read-write BackupStorageLocation in `bucket` of the S3 service at `endpoint`.
pub fn s3_location(name: &str, endpoint: &str, bucket: &str) -> Fixture<BackupStorageLocation> {
    let mut location = location(name, StorageProvider::S3);
    location.0.spec.bucket = Some(bucket.to_owned());
    location.0.spec.config = Some(S3Config {
        s3_url: Some(endpoint.to_owned()),
        ..S3Config::default()
    });
    location
}

fn location(name: &str, provider: StorageProvider) -> Fixture<BackupStorageLocation> {
    // The provider is the one field without a default.
    let spec = serde_json::from_value(json!({ "provider": provider })).expect("a location spec");
    Fixture::new(BackupStorageLocation::new(name, spec))
}

impl Fixture<BackupStorageLocation> {
    /// `default: true`: the location of Backups that name none.
    pub fn default_location(mut self) -> Self {
        self.0.spec.default = true;
        self
    }

    /// `accessMode: ReadOnly`.
    pub fn read_only(mut self) -> Self {
        self.0.spec.access_mode = AccessMode::ReadOnly;
        self
    }

    /// `prefix`.
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.0.spec.prefix = Some(prefix.to_owned());
        self
    }

    /// `config.region`.
    pub fn region(mut self, region: &str) -> Self {
        let config = self.0.spec.config.get_or_insert_default();
        config.region = Some(region.to_owned());
        self
    }

    /// `credential`: the keys that [`Cluster::create_s3_secret`] wrote to the Secret `secret`.
    pub fn credential(mut self, secret: &str) -> Self {
        self.0.spec.credential = Some(SecretKeyRef {
            name: secret.to_owned(),
            key: CREDENTIALS_KEY.to_owned(),
        });
        self
    }

    /// `syncPeriod`, a duration such as `1s`.
    pub fn sync_period(mut self, period: &str) -> Self {
        self.0.spec.sync_period = Some(period.to_owned());
        self
    }

    /// `config.caCert`: the CAs, as PEM, that may have signed the endpoint's certificate.
    pub fn ca_cert(mut self, pem: &str) -> Self {
        let config = self.0.spec.config.get_or_insert_default();
        config.ca_cert = Some(pem.to_owned());
        self
    }
}

/// The spec of a PodVolumeBackup as the coordinator writes it: of `volume` of `pod`, by the
/// agent on the pod's node, into `repository` of the default location, without tags or parent.
/// Create it with [`Cluster::create_backup_request`].
pub fn volume_backup(
    pod: &Pod,
    volume: &str,
    repository: impl Into<String>,
) -> PodVolumeBackupSpec {
    PodVolumeBackupSpec {
        node: pod
            .spec
            .as_ref()
            .and_then(|spec| spec.node_name.clone())
            .expect("a pod on a node"),
        pod: pod_reference(pod),
        volume: volume.to_owned(),
        storage_location: "default".to_owned(),
        repository: repository.into(),
        ..PodVolumeBackupSpec::default()
    }
}

/// How a PodVolumeBackup or PodVolumeRestore names `pod`.
pub fn pod_reference(pod: &Pod) -> PodReference {
    PodReference {
        namespace: pod.namespace().expect("a namespaced pod"),
        name: pod.name_any(),
        uid: pod.uid().expect("a pod with a UID"),
    }
}
