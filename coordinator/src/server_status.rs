//! The ServerStatusRequest controller: a New request gets this coordinator's version and start
//! time, and the node agents as their heartbeat Leases show them; an answered request is
//! deleted a minute after it was answered.
//!
//! Stages: list the Leases → sum them up ([`node_agents`], pure) → write the status → delete
//! when due.

use std::sync::Arc;
use std::time::Duration;

use ferry_shared::crd::{
    NodeAgentStatus, ServerStatusRequest, ServerStatusRequestPhase, ServerStatusRequestStatus,
};
use ferry_shared::names::{self, annotation, label};
use ferry_shared::time::now;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams};
use kube::runtime::controller::Action;

use crate::context::Context;
use crate::error::Error;

/// How long an answered request is kept.
const KEPT: Duration = Duration::from_secs(60);

pub async fn reconcile(
    request: Arc<ServerStatusRequest>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let processed = request
        .status
        .as_ref()
        .and_then(|status| status.processed_timestamp.as_ref())
        .map(|t| t.0);
    match next(request.phase(), processed, now().0) {
        Next::Answer => answer(&request, &ctx).await,
        Next::WaitFor(pause) => Ok(Action::requeue(pause)),
        Next::Delete => match ctx
            .api::<ServerStatusRequest>()
            .delete(&request.name_any(), &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(Action::await_change()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(Action::await_change()),
            Err(err) => Err(err.into()),
        },
    }
}

/// What to do with a request now.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    Answer,
    Delete,
    WaitFor(Duration),
}

/// A request is answered once, and kept for [`KEPT`] after it was.
fn next(phase: ServerStatusRequestPhase, processed: Option<Timestamp>, now: Timestamp) -> Next {
    let (ServerStatusRequestPhase::Processed, Some(processed)) = (phase, processed) else {
        return Next::Answer;
    };
    let left = processed
        .checked_add(KEPT)
        .map(|end| end.duration_since(now))
        .unwrap_or_default();
    if left.is_positive() {
        Next::WaitFor(Duration::try_from(left).unwrap_or(KEPT))
    } else {
        Next::Delete
    }
}

async fn answer(request: &ServerStatusRequest, ctx: &Context) -> Result<Action, Error> {
    let selector = format!("{}={}", label::APP_NAME, names::NODE_AGENT_APP);
    let leases = ctx
        .api::<Lease>()
        .list(&ListParams::default().labels(&selector))
        .await?;
    let processed = now();
    let status = ServerStatusRequestStatus {
        phase: ServerStatusRequestPhase::Processed,
        server_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        server_start_time: Some(ctx.started.clone()),
        processed_timestamp: Some(processed.clone()),
        node_agents: node_agents(&leases.items, processed.0),
    };
    ctx.apply_status(request, &status).await?;
    Ok(Action::requeue(KEPT))
}

/// The node agents as their Leases show them at `now`, by node (the Lease's name has it in
/// full; its label may be shortened). An agent is ready while it holds its Lease: a holder is
/// set and the last renewal is younger than the Lease's duration.
fn node_agents(leases: &[Lease], now: Timestamp) -> Vec<NodeAgentStatus> {
    let prefix = names::node_agent_lease("");
    let mut agents: Vec<NodeAgentStatus> = leases
        .iter()
        .filter_map(|lease| {
            let node = lease.name_any().strip_prefix(&prefix)?.to_owned();
            let spec = lease.spec.clone().unwrap_or_default();
            let held = spec
                .holder_identity
                .is_some_and(|holder| !holder.is_empty());
            let duration = SignedDuration::from_secs(i64::from(
                spec.lease_duration_seconds.unwrap_or_default(),
            ));
            let fresh = spec
                .renew_time
                .as_ref()
                .and_then(|renewed| renewed.0.checked_add(duration).ok())
                .is_some_and(|expires| expires > now);
            Some(NodeAgentStatus {
                node,
                version: lease.annotations().get(annotation::VERSION).cloned(),
                ready: held && fresh,
                last_seen: spec.renew_time.map(|renewed| Time(renewed.0)),
            })
        })
        .collect();
    agents.sort_by(|a, b| a.node.cmp(&b.node));
    agents
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).unwrap()
    }

    fn lease(node: &str, holder: Option<&str>, renewed: Option<i64>, duration: i32) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(names::node_agent_lease(node)),
                labels: Some([(label::NODE.to_owned(), node.to_owned())].into()),
                annotations: Some([(annotation::VERSION.to_owned(), "0.1.0".to_owned())].into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_owned),
                lease_duration_seconds: Some(duration),
                renew_time: renewed.map(|s| MicroTime(at(s))),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn a_request_is_answered_once_and_deleted_a_minute_later() {
        use ServerStatusRequestPhase::{New, Processed};
        let cases = [
            (New, None, 0, Next::Answer),
            (Processed, None, 0, Next::Answer),
            (
                Processed,
                Some(0),
                1,
                Next::WaitFor(Duration::from_secs(59)),
            ),
            (Processed, Some(0), 60, Next::Delete),
            (Processed, Some(0), 3600, Next::Delete),
        ];
        for (phase, processed, now, want) in cases {
            assert_eq!(
                next(phase, processed.map(at), at(now)),
                want,
                "{phase:?} {processed:?} at {now}"
            );
        }
    }

    #[test]
    fn an_agent_is_ready_while_it_holds_a_fresh_lease() {
        let now = at(100);
        let cases = [
            (lease("a", Some("a"), Some(95), 90), true),
            (lease("a", Some("a"), Some(10), 90), false),
            (lease("a", Some("a"), Some(11), 90), true),
            (lease("a", None, Some(95), 90), false),
            (lease("a", Some(""), Some(95), 90), false),
            (lease("a", Some("a"), None, 90), false),
        ];
        for (lease, ready) in cases {
            let agents = node_agents(std::slice::from_ref(&lease), now);
            assert_eq!(agents.len(), 1);
            assert_eq!(agents[0].ready, ready, "{:?}", lease.spec);
        }
    }

    #[test]
    fn agents_are_listed_by_node_with_version_and_last_renewal() {
        let mut stranger = lease("x", Some("x"), Some(99), 90);
        stranger.metadata.name = Some("ferry-coordinator".into());
        let leases = [
            lease("node-b", Some("node-b"), Some(99), 90),
            stranger,
            lease("node-a", None, Some(50), 90),
        ];
        let agents = node_agents(&leases, at(100));
        assert_eq!(
            agents,
            [
                NodeAgentStatus {
                    node: "node-a".into(),
                    version: Some("0.1.0".into()),
                    ready: false,
                    last_seen: Some(Time(at(50))),
                },
                NodeAgentStatus {
                    node: "node-b".into(),
                    version: Some("0.1.0".into()),
                    ready: true,
                    last_seen: Some(Time(at(99))),
                },
            ]
        );
    }
}
