//! `FERRY_TEST_RBAC=1`: the node agents and the coordinator run as the ServiceAccounts of
//! `deploy/base`, bound by its roles, with tokens from the TokenRequest API, so that the suite
//! proves the shipped RBAC enough. The test's copies of the cluster-wide roles and bindings
//! carry its names (see [`super::names`]), so that tests running at once keep apart.

use std::path::{Path, PathBuf};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, PostParams};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::names::Names;

/// The environment variable that makes the processes run as `deploy/base`'s ServiceAccounts.
pub const RBAC_ENV: &str = "FERRY_TEST_RBAC";

/// The RBAC manifests of `deploy/base`, one per component.
const MANIFESTS: [&str; 2] = ["coordinator-rbac.yaml", "node-agent-rbac.yaml"];

/// The ServiceAccounts those manifests make, as the coordinator's and the node agents'.
const COORDINATOR_ACCOUNT: &str = "ferry-coordinator";
const NODE_AGENT_ACCOUNT: &str = "ferry-node-agent";

/// How long the tokens last: longer than any test.
const TOKEN_SECONDS: i64 = 3600;

/// The kubeconfigs the processes run with, one per ServiceAccount.
#[derive(Debug, Clone)]
pub(super) struct Identities {
    pub(super) coordinator: PathBuf,
    pub(super) node_agent: PathBuf,
}

/// Whether [`RBAC_ENV`] asks for the ServiceAccounts.
pub(super) fn wanted() -> bool {
    std::env::var(RBAC_ENV).is_ok_and(|value| value == "1")
}

/// Applies `deploy/base`'s RBAC to the install namespace `namespace`, and writes a kubeconfig
/// for each ServiceAccount into `dir`, from the harness's own `kubeconfig` with the
/// account's token as its user.
pub(super) async fn service_accounts(
    client: &Client,
    names: &Names,
    namespace: &str,
    kubeconfig: &Path,
    dir: &Path,
) -> Identities {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/base");
    for manifest in MANIFESTS {
        let text = std::fs::read_to_string(base.join(manifest))
            .unwrap_or_else(|err| panic!("read deploy/base/{manifest}: {err}"));
        for document in serde_yaml::Deserializer::from_str(&text) {
            let mut object: Value =
                serde::Deserialize::deserialize(document).expect("a manifest of deploy/base");
            localize(&mut object, names, namespace);
            create(client, namespace, object).await;
        }
    }
    let identity = async |account: &str| {
        let token = token(client, namespace, account).await;
        let path = dir.join(format!("kubeconfig-{account}"));
        write_with_token(kubeconfig, &path, &token);
        path
    };
    Identities {
        coordinator: identity(COORDINATOR_ACCOUNT).await,
        node_agent: identity(NODE_AGENT_ACCOUNT).await,
    }
}

/// Makes a manifest the test's: namespaced objects and subjects in `namespace`, cluster-wide
/// ones (and the references to them) named and labelled as the test's.
fn localize(object: &mut Value, names: &Names, namespace: &str) {
    let kind = object["kind"].as_str().unwrap_or_default().to_owned();
    let metadata = &mut object["metadata"];
    if kind.starts_with("Cluster") {
        let name = metadata["name"].as_str().expect("a named object");
        metadata["name"] = json!(names.scoped(name));
        metadata["labels"] = json!(names.labels());
    } else {
        metadata["namespace"] = json!(namespace);
    }
    if object["roleRef"]["kind"] == "ClusterRole" {
        let role = object["roleRef"]["name"].as_str().expect("a role");
        object["roleRef"]["name"] = json!(names.scoped(role));
    }
    if let Some(subjects) = object["subjects"].as_array_mut() {
        for subject in subjects {
            subject["namespace"] = json!(namespace);
        }
    }
}

/// Creates a manifest of one of the kinds `deploy/base`'s RBAC holds.
async fn create(client: &Client, namespace: &str, object: Value) {
    match object["kind"].as_str() {
        Some("ServiceAccount") => {
            post(
                Api::<ServiceAccount>::namespaced(client.clone(), namespace),
                object,
            )
            .await;
        }
        Some("Role") => post(Api::<Role>::namespaced(client.clone(), namespace), object).await,
        Some("RoleBinding") => {
            post(
                Api::<RoleBinding>::namespaced(client.clone(), namespace),
                object,
            )
            .await;
        }
        Some("ClusterRole") => post(Api::<ClusterRole>::all(client.clone()), object).await,
        Some("ClusterRoleBinding") => {
            post(Api::<ClusterRoleBinding>::all(client.clone()), object).await;
        }
        other => panic!("deploy/base's RBAC holds a {other:?}, which the harness cannot make"),
    }
}

async fn post<K>(api: Api<K>, object: Value)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let object: K = serde_json::from_value(object).expect("a manifest of its kind");
    api.create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|err| panic!("create a {} of deploy/base: {err}", K::kind(&())));
}

/// A token of the ServiceAccount `account`, from the TokenRequest API.
async fn token(client: &Client, namespace: &str, account: &str) -> String {
    let request = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(TOKEN_SECONDS),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    let issued = Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .unwrap_or_else(|err| panic!("a token of the ServiceAccount {account}: {err}"));
    issued.status.expect("an issued token").token
}

/// Writes `kubeconfig` to `path` with `token` as the user of every context.
fn write_with_token(kubeconfig: &Path, path: &Path, token: &str) {
    let text = std::fs::read_to_string(kubeconfig).expect("read the kubeconfig");
    let mut config: serde_yaml::Value = serde_yaml::from_str(&text).expect("a kubeconfig");
    let user = "ferry-test-service-account";
    config["users"] =
        serde_yaml::to_value(json!([{"name": user, "user": {"token": token}}])).expect("a user");
    if let Some(contexts) = config["contexts"].as_sequence_mut() {
        for context in contexts {
            context["context"]["user"] = serde_yaml::Value::from(user);
        }
    }
    let text = serde_yaml::to_string(&config).expect("encode the kubeconfig");
    std::fs::write(path, text).expect("write the kubeconfig");
}
