//! Waiting for the coordinator and the node agents to run: whether they are ready is decided
//! from their workloads' status alone, and the wait prints each change.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use kube::api::{Api, ObjectMeta};
use kube::{Client, Resource};
use tokio::time::Instant;

use super::{InstallError, say};
use crate::cli::error::CliError;

/// The coordinator's Deployment, as the manifests name it.
pub const COORDINATOR: &str = "ferry-coordinator";
/// The node agents' DaemonSet, as the manifests name it.
pub const NODE_AGENT: &str = "ferry-node-agent";
/// How often the workloads are read.
const POLL: Duration = Duration::from_millis(500);

/// How far a workload is from running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    /// Pods ready.
    pub ready: i32,
    /// Pods wanted.
    pub wanted: i32,
    /// Ready pods it takes to count as running.
    pub needed: i32,
    /// Whether its controller has seen its latest spec, so that the counts are of it.
    pub observed: bool,
}

impl Workload {
    pub fn is_ready(&self) -> bool {
        self.observed && self.ready >= self.needed
    }

    /// Such as `0/1 ready`.
    fn count(&self) -> String {
        format!("{}/{} ready", self.ready, self.wanted)
    }
}

/// Whether a controller has seen the latest spec of the object of `metadata`.
fn observed(metadata: &ObjectMeta, observed_generation: Option<i64>) -> bool {
    match (metadata.generation, observed_generation) {
        (Some(generation), Some(observed)) => observed >= generation,
        (None, Some(_)) => true,
        (_, None) => false,
    }
}

/// The coordinator runs once one replica is ready (or available).
pub fn coordinator(deployment: Option<&Deployment>) -> Workload {
    let wanted = deployment
        .and_then(|d| d.spec.as_ref()?.replicas)
        .unwrap_or(1);
    let status = deployment.and_then(|d| d.status.as_ref());
    let ready = status.map_or(0, |s| {
        s.ready_replicas
            .unwrap_or(0)
            .max(s.available_replicas.unwrap_or(0))
    });
    Workload {
        ready,
        wanted,
        needed: wanted.min(1),
        observed: deployment
            .is_some_and(|d| observed(d.meta(), status.and_then(|s| s.observed_generation))),
    }
}

/// The node agents run once every node that should have one has a ready one.
pub fn agents(daemonset: Option<&DaemonSet>) -> Workload {
    let status = daemonset.and_then(|d| d.status.as_ref());
    let wanted = status.map_or(0, |s| s.desired_number_scheduled);
    Workload {
        ready: status.map_or(0, |s| s.number_ready),
        wanted,
        needed: wanted,
        observed: daemonset
            .is_some_and(|d| observed(d.meta(), status.and_then(|s| s.observed_generation))),
    }
}

/// The line that says what is still not ready after `timeout`, and where to look.
pub fn not_ready(
    namespace: &str,
    timeout: Duration,
    coordinator: Workload,
    agents: Workload,
) -> String {
    let mut waiting = Vec::new();
    let mut look = Vec::new();
    if !coordinator.is_ready() {
        waiting.push(format!("the coordinator is {}", coordinator.count()));
        look.push(format!(
            "`kubectl -n {namespace} describe deployment {COORDINATOR}`"
        ));
    }
    if !agents.is_ready() {
        waiting.push(format!("the node agents are {}", agents.count()));
        look.push(format!(
            "`kubectl -n {namespace} describe daemonset {NODE_AGENT}`"
        ));
    }
    format!(
        "Ferry is not ready after {}: {}; look with {}",
        humantime::format_duration(timeout),
        waiting.join(" and "),
        look.join(" and ")
    )
}

/// Waits until the coordinator and every node agent are ready, printing their counts when
/// they change; fails after `timeout`, saying what is not ready.
pub async fn until_ready(
    client: &Client,
    namespace: &str,
    timeout: Duration,
) -> Result<(Workload, Workload), CliError> {
    let deployments = Api::<Deployment>::namespaced(client.clone(), namespace);
    let daemonsets = Api::<DaemonSet>::namespaced(client.clone(), namespace);
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        let deployment = read(&deployments, "Deployment", COORDINATOR, namespace).await?;
        let daemonset = read(&daemonsets, "DaemonSet", NODE_AGENT, namespace).await?;
        let now = (coordinator(deployment.as_ref()), agents(daemonset.as_ref()));
        if last.is_none_or(|(c, _)| c != now.0) {
            say(&format!("waiting for the coordinator: {}", now.0.count()))?;
        }
        if last.is_none_or(|(_, a)| a != now.1) {
            say(&format!("waiting for the node agents: {}", now.1.count()))?;
        }
        if now.0.is_ready() && now.1.is_ready() {
            return Ok(now);
        }
        if Instant::now() >= deadline {
            return Err(InstallError::NotReady(not_ready(namespace, timeout, now.0, now.1)).into());
        }
        last = Some(now);
        tokio::time::sleep_until((Instant::now() + POLL).min(deadline)).await;
    }
}

async fn read<K>(
    api: &Api<K>,
    kind: &'static str,
    name: &str,
    namespace: &str,
) -> Result<Option<K>, InstallError>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name)
        .await
        .map_err(|source| InstallError::Read {
            kind,
            name: format!("{namespace}/{name}"),
            source,
        })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn deployment(generation: i64, status: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": COORDINATOR, "generation": generation},
            "spec": {"replicas": 1, "selector": {}, "template": {}},
            "status": status,
        }))
        .expect("a Deployment")
    }

    fn daemonset(generation: i64, status: serde_json::Value) -> DaemonSet {
        serde_json::from_value(json!({
            "metadata": {"name": NODE_AGENT, "generation": generation},
            "spec": {"selector": {}, "template": {}},
            "status": status,
        }))
        .expect("a DaemonSet")
    }

    #[test]
    fn the_coordinator_is_ready_with_one_ready_replica_of_its_latest_spec() {
        let cases = [
            ("missing", None, (0, false)),
            ("new", Some(deployment(1, json!({}))), (0, false)),
            (
                "ready",
                Some(deployment(
                    1,
                    json!({"observedGeneration": 1, "readyReplicas": 1}),
                )),
                (1, true),
            ),
            (
                "available",
                Some(deployment(
                    1,
                    json!({"observedGeneration": 1, "availableReplicas": 1}),
                )),
                (1, true),
            ),
            (
                "starting",
                Some(deployment(
                    1,
                    json!({"observedGeneration": 1, "replicas": 1}),
                )),
                (0, false),
            ),
            (
                "ready before the new spec was seen",
                Some(deployment(
                    2,
                    json!({"observedGeneration": 1, "readyReplicas": 1}),
                )),
                (1, false),
            ),
        ];
        for (name, deployment, (ready, is_ready)) in cases {
            let workload = coordinator(deployment.as_ref());
            assert_eq!((workload.ready, workload.wanted), (ready, 1), "{name}");
            assert_eq!(workload.is_ready(), is_ready, "{name}");
        }
    }

    #[test]
    fn the_agents_are_ready_when_every_scheduled_one_is() {
        let status = |observed: i64, desired: i32, ready: i32| {
            json!({"observedGeneration": observed, "desiredNumberScheduled": desired,
                   "numberReady": ready, "currentNumberScheduled": desired,
                   "numberMisscheduled": 0})
        };
        let cases = [
            ("missing", None, (0, 0, false)),
            (
                "not seen yet",
                Some(daemonset(
                    1,
                    json!({"desiredNumberScheduled": 0, "numberReady": 0,
                    "currentNumberScheduled": 0, "numberMisscheduled": 0}),
                )),
                (0, 0, false),
            ),
            (
                "one of two",
                Some(daemonset(1, status(1, 2, 1))),
                (1, 2, false),
            ),
            (
                "two of two",
                Some(daemonset(1, status(1, 2, 2))),
                (2, 2, true),
            ),
            (
                "no nodes",
                Some(daemonset(1, status(1, 0, 0))),
                (0, 0, true),
            ),
            (
                "old spec",
                Some(daemonset(3, status(2, 2, 2))),
                (2, 2, false),
            ),
        ];
        for (name, daemonset, (ready, wanted, is_ready)) in cases {
            let workload = agents(daemonset.as_ref());
            assert_eq!((workload.ready, workload.wanted), (ready, wanted), "{name}");
            assert_eq!(workload.is_ready(), is_ready, "{name}");
        }
    }

    #[test]
    fn a_timeout_names_what_is_not_ready_and_where_to_look() {
        let ready = Workload {
            ready: 1,
            wanted: 1,
            needed: 1,
            observed: true,
        };
        let starting = Workload { ready: 0, ..ready };
        let agents = Workload {
            ready: 1,
            wanted: 2,
            needed: 2,
            observed: true,
        };
        let second = Duration::from_secs(1);
        assert_eq!(
            not_ready("ferry", second, starting, ready),
            "Ferry is not ready after 1s: the coordinator is 0/1 ready; look with \
             `kubectl -n ferry describe deployment ferry-coordinator`"
        );
        assert_eq!(
            not_ready("backup", Duration::from_secs(300), starting, agents),
            "Ferry is not ready after 5m: the coordinator is 0/1 ready and the node agents are \
             1/2 ready; look with `kubectl -n backup describe deployment ferry-coordinator` and \
             `kubectl -n backup describe daemonset ferry-node-agent`"
        );
    }
}
