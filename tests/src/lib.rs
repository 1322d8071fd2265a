//! Support for Ferry's integration tests: test data and its comparison, the restic CLI, and the
//! test S3 server started by `scripts/test-services.sh`.

pub mod restic;
pub mod s3;
pub mod tree;
