//! What a run of the suite against an external API server leaves behind: run by
//! `scripts/e2e-external.sh` before the suite, to record what the server holds, and after it,
//! to check that the tests removed everything they made but Ferry's CRDs. Ignored in a plain
//! run, where there is no external server.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use ferry_tests::harness::{DEADLINE, KUBECONFIG_ENV, connect};
use k8s_openapi::api::core::v1::{Namespace, Node, PersistentVolume};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

/// The file that holds what the server held before the suite ran.
const BASELINE_ENV: &str = "FERRY_TEST_BASELINE";

/// The API group of Ferry's CRDs, which the suite applies and leaves.
const FERRY_CRDS: &str = ".ferry.dev";

/// Records the server's cluster-wide objects if the baseline file is missing; otherwise waits
/// until the server holds no more than the baseline, and fails naming what is left.
#[tokio::test]
#[ignore = "run by scripts/e2e-external.sh against an external API server"]
async fn nothing_is_left_behind() {
    let kubeconfig = std::env::var_os(KUBECONFIG_ENV).expect("FERRY_TEST_KUBECONFIG");
    let baseline = PathBuf::from(std::env::var_os(BASELINE_ENV).expect("FERRY_TEST_BASELINE"));
    let client = connect(&PathBuf::from(kubeconfig))
        .await
        .expect("connect to the API server");
    if !baseline.exists() {
        let objects = everything(&client).await.into_iter().collect::<Vec<_>>();
        std::fs::write(&baseline, objects.join("\n")).expect("write the baseline");
        return;
    }
    let before: BTreeSet<String> = std::fs::read_to_string(&baseline)
        .expect("read the baseline")
        .lines()
        .map(str::to_owned)
        .collect();
    let started = tokio::time::Instant::now();
    loop {
        let left: Vec<String> = everything(&client)
            .await
            .difference(&before)
            .filter(|object| !object.ends_with(FERRY_CRDS))
            .cloned()
            .collect();
        if left.is_empty() {
            return;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "the suite left these behind:\n{}",
            left.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every namespace and cluster-scoped object a test could make, as `kind/name`.
async fn everything(client: &Client) -> BTreeSet<String> {
    let mut objects = BTreeSet::new();
    objects.extend(names::<Namespace>(client).await);
    objects.extend(names::<Node>(client).await);
    objects.extend(names::<PersistentVolume>(client).await);
    objects.extend(names::<ClusterRole>(client).await);
    objects.extend(names::<ClusterRoleBinding>(client).await);
    objects.extend(names::<CustomResourceDefinition>(client).await);
    objects
}

async fn names<K>(client: &Client) -> Vec<String>
where
    K: Resource<Scope = k8s_openapi::ClusterResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap_or_else(|err| panic!("list {}: {err}", K::plural(&())))
        .items
        .iter()
        .map(|object| format!("{}/{}", K::kind(&()), object.name_any()))
        .collect()
}
