//! The shipped monitoring (`deploy/monitoring`) against what Ferry exports: a real Prometheus
//! scrapes the coordinator and a node agent through a backup whose transfer waits out an outage
//! of the object store. It loads the alert rules and evaluates them without error, and every
//! query of the dashboard's panels returns data.

use std::path::Path;
use std::time::Duration;

use ferry_shared::crd::Backup;
use ferry_tests::fault::FaultyFront;
use ferry_tests::fixtures;
use ferry_tests::harness::{Cluster, DEADLINE, VolumeKind};
use ferry_tests::prometheus::{Prometheus, Target};
use ferry_tests::s3;
use ferry_tests::tree::make_rich_tree;
use serde_json::Value;

use crate::{NODE, PASSWORD, agent_program, completed, coordinator_program, create_s3_location};

const MONITORING: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/monitoring");

/// Each query of the dashboard's panels, those in rows too, as `(panel title, expression)`,
/// with Grafana's interval variables given values that suit a scrape a second.
fn panel_queries(panels: &Value) -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for panel in panels.as_array().into_iter().flatten() {
        let title = panel["title"].as_str().unwrap_or_default();
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                let expr = expr
                    .replace("$__rate_interval", "10s")
                    .replace("$__interval", "1s")
                    .replace("$__range", "10m");
                queries.push((title.to_owned(), expr));
            }
        }
        queries.extend(panel_queries(&panel["panels"]));
    }
    queries
}

fn dashboard_queries() -> Vec<(String, String)> {
    let path = Path::new(MONITORING).join("dashboards/ferry.json");
    let text = std::fs::read_to_string(&path).expect("read the dashboard");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let queries = panel_queries(&dashboard["panels"]);
    assert!(queries.len() >= 8, "too few panel queries: {queries:?}");
    queries
}

/// A backup of `shop/web` whose transfer is made while no node agent runs.
async fn a_backup_waiting_for_its_agent(cluster: &mut Cluster) {
    let (_, dirs) = cluster
        .create_pod("shop", "web", NODE, vec![("data", VolumeKind::EmptyDir)])
        .await;
    make_rich_tree(&dirs[0], 5);
    cluster.start_coordinator(coordinator_program(), &[]);
    fixtures::backup("watched")
        .namespaces(["shop"])
        .all_volumes()
        .create(cluster)
        .await;
    let started = tokio::time::Instant::now();
    while cluster.pvbs_of("watched").await.is_empty() {
        assert!(started.elapsed() < DEADLINE, "no transfer was made");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every rule group is loaded, and every rule has been evaluated without error.
async fn the_rules_evaluate(prometheus: &Prometheus) {
    let started = tokio::time::Instant::now();
    loop {
        let data = prometheus.api("rules", &[]).await;
        let rules: Vec<&Value> = data["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|group| group["rules"].as_array().into_iter().flatten())
            .collect();
        assert!(rules.len() >= 10, "too few rules loaded: {data}");
        let failed: Vec<&Value> = rules
            .iter()
            .copied()
            .filter(|r| r["health"] == "err")
            .collect();
        assert!(failed.is_empty(), "rules that fail: {failed:?}");
        if rules.iter().all(|rule| rule["health"] == "ok") {
            return;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "rules never evaluated: {data}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every Ferry metric that the rules and the dashboard name is one that Prometheus scraped.
async fn every_metric_named_is_exported(prometheus: &Prometheus) {
    let scraped = prometheus.api("label/__name__/values", &[]).await;
    let scraped: Vec<&str> = scraped
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let mut texts = vec![
        std::fs::read_to_string(Path::new(MONITORING).join("rules/ferry.rules.yaml")).unwrap(),
    ];
    texts.extend(dashboard_queries().into_iter().map(|(_, expr)| expr));
    for text in &texts {
        let names = text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|word| word.starts_with("ferry_"));
        for name in names {
            assert!(
                scraped.contains(&name),
                "{name} is not exported; scraped: {scraped:?}"
            );
        }
    }
}

/// Every panel query returns data between `since` and now, once the scrapes after the backup
/// are in.
async fn every_panel_has_data(prometheus: &Prometheus, since: jiff::Timestamp) {
    let started = tokio::time::Instant::now();
    loop {
        let mut empty = Vec::new();
        for (title, expr) in dashboard_queries() {
            if prometheus.range(&expr, since).await.is_empty() {
                empty.push(format!("{title}: {expr}"));
            }
        }
        if empty.is_empty() {
            return;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "panel queries without data:\n{}",
            empty.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_evaluates_the_rules_and_every_dashboard_query_has_data() {
    let began = jiff::Timestamp::now();
    let bucket = s3::new_bucket(&s3::endpoint());
    let front = FaultyFront::for_test_s3();
    let mut cluster = Cluster::start().await;
    cluster.create_repository_password(PASSWORD).await;
    create_s3_location(&cluster, &front.endpoint(), &bucket).await;
    cluster.add_node(NODE).await;
    cluster.create_namespace("shop").await;
    // A schedule, for its period; its backups take an empty namespace.
    cluster.create_namespace("quiet").await;
    fixtures::schedule("yearly", "0 0 1 1 *")
        .namespaces(["quiet"])
        .create(&cluster)
        .await;
    a_backup_waiting_for_its_agent(&mut cluster).await;

    // The transfer starts into an outage, and waits it out while Prometheus watches.
    front.outage(Duration::from_secs(30));
    cluster.start_agent(&agent_program(), NODE, &["--progress-interval", "200ms"]);
    let targets = [
        Target {
            job: "ferry-coordinator",
            address: cluster.coordinator().metrics_address(),
            node: NODE.to_owned(),
        },
        Target {
            job: "ferry-node-agent",
            address: cluster.agent(NODE).metrics_address(),
            node: NODE.to_owned(),
        },
    ];
    let rules = Path::new(MONITORING).join("rules/ferry.rules.yaml");
    let prometheus = Prometheus::start(&targets, &[&rules]).await;
    let running = prometheus
        .wait_for(r#"ferry_pod_volume_progress_bytes{kind="done", job="ferry-node-agent"}"#)
        .await;
    assert_eq!(running[0]["metric"]["operation"], "backup", "{running:?}");
    assert_eq!(running[0]["metric"]["node"], NODE, "{running:?}");

    completed::<Backup>(&cluster, "watched").await;
    prometheus
        .wait_for(r#"ferry_backup_last_successful_timestamp_seconds{schedule=""}"#)
        .await;
    the_rules_evaluate(&prometheus).await;
    every_metric_named_is_exported(&prometheus).await;
    every_panel_has_data(&prometheus, began).await;
}
