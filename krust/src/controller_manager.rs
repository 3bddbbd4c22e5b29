//! Runs the controller-manager and the scheduler inside `krust server`, as API clients of
//! the server they run in, each under its own identity (never the admin's): the
//! controller-manager as `system:kube-controller-manager` (each controller under its own
//! service account, as upstream's `--use-service-account-credentials`), the scheduler as
//! `system:kube-scheduler`. Their client certificates are issued at every start and kept in
//! kubeconfigs under `DATA_DIR/server/cred/`, as k3s's.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::files::ServerPaths;
use crate::pki::Pki;

/// The controller-manager's user (bound to upstream's `system:kube-controller-manager`).
pub const CONTROLLER_MANAGER_USER: &str = "system:kube-controller-manager";
/// The scheduler's user (bound to upstream's `system:kube-scheduler`).
pub const SCHEDULER_USER: &str = "system:kube-scheduler";

/// Kubeconfigs of the server's own parts.
pub struct Kubeconfigs {
    pub controller: PathBuf,
    pub scheduler: PathBuf,
    /// The join endpoint's (node password Secrets), `system:krust:supervisor`.
    pub supervisor: PathBuf,
}

/// Issues the client certificates of the controller-manager, the scheduler and the join
/// endpoint (CN only, no group, as k3s's) and writes their kubeconfigs (0600: they hold the
/// keys).
pub fn write_kubeconfigs(paths: &ServerPaths, url: &str, pki: &Pki) -> anyhow::Result<Kubeconfigs> {
    let cred = paths.cred();
    let out = Kubeconfigs {
        controller: cred.join("controller.kubeconfig"),
        scheduler: cred.join("scheduler.kubeconfig"),
        supervisor: cred.join("supervisor.kubeconfig"),
    };
    let supervisor = apiserver::auth::bootstrap::krust::SUPERVISOR_USER;
    for (user, path) in [(CONTROLLER_MANAGER_USER, &out.controller), (SCHEDULER_USER, &out.scheduler), (supervisor, &out.supervisor)] {
        let (cert, key) = crate::pki::issue_client(&paths.tls(), user, &[]).with_context(|| format!("issuing {user}'s certificate"))?;
        crate::kubeconfig::write(path, &crate::kubeconfig::render(url, &pki.server_ca_pem, &cert, &key)?, 0o600)?;
    }
    Ok(out)
}

/// Connects to the API server and runs every controller and the scheduler in the
/// background; failures are logged, not fatal to the API server.
pub async fn spawn(kubeconfigs: &Kubeconfigs, config: controllers::Config) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let root_config = agent::config_from(&kubeconfigs.controller).await.context("the controller-manager's client configuration")?;
    let root = kube::Client::try_from(root_config.clone()).context("building the controller-manager's client")?;
    let scheduler = client(&kubeconfigs.scheduler).await?;
    let disabled_scheduler = config.disabled.iter().any(|d| d == controllers::SCHEDULER);
    let scheduler_config = config.clone();
    let config = controllers::Config { service_account_credentials: Some(root_config), ..config };
    Ok(tokio::spawn(async move {
        let controllers = async {
            if let Err(e) = controllers::run(root, config).await {
                tracing::error!(error = %e, "controller-manager stopped");
            }
        };
        let scheduler = async {
            if disabled_scheduler {
                return;
            }
            if let Err(e) = controllers::run_scheduler(scheduler, scheduler_config).await {
                tracing::error!(error = %e, "scheduler stopped");
            }
        };
        tokio::join!(controllers, scheduler);
    }))
}

async fn client(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    crate::node::client_from(kubeconfig).await
}
