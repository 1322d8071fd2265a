//! Reaching the cluster as kubectl does: `--kubeconfig`, else `$KUBECONFIG`, else
//! `~/.kube/config`, else the pod's service account; `--context` picks a context.

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::ListParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::Global;
use super::error::{CliError, root_cause};
use super::output::Format;

/// The Ferry install a command works on.
pub struct Ferry {
    pub client: Client,
    /// The install namespace.
    pub namespace: String,
    pub format: Format,
}

impl Ferry {
    /// The `kind` object `name` in the install namespace.
    pub async fn get<K>(&self, kind: &'static str, name: &str) -> Result<K, CliError>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        self.api::<K>()
            .get(name)
            .await
            .map_err(CliError::about(kind, name, &self.namespace))
    }

    /// The `kind` objects named, or every one by name when none is.
    pub async fn named_or_all<K>(
        &self,
        kind: &'static str,
        names: &[String],
    ) -> Result<Vec<K>, CliError>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        if names.is_empty() {
            let mut items = self
                .api::<K>()
                .list(&ListParams::default())
                .await
                .map_err(CliError::from_kube)?
                .items;
            items.sort_by_key(ResourceExt::name_any);
            return Ok(items);
        }
        let mut items = Vec::new();
        for name in names {
            items.push(self.get(kind, name).await?);
        }
        Ok(items)
    }

    /// The kind `K` in the install namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }
}

/// A client of the cluster the global flags name.
pub async fn client(global: &Global) -> Result<Client, CliError> {
    let mut config = config(global).await?;
    // A person waits on each request: a 503 (a proxied Service without endpoints, say) is
    // said at once rather than retried for minutes.
    config.default_retry = false;
    let url = config.cluster_url.to_string();
    Client::try_from(config)
        .map_err(|err| CliError::Unreachable(format!(" at {url}: {}", root_cause(&err))))
}

async fn config(global: &Global) -> Result<Config, CliError> {
    let options = KubeConfigOptions {
        context: global.context.clone(),
        ..KubeConfigOptions::default()
    };
    let unusable = |err: &(dyn std::error::Error + 'static)| {
        CliError::NoCluster(format!("the kubeconfig is not usable: {}", root_cause(err)))
    };
    if let Some(path) = &global.kubeconfig {
        let kubeconfig = Kubeconfig::read_from(path).map_err(|err| {
            CliError::NoCluster(format!(
                "cannot read kubeconfig {}: {}",
                path.display(),
                root_cause(&err)
            ))
        })?;
        return Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|err| unusable(&err));
    }
    match Config::from_kubeconfig(&options).await {
        Ok(config) => Ok(config),
        Err(err) if global.context.is_some() || std::env::var_os("KUBECONFIG").is_some() => {
            Err(unusable(&err))
        }
        Err(err) => Config::incluster().map_err(|_| {
            CliError::NoCluster(format!(
                "{}, and this is not a pod; give --kubeconfig or set KUBECONFIG",
                root_cause(&err)
            ))
        }),
    }
}

/// A client of the cluster, once Ferry's API is known to be served there.
pub async fn ferry(global: &Global) -> Result<Ferry, CliError> {
    let client = client(global).await?;
    installed(&client).await?;
    install_namespace(&client, &global.namespace).await?;
    Ok(Ferry {
        client,
        namespace: global.namespace.clone(),
        format: global.output,
    })
}

/// Whether the cluster serves Ferry's API group; NotInstalled if not.
pub async fn installed(client: &Client) -> Result<(), CliError> {
    let group = format!(
        "{}/{}",
        ferry_shared::names::API_GROUP,
        ferry_shared::names::API_VERSION
    );
    match client.list_api_group_resources(&group).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Err(CliError::NotInstalled),
        Err(err) => Err(CliError::from_kube(err)),
    }
}

/// Whether the install namespace exists. A user who may not read Namespaces is not stopped
/// here: the commands then say what they cannot do.
async fn install_namespace(client: &Client, namespace: &str) -> Result<(), CliError> {
    match Api::<Namespace>::all(client.clone())
        .get_opt(namespace)
        .await
    {
        Ok(None) => Err(CliError::NoNamespace(namespace.to_owned())),
        Ok(Some(_)) | Err(kube::Error::Api(_)) => Ok(()),
        Err(err) => Err(CliError::from_kube(err)),
    }
}
