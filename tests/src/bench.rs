//! What the benchmark binaries share: a test cluster with one namespace of workloads on one
//! node, and memory figures in MiB.

use std::path::PathBuf;

use crate::harness::Cluster;

/// The namespace of the measured workloads.
pub const WORKLOADS: &str = "bench";

/// The one node the workloads run on.
pub const NODE: &str = "node-a";

/// Starts a test cluster with the namespace [`WORKLOADS`], the node [`NODE`] and the default
/// storage location, whose repositories take `password`. Returns the cluster and the storage's
/// directory.
pub async fn cluster(password: &str) -> (Cluster, PathBuf) {
    let cluster = Cluster::start().await;
    cluster.create_namespace(WORKLOADS).await;
    cluster.add_node(NODE).await;
    let storage = cluster.create_default_storage(password).await;
    (cluster, storage)
}

/// A memory figure in KiB, as MiB.
pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
