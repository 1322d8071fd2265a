//! The storage layout of a location, and access to it through opendal.
//!
//! ```text
//! <prefix>/backups/<b>/ferry-backup.json              written last: a backup exists once it does
//! <prefix>/backups/<b>/<b>-podvolumebackups.json.gz
//! <prefix>/backups/<b>/<b>-resources.tar.gz          resources/<resource>.<group>/namespaces/<ns>/<name>.json
//!                                                    resources/<resource>.<group>/cluster/<name>.json
//! <prefix>/backups/<b>/<b>-logs.gz
//! <prefix>/restores/<r>/restore-<r>-logs.gz
//! <prefix>/restores/<r>/restore-<r>-results.gz
//! <prefix>/restic/<namespace>/                       one restic-format repository per namespace
//! ```

use std::future::Future;
use std::io::{Read, Write};
use std::time::Duration;

use opendal::{ErrorKind, Operator};

use crate::repository::RepositoryLocation;
use crate::retry::{RequestFailure, Retrier};

/// The only names a location may hold at its top level.
pub const TOP_LEVEL: [&str; 4] = ["backups", "restores", "restic", "metadata"];

/// Why a location's top level is not Ferry's layout, if it is not.
pub fn layout_problem(top_level: &[String]) -> Option<String> {
    let strangers: Vec<&str> = top_level
        .iter()
        .map(String::as_str)
        .filter(|name| !TOP_LEVEL.contains(name))
        .collect();
    (!strangers.is_empty()).then(|| {
        format!(
            "the location's top level holds {}, which is not Ferry's layout (only {} may be there); give the location a prefix of its own",
            strangers.join(", "),
            TOP_LEVEL.join(", ")
        )
    })
}

/// Object keys, relative to the location's prefix.
pub mod key {
    /// The directory of a backup's objects.
    pub fn backup_dir(backup: &str) -> String {
        format!("backups/{backup}/")
    }
    /// The Backup object as it ended; a backup exists in the location once this does.
    pub fn backup_metadata(backup: &str) -> String {
        format!("backups/{backup}/{METADATA_FILE}")
    }
    /// The PodVolumeBackups of a backup, as a gzipped JSON array.
    pub fn pod_volume_backups(backup: &str) -> String {
        format!("backups/{backup}/{backup}-podvolumebackups.json.gz")
    }
    /// The objects of a backup, as a gzipped tarball laid out as [`super::ItemPath`] says.
    pub fn resources(backup: &str) -> String {
        format!("backups/{backup}/{backup}-resources.tar.gz")
    }
    /// The log of a backup, gzipped.
    pub fn backup_logs(backup: &str) -> String {
        format!("backups/{backup}/{backup}-logs.gz")
    }
    /// The log of a restore, gzipped.
    pub fn restore_logs(restore: &str) -> String {
        format!("restores/{restore}/restore-{restore}-logs.gz")
    }
    /// What a restore did with each object, gzipped JSON.
    pub fn restore_results(restore: &str) -> String {
        format!("restores/{restore}/restore-{restore}-results.gz")
    }
    pub(super) const METADATA_FILE: &str = "ferry-backup.json";
}

/// How a type is named in the tarball and in resource filters: `<resource>.<group>`, or
/// `<resource>` for the core group.
pub fn group_resource(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_owned()
    } else {
        format!("{resource}.{group}")
    }
}

/// Where an object sits in a backup's resources tarball:
/// `resources/<resource>.<group>/namespaces/<namespace>/<name>.json` for a namespaced object,
/// `resources/<resource>.<group>/cluster/<name>.json` for a cluster-scoped one, and the bare
/// `<resource>` for the core group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ItemPath {
    pub group: String,
    /// The resource's plural name.
    pub resource: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl ItemPath {
    /// `<resource>.<group>`, or `<resource>` for the core group.
    pub fn group_resource(&self) -> String {
        group_resource(&self.group, &self.resource)
    }

    pub fn to_path(&self) -> String {
        let resource = self.group_resource();
        match &self.namespace {
            Some(namespace) => format!(
                "resources/{resource}/namespaces/{namespace}/{}.json",
                self.name
            ),
            None => format!("resources/{resource}/cluster/{}.json", self.name),
        }
    }

    /// The item a tarball path names; `None` for anything else in the tarball.
    pub fn parse(path: &str) -> Option<Self> {
        let rest = path.strip_prefix("resources/")?;
        let (resource, rest) = rest.split_once('/')?;
        let (namespace, file) = match rest.split_once('/')? {
            ("namespaces", rest) => {
                let (namespace, file) = rest.split_once('/')?;
                (Some(namespace.to_owned()), file)
            }
            ("cluster", file) => (None, file),
            _ => return None,
        };
        let name = file
            .strip_suffix(".json")
            .filter(|n| !n.is_empty() && !n.contains('/'))?;
        let (resource, group) = resource.split_once('.').unwrap_or((resource, ""));
        Some(Self {
            group: group.to_owned(),
            resource: resource.to_owned(),
            namespace,
            name: name.to_owned(),
        })
    }
}

/// A failed request to the location.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot reach the storage location: {0}")]
    Setup(String),
    #[error("cannot {action} {key} in the storage location: {cause}")]
    Request {
        action: &'static str,
        key: String,
        cause: String,
    },
}

/// The objects of one storage location, under its prefix. Every request is retried while the
/// store is out of reach, within the retrier's budget.
#[derive(Clone)]
pub struct ObjectStore {
    operator: Operator,
    retrier: Retrier,
}

impl ObjectStore {
    /// Access to the location whose root (its prefix) is `root`.
    pub fn open(root: &RepositoryLocation, retrier: Retrier) -> Result<Self, StoreError> {
        let operator = root.operator().map_err(StoreError::Setup)?;
        Ok(Self { operator, retrier })
    }

    /// Runs one request under the retrier. `Ok(None)` when the store answers that there is
    /// nothing there; a failure names what the request was for (`action` on `key`).
    async fn request<T, F, Fut>(
        &self,
        action: &'static str,
        key: &str,
        request: F,
    ) -> Result<Option<T>, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = opendal::Result<T>>,
    {
        match self.retrier.run(action, request).await {
            Ok(value) => Ok(Some(value)),
            Err(err) if err.kind() == ErrorKind::NotFound => Ok(None),
            Err(err) => Err(request_error(action, key, &err)),
        }
    }

    /// The names at the top level of the location, without trailing slashes.
    pub async fn top_level(&self) -> Result<Vec<String>, StoreError> {
        let operator = &self.operator;
        let entries = self
            .request("list", "the top level", || async move {
                operator.list("/").await
            })
            .await?
            .unwrap_or_default();
        Ok(entries
            .iter()
            .map(|entry| entry.path().trim_matches('/').to_owned())
            .filter(|name| !name.is_empty())
            .collect())
    }

    /// The names of the backups the location holds whole: those with their metadata file.
    pub async fn backups(&self) -> Result<Vec<String>, StoreError> {
        let operator = &self.operator;
        let entries = self
            .request("list", "backups/", || async move {
                operator.list_with("backups/").recursive(true).await
            })
            .await?
            .unwrap_or_default();
        let mut names: Vec<String> = entries
            .iter()
            .filter_map(|entry| {
                let rest = entry.path().strip_prefix("backups/")?;
                let (name, file) = rest.split_once('/')?;
                (file == key::METADATA_FILE && !name.is_empty()).then(|| name.to_owned())
            })
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Whether the location holds anything of the backup `name`, whole or not.
    pub async fn has_backup(&self, name: &str) -> Result<bool, StoreError> {
        let (operator, dir) = (&self.operator, key::backup_dir(name));
        let listed = dir.as_str();
        let entries = self
            .request("list", &dir, || async move {
                operator.list_with(listed).limit(1).await
            })
            .await?
            .unwrap_or_default();
        Ok(entries.iter().any(|entry| entry.path() != dir))
    }

    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        let (operator, buffer) = (&self.operator, opendal::Buffer::from(bytes));
        self.retrier
            .run("write", || {
                let buffer = buffer.clone();
                async move { operator.write(key, buffer).await }
            })
            .await
            .map(drop)
            .map_err(|err| request_error("write", key, &err))
    }

    /// The object's bytes, or None when there is no such object.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let operator = &self.operator;
        let read = self
            .request("read", key, || async move { operator.read(key).await })
            .await?;
        Ok(read.map(|buffer| buffer.to_vec()))
    }

    /// Whether the object `key` exists.
    pub async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        let operator = &self.operator;
        let found = self
            .request("stat", key, || async move { operator.stat(key).await })
            .await?;
        Ok(found.is_some())
    }

    /// A URL that reads the object `key` with a plain GET, without credentials, for
    /// `validity`: the store's presigned URL. A directory location has none.
    pub async fn presigned_get(&self, key: &str, validity: Duration) -> Result<String, StoreError> {
        let request = self
            .operator
            .presign_read(key, validity)
            .await
            .map_err(|err| StoreError::Request {
                action: "presign",
                key: key.to_owned(),
                cause: err.to_string(),
            })?;
        Ok(request.uri().to_string())
    }

    /// Removes everything under the directory `dir` (a key ending in `/`).
    pub async fn delete_dir(&self, dir: &str) -> Result<(), StoreError> {
        let operator = &self.operator;
        self.request("delete", dir, || async move {
            operator.delete_with(dir).recursive(true).await
        })
        .await
        .map(drop)
    }
}

fn request_error(action: &'static str, key: &str, err: &RequestFailure) -> StoreError {
    StoreError::Request {
        action,
        key: key.to_owned(),
        cause: err.to_string(),
    }
}

/// Gzips `bytes`.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(bytes);
    encoder.finish().unwrap_or_default()
}

/// Ungzips `bytes`.
pub fn gunzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes).read_to_end(&mut out)?;
    Ok(out)
}

/// A gzipped tarball of the given files.
pub fn tar_gz<'a>(files: impl IntoIterator<Item = (String, &'a [u8])>) -> std::io::Result<Vec<u8>> {
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut builder = tar::Builder::new(encoder);
    for (path, bytes) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, path, bytes)?;
    }
    builder.into_inner()?.finish()
}

/// The regular files of a gzipped tarball, with their paths. Nothing is written to disk.
pub fn untar_gz(bytes: &[u8]) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    let mut files = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = entry.path()?.to_string_lossy().into_owned();
        let mut contents = Vec::new();
        entry.read_to_end(&mut contents)?;
        files.push((path, contents));
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ferrys_names_may_sit_at_the_top_level() {
        let names = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(layout_problem(&[]), None);
        assert_eq!(
            layout_problem(&names(&["backups", "restic", "restores", "metadata"])),
            None
        );
        let problem = layout_problem(&names(&["backups", "photos", "notes.txt"])).unwrap();
        assert!(problem.contains("photos, notes.txt"), "{problem}");
    }

    #[test]
    fn item_paths_keep_the_resource_group_scope_and_name() {
        let item = |group: &str, resource: &str, namespace: Option<&str>, name: &str| ItemPath {
            group: group.to_owned(),
            resource: resource.to_owned(),
            namespace: namespace.map(str::to_owned),
            name: name.to_owned(),
        };
        let cases = [
            (
                item("", "pods", Some("shop"), "web-0"),
                "resources/pods/namespaces/shop/web-0.json",
            ),
            (
                item("apps", "deployments", Some("shop"), "web"),
                "resources/deployments.apps/namespaces/shop/web.json",
            ),
            (
                item(
                    "rbac.authorization.k8s.io",
                    "clusterroles",
                    None,
                    "system:view",
                ),
                "resources/clusterroles.rbac.authorization.k8s.io/cluster/system:view.json",
            ),
            (
                item("", "namespaces", None, "shop"),
                "resources/namespaces/cluster/shop.json",
            ),
        ];
        for (item, path) in cases {
            assert_eq!(item.to_path(), path);
            assert_eq!(ItemPath::parse(path), Some(item), "{path}");
        }
        for stranger in [
            "metadata/version",
            "resources/pods/namespaces/shop/web-0.yaml",
            "resources/pods/elsewhere/web-0.json",
            "resources/pods/namespaces/shop/.json",
            "resources/pods/namespaces/shop/a/b.json",
        ] {
            assert_eq!(ItemPath::parse(stranger), None, "{stranger}");
        }
    }

    #[test]
    fn tarballs_and_gzip_round_trip() {
        let files = vec![
            (
                "resources/pods/namespaces/shop/web-0.json".to_owned(),
                b"{\"a\":1}".to_vec(),
            ),
            (
                "resources/persistentvolumeclaims/namespaces/shop/data.json".to_owned(),
                Vec::new(),
            ),
        ];
        let tarball = tar_gz(
            files
                .iter()
                .map(|(path, bytes)| (path.clone(), bytes.as_slice())),
        );
        assert_eq!(untar_gz(&tarball.unwrap()).unwrap(), files);
        assert_eq!(gunzip(&gzip(b"hello")).unwrap(), b"hello");
        assert!(gunzip(b"not gzip").is_err());
    }

    #[tokio::test]
    async fn an_s3_location_presigns_a_get_of_the_key_for_the_validity() {
        let location = RepositoryLocation::S3(crate::repository::S3Location {
            endpoint: Some("http://127.0.0.1:1".into()),
            bucket: "bucket".into(),
            prefix: "cluster".into(),
            access_key_id: Some("AKID".into()),
            secret_access_key: Some("SECRET".into()),
            ..Default::default()
        });
        let store = ObjectStore::open(&location, Retrier::unobserved(Duration::ZERO)).unwrap();
        let url = store
            .presigned_get(&key::backup_logs("b1"), Duration::from_secs(600))
            .await
            .unwrap();
        assert!(
            url.starts_with("http://127.0.0.1:1/bucket/cluster/backups/b1/b1-logs.gz?"),
            "{url}"
        );
        for part in [
            "X-Amz-Expires=600",
            "X-Amz-Credential=AKID",
            "X-Amz-Signature=",
        ] {
            assert!(url.contains(part), "{part} missing from {url}");
        }
        assert!(!url.contains("SECRET"));
    }

    #[tokio::test]
    async fn a_directory_location_lists_writes_reads_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(
            &RepositoryLocation::Local {
                path: dir.path().join("missing-yet"),
            },
            Retrier::unobserved(Duration::ZERO),
        )
        .unwrap();
        assert!(store.top_level().await.unwrap().is_empty());
        assert!(store.backups().await.unwrap().is_empty());
        store
            .put(&key::resources("b1"), b"r".to_vec())
            .await
            .unwrap();
        assert!(store.has_backup("b1").await.unwrap());
        assert!(!store.has_backup("b").await.unwrap());
        assert!(store.backups().await.unwrap().is_empty(), "no metadata yet");
        store
            .put(&key::backup_metadata("b1"), b"{}".to_vec())
            .await
            .unwrap();
        assert_eq!(store.backups().await.unwrap(), ["b1"]);
        assert_eq!(store.top_level().await.unwrap(), ["backups"]);
        assert_eq!(
            store.get(&key::backup_metadata("b1")).await.unwrap(),
            Some(b"{}".to_vec())
        );
        assert_eq!(store.get("backups/b2/x").await.unwrap(), None);
        store.delete_dir(&key::backup_dir("b1")).await.unwrap();
        assert!(!store.has_backup("b1").await.unwrap());
        assert!(store.backups().await.unwrap().is_empty());
    }
}
