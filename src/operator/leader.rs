//! Lease-based leader election: one replica runs the controllers; the others wait, ready to
//! take over when the leader's lease expires.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

use crate::controller::Error;

/// Lease settings.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This replica's identity (the pod name).
    pub identity: String,
    /// How long a lease lasts without renewal before another replica may take it.
    pub duration: Duration,
    /// How often the leader renews, and followers retry.
    pub retry: Duration,
}

/// Whether `lease` may be taken by `identity` at `now`: free, expired, or already ours.
pub fn claimable(lease: &LeaseSpec, identity: &str, now: jiff::Timestamp) -> bool {
    let holder = lease.holder_identity.as_deref().unwrap_or_default();
    if holder.is_empty() || holder == identity {
        return true;
    }
    let duration = i64::from(lease.lease_duration_seconds.unwrap_or(15));
    let renewed = lease.renew_time.as_ref().or(lease.acquire_time.as_ref()).map(|t| t.0);
    renewed.is_none_or(|r| now.as_second() >= r.as_second() + duration)
}

fn spec(cfg: &LeaseConfig, acquired: Option<MicroTime>, transitions: i32) -> LeaseSpec {
    let now = MicroTime(jiff::Timestamp::now());
    LeaseSpec {
        holder_identity: Some(cfg.identity.clone()),
        lease_duration_seconds: Some(cfg.duration.as_secs() as i32),
        acquire_time: Some(acquired.unwrap_or_else(|| now.clone())),
        renew_time: Some(now),
        lease_transitions: Some(transitions),
        ..Default::default()
    }
}

/// One attempt to take or renew the lease. Ok(true) when this replica holds it afterwards.
/// Replace carries the resourceVersion read, so two replicas cannot both win.
pub async fn try_acquire(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<bool, Error> {
    let Some(mut lease) = api.get_opt(&cfg.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta { name: Some(cfg.name.clone()), ..Default::default() },
            spec: Some(spec(cfg, None, 0)),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e.into()),
        };
    };
    let current = lease.spec.clone().unwrap_or_default();
    if !claimable(&current, &cfg.identity, jiff::Timestamp::now()) {
        return Ok(false);
    }
    let ours = current.holder_identity.as_deref() == Some(cfg.identity.as_str());
    let transitions = current.lease_transitions.unwrap_or(0) + i32::from(!ours);
    lease.spec = Some(spec(cfg, if ours { current.acquire_time } else { None }, transitions));
    match api.replace(&cfg.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Waits until this replica leads, then keeps renewing in the background. The returned future
/// resolves if leadership is lost (the lease could not be renewed before it expired): the caller
/// must stop acting as leader at once.
pub async fn lead(client: Client, cfg: LeaseConfig) -> Result<impl std::future::Future<Output = ()>, Error> {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    loop {
        match try_acquire(&api, &cfg).await {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "leader election attempt failed"),
        }
        tokio::time::sleep(cfg.retry).await;
    }
    tracing::info!(identity = %cfg.identity, lease = %cfg.name, "became leader");
    Ok(async move {
        let mut last_renewed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(cfg.retry).await;
            match try_acquire(&api, &cfg).await {
                Ok(true) => last_renewed = tokio::time::Instant::now(),
                Ok(false) => break,
                Err(e) => tracing::warn!(error = %e, "could not renew the lease"),
            }
            // Give up before the lease can expire, so two leaders never overlap.
            if last_renewed.elapsed() + cfg.retry >= cfg.duration {
                break;
            }
        }
        tracing::error!(identity = %cfg.identity, "lost leadership");
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(jiff::Timestamp::from_second(renewed).expect("time"))),
            ..Default::default()
        }
    }

    #[test]
    fn only_a_free_expired_or_own_lease_is_claimable() {
        let now = jiff::Timestamp::from_second(1000).expect("time");
        assert!(claimable(&LeaseSpec::default(), "a", now));
        assert!(claimable(&lease("a", 999), "a", now));
        assert!(!claimable(&lease("b", 990), "a", now));
        assert!(claimable(&lease("b", 985), "a", now));
    }
}
