//! krust's API server. Layers, outermost first: HTTP handlers (`handlers`) → the generic
//! store (`registry::store`) → per-kind strategies (`kinds`) → the storage trait
//! (`kine_sqlite::Backend`).

pub mod admission;
pub mod apply;
pub mod auth;
pub mod autoregister;
pub mod conn;
pub mod crd;
pub mod error;
pub mod fieldvalidation;
pub mod kinds;
pub mod registry;
pub mod validation;
pub mod handlers;
pub mod kubernetes_service;
pub mod meta;
pub mod openapi;
pub mod patch;
pub mod protobuf;
pub mod quota;
pub mod selectors;
pub mod tokens;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use kine_sqlite::Backend;
use serde_json::json;

use error::ApiError;
use registry::store::WriteOptions;
use registry::{ReqCtx, Registry};

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub registry: Arc<Registry>,
    /// Connects to kubelets for the streaming pod subresources (`None`: not configured).
    pub kubelet: Option<Arc<handlers::proxy::KubeletDialer>>,
    /// Signs service account tokens (TokenRequest); `None`: not configured.
    pub tokens: Option<Arc<tokens::ServiceAccountTokens>>,
    /// How often watches that allow bookmarks get one.
    pub bookmark_interval: Duration,
    /// Decides every request (RBAC, Node, system:masters).
    pub authorizer: Arc<auth::authorizer::Authorizer>,
    /// `--api-audiences`: the audiences bearer tokens must be for.
    pub api_audiences: Vec<String>,
    /// Where the service account signing keys are published (OIDC discovery's `jwks_uri`).
    pub jwks_uri: String,
    /// Bearer tokens already verified.
    pub verified_tokens: Arc<auth::serviceaccount::VerifiedTokens>,
}

impl AppState {
    /// A state over a registry, authorizing with its RBAC objects.
    pub async fn new(registry: Arc<Registry>) -> anyhow::Result<AppState> {
        let authorizer = auth::authorizer::Authorizer::start(&registry).await?;
        Ok(AppState { registry, kubelet: None, tokens: None, bookmark_interval: Duration::from_secs(10), authorizer, api_audiences: vec![tokens::ISSUER.to_string()], jwks_uri: String::new(), verified_tokens: Default::default() })
    }

    pub fn auth_context(&self) -> auth::AuthContext {
        auth::AuthContext { authorizer: self.authorizer.clone(), registry: self.registry.clone(), api_audiences: self.api_audiences.clone() }
    }
}

/// Namespaces that exist from the first start, as upstream's system namespaces controller
/// makes them.
pub const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Builds the API server over a storage backend: bootstraps what must exist at start
/// (system namespaces) and returns the router. The caller serves it over TLS and attaches
/// a [`auth::UserInfo`] extension to each request whose client certificate verified.
pub async fn app(backend: Arc<dyn Backend>) -> anyhow::Result<axum::Router> {
    app_with(backend, Config::default()).await
}

/// Settings of the API server.
#[derive(Clone, Debug)]
pub struct Config {
    /// Events the watch cache keeps for resuming watchers.
    pub watch_cache_size: usize,
    /// ClusterIPs are handed out from here (`--service-cidr`, k3s's default).
    pub service_cidr: String,
    /// NodePorts are handed out from here (`--service-node-port-range`).
    pub service_node_port_range: String,
    /// Where clients reach this server: the `kubernetes` Service's endpoint.
    pub advertise: kubernetes_service::Advertise,
    /// Credentials for talking to kubelets (logs, exec, port-forward).
    pub kubelet_tls: Option<handlers::proxy::KubeletTls>,
    /// The service account token signer (shared with authentication).
    pub tokens: Option<Arc<tokens::ServiceAccountTokens>>,
    /// `--api-audiences` (default: the issuer).
    pub api_audiences: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            watch_cache_size: registry::cache::DEFAULT_WINDOW,
            service_cidr: "10.43.0.0/16".into(),
            service_node_port_range: "30000-32767".into(),
            advertise: kubernetes_service::Advertise { address: "127.0.0.1".into(), port: 6443 },
            kubelet_tls: None,
            tokens: None,
            api_audiences: vec![tokens::ISSUER.to_string()],
        }
    }
}

/// [`app`] with settings.
pub async fn app_with(backend: Arc<dyn Backend>, config: Config) -> anyhow::Result<axum::Router> {
    let registry = Arc::new(Registry::with_watch_cache_size(kinds::all(), backend.clone(), config.watch_cache_size));
    let allocator = Arc::new(
        registry::allocator::ServiceAllocator::new(backend, &config.service_cidr, &config.service_node_port_range)
            .map_err(|e| anyhow::anyhow!(e))?,
    );
    allocator.repair().await?;
    registry.set_hooks("", "services", allocator.clone());
    bootstrap(&registry).await?;
    kubernetes_service::reconcile(&registry, &allocator.first_ip().to_string(), &config.advertise).await?;
    let crds_seen = crd::controller::register_existing(&registry).await?;
    tokio::spawn(crd::controller::run(registry.clone(), crds_seen));
    if let Err(e) = autoregister::sync(&registry).await {
        tracing::warn!(error = %e, "creating the local APIServices failed");
    }
    tokio::spawn(autoregister::run(registry.clone()));
    let kubelet = config.kubelet_tls.as_ref().map(handlers::proxy::KubeletDialer::new).transpose()?.map(Arc::new);
    let mut state = AppState::new(registry).await?;
    state.kubelet = kubelet;
    state.tokens = config.tokens.clone();
    state.jwks_uri = format!("https://{}{}", std::net::SocketAddr::new(config.advertise.address.parse().unwrap_or(std::net::Ipv4Addr::LOCALHOST.into()), config.advertise.port), handlers::oidc::JWKS_PATH);
    if !config.api_audiences.is_empty() {
        state.api_audiences = config.api_audiences.clone();
    }
    Ok(router(state))
}

/// The router over a ready state (tests build their own state).
pub fn router(state: AppState) -> axum::Router {
    axum::Router::new()
        .merge(handlers::health::routes())
        .merge(handlers::discovery::routes())
        .merge(handlers::openapi::routes())
        .merge(handlers::oidc::routes())
        .merge(handlers::resources::routes())
        .fallback(|| async { ApiError::NoRoute.into_response() })
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::filter))
        .layer(axum::middleware::from_fn(log_request))
        .with_state(state)
}

/// Creates the system namespaces if they are missing.
async fn bootstrap(registry: &Registry) -> anyhow::Result<()> {
    let namespaces = registry.find("", "v1", "namespaces").ok_or_else(|| anyhow::anyhow!("namespaces not served"))?;
    for ns in SYSTEM_NAMESPACES {
        let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        match namespaces.create(&ReqCtx::default(), obj, &WriteOptions::default()).await {
            Ok(_) => tracing::info!(namespace = ns, "created system namespace"),
            Err(ApiError::AlreadyExists { .. }) => {}
            Err(e) => anyhow::bail!("creating namespace {ns}: {e}"),
        }
    }
    // Upstream's RBAC bootstrap policy, created and reconciled at every start.
    auth::bootstrap::reconcile(registry).await?;
    // The system PriorityClasses, as upstream's scheduling post-start hook makes them.
    if let Some(classes) = registry.find("scheduling.k8s.io", "v1", "priorityclasses") {
        for pc in kinds::priorityclass::system_priority_classes() {
            let name = meta::name(&pc).to_string();
            match classes.create(&ReqCtx::default(), classes.decode_body(pc)?, &WriteOptions::default()).await {
                Ok(_) => tracing::info!(priorityclass = name, "created system priority class"),
                Err(ApiError::AlreadyExists { .. }) => {}
                Err(e) => anyhow::bail!("creating priority class {name}: {e}"),
            }
        }
    }
    Ok(())
}

/// One debug line per request: method, path, status, latency.
async fn log_request(req: Request, next: Next) -> Response {
    let (method, uri) = (req.method().clone(), req.uri().clone());
    let start = Instant::now();
    let resp = next.run(req).await;
    tracing::debug!(%method, %uri, status = resp.status().as_u16(), elapsed_ms = start.elapsed().as_millis() as u64, "request");
    resp
}
