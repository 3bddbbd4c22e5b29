//! Leader election through a `coordination.k8s.io/v1` Lease, as upstream's
//! `leaderelection` package with a `LeaseLock`: `kube-system/kube-controller-manager` for the
//! controllers, `kube-system/kube-scheduler` for the scheduler (upstream's names, which their
//! bootstrap roles allow them to write).
//!
//! A candidate takes the Lease when it is absent, has no holder, or expired
//! (`renewTime + leaseDurationSeconds` in the past); every write carries the
//! resourceVersion it read, so of two candidates only one wins. The holder renews every
//! `renew_interval`; if it cannot renew within `renew_deadline` (or someone else took the
//! Lease), it stops its work (the future is dropped, aborting every controller task) and
//! becomes a candidate again.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};

use crate::{Ctx, Error};

/// The Lease every krust controller-manager competes for.
pub const LEASE_NAMESPACE: &str = "kube-system";
pub const LEASE_NAME: &str = "kube-controller-manager";
/// The scheduler's Lease.
pub const SCHEDULER_LEASE_NAME: &str = "kube-scheduler";

/// Leader election timing, as upstream's `--leader-elect-lease-duration`,
/// `--leader-elect-renew-deadline` and `--leader-elect-retry-period` (shortened).
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// How long a Lease stays valid after its last renewal.
    pub lease_duration: Duration,
    /// How often the holder renews.
    pub renew_interval: Duration,
    /// How long the holder keeps working without a successful renewal.
    pub renew_deadline: Duration,
    /// How often a candidate tries to acquire.
    pub retry_period: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            lease_duration: Duration::from_secs(15),
            renew_interval: Duration::from_secs(2),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// One candidate's view of the Lease: tries to acquire or renew it.
pub struct LeaseLock {
    api: Api<Lease>,
    name: &'static str,
    identity: String,
    lease_duration: Duration,
}

impl LeaseLock {
    pub fn new(client: kube::Client, name: &'static str, identity: impl Into<String>, lease_duration: Duration) -> Self {
        LeaseLock { api: Api::namespaced(client, LEASE_NAMESPACE), name, identity: identity.into(), lease_duration }
    }

    /// One attempt to acquire (or, when held by us, renew) the Lease. `Ok(true)` when this
    /// candidate holds it now; `Ok(false)` when another holder's Lease is still valid or
    /// another candidate wrote first.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, Error> {
        let now = Timestamp::now();
        let Some(mut lease) = self.api.get_opt(self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.name.into()), ..Default::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(self.lease_duration.as_secs() as i32),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e.into()),
            };
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        if holder != self.identity {
            if !holder.is_empty() && !expired(spec, now) {
                return Ok(false);
            }
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(self.lease_duration.as_secs() as i32);
        // `lease` carries the resourceVersion read above: a concurrent writer makes this 409.
        match self.api.replace(self.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

/// Whether a Lease's holder missed its renewal: `renewTime + leaseDurationSeconds` passed.
pub fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return true;
    };
    let duration = SignedDuration::from_secs(spec.lease_duration_seconds.unwrap_or(0).max(0) as i64);
    renewed.0.checked_add(duration).map_or(true, |until| until < now)
}

/// Who holds the controller-manager Lease now (holderIdentity), if anyone.
pub async fn current_holder(client: kube::Client) -> Result<Option<String>, Error> {
    let api: Api<Lease> = Api::namespaced(client, LEASE_NAMESPACE);
    let lease = api.get_opt(LEASE_NAME).await?;
    Ok(lease.and_then(|l| l.spec).and_then(|s| s.holder_identity).filter(|h| !h.is_empty()))
}

/// Runs `work` while this process holds the controller-manager Lease: waits to acquire it,
/// runs `work` while renewing, and when the Lease is lost drops `work` (cancelling it) and
/// competes again. Returns when `work` finishes on its own.
pub async fn run_while_leader<F, Fut>(ctx: Arc<Ctx>, lease: &'static str, work: F) -> Result<(), Error>
where
    F: Fn(Arc<Ctx>) -> Fut,
    Fut: Future<Output = ()>,
{
    let timing = ctx.config.leader;
    let identity = ctx.config.identity.clone();
    let lock = LeaseLock::new(ctx.client.clone(), lease, identity.clone(), timing.lease_duration);
    loop {
        acquire(&lock, &identity, timing).await;
        tracing::info!(identity = %identity, lease = %format!("{LEASE_NAMESPACE}/{lease}"), "became leader");
        tokio::select! {
            _ = work(ctx.clone()) => {
                tracing::info!(identity = %identity, "controllers finished");
                return Ok(());
            }
            _ = keep_renewing(&lock, &identity, timing) => {
                tracing::warn!(identity = %identity, "lost leadership: stopping controllers");
            }
        }
    }
}

/// Returns once this candidate holds the Lease.
async fn acquire(lock: &LeaseLock, identity: &str, timing: Timing) {
    let mut logged = false;
    loop {
        match lock.try_acquire_or_renew().await {
            Ok(true) => return,
            Ok(false) if !logged => {
                tracing::info!(identity, "another instance holds the lease: waiting");
                logged = true;
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(identity, error = %e, "acquiring the lease failed"),
        }
        tokio::time::sleep(jitter(timing.retry_period)).await;
    }
}

/// Renews until the Lease is lost: another holder took it, or no renewal succeeded within
/// the renew deadline.
async fn keep_renewing(lock: &LeaseLock, identity: &str, timing: Timing) {
    let mut last_renewal = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(timing.renew_interval).await;
        let mut attempt = lock.try_acquire_or_renew().await;
        if matches!(attempt, Ok(false)) {
            // A 409 from a concurrent write (say, someone editing the Lease) is not a loss:
            // read again once.
            attempt = lock.try_acquire_or_renew().await;
        }
        match attempt {
            Ok(true) => last_renewal = tokio::time::Instant::now(),
            Ok(false) => {
                tracing::warn!(identity, "the lease was taken by another instance");
                return;
            }
            Err(e) => {
                tracing::warn!(identity, error = %e, "renewing the lease failed");
                if last_renewal.elapsed() > timing.renew_deadline {
                    tracing::warn!(identity, "renew deadline passed");
                    return;
                }
            }
        }
    }
}

/// `d` plus up to 20% (upstream's JitterFactor 1.2), so candidates do not write in step.
fn jitter(d: Duration) -> Duration {
    d + d.mul_f64(rand::random::<f64>() * 0.2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_follows_renew_time_and_duration() {
        let now = Timestamp::now();
        let spec = |renewed_ago: i64, duration: i32| LeaseSpec {
            holder_identity: Some("a".into()),
            renew_time: Some(MicroTime(now.checked_sub(SignedDuration::from_secs(renewed_ago)).unwrap())),
            lease_duration_seconds: Some(duration),
            ..Default::default()
        };
        assert!(!expired(&spec(5, 15), now));
        assert!(expired(&spec(16, 15), now));
        assert!(expired(&LeaseSpec::default(), now));
    }
}
