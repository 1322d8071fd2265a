//! Collecting a backup's objects: every type discovery finds that the Backup's filters select,
//! listed page by page in its namespaces, with the cluster-scoped objects the scope asks for.

use std::collections::BTreeSet;

use ferry_shared::crd::Backup;
use ferry_shared::layout::ItemPath;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, DynamicObject, ListParams};
use kube::core::{Selector, TypeMeta};
use kube::{Client, ResourceExt};
use serde::de::DeserializeOwned;

use crate::context::Context;
use crate::error::{Error, StorageError};
use crate::resources::{
    ClusterScope, NamespaceFilter, ResourceFilter, ServedType, discover, never_moved,
};

/// Objects asked for in one list request.
const PAGE: u32 = 500;

/// A backup's objects, and what could not be read.
#[derive(Debug, Default)]
pub(super) struct Collected {
    /// Each object's place in the tarball, and its JSON: kept as bytes, which take a fraction
    /// of the memory of parsed objects.
    pub items: Vec<(ItemPath, Vec<u8>)>,
    pub warnings: Vec<String>,
    /// Types whose objects could not be listed, and why: the backup lacks them.
    pub lost: Vec<String>,
}

impl Collected {
    fn add(&mut self, served: &ServedType, objects: Vec<DynamicObject>) -> Result<(), Error> {
        let types = TypeMeta {
            api_version: served.api_resource().api_version,
            kind: served.kind.clone(),
        };
        for mut object in objects {
            // Items of a list carry no type; the file must say what it holds.
            object.types = Some(types.clone());
            object.metadata.managed_fields = None;
            let path = ItemPath {
                group: served.group.clone(),
                resource: served.plural.clone(),
                namespace: served
                    .namespaced
                    .then(|| object.namespace().unwrap_or_default()),
                name: object.name_any(),
            };
            let json = serde_json::to_vec(&object).map_err(StorageError::json(path.to_path()))?;
            self.items.push((path, json));
        }
        Ok(())
    }

    fn has(&self, group_resource: &str, namespace: Option<&str>, name: &str) -> bool {
        self.items.iter().any(|(path, _)| {
            path.group_resource() == group_resource
                && path.namespace.as_deref() == namespace
                && path.name == name
        })
    }

    /// The items of one core type, typed. What the API server returns parses; an object
    /// that would not is still in the tarball, only not typed here.
    pub fn typed<K: DeserializeOwned>(&self, resource: &str) -> Vec<K> {
        (self.items.iter())
            .filter(|(path, _)| path.group_resource() == resource)
            .filter_map(|(_, json)| serde_json::from_slice(json).ok())
            .collect()
    }
}

/// Lists every object of `served` in `namespace` (or everywhere), page by page.
async fn list_all(
    client: &Client,
    served: &ServedType,
    namespace: Option<&str>,
    labels: &str,
) -> Result<Vec<DynamicObject>, kube::Error> {
    let resource = served.api_resource();
    let api: Api<DynamicObject> = match namespace {
        Some(namespace) => Api::namespaced_with(client.clone(), namespace, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    let mut params = ListParams::default().limit(PAGE);
    if !labels.is_empty() {
        params = params.labels(labels);
    }
    let mut objects = Vec::new();
    loop {
        let page = api.list(&params).await?;
        objects.extend(page.items);
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(objects),
        }
    }
}

/// What a Backup selects, resolved against discovery.
struct Selection {
    types: Vec<ServedType>,
    filter: ResourceFilter,
    namespaces: NamespaceFilter,
    scope: ClusterScope,
    labels: String,
}

impl Selection {
    fn served(&self, group: &str, plural: &str) -> Option<&ServedType> {
        (self.types.iter()).find(|t| t.group == group && t.plural == plural && t.can("get"))
    }
}

/// Collects the objects `backup` selects. Discovery failing is an error (the backup is
/// retried); a type that cannot be listed is recorded as lost, and the backup goes on.
pub(super) async fn collect(backup: &Backup, ctx: &Context) -> Result<Collected, Error> {
    let discovered = discover(&ctx.client).await?;
    let spec = &backup.spec;
    let (filter, mut warnings) = ResourceFilter::resolve(&spec.resources, &discovered.types);
    warnings.extend(discovered.warnings);
    let namespaces = NamespaceFilter::new(&spec.included_namespaces, &spec.excluded_namespaces);
    let labels = match &spec.label_selector {
        Some(selector) => Selector::try_from(selector.clone())?.to_string(),
        None => String::new(),
    };
    let selection = Selection {
        scope: ClusterScope::of(spec.resources.include_cluster_resources, &namespaces),
        types: discovered.types,
        filter,
        namespaces,
        labels,
    };
    let mut collected = Collected {
        warnings,
        ..Collected::default()
    };
    for served in &selection.types {
        let wanted = served.can("list")
            && !never_moved(&served.group, &served.plural)
            && selection.filter.selects(&served.group_resource())
            && (served.namespaced || selection.scope == ClusterScope::All);
        if wanted {
            list_selected(&ctx.client, &selection, served, &mut collected).await?;
        }
    }
    add_needed(&ctx.client, &selection, &mut collected).await?;
    Ok(collected)
}

/// Lists one type into `collected`; a refusal from the API server is recorded as lost.
async fn list_selected(
    client: &Client,
    selection: &Selection,
    served: &ServedType,
    collected: &mut Collected,
) -> Result<(), Error> {
    let mut objects = Vec::new();
    let namespaces: Vec<Option<&str>> = match selection.namespaces.named() {
        Some(named) if served.namespaced => named.iter().map(|ns| Some(ns.as_str())).collect(),
        _ => vec![None],
    };
    for namespace in namespaces {
        match list_all(client, served, namespace, &selection.labels).await {
            Ok(listed) => objects.extend(listed),
            Err(kube::Error::Api(status)) => {
                let resource = served.group_resource();
                collected.warnings.push(format!(
                    "cannot list {resource}: {}; the backup does not have them",
                    status.message
                ));
                collected.lost.push(resource);
                return Ok(());
            }
            Err(err) => return Err(err.into()),
        }
    }
    // A Namespace object goes with its namespace's objects, whatever the cluster scope.
    let namespace_of = |object: &DynamicObject| match served.group_resource().as_str() {
        "namespaces" => Some(object.name_any()),
        _ => served
            .namespaced
            .then(|| object.namespace().unwrap_or_default()),
    };
    objects
        .retain(|object| namespace_of(object).is_none_or(|ns| selection.namespaces.selects(&ns)));
    collected.add(served, objects)
}

/// Adds what the collected objects need and the filters did not take: the claims their pods
/// mount and, when the scope is Related, their Namespaces, the volumes bound to their claims
/// and the definitions of their custom resources. Only a type excluded by name keeps them out.
async fn add_needed(
    client: &Client,
    selection: &Selection,
    collected: &mut Collected,
) -> Result<(), Error> {
    let pods: Vec<Pod> = collected.typed("pods");
    let claims: BTreeSet<(String, String)> = pods
        .iter()
        .flat_map(|pod| {
            let namespace = pod.namespace().unwrap_or_default();
            (pod.spec.iter())
                .flat_map(|spec| spec.volumes.iter().flatten())
                .filter_map(|volume| volume.persistent_volume_claim.as_ref())
                .map(move |source| (namespace.clone(), source.claim_name.clone()))
        })
        .collect();
    for (namespace, claim) in &claims {
        add_one(
            client,
            selection,
            collected,
            ("", "persistentvolumeclaims"),
            Some(namespace),
            claim,
        )
        .await?;
    }
    if selection.scope != ClusterScope::Related {
        return Ok(());
    }
    let namespaces: BTreeSet<String> = match selection.namespaces.named() {
        Some(named) => named
            .iter()
            .filter(|ns| selection.namespaces.selects(ns))
            .cloned()
            .collect(),
        None => (collected.items.iter())
            .filter_map(|(path, _)| path.namespace.clone())
            .collect(),
    };
    for namespace in &namespaces {
        add_one(
            client,
            selection,
            collected,
            ("", "namespaces"),
            None,
            namespace,
        )
        .await?;
    }
    let volumes: BTreeSet<String> = (collected
        .typed::<PersistentVolumeClaim>("persistentvolumeclaims"))
    .into_iter()
    .filter_map(|claim| claim.spec?.volume_name)
    .collect();
    for volume in &volumes {
        add_one(
            client,
            selection,
            collected,
            ("", "persistentvolumes"),
            None,
            volume,
        )
        .await?;
    }
    // The definitions of the custom resources: `<plural>.<group>` names a CRD.
    let kinds: BTreeSet<String> = (collected.items.iter())
        .filter(|(path, _)| !path.group.is_empty() && path.namespace.is_some())
        .map(|(path, _)| path.group_resource())
        .collect();
    for kind in &kinds {
        let definitions = ("apiextensions.k8s.io", "customresourcedefinitions");
        add_one(client, selection, collected, definitions, None, kind).await?;
    }
    Ok(())
}

/// Adds one object by name, unless it is there already, its type is excluded, or it is gone.
async fn add_one(
    client: &Client,
    selection: &Selection,
    collected: &mut Collected,
    (group, plural): (&str, &str),
    namespace: Option<&str>,
    name: &str,
) -> Result<(), Error> {
    let Some(served) = selection.served(group, plural) else {
        return Ok(());
    };
    let resource = served.group_resource();
    if selection.filter.excludes(&resource) || collected.has(&resource, namespace, name) {
        return Ok(());
    }
    let api: Api<DynamicObject> = match namespace {
        Some(namespace) => Api::namespaced_with(client.clone(), namespace, &served.api_resource()),
        None => Api::all_with(client.clone(), &served.api_resource()),
    };
    match api.get_opt(name).await {
        Ok(Some(object)) => collected.add(served, vec![object])?,
        Ok(None) => {}
        Err(kube::Error::Api(status)) => collected.warnings.push(format!(
            "cannot read {resource} {name}: {}; the backup does not have it",
            status.message
        )),
        Err(err) => return Err(err.into()),
    }
    Ok(())
}
