//! Leader election: of two coordinators only the one that holds the Lease runs controllers, and
//! the other takes over when the leader stops.

use std::time::Duration;

use ferry_shared::crd::{Backup, OperationPhase};
use ferry_tests::fixtures;
use ferry_tests::harness::Cluster;
use k8s_openapi::api::coordination::v1::Lease;

use crate::coordinator_program;

#[tokio::test(flavor = "multi_thread")]
async fn only_the_leader_runs_controllers_and_a_successor_takes_over() {
    let mut cluster = Cluster::start().await;
    let lease_args = |identity: &'static str| {
        [
            "--leader-elect",
            "--lease-duration",
            "3s",
            "--identity",
            identity,
        ]
    };
    let first = cluster
        .start_coordinator(coordinator_program(), &lease_args("first"))
        .pid();
    let leases = cluster.api::<Lease>();
    let holder = |name: &'static str| {
        move |lease: &Lease| {
            lease
                .spec
                .as_ref()
                .and_then(|spec| spec.holder_identity.as_deref())
                == Some(name)
        }
    };
    cluster
        .wait_for(
            &leases,
            "ferry-coordinator",
            "held by first",
            holder("first"),
        )
        .await;
    cluster.start_coordinator(coordinator_program(), &lease_args("second"));
    let waiting = tokio::time::Instant::now();
    while !cluster
        .coordinator()
        .log()
        .contains("waiting for the leader Lease")
    {
        assert!(
            waiting.elapsed() < ferry_tests::harness::DEADLINE,
            "{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The standby runs no controllers until it leads.
    assert!(!cluster.coordinator().log().contains("coordinator started"));

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    cluster
        .wait_for(
            &leases,
            "ferry-coordinator",
            "held by second",
            holder("second"),
        )
        .await;
    fixtures::backup("after-handover")
        .location("missing")
        .create(&cluster)
        .await;
    let backup = cluster.wait_finished::<Backup>("after-handover").await;
    assert_eq!(
        backup.phase(),
        OperationPhase::FailedValidation,
        "the new leader's controllers run"
    );
    assert!(cluster.coordinator().log().contains("became the leader"));
}
