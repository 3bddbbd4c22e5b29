//! The node agent: registers this machine as a Node and heartbeats it ([`node`]), runs the
//! pods bound to it ([`kubelet`]) through the container runtime ([`runtime`]: youki's
//! libcontainer, CNI) from images in OCI registries ([`images`]). It talks to the API
//! server only through the wire API, with its own node credentials ([`join`]).

pub mod dns;
pub mod hash;
pub mod images;
pub mod join;
pub mod kubelet;
pub mod node;
pub mod proxy;
pub mod runtime;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// The Kubernetes version this kubelet speaks (the API server's).
pub const KUBELET_VERSION: &str = "v1.33.0";

/// Settings of one agent.
#[derive(Debug, Clone)]
pub struct Config {
    pub node_name: String,
    /// `DATA_DIR/agent`: images, pod folders, logs, runtime state.
    pub data_dir: PathBuf,
    /// The address other nodes and the API server reach this node on.
    pub node_ip: IpAddr,
    pub node_labels: Vec<(String, String)>,
    /// The cluster DNS address pods get as nameserver (`--cluster-dns`), if any.
    pub cluster_dns: Option<IpAddr>,
    pub cluster_domain: String,
    /// Where the CNI plugins are (`/usr/lib/cni` on Debian).
    pub cni_bin_dir: PathBuf,
    /// The bridge pods attach to.
    pub cni_bridge: String,
    /// k3s-style `registries.yaml` (mirrors, credentials).
    pub registries: PathBuf,
    /// The kubelet's HTTPS port (logs, exec, port-forward).
    pub kubelet_port: u16,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{context}: {source}")]
    Api {
        context: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("container runtime: {0}")]
    Runtime(#[from] runtime::RuntimeError),
    #[error("images: {0}")]
    Images(#[from] images::ImageError),
    #[error("{0}")]
    Other(String),
}

impl AgentError {
    pub fn api(context: &'static str) -> impl FnOnce(kube::Error) -> AgentError {
        move |source| AgentError::Api { context, source }
    }
}

/// A running agent's parts, for the caller to stop or inspect.
pub struct Agent {
    pub kubelet: Arc<kubelet::Kubelet>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Agent {
    /// Stops heartbeats and pod workers; containers keep running (as when a kubelet stops).
    pub fn abort(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }

    /// Kills every container and removes every sandbox this node's runtime holds (`--clean`
    /// on stop, after [`Agent::abort`]): nothing the agent started outlives it.
    pub async fn remove_all_pods(&self) {
        let rt = &self.kubelet.runtime;
        for id in rt.list_containers() {
            if let Err(e) = rt.remove_container(&id).await {
                tracing::warn!(container = %id, error = %e, "--clean: removing a container failed");
            }
        }
        for pod in rt.list_sandboxes() {
            if let Err(e) = rt.remove_sandbox(&pod).await {
                tracing::warn!(pod = %pod, error = %e, "--clean: removing a sandbox failed");
            }
        }
    }
}

/// Serves the kubelet endpoint with the serving certificate written when joining.
async fn start_endpoint(config: &Config, kubelet: Arc<kubelet::Kubelet>) -> Result<tokio::task::JoinHandle<()>, AgentError> {
    let (crt, key, ca) = join::serving_files(&config.data_dir.join(KUBECONFIG));
    let read = |p: &std::path::Path| std::fs::read_to_string(p).map_err(|e| AgentError::Other(format!("reading {}: {e}", p.display())));
    let tls = kubelet::server::ServingTls { cert_pem: read(&crt)?, key_pem: read(&key)?, client_ca_pem: read(&ca)? };
    let addr = std::net::SocketAddr::from(([0, 0, 0, 0], config.kubelet_port));
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| AgentError::Other(format!("listening on {addr}: {e}")))?;
    tracing::info!(%addr, "kubelet endpoint listening");
    Ok(tokio::spawn(async move {
        if let Err(e) = kubelet::server::serve(kubelet, listener, tls).await {
            tracing::error!(error = %e, "the kubelet endpoint stopped");
        }
    }))
}

/// The client configuration of a kubeconfig file (one the join or the server wrote).
pub async fn config_from(kubeconfig: &std::path::Path) -> Result<kube::Config, AgentError> {
    let fail = |e: String| AgentError::Other(format!("{}: {e}", kubeconfig.display()));
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).map_err(|e| fail(e.to_string()))?;
    kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.map_err(|e| fail(e.to_string()))
}

/// A client of a kubeconfig file.
pub async fn client_from(kubeconfig: &std::path::Path) -> Result<kube::Client, AgentError> {
    kube::Client::try_from(config_from(kubeconfig).await?).map_err(|e| AgentError::Other(format!("{}: {e}", kubeconfig.display())))
}

/// The agent's kubeconfig (and its serving certificate beside it) in `Config::data_dir`.
pub const KUBECONFIG: &str = "kubelet.kubeconfig";

/// Registers the node, waits for its pod CIDR, prepares runtime and image store, and
/// starts heartbeats, status reports and the kubelet in the background.
pub async fn start(config: Config, client: kube::Client) -> Result<Agent, AgentError> {
    let config = Arc::new(config);
    std::fs::create_dir_all(&config.data_dir).map_err(|e| AgentError::Other(format!("creating {}: {e}", config.data_dir.display())))?;
    let info = node::MachineInfo::read(&config.data_dir);
    let node = node::register(&client, &config, &info).await?;
    let mut tasks = vec![tokio::spawn(node::heartbeat(client.clone(), config.node_name.clone(), node.metadata.uid.clone()))];
    let pod_cidr = node::wait_for_pod_cidr(&client, &config.node_name).await?;
    tracing::info!(node = %config.node_name, pod_cidr, "node has its pod CIDR");

    let registries = images::RegistriesConfig::load(&config.registries)?;
    let images = Arc::new(images::ImageStore::open(config.data_dir.join("content"), registries)?);
    let airgap = config.data_dir.join("images");
    match images.import_dir(&airgap).await {
        Ok(refs) if !refs.is_empty() => tracing::info!(count = refs.len(), "imported air-gap images"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, dir = %airgap.display(), "importing air-gap images failed"),
    }
    let cni = runtime::CniConfig {
        plugin_dir: config.cni_bin_dir.clone(),
        bridge: config.cni_bridge.clone(),
        pod_cidr: pod_cidr.clone(),
        state_dir: config.data_dir.join("cni"),
        mtu: None,
    };
    let runtime = Arc::new(runtime::Runtime::new(config.data_dir.join("containers"), cni)?);
    let kubelet = Arc::new(kubelet::Kubelet::new(client.clone(), config.clone(), runtime, images.clone()));

    let list = images.clone();
    let images_fn: Arc<dyn Fn() -> serde_json::Value + Send + Sync> = Arc::new(move || {
        serde_json::Value::Array(list.list().into_iter().map(|i| serde_json::json!({"names": i.names, "sizeBytes": i.size_bytes})).collect())
    });
    let memory_total = info.memory_bytes;
    tasks.push(tokio::spawn(node::report_status(client.clone(), config.clone(), info, images_fn)));
    tasks.push(tokio::spawn(kubelet.clone().run()));
    tasks.push(tokio::spawn(kubelet::stats::run(kubelet.clone(), node::now_rfc3339(), memory_total)));
    tasks.push(start_endpoint(&config, kubelet.clone()).await?);
    // kube-proxy and DNS act under their own identities (written when joining), not the
    // kubelet's: the Node authorizer and system:node grant a kubelet neither.
    let (proxy_kubeconfig, dns_kubeconfig) = join::component_kubeconfigs(&config.data_dir.join(KUBECONFIG));
    let dns_client = client_from(&dns_kubeconfig).await?;
    let proxy_client = client_from(&proxy_kubeconfig).await?;
    tasks.push(tokio::spawn(dns::run(dns_client, config.clone(), pod_cidr)));
    tasks.push(tokio::spawn(proxy::Proxy::new(&config.node_name, config.node_ip).run(proxy_client)));
    tracing::info!(node = %config.node_name, "agent ready");
    Ok(Agent { kubelet, tasks })
}
