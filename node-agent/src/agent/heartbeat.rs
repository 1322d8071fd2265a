//! The agent's heartbeat: a coordination.k8s.io Lease per node in the install namespace, which
//! the agent holds and renews while it runs, so that the coordinator can tell which agents are
//! up and their versions. A renewal that fails is logged and tried again at the next tick; the
//! Lease then simply lapses, as it does when the agent dies. On a graceful stop the agent lets
//! go of the Lease at once.

use std::time::Duration;

use ferry_shared::admin::Readiness;
use ferry_shared::names::{self, annotation, field_manager, label};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How often the agent looks whether its watches have synced before its first renewal.
const READY_POLL: Duration = Duration::from_millis(200);

/// A Lease lapses after this many intervals without renewal.
const INTERVALS_PER_LEASE: u32 = 3;

/// Whose Lease, where, and how often it is renewed.
pub struct Heartbeat {
    pub namespace: String,
    pub node: String,
    pub interval: Duration,
}

impl Heartbeat {
    fn lease_name(&self) -> String {
        names::node_agent_lease(&self.node)
    }

    /// The Lease as the agent applies it at `renewed`: held by its node, for three intervals.
    fn lease(&self, acquired: Timestamp, renewed: Timestamp) -> Value {
        let duration = self.interval.saturating_mul(INTERVALS_PER_LEASE);
        let seconds = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
        json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.lease_name(),
                "namespace": self.namespace,
                "labels": {
                    label::APP_NAME: names::NODE_AGENT_APP,
                    label::NODE: names::label_value(&self.node),
                },
                "annotations": {annotation::VERSION: env!("CARGO_PKG_VERSION")},
            },
            "spec": {
                "holderIdentity": self.node,
                "leaseDurationSeconds": i32::try_from(seconds).unwrap_or(i32::MAX),
                "acquireTime": MicroTime(acquired),
                "renewTime": MicroTime(renewed),
            },
        })
    }

    /// Holds the Lease from the moment the agent is ready until `stop`, then lets go of it.
    pub async fn keep(self, client: Client, readiness: Readiness, stop: CancellationToken) {
        while !readiness.is_ready() {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(READY_POLL) => {}
            }
        }
        let api = Api::<Lease>::namespaced(client, &self.namespace);
        let acquired = Timestamp::now();
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = ticks.tick() => self.renew(&api, acquired).await,
            }
        }
        self.release(&api).await;
    }

    async fn renew(&self, api: &Api<Lease>, acquired: Timestamp) {
        let lease = self.lease(acquired, Timestamp::now());
        let params = PatchParams::apply(field_manager::NODE_AGENT).force();
        if let Err(err) = api
            .patch(&self.lease_name(), &params, &Patch::Apply(lease))
            .await
        {
            warn!(%err, lease = %self.lease_name(), "cannot renew the heartbeat Lease; trying again at the next tick");
        }
    }

    /// Clears the holder, so the agent shows as stopped at once.
    async fn release(&self, api: &Api<Lease>) {
        let params = PatchParams {
            field_manager: Some(field_manager::NODE_AGENT.to_owned()),
            ..PatchParams::default()
        };
        let release = json!({"spec": {"holderIdentity": null}});
        match api
            .patch(&self.lease_name(), &params, &Patch::Merge(release))
            .await
        {
            Ok(_) => info!(lease = %self.lease_name(), "released the heartbeat Lease"),
            Err(err) => {
                warn!(%err, lease = %self.lease_name(), "cannot release the heartbeat Lease; it lapses by itself")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_is_held_by_the_node_for_three_intervals_and_names_the_version() {
        let heartbeat = |interval| Heartbeat {
            namespace: "ferry".into(),
            node: "node-a".into(),
            interval,
        };
        let at = Timestamp::from_second(1_700_000_000).unwrap();
        let lease = heartbeat(Duration::from_secs(30)).lease(at, at);
        assert_eq!(lease["metadata"]["name"], "ferry-node-agent-node-a");
        assert_eq!(
            lease["metadata"]["labels"],
            json!({"app.kubernetes.io/name": "ferry-node-agent", "ferry.dev/node": "node-a"})
        );
        assert_eq!(
            lease["metadata"]["annotations"]["ferry.dev/version"],
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(lease["spec"]["holderIdentity"], "node-a");
        assert_eq!(lease["spec"]["leaseDurationSeconds"], 90);
        assert!(lease["spec"]["renewTime"].as_str().is_some());
        let odd = heartbeat(Duration::from_millis(1500)).lease(at, at);
        assert_eq!(odd["spec"]["leaseDurationSeconds"], 5, "rounded up");
    }
}
