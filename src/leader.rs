//! Leader election through a `coordination.k8s.io/v1` Lease, so two replicas on the same
//! config never publish at the same time.
//!
//! Like client-go's leaderelection: a candidate takes the lease when it is absent, free, or
//! unchanged (same holder and renew time) for a whole `leaseDuration` as measured on the
//! candidate's own clock — so clock skew between nodes does not matter. The leader renews
//! every `retryPeriod` and gives up leadership if it could not renew for `renewDeadline`
//! (shorter than `leaseDuration`), so it has stopped publishing before anyone may take
//! over. Updates carry the lease's resourceVersion: two candidates racing for a free lease
//! cannot both win.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Timings and names of the election.
#[derive(Debug, Clone)]
pub struct ElectionConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub lease_name: String,
    /// This candidate's identity (unique per process).
    pub identity: String,
    /// How long a lease is valid after its last renewal.
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it steps down.
    pub renew_deadline: Duration,
    /// How often to try to acquire or renew.
    pub retry_period: Duration,
}

/// What a candidate should do, given the lease as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// No lease object: create one naming us.
    Create,
    /// We hold it: renew.
    Renew,
    /// Free or expired: take it over.
    Take,
    /// Someone else holds a valid lease: wait.
    Wait,
}

/// The pure part of the election: `unchanged_for` is how long, on our clock, the lease's
/// holder and renew time have not changed.
pub fn decide(
    spec: Option<&LeaseSpec>,
    me: &str,
    unchanged_for: Duration,
    lease_duration: Duration,
) -> Decision {
    let Some(spec) = spec else {
        return Decision::Create;
    };
    match spec.holder_identity.as_deref() {
        Some(h) if h == me => Decision::Renew,
        None | Some("") => Decision::Take,
        Some(_) if unchanged_for >= lease_duration => Decision::Take,
        Some(_) => Decision::Wait,
    }
}

/// A failure talking to the API server about the lease.
#[derive(Debug, thiserror::Error)]
#[error("lease {namespace}/{name}: {source}")]
pub struct LeaseError {
    namespace: String,
    name: String,
    #[source]
    source: kube::Error,
}

/// What identifies one renewal of a lease: holder and renew time.
type Record = (Option<String>, Option<MicroTime>);

/// A candidate for leadership.
pub struct Elector {
    api: Api<Lease>,
    cfg: ElectionConfig,
    /// The lease record last seen, and when we first saw it.
    observed: Option<(Record, Instant)>,
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

impl Elector {
    /// A candidate using `client`.
    pub fn new(client: Client, cfg: ElectionConfig) -> Self {
        Elector {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
            observed: None,
        }
    }

    fn err(&self, source: kube::Error) -> LeaseError {
        LeaseError {
            namespace: self.cfg.namespace.clone(),
            name: self.cfg.lease_name.clone(),
            source,
        }
    }

    fn spec(&self, transitions: i32, acquire: Option<MicroTime>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.cfg.identity.clone()),
            lease_duration_seconds: Some(self.cfg.lease_duration.as_secs().max(1) as i32),
            acquire_time: acquire,
            renew_time: Some(now()),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// One attempt: true when we hold the lease afterwards.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, LeaseError> {
        let current = self
            .api
            .get_opt(&self.cfg.lease_name)
            .await
            .map_err(|e| self.err(e))?;
        let spec = current.as_ref().and_then(|l| l.spec.clone());
        let key = spec
            .as_ref()
            .map(|s| (s.holder_identity.clone(), s.renew_time.clone()))
            .unwrap_or_default();
        let unchanged_for = match &self.observed {
            Some((k, since)) if *k == key => since.elapsed(),
            _ => {
                self.observed = Some((key, Instant::now()));
                Duration::ZERO
            }
        };
        let decision = decide(
            spec.as_ref(),
            &self.cfg.identity,
            unchanged_for,
            self.cfg.lease_duration,
        );
        debug!(?decision, "lease");
        let result = match (decision, current) {
            (Decision::Wait, _) => return Ok(false),
            (Decision::Create, _) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.cfg.lease_name.clone()),
                        namespace: Some(self.cfg.namespace.clone()),
                        ..Default::default()
                    },
                    spec: Some(self.spec(0, Some(now()))),
                };
                self.api
                    .create(&PostParams::default(), &lease)
                    .await
                    .map(|_| ())
            }
            (d, Some(mut lease)) => {
                let old = lease.spec.clone().unwrap_or_default();
                let transitions =
                    old.lease_transitions.unwrap_or(0) + if d == Decision::Take { 1 } else { 0 };
                let acquire = if d == Decision::Take {
                    Some(now())
                } else {
                    old.acquire_time
                };
                lease.spec = Some(self.spec(transitions, acquire));
                // replace carries metadata.resourceVersion: a concurrent writer makes this
                // fail with 409 instead of both winning.
                self.api
                    .replace(&self.cfg.lease_name, &PostParams::default(), &lease)
                    .await
                    .map(|_| ())
            }
            (_, None) => return Ok(false),
        };
        match result {
            Ok(()) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Waits until this candidate holds the lease. `false` if `cancel` fired first.
    pub async fn acquire(&mut self, cancel: &CancellationToken) -> bool {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    info!(identity = %self.cfg.identity, lease = %self.cfg.lease_name, "leadership acquired");
                    return true;
                }
                Ok(false) => {}
                Err(e) => warn!(error = %e, "acquiring the lease failed"),
            }
            tokio::select! {
                _ = cancel.cancelled() => return false,
                _ = tokio::time::sleep(self.cfg.retry_period) => {}
            }
        }
    }

    /// Renews until leadership is lost (returns) or `cancel` fires (releases the lease so a
    /// standby takes over at once, then returns).
    pub async fn hold(&mut self, cancel: &CancellationToken) -> Held {
        let mut last_renew = Instant::now();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Held::Cancelled,
                _ = tokio::time::sleep(self.cfg.retry_period) => {}
            }
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renew = Instant::now(),
                Ok(false) => {
                    warn!("the lease is held by someone else");
                    return Held::Lost;
                }
                Err(e) => warn!(error = %e, "renewing the lease failed"),
            }
            if last_renew.elapsed() >= self.cfg.renew_deadline {
                warn!(deadline = ?self.cfg.renew_deadline, "could not renew the lease in time");
                return Held::Lost;
            }
        }
    }

    /// Gives the lease up (after a graceful stop), so a standby need not wait it out.
    pub async fn release(&mut self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.cfg.lease_name).await else {
            return;
        };
        let mine = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            == Some(self.cfg.identity.as_str());
        if !mine {
            return;
        }
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
            spec.renew_time = Some(now());
        }
        match self
            .api
            .replace(&self.cfg.lease_name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => info!("lease released"),
            Err(e) => {
                warn!(error = %e, "releasing the lease failed; a standby takes over when it expires")
            }
        }
    }
}

/// How holding the lease ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// Shutdown requested.
    Cancelled,
    /// Renewal failed for longer than the deadline, or someone else holds the lease.
    Lost,
}

/// A unique identity for this process: host name (the pod name in Kubernetes), pid and a
/// random suffix.
pub fn identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "crbridge".into());
    format!(
        "{host}_{}_{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn decisions() {
        let d = Duration::from_secs(15);
        assert_eq!(decide(None, "me", Duration::ZERO, d), Decision::Create);
        assert_eq!(
            decide(Some(&spec(Some("me"))), "me", Duration::ZERO, d),
            Decision::Renew
        );
        assert_eq!(
            decide(Some(&spec(None)), "me", Duration::ZERO, d),
            Decision::Take
        );
        assert_eq!(
            decide(Some(&spec(Some(""))), "me", Duration::ZERO, d),
            Decision::Take
        );
        assert_eq!(
            decide(Some(&spec(Some("other"))), "me", Duration::from_secs(3), d),
            Decision::Wait
        );
        assert_eq!(
            decide(Some(&spec(Some("other"))), "me", d, d),
            Decision::Take
        );
    }
}
