//! Applying and deleting manifests of any kind: discovery finds each kind's resource, and
//! server-side apply, under the field manager `ferry-install`, writes it.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{self, ApiCapabilities, ApiResource, Scope};
use kube::error::DiscoveryError;
use kube::runtime::wait::{await_condition, conditions};
use serde_json::Value;

use super::{InstallError, manifests};

/// The field manager of everything install applies.
pub const FIELD_MANAGER: &str = "ferry-install";

/// How often, and how far apart, discovery is asked for a kind it does not serve yet.
const DISCOVERY_TRIES: u32 = 20;
const DISCOVERY_PAUSE: Duration = Duration::from_millis(500);

/// Applies and deletes objects of any kind the cluster serves.
pub struct Applier {
    client: kube::Client,
    /// The resource of each `apiVersion/kind`, once discovered.
    resources: HashMap<String, (ApiResource, ApiCapabilities)>,
}

impl Applier {
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            resources: HashMap::new(),
        }
    }

    /// The API of the object's kind, in its namespace if the kind is namespaced.
    async fn api(&mut self, object: &Value) -> Result<Api<DynamicObject>, InstallError> {
        let api_version = object
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let kind = manifests::kind(object);
        let key = format!("{api_version}/{kind}");
        if !self.resources.contains_key(&key) {
            let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
            let gvk = GroupVersionKind::gvk(group, version, kind);
            let found = discovery::pinned_kind(&self.client, &gvk)
                .await
                .map_err(|source| InstallError::Discover {
                    kind: key.clone(),
                    source,
                })?;
            self.resources.insert(key.clone(), found);
        }
        let (resource, capabilities) = &self.resources[&key];
        let namespace = object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str);
        Ok(match (&capabilities.scope, namespace) {
            (Scope::Namespaced, Some(namespace)) => {
                Api::namespaced_with(self.client.clone(), namespace, resource)
            }
            _ => Api::all_with(self.client.clone(), resource),
        })
    }

    /// Server-side applies the object, taking over its fields from any other manager.
    pub async fn apply(&mut self, object: &Value) -> Result<(), InstallError> {
        let api = self.served_api(object).await?;
        let name = manifests::name(object);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        api.patch(name, &params, &Patch::Apply(object))
            .await
            .map_err(|source| InstallError::Apply {
                kind: manifests::kind(object).to_owned(),
                name: name.to_owned(),
                source,
            })?;
        Ok(())
    }

    /// The API of the object's kind, waiting a little for a kind whose CRD was just
    /// established: API servers add it to discovery shortly after.
    async fn served_api(&mut self, object: &Value) -> Result<Api<DynamicObject>, InstallError> {
        let mut tries = 1;
        loop {
            match self.api(object).await {
                Err(InstallError::Discover { source, .. })
                    if is_not_found(&source) && tries < DISCOVERY_TRIES =>
                {
                    tries += 1;
                    tokio::time::sleep(DISCOVERY_PAUSE).await;
                }
                found => return found,
            }
        }
    }

    /// The API of the object's kind; `None` when the cluster no longer serves the kind, which
    /// then has no objects left.
    async fn served(&mut self, object: &Value) -> Result<Option<Api<DynamicObject>>, InstallError> {
        match self.api(object).await {
            Ok(api) => Ok(Some(api)),
            Err(InstallError::Discover { source, .. }) if is_not_found(&source) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Deletes the object; false if it was not there.
    pub async fn delete(&mut self, object: &Value) -> Result<bool, InstallError> {
        let Some(api) = self.served(object).await? else {
            return Ok(false);
        };
        let name = manifests::name(object);
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => Ok(true),
            Err(err) if is_not_found(&err) => Ok(false),
            Err(source) => Err(InstallError::Delete {
                kind: manifests::kind(object).to_owned(),
                name: name.to_owned(),
                source,
            }),
        }
    }

    /// Whether the object still exists.
    pub async fn exists(&mut self, object: &Value) -> Result<bool, InstallError> {
        let Some(api) = self.served(object).await? else {
            return Ok(false);
        };
        let name = manifests::name(object);
        api.get_opt(name)
            .await
            .map(|found| found.is_some())
            .map_err(|source| InstallError::Read {
                kind: "object",
                name: format!("{} {name}", manifests::kind(object)),
                source,
            })
    }
}

/// Whether the API server said 404 Not Found, or discovery did not find the kind.
pub fn is_not_found(err: &kube::Error) -> bool {
    match err {
        kube::Error::Api(status) => status.code == 404,
        kube::Error::Discovery(
            DiscoveryError::MissingKind(_)
            | DiscoveryError::MissingApiGroup(_)
            | DiscoveryError::MissingResource(_),
        ) => true,
        _ => false,
    }
}

/// Applies the CustomResourceDefinitions, then waits until each is established, so that the
/// kinds they define can be applied.
pub async fn crds(
    applier: &mut Applier,
    crds: &[Value],
    timeout: Duration,
) -> Result<(), InstallError> {
    for crd in crds {
        applier.apply(crd).await?;
    }
    let api = Api::<CustomResourceDefinition>::all(applier.client.clone());
    for crd in crds {
        let name = manifests::name(crd);
        let established = await_condition(api.clone(), name, conditions::is_crd_established());
        match tokio::time::timeout(timeout, established).await {
            Ok(Ok(_)) => {}
            Ok(Err(source)) => {
                return Err(InstallError::WaitEstablished {
                    name: name.to_owned(),
                    source,
                });
            }
            Err(_) => {
                return Err(InstallError::NotEstablished {
                    name: name.to_owned(),
                    timeout,
                });
            }
        }
    }
    Ok(())
}
