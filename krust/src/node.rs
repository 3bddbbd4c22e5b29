//! Running a node: `krust agent` (joins a server with a token) and the agent inside
//! `krust server` (uses node credentials issued directly by the server's CA).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;

use crate::cli::{AgentArgs, NodeArgs};

/// The agent's settings from the node flags.
pub fn agent_config(node: &NodeArgs, data_dir: &Path) -> anyhow::Result<agent::Config> {
    let node_name = match &node.node_name {
        Some(n) => n.clone(),
        None => crate::server::hostname().context("the hostname is not a valid node name: pass --node-name")?,
    };
    let mut node_labels = Vec::new();
    for l in &node.node_labels {
        let (k, v) = l.split_once('=').with_context(|| format!("--node-label {l:?} is not KEY=VALUE"))?;
        node_labels.push((k.to_string(), v.to_string()));
    }
    Ok(agent::Config {
        node_name,
        data_dir: data_dir.join("agent"),
        node_ip: node.node_ip.unwrap_or_else(crate::server::outbound_address),
        node_labels,
        cluster_dns: Some(node.cluster_dns),
        cluster_domain: node.cluster_domain.clone(),
        cni_bin_dir: node.cni_bin_dir.clone(),
        cni_bridge: node.cni_bridge.clone(),
        registries: node.private_registry.clone(),
        kubelet_port: node.kubelet_port,
    })
}

pub async fn client_from(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    Ok(agent::client_from(kubeconfig).await?)
}

/// `krust agent`: join, then run until SIGINT/SIGTERM.
pub async fn run(args: AgentArgs, started: Instant) -> anyhow::Result<()> {
    let config = agent_config(&args.node, &args.data_dir)?;
    tracing::info!(node = %config.node_name, server = %args.server, "starting krust agent");
    let kubeconfig = config.data_dir.join("kubelet.kubeconfig");
    let token = match (&args.token, &args.token_file) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => std::fs::read_to_string(f).with_context(|| format!("reading --token-file {}", f.display()))?.trim().to_string(),
        (None, None) => anyhow::bail!("--token or --token-file is required"),
    };
    let password = agent::join::ensure_node_password(&config.data_dir)?;
    agent::join::ensure_kubeconfig(&args.server, &token, &config.node_name, &password, &[config.node_ip.to_string()], &kubeconfig).await.context("joining the cluster")?;
    let client = client_from(&kubeconfig).await?;
    let running_name = config.node_name.clone();
    let running = agent::start(config, client).await.context("starting the agent")?;
    tracing::info!("krust agent ready in {}ms", started.elapsed().as_millis());
    crate::server::stop_signal().context("installing signal handlers")?.await;
    running.abort();
    if args.node.clean {
        clean(Some(&running), &running_name).await;
    }
    tracing::info!("krust agent stopped");
    Ok(())
}

/// `--clean` on stop: the node's pods (containers, sandboxes) and its kube-proxy table go.
pub async fn clean(agent: Option<&agent::Agent>, node_name: &str) {
    if let Some(agent) = agent {
        agent.remove_all_pods().await;
    }
    agent::proxy::Proxy::clean(node_name);
    tracing::info!(node = node_name, "--clean: removed this node's pods and kube-proxy rules");
}

/// The server's own agent: credentials from the server's [`crate::join::Issuer`] (so under
/// the same node password and address rules as any agent), written to DATA_DIR/agent. The
/// password check needs the API: it runs in the task, once the server serves.
pub fn spawn_in_server(node: &NodeArgs, data_dir: &Path, url: &str, issuer: std::sync::Arc<crate::join::Issuer>) -> anyhow::Result<tokio::task::JoinHandle<Option<agent::Agent>>> {
    let config = agent_config(node, data_dir)?;
    let node_password = agent::join::ensure_node_password(&config.data_dir)?;
    let url = url.to_string();
    Ok(tokio::spawn(async move {
        let name = config.node_name.clone();
        let started = async {
            let kubeconfig: PathBuf = config.data_dir.join("kubelet.kubeconfig");
            let req = agent::join::CredentialsRequest { node_name: name.clone(), node_password, addresses: vec![config.node_ip.to_string()] };
            let creds = issuer.issue(&req).await.context("issuing this node's credentials")?;
            agent::join::write_kubeconfig(&kubeconfig, &url, &creds)?;
            let client = client_from(&kubeconfig).await?;
            let agent = agent::start(config, client).await.context("starting the agent")?;
            label_control_plane(&issuer.client, &name).await;
            Ok::<_, anyhow::Error>(agent)
        };
        match started.await {
            Ok(a) => Some(a),
            Err(e) => {
                tracing::error!(node = %name, error = %format!("{e:#}"), "the node agent failed to start");
                None
            }
        }
    }))
}

/// The server's own node carries `node-role.kubernetes.io/control-plane`, set by the server
/// (as k3s does) because NodeRestriction keeps a kubelet from giving itself `node-role`
/// labels. Failures are logged: the label is informational.
async fn label_control_plane(client: &kube::Client, node: &str) {
    use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
    let resource = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("", "v1", "Node"), "nodes");
    let nodes: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    let patch = serde_json::json!({"metadata": {"labels": {CONTROL_PLANE_LABEL: "true"}}});
    match nodes.patch(node, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => tracing::info!(node, "labelled {CONTROL_PLANE_LABEL}"),
        Err(e) => tracing::warn!(node, error = %e, "labelling this server's node {CONTROL_PLANE_LABEL}"),
    }
}

const CONTROL_PLANE_LABEL: &str = "node-role.kubernetes.io/control-plane";
