//! The node agent's heartbeat Lease against the Kubernetes test server: held and renewed while
//! the agent runs, named, labelled and annotated so the coordinator can list and report it, and
//! let go of when the agent is stopped.

use std::path::Path;

use ferry_shared::names::{self, annotation, label};
use ferry_tests::harness::Cluster;
use k8s_openapi::api::coordination::v1::Lease;
use kube::ResourceExt;
use kube::api::ListParams;

const AGENT: &str = env!("CARGO_BIN_EXE_ferry-node-agent");
const NODE: &str = "node-a";

fn holder(lease: &Lease) -> Option<String> {
    lease.spec.as_ref()?.holder_identity.clone()
}

fn renewed(lease: &Lease) -> Option<String> {
    let renew = lease.spec.as_ref()?.renew_time.as_ref()?;
    Some(renew.0.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_holds_its_lease_while_it_runs_and_lets_go_when_stopped() {
    let mut cluster = Cluster::start().await;
    cluster.add_node(NODE).await;
    cluster.start_agent(Path::new(AGENT), NODE, &["--heartbeat-interval", "1s"]);
    let leases = cluster.api::<Lease>();
    let node = cluster.scoped(NODE);
    let name = names::node_agent_lease(&node);
    let first = cluster
        .wait_for(&leases, &name, "held", |lease: &Lease| {
            holder(lease).is_some()
        })
        .await;
    assert_eq!(holder(&first), Some(node.clone()));
    assert_eq!(first.spec.as_ref().unwrap().lease_duration_seconds, Some(3));
    assert_eq!(
        first
            .annotations()
            .get(annotation::VERSION)
            .map(String::as_str),
        Some(env!("CARGO_PKG_VERSION"))
    );
    let selector = format!(
        "{}={},{}={node}",
        label::APP_NAME,
        names::NODE_AGENT_APP,
        label::NODE
    );
    let listed = leases
        .list(&ListParams::default().labels(&selector))
        .await
        .unwrap();
    assert_eq!(
        listed
            .items
            .iter()
            .map(ResourceExt::name_any)
            .collect::<Vec<_>>(),
        std::slice::from_ref(&name)
    );

    let before = renewed(&first);
    cluster
        .wait_for(&leases, &name, "renewed", |lease: &Lease| {
            renewed(lease) != before
        })
        .await;

    let status = cluster.agent(NODE).terminate().await;
    assert!(status.success(), "{status:?}");
    let stopped = leases.get(&name).await.unwrap();
    assert_eq!(holder(&stopped), None, "{stopped:?}");
}
