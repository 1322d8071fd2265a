//! The shipped manifests beyond `deploy/base`: each overlay renders with `kubectl kustomize`
//! into objects that parse and say what the overlay is for, and the monitoring component's
//! alert rules pass `promtool check rules` and their unit tests (`promtool test rules`), which
//! fire and clear every alert from synthetic series.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, PodSpec};
use kube::api::DynamicObject;
use serde::Deserialize;
use serde_json::Value;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Runs a command and returns its stdout, failing the test with its output if it fails.
fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("run {command:?}: {err}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{command:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The objects `kubectl kustomize` renders from the overlay `name`.
fn rendered(name: &str) -> Vec<DynamicObject> {
    let dir = deploy().join("overlays").join(name);
    // kubectl is not in Debian's archive: scripts/install-test-deps.sh warns when it is missing.
    let text = run(Command::new("kubectl").arg("kustomize").arg(&dir));
    serde_yaml::Deserializer::from_str(&text)
        .map(|document| {
            let object = DynamicObject::deserialize(document)
                .unwrap_or_else(|err| panic!("{name}: an object that does not parse: {err}"));
            assert!(object.types.is_some(), "{name}: an object without a kind");
            object
        })
        .collect()
}

fn kind_of(object: &DynamicObject) -> &str {
    object
        .types
        .as_ref()
        .map_or("", |types| types.kind.as_str())
}

/// The one object of `kind` named `name`, as the typed `K`.
fn the<K: serde::de::DeserializeOwned>(objects: &[DynamicObject], kind: &str, name: &str) -> K {
    let found: Vec<&DynamicObject> = objects
        .iter()
        .filter(|o| kind_of(o) == kind && o.metadata.name.as_deref() == Some(name))
        .collect();
    assert_eq!(found.len(), 1, "{kind} {name} among {objects:#?}");
    let value = serde_json::to_value(found[0]).expect("an object as JSON");
    serde_json::from_value(value).unwrap_or_else(|err| panic!("{kind} {name}: {err}"))
}

/// Every object Ferry's base installs, and the CRDs, are in the overlay too.
fn holds_the_base(objects: &[DynamicObject]) {
    let _: Deployment = the(objects, "Deployment", "ferry-coordinator");
    let _: DaemonSet = the(objects, "DaemonSet", "ferry-node-agent");
    let crds = objects
        .iter()
        .filter(|o| kind_of(o) == "CustomResourceDefinition")
        .count();
    assert_eq!(crds, 9, "the CRDs");
}

#[test]
fn the_s3_overlay_makes_a_location_and_its_credentials_secret() {
    let objects = rendered("s3");
    holds_the_base(&objects);
    let location: Value = the(&objects, "BackupStorageLocation", "default");
    assert_eq!(location["spec"]["provider"], "s3", "{location}");
    assert_eq!(location["spec"]["default"], true, "{location}");
    let credential = &location["spec"]["credential"];
    // kustomize folds long data; the API server's base64 decoding skips the line breaks.
    let secret: Value = the(&objects, "Secret", credential["name"].as_str().unwrap());
    let key = credential["key"].as_str().unwrap();
    let folded = secret["data"][key].as_str().expect("the credentials key");
    let unfolded: String = folded.split_whitespace().collect();
    let file = BASE64.decode(unfolded).expect("base64");
    let file = String::from_utf8(file).unwrap();
    assert!(
        file.contains("[default]") && file.contains("aws_access_key_id"),
        "{file}"
    );
}

/// The one volume of `spec` that is NFS, and where the first container mounts it.
fn nfs_mount(spec: &PodSpec) -> (String, String) {
    let volume = spec
        .volumes
        .iter()
        .flatten()
        .find(|volume| volume.nfs.is_some())
        .expect("an NFS volume");
    let mount = spec.containers[0]
        .volume_mounts
        .iter()
        .flatten()
        .find(|mount| mount.name == volume.name)
        .expect("the NFS volume mounted");
    let nfs = volume.nfs.as_ref().unwrap();
    (
        format!("{}:{}", nfs.server, nfs.path),
        mount.mount_path.clone(),
    )
}

#[test]
fn the_filesystem_nfs_overlay_mounts_one_share_at_the_locations_path_everywhere() {
    let objects = rendered("filesystem-nfs");
    holds_the_base(&objects);
    let coordinator: Deployment = the(&objects, "Deployment", "ferry-coordinator");
    let agents: DaemonSet = the(&objects, "DaemonSet", "ferry-node-agent");
    let in_coordinator = nfs_mount(&coordinator.spec.unwrap().template.spec.unwrap());
    let in_agents = nfs_mount(&agents.spec.unwrap().template.spec.unwrap());
    assert_eq!(in_coordinator, in_agents);
    let location: Value = the(&objects, "BackupStorageLocation", "default");
    assert_eq!(location["spec"]["provider"], "filesystem", "{location}");
    assert_eq!(location["spec"]["path"], in_agents.1.as_str(), "{location}");
}

fn rules_file() -> PathBuf {
    deploy().join("monitoring/rules/ferry.rules.yaml")
}

#[test]
fn the_monitoring_overlay_adds_the_rules_monitors_and_dashboard() {
    let objects = rendered("monitoring");
    holds_the_base(&objects);
    let monitors: Vec<&DynamicObject> = objects
        .iter()
        .filter(|o| kind_of(o) == "PodMonitor")
        .collect();
    assert_eq!(monitors.len(), 2, "{monitors:#?}");
    let rule = objects
        .iter()
        .find(|o| kind_of(o) == "PrometheusRule")
        .expect("a PrometheusRule");
    let file: Value =
        serde_yaml::from_str(&std::fs::read_to_string(rules_file()).unwrap()).unwrap();
    assert_eq!(
        rule.data["spec"]["groups"], file["groups"],
        "the PrometheusRule holds the rule file's groups"
    );
    let dashboard = objects
        .iter()
        .filter(|o| kind_of(o) == "ConfigMap")
        .find(|o| {
            o.metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key("grafana_dashboard"))
        })
        .expect("the dashboard's ConfigMap");
    let dashboard: ConfigMap =
        serde_json::from_value(serde_json::to_value(dashboard).unwrap()).expect("a ConfigMap");
    let json = &dashboard.data.unwrap()["ferry.json"];
    let parsed: Value = serde_json::from_str(json).expect("the dashboard is JSON");
    assert!(parsed["panels"].as_array().is_some_and(|p| !p.is_empty()));
}

#[test]
fn promtool_checks_the_rules_and_their_unit_tests_fire_and_clear_every_alert() {
    run(Command::new("promtool")
        .args(["check", "rules"])
        .arg(rules_file()));
    let tests = deploy().join("monitoring/rules/ferry.rules.test.yaml");
    run(Command::new("promtool").args(["test", "rules"]).arg(&tests));
    // Each alert is expected to fire in one unit test and to be quiet in another.
    let rules: Value =
        serde_yaml::from_str(&std::fs::read_to_string(rules_file()).unwrap()).unwrap();
    let tests: Value = serde_yaml::from_str(&std::fs::read_to_string(&tests).unwrap()).unwrap();
    let checks: Vec<&Value> = tests["tests"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|test| test["alert_rule_test"].as_array().into_iter().flatten())
        .collect();
    let alerts = rules["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|group| group["rules"].as_array().into_iter().flatten())
        .filter_map(|rule| rule["alert"].as_str());
    for alert in alerts {
        let expected = |firing: bool| {
            checks.iter().any(|check| {
                let fired = check["exp_alerts"]
                    .as_array()
                    .is_some_and(|a| !a.is_empty());
                check["alertname"] == alert && fired == firing
            })
        };
        assert!(expected(true), "no unit test fires {alert}");
        assert!(expected(false), "no unit test sees {alert} quiet");
    }
}
