//! `ferry uninstall`: removes what install made, and never the data in the storage locations.

use std::time::Duration;

use ferry_shared::crd::Backup;
use ferry_shared::names::{self, BACKUP_FINALIZER};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::apply::{Applier, is_not_found};
use super::{InstallError, manifests, say, wait};
use crate::cli::error::CliError;
use crate::cli::remove;

/// How often uninstall looks whether what it deleted is gone.
const POLL: Duration = Duration::from_millis(500);

/// What uninstall deletes itself, in order: the cluster-scoped objects of the manifests (the
/// namespace, which takes every namespaced object with it, and the cluster RBAC), then the
/// CRDs, which take every Ferry object left anywhere.
pub fn targets(objects: Vec<Value>) -> Vec<Value> {
    let cluster_scoped = objects
        .into_iter()
        .filter(|object| object.pointer("/metadata/namespace").is_none());
    let (crds, mut targets): (Vec<Value>, Vec<Value>) = cluster_scoped.partition(manifests::is_crd);
    targets.extend(crds);
    targets
}

/// The finalizers of a Backup without Ferry's, if it has Ferry's.
pub fn without_ferry_finalizer(finalizers: &[String]) -> Option<Vec<String>> {
    finalizers.iter().any(|f| f == BACKUP_FINALIZER).then(|| {
        finalizers
            .iter()
            .filter(|f| *f != BACKUP_FINALIZER)
            .cloned()
            .collect()
    })
}

/// Asks on the terminal whether to go on, unless `confirmed`; without a terminal, refuses.
pub fn confirm(confirmed: bool, namespace: &str) -> Result<(), CliError> {
    let question = format!(
        "This deletes namespace {namespace} (with the repository password's Secret), Ferry's \
         cluster RBAC and CRDs, and every Backup, Restore and Schedule object. The data in the \
         storage locations is kept. Uninstall Ferry?"
    );
    if confirmed || remove::confirmed(&question)? {
        Ok(())
    } else {
        Err(InstallError::Cancelled.into())
    }
}

/// Stops the coordinator: deletes its Deployment and waits until its pods are gone, since it
/// is what runs the Backups' finalizer.
pub async fn stop_coordinator(
    client: &Client,
    namespace: &str,
    timeout: Duration,
) -> Result<(), CliError> {
    let deployments = Api::<Deployment>::namespaced(client.clone(), namespace);
    match deployments
        .delete(wait::COORDINATOR, &DeleteParams::background())
        .await
    {
        Ok(_) => say(&format!(
            "deleted Deployment {namespace}/{}",
            wait::COORDINATOR
        ))?,
        Err(err) if is_not_found(&err) => {}
        Err(source) => {
            return Err(InstallError::Delete {
                kind: "Deployment".to_owned(),
                name: format!("{namespace}/{}", wait::COORDINATOR),
                source,
            }
            .into());
        }
    }
    let pods = Api::<Pod>::namespaced(client.clone(), namespace);
    let selector = format!("{}={}", names::label::APP_NAME, wait::COORDINATOR);
    let deadline = Instant::now() + timeout;
    loop {
        let list = pods.list(&ListParams::default().labels(&selector)).await;
        let running = list.map_err(|source| InstallError::List {
            what: "the coordinator's pods",
            source,
        })?;
        if running.items.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(InstallError::CoordinatorRunning {
                namespace: namespace.to_owned(),
                timeout,
            }
            .into());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Takes Ferry's finalizer off every Backup, so that deleting them keeps their data.
pub async fn release_backups(client: &Client) -> Result<(), CliError> {
    let backups = Api::<Backup>::all(client.clone());
    let list = match backups.list(&ListParams::default()).await {
        Ok(list) => list,
        Err(err) if is_not_found(&err) => return Ok(()),
        Err(source) => {
            return Err(InstallError::List {
                what: "Backups",
                source,
            }
            .into());
        }
    };
    let mut released = 0;
    for backup in list.items {
        let Some(finalizers) = without_ferry_finalizer(backup.finalizers()) else {
            continue;
        };
        let namespace = backup.namespace().unwrap_or_default();
        let patch = json!({"metadata": {"finalizers": finalizers}});
        Api::<Backup>::namespaced(client.clone(), &namespace)
            .patch(
                &backup.name_any(),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await
            .map_err(|source| InstallError::Release {
                name: format!("{namespace}/{}", backup.name_any()),
                source,
            })?;
        released += 1;
    }
    if released > 0 {
        say(&format!(
            "took the finalizer {BACKUP_FINALIZER} off {released} Backups, so their data stays"
        ))?;
    }
    Ok(())
}

/// Deletes the targets, saying what went.
pub async fn delete(applier: &mut Applier, targets: &[Value]) -> Result<(), CliError> {
    for target in targets {
        let what = format!("{} {}", manifests::kind(target), manifests::name(target));
        if applier.delete(target).await? {
            say(&format!("deleted {what}"))?;
        } else {
            say(&format!("{what} was not there"))?;
        }
    }
    Ok(())
}

/// Waits until every target is gone.
pub async fn until_gone(
    applier: &mut Applier,
    targets: &[Value],
    timeout: Duration,
) -> Result<(), CliError> {
    let deadline = Instant::now() + timeout;
    for target in targets {
        while applier.exists(target).await? {
            if Instant::now() >= deadline {
                return Err(InstallError::NotGone {
                    what: format!("{} {}", manifests::kind(target), manifests::name(target)),
                    timeout,
                }
                .into());
            }
            tokio::time::sleep(POLL).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uninstall_deletes_the_cluster_scoped_objects_and_the_crds_last() {
        let objects = vec![
            json!({"kind": "CustomResourceDefinition", "metadata": {"name": "backups.ferry.dev"}}),
            json!({"kind": "Namespace", "metadata": {"name": "ferry"}}),
            json!({"kind": "ServiceAccount", "metadata": {"name": "a", "namespace": "ferry"}}),
            json!({"kind": "ClusterRole", "metadata": {"name": "ferry-node-agent"}}),
            json!({"kind": "DaemonSet", "metadata": {"name": "a", "namespace": "ferry"}}),
            json!({"kind": "ClusterRoleBinding", "metadata": {"name": "ferry-node-agent"}}),
        ];
        let order: Vec<String> = targets(objects)
            .iter()
            .map(|o| format!("{} {}", manifests::kind(o), manifests::name(o)))
            .collect();
        assert_eq!(
            order,
            [
                "Namespace ferry",
                "ClusterRole ferry-node-agent",
                "ClusterRoleBinding ferry-node-agent",
                "CustomResourceDefinition backups.ferry.dev",
            ]
        );
    }

    #[test]
    fn only_ferrys_finalizer_is_taken_off() {
        let strings = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let cases: [(&[&str], Option<&[&str]>); 4] = [
            (&[], None),
            (&["other.io/x"], None),
            (&[BACKUP_FINALIZER], Some(&[])),
            (&["a/b", BACKUP_FINALIZER, "c/d"], Some(&["a/b", "c/d"])),
        ];
        for (finalizers, expected) in cases {
            let got = without_ferry_finalizer(&strings(finalizers));
            assert_eq!(got, expected.map(strings), "{finalizers:?}");
        }
    }
}
