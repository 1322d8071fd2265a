//! Schedules: a schedule makes Backups from its template, and a Restore can name the schedule
//! instead of a backup.

use ferry_shared::crd::{Backup, Restore, Schedule, SchedulePhase};
use ferry_shared::names::label;
use ferry_tests::fixtures;
use ferry_tests::harness::VolumeKind;
use ferry_tests::tree::make_rich_tree;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

use crate::{NODE, agent_program, completed, coordinator_program, shop_cluster};

#[tokio::test(flavor = "multi_thread")]
async fn a_schedule_makes_backups_from_its_template_and_a_restore_can_name_it() {
    let (mut cluster, _) = shop_cluster().await;
    let (_, dirs) = cluster
        .create_pod("shop", "web", NODE, vec![("data", VolumeKind::EmptyDir)])
        .await;
    make_rich_tree(&dirs[0], 3);
    cluster.start_agent(&agent_program(), NODE, &[]);
    cluster.start_coordinator(coordinator_program(), &[]);
    fixtures::schedule("nightly", "0 0 * * *")
        .namespaces(["shop"])
        .all_volumes()
        .create(&cluster)
        .await;
    let schedule = cluster
        .wait_for(
            &cluster.api::<Schedule>(),
            "nightly",
            "to make a backup",
            |s: &Schedule| {
                s.status
                    .as_ref()
                    .is_some_and(|status| status.last_backup.is_some())
            },
        )
        .await;
    assert_eq!(schedule.phase(), SchedulePhase::Enabled);
    // A new schedule backs up at once, for its latest due time; the next is a day away.
    let made = cluster
        .api::<Backup>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert_eq!(made.len(), 1);
    let name = made[0].name_any();
    assert!(
        name.starts_with("nightly-") && name.len() == "nightly-".len() + 14,
        "{name}"
    );
    assert_eq!(made[0].labels()[label::SCHEDULE_NAME], "nightly");
    let backup = completed::<Backup>(&cluster, &name).await;
    let finished = backup.status.unwrap().completion_timestamp.unwrap();
    // The schedule's period and its last success are read from the cluster, so they are
    // there again after a restart.
    let last_success = format!(
        "ferry_backup_last_successful_timestamp_seconds{{schedule=\"nightly\"}} {}",
        finished.0.as_second()
    );
    let metrics = cluster
        .coordinator()
        .metrics_showing(r#"ferry_schedule_period_seconds{schedule="nightly"} 86400"#)
        .await;
    assert!(metrics.contains(&last_success), "{metrics}");
    cluster.coordinator().terminate().await;
    cluster.start_coordinator(coordinator_program(), &[]);
    cluster.coordinator().metrics_showing(&last_success).await;
    cluster
        .api::<Schedule>()
        .patch(
            "nightly",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": true}})),
        )
        .await
        .unwrap();

    fixtures::restore("latest")
        .schedule("nightly")
        .map_namespace("shop", "shop-2")
        .create(&cluster)
        .await;
    cluster
        .wait_for(
            &Api::<Pod>::namespaced(cluster.client(), &cluster.scoped("shop-2")),
            "web",
            "restored",
            |_: &Pod| true,
        )
        .await;
    let restore = cluster.api::<Restore>().get("latest").await.unwrap();
    assert_eq!(
        restore.status.unwrap().backup_name.as_deref(),
        Some(name.as_str())
    );
}
