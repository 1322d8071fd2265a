//! Creating one restored object, or dealing with the one already there as the Restore's
//! policy says, and the record of what became of each.

use std::collections::BTreeMap;

use ferry_shared::crd::ExistingResourcePolicy;
use ferry_shared::names::label;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use kube::{Client, ResourceExt};
use serde::Serialize;
use serde_json::{Value, json};

use super::plan::BackedUp;
use crate::error::Error;

/// What became of one object.
#[derive(Debug)]
pub enum End {
    /// Created by this restore, now or on an earlier pass.
    Created(Made),
    /// One of the same name was there, with the same content.
    Same,
    /// One of the same name and other content was there and is kept.
    Kept,
    /// One of the same name was there and is now patched to the backed-up version.
    Updated,
    /// One of the same name was there and the API server refused to patch it.
    NotUpdated(String),
    /// The API server refused to create it.
    Failed(String),
    /// The restore leaves it out.
    Skipped(String),
}

/// What names an object this restore created.
#[derive(Debug)]
pub struct Made {
    pub namespace: Option<String>,
    pub name: String,
    pub uid: String,
}

impl Made {
    fn of(object: &DynamicObject) -> Self {
        Self {
            namespace: object.namespace(),
            name: object.name_any(),
            uid: object.uid().unwrap_or_default(),
        }
    }
}

/// One object's end, with what names it in the results.
#[derive(Debug)]
pub struct ItemEnd {
    /// `<resource>/<namespace>/<name>`, or `<resource>/<name>` when cluster-scoped.
    pub what: String,
    pub namespace: Option<String>,
    pub end: End,
    /// What the user should know about the object though it was restored.
    pub warnings: Vec<String>,
}

/// Warnings or errors, by the namespace of their object, as Velero's restore results keep them.
#[derive(Debug, Default, Serialize)]
pub struct Messages {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cluster: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub namespaces: BTreeMap<String, Vec<String>>,
}

impl Messages {
    fn add(&mut self, namespace: Option<&str>, message: String) {
        match namespace {
            Some(namespace) => self
                .namespaces
                .entry(namespace.to_owned())
                .or_default()
                .push(message),
            None => self.cluster.push(message),
        }
    }

    /// Every message, cluster-scoped first.
    pub fn all(&self) -> impl Iterator<Item = &String> {
        self.cluster
            .iter()
            .chain(self.namespaces.values().flatten())
    }
}

/// What the restore did with each object, as uploaded to the location.
#[derive(Debug, Default, Serialize)]
pub struct Results {
    pub created: Vec<String>,
    pub updated: Vec<String>,
    pub existing: Vec<String>,
    pub skipped: Vec<String>,
    pub warnings: Messages,
    pub errors: Messages,
}

impl Results {
    /// Records one object's end.
    pub fn record(&mut self, item: &ItemEnd) {
        let what = item.what.clone();
        let namespace = item.namespace.as_deref();
        for warning in &item.warnings {
            self.warnings
                .add(namespace, format!("{}: {warning}", item.what));
        }
        match &item.end {
            End::Created(_) => self.created.push(what),
            End::Same => self.existing.push(what),
            End::Kept => {
                let warning =
                    format!("{what} already exists and differs from the backup; left alone");
                self.warnings.add(namespace, warning);
                self.existing.push(what);
            }
            End::Updated => self.updated.push(what),
            End::NotUpdated(message) => {
                let warning = format!("{what} already exists and cannot be updated: {message}");
                self.warnings.add(namespace, warning);
                self.existing.push(what);
            }
            End::Failed(message) => self.errors.add(namespace, format!("{what}: {message}")),
            End::Skipped(reason) => self.skipped.push(format!("{what}: {reason}")),
        }
    }

    /// Objects dealt with: all but those that failed.
    pub fn done(&self) -> u64 {
        (self.created.len() + self.updated.len() + self.existing.len() + self.skipped.len()) as u64
    }
}

/// The API of a backed-up object's type, at the version it was backed up in.
fn api_of(client: &Client, item: &BackedUp, namespace: Option<&str>) -> Option<Api<DynamicObject>> {
    let api_version = item.text("/apiVersion")?;
    let kind = item.text("/kind")?;
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let resource = ApiResource {
        group: group.to_owned(),
        version: version.to_owned(),
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
        plural: item.path.resource.clone(),
    };
    Some(match namespace {
        Some(namespace) => Api::namespaced_with(client.clone(), namespace, &resource),
        None => Api::all_with(client.clone(), &resource),
    })
}

/// Whether the API server's answer is worth a retry of the whole pass rather than an error for
/// the object.
fn transient(status: &kube::core::Status) -> bool {
    status.code == 429 || status.code >= 500
}

/// Creates `restored`, made from `item`, or deals with the object of the same name as
/// `policy` says.
pub async fn create_or_keep(
    client: &Client,
    item: &BackedUp,
    restored: Value,
    policy: ExistingResourcePolicy,
) -> Result<End, Error> {
    let namespace = restored
        .pointer("/metadata/namespace")
        .and_then(Value::as_str);
    let Some(api) = api_of(client, item, namespace) else {
        return Ok(End::Failed(
            "the backed-up object has no apiVersion or kind".to_owned(),
        ));
    };
    let object: DynamicObject = match serde_json::from_value(restored.clone()) {
        Ok(object) => object,
        Err(err) => return Ok(End::Failed(format!("not a valid object: {err}"))),
    };
    match api.create(&PostParams::default(), &object).await {
        Ok(created) => Ok(End::Created(Made::of(&created))),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            existing(&api, &object, &restored, policy).await
        }
        Err(kube::Error::Api(status)) if !transient(&status) => Ok(End::Failed(status.message)),
        Err(err) => Err(err.into()),
    }
}

/// The object of the same name: this restore's own, one like the backup's, or another, kept or
/// patched as the policy says.
async fn existing(
    api: &Api<DynamicObject>,
    object: &DynamicObject,
    restored: &Value,
    policy: ExistingResourcePolicy,
) -> Result<End, Error> {
    let Some(existing) = api.get_opt(&object.name_any()).await? else {
        return Ok(End::Failed(
            "an object of this name was there and went while the restore created it".to_owned(),
        ));
    };
    let ours = object.labels().get(label::RESTORE_UID);
    if ours.is_some() && existing.labels().get(label::RESTORE_UID) == ours {
        return Ok(End::Created(Made::of(&existing)));
    }
    let current = serde_json::to_value(&existing).unwrap_or_default();
    if same_content(restored, &current) {
        return Ok(End::Same);
    }
    match policy {
        ExistingResourcePolicy::None => Ok(End::Kept),
        ExistingResourcePolicy::Update => update(api, &object.name_any(), restored).await,
    }
}

/// Patches the existing object to the backed-up version; where the API server refuses, gives
/// it at least the backed-up labels and annotations, and the restore's own.
async fn update(api: &Api<DynamicObject>, name: &str, restored: &Value) -> Result<End, Error> {
    let params = PatchParams::default();
    let refused = match api
        .patch(name, &params, &Patch::Merge(update_patch(restored)))
        .await
    {
        Ok(_) => return Ok(End::Updated),
        Err(kube::Error::Api(status)) if !transient(&status) => status.message,
        Err(err) => return Err(err.into()),
    };
    let metadata = restored.get("metadata").cloned().unwrap_or_default();
    let labels = json!({"metadata": {
        "labels": metadata.get("labels"),
        "annotations": metadata.get("annotations"),
    }});
    match api.patch(name, &params, &Patch::Merge(labels)).await {
        Ok(_) => Ok(End::NotUpdated(format!(
            "{refused}; its labels and annotations were updated"
        ))),
        Err(kube::Error::Api(status)) if !transient(&status) => Ok(End::NotUpdated(refused)),
        Err(err) => Err(err.into()),
    }
}

/// The fields that make an object's content: all but its metadata and status, and its labels
/// and annotations without the restore's own labels.
fn content(object: &Value) -> Value {
    let mut content = object.as_object().cloned().unwrap_or_default();
    content.remove("status");
    let metadata = content.remove("metadata").unwrap_or_default();
    let mut labels = metadata
        .get("labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    labels.retain(|key, _| {
        ![label::RESTORE_NAME, label::RESTORE_UID, label::BACKUP_NAME].contains(&key.as_str())
    });
    content.insert("labels".to_owned(), Value::Object(labels));
    let annotations = metadata
        .get("annotations")
        .cloned()
        .unwrap_or_else(|| json!({}));
    content.insert("annotations".to_owned(), annotations);
    Value::Object(content)
}

/// Whether the existing object already holds what the restore would create: every field the
/// restore sets has the same value (the cluster may have added defaults).
fn same_content(restored: &Value, existing: &Value) -> bool {
    fn within(want: &Value, have: &Value) -> bool {
        match (want, have) {
            (Value::Object(want), Value::Object(have)) => want
                .iter()
                .all(|(key, value)| have.get(key).is_some_and(|h| within(value, h))),
            (Value::Array(want), Value::Array(have)) => {
                want.len() == have.len() && want.iter().zip(have).all(|(w, h)| within(w, h))
            }
            _ => want == have,
        }
    }
    within(&content(restored), &content(existing))
}

/// A merge patch that gives the existing object the backed-up labels, annotations and content.
fn update_patch(restored: &Value) -> Value {
    let mut patch = restored.as_object().cloned().unwrap_or_default();
    let metadata = patch.remove("metadata").unwrap_or_default();
    patch.insert(
        "metadata".to_owned(),
        json!({"labels": metadata.get("labels"), "annotations": metadata.get("annotations")}),
    );
    Value::Object(patch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_existing_object_is_the_same_when_it_holds_every_restored_field() {
        let restored = json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "default", "namespace": "shop",
                "labels": {"ferry.dev/restore-name": "r1", "ferry.dev/restore-uid": "u", "ferry.dev/backup-name": "b"}},
        });
        let fresh = json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "default", "namespace": "shop", "uid": "x", "resourceVersion": "4"},
        });
        assert!(same_content(&restored, &fresh));
        let data = |value: &str| {
            json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "labels": {"app": "web"}}, "data": {"k": value}})
        };
        assert!(same_content(&data("1"), &data("1")));
        assert!(!same_content(&data("1"), &data("2")));
        let mut unlabelled = data("1");
        unlabelled["metadata"]["labels"] = json!({});
        assert!(!same_content(&data("1"), &unlabelled));
        let defaulted = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
            "spec": {"ports": [{"port": 80}], "clusterIP": "10.96.0.4", "type": "ClusterIP"}});
        let backed_up = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
            "spec": {"ports": [{"port": 80}]}});
        assert!(same_content(&backed_up, &defaulted));
    }

    #[test]
    fn the_update_patch_carries_content_labels_and_annotations_only() {
        let restored = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "namespace": "shop", "labels": {"a": "1"}, "annotations": {"n": "2"}},
            "data": {"k": "v"}});
        assert_eq!(
            update_patch(&restored),
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"labels": {"a": "1"}, "annotations": {"n": "2"}}, "data": {"k": "v"}})
        );
    }
}
