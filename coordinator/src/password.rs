//! The repository password: Secret `ferry-repo-credentials`, key `repository-password`. When
//! it is missing at first start, a random one is made and the log says to keep a copy. When it
//! is missing later, with repositories made, the coordinator refuses to start.

use std::collections::BTreeMap;

use ferry_shared::crd::BackupRepository;
use ferry_shared::names;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, ListParams, PostParams};
use tracing::{info, warn};

/// Random bytes in a generated password (hex-encoded, so twice as many characters).
const PASSWORD_BYTES: usize = 32;

/// Why the repository password cannot be made sure of.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("cannot read Secret {namespace}/{name}: {source}")]
    Read {
        namespace: String,
        name: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("cannot list BackupRepositories: {0}")]
    ListRepositories(#[source] kube::Error),
    #[error(
        "Secret {namespace}/{name} is missing, but repositories exist that were made with the password it held; recreate it with that password (key {key}) and restart"
    )]
    Lost {
        namespace: String,
        name: &'static str,
        key: &'static str,
    },
    #[error("cannot make a random password: {0}")]
    Random(#[source] getrandom::Error),
    #[error("cannot create Secret {namespace}/{name}: {source}")]
    Create {
        namespace: String,
        name: &'static str,
        #[source]
        source: kube::Error,
    },
}

/// A new random repository password: 32 random bytes, hex-encoded.
pub fn random_password() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; PASSWORD_BYTES];
    getrandom::fill(&mut bytes)?;
    Ok(hex::encode(bytes))
}

/// Makes sure the repository password's Secret exists, making it at first start.
pub async fn ensure(client: &Client, namespace: &str) -> Result<(), PasswordError> {
    let api = Api::<Secret>::namespaced(client.clone(), namespace);
    let name = names::REPOSITORY_SECRET;
    if api
        .get_opt(name)
        .await
        .map_err(|source| PasswordError::Read {
            namespace: namespace.to_owned(),
            name,
            source,
        })?
        .is_some()
    {
        info!(secret = %name, "using the existing repository password");
        return Ok(());
    }
    // Repositories made with the lost password would all become unreadable, and new ones
    // would get another password: refuse, and say how to recover.
    let repositories = Api::<BackupRepository>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().limit(1))
        .await
        .map_err(PasswordError::ListRepositories)?;
    if !repositories.items.is_empty() {
        return Err(PasswordError::Lost {
            namespace: namespace.to_owned(),
            name,
            key: names::REPOSITORY_PASSWORD_KEY,
        });
    }
    let password = random_password().map_err(PasswordError::Random)?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            ..ObjectMeta::default()
        },
        string_data: Some(BTreeMap::from([(
            names::REPOSITORY_PASSWORD_KEY.to_owned(),
            password,
        )])),
        ..Secret::default()
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            warn!(
                secret = %name,
                "generated a random repository password. Keep a copy outside the cluster: without it no backup can be restored after a disaster. Read it with: kubectl -n {namespace} get secret {name} -o jsonpath='{{.data.{}}}' | base64 -d",
                names::REPOSITORY_PASSWORD_KEY
            );
            Ok(())
        }
        // Another replica made it first.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(source) => Err(PasswordError::Create {
            namespace: namespace.to_owned(),
            name,
            source,
        }),
    }
}
