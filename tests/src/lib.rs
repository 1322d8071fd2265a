//! Support for Ferry's integration tests: scratch directories, test data and its comparison, the restic CLI, the
//! test S3 server started by `scripts/test-services.sh` and a fault-injecting front for it,
//! an in-process Kubernetes API server, a cluster harness around it, builders for the
//! objects that tests create, a real Prometheus that scrapes them, and what the benchmark
//! binaries share.

pub mod apiserver;
pub mod bench;
pub mod fault;
pub mod fixtures;
pub mod harness;
pub mod proc;
pub mod prometheus;
pub mod restic;
pub mod s3;
pub mod scratch;
pub mod tree;
