//! The names that Ferry's parts, the restic CLI and users rely on: labels, annotations, field
//! managers, the repository Secret, the restore init container and the snapshot tags.

use sha2::{Digest, Sha256};

/// API group of every Ferry kind.
pub const API_GROUP: &str = "ferry.dev";
/// API version of every Ferry kind.
pub const API_VERSION: &str = "v1alpha1";

/// Labels on PodVolumeBackups, PodVolumeRestores and restored objects.
pub mod label {
    /// Name of the Backup, shortened by [`label_value`](super::label_value).
    pub const BACKUP_NAME: &str = "ferry.dev/backup-name";
    /// UID of the Backup.
    pub const BACKUP_UID: &str = "ferry.dev/backup-uid";
    /// Name of the Restore, shortened by [`label_value`](super::label_value).
    pub const RESTORE_NAME: &str = "ferry.dev/restore-name";
    /// UID of the Restore.
    pub const RESTORE_UID: &str = "ferry.dev/restore-uid";
    /// UID of the pod whose volume is transferred.
    pub const POD_UID: &str = "ferry.dev/pod-uid";
    /// UID of the PVC whose volume is transferred, when the volume is a PVC.
    pub const PVC_UID: &str = "ferry.dev/pvc-uid";
    /// Node whose agent does the transfer; each agent watches only its own.
    pub const NODE: &str = "ferry.dev/node";
    /// On a Backup: the Schedule that made it, shortened by [`label_value`](super::label_value).
    pub const SCHEDULE_NAME: &str = "ferry.dev/schedule-name";
    /// The application an object belongs to; on a node agent's Lease,
    /// [`NODE_AGENT_APP`](super::NODE_AGENT_APP), so the coordinator can list them.
    pub const APP_NAME: &str = "app.kubernetes.io/name";
}

/// Value of [`label::APP_NAME`] on the node agents' objects (their Leases included).
pub const NODE_AGENT_APP: &str = "ferry-node-agent";

/// The Lease, in the install namespace, that the node agent on `node` renews while it runs,
/// labelled [`label::APP_NAME`]=[`NODE_AGENT_APP`] and [`label::NODE`]=`<node>`.
pub fn node_agent_lease(node: &str) -> String {
    format!("{NODE_AGENT_APP}-{node}")
}

/// Annotations that users put on pods, and that Ferry puts on its objects.
pub mod annotation {
    /// On a pod: the comma-separated volumes to back up (opt-in).
    pub const BACKUP_VOLUMES: &str = "backup.ferry.dev/backup-volumes";
    /// Velero's spelling of [`BACKUP_VOLUMES`], honoured too.
    pub const VELERO_BACKUP_VOLUMES: &str = "backup.velero.io/backup-volumes";
    /// On a pod: the comma-separated volumes to leave out of an opt-out backup.
    pub const BACKUP_VOLUMES_EXCLUDES: &str = "backup.ferry.dev/backup-volumes-excludes";
    /// On a PodVolumeBackup of a PVC: the name of the PVC.
    pub const PVC_NAME: &str = "ferry.dev/pvc-name";
    /// On a Backup that sync brought from a storage location: the location's name. Such a
    /// Backup is never run; it records a backup that already exists.
    pub const SYNCED_FROM: &str = "ferry.dev/synced-from";
    /// On a node agent's Lease: the agent's version.
    pub const VERSION: &str = "ferry.dev/version";
}

/// The prefixes of the hook annotations on a pod, Ferry's spelling first, then Velero's, which
/// is honoured too. A key is `<prefix>/<field>`, such as `pre.hook.backup.ferry.dev/command`;
/// the first spelling whose `command` (for an init hook, `container-image`) a pod sets is the
/// one read.
pub mod hook {
    /// Exec hooks run before the pod's volumes are backed up: `container`, `command`,
    /// `on-error`, `timeout`. The last is Velero's older spelling.
    pub const BACKUP_PRE: &[&str] = &[
        "pre.hook.backup.ferry.dev",
        "pre.hook.backup.velero.io",
        "hook.backup.velero.io",
    ];
    /// Exec hooks run after the pod's volume backups ended, with the fields of [`BACKUP_PRE`].
    pub const BACKUP_POST: &[&str] = &["post.hook.backup.ferry.dev", "post.hook.backup.velero.io"];
    /// An init container added to the restored pod: `container-image`, `container-name`,
    /// `command`.
    pub const RESTORE_INIT: &[&str] =
        &["init.hook.restore.ferry.dev", "init.hook.restore.velero.io"];
    /// An exec hook run once the restored pod's data is back: `container`, `command`,
    /// `on-error`, `exec-timeout`, `wait-timeout`.
    pub const RESTORE_POST: &[&str] =
        &["post.hook.restore.ferry.dev", "post.hook.restore.velero.io"];
}

/// Finalizer on every Backup: its snapshots are forgotten and its objects removed from the
/// storage location before it goes.
pub const BACKUP_FINALIZER: &str = "ferry.dev/backup-data";

/// Server-side-apply field managers, one per binary.
pub mod field_manager {
    /// The coordinator, which owns the spec of PodVolumeBackups and PodVolumeRestores.
    pub const COORDINATOR: &str = "ferry-coordinator";
    /// The node agent, which owns the status of PodVolumeBackups and PodVolumeRestores.
    pub const NODE_AGENT: &str = "ferry-node-agent";
}

/// Keys of the tags recorded on every snapshot, as restic's `--tag key=value`.
pub mod tag {
    /// Name of the Backup.
    pub const BACKUP: &str = "backup";
    /// UID of the Backup.
    pub const BACKUP_UID: &str = "backup-uid";
    /// Name of the pod.
    pub const POD: &str = "pod";
    /// UID of the pod.
    pub const POD_UID: &str = "pod-uid";
    /// Namespace of the pod.
    pub const NAMESPACE: &str = "ns";
    /// Name of the volume in the pod.
    pub const VOLUME: &str = "volume";
    /// UID of the PVC, when the volume is a PVC.
    pub const PVC_UID: &str = "pvc-uid";
}

/// Host name recorded on every snapshot.
pub const SNAPSHOT_HOST: &str = "ferry";
/// Secret, in the install namespace, that holds the repository password.
pub const REPOSITORY_SECRET: &str = "ferry-repo-credentials";
/// Key of the repository password in [`REPOSITORY_SECRET`].
pub const REPOSITORY_PASSWORD_KEY: &str = "repository-password";
/// Init container that Ferry puts first in every restored pod, to hold the app until its volumes
/// are restored.
pub const RESTORE_WAIT_CONTAINER: &str = "restore-wait";
/// User and group the restore-wait container runs as: the image's non-root user. The node agent
/// gives the done-marker to them, so that the helper can remove it.
pub const RESTORE_HELPER_USER: u32 = 65532;

/// Longest value a label may have.
const LABEL_VALUE_MAX: usize = 63;
/// Hex characters of the SHA-256 appended to a shortened label value.
const HASH_SUFFIX_LEN: usize = 6;

/// A label value for `name`: `name` itself when it fits in 63 characters, else its first 57
/// characters followed by the first 6 hex characters of the SHA-256 of the whole name.
///
/// This is Velero's `GetValidName`, so that labels stay unique and look the same as Velero's.
pub fn label_value(name: &str) -> String {
    if name.len() <= LABEL_VALUE_MAX {
        return name.to_owned();
    }
    let head = &name[..name.floor_char_boundary(LABEL_VALUE_MAX - HASH_SUFFIX_LEN)];
    let digest = hex::encode(Sha256::digest(name.as_bytes()));
    format!("{head}{}", &digest[..HASH_SUFFIX_LEN])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_value_keeps_short_names_and_shortens_long_ones() {
        let a63 = "a".repeat(63);
        let a64 = "a".repeat(64);
        let b70 = "b".repeat(70);
        let long =
            "nightly-backup-of-the-production-namespace-with-a-very-long-name-20240101030000";
        // Suffixes from `printf %s NAME | sha256sum | cut -c1-6`.
        let cases = [
            ("", String::new()),
            ("abc", "abc".to_owned()),
            (a63.as_str(), a63.clone()),
            (a64.as_str(), format!("{}ffe054", "a".repeat(57))),
            (b70.as_str(), format!("{}b94440", "b".repeat(57))),
            (long, format!("{}341258", &long[..57])),
        ];
        for (name, want) in cases {
            let got = label_value(name);
            assert_eq!(got, want, "label_value({name:?})");
            assert!(got.len() <= LABEL_VALUE_MAX, "{got:?} is too long");
        }
    }

    #[test]
    fn label_value_never_splits_a_character() {
        let name = format!("{}é{}", "x".repeat(56), "y".repeat(10));
        let got = label_value(&name);
        assert_eq!(&got[..56], "x".repeat(56));
        assert_eq!(got.len(), 56 + HASH_SUFFIX_LEN);
    }
}
