//! What every controller shares: the client, settings, and an event recorder.

use crate::events::{Recorder, Reporter};

/// Settings of the controller-manager.
#[derive(Clone, Debug)]
pub struct Config {
    /// This process's identity in the leader Lease (hostname plus a random suffix).
    pub identity: String,
    /// Controllers not to run, by name.
    pub disabled: Vec<String>,
    /// How long a node may miss its Lease renewals before it is NotReady
    /// (`--node-monitor-grace-period`, default 40 s).
    pub node_monitor_grace_period: std::time::Duration,
    /// Default toleration of not-ready/unreachable taints (DefaultTolerationSeconds, 300 s).
    pub default_toleration_seconds: i64,
    /// The cluster CA (PEM) that the root-CA publisher puts in every namespace's
    /// `kube-root-ca.crt` ConfigMap; `None` turns that controller into a no-op.
    pub root_ca_pem: Option<String>,
    /// The pod network (`--cluster-cidr`) that node IPAM splits into per-node /24s;
    /// `None` leaves nodes' pod CIDRs alone.
    pub cluster_cidr: Option<String>,
    /// How often HorizontalPodAutoscalers are evaluated
    /// (`--horizontal-pod-autoscaler-sync-period`, 15 s upstream).
    pub hpa_sync_period: std::time::Duration,
    /// Leader election timing (upstream's `--leader-elect-*` flags).
    pub leader: crate::leader::Timing,
    /// Upstream's `--use-service-account-credentials`: the controller-manager's own client
    /// configuration, whose server and CA each controller's client uses with a token of the
    /// controller's service account (`credentials`). `None`: every controller uses the
    /// controller-manager's client.
    pub service_account_credentials: Option<kube::Config>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            identity: format!("krust-{}", rand::random::<u32>()),
            disabled: Vec::new(),
            node_monitor_grace_period: std::time::Duration::from_secs(40),
            default_toleration_seconds: 300,
            root_ca_pem: None,
            cluster_cidr: None,
            hpa_sync_period: std::time::Duration::from_secs(15),
            leader: crate::leader::Timing::default(),
            service_account_credentials: None,
        }
    }
}

/// Shared by every controller.
pub struct Ctx {
    pub client: kube::Client,
    pub config: Config,
    pub recorder: Recorder,
}

impl Ctx {
    pub fn new(client: kube::Client, config: Config) -> Self {
        let reporter = Reporter { controller: "krust-controller-manager".into(), instance: Some(config.identity.clone()) };
        let recorder = Recorder::new(client.clone(), reporter);
        Ctx { client, config, recorder }
    }
}

/// Errors of controllers, named for the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("API request failed: {0}")]
    Api(#[from] kube::Error),
    #[error("watch failed: {0}")]
    Watch(#[from] kube::runtime::watcher::Error),
    #[error("{0}")]
    Other(String),
}
