//! Stopping transfers that run past their time. A transfer's clock starts when a node agent
//! claims it, or when it is created if none has yet (its node may be gone, or its pod never
//! scheduled). Past the limit its resource is deleted, which makes the node agent cancel it, and
//! it counts as failed.

use std::time::Duration;

use ferry_shared::crd::PodVolumePhase;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::warn;

use crate::context::{after, until};

/// What a transfer's clock needs to know of it.
pub struct Clock {
    pub phase: PodVolumePhase,
    pub started: Option<Time>,
    /// `<namespace>/<pod>/<volume>`.
    pub volume: String,
}

/// The transfers still kept, the volumes newly stopped, and how long until the next one is due.
pub struct Overdue<K> {
    pub kept: Vec<K>,
    pub stopped: Vec<String>,
    pub next_deadline: Option<Duration>,
}

pub async fn stop_overdue<K>(
    api: &Api<K>,
    transfers: Vec<K>,
    limit: Duration,
    clock: impl Fn(&K) -> Clock,
) -> Result<Overdue<K>, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut overdue = Overdue {
        kept: Vec::new(),
        stopped: Vec::new(),
        next_deadline: None,
    };
    for transfer in transfers {
        let Clock {
            phase,
            started,
            volume,
        } = clock(&transfer);
        let since = match phase {
            PodVolumePhase::InProgress => started.or_else(|| transfer.creation_timestamp()),
            PodVolumePhase::New => transfer.creation_timestamp(),
            PodVolumePhase::Completed | PodVolumePhase::Failed => None,
        };
        let Some(since) = since else {
            overdue.kept.push(transfer);
            continue;
        };
        let left = until(&after(&since, limit));
        if !left.is_zero() {
            overdue.next_deadline = Some(
                overdue
                    .next_deadline
                    .map_or(left, |soonest| soonest.min(left)),
            );
            overdue.kept.push(transfer);
            continue;
        }
        warn!(name = %transfer.name_any(), %volume, "transfer ran past its time; stopping it");
        match api
            .delete(&transfer.name_any(), &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(err) => return Err(err),
        }
        overdue.stopped.push(volume);
    }
    Ok(overdue)
}
