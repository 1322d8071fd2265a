//! A real Prometheus server (Debian's `prometheus`) that scrapes Ferry's processes every
//! second and evaluates rule files, for tests of the shipped alerts and dashboard against what
//! Ferry exports.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::harness::DEADLINE;

/// One process to scrape, as the shipped PodMonitors label it.
pub struct Target {
    /// `ferry-coordinator` or `ferry-node-agent`.
    pub job: &'static str,
    pub address: SocketAddr,
    /// The node the process runs on, for the `node` label.
    pub node: String,
}

/// A running Prometheus, killed when dropped.
pub struct Prometheus {
    child: Child,
    address: SocketAddr,
    client: reqwest::Client,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// The scrape configuration: each target a job of its own, scraped every second, keeping the
/// metrics' own labels (as the node agents' PodMonitor does with `honorLabels`).
fn config(targets: &[Target], rules: &[&Path]) -> String {
    let mut text = String::from(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nrule_files:\n",
    );
    for rule in rules {
        let _ = writeln!(text, "  - {}", rule.display());
    }
    text.push_str("scrape_configs:\n");
    for (i, target) in targets.iter().enumerate() {
        let _ = write!(
            text,
            "  - job_name: scrape-{i}\n    honor_labels: true\n    static_configs:\n      - targets: ['{}']\n        labels: {{job: {}, node: {}}}\n",
            target.address, target.job, target.node
        );
    }
    text
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
}

impl Prometheus {
    /// Starts Prometheus on `targets` with the rule files `rules`, and waits until it answers.
    pub async fn start(targets: &[Target], rules: &[&Path]) -> Self {
        let dir = tempfile::tempdir().expect("a directory for Prometheus");
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config(targets, rules)).expect("write prometheus.yml");
        let address = free_port();
        let log = dir.path().join("prometheus.log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("create the log"))
            .spawn()
            .expect("run prometheus: apt-get install prometheus (.ci/run installs it)");
        let prometheus = Self {
            child,
            address,
            client: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("a client"),
            log,
            _dir: dir,
        };
        prometheus.wait_ready().await;
        prometheus
    }

    async fn wait_ready(&self) {
        let started = tokio::time::Instant::now();
        let url = format!("http://{}/-/ready", self.address);
        while !self
            .client
            .get(&url)
            .send()
            .await
            .is_ok_and(|answer| answer.status().is_success())
        {
            assert!(
                started.elapsed() < DEADLINE,
                "Prometheus is not ready:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What Prometheus wrote to stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The `data` of an answer of the HTTP API at `path` with `query`, failing the test on an
    /// error answer.
    pub async fn api(&self, path: &str, query: &[(&str, String)]) -> Value {
        let answer: Value = self
            .client
            .get(format!("http://{}/api/v1/{path}", self.address))
            .query(query)
            .send()
            .await
            .unwrap_or_else(|err| panic!("ask Prometheus {path}: {err}"))
            .json()
            .await
            .unwrap_or_else(|err| panic!("Prometheus's answer to {path}: {err}"));
        assert_eq!(answer["status"], "success", "{path} {query:?}: {answer}");
        answer["data"].clone()
    }

    /// The series `expr` gives from `since` to now, one point a second.
    pub async fn range(&self, expr: &str, since: jiff::Timestamp) -> Vec<Value> {
        let query = [
            ("query", expr.to_owned()),
            ("start", since.as_second().to_string()),
            ("end", (jiff::Timestamp::now().as_second() + 1).to_string()),
            ("step", "1".to_owned()),
        ];
        let data = self.api("query_range", &query).await;
        data["result"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until `expr` gives a series now, and returns them.
    pub async fn wait_for(&self, expr: &str) -> Vec<Value> {
        let started = tokio::time::Instant::now();
        loop {
            let data = self.api("query", &[("query", expr.to_owned())]).await;
            match data["result"].as_array() {
                Some(series) if !series.is_empty() => return series.clone(),
                _ => {}
            }
            assert!(
                started.elapsed() < DEADLINE,
                "nothing for {expr}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
