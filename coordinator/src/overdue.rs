//! The transfers of a Backup or Restore as their owner sees them: each stopped once it runs
//! past its time, then all summed. A transfer's clock starts when a node agent claims it, or
//! when it is created if none has yet (its node may be gone, or its pod never scheduled). Past
//! the limit its resource is deleted, which makes the node agent cancel it, and it counts as
//! failed.

use std::time::Duration;

use ferry_shared::crd::{PodVolumePhase, PodVolumeTransfer};
use ferry_shared::time::{after, until};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams};
use tracing::warn;

use crate::plan::{Aggregate, TransferView, aggregate, union};

/// A transfer as its owner's sum sees it.
fn view<K: PodVolumeTransfer>(transfer: &K) -> TransferView {
    let status = transfer.status().cloned().unwrap_or_default();
    let pod = transfer.pod();
    TransferView {
        description: format!(
            "volume {} of pod {}/{}",
            transfer.volume(),
            pod.namespace,
            pod.name
        ),
        phase: status.phase,
        progress: status.progress.unwrap_or_default(),
        message: status.message,
        warnings: status.warnings,
    }
}

/// The transfers still there, every volume stopped so far, their sum, and how long until the
/// next one is due.
pub struct Tally<K> {
    pub kept: Vec<K>,
    pub timed_out: Vec<String>,
    pub sum: Aggregate,
    pub next_deadline: Option<Duration>,
}

/// Stops the transfers past `limit`, then sums them with the `recorded` volumes stopped on
/// earlier passes, of `planned` created. `stopped_error` says what a stopped volume's error is.
pub async fn tally<K: PodVolumeTransfer>(
    api: &Api<K>,
    transfers: Vec<K>,
    limit: Duration,
    planned: u32,
    recorded: &[String],
    stopped_error: impl Fn(&str) -> String,
) -> Result<Tally<K>, kube::Error> {
    let mut kept = Vec::new();
    let mut stopped = Vec::new();
    let mut next_deadline: Option<Duration> = None;
    for transfer in transfers {
        let since = match transfer.phase() {
            PodVolumePhase::InProgress => transfer
                .status()
                .and_then(|status| status.start_timestamp.clone())
                .or_else(|| transfer.creation_timestamp()),
            PodVolumePhase::New => transfer.creation_timestamp(),
            PodVolumePhase::Completed | PodVolumePhase::Failed => None,
        };
        let Some(since) = since else {
            kept.push(transfer);
            continue;
        };
        let left = until(&after(&since, limit));
        if !left.is_zero() {
            next_deadline = Some(next_deadline.map_or(left, |soonest| soonest.min(left)));
            kept.push(transfer);
            continue;
        }
        let volume = transfer.volume_path();
        warn!(name = %transfer.name_any(), %volume, "transfer ran past its time; stopping it");
        match api
            .delete(&transfer.name_any(), &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(err) => return Err(err),
        }
        stopped.push(volume);
    }
    let timed_out = union(recorded.to_vec(), stopped);
    let errors: Vec<String> = timed_out.iter().map(|v| stopped_error(v)).collect();
    let views: Vec<TransferView> = kept.iter().map(view).collect();
    Ok(Tally {
        sum: aggregate(planned, &views, &errors),
        kept,
        timed_out,
        next_deadline,
    })
}
