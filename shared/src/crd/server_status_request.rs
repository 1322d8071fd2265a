//! ServerStatusRequest: a client's question to the running coordinator about its version and
//! the node agents it knows of.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A request has no parameters.
#[allow(
    clippy::duplicated_attributes,
    reason = "each printcolumn(...) repeats keys such as type_ = \"string\""
)]
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "ferry.dev",
    version = "v1alpha1",
    kind = "ServerStatusRequest",
    namespaced,
    derive = "PartialEq",
    status = "ServerStatusRequestStatus",
    category = "ferry",
    doc = "A request for the coordinator's version and the state of the node agents.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Server Version",
        type_ = "string",
        json_path = ".status.serverVersion"
    )
)]
pub struct ServerStatusRequestSpec {}

/// The coordinator's answer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerStatusRequestStatus {
    /// Processed once answered. Missing means New.
    #[serde(default)]
    pub phase: ServerStatusRequestPhase,
    /// The coordinator's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
    /// When the coordinator that answered started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_start_time: Option<Time>,
    /// When the request was answered; it is deleted a minute later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processed_timestamp: Option<Time>,
    /// Every node agent that holds a Lease in the install namespace, by node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_agents: Vec<NodeAgentStatus>,
}

/// One node agent, as its Lease shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeAgentStatus {
    pub node: String,
    /// The agent's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Whether the agent holds its Lease: it renewed it within the Lease's duration and has
    /// not stopped.
    pub ready: bool,
    /// When the agent last renewed its Lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Time>,
}

/// Phase of a ServerStatusRequest. A missing or empty phase means New.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ServerStatusRequestPhase {
    /// Not yet answered by the coordinator.
    #[default]
    #[serde(alias = "")]
    New,
    /// The status is filled in.
    Processed,
}

impl ServerStatusRequest {
    /// The phase, New when the status or its phase is missing.
    pub fn phase(&self) -> ServerStatusRequestPhase {
        self.status.as_ref().map(|s| s.phase).unwrap_or_default()
    }
}
