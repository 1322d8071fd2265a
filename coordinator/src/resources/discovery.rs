//! Discovery: every resource type the API server serves, at its group's preferred version.

use ferry_shared::layout;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResource;
use kube::Client;
use kube::core::{ApiResource, GroupVersionKind};

/// A resource type as discovery lists it at its group's preferred version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedType {
    pub group: String,
    pub version: String,
    /// The plural, which names the type in URLs and in the resources tarball.
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub short_names: Vec<String>,
    pub namespaced: bool,
    pub verbs: Vec<String>,
}

impl ServedType {
    fn from_discovery(group: &str, version: &str, resource: APIResource) -> Self {
        let singular = if resource.singular_name.is_empty() {
            resource.kind.to_lowercase()
        } else {
            resource.singular_name
        };
        Self {
            group: group.to_owned(),
            version: version.to_owned(),
            plural: resource.name,
            singular,
            kind: resource.kind,
            short_names: resource.short_names.unwrap_or_default(),
            namespaced: resource.namespaced,
            verbs: resource.verbs,
        }
    }

    /// `<plural>.<group>`, or `<plural>` for the core group, as the tarball names the type.
    pub fn group_resource(&self) -> String {
        layout::group_resource(&self.group, &self.plural)
    }

    pub fn api_resource(&self) -> ApiResource {
        let gvk = GroupVersionKind::gvk(&self.group, &self.version, &self.kind);
        ApiResource::from_gvk_with_plural(&gvk, &self.plural)
    }

    pub fn can(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == verb)
    }
}

/// What discovery found, with the groups it could not read.
#[derive(Debug, Default)]
pub struct Discovered {
    pub types: Vec<ServedType>,
    pub warnings: Vec<String>,
}

/// Every type the API server serves, at the preferred version of its group. A group whose
/// resources cannot be read (an aggregated API that is down, say) is a warning; the core group
/// failing is an error.
pub async fn discover(client: &Client) -> Result<Discovered, kube::Error> {
    let mut discovered = Discovered::default();
    let core = client.list_core_api_resources("v1").await?;
    discovered.add("", "v1", core.resources);
    for group in client.list_api_groups().await?.groups {
        let Some(version) = group.preferred_version.as_ref().or(group.versions.first()) else {
            continue;
        };
        match client
            .list_api_group_resources(&version.group_version)
            .await
        {
            Ok(list) => discovered.add(&group.name, &version.version, list.resources),
            Err(err) => discovered.warnings.push(format!(
                "cannot discover the resources of API group {}: {err}; its objects are left out",
                version.group_version
            )),
        }
    }
    Ok(discovered)
}

impl Discovered {
    fn add(&mut self, group: &str, version: &str, resources: Vec<APIResource>) {
        self.types.extend(
            resources
                .into_iter()
                .filter(|resource| !resource.name.contains('/'))
                .map(|resource| ServedType::from_discovery(group, version, resource)),
        );
    }
}
