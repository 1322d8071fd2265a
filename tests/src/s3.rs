//! The test S3 servers (moto) that `scripts/test-services.sh start` runs on 127.0.0.1: one that
//! checks no credentials, one that checks signatures, and a TLS front of the first.

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

/// An S3 endpoint that checks signatures (a second moto, with authentication on), with a key
/// it accepts for every S3 action and a bucket that key may use. A request signed with another
/// secret gets 403 `SignatureDoesNotMatch`; one with an unknown key ID, 403 `InvalidAccessKeyId`.
#[derive(Clone, Debug)]
pub struct AuthS3 {
    pub endpoint: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// An existing bucket, shared by every test: tests keep to prefixes of their own.
    pub bucket: String,
}

/// A variable that `scripts/test-services.sh` writes to `target/test-services/s3.env`.
fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run the tests through scripts/test.sh, \
             or start scripts/test-services.sh and export what it writes to \
             target/test-services/s3.env"
        )
    })
}

/// The running S3 server that checks signatures, from the `FERRY_TEST_S3_AUTH_*` variables.
pub fn auth() -> AuthS3 {
    AuthS3 {
        endpoint: var("FERRY_TEST_S3_AUTH_ENDPOINT"),
        access_key_id: var("FERRY_TEST_S3_AUTH_ACCESS_KEY_ID"),
        secret_access_key: var("FERRY_TEST_S3_AUTH_SECRET_ACCESS_KEY"),
        bucket: var("FERRY_TEST_S3_AUTH_BUCKET"),
    }
}

/// The TLS front of the test S3 server (the same buckets, over https), whose certificate, for
/// 127.0.0.1 and localhost, a test CA made when the test services started has signed.
#[derive(Clone, Debug)]
pub struct TlsS3 {
    /// `https://127.0.0.1:<port>`.
    pub endpoint: String,
    /// The PEM file of the CA that signed the front's certificate.
    pub ca: std::path::PathBuf,
    /// The PEM file of a CA that signed nothing the front shows.
    pub other_ca: std::path::PathBuf,
}

impl TlsS3 {
    /// The PEM text of the CA that signed the front's certificate.
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(&self.ca)
            .unwrap_or_else(|err| panic!("read {}: {err}", self.ca.display()))
    }
}

/// The running TLS front, from the `FERRY_TEST_S3_TLS_*` variables.
pub fn tls() -> TlsS3 {
    TlsS3 {
        endpoint: var("FERRY_TEST_S3_TLS_ENDPOINT"),
        ca: var("FERRY_TEST_S3_TLS_CA").into(),
        other_ca: var("FERRY_TEST_S3_TLS_OTHER_CA").into(),
    }
}
