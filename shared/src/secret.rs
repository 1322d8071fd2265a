//! Reading one text value of a Secret, with errors that say which Secret, which key and what
//! it was for. Secret values never appear in errors.

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;

use crate::names;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read Secret {namespace}/{name}: {source}")]
    Read {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("Secret {namespace}/{name}, which holds the {purpose}, does not exist")]
    Missing {
        namespace: String,
        name: String,
        purpose: String,
    },
    #[error("Secret {namespace}/{name} has no key {key} (the {purpose})")]
    MissingKey {
        namespace: String,
        name: String,
        key: String,
        purpose: String,
    },
    #[error("the {purpose} in Secret {namespace}/{name} is not text")]
    NotText {
        namespace: String,
        name: String,
        purpose: String,
    },
}

/// The text under `key` in Secret `namespace/name`, from `data` or `stringData`. `purpose`
/// names the value in errors, such as "repository password".
pub async fn secret_text(
    client: &Client,
    namespace: &str,
    name: &str,
    key: &str,
    purpose: &str,
) -> Result<String, SecretError> {
    let secrets = Api::<Secret>::namespaced(client.clone(), namespace);
    let secret = secrets
        .get_opt(name)
        .await
        .map_err(|source| SecretError::Read {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            source,
        })?
        .ok_or_else(|| SecretError::Missing {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            purpose: purpose.to_owned(),
        })?;
    let value = secret
        .data
        .as_ref()
        .and_then(|data| data.get(key))
        .map(|bytes| bytes.0.clone())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|data| data.get(key))
                .map(|text| text.clone().into_bytes())
        })
        .ok_or_else(|| SecretError::MissingKey {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            key: key.to_owned(),
            purpose: purpose.to_owned(),
        })?;
    String::from_utf8(value).map_err(|_| SecretError::NotText {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        purpose: purpose.to_owned(),
    })
}

/// The repository password from Secret `ferry-repo-credentials` in `namespace`, without the
/// line ending that `echo`-made Secrets carry.
pub async fn repository_password(client: &Client, namespace: &str) -> Result<String, SecretError> {
    let password = secret_text(
        client,
        namespace,
        names::REPOSITORY_SECRET,
        names::REPOSITORY_PASSWORD_KEY,
        "repository password",
    )
    .await?;
    Ok(password.trim_end_matches(['\r', '\n']).to_owned())
}
