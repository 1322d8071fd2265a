//! Listing, forgetting, pruning and checking. Ferry alone maintains its repositories: rustic
//! writes no locks, so a prune run by anyone else during a backup can delete unindexed data.

use std::collections::BTreeMap;

use rustic_core::repofile::SnapshotId;
use rustic_core::{CheckOptions, PruneOptions};
use serde::{Deserialize, Serialize};

use super::error::describe;
use super::{EngineError, Repository};

/// A snapshot as Ferry shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotInfo {
    pub id: String,
    /// RFC 3339.
    pub time: String,
    pub hostname: String,
    pub label: String,
    pub paths: Vec<String>,
    pub tags: BTreeMap<String, String>,
    pub parent: Option<String>,
}

/// What a prune found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PruneReport {
    pub packs_removed: u64,
    pub packs_repacked: u64,
    pub packs_kept: u64,
    pub bytes_removed: u64,
}

/// The errors a check found; empty when the repository is sound.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckReport {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

impl Repository {
    /// Every snapshot whose tags include all of `tags` (`key=value`), oldest first.
    pub fn snapshots(
        &self,
        tags: &BTreeMap<String, String>,
    ) -> Result<Vec<SnapshotInfo>, EngineError> {
        let wanted: Vec<String> = tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut snapshots = self
            .repo
            .get_matching_snapshots(|snapshot| wanted.iter().all(|tag| snapshot.tags.contains(tag)))
            .map_err(self.read_error("the snapshots"))?;
        snapshots.sort_by(|a, b| a.time.cmp(&b.time));
        Ok(snapshots
            .into_iter()
            .map(|snapshot| SnapshotInfo {
                id: snapshot.id.to_hex().to_string(),
                time: snapshot.time.timestamp().to_string(),
                hostname: snapshot.hostname,
                label: snapshot.label,
                paths: snapshot.paths.iter().cloned().collect(),
                tags: snapshot
                    .tags
                    .iter()
                    .map(|tag| match tag.split_once('=') {
                        Some((key, value)) => (key.to_owned(), value.to_owned()),
                        None => (tag.clone(), String::new()),
                    })
                    .collect(),
                parent: snapshot.parent.map(|id| id.to_hex().to_string()),
            })
            .collect())
    }

    /// Removes the given snapshots (full IDs or unique prefixes). Their data stays until a prune.
    pub fn forget(&self, ids: &[String]) -> Result<(), EngineError> {
        let snapshots = self
            .repo
            .get_snapshots(ids)
            .map_err(|err| EngineError::Forget {
                cause: describe(&err),
            })?;
        let ids: Vec<SnapshotId> = snapshots.iter().map(|snapshot| snapshot.id).collect();
        self.repo
            .delete_snapshots(&ids)
            .map_err(|err| EngineError::Forget {
                cause: describe(&err),
            })
    }

    /// Prunes data no snapshot needs, in rustic's two-phase mode: packs are first marked for
    /// deletion and removed only by a later prune, so a backup running meanwhile loses nothing.
    pub fn prune(&self) -> Result<PruneReport, EngineError> {
        let error = |err: Box<rustic_core::RusticError>| EngineError::Prune {
            cause: describe(&err),
        };
        let options = PruneOptions::default();
        let plan = self.repo.prune_plan(&options).map_err(error)?;
        let stats = &plan.stats;
        let report = PruneReport {
            packs_removed: stats.packs.unused,
            packs_repacked: stats.packs.repack,
            packs_kept: stats.packs.keep,
            bytes_removed: stats.size_sum().remove,
        };
        self.repo.prune(&options, plan).map_err(error)?;
        Ok(report)
    }

    /// Checks the repository's structure, and with `read_data` every pack's contents.
    pub fn check(&self, read_data: bool) -> Result<CheckReport, EngineError> {
        let results = self
            .repo
            .check(CheckOptions::default().read_data(read_data))
            .map_err(|err| EngineError::Check {
                cause: describe(&err),
            })?;
        let mut report = CheckReport::default();
        // rustic does not export the level's type; its two variants are Warn and Error.
        for (level, error) in results.0 {
            if format!("{level:?}") == "Error" {
                report.errors.push(error.to_string());
            } else {
                report.warnings.push(error.to_string());
            }
        }
        Ok(report)
    }
}
