//! Leader election on a coordination.k8s.io Lease: take it before the controllers start, renew
//! it every third of its duration, and report when it is lost. Every write carries the
//! resourceVersion it was based on, so two replicas can never both take it.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, PostParams};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub duration: Duration,
}

/// Whether `identity` may take `lease` at `now`: it is free, already its own, or expired.
pub fn may_take(lease: &LeaseSpec, identity: &str, now: Timestamp) -> bool {
    let holder = lease.holder_identity.as_deref().unwrap_or_default();
    if holder.is_empty() || holder == identity {
        return true;
    }
    let duration = SignedDuration::from_secs(i64::from(lease.lease_duration_seconds.unwrap_or(0)));
    lease
        .renew_time
        .as_ref()
        .and_then(|renewed| renewed.0.checked_add(duration).ok())
        .is_none_or(|expires| expires < now)
}

fn held_by(settings: &LeaseSettings, acquired: Option<MicroTime>) -> LeaseSpec {
    let now = MicroTime(Timestamp::now());
    LeaseSpec {
        holder_identity: Some(settings.identity.clone()),
        lease_duration_seconds: Some(
            i32::try_from(settings.duration.as_secs()).unwrap_or(i32::MAX),
        ),
        acquire_time: Some(acquired.unwrap_or_else(|| now.clone())),
        renew_time: Some(now),
        ..LeaseSpec::default()
    }
}

/// One attempt to take or renew the Lease; true when this replica holds it afterwards.
async fn try_hold(api: &Api<Lease>, settings: &LeaseSettings) -> Result<bool, kube::Error> {
    let Some(mut lease) = api.get_opt(&settings.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(settings.name.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(held_by(settings, None)),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(err) => Err(err),
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    if !may_take(&spec, &settings.identity, Timestamp::now()) {
        return Ok(false);
    }
    let ours = spec.holder_identity.as_deref() == Some(settings.identity.as_str());
    lease.spec = Some(held_by(
        settings,
        if ours { spec.acquire_time } else { None },
    ));
    match api
        .replace(&settings.name, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(err) => Err(err),
    }
}

/// Waits until this replica holds the Lease, then keeps renewing it in the background; the
/// returned token is cancelled when the Lease is lost.
pub async fn acquire(
    client: Client,
    settings: LeaseSettings,
    shutdown: &CancellationToken,
) -> Option<CancellationToken> {
    let api = Api::<Lease>::namespaced(client, &settings.namespace);
    let retry = settings.duration / 3;
    info!(lease = %settings.name, identity = %settings.identity, "waiting for the leader Lease");
    loop {
        match try_hold(&api, &settings).await {
            Ok(true) => break,
            Ok(false) => {}
            Err(err) => warn!(%err, "cannot take the leader Lease"),
        }
        tokio::select! {
            () = tokio::time::sleep(retry) => {}
            () = shutdown.cancelled() => return None,
        }
    }
    info!(lease = %settings.name, "became the leader");
    let lost = CancellationToken::new();
    let signal = lost.clone();
    let shutdown = shutdown.clone();
    // Leadership ends well before another replica may take the Lease: at two thirds of its
    // duration without a renewal, each renewal itself bounded by the retry period.
    let renew_deadline = settings.duration * 2 / 3;
    tokio::spawn(async move {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = tokio::time::sleep(retry) => {}
                () = shutdown.cancelled() => {
                    release(&api, &settings).await;
                    return;
                }
            }
            match tokio::time::timeout(retry, try_hold(&api, &settings)).await {
                Ok(Ok(true)) => last_renewal = tokio::time::Instant::now(),
                Ok(Ok(false)) => {
                    warn!(lease = %settings.name, "another replica took the leader Lease");
                    signal.cancel();
                    return;
                }
                Ok(Err(err)) => warn!(%err, "cannot renew the leader Lease"),
                Err(_) => warn!("renewing the leader Lease timed out"),
            }
            if last_renewal.elapsed() >= renew_deadline {
                signal.cancel();
                return;
            }
        }
    });
    Some(lost)
}

/// Gives the Lease up on a clean stop, so that a successor need not wait for it to expire.
async fn release(api: &Api<Lease>, settings: &LeaseSettings) {
    if let Ok(Some(mut lease)) = api.get_opt(&settings.name).await {
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() == Some(settings.identity.as_str()) {
            spec.holder_identity = None;
            spec.renew_time = None;
            if let Err(err) = api
                .replace(&settings.name, &PostParams::default(), &lease)
                .await
            {
                warn!(%err, "cannot release the leader Lease");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renewed_secs_ago: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(
                Timestamp::now() - SignedDuration::from_secs(renewed_secs_ago),
            )),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_lease_is_taken_when_free_own_or_expired() {
        let now = Timestamp::now();
        assert!(may_take(&lease(None, 0), "a", now));
        assert!(may_take(&lease(Some("a"), 0), "a", now));
        assert!(!may_take(&lease(Some("b"), 5), "a", now));
        assert!(may_take(&lease(Some("b"), 30), "a", now));
    }
}
