//! Runs the controller-manager (and scheduler) inside `krust server`, as an API client of
//! the server it runs in, authenticated with the admin kubeconfig.

use std::path::Path;

use anyhow::Context;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// Connects to the API server through `kubeconfig` and runs every controller in the
/// background; failures are logged, not fatal to the API server.
pub async fn spawn(kubeconfig: &Path, config: controllers::Config) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let kc = Kubeconfig::read_from(kubeconfig).with_context(|| format!("reading {}", kubeconfig.display()))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .context("building the controller-manager's client configuration")?;
    let client = kube::Client::try_from(cfg).context("building the controller-manager's client")?;
    Ok(tokio::spawn(async move {
        if let Err(e) = controllers::run(client, config).await {
            tracing::error!(error = %e, "controller-manager stopped");
        }
    }))
}
