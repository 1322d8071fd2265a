//! The test S3 server (moto) that `scripts/test-services.sh start` runs on 127.0.0.1.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// The endpoint of the running test S3 server, from `FERRY_TEST_S3_ENDPOINT`.
pub fn endpoint() -> String {
    std::env::var("FERRY_TEST_S3_ENDPOINT").unwrap_or_else(|_| {
        panic!(
            "FERRY_TEST_S3_ENDPOINT is not set: run the tests through scripts/test.sh, \
             or start scripts/test-services.sh and export what it prints"
        )
    })
}

/// Creates a new, empty bucket with a name unique to this test process and returns it.
pub fn new_bucket(endpoint: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let bucket = format!(
        "ferry-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let status = Command::new("curl")
        .args(["-sf", "-X", "PUT", "--noproxy", "*"])
        .arg(format!("{endpoint}/{bucket}"))
        .status()
        .expect("run curl");
    assert!(
        status.success(),
        "creating bucket {bucket} at {endpoint} failed"
    );
    bucket
}

/// Credentials moto accepts (it checks none).
pub const ACCESS_KEY_ID: &str = "ferry-test";
pub const SECRET_ACCESS_KEY: &str = "ferry-test-secret";
