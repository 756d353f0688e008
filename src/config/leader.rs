//! `leaderElection`: the Lease, its timings (client-go's defaults) and client-go's rules
//! relating them.

use std::time::Duration;

use crbridge_sink_api::units;
use serde::Deserialize;

use super::format_duration;
use super::resolve::{is_dns_label, is_dns_subdomain};

/// `leaderElection`: a `coordination.k8s.io` Lease so two replicas never publish at once.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LeaderElectionConfig {
    /// Whether to take the Lease before watching.
    // false: a single replica (the StatefulSet default) needs no election.
    #[serde(default)]
    pub enabled: bool,
    /// Namespace of the Lease.
    // "crbridge": the namespace of the manifests in deploy/kubernetes.
    #[serde(default = "default_crbridge")]
    pub namespace: String,
    /// Name of the Lease (key `leaseName`).
    // "crbridge": the name of the daemon, as in deploy/kubernetes/configmap.yaml.
    #[serde(default = "default_crbridge")]
    pub lease_name: String,
    /// How long a Lease holds without renewal (key `leaseDuration`).
    // 15s: client-go's and kube-controller-manager's default.
    #[serde(
        default = "default_lease_duration",
        deserialize_with = "units::deserialize_duration"
    )]
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it steps down (key `renewDeadline`).
    // 10s: client-go's default; must stay below leaseDuration.
    #[serde(
        default = "default_renew_deadline",
        deserialize_with = "units::deserialize_duration"
    )]
    pub renew_deadline: Duration,
    /// Interval between acquire/renew attempts (key `retryPeriod`).
    // 2s: client-go's default.
    #[serde(
        default = "default_retry_period",
        deserialize_with = "units::deserialize_duration"
    )]
    pub retry_period: Duration,
    /// The cluster whose API server holds the Lease (the home cluster); absent: the first
    /// of `clusters`. Once parsed, always set.
    #[serde(default)]
    pub cluster: Option<String>,
}

fn default_crbridge() -> String {
    "crbridge".to_owned()
}

fn default_lease_duration() -> Duration {
    Duration::from_secs(15)
}

fn default_renew_deadline() -> Duration {
    Duration::from_secs(10)
}

fn default_retry_period() -> Duration {
    Duration::from_secs(2)
}

impl Default for LeaderElectionConfig {
    fn default() -> Self {
        LeaderElectionConfig {
            enabled: false,
            namespace: default_crbridge(),
            lease_name: default_crbridge(),
            lease_duration: default_lease_duration(),
            renew_deadline: default_renew_deadline(),
            retry_period: default_retry_period(),
            cluster: None,
        }
    }
}

/// client-go's rules for leader election timings. Errors carry (path, message).
pub(super) fn validate_leader_election(
    le: &LeaderElectionConfig,
) -> Result<(), (&'static str, String)> {
    if !is_dns_label(&le.namespace) {
        return Err((
            "leaderElection.namespace",
            format!(
                "invalid namespace {:?} (expected a DNS-1123 label, e.g. crbridge)",
                le.namespace
            ),
        ));
    }
    if !is_dns_subdomain(&le.lease_name) {
        return Err((
            "leaderElection.leaseName",
            format!(
                "invalid Lease name {:?} (expected a DNS-1123 subdomain, e.g. crbridge)",
                le.lease_name
            ),
        ));
    }
    if le.retry_period.is_zero() {
        return Err((
            "leaderElection.retryPeriod",
            "must be greater than 0 (expected e.g. 2s)".into(),
        ));
    }
    if le.renew_deadline >= le.lease_duration {
        return Err((
            "leaderElection.renewDeadline",
            format!(
                "{} must be shorter than leaseDuration ({}) (expected e.g. 10s with 15s)",
                format_duration(le.renew_deadline),
                format_duration(le.lease_duration)
            ),
        ));
    }
    // client-go: RenewDeadline must exceed JitterFactor (1.2) * RetryPeriod.
    if le.renew_deadline.as_millis() * 10 <= le.retry_period.as_millis() * 12 {
        return Err((
            "leaderElection.retryPeriod",
            format!(
                "{} is too long for renewDeadline {} (expected renewDeadline > 1.2 x retryPeriod, e.g. 2s with 10s)",
                format_duration(le.retry_period),
                format_duration(le.renew_deadline)
            ),
        ));
    }
    Ok(())
}
