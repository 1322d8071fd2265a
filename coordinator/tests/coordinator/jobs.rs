//! Repository jobs: the coordinator runs each in a process of its own, which reports its result
//! and is stopped at its time and memory limits.

use std::fs;
use std::time::Duration;

use ferry_coordinator::jobs::{Job, JobError, JobRunner, Operation};
use ferry_shared::repository::{RepositoryConfig, RepositoryLocation, S3Location};
use ferry_shared::retry::{CountedRetries, retries_metric};
use ferry_tests::restic::{restic, succeed};

use crate::{PASSWORD, job_runner};

/// A temporary directory for repositories, and a runner of jobs with a minute each.
fn setup() -> (tempfile::TempDir, JobRunner) {
    let runner = job_runner(
        Duration::from_secs(60),
        CountedRetries(retries_metric().unwrap()),
    );
    (tempfile::tempdir().unwrap(), runner)
}

fn config(location: RepositoryLocation) -> RepositoryConfig {
    RepositoryConfig {
        location,
        password: PASSWORD.to_owned(),
        cache_dir: None,
        retry_budget: Duration::ZERO,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn repository_jobs_run_apart_and_report_their_result() {
    let (dir, runner) = setup();
    let local = |name: &str| RepositoryLocation::Local {
        path: dir.path().join(name),
    };
    let opened = runner
        .run(&Job {
            repository: config(local("repo")),
            operation: Operation::Open { create: true },
        })
        .await
        .unwrap();
    assert!(opened.contains("opens"), "{opened}");
    let password_file = dir.path().join("password");
    fs::write(&password_file, PASSWORD).unwrap();
    succeed(restic(dir.path().join("repo").to_str().unwrap(), &password_file).arg("snapshots"));

    let gone = runner
        .run(&Job {
            repository: config(local("gone")),
            operation: Operation::Forget {
                snapshot_ids: vec!["0123abcd".into()],
            },
        })
        .await
        .unwrap();
    assert!(gone.contains("nothing to forget"), "{gone}");
    let refused = runner
        .run(&Job {
            repository: config(local("gone")),
            operation: Operation::Open { create: false },
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, JobError::Failed(message) if message.contains("gone")),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repository_job_past_its_time_is_stopped() {
    let (_dir, runner) = setup();
    // An object store that accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_store = RepositoryLocation::S3(S3Location {
        endpoint: Some(format!("http://{}", silent.local_addr().unwrap())),
        bucket: "b".into(),
        access_key_id: Some("a".into()),
        secret_access_key: Some("s".into()),
        ..S3Location::default()
    });
    let stalled = JobRunner {
        timeout: Duration::from_secs(1),
        ..runner.clone()
    }
    .run(&Job {
        repository: config(silent_store),
        operation: Operation::Open { create: false },
    })
    .await
    .unwrap_err();
    assert!(matches!(stalled, JobError::TimedOut(_)), "{stalled}");
    assert!(
        stalled.to_string().contains("did not finish within 1s"),
        "{stalled}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repository_job_over_its_memory_limit_is_stopped() {
    let (dir, runner) = setup();
    let local = |name: &str| RepositoryLocation::Local {
        path: dir.path().join(name),
    };
    // Creating a key takes 32 MiB for its key derivation; 8 MiB is not enough.
    let starved = JobRunner {
        memory_limit: Some(8 << 20),
        ..runner
    }
    .run(&Job {
        repository: config(local("small")),
        operation: Operation::Open { create: true },
    })
    .await
    .unwrap_err();
    assert!(
        matches!(starved, JobError::OutOfMemory { limit } if limit == 8 << 20),
        "{starved}"
    );
    assert!(
        starved
            .to_string()
            .contains("raise --maintenance-memory-limit"),
        "{starved}"
    );
}
